//! A file whose readers hang, for tests of what a daemon does when a read
//! it depends on never finishes (as `/proc/PID/cmdline` does while the
//! process's mm lock is held by a thread stuck in D state).
//!
//! It is a FUSE file system whose server never answers: mounted over an
//! existing file, every `open` of it waits in the kernel (killable, shown as
//! D state) for the FUSE INIT reply that never comes. [`HungFile::release`]
//! (also on drop) unmounts it and closes the FUSE device, which aborts the
//! connection: readers blocked until then fail with ENOTCONN, new ones see
//! the file underneath again. No FUSE library or daemon is involved.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// A hung FUSE mount over one file; released on drop.
pub struct HungFile {
    path: PathBuf,
    dev: Option<File>,
}

impl HungFile {
    /// Mounts the hung file over `path` (an existing regular file). Needs
    /// root and /dev/fuse.
    pub fn mount_over(path: &Path) -> HungFile {
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .expect("open /dev/fuse");
        // rootmode 0100000: the root is a regular file, to go over one.
        let opts = format!(
            "fd={},rootmode=100000,user_id=0,group_id=0",
            dev.as_raw_fd()
        );
        mount(
            Some("berth-test-hung"),
            path,
            Some("fuse"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .unwrap_or_else(|e| panic!("mount a hung FUSE file over {}: {e}", path.display()));
        HungFile {
            path: path.to_path_buf(),
            dev: Some(dev),
        }
    }

    /// Unmounts the file and lets blocked readers go (with ENOTCONN).
    pub fn release(&mut self) {
        if let Some(dev) = self.dev.take() {
            // Detach first, so that a reader trying again sees the real file.
            let _ = umount2(&self.path, MntFlags::MNT_DETACH);
            // Closing the device aborts the connection.
            drop(dev);
        }
    }
}

impl Drop for HungFile {
    fn drop(&mut self) {
        self.release();
    }
}
