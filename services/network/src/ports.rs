//! Host-port reservations. A published port is forwarded by a DNAT rule
//! (no proxy on the data path); berth-network also holds a socket bound to
//! it so that no other program can take the port and a second publish of
//! it fails the way docker's does. TCP sockets are bound but never listen:
//! a connection that somehow missed the DNAT is refused, not left hanging.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;

use nix::sys::socket::{bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn};

/// (protocol, host address or 0.0.0.0, port).
pub type PortKey = (String, Ipv4Addr, u16);

/// Why a port could not be reserved.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("Bind for {0}:{1} failed: port is already allocated")]
    Allocated(Ipv4Addr, u16),
    #[error("cannot publish {0}:{1}: {2}")]
    Other(Ipv4Addr, u16, String),
}

/// The sockets berth-network holds.
#[derive(Default)]
pub struct Reservations {
    held: HashMap<PortKey, OwnedFd>,
}

impl Reservations {
    /// Binds `proto` `addr`:`port` (0: a free port the kernel picks) and
    /// keeps the socket. Returns the port.
    pub fn reserve(&mut self, proto: &str, addr: Ipv4Addr, port: u16) -> Result<u16, PortError> {
        let ty = match proto {
            "tcp" => SockType::Stream,
            "udp" => SockType::Datagram,
            p => {
                return Err(PortError::Other(
                    addr,
                    port,
                    format!("unknown protocol {p}"),
                ))
            }
        };
        if port != 0 && self.held.contains_key(&(proto.to_string(), addr, port)) {
            return Err(PortError::Allocated(addr, port));
        }
        let fd = socket(AddressFamily::Inet, ty, SockFlag::SOCK_CLOEXEC, None)
            .map_err(|e| PortError::Other(addr, port, e.to_string()))?;
        match bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrIn::from(SocketAddrV4::new(addr, port)),
        ) {
            Ok(()) => {}
            Err(nix::errno::Errno::EADDRINUSE) => return Err(PortError::Allocated(addr, port)),
            Err(e) => return Err(PortError::Other(addr, port, e.to_string())),
        }
        let got: SockaddrIn = getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd))
            .map_err(|e| PortError::Other(addr, port, e.to_string()))?;
        let port = got.port();
        self.held.insert((proto.to_string(), addr, port), fd);
        Ok(port)
    }

    /// Closes the socket of a reservation (if held).
    pub fn release(&mut self, proto: &str, addr: Ipv4Addr, port: u16) {
        self.held.remove(&(proto.to_string(), addr, port));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_port_is_refused_to_others_and_freed_on_release() {
        let mut r = Reservations::default();
        let lo = Ipv4Addr::LOCALHOST;
        let p = r.reserve("tcp", lo, 0).unwrap();
        assert_ne!(p, 0);
        // Another program cannot take it...
        assert!(std::net::TcpListener::bind((lo, p)).is_err());
        // ...nor a second publish.
        let e = r.reserve("tcp", lo, p).unwrap_err().to_string();
        assert!(e.contains("port is already allocated"), "{e}");
        // UDP is a different port space.
        r.reserve("udp", lo, p).unwrap();
        r.release("tcp", lo, p);
        std::net::TcpListener::bind((lo, p)).unwrap();
        // A port another program holds is refused with docker's words.
        let l = std::net::TcpListener::bind((lo, 0)).unwrap();
        let taken = l.local_addr().unwrap().port();
        let e = r.reserve("tcp", lo, taken).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("Bind for 127.0.0.1:{taken} failed: port is already allocated")
        );
    }
}
