//! Safe access to a container's files from the host, for `cp`, `diff`,
//! `export` and `commit`.
//!
//! Every path a user names is resolved with `openat2(RESOLVE_IN_ROOT)`
//! against a directory fd of the container's root, so symlinks (absolute
//! ones too) and `..` stay inside it. Trees are walked fd by fd with
//! `O_NOFOLLOW`: a symlink in the container is archived as a symlink, never
//! followed to a host file.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, mkdirat, mknodat, FileStat, Mode, SFlag};
use nix::unistd::{symlinkat, unlinkat, UnlinkatFlags};

/// Paths the runtime mounts over (or creates as mount points); like the
/// init layer of docker they are not part of a container's changes.
const MOUNT_POINTS: [&str; 6] = [
    "/proc",
    "/sys",
    "/dev",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
];

pub(crate) fn is_mount_point(p: &str) -> bool {
    MOUNT_POINTS
        .iter()
        .any(|m| p == *m || p.strip_prefix(m).is_some_and(|r| r.starts_with('/')))
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Opens `path` (absolute or not, inside the container) below `root`.
pub(crate) fn open_in_root(root: &OwnedFd, path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let how = || {
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
    };
    let rel = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let mut tries = 0;
    loop {
        match openat2(root, rel, how()) {
            Err(Errno::EAGAIN) if tries < 16 => tries += 1,
            r => return r.map_err(errno_io),
        }
    }
}

/// Opens a host directory as a root for [`open_in_root`].
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno_io)
}

/// Splits a container path into its parent and last name. "/" and paths
/// ending in "/." have no last name (they mean a directory's contents).
pub(crate) fn split(path: &str) -> (PathBuf, Option<OsString>) {
    let p = Path::new(path);
    if path.ends_with("/.") || path == "." {
        return (p.to_path_buf(), None);
    }
    let mut comps: Vec<&OsStr> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    match comps.pop() {
        None => (PathBuf::from("/"), None),
        Some(last) => {
            let parent: PathBuf = std::iter::once(OsStr::new("/")).chain(comps).collect();
            (parent, Some(last.to_os_string()))
        }
    }
}

pub(crate) fn lstat_at(dir: &OwnedFd, name: &OsStr) -> io::Result<FileStat> {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno_io)
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// A char device 0/0: an overlayfs whiteout.
fn is_whiteout(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFCHR && st.st_rdev == 0
}

fn is_opaque(dir: &OwnedFd) -> bool {
    let mut buf = [0u8; 4];
    let name = c"trusted.overlay.opaque";
    // SAFETY: valid fd, NUL-terminated name, buffer of the given length.
    let n = unsafe {
        libc::fgetxattr(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

fn names_in(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    // The magic link reopens this very directory: no path is resolved again.
    let mut names: Vec<OsString> = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    Ok(names)
}

fn open_child(dir: &OwnedFd, name: &OsStr, flags: OFlag) -> io::Result<OwnedFd> {
    openat(
        dir,
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno_io)
}

/// How a walk writes the tree.
#[derive(Clone, Copy)]
pub(crate) struct WalkOpts {
    /// Turn overlayfs whiteouts and opaque dirs into OCI `.wh.` entries
    /// (for a layer made from an upper dir).
    pub oci_whiteouts: bool,
    /// Leave out the runtime's mount points.
    pub skip_mount_points: bool,
}

fn header_for(st: &FileStat, t: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(t);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(size);
    h
}

/// Appends `name` (in `dir`) to the archive as `arc`, recursing into
/// directories. `cpath` is its path in the container ("/etc/x").
pub(crate) fn append_entry<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &OwnedFd,
    name: &OsStr,
    arc: &Path,
    cpath: &Path,
    opts: WalkOpts,
) -> io::Result<()> {
    if opts.skip_mount_points && is_mount_point(&cpath.to_string_lossy()) {
        return Ok(());
    }
    let st = match lstat_at(dir, name) {
        Ok(st) => st,
        // Gone meanwhile (a running container).
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    match kind(&st) {
        SFlag::S_IFDIR => {
            let sub = open_child(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
            let mut h = header_for(&st, tar::EntryType::Directory, 0);
            b.append_data(&mut h, arc, io::empty())?;
            if opts.oci_whiteouts && is_opaque(&sub) {
                let mut h = header_for(&st, tar::EntryType::Regular, 0);
                h.set_mode(0o644);
                b.append_data(&mut h, arc.join(".wh..wh..opq"), io::empty())?;
            }
            append_children(b, &sub, arc, cpath, opts)?;
        }
        SFlag::S_IFREG => {
            let fd = open_child(dir, name, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
            let file = std::fs::File::from(fd);
            let size = st.st_size.max(0) as u64;
            let mut h = header_for(&st, tar::EntryType::Regular, size);
            // Exactly `size` bytes, even if the file changes meanwhile.
            let mut data = file.take(size).chain(io::repeat(0)).take(size);
            b.append_data(&mut h, arc, &mut data)?;
        }
        SFlag::S_IFLNK => {
            let target = nix::fcntl::readlinkat(dir, name).map_err(errno_io)?;
            let mut h = header_for(&st, tar::EntryType::Symlink, 0);
            b.append_link(&mut h, arc, Path::new(&target))?;
        }
        SFlag::S_IFCHR if opts.oci_whiteouts && is_whiteout(&st) => {
            let mut wh_name = OsString::from(".wh.");
            wh_name.push(name);
            let mut h = header_for(&st, tar::EntryType::Regular, 0);
            h.set_mode(0o644);
            let arc_wh = arc.parent().unwrap_or(Path::new("")).join(wh_name);
            b.append_data(&mut h, arc_wh, io::empty())?;
        }
        k @ (SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO) => {
            let t = match k {
                SFlag::S_IFCHR => tar::EntryType::Char,
                SFlag::S_IFBLK => tar::EntryType::Block,
                _ => tar::EntryType::Fifo,
            };
            let mut h = header_for(&st, t, 0);
            h.set_device_major(libc::major(st.st_rdev))?;
            h.set_device_minor(libc::minor(st.st_rdev))?;
            b.append_data(&mut h, arc, io::empty())?;
        }
        _ => {} // sockets are not archived (as docker)
    }
    Ok(())
}

/// Appends the entries of directory `dir` under `arc`.
pub(crate) fn append_children<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &OwnedFd,
    arc: &Path,
    cpath: &Path,
    opts: WalkOpts,
) -> io::Result<()> {
    for n in names_in(dir)? {
        append_entry(b, dir, &n, &arc.join(&n), &cpath.join(&n), opts)?;
    }
    Ok(())
}

/// Where a tar is extracted and how.
pub(crate) struct Extract<'a> {
    pub root: &'a OwnedFd,
    /// Directory in the container.
    pub dir: PathBuf,
    pub keep_owner: bool,
    pub no_overwrite_dir_non_dir: bool,
}

/// Opens (creating as needed) the directory `rel` below `base` inside the
/// container root.
fn ensure_dir(x: &Extract<'_>, rel: &Path) -> io::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    let full = x.dir.join(rel);
    match open_in_root(x.root, &full, flags) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut fd = open_in_root(x.root, &x.dir, flags)?;
    let mut sofar = x.dir.clone();
    for c in rel.components() {
        let Component::Normal(n) = c else { continue };
        sofar.push(n);
        fd = match open_in_root(x.root, &sofar, flags) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                mkdirat(&fd, n, Mode::from_bits_truncate(0o755)).map_err(errno_io)?;
                open_in_root(x.root, &sofar, flags)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(fd)
}

/// The archive path as plain components; `..` and absolute paths refused.
fn clean(p: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("invalid path in archive: {}", p.display()),
                ))
            }
        }
    }
    Ok(out)
}

fn remove_existing(
    parent: &OwnedFd,
    name: &OsStr,
    is_dir: bool,
    x: &Extract<'_>,
) -> io::Result<()> {
    match lstat_at(parent, name) {
        Ok(st) => {
            let exists_dir = kind(&st) == SFlag::S_IFDIR;
            if exists_dir && is_dir {
                return Ok(());
            }
            if x.no_overwrite_dir_non_dir && exists_dir != is_dir {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "cannot overwrite {} {:?} with {}",
                        if exists_dir {
                            "directory"
                        } else {
                            "non-directory"
                        },
                        name,
                        if is_dir { "directory" } else { "non-directory" }
                    ),
                ));
            }
            let flag = if exists_dir {
                UnlinkatFlags::RemoveDir
            } else {
                UnlinkatFlags::NoRemoveDir
            };
            match unlinkat(parent, name, flag) {
                Ok(()) | Err(Errno::ENOENT) => Ok(()),
                Err(Errno::ENOTEMPTY) => Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("cannot replace non-empty directory {name:?}"),
                )),
                Err(e) => Err(errno_io(e)),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn set_attrs(
    parent: &OwnedFd,
    name: &OsStr,
    h: &tar::Header,
    x: &Extract<'_>,
    symlink: bool,
) -> io::Result<()> {
    let (uid, gid) = if x.keep_owner {
        (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32)
    } else {
        (0, 0)
    };
    nix::unistd::fchownat(
        parent,
        name,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(errno_io)?;
    if !symlink {
        let mode = Mode::from_bits_truncate(h.mode().unwrap_or(0o644) as libc::mode_t);
        nix::sys::stat::fchmodat(
            parent,
            name,
            mode,
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(errno_io)?;
    }
    if let Ok(m) = h.mtime() {
        let t = nix::sys::time::TimeSpec::new(m as i64, 0);
        let _ = nix::sys::stat::utimensat(
            parent,
            name,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        );
    }
    Ok(())
}

/// Extracts a tar stream into the container.
pub(crate) fn extract<R: Read>(x: &Extract<'_>, input: R) -> io::Result<()> {
    let mut ar = tar::Archive::new(input);
    for entry in ar.entries()? {
        let mut entry = entry?;
        let rel = clean(&entry.path()?)?;
        let Some(name) = rel.file_name().map(OsStr::to_os_string) else {
            continue; // "." itself
        };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let parent = ensure_dir(x, parent_rel)?;
        let h = entry.header().clone();
        let t = h.entry_type();
        let is_dir = t.is_dir();
        remove_existing(&parent, &name, is_dir, x)?;
        match t {
            tar::EntryType::Directory => {
                match mkdirat(&parent, name.as_os_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(errno_io(e)),
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let fd = openat(
                    &parent,
                    name.as_os_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(errno_io)?;
                let mut f = std::fs::File::from(fd);
                io::copy(&mut entry, &mut f)?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name()?.ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "symlink without target")
                })?;
                symlinkat(target.as_os_str(), &parent, name.as_os_str()).map_err(errno_io)?;
                set_attrs(&parent, &name, &h, x, true)?;
                continue;
            }
            tar::EntryType::Link => {
                let target = entry.link_name()?.ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "hard link without target")
                })?;
                let target = x.dir.join(clean(&target)?);
                let src = open_in_root(x.root, &target, OFlag::O_PATH | OFlag::O_NOFOLLOW)?;
                let proc_path = CString::new(format!("/proc/self/fd/{}", src.as_raw_fd()))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let cname = CString::new(name.clone().into_vec())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                // SAFETY: valid fds and NUL-terminated paths.
                let r = unsafe {
                    libc::linkat(
                        libc::AT_FDCWD,
                        proc_path.as_ptr(),
                        parent.as_fd().as_raw_fd(),
                        cname.as_ptr(),
                        libc::AT_SYMLINK_FOLLOW,
                    )
                };
                if r != 0 {
                    return Err(io::Error::last_os_error());
                }
                continue;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let k = match t {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let dev = libc::makedev(
                    h.device_major()?.unwrap_or(0),
                    h.device_minor()?.unwrap_or(0),
                );
                mknodat(
                    &parent,
                    name.as_os_str(),
                    k,
                    Mode::from_bits_truncate(0o600),
                    dev,
                )
                .map_err(errno_io)?;
            }
            // pax/GNU extension headers are consumed by the tar reader.
            _ => continue,
        }
        set_attrs(&parent, &name, &h, x, false)?;
    }
    Ok(())
}

/// One change of `diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Modified = 0,
    Added = 1,
    Deleted = 2,
}

/// Looks `rel` up in the lower layers (top first) as overlayfs would,
/// without following any symlink: the stat of what the lowers show there.
fn in_lowers(lowers: &[PathBuf], rel: &Path) -> Option<std::fs::Metadata> {
    use std::os::unix::fs::FileTypeExt;
    let comps: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    'layers: for l in lowers {
        let mut p = l.clone();
        for (i, c) in comps.iter().enumerate() {
            p.push(c);
            let md = match std::fs::symlink_metadata(&p) {
                Ok(md) => md,
                Err(_) => {
                    // Not in this layer; an opaque parent hides the deeper ones.
                    let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
                    if i > 0 && opaque_path(&parent) {
                        return None;
                    }
                    continue 'layers;
                }
            };
            if md.file_type().is_char_device() && {
                use std::os::unix::fs::MetadataExt;
                md.rdev() == 0
            } {
                return None; // whited out
            }
            if i + 1 == comps.len() {
                return Some(md);
            }
            if !md.is_dir() {
                return None; // a non-directory hides the path
            }
        }
    }
    None
}

fn opaque_path(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    let mut buf = [0u8; 4];
    // SAFETY: NUL-terminated strings and a buffer of the given length.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

/// docker's `diff` from an overlay upper dir and its lowers (top first):
/// whiteouts are deletions, entries the lowers have are modifications
/// (directories only when something below them changed or their owner or
/// mode did), the rest additions. Sorted by path.
pub(crate) fn diff(upper: &Path, lowers: &[PathBuf]) -> io::Result<Vec<(ChangeKind, String)>> {
    let root = nix::fcntl::open(
        upper,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno_io)?;
    let mut out = BTreeMap::new();
    diff_dir(&root, Path::new("/"), lowers, &mut out)?;
    Ok(out.into_iter().map(|(p, k)| (k, p)).collect())
}

/// Returns whether anything was reported below `dir`.
fn diff_dir(
    dir: &OwnedFd,
    cpath: &Path,
    lowers: &[PathBuf],
    out: &mut BTreeMap<String, ChangeKind>,
) -> io::Result<bool> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut any = false;
    for n in names_in(dir)? {
        let p = cpath.join(&n);
        let ps = p.to_string_lossy().into_owned();
        if is_mount_point(&ps) {
            continue;
        }
        let Ok(st) = lstat_at(dir, &n) else { continue };
        if is_whiteout(&st) {
            out.insert(ps, ChangeKind::Deleted);
            any = true;
            continue;
        }
        let lower = in_lowers(lowers, p.strip_prefix("/").unwrap_or(&p));
        if kind(&st) == SFlag::S_IFDIR {
            let sub = open_child(dir, &n, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
            let below = diff_dir(&sub, &p, lowers, out)?;
            match lower {
                Some(md) if md.is_dir() => {
                    let meta_changed = md.permissions().mode() & 0o7777 != st.st_mode & 0o7777
                        || md.uid() != st.st_uid
                        || md.gid() != st.st_gid;
                    if below || meta_changed || is_opaque(&sub) {
                        out.insert(ps, ChangeKind::Modified);
                        any = true;
                    }
                }
                Some(_) => {
                    out.insert(ps, ChangeKind::Modified);
                    any = true;
                }
                None => {
                    out.insert(ps, ChangeKind::Added);
                    any = true;
                }
            }
        } else {
            let k = if lower.is_some() {
                ChangeKind::Modified
            } else {
                ChangeKind::Added
            };
            out.insert(ps, k);
            any = true;
        }
    }
    Ok(any)
}

/// A `Write` that hands chunks to an async receiver.
pub(crate) struct ChunkWriter<T> {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<T>,
    wrap: fn(Vec<u8>) -> T,
}

const CHUNK: usize = 256 * 1024;

impl<T> ChunkWriter<T> {
    pub(crate) fn new(tx: tokio::sync::mpsc::Sender<T>, wrap: fn(Vec<u8>) -> T) -> Self {
        ChunkWriter {
            buf: Vec::with_capacity(CHUNK),
            tx,
            wrap,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send((self.wrap)(data))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl<T> Write for ChunkWriter<T> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A `Read` over chunks arriving from an async sender.
pub(crate) struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    pub(crate) fn new(rx: tokio::sync::mpsc::Receiver<io::Result<Vec<u8>>>) -> Self {
        ChunkReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(c)) => {
                    self.cur = c;
                    self.pos = 0;
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting() {
        assert_eq!(
            split("/etc/passwd"),
            (PathBuf::from("/etc"), Some("passwd".into()))
        );
        assert_eq!(split("etc/"), (PathBuf::from("/"), Some("etc".into())));
        assert_eq!(split("/"), (PathBuf::from("/"), None));
        assert_eq!(split("/etc/."), (PathBuf::from("/etc/."), None));
        assert!(is_mount_point("/proc/1"));
        assert!(is_mount_point("/etc/hosts"));
        assert!(!is_mount_point("/etc/hostsx"));
        assert!(clean(Path::new("a/../b")).is_err());
        assert_eq!(clean(Path::new("./a/b")).unwrap(), PathBuf::from("a/b"));
    }

    #[test]
    fn resolving_stays_in_root() {
        let dir = std::env::temp_dir().join(format!("berth-rootfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/inside"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("evil")).unwrap();
        let root = open_dir(&dir).unwrap();
        // "/evil/inside" is the container's /etc/inside, never the host's.
        let fd = open_in_root(&root, Path::new("/evil/inside"), OFlag::O_RDONLY).unwrap();
        let mut s = String::new();
        std::fs::File::from(fd).read_to_string(&mut s).unwrap();
        assert_eq!(s, "x");
        assert!(open_in_root(&root, Path::new("/evil/passwd"), OFlag::O_RDONLY).is_err());
        assert!(open_in_root(&root, Path::new("../../etc/passwd"), OFlag::O_RDONLY).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
