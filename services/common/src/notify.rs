//! The systemd notification protocol (`sd_notify(3)`), without libsystemd.
//!
//! A service started with `Type=notify` finds the path of a unix datagram
//! socket in `$NOTIFY_SOCKET` and sends newline-separated `KEY=VALUE`
//! assignments to it: `READY=1` once it serves, `STOPPING=1` when it shuts
//! down, `STATUS=...` for `systemctl status`. A path starting with `@` names
//! a socket in the abstract namespace. Without `$NOTIFY_SOCKET` (not run by
//! systemd) every call is a no-op.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Sends `state` (e.g. `"READY=1\nSTATUS=serving"`) to `$NOTIFY_SOCKET`.
/// Returns `Ok(false)` when the variable is unset or empty (nothing to
/// notify), `Ok(true)` when the message was sent.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET_ENV) {
        Some(path) if !path.is_empty() => notify_to(&path, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Tells the service manager that start-up is finished and the service
/// serves, with a human-readable `status` line.
pub fn ready(status: &str) -> io::Result<bool> {
    notify(&format!("READY=1\nSTATUS={}", one_line(status)))
}

/// Tells the service manager that the service is shutting down.
pub fn stopping(status: &str) -> io::Result<bool> {
    notify(&format!("STOPPING=1\nSTATUS={}", one_line(status)))
}

/// Sends a `STATUS=` line only.
pub fn status(status: &str) -> io::Result<bool> {
    notify(&format!("STATUS={}", one_line(status)))
}

/// A `STATUS=` value cannot hold a newline: it would start a new assignment.
fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// Sends `state` to the notification socket at `socket`: a file system path,
/// or `@name` for the abstract socket `name`.
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let addr = socket_addr(socket)?;
    let sock = UnixDatagram::unbound()?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!(
                "sent {sent} of {} bytes to {}",
                state.len(),
                socket.to_string_lossy()
            ),
        ));
    }
    Ok(())
}

/// The address `$NOTIFY_SOCKET` names.
fn socket_addr(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(socket),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{NOTIFY_SOCKET_ENV}={:?} is neither an absolute path nor an abstract socket (@name)",
                OsString::from(socket)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a notification arrives");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1\nSTATUS=serving").unwrap();
        assert_eq!(recv(&listener), "READY=1\nSTATUS=serving");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("berth-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        assert_eq!(recv(&listener), "STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = notify_to(dir.path().join("absent.sock").as_os_str(), "READY=1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_relative_path_is_refused() {
        let err = notify_to(OsStr::new("relative.sock"), "READY=1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("relative.sock"), "{err}");
    }

    #[test]
    fn status_stays_on_one_line() {
        assert_eq!(one_line("a\nb"), "a b");
    }

    /// The environment is process-wide: only this test touches
    /// NOTIFY_SOCKET, and it covers both the unset and the set case.
    #[test]
    fn follows_the_environment() {
        std::env::remove_var(NOTIFY_SOCKET_ENV);
        assert!(!ready("up").unwrap(), "unset NOTIFY_SOCKET is a no-op");
        std::env::set_var(NOTIFY_SOCKET_ENV, "");
        assert!(!ready("up").unwrap(), "empty NOTIFY_SOCKET is a no-op");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        std::env::set_var(NOTIFY_SOCKET_ENV, &path);
        assert!(ready("serving on\nthe socket").unwrap());
        assert_eq!(recv(&listener), "READY=1\nSTATUS=serving on the socket");
        assert!(stopping("bye").unwrap());
        assert_eq!(recv(&listener), "STOPPING=1\nSTATUS=bye");
        assert!(status("busy").unwrap());
        assert_eq!(recv(&listener), "STATUS=busy");
        std::env::remove_var(NOTIFY_SOCKET_ENV);
    }
}
