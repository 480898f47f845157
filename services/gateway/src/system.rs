//! The System service.

use std::sync::Arc;

use berth_proto::gateway::v1::system_server::System;
use berth_proto::gateway::v1::{DiskUsageResponse, Empty, VersionResponse};
use tonic::{Request, Response, Status};

use crate::Inner;

/// Version of the public API.
pub const API_VERSION: &str = "1.0";

pub struct SystemApi(pub(crate) Arc<Inner>);

#[tonic::async_trait]
impl System for SystemApi {
    async fn version(&self, _req: Request<Empty>) -> Result<Response<VersionResponse>, Status> {
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Response::new(VersionResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            api_version: API_VERSION.to_string(),
            git_commit: option_env!("BERTH_GIT_COMMIT").unwrap_or("").to_string(),
            os: std::env::consts::OS.to_string(),
            arch: crate::images::go_arch().to_string(),
            kernel_version: kernel,
        }))
    }

    async fn disk_usage(&self, req: Request<Empty>) -> Result<Response<DiskUsageResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        Ok(Response::new(self.0.disk_usage(&ns).await?))
    }

    async fn ping(&self, _req: Request<Empty>) -> Result<Response<Empty>, Status> {
        let _ = &self.0;
        Ok(Response::new(Empty {}))
    }
}
