//! berth-registry: a client for OCI distribution registries (Docker
//! Registry HTTP API v2).
//!
//! It answers authentication challenges (Basic, and the Bearer token flow
//! announced by `WWW-Authenticate`), fetches manifests and blobs (blobs as
//! streams, from an offset to resume), checks and uploads blobs (cross-repo
//! mount, monolithic or chunked), puts manifests and lists a registry's
//! catalog. Idempotent requests are retried with back-off on 5xx, 429 and
//! dropped connections. Hosts marked insecure (loopback by default, like
//! Docker) are reached over plain HTTP when HTTPS does not answer.
//!
//! Credentials are passed per call and never logged.

mod auth;
mod client;
mod error;
pub mod media;

pub use auth::Credentials;
pub use client::{Client, Config, SearchResult, Upload};
pub use error::{Error, Result};

/// The API endpoint of a registry named in a reference: Docker Hub's
/// `docker.io` is served by `registry-1.docker.io`.
pub fn endpoint_host(domain: &str) -> &str {
    match domain {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        d => d,
    }
}

/// sha256 of `data` as `sha256:<hex>`.
pub fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}
