//! Device nodes and the standard /dev symlinks, created inside the rootfs.

use crate::error::{Context, Error, Result};
use crate::rootpath::{fd_path, Kind, Root};
use crate::sys::path_cstring;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A device node to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub path: PathBuf,
    /// S_IFCHR, S_IFBLK or S_IFIFO.
    pub kind: libc::mode_t,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// null, zero, full, random, urandom, tty.
pub fn default_devices() -> Vec<Device> {
    [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .iter()
    .map(|(p, ma, mi)| Device {
        path: PathBuf::from(p),
        kind: libc::S_IFCHR,
        major: *ma,
        minor: *mi,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

/// Convert a spec device.
pub fn from_spec(d: &LinuxDevice) -> Result<Device> {
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
        LinuxDeviceType::B => libc::S_IFBLK,
        LinuxDeviceType::P => libc::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(Error::Spec(format!(
                "device {} has type 'a'",
                d.path().display()
            )))
        }
    };
    Ok(Device {
        path: d.path().clone(),
        kind,
        major: d.major().max(0) as u64,
        minor: d.minor().max(0) as u64,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    })
}

/// mknod the device inside the root (replacing nothing that exists).
pub fn create_device(root: &Root, dev: &Device) -> Result<()> {
    let parent = dev.path.parent().unwrap_or(Path::new("/"));
    let name = dev
        .path
        .file_name()
        .ok_or_else(|| Error::Spec(format!("bad device path {}", dev.path.display())))?;
    let dirfd = root.ensure(parent, Kind::Dir, 0o755)?;
    // O_PATH fds cannot be used with mknodat; reopen the directory for real.
    let dir = nix::fcntl::open(
        &fd_path(&dirfd),
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_ctx(|| format!("open {} in rootfs", parent.display()))?;
    let cname = path_cstring(Path::new(name))?;
    let devt = libc::makedev(dev.major as u32, dev.minor as u32);
    // SAFETY: valid fd and C string.
    let ret = unsafe { libc::mknodat(dir.as_raw_fd(), cname.as_ptr(), dev.kind | dev.mode, devt) };
    if ret == -1 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EEXIST) {
            return Ok(());
        }
        return Err(Error::os(format!("mknod {}", dev.path.display()), e));
    }
    // mknod honours the umask; set the exact mode and owner.
    // SAFETY: valid fd and C string.
    if unsafe { libc::fchmodat(dir.as_raw_fd(), cname.as_ptr(), dev.mode, 0) } == -1 {
        return Err(Error::last_os(format!("chmod {}", dev.path.display())));
    }
    // SAFETY: valid fd and C string.
    if unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            cname.as_ptr(),
            dev.uid,
            dev.gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } == -1
    {
        return Err(Error::last_os(format!("chown {}", dev.path.display())));
    }
    Ok(())
}

/// /dev/ptmx, /dev/fd, /dev/stdin, /dev/stdout, /dev/stderr, /dev/core.
pub fn create_symlinks(root: &Root) -> Result<()> {
    let links = [
        ("pts/ptmx", "ptmx"),
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    let dirfd = root.ensure(Path::new("/dev"), Kind::Dir, 0o755)?;
    let dir = nix::fcntl::open(
        &fd_path(&dirfd),
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx("open /dev in rootfs")?;
    for (target, name) in links {
        // ptmx may already exist as a node or mount; replace a plain node.
        if name == "ptmx" {
            let _ = nix::unistd::unlinkat(&dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
        match nix::unistd::symlinkat(target, &dir, name) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(Error::errno(format!("symlink /dev/{name} -> {target}"), e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_docker_set() {
        let names: Vec<_> = default_devices()
            .iter()
            .map(|d| d.path.display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "/dev/null",
                "/dev/zero",
                "/dev/full",
                "/dev/random",
                "/dev/urandom",
                "/dev/tty"
            ]
        );
    }
}
