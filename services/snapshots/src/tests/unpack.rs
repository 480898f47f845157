//! Unpacker tests on temp dirs.

use std::ffi::CString;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;
use crate::error::Error;
use crate::unpack::{normalize, unpack, Compression, Unpacked};

/// A temp dir holding `fs/` (the root) and siblings to detect escapes.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-snap-unpack-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("fs")).unwrap();
        Sandbox { dir }
    }
    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("fs")
    }
    fn unpack(&self, blob: &[u8]) -> Result<Unpacked, Error> {
        unpack(blob, &self.root(), &[])
    }
    /// Names next to `fs/` (an escape would add some).
    fn outside(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

fn basic_layer() -> Vec<u8> {
    Tar::new()
        .dir("./", 0o755)
        .dir("etc/", 0o755)
        .file("etc/hello", 0o640, b"hello world\n")
        .symlink("etc/link", "hello")
        .hardlink("etc/hard", "etc/hello")
        .file("a/b/c.txt", 0o600, b"deep")
        .dir("bin", 0o755)
        .symlink("bin/sh", "/bin/busybox")
        .file("bin/busybox", 0o4755, b"\x7fELF")
        .dir("secret", 0o700)
        .file("secret/key", 0o400, b"k")
        .fifo("run/fifo", 0o620)
        .bytes()
}

fn check_basic(root: &Path) {
    let md = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap();
    assert_eq!(
        std::fs::read(root.join("etc/hello")).unwrap(),
        b"hello world\n"
    );
    assert_eq!(md("etc/hello").permissions().mode() & 0o7777, 0o640);
    assert_eq!(md("etc/hello").mtime(), MTIME as i64);
    assert_eq!(
        std::fs::read_link(root.join("etc/link")).unwrap(),
        Path::new("hello")
    );
    assert_eq!(md("etc/hard").ino(), md("etc/hello").ino());
    assert_eq!(md("etc/hello").nlink(), 2);
    assert_eq!(std::fs::read(root.join("a/b/c.txt")).unwrap(), b"deep");
    assert_eq!(md("a/b").permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(md("bin/busybox").permissions().mode() & 0o7777, 0o4755);
    assert_eq!(md("secret").permissions().mode() & 0o7777, 0o700);
    assert_eq!(md("secret/key").permissions().mode() & 0o7777, 0o400);
    // Directory mtimes are set after their contents.
    assert_eq!(md("etc").mtime(), MTIME as i64);
    assert_eq!(md("secret").mtime(), MTIME as i64);
    assert!(md("run/fifo").file_type().is_fifo());
    assert_eq!(md("run/fifo").permissions().mode() & 0o7777, 0o620);
}

#[test]
fn detects_compression() {
    assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
    assert_eq!(
        Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
        Compression::Zstd
    );
    assert_eq!(Compression::detect(b"etc/"), Compression::None);
    assert_eq!(Compression::detect(b""), Compression::None);
}

#[test]
fn normalizes_paths() {
    let n = |s: &str| {
        normalize(s.as_bytes()).map(|v| {
            v.iter()
                .map(|c| String::from_utf8(c.clone()).unwrap())
                .collect::<Vec<_>>()
                .join("/")
        })
    };
    assert_eq!(n("./a//b/./c").as_deref(), Some("a/b/c"));
    assert_eq!(n("/etc/x").as_deref(), Some("etc/x"));
    assert_eq!(n("a/../b").as_deref(), Some("b"));
    assert_eq!(n("./").as_deref(), Some(""));
    assert_eq!(n("../x"), None);
    assert_eq!(n("a/../../x"), None);
}

#[test]
fn unpacks_plain_gzip_and_zstd() {
    let tar = basic_layer();
    for blob in [tar.clone(), gzip(&tar), zstd(&tar)] {
        let sb = Sandbox::new();
        let u = sb.unpack(&blob).unwrap();
        assert_eq!(u.diff_id, sha(&tar));
        assert_eq!(u.size, tar.len() as u64);
        assert_eq!(u.compressed_digest, Some(sha(&blob)));
        assert_eq!(u.compressed_size, blob.len() as u64);
        check_basic(&sb.root());
        assert_eq!(sb.outside(), vec!["fs"]);
    }
}

#[test]
fn diff_id_covers_trailing_padding() {
    let mut tar = Tar::new().file("x", 0o644, b"x").bytes();
    // Writers pad to a record size; the digest must include all of it.
    tar.extend(std::iter::repeat_n(0u8, 10240 - tar.len() % 10240));
    tar.extend(std::iter::repeat_n(0u8, 4096));
    for blob in [tar.clone(), gzip(&tar), zstd(&tar)] {
        let sb = Sandbox::new();
        let u = sb.unpack(&blob).unwrap();
        assert_eq!(u.diff_id, sha(&tar));
        assert_eq!(u.size, tar.len() as u64);
        assert_eq!(u.compressed_digest, Some(sha(&blob)));
    }
}

#[test]
fn later_entries_replace_earlier_ones() {
    let tar = Tar::new()
        .file("x", 0o644, b"one")
        .file("x", 0o644, b"two")
        .dir("d", 0o755)
        .file("d/f", 0o644, b"f")
        .file("d", 0o644, b"now a file")
        .symlink("s", "x")
        .file("s", 0o644, b"not a link")
        .bytes();
    let sb = Sandbox::new();
    sb.unpack(&tar).unwrap();
    let r = sb.root();
    assert_eq!(std::fs::read(r.join("x")).unwrap(), b"two");
    assert_eq!(std::fs::read(r.join("d")).unwrap(), b"now a file");
    assert_eq!(std::fs::read(r.join("s")).unwrap(), b"not a link");
    assert_eq!(std::fs::read(r.join("x")).unwrap(), b"two");
}

#[test]
fn dotdot_escape_is_refused() {
    for path in ["../escape", "a/../../escape", "./../escape"] {
        let sb = Sandbox::new();
        let tar = Tar::new().file(path, 0o644, b"pwned").bytes();
        let err = sb.unpack(&tar).unwrap_err();
        assert!(matches!(err, Error::Escape { .. }), "{path}: {err}");
        assert_eq!(
            err.to_string(),
            format!("layer entry {path} escapes the root")
        );
        assert_eq!(sb.outside(), vec!["fs"], "{path}");
    }
}

#[test]
fn inner_dotdot_stays_inside() {
    let sb = Sandbox::new();
    let tar = Tar::new().file("a/../b", 0o644, b"b").bytes();
    sb.unpack(&tar).unwrap();
    assert_eq!(std::fs::read(sb.root().join("b")).unwrap(), b"b");
}

#[test]
fn symlink_to_host_root_is_resolved_inside() {
    let before = std::fs::read("/etc/passwd").unwrap();
    for target in ["/", "../../..", "../..", "/../../.."] {
        let sb = Sandbox::new();
        let tar = Tar::new()
            .symlink("evil", target)
            .file("evil/etc/passwd", 0o644, b"root::0:0::/:/bin/sh\n")
            .bytes();
        sb.unpack(&tar).unwrap();
        assert_eq!(
            std::fs::read(sb.root().join("etc/passwd")).unwrap(),
            b"root::0:0::/:/bin/sh\n",
            "{target}"
        );
        assert_eq!(sb.outside(), vec!["fs"], "{target}");
    }
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), before);
}

#[test]
fn symlinked_parent_dir_is_resolved_inside() {
    let sb = Sandbox::new();
    // A sibling of the root that must not be touched.
    let victim = sb.dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let abs = victim.to_str().unwrap().to_string();
    let tar = Tar::new()
        .dir("victim", 0o755)
        .dir(&abs, 0o755)
        .symlink("lnk", "../victim")
        .file("lnk/x", 0o644, b"x")
        .symlink("abs", &abs)
        .file("abs/y", 0o644, b"y")
        .bytes();
    sb.unpack(&tar).unwrap();
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
    assert_eq!(std::fs::read(sb.root().join("victim/x")).unwrap(), b"x");
    let inner = sb.root().join(victim.join("y").strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(inner).unwrap(), b"y");
    assert_eq!(sb.outside(), vec!["fs", "victim"]);
}

#[test]
fn dangling_symlinked_parent_is_refused() {
    let sb = Sandbox::new();
    let victim = sb.dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    // The targets exist on the host but not inside the layer.
    for target in [
        "../victim".to_string(),
        victim.to_str().unwrap().to_string(),
    ] {
        let tar = Tar::new()
            .symlink("lnk", &target)
            .file("lnk/x", 0o644, b"x")
            .bytes();
        let err = sb.unpack(&tar).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
    }
}

#[test]
fn absolute_paths_land_inside() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .dir("/etc", 0o755)
        .file("/etc/abs", 0o644, b"abs")
        .file("/tmp/berth-should-not-exist", 0o644, b"x")
        .bytes();
    sb.unpack(&tar).unwrap();
    assert_eq!(std::fs::read(sb.root().join("etc/abs")).unwrap(), b"abs");
    assert!(sb.root().join("tmp/berth-should-not-exist").exists());
    assert!(!Path::new("/tmp/berth-should-not-exist").exists());
    assert!(!Path::new("/etc/abs").exists());
}

#[test]
fn hardlink_outside_is_refused() {
    let sb = Sandbox::new();
    let tar = Tar::new().hardlink("pw", "../../etc/passwd").bytes();
    let err = sb.unpack(&tar).unwrap_err();
    assert!(matches!(err, Error::Escape { .. }), "{err}");
    assert!(err.to_string().contains("../../etc/passwd"), "{err}");
    assert!(!sb.root().join("pw").exists());

    // Through a symlink the target is looked up inside the root, where it
    // does not exist: no link to the host file.
    let sb = Sandbox::new();
    let tar = Tar::new()
        .symlink("evil", "/")
        .hardlink("pw", "evil/etc/passwd")
        .bytes();
    assert!(sb.unpack(&tar).is_err());
    assert!(!sb.root().join("pw").exists());

    // An absolute target is relative to the root.
    let sb = Sandbox::new();
    let tar = Tar::new()
        .file("etc/passwd", 0o644, b"inner")
        .hardlink("pw", "/etc/passwd")
        .bytes();
    sb.unpack(&tar).unwrap();
    assert_eq!(std::fs::read(sb.root().join("pw")).unwrap(), b"inner");
}

pub(super) fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid strings and buffer.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

#[test]
fn whiteouts_and_opaque_dirs() {
    if !root_or_skip("whiteouts_and_opaque_dirs") {
        return;
    }
    let sb = Sandbox::new();
    let r = sb.root();
    // Something the whiteouts replace (as if unpacked earlier).
    std::fs::write(r.join("old"), b"old").unwrap();
    std::fs::create_dir_all(r.join("olddir/sub")).unwrap();
    let tar = Tar::new()
        .file(".wh.old", 0o644, b"")
        .file(".wh.olddir", 0o644, b"")
        .file("usr/.wh.gone", 0o644, b"")
        .dir("opq", 0o755)
        .file("opq/.wh..wh..opq", 0o644, b"")
        .file("opq/new", 0o644, b"n")
        .bytes();
    sb.unpack(&tar).unwrap();
    for p in ["old", "olddir", "usr/gone"] {
        let md = std::fs::symlink_metadata(r.join(p)).unwrap();
        assert!(md.file_type().is_char_device(), "{p}");
        assert_eq!(md.rdev(), 0, "{p}");
    }
    assert!(!r.join(".wh.old").exists());
    assert!(!r.join("opq/.wh..wh..opq").exists());
    assert_eq!(
        getxattr(&r.join("opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(std::fs::read(r.join("opq/new")).unwrap(), b"n");
}

#[test]
fn ownership_and_xattrs_as_root() {
    if !root_or_skip("ownership_and_xattrs_as_root") {
        return;
    }
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("SCHILY.xattr.user.berth", &b"v"[..]),
        ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
        ("uid", &b"3000000"[..]),
    ])
    .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_path("owned").unwrap();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_uid(1234);
    h.set_gid(4321);
    h.set_mtime(MTIME);
    h.set_cksum();
    b.append(&h, &b"o"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_path("ln").unwrap();
    h.set_entry_type(EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_link_name("owned").unwrap();
    h.set_uid(55);
    h.set_gid(66);
    h.set_mtime(MTIME);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    let tar = b.into_inner().unwrap();
    let sb = Sandbox::new();
    sb.unpack(&tar).unwrap();
    let md = std::fs::metadata(sb.root().join("owned")).unwrap();
    // The PAX uid overrides the header's.
    assert_eq!((md.uid(), md.gid()), (3_000_000, 4321));
    assert!(getxattr(&sb.root().join("owned"), "trusted.overlay.redirect").is_none());
    let md = std::fs::symlink_metadata(sb.root().join("ln")).unwrap();
    assert_eq!((md.uid(), md.gid()), (55, 66));
    assert_eq!(md.mtime(), MTIME as i64);
    // user.* xattrs need filesystem support (tmpfs has it since 6.6).
    if let Some(v) = getxattr(&sb.root().join("owned"), "user.berth") {
        assert_eq!(v, b"v");
    }
}

#[test]
fn garbage_is_an_error() {
    let sb = Sandbox::new();
    let err = sb.unpack(&[0x1f, 0x8b, 1, 2, 3]).unwrap_err();
    assert!(matches!(err, Error::BadLayer(_)), "{err}");
}

#[test]
fn missing_parents_take_attributes_from_lowers() {
    let sb = Sandbox::new();
    let lower = sb.dir.path().join("lower");
    let upper_lower = sb.dir.path().join("lower0");
    std::fs::create_dir_all(lower.join("tmp")).unwrap();
    std::fs::create_dir_all(lower.join("opt/app")).unwrap();
    std::fs::create_dir_all(upper_lower.join("opt")).unwrap();
    std::fs::set_permissions(lower.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(
        lower.join("opt/app"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::fs::set_permissions(
        upper_lower.join("opt"),
        std::fs::Permissions::from_mode(0o711),
    )
    .unwrap();
    let tar = Tar::new()
        .file("tmp/x", 0o644, b"x")
        .file("opt/app/y", 0o644, b"y")
        .file("new/z", 0o644, b"z")
        .bytes();
    // Nearest lower first: opt comes from lower0, opt/app from lower.
    unpack(&tar[..], &sb.root(), &[upper_lower.clone(), lower.clone()]).unwrap();
    let mode = |p: &str| {
        std::fs::symlink_metadata(sb.root().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("tmp"), 0o1777);
    assert_eq!(mode("opt"), 0o711);
    assert_eq!(mode("opt/app"), 0o750);
    assert_eq!(mode("new"), 0o755);
    let lower_mtime = std::fs::metadata(lower.join("tmp")).unwrap().mtime();
    assert_eq!(
        std::fs::metadata(sb.root().join("tmp")).unwrap().mtime(),
        lower_mtime
    );
}

#[test]
fn implicit_dirs_are_remembered_and_rebased_like_a_sequential_unpack() {
    use crate::unpack::{rebase_implicit_dirs, unpack_tracking, DirSet};
    let sb = Sandbox::new();
    let lower = sb.dir.path().join("lower");
    std::fs::create_dir_all(lower.join("a/b")).unwrap();
    std::fs::create_dir_all(lower.join("s")).unwrap();
    // Deepest first: setting a child's mtime leaves its parent's alone.
    for (d, mode, mtime) in [
        ("a/b", 0o701, 1_500_000_002),
        ("a", 0o750, 1_500_000_001),
        ("s", 0o711, 1_500_000_003),
    ] {
        let p = lower.join(d);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
        std::fs::File::open(&p).unwrap().set_modified(t).unwrap();
    }
    let tar = Tar::new()
        .file("a/b/c/f", 0o644, b"f")
        .file("s/x", 0o644, b"x")
        // s was made implicitly just above; its own entry wins.
        .dir("s", 0o700)
        .bytes();
    let attrs = |root: &Path, p: &str| {
        let m = std::fs::symlink_metadata(root.join(p)).unwrap();
        (m.permissions().mode() & 0o7777, m.uid(), m.gid(), m.mtime())
    };

    // On top of the lower.
    let seq = sb.dir.path().join("seq");
    std::fs::create_dir(&seq).unwrap();
    let mut seq_set = DirSet::new();
    unpack_tracking(&tar[..], &seq, std::slice::from_ref(&lower), &mut seq_set).unwrap();
    let want: DirSet = [&b"a"[..], b"a/b", b"a/b/c"]
        .iter()
        .map(|p| p.to_vec())
        .collect();
    assert_eq!(seq_set, want);
    assert_eq!(attrs(&seq, "a").0, 0o750);
    assert_eq!(attrs(&seq, "a").3, 1_500_000_001);
    assert_eq!(attrs(&seq, "s").0, 0o700);
    assert_eq!(attrs(&seq, "s").3, MTIME as i64);

    // Without it: plain directories, remembered; rebased onto the lower
    // they are what the sequential unpack made.
    let par = sb.dir.path().join("par");
    std::fs::create_dir(&par).unwrap();
    let mut par_set = DirSet::new();
    unpack_tracking(&tar[..], &par, &[], &mut par_set).unwrap();
    assert_eq!(par_set, want);
    assert_eq!(attrs(&par, "a").0, 0o755);
    rebase_implicit_dirs(&par, std::slice::from_ref(&lower), &par_set).unwrap();
    for p in ["a", "a/b", "s"] {
        assert_eq!(attrs(&par, p), attrs(&seq, p), "{p}");
    }
    let no_mtime = |root: &Path, p: &str| {
        let a = attrs(root, p);
        (a.0, a.1, a.2)
    };
    assert_eq!(no_mtime(&par, "a/b/c"), no_mtime(&seq, "a/b/c"));
    assert_eq!(no_mtime(&par, "a/b/c").0, 0o755);
    // Again onto nothing: only the last rebase counts.
    rebase_implicit_dirs(&par, &[], &par_set).unwrap();
    assert_eq!(attrs(&par, "a").0, 0o755);
    assert_eq!(attrs(&par, "s").0, 0o700);

    // A later unpack into the same dir keeps the set up to date: an entry
    // for "a" makes it explicit, a file in place of "a/b" is skipped.
    let more = Tar::new()
        .dir("a", 0o705)
        .file("a/b", 0o644, b"now a file")
        .bytes();
    unpack_tracking(&more[..], &par, &[], &mut par_set).unwrap();
    assert!(!par_set.contains(&b"a"[..]));
    rebase_implicit_dirs(&par, std::slice::from_ref(&lower), &par_set).unwrap();
    assert_eq!(attrs(&par, "a").0, 0o705);
    assert!(std::fs::symlink_metadata(par.join("a/b"))
        .unwrap()
        .is_file());
}
