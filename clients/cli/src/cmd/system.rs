//! `berth version`, `berth info`.

use berth_proto::gateway::v1::Empty;
use clap::Args;

use crate::ctx::Ctx;
use crate::eprint_err;

/// The API version this client speaks.
pub const API_VERSION: &str = "v1";

/// Docker's names for Rust's architecture names.
fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn line(indent: usize, key: &str, value: &str) -> String {
    // Values start in column 20, as in docker's version template.
    format!("{:indent$}{:<width$}{value}", "", key, width = 20 - indent)
}

/// `berth version`: a Client section, then the Server's (or the reason it
/// cannot be reached).
pub async fn version(ctx: &Ctx) -> i32 {
    let client = [
        "Client:".to_string(),
        line(1, "Version:", env!("CARGO_PKG_VERSION")),
        line(1, "API version:", API_VERSION),
        line(
            1,
            "OS/Arch:",
            &format!(
                "{}/{}",
                std::env::consts::OS,
                go_arch(std::env::consts::ARCH)
            ),
        ),
        line(1, "Namespace:", &ctx.namespace),
    ];
    crate::outln(&client.join("\n"));
    match ctx.system().version(ctx.req(Empty {})).await {
        Ok(r) => {
            let v = r.into_inner();
            let mut lines = vec![
                String::new(),
                "Server: berth".to_string(),
                " Engine:".to_string(),
                line(2, "Version:", &v.version),
                line(2, "API version:", &v.api_version),
            ];
            if !v.git_commit.is_empty() {
                lines.push(line(2, "Git commit:", &v.git_commit));
            }
            lines.push(line(
                2,
                "OS/Arch:",
                &format!("{}/{}", v.os, go_arch(&v.arch)),
            ));
            if !v.kernel_version.is_empty() {
                lines.push(line(2, "Kernel Version:", &v.kernel_version));
            }
            crate::outln(&lines.join("\n"));
            0
        }
        Err(s) => {
            crate::outln("");
            eprint_err(&ctx.describe(&s));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lines_align_like_docker() {
        assert_eq!(line(1, "Version:", "1.0"), " Version:           1.0");
        assert_eq!(line(2, "Version:", "1.0"), "  Version:          1.0");
        assert_eq!(go_arch("x86_64"), "amd64");
    }
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Format output using a custom template ('json' for JSON)
    #[arg(short = 'f', long, value_name = "string")]
    pub format: Option<String>,
}

/// Docker's binary sizes ("23.47GiB", %.4g).
fn bytes_size(n: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n.max(0) as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{}{}", crate::render::go_fmt_g(v, 4), units[i])
}

/// `berth info`: the client's side (logins), then the server's.
pub async fn info(ctx: &Ctx, args: InfoArgs) -> i32 {
    let logins = crate::auth::logins();
    let server = ctx.system().info(ctx.req(Empty {})).await;
    let i = match server {
        Ok(r) => r.into_inner(),
        Err(st) => {
            eprint_err(&ctx.describe(&st));
            return 1;
        }
    };
    let doc = serde_json::json!({
        "Containers": i.containers,
        "ContainersRunning": i.containers_running,
        "ContainersPaused": i.containers_paused,
        "ContainersStopped": i.containers_stopped,
        "Images": i.images,
        "ServerVersion": i.server_version,
        "Driver": i.storage_driver,
        "LoggingDriver": i.logging_driver,
        "CgroupDriver": i.cgroup_driver,
        "CgroupVersion": i.cgroup_version,
        "KernelVersion": i.kernel_version,
        "OperatingSystem": i.operating_system,
        "OSType": i.os_type,
        "Architecture": i.architecture,
        "NCPU": i.ncpu,
        "MemTotal": i.mem_total,
        "Name": i.name,
        "DockerRootDir": i.root_dir,
        "Warnings": i.warnings,
        "RegistryConfig": {
            "InsecureRegistryCIDRs": ["127.0.0.0/8"],
            "IndexConfigs": {},
            "Mirrors": i.registry_mirrors,
            "InsecureRegistries": i.insecure_registries,
        },
        "Logins": logins.iter().map(|(k, u)| serde_json::json!({"Registry": k, "Username": u})).collect::<Vec<_>>(),
    });
    if let Some(f) = args.format.as_deref() {
        if f == "json" {
            crate::outln(&doc.to_string());
            return 0;
        }
        let t = match crate::template::parse(&f.replace("\\n", "\n").replace("\\t", "\t")) {
            Ok(t) => t,
            Err(e) => {
                eprint_err(&format!("template parsing error: {e}"));
                return 1;
            }
        };
        return match t.render(&doc) {
            Ok(s) => {
                crate::outln(&s);
                0
            }
            Err(e) => {
                eprint_err(&format!("template: {e}"));
                1
            }
        };
    }
    let mut out = vec![
        "Client:".to_string(),
        line(1, "Version:", env!("CARGO_PKG_VERSION")),
        line(1, "Namespace:", &ctx.namespace),
    ];
    if !logins.is_empty() {
        out.push(" Registry Logins:".to_string());
        for (k, u) in &logins {
            out.push(format!("  {k}: {u}"));
        }
    }
    out.push(String::new());
    out.push("Server:".to_string());
    out.push(format!(" Containers: {}", i.containers));
    out.push(format!("  Running: {}", i.containers_running));
    out.push(format!("  Paused: {}", i.containers_paused));
    out.push(format!("  Stopped: {}", i.containers_stopped));
    out.push(format!(" Images: {}", i.images));
    out.push(format!(" Server Version: {}", i.server_version));
    out.push(format!(" Storage Driver: {}", i.storage_driver));
    out.push(format!(" Logging Driver: {}", i.logging_driver));
    out.push(format!(" Cgroup Driver: {}", i.cgroup_driver));
    out.push(format!(" Cgroup Version: {}", i.cgroup_version));
    out.push(format!(" Kernel Version: {}", i.kernel_version));
    out.push(format!(" Operating System: {}", i.operating_system));
    out.push(format!(" OSType: {}", i.os_type));
    out.push(format!(" Architecture: {}", i.architecture));
    out.push(format!(" CPUs: {}", i.ncpu));
    out.push(format!(" Total Memory: {}", bytes_size(i.mem_total)));
    out.push(format!(" Name: {}", i.name));
    out.push(format!(" Berth Root Dir: {}", i.root_dir));
    out.push(" Insecure Registries:".to_string());
    out.push("  127.0.0.0/8".to_string());
    for r in &i.insecure_registries {
        out.push(format!("  {r}"));
    }
    if !i.registry_mirrors.is_empty() {
        out.push(" Registry Mirrors:".to_string());
        for m in &i.registry_mirrors {
            out.push(format!("  {m}"));
        }
    }
    crate::outln(&out.join("\n"));
    if !i.warnings.is_empty() {
        let warn: Vec<String> = i.warnings.iter().map(|w| format!("WARNING: {w}")).collect();
        eprint_err(&warn.join("\n"));
    }
    0
}

#[cfg(test)]
mod info_tests {
    use super::bytes_size;

    #[test]
    fn docker_binary_sizes() {
        assert_eq!(bytes_size(25_200_000_000), "23.47GiB");
        assert_eq!(bytes_size(1024), "1KiB");
        assert_eq!(bytes_size(512), "512B");
    }
}
