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
    let mut f = fs::File::create(&tmp).map_err(Error::io(format!("create {}", tmp.display())))?;
    f.write_all(data)
        .map_err(Error::io(format!("write {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(Error::io(format!("rename {}", path.display())))
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
    pub fn read_record(&self) -> Result<TaskRecord, Error> {
        let data = fs::read(self.record_path())
            .map_err(Error::io(format!("read {}", self.record_path().display())))?;
        serde_json::from_slice(&data).map_err(|e| {
            Error::Internal(format!(
                "corrupt task record in {}: {e}",
                self.dir.display()
            ))
        })
    }
    pub fn write_record(&self, rec: &TaskRecord) -> Result<(), Error> {
        let data = serde_json::to_vec(rec).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&self.record_path(), &data)
    }
    /// The exit record, when the shim wrote one.
    pub fn read_exit(&self) -> Option<ExitRecord> {
        let data = fs::read(self.exit_path()).ok()?;
        serde_json::from_slice(&data).ok()
    }
    fn read_pid(&self, name: &str) -> Option<i32> {
        fs::read_to_string(self.dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
    pub fn shim_pid(&self) -> Option<i32> {
        self.read_pid("shim.pid")
    }
    pub fn init_pid(&self) -> Option<i32> {
        self.read_pid("init.pid")
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

    #[test]
    fn exit_record_roundtrip() {
        let dir = tempfile_dir();
        let b = Bundle::new(dir.clone());
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
        fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-tasks-test-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        d
    }
}
