//! berth-runtime: creates a container from an OCI bundle (namespaces, mounts,
//! pivot_root, devices, cgroups, user, rlimits, capabilities) and execs its
//! init. Used by the single-threaded `berth-shim`.

pub mod caps;
pub mod cgroupfs;
pub mod cgroups;
pub mod container;
pub mod devices;
pub mod error;
pub mod frame;
pub mod init;
pub mod logs;
pub mod mount;
pub mod namespaces;
pub mod net;
pub mod oom;
pub mod process;
pub mod pty;
pub mod rlimits;
pub mod rootpath;
pub mod spec;
pub mod status;
pub mod sys;
pub mod time;
pub mod user;

pub use container::{create, Container};
pub use error::{Error, Result};
pub use spec::{Bundle, RootfsMount};
pub use status::exit_status_from_wait;
