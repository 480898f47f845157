//! Layer unpacking: one streaming pass over a (compressed) tar that verifies
//! the blob digest, computes the diff_id and writes every entry confined to
//! the snapshot directory.
//!
//! Confinement: the snapshot's `fs` dir is opened once (`O_PATH`) and every
//! parent directory of an entry is opened with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` relative to it, so symlinks stored by earlier
//! entries (even absolute ones) resolve inside the snapshot. The entry itself
//! is then created with `*at()` calls on that parent fd using a single
//! component name and never following a final symlink. `..` that would climb
//! above the root is refused.
//!
//! Implicit directories: a directory an entry needs but the layer has no
//! entry for is created with the attributes of the same directory in the
//! parent snapshots. Its path is also remembered ([`unpack_tracking`]), so
//! that a layer unpacked without its parents (in parallel with them) gets
//! the same attributes when it is put on top of them
//! ([`rebase_implicit_dirs`]).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, mkdirat, mknodat, Mode, SFlag};
use nix::unistd::{linkat, symlinkat, unlinkat, UnlinkatFlags};
use sha2::{Digest, Sha256};
use tar::EntryType;

use crate::error::{Error, Result};

/// What an unpack produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// `sha256:<hex>` of the whole uncompressed stream.
    pub diff_id: String,
    /// Bytes of the uncompressed stream.
    pub size: u64,
    /// `sha256:<hex>` of the bytes as read (the blob digest); None when the
    /// caller verifies it elsewhere ([`unpack_with`]).
    pub compressed_digest: Option<String>,
    /// Bytes read.
    pub compressed_size: u64,
    /// Where the time of the unpack went.
    pub timings: UnpackTimings,
}

/// Where an unpack spent its time (the phases run interleaved in one
/// thread; each is the sum of its slices).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackTimings {
    /// Waiting for the input (for a streamed layer: for the network).
    pub wait: Duration,
    /// SHA-256 of the compressed bytes (the blob digest).
    pub hash_blob: Duration,
    /// Decompression.
    pub inflate: Duration,
    /// SHA-256 of the uncompressed stream (the diff ID).
    pub hash_diff: Duration,
    /// Tar parsing and writing the files.
    pub write: Duration,
}

/// Compression of a layer, detected by magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// Detects the compression from the first bytes of a blob.
    pub fn detect(magic: &[u8]) -> Self {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    /// None: only count.
    hasher: Option<Sha256>,
    n: u64,
    /// Time spent hashing.
    spent: Duration,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Self::with(inner, true)
    }

    fn with(inner: R, hash: bool) -> Self {
        Hashing {
            inner,
            hasher: hash.then(Sha256::new),
            n: 0,
            spent: Duration::ZERO,
        }
    }

    /// Reads the rest of the stream, then returns (digest, size, time
    /// spent hashing).
    fn finish(mut self) -> io::Result<(Option<String>, u64, Duration)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.digest(), self.n, self.spent))
    }

    fn digest(&mut self) -> Option<String> {
        let h = self.hasher.take()?;
        Some(format!("sha256:{}", hex::encode(h.finalize())))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            let t = Instant::now();
            h.update(&buf[..n]);
            self.spent += t.elapsed();
        }
        self.n += n as u64;
        Ok(n)
    }
}

/// A reader that adds the time spent in its reads to a shared counter.
struct Timed<R> {
    inner: R,
    spent: Rc<Cell<Duration>>,
}

impl<R: Read> Read for Timed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = Instant::now();
        let r = self.inner.read(buf);
        self.spent.set(self.spent.get() + t.elapsed());
        r
    }
}

/// The raw blob reader, shared between the decompressor and the final drain.
struct Shared<R>(Rc<RefCell<Hashing<R>>>);

impl<R: Read> Read for Shared<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

fn bad(ctx: &str, e: io::Error) -> Error {
    Error::BadLayer(format!("{ctx}: {e}"))
}

/// Paths of implicit directories (created by the unpacker because the
/// layer lacks their entries), relative to the root, components joined by
/// `/`.
pub type DirSet = BTreeSet<Vec<u8>>;

/// Unpacks the layer read from `input` into the directory `root`.
///
/// The whole input is read (also what follows the tar end marker), so the
/// returned digests cover the complete blob and uncompressed stream. The
/// caller compares `compressed_digest` with the descriptor and cleans up on
/// error; this function leaves whatever it wrote so far.
///
/// `lowers` are the `fs` dirs of the parent snapshots, nearest first. A
/// directory that an entry needs but the layer does not contain is created
/// with the mode, owner and mtime it has in the nearest lower that has it
/// (as containerd does), so that e.g. `/tmp` keeps mode 1777 in the merged
/// view; without a lower it is created 0755 root-owned.
pub fn unpack<R: Read>(input: R, root: &Path, lowers: &[PathBuf]) -> Result<Unpacked> {
    unpack_tracking(input, root, lowers, &mut DirSet::new())
}

/// Like [`unpack`], and keeps `implicit` up to date: the paths of the
/// directories created because the layer lacks their entries are added, and
/// those the layer has a directory entry for are removed. Pass the set an
/// earlier unpack into the same `root` left. After an error the set is
/// meaningless (the caller discards the unpacked content anyway).
pub fn unpack_tracking<R: Read>(
    input: R,
    root: &Path,
    lowers: &[PathBuf],
    implicit: &mut DirSet,
) -> Result<Unpacked> {
    unpack_with(input, root, lowers, implicit, true)
}

/// Like [`unpack_tracking`]; the blob digest is computed only when
/// `hash_blob` (the diff ID always is).
pub fn unpack_with<R: Read>(
    input: R,
    root: &Path,
    lowers: &[PathBuf],
    implicit: &mut DirSet,
    hash_blob: bool,
) -> Result<Unpacked> {
    let started = Instant::now();
    let waited = Rc::new(Cell::new(Duration::ZERO));
    let input = Timed {
        inner: input,
        spent: waited.clone(),
    };
    let src = Rc::new(RefCell::new(Hashing::with(input, hash_blob)));
    let mut magic = Vec::with_capacity(4);
    Shared(src.clone())
        .take(4)
        .read_to_end(&mut magic)
        .map_err(|e| bad("reading layer", e))?;
    // Time in the decoder's own reads of the blob (waiting and hashing),
    // to tell decompression apart.
    let raw_spent = Rc::new(Cell::new(Duration::ZERO));
    let raw = Timed {
        inner: io::Cursor::new(magic.clone()).chain(Shared(src.clone())),
        spent: raw_spent.clone(),
    };
    let decoder: Box<dyn Read + '_> = match Compression::detect(&magic) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(raw).map_err(|e| bad("starting zstd decoder", e))?,
        ),
        Compression::None => Box::new(raw),
    };
    let decoded = Rc::new(Cell::new(Duration::ZERO));
    let decoder = Timed {
        inner: decoder,
        spent: decoded.clone(),
    };
    let mut archive = tar::Archive::new(Hashing::new(decoder));
    let mut unpacker = Unpacker::new(root, lowers)?;
    unpacker.implicit = std::mem::take(implicit);
    for entry in archive.entries().map_err(|e| bad("reading tar", e))? {
        let entry = entry.map_err(|e| bad("reading tar header", e))?;
        unpacker.entry(entry)?;
    }
    unpacker.finish()?;
    *implicit = std::mem::take(&mut unpacker.implicit);
    let (diff_id, size, hash_diff) = archive
        .into_inner()
        .finish()
        .map_err(|e| bad("reading layer after the tar end", e))?;
    // Always Some: the uncompressed stream is always hashed.
    let diff_id = diff_id.unwrap_or_default();
    let (compressed_digest, compressed_size, hash_blob) = {
        let mut s = src.borrow_mut();
        io::copy(&mut *s, &mut io::sink()).map_err(|e| bad("reading layer", e))?;
        (s.digest(), s.n, s.spent)
    };
    // What the blob's reads took outside the decoder: the magic bytes and
    // the drain after the tar end.
    let outside = (waited.get() + hash_blob).saturating_sub(raw_spent.get());
    let timings = UnpackTimings {
        wait: waited.get(),
        hash_blob,
        inflate: decoded.get().saturating_sub(raw_spent.get()),
        hash_diff,
        write: started
            .elapsed()
            .saturating_sub(decoded.get() + hash_diff + outside),
    };
    Ok(Unpacked {
        diff_id,
        size,
        compressed_digest,
        compressed_size,
        timings,
    })
}

/// Gives the implicit directories of a layer unpacked into `root` (the set
/// [`unpack_tracking`] kept) the attributes an unpack on top of `lowers`
/// (the `fs` dirs of the new parent chain, nearest first) would have given
/// them: mode, owner and mtime of the same directory in the nearest lower
/// that has it, else mode 0755 and root as owner (as [`unpack`] makes them
/// then; the mtime is left). A path that is no longer a directory is
/// skipped. Running it again, also with other lowers, is harmless: the
/// result only depends on the last `lowers`.
pub fn rebase_implicit_dirs(root: &Path, lowers: &[PathBuf], implicit: &DirSet) -> Result<()> {
    let u = Unpacker::new(root, lowers)?;
    for path in implicit {
        let comps = normalize(path).ok_or_else(|| {
            Error::Internal(format!(
                "implicit directory {:?} escapes the root",
                String::from_utf8_lossy(path)
            ))
        })?;
        if comps.is_empty() {
            continue;
        }
        let what = show(&comps);
        // Resolved as unpack's final pass resolves directories.
        let fd = match u.open_in_root(
            &comps,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => continue,
            Err(e) => return Err(Error::errno(format!("opening dir {what}"), e)),
        };
        match u.lower_dir_attrs(&comps) {
            Some(m) => u.apply_fd(fd.as_fd(), &m, true, &what)?,
            None => u.apply_fd(fd.as_fd(), &Meta::implicit_default(), false, &what)?,
        }
    }
    Ok(())
}

/// Normalises a tar path into components below the root: empty and `.`
/// components are dropped, a leading `/` is ignored, `..` pops, and a `..`
/// that would climb above the root is an error (`None`).
pub(crate) fn normalize(raw: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c.to_vec()),
        }
    }
    Some(out)
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    if comps.is_empty() {
        return b".".to_vec();
    }
    comps.join(&b'/')
}

fn show(comps: &[Vec<u8>]) -> String {
    String::from_utf8_lossy(&join(comps)).into_owned()
}

fn parse_or<T: std::str::FromStr>(v: Option<&str>, default: T) -> T {
    v.and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn cstr(b: &[u8]) -> Result<CString> {
    CString::new(b).map_err(|_| Error::BadLayer("NUL byte in a name".into()))
}

fn cvt(r: libc::c_int) -> nix::Result<()> {
    if r == -1 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

fn timespec(secs: u64) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: secs.min(i64::MAX as u64) as libc::time_t,
        tv_nsec: 0,
    };
    [t, t]
}

/// A directory whose mode and mtime are set after its contents are written.
struct DirMeta {
    comps: Vec<Vec<u8>>,
    mode: u32,
    mtime: u64,
}

/// Header fields applied to each entry.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    xattrs: Vec<(CString, Vec<u8>)>,
}

impl Meta {
    /// Owner and mode of an implicit directory no lower has: set
    /// explicitly, so that neither the umask nor a set-group-ID parent
    /// changes them (mtime unused).
    fn implicit_default() -> Meta {
        Meta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        }
    }
}

struct Unpacker {
    root: OwnedFd,
    /// `O_PATH` fds of the parent snapshots' `fs` dirs, nearest first.
    lowers: Vec<OwnedFd>,
    dirs: Vec<DirMeta>,
    /// Implicit directories (see [`unpack_tracking`]).
    implicit: DirSet,
    privileged: bool,
}

impl Unpacker {
    fn new(root: &Path, lowers: &[PathBuf]) -> Result<Self> {
        let open = |p: &Path| {
            nix::fcntl::open(
                p,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::errno(format!("opening {}", p.display()), e))
        };
        Ok(Unpacker {
            root: open(root)?,
            lowers: lowers.iter().map(|p| open(p)).collect::<Result<_>>()?,
            dirs: Vec::new(),
            implicit: DirSet::new(),
            privileged: nix::unistd::geteuid().is_root(),
        })
    }

    /// Opens `comps` (relative to the root) with every symlink resolved
    /// inside the root.
    fn open_in_root(&self, comps: &[Vec<u8>], flags: OFlag) -> nix::Result<OwnedFd> {
        open_in(&self.root, comps, flags)
    }

    /// Mode, owner and mtime of directory `comps` in the nearest lower that
    /// has it. A lower where the path exists but is not a directory (a
    /// whiteout, a file) hides the ones below it.
    fn lower_dir_attrs(&self, comps: &[Vec<u8>]) -> Option<Meta> {
        for lower in &self.lowers {
            match open_in(lower, comps, OFlag::O_PATH | OFlag::O_DIRECTORY) {
                Ok(fd) => {
                    let st = nix::sys::stat::fstat(&fd).ok()?;
                    return Some(Meta {
                        mode: st.st_mode & 0o7777,
                        uid: st.st_uid,
                        gid: st.st_gid,
                        mtime: st.st_mtime.max(0) as u64,
                        xattrs: Vec::new(),
                    });
                }
                Err(Errno::ENOENT) => continue,
                Err(_) => return None,
            }
        }
        None
    }
}

/// Opens `comps` below `root` with every symlink resolved inside `root`.
fn open_in(root: &OwnedFd, comps: &[Vec<u8>], flags: OFlag) -> nix::Result<OwnedFd> {
    let path = join(comps);
    let how = || {
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
    };
    let mut tries = 0;
    loop {
        match openat2(root, path.as_slice(), how()) {
            // The kernel asks to retry when a rename raced the lookup.
            Err(Errno::EAGAIN) if tries < 16 => tries += 1,
            r => return r,
        }
    }
}

impl Unpacker {
    /// Opens the directory `comps` inside the root, creating missing
    /// components one by one (attributes from the lowers, else 0755).
    fn ensure_dir(&mut self, comps: &[Vec<u8>]) -> Result<OwnedFd> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        match self.open_in_root(comps, flags) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(Error::errno(format!("opening dir {}", show(comps)), e)),
        }
        let mut fd = self
            .open_in_root(&[], flags)
            .map_err(|e| Error::errno("opening the snapshot root", e))?;
        for i in 0..comps.len() {
            let prefix = &comps[..=i];
            fd = match self.open_in_root(prefix, flags) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    mkdirat(&fd, comps[i].as_slice(), Mode::from_bits_truncate(0o755)).map_err(
                        |e| match e {
                            // A symlink whose target (inside the root) is missing.
                            Errno::EEXIST => Error::BadLayer(format!(
                                "cannot create dir {}: it is a symlink to a directory \
                                 that does not exist inside the layer",
                                show(prefix)
                            )),
                            e => Error::errno(format!("creating dir {}", show(prefix)), e),
                        },
                    )?;
                    let d = self
                        .open_in_root(prefix, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                        .map_err(|e| Error::errno(format!("opening dir {}", show(prefix)), e))?;
                    match self.lower_dir_attrs(prefix) {
                        Some(m) => {
                            self.apply_fd(d.as_fd(), &m, false, &show(prefix))?;
                            self.dirs.push(DirMeta {
                                comps: prefix.to_vec(),
                                mode: m.mode,
                                mtime: m.mtime,
                            });
                        }
                        None => self.apply_fd(
                            d.as_fd(),
                            &Meta::implicit_default(),
                            false,
                            &show(prefix),
                        )?,
                    }
                    self.implicit.insert(join(prefix));
                    self.open_in_root(prefix, flags)
                        .map_err(|e| Error::errno(format!("opening dir {}", show(prefix)), e))?
                }
                Err(e) => return Err(Error::errno(format!("opening dir {}", show(prefix)), e)),
            };
        }
        Ok(fd)
    }

    /// Makes room for a new entry `name` in `dir`. An existing directory is
    /// kept when `keep_dir` (tar entries for a dir merge); anything else is
    /// removed. Returns whether a directory was kept.
    fn clear(&self, dir: &OwnedFd, name: &[u8], keep_dir: bool, what: &str) -> Result<bool> {
        let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(Error::errno(format!("stat {what}"), e)),
        };
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir && keep_dir {
            return Ok(true);
        }
        if is_dir {
            // The path goes through our own fd of the (in-root) parent; the
            // removal itself never follows symlinks.
            let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
            p.extend_from_slice(name);
            let p = Path::new(std::ffi::OsStr::from_bytes(&p));
            std::fs::remove_dir_all(p).map_err(|e| Error::io(format!("removing {what}"), e))?;
        } else {
            unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| Error::errno(format!("removing {what}"), e))?;
        }
        Ok(false)
    }

    fn chown_at(&self, dir: &OwnedFd, name: &[u8], m: &Meta, what: &str) -> Result<()> {
        if !self.privileged {
            return Ok(());
        }
        nix::unistd::fchownat(
            dir,
            name,
            Some(m.uid.into()),
            Some(m.gid.into()),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::errno(format!("chown {what}"), e))
    }

    fn utimes_at(&self, dir: &OwnedFd, name: &[u8], mtime: u64, what: &str) -> Result<()> {
        let c = cstr(name)?;
        let ts = timespec(mtime);
        // SAFETY: valid fd, NUL-terminated name, two timespecs.
        cvt(unsafe {
            libc::utimensat(
                dir.as_raw_fd(),
                c.as_ptr(),
                ts.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map_err(|e| Error::errno(format!("setting mtime of {what}"), e))
    }

    /// Owner, mode, xattrs and (unless deferred) mtime on an open fd.
    fn apply_fd(&self, fd: BorrowedFd<'_>, m: &Meta, mtime: bool, what: &str) -> Result<()> {
        let raw = fd.as_raw_fd();
        if self.privileged {
            // SAFETY: plain syscall on a valid fd.
            cvt(unsafe { libc::fchown(raw, m.uid, m.gid) })
                .map_err(|e| Error::errno(format!("chown {what}"), e))?;
        }
        // chmod after chown: chown clears set-id bits.
        // SAFETY: plain syscall on a valid fd.
        cvt(unsafe { libc::fchmod(raw, m.mode & 0o7777) })
            .map_err(|e| Error::errno(format!("chmod {what}"), e))?;
        for (name, value) in &m.xattrs {
            // SAFETY: valid fd, NUL-terminated name, value pointer and length.
            let r = cvt(unsafe {
                libc::fsetxattr(raw, name.as_ptr(), value.as_ptr().cast(), value.len(), 0)
            });
            if let Err(e) = r {
                tracing::warn!(entry = what, xattr = ?name, error = %e, "cannot set xattr");
            }
        }
        if mtime {
            let ts = timespec(m.mtime);
            // SAFETY: valid fd and two timespecs.
            cvt(unsafe { libc::futimens(raw, ts.as_ptr()) })
                .map_err(|e| Error::errno(format!("setting mtime of {what}"), e))?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let comps = normalize(&raw_path).ok_or(Error::Escape {
            path: shown.clone(),
        })?;
        let header = entry.header();
        let kind = header.entry_type();
        let field = |r: io::Result<u64>, f: &str| {
            r.map_err(|e| Error::BadLayer(format!("entry {shown}: bad {f}: {e}")))
        };
        let mut meta = Meta {
            mode: field(header.mode().map(u64::from), "mode")? as u32,
            uid: field(header.uid(), "uid")? as u32,
            gid: field(header.gid(), "gid")? as u32,
            mtime: field(header.mtime(), "mtime")?,
            xattrs: Vec::new(),
        };
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                if let Ok(key) = ext.key() {
                    // PAX overrides for values too large for the header.
                    let value = ext.value().ok().and_then(|v| v.split('.').next());
                    match key {
                        "uid" => meta.uid = parse_or(value, meta.uid),
                        "gid" => meta.gid = parse_or(value, meta.gid),
                        "mtime" => meta.mtime = parse_or(value, meta.mtime),
                        _ => {}
                    }
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        // overlayfs' own attributes (redirects, metacopy,
                        // opacity) only come from whiteout entries.
                        if name.starts_with("trusted.overlay.") {
                            tracing::warn!(entry = %shown, xattr = name, "ignoring overlay xattr in layer");
                            continue;
                        }
                        if let Ok(c) = CString::new(name) {
                            meta.xattrs.push((c, ext.value_bytes().to_vec()));
                        }
                    }
                }
            }
        }

        let Some((name, parent)) = comps.split_last() else {
            // The root itself (`.`, `./`, `/`).
            if kind.is_dir() {
                let fd = self
                    .open_in_root(&[], OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                    .map_err(|e| Error::errno("opening the snapshot root", e))?;
                self.apply_fd(fd.as_fd(), &meta, false, "the root dir")?;
                self.dirs.push(DirMeta {
                    comps,
                    mode: meta.mode,
                    mtime: meta.mtime,
                });
                return Ok(());
            }
            return Err(Error::BadLayer(format!(
                "entry {shown:?} names the root but is not a directory"
            )));
        };
        let name = name.as_slice();

        // OCI whiteouts.
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            let dir = self.ensure_dir(parent)?;
            if hidden == b".wh..opq" {
                let fd = self
                    .open_in_root(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                    .map_err(|e| Error::errno(format!("opening dir {}", show(parent)), e))?;
                let n = c"trusted.overlay.opaque";
                // SAFETY: valid fd, NUL-terminated name, 1-byte value.
                cvt(unsafe {
                    libc::fsetxattr(fd.as_raw_fd(), n.as_ptr(), b"y".as_ptr().cast(), 1, 0)
                })
                .map_err(|e| Error::errno(format!("marking {} opaque", show(parent)), e))?;
                return Ok(());
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.starts_with(b".wh.")
            {
                return Err(Error::BadLayer(format!("invalid whiteout {shown}")));
            }
            self.clear(&dir, hidden, false, &shown)?;
            mknodat(&dir, hidden, SFlag::S_IFCHR, Mode::empty(), 0)
                .map_err(|e| Error::errno(format!("creating whiteout {shown}"), e))?;
            return Ok(());
        }

        let dir = self.ensure_dir(parent)?;
        match kind {
            EntryType::Directory => {
                if !self.clear(&dir, name, true, &shown)? {
                    mkdirat(&dir, name, Mode::from_bits_truncate(0o755))
                        .map_err(|e| Error::errno(format!("creating dir {shown}"), e))?;
                }
                let fd = openat(
                    &dir,
                    name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| Error::errno(format!("opening dir {shown}"), e))?;
                // Mode and mtime come last, after the contents.
                let m = Meta {
                    mode: 0o755 | (meta.mode & 0o7000),
                    ..meta
                };
                self.apply_fd(fd.as_fd(), &m, false, &shown)?;
                self.implicit.remove(&join(&comps));
                self.dirs.push(DirMeta {
                    comps: comps.clone(),
                    mode: meta.mode,
                    mtime: meta.mtime,
                });
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.clear(&dir, name, false, &shown)?;
                let fd = openat(
                    &dir,
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| Error::errno(format!("creating {shown}"), e))?;
                let mut file = File::from(fd);
                // Not io::copy: a layer that ends early is a bad layer, a
                // failed write is ours.
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = match entry.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(bad(&format!("reading {shown}"), e)),
                    };
                    file.write_all(&buf[..n])
                        .map_err(|e| Error::io(format!("writing {shown}"), e))?;
                }
                self.apply_fd(file.as_fd(), &meta, true, &shown)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::BadLayer(format!("symlink {shown} has no target")))?
                    .into_owned();
                self.clear(&dir, name, false, &shown)?;
                symlinkat(target.as_slice(), &dir, name)
                    .map_err(|e| Error::errno(format!("creating symlink {shown}"), e))?;
                self.chown_at(&dir, name, &meta, &shown)?;
                self.utimes_at(&dir, name, meta.mtime, &shown)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::BadLayer(format!("hardlink {shown} has no target")))?
                    .into_owned();
                let target_shown = String::from_utf8_lossy(&target).into_owned();
                let tcomps = normalize(&target).ok_or(Error::Escape {
                    path: target_shown.clone(),
                })?;
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(Error::BadLayer(format!(
                        "hardlink {shown} points at the root"
                    )));
                };
                if tcomps == comps {
                    return Ok(());
                }
                let tdir = self
                    .open_in_root(tparent, OFlag::O_PATH | OFlag::O_DIRECTORY)
                    .map_err(|e| {
                        Error::errno(format!("hardlink {shown}: target {target_shown}"), e)
                    })?;
                self.clear(&dir, name, false, &shown)?;
                linkat(&tdir, tname.as_slice(), &dir, name, AtFlags::empty())
                    .map_err(|e| Error::errno(format!("hardlink {shown} -> {target_shown}"), e))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                self.clear(&dir, name, false, &shown)?;
                let mode = Mode::from_bits_truncate(meta.mode & 0o7777);
                mknodat(&dir, name, sflag, mode, libc::makedev(major, minor))
                    .map_err(|e| Error::errno(format!("creating device {shown}"), e))?;
                self.chown_at(&dir, name, &meta, &shown)?;
                // mknod is subject to the umask; the node is ours and not a
                // symlink, so a by-name chmod is exact.
                let c = cstr(name)?;
                // SAFETY: valid fd and NUL-terminated name.
                cvt(unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), meta.mode & 0o7777, 0) })
                    .map_err(|e| Error::errno(format!("chmod {shown}"), e))?;
                self.utimes_at(&dir, name, meta.mtime, &shown)?;
            }
            EntryType::XGlobalHeader => {}
            other => {
                tracing::warn!(entry = %shown, kind = ?other, "skipping unsupported tar entry type");
            }
        }
        Ok(())
    }

    /// Sets directory modes and mtimes, deepest (latest) first. A path
    /// gets the attributes of its latest entry only (an explicit entry wins
    /// over the lower's attributes of an implicit directory made before it).
    fn finish(&mut self) -> Result<()> {
        let mut done = HashSet::new();
        for d in std::mem::take(&mut self.dirs).into_iter().rev() {
            if !done.insert(d.comps.clone()) {
                continue;
            }
            let fd = match self.open_in_root(
                &d.comps,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            ) {
                Ok(fd) => fd,
                // Replaced by a later entry.
                Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => continue,
                Err(e) => return Err(Error::errno(format!("opening dir {}", show(&d.comps)), e)),
            };
            let raw = fd.as_raw_fd();
            let what = show(&d.comps);
            // SAFETY: plain syscalls on a valid fd.
            cvt(unsafe { libc::fchmod(raw, d.mode & 0o7777) })
                .map_err(|e| Error::errno(format!("chmod {what}"), e))?;
            let ts = timespec(d.mtime);
            // SAFETY: valid fd and two timespecs.
            cvt(unsafe { libc::futimens(raw, ts.as_ptr()) })
                .map_err(|e| Error::errno(format!("setting mtime of {what}"), e))?;
        }
        Ok(())
    }
}
