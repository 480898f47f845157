//! berth-snapshots: overlayfs snapshots and layer unpacking.
//!
//! [`SnapshotsService`] implements the `berth.snapshots.v1.Snapshots` gRPC
//! service. Metadata lives in redb at `<root>/snapshots/metadata.redb`, each
//! snapshot's directories at `<root>/snapshots/snapshots/<id>/{fs,work}`.
//! Layers are read from berth-content (Apply) or taken from the request
//! stream (ApplyStream, for a caller that is downloading them) and unpacked
//! in one streaming pass, confined to the snapshot (see [`unpack`]). A
//! snapshot prepared without a parent can be committed onto one (a rebase),
//! so that layers unpack in parallel.

#![warn(missing_docs)]

pub mod error;
mod meta;
pub mod service;
pub mod unpack;

pub use error::Error;
pub use service::SnapshotsService;

#[cfg(test)]
mod tests;
