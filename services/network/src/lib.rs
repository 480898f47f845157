//! berth-network: network namespaces for containers.
//!
//! For now two modes exist: `none`, a private namespace that has only the
//! loopback interface (up), and `host`, the host's own namespace. Namespaces
//! are kept as bind mounts under `<state>/netns/<container id>` so the runtime
//! can join them and later issues can wire bridges and veths into them.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub mod ipam;

use berth_proto::network::v1::network_server::Network;
use berth_proto::network::v1::{AttachRequest, AttachResponse, DetachRequest, DetachResponse};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use tonic::{Request, Response, Status};
use tracing::info;

/// Errors of berth-network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        match e {
            Error::InvalidArgument(_) => Status::invalid_argument(e.to_string()),
            Error::Io { .. } => Status::internal(e.to_string()),
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Serves `berth.network.v1.Network`.
pub struct NetworkService {
    netns_dir: PathBuf,
}

impl NetworkService {
    /// Keeps namespace files under `state_dir/netns`.
    pub fn open(state_dir: &Path) -> Result<Self, Error> {
        let netns_dir = state_dir.join("netns");
        fs::create_dir_all(&netns_dir)
            .map_err(io_err(format!("create {}", netns_dir.display())))?;
        Ok(NetworkService { netns_dir })
    }

    fn path_for(&self, id: &str) -> Result<PathBuf, Error> {
        let ok = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && !id.starts_with('.');
        if !ok {
            return Err(Error::InvalidArgument(format!(
                "invalid container id {id:?}"
            )));
        }
        Ok(self.netns_dir.join(id))
    }

    /// Sets up networking for `id` in `mode`.
    pub fn attach(&self, id: &str, mode: &str) -> Result<AttachResponse, Error> {
        match mode {
            "host" => Ok(AttachResponse {
                netns_path: String::new(),
                interfaces: host_interfaces(),
            }),
            "" | "none" => {
                let path = self.path_for(id)?;
                if !is_nsfs(&path) {
                    create_netns(&path)?;
                    info!(id, path = %path.display(), "created network namespace");
                }
                Ok(AttachResponse {
                    netns_path: path.to_string_lossy().into_owned(),
                    interfaces: vec!["lo".into()],
                })
            }
            "bridge" | "default" => Err(Error::InvalidArgument(
                "network mode \"bridge\" is not available yet: use --network none or --network host".into(),
            )),
            other => Err(Error::InvalidArgument(format!(
                "network {other} not found: the available modes are none and host"
            ))),
        }
    }

    /// Removes what `attach` made for `id`. Idempotent.
    pub fn detach(&self, id: &str) -> Result<(), Error> {
        let path = self.path_for(id)?;
        if !path.exists() {
            return Ok(());
        }
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(io_err(format!("unmount {}", path.display()))(e.into())),
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("remove {}", path.display()))(e)),
        }
    }
}

/// Whether `path` is a namespace file (a bind mount of nsfs).
fn is_nsfs(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == NSFS_MAGIC)
}

/// Creates a new network namespace with loopback up, pinned at `path`.
fn create_netns(path: &Path) -> Result<(), Error> {
    fs::File::create(path).map_err(io_err(format!("create {}", path.display())))?;
    let target = path.to_owned();
    // unshare() affects only the calling thread, so do it in a thread of its
    // own that ends right after pinning the namespace with a bind mount.
    let result = std::thread::spawn(move || -> Result<(), Error> {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| io_err("unshare network namespace")(e.into()))?;
        loopback_up().map_err(io_err("bring loopback up"))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| io_err(format!("bind network namespace to {}", target.display()))(e.into()))
    })
    .join()
    .unwrap_or_else(|_| {
        Err(Error::Io {
            context: "network namespace thread panicked".into(),
            source: io::Error::other("panic"),
        })
    });
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) returns a new fd or -1.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh, valid fd.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: valid fd and a properly initialised ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn host_interfaces() -> Vec<String> {
    fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tonic::async_trait]
impl Network for NetworkService {
    async fn attach(
        &self,
        req: Request<AttachRequest>,
    ) -> Result<Response<AttachResponse>, Status> {
        let r = req.get_ref();
        Ok(Response::new(NetworkService::attach(
            self,
            &r.container_id,
            &r.mode,
        )?))
    }

    async fn detach(
        &self,
        req: Request<DetachRequest>,
    ) -> Result<Response<DetachResponse>, Status> {
        NetworkService::detach(self, &req.get_ref().container_id)?;
        Ok(Response::new(DetachResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn bad_ids_and_modes() {
        let dir = std::env::temp_dir().join(format!("berth-net-{}", std::process::id()));
        let svc = NetworkService::open(&dir).unwrap();
        assert!(svc.attach("../x", "none").is_err());
        let e = svc.attach("abc", "nosuchnet").unwrap_err().to_string();
        assert!(e.contains("nosuchnet"), "{e}");
        assert_eq!(svc.attach("abc", "host").unwrap().netns_path, "");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn none_mode_has_only_loopback_up() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("berth-net-none-{}", std::process::id()));
        let svc = NetworkService::open(&dir).unwrap();
        let resp = svc.attach("c1", "none").unwrap();
        let path = PathBuf::from(&resp.netns_path);
        // Idempotent.
        assert_eq!(
            svc.attach("c1", "none").unwrap().netns_path,
            resp.netns_path
        );
        let p2 = path.clone();
        let (links, lo_flags) = std::thread::spawn(move || {
            let f = fs::File::open(&p2).unwrap();
            nix::sched::setns(f, CloneFlags::CLONE_NEWNET).unwrap();
            let links: Vec<String> = fs::read_to_string("/proc/thread-self/net/dev")
                .unwrap()
                .lines()
                .skip(2)
                .map(|l| l.split(':').next().unwrap().trim().to_string())
                .collect();
            // SAFETY: see loopback_up.
            let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
            let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
            for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
                *d = *s as libc::c_char;
            }
            unsafe { libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut ifr) };
            unsafe { libc::close(raw) };
            (links, unsafe { ifr.ifr_ifru.ifru_flags })
        })
        .join()
        .unwrap();
        assert_eq!(links, vec!["lo".to_string()]);
        assert!(lo_flags & libc::IFF_UP as libc::c_short != 0);
        svc.detach("c1").unwrap();
        assert!(!path.exists());
        svc.detach("c1").unwrap();
        fs::remove_dir_all(dir).unwrap();
    }
}
