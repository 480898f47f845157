//! Resolving paths INSIDE a root directory: symlinks in an image can never
//! point a mount or a device node at a host path. Built on openat2(2) with
//! RESOLVE_IN_ROOT, so `..` and absolute symlinks stay within the root.

use crate::error::{Context, Error, Result};
use crate::sys::{cvt, path_cstring};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// A directory treated as `/` for path resolution.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// What to create at the end of a path when it is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// Split a container path into its normal components (dropping `/` and `.`;
/// `..` is kept and resolved by the kernel within the root).
pub fn components(path: &Path) -> Vec<PathBuf> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect()
}

impl Root {
    pub fn open(path: &Path) -> Result<Self> {
        let c = path_cstring(path)?;
        // SAFETY: c is a valid C string.
        let fd = cvt(
            unsafe {
                libc::open(
                    c.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            },
            || format!("open root {}", path.display()),
        )?;
        Ok(Root {
            // SAFETY: fresh fd.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// openat2(root, path, flags, RESOLVE_IN_ROOT).
    pub fn open_in_root(&self, path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
        let rel: PathBuf = components(path).into_iter().collect();
        let rel = if rel.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rel
        };
        let c = path_cstring(&rel).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: valid pointers; size matches the struct.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if ret < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fresh fd.
        Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
    }

    /// Make sure `path` exists inside the root (creating missing parents as
    /// directories and the last component as `kind`), and return an O_PATH
    /// fd to it. Every step is resolved inside the root.
    pub fn ensure(&self, path: &Path, kind: Kind, mode: u32) -> Result<OwnedFd> {
        self.ensure_depth(path, kind, mode, 0)
    }

    fn ensure_depth(&self, path: &Path, kind: Kind, mode: u32, depth: u32) -> Result<OwnedFd> {
        if depth > 40 {
            return Err(Error::os(
                format!("resolve {} in {}", path.display(), self.path.display()),
                std::io::Error::from_raw_os_error(libc::ELOOP),
            ));
        }
        let comps = components(path);
        let mut prefix = PathBuf::new();
        for (i, comp) in comps.iter().enumerate() {
            let parent = prefix.clone();
            prefix.push(comp);
            let last = i + 1 == comps.len();
            let want = if last { kind } else { Kind::Dir };
            let flags = match want {
                Kind::Dir => libc::O_PATH | libc::O_DIRECTORY,
                Kind::File => libc::O_PATH,
            };
            match self.open_in_root(&prefix, flags) {
                Ok(fd) => {
                    if last {
                        return Ok(fd);
                    }
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => {
                    return Err(Error::os(
                        format!("open {} in {}", prefix.display(), self.path.display()),
                        e,
                    ))
                }
            }
            let pfd = self
                .open_in_root(&parent, libc::O_PATH | libc::O_DIRECTORY)
                .with_ctx(|| format!("open {} in {}", parent.display(), self.path.display()))?;
            let name = path_cstring(comp)?;
            let ret = match want {
                // SAFETY: valid fd and C string.
                Kind::Dir => unsafe {
                    libc::mkdirat(
                        pfd.as_raw_fd(),
                        name.as_ptr(),
                        if last { mode } else { 0o755 },
                    )
                },
                Kind::File => {
                    // SAFETY: valid fd and C string.
                    let fd = unsafe {
                        libc::openat(
                            pfd.as_raw_fd(),
                            name.as_ptr(),
                            libc::O_CREAT
                                | libc::O_EXCL
                                | libc::O_NOFOLLOW
                                | libc::O_CLOEXEC
                                | libc::O_WRONLY,
                            mode,
                        )
                    };
                    if fd >= 0 {
                        // SAFETY: fresh fd we own.
                        unsafe { libc::close(fd) };
                        0
                    } else {
                        -1
                    }
                }
            };
            if ret == -1 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(Error::os(
                        format!("create {} in {}", prefix.display(), self.path.display()),
                        e,
                    ));
                }
                // A dangling symlink: create what it points to, still inside
                // the root, then continue with the rest of the path.
                if let Ok(target) = nix::fcntl::readlinkat(&pfd, comp.as_path()) {
                    let mut next = if Path::new(&target).is_absolute() {
                        PathBuf::from(&target)
                    } else {
                        parent.join(&target)
                    };
                    for rest in &comps[i + 1..] {
                        next.push(rest);
                    }
                    return self.ensure_depth(&next, kind, mode, depth + 1);
                }
            }
            let fd = self
                .open_in_root(&prefix, flags)
                .with_ctx(|| format!("open {} in {}", prefix.display(), self.path.display()))?;
            if last {
                return Ok(fd);
            }
        }
        // Empty path: the root itself.
        self.open_in_root(Path::new("."), libc::O_PATH | libc::O_DIRECTORY)
            .with_ctx(|| format!("open {}", self.path.display()))
    }
}

/// The `/proc/self/fd/N` path of an fd: mounting onto it mounts onto the
/// exact inode resolved above, not onto whatever a path resolves to later.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-rt-root-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn real(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(fd_path(fd)).unwrap()
    }

    #[test]
    fn symlinks_stay_inside_root() {
        let d = tmp("sym");
        let root = d.join("root");
        let outside = d.join("outside");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // absolute symlink pointing at a host path
        symlink(&outside, root.join("evil")).unwrap();
        // relative symlink escaping with ..
        symlink("../../../../../../outside", root.join("evil2")).unwrap();
        let r = Root::open(&root).unwrap();
        let fd = r.ensure(Path::new("/evil/x"), Kind::Dir, 0o755).unwrap();
        let p = real(&fd);
        assert!(p.starts_with(&root), "{} escaped", p.display());
        assert!(!outside.join("x").exists());
        let fd = r.ensure(Path::new("evil2/y"), Kind::File, 0o644).unwrap();
        assert!(real(&fd).starts_with(&root));
        assert!(!outside.join("y").exists());
        let fd = r
            .ensure(Path::new("/../../etc/z"), Kind::Dir, 0o755)
            .unwrap();
        assert_eq!(real(&fd), root.join("etc/z"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn components_drop_root_and_dot() {
        assert_eq!(
            components(Path::new("/a/./b/../c")),
            vec![
                PathBuf::from("a"),
                PathBuf::from("b"),
                PathBuf::from(".."),
                PathBuf::from("c")
            ]
        );
        assert!(components(Path::new("/")).is_empty());
    }
}
