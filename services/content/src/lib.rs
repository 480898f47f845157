//! berth-content: blobs addressed by digest, image records, and `docker
//! import`, served as the `berth.content.v1.Content` gRPC service.
//!
//! Everything lives under `<root>/content/`:
//!
//! - `blobs/sha256/<hex>`: committed blobs, visible only when whole and
//!   verified (written to an ingest, fsynced, renamed, directory fsynced);
//! - `ingest/<sha256 of ref>/{data,meta}`: blobs being written; they survive
//!   a dropped stream and a restart, so a write can resume at
//!   `Status().offset`;
//! - `metadata.redb`: blob labels and creation times, image records keyed
//!   by (namespace, full name), and leases (see [`gc`]).

pub mod changes;
pub mod digest;
mod error;
pub mod gc;
pub mod import;
mod ingest;
mod service;
mod store;

pub use digest::Digest;
pub use error::{Error, Result};
pub use service::ContentService;

#[cfg(test)]
mod tests;
