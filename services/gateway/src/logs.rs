//! Reading containers' json-file logs (written by the shim).

use std::io::SeekFrom;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

/// Reads complete lines appended to a log file, following it across
/// rotations by the shim (`FILE` renamed to `FILE.1`, older ones shifted
/// up, a new `FILE` started; or, with max-file 1, `FILE` truncated).
pub struct Tailer {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    /// (device, inode) of `file`.
    ident: (u64, u64),
    /// Bytes of `file` read so far.
    pos: u64,
    pending: Vec<u8>,
}

/// Rotated files are looked for up to this number.
const MAX_ROTATED: u32 = 10_000;

/// `FILE.n`.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn ident_of(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

async fn ident_at(path: &Path) -> Option<(u64, u64)> {
    tokio::fs::metadata(path).await.ok().map(|m| ident_of(&m))
}

/// The rotated files of `path` that exist, newest (`FILE.1`) first.
async fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for n in 1..=MAX_ROTATED {
        let p = rotated_path(path, n);
        if tokio::fs::symlink_metadata(&p).await.is_err() {
            break;
        }
        out.push(p);
    }
    out
}

impl Tailer {
    /// Opens `path`; `from_end` skips what is already there, otherwise the
    /// rotated files (oldest first) come before the current one.
    pub async fn open(path: &str, from_end: bool) -> Self {
        let mut t = Tailer {
            path: PathBuf::from(path),
            file: None,
            ident: (0, 0),
            pos: 0,
            pending: Vec::new(),
        };
        t.reopen().await;
        if from_end {
            if let Some(f) = t.file.as_mut() {
                if let Ok(end) = f.seek(SeekFrom::End(0)).await {
                    t.pos = end;
                }
            }
        } else {
            for p in rotated_files(&t.path).await.into_iter().rev() {
                // A rotation just after opening: that file is the one we have.
                if t.file.is_some() && ident_at(&p).await == Some(t.ident) {
                    continue;
                }
                if let Ok(data) = tokio::fs::read(&p).await {
                    t.pending.extend_from_slice(&data);
                }
            }
        }
        t
    }

    /// (Re)opens the current file from its start.
    async fn reopen(&mut self) {
        self.file = None;
        self.pos = 0;
        if let Ok(f) = tokio::fs::File::open(&self.path).await {
            if let Ok(m) = f.metadata().await {
                self.ident = ident_of(&m);
                self.file = Some(f);
            }
        }
    }

    /// Reads the open file to its end.
    async fn drain(&mut self) {
        let Some(f) = self.file.as_mut() else {
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match f.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.pos += n as u64;
                    self.pending.extend_from_slice(&buf[..n]);
                }
            }
        }
    }

    /// Notices a rotation (the path now names another file) or a
    /// truncation, and moves on to the new data.
    async fn follow_rotation(&mut self) {
        if self.file.is_none() {
            self.reopen().await;
            return;
        }
        let Ok(m) = tokio::fs::metadata(&self.path).await else {
            return;
        };
        if ident_of(&m) == self.ident {
            if m.len() < self.pos {
                // Truncated (max-file 1): what is there now is new.
                self.pending.clear();
                if let Some(f) = self.file.as_mut() {
                    let _ = f.seek(SeekFrom::Start(0)).await;
                }
                self.pos = 0;
            }
            return;
        }
        // Replaced: finish the old file (the shim may have written to it
        // since we last read), then the files rotated after it, then the
        // new one from its start.
        self.drain().await;
        let rotated = rotated_files(&self.path).await;
        let mut ours = None;
        for (i, p) in rotated.iter().enumerate() {
            if ident_at(p).await == Some(self.ident) {
                ours = Some(i);
                break;
            }
        }
        // Not found: ours was rotated away, every rotated file is newer.
        let newer = &rotated[..ours.unwrap_or(rotated.len())];
        for p in newer.iter().rev() {
            if let Ok(data) = tokio::fs::read(p).await {
                self.pending.extend_from_slice(&data);
            }
        }
        self.reopen().await;
    }

    /// Entries from lines completed since the last call.
    pub async fn read_available(&mut self) -> Vec<LogEntry> {
        self.drain().await;
        self.follow_rotation().await;
        self.drain().await;
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

    fn rec(n: usize) -> String {
        format!("{{\"log\":\"{n}\\n\",\"stream\":\"stdout\"}}\n")
    }

    fn data(v: &[LogEntry]) -> Vec<String> {
        v.iter()
            .map(|e| String::from_utf8_lossy(&e.data).trim_end().to_string())
            .collect()
    }

    fn append(p: &Path, n: std::ops::Range<usize>) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .unwrap();
        for i in n {
            f.write_all(rec(i).as_bytes()).unwrap();
        }
    }

    fn rotate(p: &Path, keep: u32) {
        for n in (1..keep - 1).rev() {
            let from = rotated_path(p, n);
            if from.exists() {
                std::fs::rename(&from, rotated_path(p, n + 1)).unwrap();
            }
        }
        std::fs::rename(p, rotated_path(p, 1)).unwrap();
        std::fs::File::create(p).unwrap();
    }

    /// A temp directory removed when dropped, also when a test fails.
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    fn temp_dir(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("berth-gw-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    #[tokio::test]
    async fn reads_rotated_files_oldest_first() {
        let d = temp_dir("rotated");
        let p = d.join("c-json.log");
        append(&p, 0..3);
        rotate(&p, 2);
        append(&p, 3..6);
        rotate(&p, 2);
        append(&p, 6..8);
        let mut t = Tailer::open(p.to_str().unwrap(), false).await;
        let want: Vec<String> = (3..8).map(|n| n.to_string()).collect();
        assert_eq!(data(&t.read_available().await), want);
    }

    #[tokio::test]
    async fn follows_across_rotation_and_truncation() {
        let d = temp_dir("follow");
        let p = d.join("c-json.log");
        append(&p, 0..2);
        let mut t = Tailer::open(p.to_str().unwrap(), true).await;
        assert!(t.read_available().await.is_empty());
        append(&p, 2..4);
        rotate(&p, 5);
        append(&p, 4..5);
        assert_eq!(data(&t.read_available().await), ["2", "3", "4"]);
        // Two rotations between reads: the file in between is not lost.
        append(&p, 5..6);
        rotate(&p, 5);
        append(&p, 6..7);
        rotate(&p, 5);
        append(&p, 7..8);
        assert_eq!(data(&t.read_available().await), ["5", "6", "7"]);
        append(&p, 8..10);
        assert_eq!(data(&t.read_available().await), ["8", "9"]);
        // Truncated in place (max-file 1).
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&p, 10..11);
        assert_eq!(data(&t.read_available().await), ["10"]);
    }
}
