//! berth-snapshots: overlayfs snapshots and layer unpacking.
//!
//! [`SnapshotsService`] implements the `berth.snapshots.v1.Snapshots` gRPC
//! service. Metadata lives in redb at `<root>/snapshots/metadata.redb`, each
//! snapshot's directories at `<root>/snapshots/snapshots/<id>/{fs,work}`.
//! Layers are read from berth-content and unpacked in one streaming pass,
//! confined to the snapshot (see [`unpack`]).

#![warn(missing_docs)]

pub mod error;
mod meta;
pub mod service;
pub mod unpack;

pub use error::Error;
pub use service::SnapshotsService;

#[cfg(test)]
mod tests;
