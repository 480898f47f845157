//! Pseudo-terminals: open a pty pair in the current mount namespace (so a
//! container's `tty` names its own /dev/pts), hand the master over a unix
//! socket, size it, and make a slave the controlling terminal.

use crate::error::{Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Open `/dev/ptmx` and unlock it; returns the master and the slave's path.
pub fn open_master() -> Result<(OwnedFd, String)> {
    // SAFETY: open(2) with a static path.
    let fd = unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::last_os("open /dev/ptmx"));
    }
    // SAFETY: fresh fd that we own.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) } < 0 {
        return Err(Error::last_os("unlock pty"));
    }
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN takes a pointer to unsigned int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } < 0 {
        return Err(Error::last_os("get pty number"));
    }
    Ok((master, format!("/dev/pts/{n}")))
}

/// Open the slave side by path (O_NOCTTY; see [`make_controlling`]).
pub fn open_slave(path: &str) -> Result<OwnedFd> {
    let c = crate::sys::cstring(path, "pty path")?;
    // SAFETY: open(2) with a valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
    if fd < 0 {
        return Err(Error::last_os(format!("open {path}")));
    }
    // SAFETY: fresh fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// New session with `slave` as its controlling terminal, on stdin, stdout
/// and stderr.
pub fn make_controlling(slave: RawFd) -> Result<()> {
    // SAFETY: plain syscalls on a valid fd.
    unsafe {
        if libc::setsid() < 0 {
            return Err(Error::last_os("setsid"));
        }
        if libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
            return Err(Error::last_os("set controlling terminal"));
        }
        for fd in 0..3 {
            if libc::dup2(slave, fd) < 0 {
                return Err(Error::last_os("dup2 terminal"));
            }
        }
    }
    Ok(())
}

/// Set the window size of a terminal (either side).
pub fn set_size(fd: RawFd, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ takes a pointer to winsize.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(Error::last_os("set terminal size"));
    }
    Ok(())
}

/// Send one fd over a unix socket (SCM_RIGHTS).
pub fn send_fd(sock: RawFd, fd: RawFd) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [std::io::IoSlice::new(b"F")];
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(sock, &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(|e| Error::errno("send pty master", e))?;
    Ok(())
}

/// Receive one fd sent with [`send_fd`]; None when the peer closed first.
pub fn recv_fd(sock: RawFd) -> Result<Option<OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|e| Error::errno("receive pty master", e))?;
    for c in msg
        .cmsgs()
        .map_err(|e| Error::errno("receive pty master", e))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel gave us this fd.
                return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
    }
    Ok(None)
}
