//! Plumbing shared by every berth service and client: gRPC over unix
//! sockets, the `berth-namespace` metadata key, W3C trace-context propagation
//! and telemetry setup.

pub mod config;
pub mod grpc;
pub mod logopts;
pub mod notify;
pub mod reference;
pub mod telemetry;
pub mod time;
pub mod units;

/// Label of an active snapshot whose work cannot outlive berth-snapshots
/// (a layer unpacked while it streams in): removed when the service starts.
pub const SNAPSHOT_EPHEMERAL_LABEL: &str = "berth.io/ephemeral";

pub use grpc::{
    connect_unix, namespace_of, request, unix_incoming, DEFAULT_NAMESPACE, EXIT_CODE_KEY,
    NAMESPACE_KEY,
};
