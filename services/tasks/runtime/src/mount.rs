//! Mounts: the rootfs (overlay or bind, with long overlay options handled),
//! the spec's mounts inside the rootfs, pivot_root, masked and read-only paths.

use crate::error::{Context, Error, Result};
use crate::rootpath::{fd_path, Kind, Root};
use crate::spec::RootfsMount;
use crate::sys::{cvt, path_cstring};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The kernel copies at most one page of mount data.
pub const MAX_MOUNT_DATA: usize = 4095;

/// Parsed mount options: flags, propagation flags and the data string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub propagation: MsFlags,
    pub data: Vec<String>,
}

/// Split OCI/fstab style options into mount flags and data.
pub fn parse_options(options: &[String]) -> MountOptions {
    let mut o = MountOptions {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: Vec::new(),
    };
    for opt in options {
        let (set, clear, prop) = match opt.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty(), MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty(), MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV, MsFlags::empty()),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty(), MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC, MsFlags::empty()),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty(), MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty(), MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty(), MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty(), MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty(), MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty(), MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty(), MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty(), MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty(), MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty(), MsFlags::empty()),
            "rbind" => (
                MsFlags::MS_BIND | MsFlags::MS_REC,
                MsFlags::empty(),
                MsFlags::empty(),
            ),
            "private" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_PRIVATE),
            "rprivate" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            ),
            "shared" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SHARED),
            "rshared" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_SHARED | MsFlags::MS_REC,
            ),
            "slave" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SLAVE),
            "rslave" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
            ),
            "unbindable" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_UNBINDABLE),
            "runbindable" => (
                MsFlags::empty(),
                MsFlags::empty(),
                MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
            ),
            other => {
                o.data.push(other.to_string());
                continue;
            }
        };
        o.flags.insert(set);
        o.flags.remove(clear);
        o.propagation.insert(prop);
    }
    o
}

fn do_mount(
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(Some(source), target, fstype, flags, data).with_ctx(|| {
        format!(
            "mount {} ({}) on {}",
            source,
            fstype.unwrap_or("bind"),
            target.display()
        )
    })
}

/// Longest common parent directory of absolute paths.
pub fn common_parent(paths: &[PathBuf]) -> PathBuf {
    let mut common: Option<PathBuf> = None;
    for p in paths {
        let parent = p.parent().unwrap_or(Path::new("/")).to_path_buf();
        common = Some(match common {
            None => parent,
            Some(c) => {
                let mut out = PathBuf::new();
                for (a, b) in c.components().zip(parent.components()) {
                    if a != b {
                        break;
                    }
                    out.push(a.as_os_str());
                }
                out
            }
        });
    }
    common.unwrap_or_else(|| PathBuf::from("/"))
}

/// Rewrite overlay options so that lowerdir/upperdir/workdir paths are
/// relative to `base`. Returns the new data string.
pub fn relative_overlay_data(data: &[String], base: &Path) -> String {
    let rel = |p: &str| -> String {
        match Path::new(p).strip_prefix(base) {
            Ok(r) if !r.as_os_str().is_empty() => r.display().to_string(),
            _ => p.to_string(),
        }
    };
    data.iter()
        .map(|opt| match opt.split_once('=') {
            Some(("lowerdir", v)) => {
                let parts: Vec<String> = v.split(':').map(rel).collect();
                format!("lowerdir={}", parts.join(":"))
            }
            Some((k @ ("upperdir" | "workdir"), v)) => format!("{k}={}", rel(v)),
            _ => opt.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// All directory paths named in overlay options.
pub fn overlay_paths(data: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for opt in data {
        match opt.split_once('=') {
            Some(("lowerdir", v)) => out.extend(v.split(':').map(PathBuf::from)),
            Some(("upperdir" | "workdir", v)) => out.push(PathBuf::from(v)),
            _ => {}
        }
    }
    out
}

/// Restores the working directory when dropped.
struct CwdGuard(OwnedFd);

impl Drop for CwdGuard {
    fn drop(&mut self) {
        // SAFETY: valid fd. Best effort: nothing sensible to do on failure.
        unsafe { libc::fchdir(self.0.as_raw_fd()) };
    }
}

fn mount_overlay(m: &RootfsMount, target: &Path) -> Result<()> {
    let opts = parse_options(&m.options);
    let joined = opts.data.join(",");
    let source = if m.source.is_empty() {
        "overlay"
    } else {
        m.source.as_str()
    };
    if joined.len() <= MAX_MOUNT_DATA {
        return do_mount(source, target, Some("overlay"), opts.flags, Some(&joined));
    }
    // Too long for one page: mount with paths relative to their common parent.
    // Changing the cwd is process-wide; callers must be single-threaded (the
    // container child is).
    let paths = overlay_paths(&opts.data);
    let base = common_parent(&paths);
    let data = relative_overlay_data(&opts.data, &base);
    if data.len() > MAX_MOUNT_DATA {
        return Err(Error::Spec(format!(
            "overlay options are {} bytes even relative to {} (max {MAX_MOUNT_DATA})",
            data.len(),
            base.display()
        )));
    }
    let target = if target.is_absolute() {
        target.to_path_buf()
    } else {
        std::env::current_dir().ctx("getcwd")?.join(target)
    };
    let dot = path_cstring(Path::new("."))?;
    // SAFETY: valid C string.
    let cwd = cvt(
        unsafe {
            libc::open(
                dot.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        },
        || "open current directory".into(),
    )?;
    // SAFETY: fresh fd.
    let _guard = CwdGuard(unsafe { OwnedFd::from_raw_fd(cwd) });
    std::env::set_current_dir(&base).with_ctx(|| format!("chdir {}", base.display()))?;
    do_mount(source, &target, Some("overlay"), opts.flags, Some(&data))
}

fn mount_bind(m: &RootfsMount, target: &Path) -> Result<()> {
    let mut opts = parse_options(&m.options);
    if !opts.flags.contains(MsFlags::MS_BIND) {
        opts.flags.insert(MsFlags::MS_BIND | MsFlags::MS_REC);
    }
    let bind_flags = opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
    do_mount(&m.source, target, None, bind_flags, None)?;
    let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
    if !extra.is_empty() {
        do_mount(
            &m.source,
            target,
            None,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | extra,
            None,
        )?;
    }
    Ok(())
}

/// Mount the rootfs mounts from `rootfs.json` on `target`, in order.
/// Overlay options longer than a page are mounted with relative paths.
pub fn mount_overlay_or_bind(mounts: &[RootfsMount], target: &Path) -> Result<()> {
    if mounts.is_empty() {
        // No rootfs mounts: bind the directory onto itself so it is a mount
        // point (pivot_root needs one).
        return do_mount(
            &target.display().to_string(),
            target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        );
    }
    for m in mounts {
        match m.typ.as_str() {
            "overlay" => mount_overlay(m, target)?,
            "bind" | "rbind" => mount_bind(m, target)?,
            other => {
                let opts = parse_options(&m.options);
                let data = opts.data.join(",");
                do_mount(&m.source, target, Some(other), opts.flags, Some(&data))?
            }
        }
    }
    Ok(())
}

/// Make the whole mount tree a slave of the host's (runc's default root
/// propagation): nothing the container mounts propagates back to the host,
/// while mounts the host makes under a shared mount still reach binds that
/// ask for slave or shared propagation. Binds are rprivate unless asked.
pub fn make_root_slave() -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .ctx("make / rslave")
}

/// True when the host's /sys/fs/cgroup is a cgroup2 filesystem.
fn host_is_cgroup2() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Mount one spec mount inside the rootfs. The target is created and resolved
/// inside the root; the mount goes onto the resolved fd.
pub fn mount_spec_mount(root: &Root, m: &oci_spec::runtime::Mount) -> Result<()> {
    let dest = m.destination();
    let typ = m.typ().clone().unwrap_or_else(|| "bind".into());
    let options = m.options().clone().unwrap_or_default();
    let opts = parse_options(&options);
    let source = m
        .source()
        .as_ref()
        .map(|s| s.display().to_string())
        .unwrap_or_else(|| typ.clone());
    let is_bind = typ == "bind" || opts.flags.contains(MsFlags::MS_BIND);

    if typ == "cgroup" && !host_is_cgroup2() {
        // cgroup v1/hybrid: a cgroup2 mount would show the wrong hierarchy and
        // v1 needs one mount per controller; leave the directory empty.
        root.ensure(dest, Kind::Dir, 0o755)?;
        return Ok(());
    }

    let kind = if is_bind {
        match std::fs::metadata(&source) {
            Ok(md) if !md.is_dir() => Kind::File,
            Ok(_) => Kind::Dir,
            Err(e) => return Err(Error::os(format!("stat bind source {source}"), e)),
        }
    } else {
        Kind::Dir
    };
    let target_fd = root.ensure(dest, kind, if kind == Kind::Dir { 0o755 } else { 0o644 })?;
    let target = fd_path(&target_fd);
    let what = |step: &str| format!("{step} {} on {}", typ, dest.display());

    if is_bind {
        let bind = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        mount(
            Some(source.as_str()),
            &target,
            None::<&str>,
            bind,
            None::<&str>,
        )
        .with_ctx(|| format!("bind mount {source} on {}", dest.display()))?;
        let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            // Re-resolve: the fd still names the old (covered) inode.
            let fd = root
                .open_in_root(dest, libc::O_PATH)
                .with_ctx(|| format!("open {} after mount", dest.display()))?;
            mount(
                None::<&str>,
                &fd_path(&fd),
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | extra,
                None::<&str>,
            )
            .with_ctx(|| what("remount"))?;
            // A remount changes only the top mount of an rbind: make the
            // mounts below read-only too (docker 25's recursive read-only).
            if extra.contains(MsFlags::MS_RDONLY) && opts.flags.contains(MsFlags::MS_REC) {
                let fd = root
                    .open_in_root(dest, libc::O_PATH)
                    .with_ctx(|| format!("open {} after mount", dest.display()))?;
                recursive_read_only(&fd).with_ctx(|| what("make read-only below"))?;
            }
        }
    } else {
        let data = opts.data.join(",");
        let data = if data.is_empty() {
            None
        } else {
            Some(data.as_str())
        };
        let fstype = if typ == "cgroup" {
            "cgroup2"
        } else {
            typ.as_str()
        };
        mount(
            Some(source.as_str()),
            &target,
            Some(fstype),
            opts.flags,
            data,
        )
        .with_ctx(|| what("mount"))?;
    }
    if !opts.propagation.is_empty() {
        let fd = root
            .open_in_root(dest, libc::O_PATH)
            .with_ctx(|| format!("open {} after mount", dest.display()))?;
        mount(
            None::<&str>,
            &fd_path(&fd),
            None::<&str>,
            opts.propagation,
            None::<&str>,
        )
        .with_ctx(|| what("set propagation of"))?;
    }
    Ok(())
}

/// mount_setattr(2) MOUNT_ATTR_RDONLY on the mount at `fd` and every mount
/// below it. A kernel without mount_setattr (before 5.12) keeps only the
/// top mount read-only.
fn recursive_read_only(fd: &OwnedFd) -> nix::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const AT_RECURSIVE: libc::c_int = 0x8000;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a valid fd, an empty NUL-terminated path with AT_EMPTY_PATH,
    // and a mount_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        return Ok(());
    }
    match nix::errno::Errno::last() {
        nix::errno::Errno::ENOSYS => Ok(()),
        e => Err(e),
    }
}

/// pivot_root into `new_root` and detach the old root.
pub fn pivot_root(new_root: &Path) -> Result<()> {
    let old = nix::fcntl::open(
        "/",
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx("open old root /")?;
    nix::unistd::chdir(new_root).with_ctx(|| format!("chdir {}", new_root.display()))?;
    nix::unistd::pivot_root(".", ".").with_ctx(|| format!("pivot_root {}", new_root.display()))?;
    nix::unistd::fchdir(&old).ctx("fchdir old root")?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx("make old root rslave")?;
    umount2(".", MntFlags::MNT_DETACH).ctx("detach old root")?;
    nix::unistd::chdir("/").ctx("chdir / after pivot_root")?;
    Ok(())
}

/// Mask paths (after pivot_root): directories get an empty read-only tmpfs,
/// files get /dev/null bound over them. Missing paths are skipped.
pub fn mask_paths(paths: &[String]) -> Result<()> {
    for p in paths {
        match std::fs::metadata(p) {
            Ok(md) if md.is_dir() => mount(
                Some("tmpfs"),
                p.as_str(),
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .with_ctx(|| format!("mask {p}"))?,
            Ok(_) => mount(
                Some("/dev/null"),
                p.as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .with_ctx(|| format!("mask {p}"))?,
            Err(_) => continue,
        }
    }
    Ok(())
}

/// Make paths read-only (after pivot_root). Missing paths are skipped.
pub fn readonly_paths(paths: &[String]) -> Result<()> {
    for p in paths {
        if std::fs::symlink_metadata(p).is_err() {
            continue;
        }
        mount(
            Some(p.as_str()),
            p.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_ctx(|| format!("bind {p} for read-only"))?;
        mount(
            Some(p.as_str()),
            p.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .with_ctx(|| format!("remount {p} read-only"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_flags_and_data() {
        let o = parse_options(&s(&[
            "nosuid",
            "noexec",
            "nodev",
            "ro",
            "mode=755",
            "size=65536k",
        ]));
        assert!(o.flags.contains(
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV | MsFlags::MS_RDONLY
        ));
        assert_eq!(o.data, s(&["mode=755", "size=65536k"]));
        let o = parse_options(&s(&["rbind", "rprivate", "ro", "rw"]));
        assert!(o.flags.contains(MsFlags::MS_BIND | MsFlags::MS_REC));
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        assert_eq!(o.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
    }

    #[test]
    fn common_parent_and_relative_data() {
        let paths = vec![
            PathBuf::from("/var/lib/s/snapshots/1/fs"),
            PathBuf::from("/var/lib/s/snapshots/22/fs"),
            PathBuf::from("/var/lib/s/snapshots/3/work"),
        ];
        assert_eq!(common_parent(&paths), PathBuf::from("/var/lib/s/snapshots"));
        let data = s(&[
            "lowerdir=/var/lib/s/snapshots/1/fs:/var/lib/s/snapshots/22/fs",
            "upperdir=/var/lib/s/snapshots/3/fs",
            "workdir=/var/lib/s/snapshots/3/work",
            "index=off",
        ]);
        assert_eq!(
            relative_overlay_data(&data, Path::new("/var/lib/s/snapshots")),
            "lowerdir=1/fs:22/fs,upperdir=3/fs,workdir=3/work,index=off"
        );
        assert_eq!(overlay_paths(&data).len(), 4);
        assert_eq!(
            common_parent(&[PathBuf::from("/a/b"), PathBuf::from("/c/d")]),
            PathBuf::from("/")
        );
    }

    struct Cleanup {
        dir: PathBuf,
        target: PathBuf,
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = umount2(&self.target, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn root_long_overlay_options_are_mounted_relative() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!(
            "berth-rt-ovl-{}/a-long-directory-name-for-the-snapshots-of-this-test",
            std::process::id()
        ));
        let guard = Cleanup {
            dir: dir.parent().unwrap().to_path_buf(),
            target: dir.join("merged"),
        };
        let mut lowers = Vec::new();
        for i in 0..160 {
            let d = dir.join(format!("{i:05}")).join("fs");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("layer{i}")), format!("{i}")).unwrap();
            lowers.push(d.display().to_string());
        }
        std::fs::write(dir.join("00000/fs/shadow"), "top").unwrap();
        std::fs::write(dir.join("00159/fs/shadow"), "bottom").unwrap();
        for d in ["up/fs", "up/work", "merged"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let options = vec![
            format!("lowerdir={}", lowers.join(":")),
            format!("upperdir={}", dir.join("up/fs").display()),
            format!("workdir={}", dir.join("up/work").display()),
        ];
        assert!(options.join(",").len() > 2 * 4096);
        let m = RootfsMount {
            typ: "overlay".into(),
            source: "overlay".into(),
            options,
        };
        let cwd_before = std::env::current_dir().unwrap();
        mount_overlay_or_bind(&[m], &guard.target).unwrap();
        assert_eq!(std::env::current_dir().unwrap(), cwd_before);
        let merged = &guard.target;
        assert_eq!(std::fs::read_to_string(merged.join("layer0")).unwrap(), "0");
        assert_eq!(
            std::fs::read_to_string(merged.join("layer159")).unwrap(),
            "159"
        );
        assert_eq!(
            std::fs::read_to_string(merged.join("shadow")).unwrap(),
            "top"
        );
        std::fs::write(merged.join("new"), "x").unwrap();
        assert!(dir.join("up/fs/new").exists());
    }
}
