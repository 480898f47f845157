//! Docker json-file log format: one JSON object per line of output.

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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

/// The json-file log of a container, rotated like docker's json-file
/// driver: before a record would push the file past `max_size`, the file
/// is renamed `FILE.1` (older ones shift up to `FILE.<max_files-1>`, the
/// oldest is dropped) and a new `FILE` is opened; with `max_files` 1 the file
/// is truncated instead. A record (one line) is never split across files.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: Option<u64>,
    max_files: u32,
}

fn open_log(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

/// `FILE.n` for a rotated log.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl LogWriter {
    /// Opens (appending, created 0640) `path`. `max_size` None: no rotation.
    pub fn open(path: &Path, max_size: Option<u64>, max_files: u32) -> std::io::Result<Self> {
        let file = open_log(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max_size: max_size.filter(|n| *n > 0),
            max_files: max_files.max(1),
        })
    }

    /// Write records, one per line, rotating first when one would not fit.
    pub fn write_records(&mut self, records: &[String]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for r in records {
            let len = r.len() as u64 + 1;
            if let Some(max) = self.max_size {
                let pending = buf.len() as u64;
                if self.size + pending > 0 && self.size + pending + len > max {
                    self.flush(&mut buf)?;
                    self.rotate()?;
                }
            }
            buf.extend_from_slice(r.as_bytes());
            buf.push(b'\n');
        }
        self.flush(&mut buf)
    }

    fn flush(&mut self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let r = self.file.write_all(buf);
        self.size += buf.len() as u64;
        buf.clear();
        r
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.max_files <= 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..self.max_files - 1).rev() {
            let from = rotated_path(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated_path(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated_path(&self.path, 1))?;
        self.file = open_log(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// fsync the current file's data.
    pub fn sync(&self) {
        let _ = self.file.sync_data();
    }
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

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-rt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rec(n: usize) -> String {
        format_entry(format!("line {n:04}\n").as_bytes(), "stdout", T)
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn rotates_keeping_max_files() {
        let d = temp_dir("rotate");
        let p = d.join("c-json.log");
        let one = rec(0).len() as u64 + 1;
        let max = one * 4 + one / 2; // four records fit
        let mut w = LogWriter::open(&p, Some(max), 3).unwrap();
        for n in 0..20 {
            w.write_records(&[rec(n)]).unwrap();
        }
        // Several records in one call are split between files too.
        let batch: Vec<String> = (20..26).map(rec).collect();
        w.write_records(&batch).unwrap();
        assert!(!rotated_path(&p, 3).exists());
        let (cur, r1, r2) = (
            lines(&p),
            lines(&rotated_path(&p, 1)),
            lines(&rotated_path(&p, 2)),
        );
        for f in [&p, &rotated_path(&p, 1), &rotated_path(&p, 2)] {
            assert!(std::fs::metadata(f).unwrap().len() <= max);
        }
        let all: Vec<String> = r2.iter().chain(&r1).chain(&cur).cloned().collect();
        let want: Vec<String> = (16..26).map(rec).collect();
        assert_eq!(all, want);
        assert_eq!(cur, (24..26).map(rec).collect::<Vec<_>>());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn max_file_one_truncates_and_no_limit_appends() {
        let d = temp_dir("truncate");
        let p = d.join("c-json.log");
        let one = rec(0).len() as u64 + 1;
        let mut w = LogWriter::open(&p, Some(one * 3), 1).unwrap();
        for n in 0..10 {
            w.write_records(&[rec(n)]).unwrap();
        }
        assert_eq!(lines(&p), (9..10).map(rec).collect::<Vec<_>>());
        assert!(!rotated_path(&p, 1).exists());

        let q = d.join("plain.log");
        let mut w = LogWriter::open(&q, None, 5).unwrap();
        for n in 0..10 {
            w.write_records(&[rec(n)]).unwrap();
        }
        assert_eq!(lines(&q).len(), 10);
        // A record larger than max-size still goes out whole.
        let r = LogWriter::open(&d.join("big.log"), Some(10), 2)
            .and_then(|mut w| w.write_records(&[rec(1), rec(2)]));
        r.unwrap();
        assert_eq!(lines(&d.join("big.log")), vec![rec(2)]);
        assert_eq!(lines(&rotated_path(&d.join("big.log"), 1)), vec![rec(1)]);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn reopening_counts_existing_size() {
        let d = temp_dir("reopen");
        let p = d.join("c-json.log");
        let one = rec(0).len() as u64 + 1;
        LogWriter::open(&p, None, 1)
            .unwrap()
            .write_records(&[rec(0), rec(1)])
            .unwrap();
        let mut w = LogWriter::open(&p, Some(one * 2), 2).unwrap();
        w.write_records(&[rec(2)]).unwrap();
        assert_eq!(lines(&rotated_path(&p, 1)), vec![rec(0), rec(1)]);
        assert_eq!(lines(&p), vec![rec(2)]);
        std::fs::remove_dir_all(d).unwrap();
    }
}
