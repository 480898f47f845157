//! `berth version`.

use berth_proto::gateway::v1::Empty;

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
