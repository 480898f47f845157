//! Test images made from Debian's busybox-static, never downloaded.

use std::path::{Path, PathBuf};

/// The static busybox binary the fixtures are made of.
pub const BUSYBOX: &str = "/bin/busybox";

/// Applets to link; all of them if `busybox --list-full` works.
fn applets() -> Vec<String> {
    let out = std::process::Command::new(BUSYBOX)
        .arg("--list-full")
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty() && l != "bin/busybox")
            .collect(),
        _ => [
            "sh", "echo", "cat", "ls", "id", "hostname", "sleep", "pwd", "env", "true", "false",
            "touch", "mkdir",
        ]
        .iter()
        .map(|a| format!("bin/{a}"))
        .collect(),
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

/// Appends a directory entry.
pub fn add_dir<W: std::io::Write>(b: &mut tar::Builder<W>, path: &str, mode: u32) {
    let mut h = header(tar::EntryType::Directory, mode, 0);
    b.append_data(&mut h, path, std::io::empty()).unwrap();
}

/// Appends a regular file.
pub fn add_file<W: std::io::Write>(b: &mut tar::Builder<W>, path: &str, mode: u32, data: &[u8]) {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

/// Appends a symlink.
pub fn add_symlink<W: std::io::Write>(b: &mut tar::Builder<W>, path: &str, target: &str) {
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, path, target).unwrap();
}

/// Writes a busybox root filesystem tarball to `out`.
pub fn write_busybox_tar(out: &Path) {
    let f = std::fs::File::create(out).unwrap();
    let mut b = tar::Builder::new(f);
    for d in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "home", "proc", "sys", "dev",
    ] {
        add_dir(&mut b, d, 0o755);
    }
    add_dir(&mut b, "tmp", 0o1777);
    let bb =
        std::fs::read(BUSYBOX).expect("busybox-static is needed: apt-get install busybox-static");
    add_file(&mut b, "bin/busybox", 0o755, &bb);
    for a in applets() {
        add_symlink(&mut b, &a, "/bin/busybox");
    }
    add_file(
        &mut b,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    );
    add_file(
        &mut b,
        "etc/group",
        0o644,
        b"root:x:0:\nnogroup:x:65534:\nstaff:x:50:app\napp:x:1000:\n",
    );
    b.finish().unwrap();
}

/// A busybox rootfs tarball in `dir` (made once per directory).
pub fn busybox_tar_in(dir: &Path) -> PathBuf {
    let p = dir.join("busybox.tar");
    if !p.exists() {
        write_busybox_tar(&p);
    }
    p
}
