//! The container process: user, working directory, PATH lookup and exec,
//! with Docker's 126/127 exit codes and messages.

use crate::error::{Context, Error, Result, EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND};
use crate::sys::cstring;
use oci_spec::runtime::User;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// PATH from the process environment (`PATH=...`), or the default.
pub fn path_from_env(env: &[String]) -> String {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .map(str::to_string)
        .unwrap_or_else(|| DEFAULT_PATH.to_string())
}

fn not_found(cmd: &str) -> Error {
    Error::Exec {
        code: EXIT_NOT_FOUND,
        message: format!("exec: \"{cmd}\": executable file not found in $PATH"),
    }
}

fn denied(cmd: &str) -> Error {
    Error::Exec {
        code: EXIT_CANNOT_EXECUTE,
        message: format!("exec: \"{cmd}\": permission denied"),
    }
}

fn is_executable_file(p: &Path) -> bool {
    match std::fs::metadata(p) {
        Ok(md) => md.is_file() && md.permissions().mode() & 0o111 != 0,
        Err(_) => false,
    }
}

/// Sets the calling process's `oom_score_adj` (-1000..=1000), as runc
/// does for the init before exec. Without CAP_SYS_RESOURCE the kernel
/// refuses values below the lowest one set with that capability (the
/// inherited `oom_score_adj_min`); like rlimits, the value is then clamped
/// to the lowest one allowed instead of failing the start.
pub fn set_oom_score_adj(adj: i32) -> Result<()> {
    if !(-1000..=1000).contains(&adj) {
        return Err(Error::Spec(format!(
            "invalid oomScoreAdj {adj}: the range is [-1000, 1000]"
        )));
    }
    const PATH: &str = "/proc/self/oom_score_adj";
    let write = |v: i32| std::fs::write(PATH, v.to_string());
    match write(adj) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            let current: i32 = std::fs::read_to_string(PATH)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| Error::os(format!("write {adj} to {PATH}"), e))?;
            // `lo` is refused, `hi` (the current value) allowed: find the
            // lowest allowed value between them.
            let (mut lo, mut hi) = (adj, current);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if write(mid).is_ok() {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            write(hi).map_err(|e| Error::os(format!("write {hi} to {PATH}"), e))
        }
        Err(e) => Err(Error::os(format!("write {adj} to {PATH}"), e)),
    }
}

/// Find the command like Go's exec.LookPath (what Docker/runc do): a name
/// with a slash is used as is; otherwise the first executable regular file
/// in PATH wins.
pub fn lookup(cmd: &str, path_var: &str) -> Result<PathBuf> {
    if cmd.contains('/') {
        let p = Path::new(cmd);
        return match std::fs::metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Exec {
                code: EXIT_NOT_FOUND,
                message: format!("exec: \"{cmd}\": stat {cmd}: no such file or directory"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(denied(cmd)),
            Err(e) => Err(Error::os(format!("stat {cmd}"), e)),
            Ok(md) if md.is_dir() => Err(Error::Exec {
                code: EXIT_CANNOT_EXECUTE,
                message: format!("exec: \"{cmd}\": is a directory"),
            }),
            Ok(md) if md.permissions().mode() & 0o111 == 0 => Err(denied(cmd)),
            Ok(_) => Ok(p.to_path_buf()),
        };
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(cmd);
        if is_executable_file(&candidate) {
            return Ok(candidate);
        }
    }
    Err(not_found(cmd))
}

/// setgroups, setgid, setuid from `process.user`.
pub fn set_user(user: &User) -> Result<()> {
    let gids: Vec<libc::gid_t> = user.additional_gids().clone().unwrap_or_default();
    // SAFETY: valid pointer and length.
    if unsafe { libc::setgroups(gids.len(), gids.as_ptr()) } == -1 {
        return Err(Error::last_os(format!("setgroups {gids:?}")));
    }
    // SAFETY: plain syscalls.
    if unsafe { libc::setgid(user.gid()) } == -1 {
        return Err(Error::last_os(format!("setgid {}", user.gid())));
    }
    // SAFETY: plain syscall.
    if unsafe { libc::setuid(user.uid()) } == -1 {
        return Err(Error::last_os(format!("setuid {}", user.uid())));
    }
    Ok(())
}

/// Create the working directory if missing (like Docker: owned by root, 0755).
pub fn ensure_cwd(cwd: &Path) -> Result<()> {
    if cwd.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(cwd)
        .with_ctx(|| format!("create working directory {}", cwd.display()))?;
    std::fs::set_permissions(cwd, std::fs::Permissions::from_mode(0o755))
        .with_ctx(|| format!("chmod working directory {}", cwd.display()))
}

/// Map an execve errno to Docker's exit code and message.
pub fn exec_error(cmd: &str, errno: i32) -> Error {
    match errno {
        libc::ENOENT => not_found(cmd),
        libc::EACCES | libc::EPERM | libc::ENOEXEC | libc::EISDIR => denied(cmd),
        e => Error::os(format!("exec {cmd}"), std::io::Error::from_raw_os_error(e)),
    }
}

/// Prepared argv/envp for execve.
pub struct ExecArgs {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

impl ExecArgs {
    pub fn new(path: &Path, args: &[String], env: &[String]) -> Result<Self> {
        Ok(ExecArgs {
            path: crate::sys::path_cstring(path)?,
            argv: args
                .iter()
                .map(|a| cstring(a, "argument"))
                .collect::<Result<_>>()?,
            envp: env
                .iter()
                .map(|e| cstring(e, "environment"))
                .collect::<Result<_>>()?,
        })
    }

    /// execve; only returns on failure, with the errno.
    pub fn exec(&self) -> i32 {
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = self.envp.iter().map(|a| a.as_ptr()).collect();
        envp.push(std::ptr::null());
        // SAFETY: null-terminated arrays of valid C strings that outlive the call.
        unsafe { libc::execve(self.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_env() {
        assert_eq!(path_from_env(&["A=1".into(), "PATH=/x:/y".into()]), "/x:/y");
        assert_eq!(path_from_env(&[]), DEFAULT_PATH);
    }

    #[test]
    fn lookup_messages_and_codes() {
        let e = lookup("nosuchcmd-berth", "/nonexistent:/also-not").unwrap_err();
        assert_eq!(e.exit_code(), 127);
        assert_eq!(
            e.to_string(),
            "exec: \"nosuchcmd-berth\": executable file not found in $PATH"
        );
        let e = lookup("/etc/passwd", "/bin").unwrap_err();
        assert_eq!(e.exit_code(), 126);
        assert_eq!(e.to_string(), "exec: \"/etc/passwd\": permission denied");
        let e = lookup("/etc", "/bin").unwrap_err();
        assert_eq!(e.exit_code(), 126);
        let e = lookup("/nonexistent/x", "/bin").unwrap_err();
        assert_eq!(e.exit_code(), 127);
        // a non-executable file in PATH is skipped: not found
        let e = lookup("passwd", "/etc").unwrap_err();
        assert_eq!(e.exit_code(), 127);
        assert_eq!(
            lookup("sh", "/nonexistent:/bin").unwrap(),
            PathBuf::from("/bin/sh")
        );
    }

    #[test]
    fn exec_errno_mapping() {
        assert_eq!(exec_error("x", libc::ENOENT).exit_code(), 127);
        assert_eq!(exec_error("x", libc::EACCES).exit_code(), 126);
        assert_eq!(exec_error("x", libc::E2BIG).exit_code(), 125);
    }
}
