//! The runtime's error type. Every variant names the step that failed.

use std::io;

/// Exit code for a setup failure (Docker's "container failed to start").
pub const EXIT_SETUP_FAILED: i32 = 125;
/// Exit code when the command was found but cannot be executed.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// Exit code when the command was not found.
pub const EXIT_NOT_FOUND: i32 = 127;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed; `what` names the step and path.
    #[error("{what}: {}", os_message(source))]
    Os {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The bundle (config.json / rootfs.json) is unusable.
    #[error("invalid bundle: {0}")]
    Spec(String),
    /// The command cannot be started; `code` is 126 or 127.
    #[error("{message}")]
    Exec { code: i32, message: String },
    /// The container's init reported a failure before exec.
    #[error("{message}")]
    Child { code: i32, message: String },
}

impl Error {
    /// Build an `Os` error from the current `errno`.
    pub fn last_os(what: impl Into<String>) -> Self {
        Error::Os {
            what: what.into(),
            source: io::Error::last_os_error(),
        }
    }

    pub fn os(what: impl Into<String>, source: io::Error) -> Self {
        Error::Os {
            what: what.into(),
            source,
        }
    }

    pub fn errno(what: impl Into<String>, errno: nix::errno::Errno) -> Self {
        Error::Os {
            what: what.into(),
            source: io::Error::from_raw_os_error(errno as i32),
        }
    }

    /// The exit code the launcher reports for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Exec { code, .. } | Error::Child { code, .. } => *code,
            _ => EXIT_SETUP_FAILED,
        }
    }

    /// The raw OS error number, when there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// `strerror`-like text without Rust's " (os error N)" suffix.
fn os_message(e: &io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if e.raw_os_error().is_some() => s[..i].to_string(),
        _ => s,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds `.ctx("step")` to results carrying an `io::Error` or `Errno`.
pub trait Context<T> {
    fn ctx<S: Into<String>>(self, what: S) -> Result<T>;
    fn with_ctx<S: Into<String>, F: FnOnce() -> S>(self, f: F) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, io::Error> {
    fn ctx<S: Into<String>>(self, what: S) -> Result<T> {
        self.map_err(|e| Error::os(what, e))
    }
    fn with_ctx<S: Into<String>, F: FnOnce() -> S>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::os(f(), e))
    }
}

impl<T> Context<T> for std::result::Result<T, nix::errno::Errno> {
    fn ctx<S: Into<String>>(self, what: S) -> Result<T> {
        self.map_err(|e| Error::errno(what, e))
    }
    fn with_ctx<S: Into<String>, F: FnOnce() -> S>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::errno(f(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_step_without_rust_noise() {
        let e = Error::os(
            "mount proc on /proc",
            io::Error::from_raw_os_error(libc::ENODEV),
        );
        assert_eq!(e.to_string(), "mount proc on /proc: No such device");
        assert_eq!(e.exit_code(), EXIT_SETUP_FAILED);
        let e = Error::os("x", io::Error::other("custom"));
        assert_eq!(e.to_string(), "x: custom");
    }
}
