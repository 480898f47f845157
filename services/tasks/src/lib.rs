//! berth-tasks: the service that runs container processes.
//!
//! Each task has a bundle directory under `<state>/tasks/<namespace>/<id>/`
//! and, once started, its own `berth-shim` process. The shim is the parent of
//! the container's init and outlives this service; the service watches it
//! with a pidfd and finds it again from the bundle after a restart.

mod bundle;
mod error;
mod pidfd;
mod service;
mod stats;

pub use error::Error;
pub use service::TasksService;
