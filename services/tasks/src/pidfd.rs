//! Thin wrappers over pidfd_open(2) and pidfd_send_signal(2).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// Opens a pidfd for `pid`.
pub fn open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the returned fd is owned by us.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `sig` to the process behind `fd`.
pub fn send_signal(fd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until the process behind `fd` has exited.
pub async fn exited(fd: OwnedFd) -> io::Result<()> {
    // The fd is owned by the AsyncFd and closed only when it is dropped.
    #[allow(deprecated)]
    let afd = AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)?;
    let _guard = afd.readable().await?;
    Ok(())
}
