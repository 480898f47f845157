//! The System service.

use std::sync::Arc;

use berth_proto::gateway::v1::system_server::System;
use berth_proto::gateway::v1::{DiskUsageResponse, Empty, InfoResponse, VersionResponse};
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

    async fn info(&self, req: Request<Empty>) -> Result<Response<InfoResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let inner = &self.0;
        let (mut running, mut paused, mut stopped) = (0, 0, 0);
        for c in inner.containers.lock().unwrap().values() {
            if c.namespace != ns {
                continue;
            }
            match c.state.status.as_str() {
                "running" | "restarting" => running += 1,
                "paused" => paused += 1,
                _ => stopped += 1,
            }
        }
        let images = inner.all_images(&ns).await?.len() as i64;
        let pure_v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
            .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(false);
        let mem = crate::resources::MemoryInfo::detect();
        let mut warnings = Vec::new();
        if !mem.memory_limit {
            warnings.push("No memory limit support".to_string());
        }
        if !mem.swap_limit {
            warnings.push("No swap limit support".to_string());
        }
        if !pure_v2 && !mem.oom_kill_disable {
            warnings.push("No oom kill disable support".to_string());
        }
        // docker's info warnings for the rest of its SysInfo.
        let cpu = crate::resources::CpuIoInfo::detect();
        for (ok, what) in [
            (cpu.cfs, "No cpu cfs quota support"),
            (cpu.cfs, "No cpu cfs period support"),
            (cpu.shares, "No cpu shares support"),
            (cpu.cpuset, "No cpuset support"),
            (cpu.pids, "No pids limit support"),
            (cpu.blkio_weight, "No blkio weight support"),
            (cpu.blkio_weight_device, "No blkio weight_device support"),
            (
                cpu.blkio_throttle,
                "No blkio throttle.read_bps_device support",
            ),
            (
                cpu.blkio_throttle,
                "No blkio throttle.write_bps_device support",
            ),
            (
                cpu.blkio_throttle,
                "No blkio throttle.read_iops_device support",
            ),
            (
                cpu.blkio_throttle,
                "No blkio throttle.write_iops_device support",
            ),
        ] {
            if !ok {
                warnings.push(what.to_string());
            }
        }
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let pretty = os_release
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        let uts = nix::sys::utsname::uname().ok();
        let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uts.as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let mem_total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            })
            .unwrap_or(0)
            * 1024;
        let opts = &inner.registry_options;
        let mut mirrors: Vec<String> = opts
            .mirrors
            .iter()
            .flat_map(|(d, urls)| urls.iter().map(move |u| format!("{d}={u}")))
            .collect();
        mirrors.sort();
        Ok(Response::new(InfoResponse {
            containers: running + paused + stopped,
            containers_running: running,
            containers_paused: paused,
            containers_stopped: stopped,
            images,
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            storage_driver: "overlayfs".into(),
            logging_driver: "json-file".into(),
            cgroup_driver: "cgroupfs".into(),
            cgroup_version: if pure_v2 { "2" } else { "1" }.into(),
            kernel_version: field(|u| u.release()),
            operating_system: pretty,
            os_type: std::env::consts::OS.into(),
            architecture: field(|u| u.machine()),
            ncpu: std::thread::available_parallelism().map_or(1, |n| n.get() as i64),
            mem_total,
            name: field(|u| u.nodename()),
            root_dir: inner.root.display().to_string(),
            warnings,
            insecure_registries: opts.insecure.clone(),
            registry_mirrors: mirrors,
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
