//! On-disk bundle of one task: what berth-tasks writes and what the shim
//! leaves behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The exit record the shim writes to `<bundle>/exit`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExitRecord {
    pub exit_status: u32,
    #[serde(default)]
    pub exited_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// The kernel OOM-killed processes of the task (the shim reads the
    /// memory cgroup's counter before removing it).
    #[serde(default)]
    pub oom_killed: bool,
    #[serde(default)]
    pub oom_kills: u64,
}

/// Facts about the task that berth-tasks itself records.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    #[serde(default)]
    pub log_path: String,
    #[serde(default)]
    pub started_at: String,
    /// cgroups path from the spec, for cleanup and listing pids.
    #[serde(default)]
    pub cgroups_path: String,
    /// The init gets a stdin pipe (`berth-shim --stdin`).
    #[serde(default)]
    pub open_stdin: bool,
    /// Log rotation (`berth-shim --log-max-size`); 0: none.
    #[serde(default)]
    pub log_max_size: u64,
    /// Log files kept (`berth-shim --log-max-files`).
    #[serde(default)]
    pub log_max_files: u32,
}

/// The launcher's one line of output.
#[derive(Debug, Deserialize)]
pub struct ShimReport {
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
}

/// Checks a task id: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 128 characters.
pub fn validate_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("invalid task id {id:?}")))
    }
}

/// Writes `data` to `path` atomically (temp file, rename). No fsync: bundles
/// live in the runtime state directory (tmpfs, gone after a reboot), so only
/// process crashes matter, and the rename already covers those.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let result = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(data))
        .map_err(Error::io(format!("write {}", tmp.display())))
        .and_then(|()| {
            fs::rename(&tmp, path).map_err(Error::io(format!("rename {}", path.display())))
        });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Paths of one bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
}

impl Bundle {
    pub fn new(dir: PathBuf) -> Self {
        Bundle { dir }
    }
    pub fn record_path(&self) -> PathBuf {
        self.dir.join("task.json")
    }
    pub fn exit_path(&self) -> PathBuf {
        self.dir.join("exit")
    }
    /// The record berth-tasks wrote at Create; `None` when the bundle has
    /// none (or one that does not parse: it is written whole, so that is a
    /// bundle that never finished Create).
    pub fn try_read_record(&self) -> std::io::Result<Option<TaskRecord>> {
        Ok(read_optional(&self.record_path())?.and_then(|d| serde_json::from_slice(&d).ok()))
    }
    pub fn write_record(&self, rec: &TaskRecord) -> Result<(), Error> {
        let data = serde_json::to_vec(rec).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&self.record_path(), &data)
    }
    /// The exit record, when the shim wrote one.
    pub fn read_exit(&self) -> Option<ExitRecord> {
        self.try_read_exit().ok().flatten()
    }
    /// Like [`Bundle::read_exit`], but a file that cannot be read (other
    /// than one that does not exist) is an error, not "no exit yet".
    pub fn try_read_exit(&self) -> std::io::Result<Option<ExitRecord>> {
        // The shim writes it whole (temp file, fsync, rename): a record that
        // does not parse is treated as none.
        Ok(read_optional(&self.exit_path())?.and_then(|d| serde_json::from_slice(&d).ok()))
    }
    /// A pid file the shim wrote (`shim.pid`, `init.pid`): `None` when it
    /// does not exist (or does not hold a pid).
    pub fn try_read_pid(&self, name: &str) -> std::io::Result<Option<i32>> {
        Ok(read_optional(&self.dir.join(name))?
            .and_then(|d| String::from_utf8_lossy(&d).trim().parse().ok()))
    }
    pub fn shim_pid(&self) -> Option<i32> {
        self.try_read_pid("shim.pid").ok().flatten()
    }
}

/// Reads a file that may not exist yet.
fn read_optional(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc123").is_ok());
        assert!(validate_id("a.b-c_d").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("../x").is_err());
        assert!(validate_id("-x").is_err());
        assert!(validate_id(&"a".repeat(129)).is_err());
    }

    /// A temp directory removed on drop (also when the test fails).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let d = std::env::temp_dir()
                .join(format!("berth-tasks-test-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn exit_record_roundtrip() {
        let dir = TempDir::new("exit");
        let b = Bundle::new(dir.0.clone());
        assert!(b.read_exit().is_none());
        fs::write(
            b.exit_path(),
            br#"{"exit_status":137,"exited_at":"2024-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let e = b.read_exit().unwrap();
        assert_eq!(e.exit_status, 137);
        assert!(!e.oom_killed);
        fs::write(
            b.exit_path(),
            br#"{"exit_status":137,"exited_at":"2024-01-01T00:00:00Z","oom_killed":true,"oom_kills":2}"#,
        )
        .unwrap();
        let e = b.read_exit().unwrap();
        assert!(e.oom_killed);
        assert_eq!(e.oom_kills, 2);
    }

    #[test]
    fn absent_files_are_none_but_unreadable_ones_are_errors() {
        let dir = TempDir::new("absent");
        let b = Bundle::new(dir.0.clone());
        assert!(b.try_read_record().unwrap().is_none());
        assert!(b.try_read_exit().unwrap().is_none());
        assert!(b.try_read_pid("shim.pid").unwrap().is_none());
        // A record that does not parse is a Create that never finished.
        fs::write(b.record_path(), b"{\"id\":").unwrap();
        assert!(b.try_read_record().unwrap().is_none());
        fs::write(dir.0.join("shim.pid"), b"42\n").unwrap();
        assert_eq!(b.try_read_pid("shim.pid").unwrap(), Some(42));
        // A file that is there but cannot be read is not "absent".
        fs::create_dir(b.exit_path()).unwrap();
        assert!(b.try_read_exit().is_err());
        assert!(b.read_exit().is_none());
        fs::remove_file(b.record_path()).unwrap();
        fs::create_dir(b.record_path()).unwrap();
        assert!(b.try_read_record().is_err());
    }

    #[test]
    fn records_are_replaced_whole() {
        let dir = TempDir::new("record");
        let b = Bundle::new(dir.0.clone());
        let mut rec = TaskRecord {
            id: "t1".into(),
            cgroups_path: "/berth/default/t1".into(),
            ..Default::default()
        };
        b.write_record(&rec).unwrap();
        rec.started_at = "2024-01-01T00:00:00Z".into();
        b.write_record(&rec).unwrap();
        let back = b.try_read_record().unwrap().unwrap();
        assert_eq!(back.started_at, rec.started_at);
        assert_eq!(back.cgroups_path, rec.cgroups_path);
        // No temp file is left beside it.
        let names: Vec<String> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["task.json".to_string()]);
    }
}
