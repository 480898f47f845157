//! Bringing up the loopback interface in a new network namespace.

use crate::error::{Error, Result};

/// ioctl SIOCGIFFLAGS / SIOCSIFFLAGS on `lo` to set IFF_UP.
pub fn loopback_up() -> Result<()> {
    // SAFETY: plain socket call.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(Error::last_os("socket for loopback setup"));
    }
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: valid socket and ifreq pointer.
    let r = unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut req) };
    let result = if r < 0 {
        Err(Error::last_os("ioctl SIOCGIFFLAGS lo"))
    } else {
        // SAFETY: the flags union member is the one set by SIOCGIFFLAGS.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: valid socket and ifreq pointer.
        if unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &req) } < 0 {
            Err(Error::last_os("ioctl SIOCSIFFLAGS lo up"))
        } else {
            Ok(())
        }
    };
    // SAFETY: we own sock.
    unsafe { libc::close(sock) };
    result
}
