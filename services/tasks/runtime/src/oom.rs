//! Out-of-memory kills in a container's memory cgroup: the kernel's
//! counter, and a descriptor that becomes readable when it may have moved.
//!
//! - v1: `oom_kill N` in `memory.oom_control`; notification through an
//!   eventfd registered in `cgroup.event_control` for `memory.oom_control`
//!   (signalled when the cgroup hits its limit and when it is removed).
//!   The signal comes as the OOM starts, before the killer has killed its
//!   victim, so the counter may move a moment after it: callers look again.
//! - v2: `oom_kill N` in `memory.events`; the kernel notifies file
//!   modifications of `memory.events`, so an inotify watch on it is the
//!   notification (as containerd does).
//!
//! Counting kills rather than OOM conditions is what containerd does on v2
//! and what docker's `OOMKilled` means there: a process was killed. With
//! the OOM killer disabled (v1 `memory.oom_control` 1) processes wait
//! instead of dying and nothing is counted.

use crate::error::{Error, Result};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// The value of `key` in a flat keyed cgroup file (`key value` lines).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The file holding the `oom_kill` counter in the memory cgroup `dir`.
fn counter_file(dir: &Path, v2: bool) -> PathBuf {
    dir.join(if v2 {
        "memory.events"
    } else {
        "memory.oom_control"
    })
}

/// OOM kills counted in the memory cgroup `dir` (None when the file or the
/// counter is missing, e.g. the cgroup is gone or the kernel is older than
/// 4.13).
pub fn oom_kills(dir: &Path, v2: bool) -> Option<u64> {
    let text = std::fs::read_to_string(counter_file(dir, v2)).ok()?;
    keyed(&text, "oom_kill")
}

/// A pollable notification of OOM activity in one memory cgroup.
#[derive(Debug)]
pub struct OomWatch {
    fd: OwnedFd,
    /// v1: the memory.oom_control descriptor the eventfd is registered on
    /// (kept open for the registration's lifetime).
    _control: Option<File>,
    dir: PathBuf,
    v2: bool,
}

impl OomWatch {
    /// Starts watching the memory cgroup `dir`. The descriptor is
    /// non-blocking and close-on-exec.
    pub fn open(dir: &Path, v2: bool) -> Result<Self> {
        if v2 {
            // SAFETY: inotify_init1 returns a new descriptor that we own.
            let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
            if fd < 0 {
                return Err(Error::last_os("inotify_init1"));
            }
            // SAFETY: fresh descriptor.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let file = counter_file(dir, true);
            let c = std::ffi::CString::new(file.as_os_str().as_encoded_bytes())
                .map_err(|_| Error::Spec(format!("bad cgroup path {}", file.display())))?;
            // SAFETY: valid fd and NUL-terminated path.
            if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) } < 0 {
                return Err(Error::last_os(format!("inotify watch {}", file.display())));
            }
            return Ok(OomWatch {
                fd,
                _control: None,
                dir: dir.to_path_buf(),
                v2,
            });
        }
        // SAFETY: eventfd returns a new descriptor that we own.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(Error::last_os("eventfd"));
        }
        // SAFETY: fresh descriptor.
        let efd = unsafe { OwnedFd::from_raw_fd(efd) };
        let control_path = counter_file(dir, false);
        let control = File::open(&control_path)
            .map_err(|e| Error::os(format!("open {}", control_path.display()), e))?;
        let ev = dir.join("cgroup.event_control");
        std::fs::write(&ev, format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()))
            .map_err(|e| Error::os(format!("register OOM eventfd in {}", ev.display()), e))?;
        Ok(OomWatch {
            fd: efd,
            _control: Some(control),
            dir: dir.to_path_buf(),
            v2,
        })
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Consumes pending notifications (call when the descriptor is
    /// readable; it never blocks).
    pub fn drain(&self) {
        let mut buf = [0u8; 4096];
        // SAFETY: reading into a local buffer from our non-blocking fd.
        while unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }

    /// The cgroup's OOM kill counter now (None once the cgroup is gone).
    pub fn kills(&self) -> Option<u64> {
        oom_kills(&self.dir, self.v2)
    }

    /// Whether the cgroup still exists (the v1 eventfd is also signalled
    /// when it is removed).
    pub fn cgroup_exists(&self) -> bool {
        self.dir.is_dir()
    }
}

impl AsRawFd for OomWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed(v1, "oom_kill"), Some(3));
        assert_eq!(keyed(v1, "oom_kill_disable"), Some(0));
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed(v2, "oom_kill"), Some(1));
        assert_eq!(keyed(v2, "oom"), Some(2));
        assert_eq!(keyed("under_oom 1\n", "oom_kill"), None);
    }

    #[test]
    fn missing_cgroup_has_no_counter() {
        let d = Path::new("/nonexistent-berth-oom");
        assert_eq!(oom_kills(d, false), None);
        assert_eq!(oom_kills(d, true), None);
        assert!(OomWatch::open(d, false).is_err());
        assert!(OomWatch::open(d, true).is_err());
    }
}
