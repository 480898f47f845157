//! Reading containers' json-file logs (written by the shim).

use std::io::SeekFrom;

use berth_proto::gateway::v1::{LogEntry, Stream};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

#[derive(Deserialize)]
struct Line {
    log: String,
    stream: String,
    #[serde(default)]
    time: String,
}

/// Parses one json-file line.
pub fn parse_line(line: &[u8]) -> Option<LogEntry> {
    let l: Line = serde_json::from_slice(line).ok()?;
    let stream = match l.stream.as_str() {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => Stream::Unspecified,
    };
    Some(LogEntry {
        stream: stream as i32,
        data: l.log.into_bytes(),
        time: l.time,
    })
}

/// Reads complete lines appended to a log file.
pub struct Tailer {
    file: Option<tokio::fs::File>,
    pending: Vec<u8>,
}

impl Tailer {
    /// Opens `path`; `from_end` skips what is already there.
    pub async fn open(path: &str, from_end: bool) -> Self {
        let mut file = tokio::fs::File::open(path).await.ok();
        if from_end {
            if let Some(f) = file.as_mut() {
                let _ = f.seek(SeekFrom::End(0)).await;
            }
        }
        Tailer {
            file,
            pending: Vec::new(),
        }
    }

    /// Entries from lines completed since the last call.
    pub async fn read_available(&mut self) -> Vec<LogEntry> {
        let Some(f) = self.file.as_mut() else {
            return Vec::new();
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match f.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.pending[start..].iter().position(|b| *b == b'\n') {
            if let Some(e) = parse_line(&self.pending[start..start + pos]) {
                out.push(e);
            }
            start += pos + 1;
        }
        self.pending.drain(..start);
        out
    }
}

/// Keeps only wanted streams and the last `tail` entries (negative = all).
pub fn select(entries: Vec<LogEntry>, stdout: bool, stderr: bool, tail: i64) -> Vec<LogEntry> {
    let (stdout, stderr) = if !stdout && !stderr {
        (true, true)
    } else {
        (stdout, stderr)
    };
    let mut v: Vec<LogEntry> = entries
        .into_iter()
        .filter(|e| {
            (e.stream == Stream::Stdout as i32 && stdout)
                || (e.stream == Stream::Stderr as i32 && stderr)
        })
        .collect();
    if tail >= 0 && (tail as usize) < v.len() {
        v.drain(..v.len() - tail as usize);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let e = parse_line(br#"{"log":"hi\n","stream":"stderr","time":"2024-01-01T00:00:00Z"}"#)
            .unwrap();
        assert_eq!(e.data, b"hi\n");
        assert_eq!(e.stream, Stream::Stderr as i32);
        assert!(parse_line(b"garbage").is_none());
    }

    #[test]
    fn selecting() {
        let mk = |s: Stream, d: &str| LogEntry {
            stream: s as i32,
            data: d.as_bytes().to_vec(),
            time: String::new(),
        };
        let all = vec![
            mk(Stream::Stdout, "1"),
            mk(Stream::Stderr, "2"),
            mk(Stream::Stdout, "3"),
        ];
        assert_eq!(select(all.clone(), true, false, -1).len(), 2);
        assert_eq!(select(all.clone(), false, false, -1).len(), 3);
        let t = select(all, false, false, 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].data, b"3");
    }

    #[tokio::test]
    async fn tailing() {
        let p = std::env::temp_dir().join(format!("berth-logs-{}", std::process::id()));
        std::fs::write(&p, "{\"log\":\"old\\n\",\"stream\":\"stdout\"}\n").unwrap();
        let mut t = Tailer::open(p.to_str().unwrap(), true).await;
        assert!(t.read_available().await.is_empty());
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"log\":\"new\\n\",\"stream\":\"stdout\"}\n{\"log\":\"par")
            .unwrap();
        let got = t.read_available().await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, b"new\n");
        f.write_all(b"t\\n\",\"stream\":\"stderr\"}\n").unwrap();
        let got = t.read_available().await;
        assert_eq!(got[0].data, b"part\n");
        std::fs::remove_file(p).unwrap();
    }
}
