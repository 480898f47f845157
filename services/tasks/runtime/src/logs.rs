//! Docker json-file log format: one JSON object per line of output.

use serde::Serialize;
use std::io::Write;

/// Longest partial line kept before it is written out without a newline.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Serialize)]
struct Entry<'a> {
    log: &'a str,
    stream: &'a str,
    time: &'a str,
}

/// Format one log entry (without the trailing newline of the record).
pub fn format_entry(chunk: &[u8], stream: &str, time: &str) -> String {
    let text = String::from_utf8_lossy(chunk);
    let entry = Entry {
        log: &text,
        stream,
        time,
    };
    // Serializing a struct of strings cannot fail; fall back to an empty object.
    serde_json::to_string(&entry).unwrap_or_else(|_| String::from("{}"))
}

/// Splits one stream into lines and writes them as json-file records.
#[derive(Debug)]
pub struct LineSplitter {
    stream: &'static str,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new(stream: &'static str) -> Self {
        LineSplitter {
            stream,
            pending: Vec::new(),
        }
    }

    /// Feed bytes; complete lines (and over-long partial lines) are
    /// returned as ready records.
    pub fn feed(&mut self, data: &[u8], time: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.pending.extend_from_slice(data);
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                if pos < MAX_LINE {
                    let line: Vec<u8> = self.pending.drain(..=pos).collect();
                    out.push(format_entry(&line, self.stream, time));
                    continue;
                }
            }
            if self.pending.len() >= MAX_LINE {
                let chunk: Vec<u8> = self.pending.drain(..MAX_LINE).collect();
                out.push(format_entry(&chunk, self.stream, time));
                continue;
            }
            break;
        }
        out
    }

    /// Terminal output: split at newlines like [`feed`](Self::feed) but also
    /// return the trailing partial line at once (a prompt must show before
    /// its newline). An incomplete UTF-8 sequence at the end waits for the
    /// next chunk.
    pub fn feed_raw(&mut self, data: &[u8], time: &str) -> Vec<String> {
        let mut out = self.feed(data, time);
        let keep = incomplete_utf8_tail(&self.pending);
        if self.pending.len() > keep {
            let cut = self.pending.len() - keep;
            let chunk: Vec<u8> = self.pending.drain(..cut).collect();
            out.push(format_entry(&chunk, self.stream, time));
        }
        out
    }

    /// The stream closed: flush a final partial line.
    pub fn finish(&mut self, time: &str) -> Option<String> {
        if self.pending.is_empty() {
            None
        } else {
            let chunk = std::mem::take(&mut self.pending);
            Some(format_entry(&chunk, self.stream, time))
        }
    }
}

/// Length of an incomplete UTF-8 sequence at the end of `b` (0..=3).
fn incomplete_utf8_tail(b: &[u8]) -> usize {
    for back in 1..=3.min(b.len()) {
        let c = b[b.len() - back];
        if c & 0xC0 == 0x80 {
            continue; // continuation byte: look further back
        }
        let need = if c >= 0xF0 {
            4
        } else if c >= 0xE0 {
            3
        } else if c >= 0xC0 {
            2
        } else {
            1
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// Write records, one per line.
pub fn write_records<W: Write>(w: &mut W, records: &[String]) -> std::io::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut buf = String::new();
    for r in records {
        buf.push_str(r);
        buf.push('\n');
    }
    w.write_all(buf.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "2024-01-02T03:04:05.1Z";

    #[test]
    fn formats_docker_line() {
        assert_eq!(
            format_entry(b"hello\n", "stdout", T),
            r#"{"log":"hello\n","stream":"stdout","time":"2024-01-02T03:04:05.1Z"}"#
        );
    }

    #[test]
    fn escapes_quotes_controls_and_bad_utf8() {
        let s = format_entry(b"a\"b\\c\t\x01\xff\n", "stderr", T);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["log"], "a\"b\\c\t\u{1}\u{fffd}\n");
        assert_eq!(v["stream"], "stderr");
        assert!(s.contains(r#"\u0001"#));
    }

    #[test]
    fn splits_lines_and_keeps_partial() {
        let mut s = LineSplitter::new("stdout");
        let r = s.feed(b"one\ntw", T);
        assert_eq!(r.len(), 1);
        assert!(r[0].contains(r#""log":"one\n""#));
        let r = s.feed(b"o\nthree", T);
        assert_eq!(r.len(), 1);
        assert!(r[0].contains(r#""log":"two\n""#));
        let last = s.finish(T).unwrap();
        assert!(last.contains(r#""log":"three""#));
        assert!(s.finish(T).is_none());
    }

    #[test]
    fn long_partial_line_is_cut_at_16k() {
        let mut s = LineSplitter::new("stdout");
        let data = vec![b'x'; MAX_LINE + 10];
        let r = s.feed(&data, T);
        assert_eq!(r.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&r[0]).unwrap();
        assert_eq!(v["log"].as_str().unwrap().len(), MAX_LINE);
        let r = s.feed(b"\n", T);
        let v: serde_json::Value = serde_json::from_str(&r[0]).unwrap();
        assert_eq!(v["log"].as_str().unwrap(), "xxxxxxxxxx\n");
    }

    #[test]
    fn raw_feed_flushes_partial_but_keeps_split_utf8() {
        let mut s = LineSplitter::new("stdout");
        let r = s.feed_raw(b"a\n/ # ", T);
        assert_eq!(r.len(), 2);
        assert!(r[1].contains(r#""log":"/ # ""#));
        let euro = "€".as_bytes();
        let r = s.feed_raw(&euro[..2], T);
        assert!(r.is_empty());
        let r = s.feed_raw(&euro[2..], T);
        assert!(r[0].contains("€"));
        assert!(s.finish(T).is_none());
    }

    #[test]
    fn write_records_one_per_line() {
        let mut out = Vec::new();
        write_records(&mut out, &["{}".into(), "{\"a\":1}".into()]).unwrap();
        assert_eq!(out, b"{}\n{\"a\":1}\n");
    }
}
