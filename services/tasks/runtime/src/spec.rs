//! Loading a task bundle: `config.json`, `rootfs.json` and `rootfs/`.

use crate::error::{Context, Error, Result};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One entry of `rootfs.json`: an overlay or a bind mount for the rootfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsMount {
    #[serde(rename = "type")]
    pub typ: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub options: Vec<String>,
}

/// A loaded bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    pub rootfs_mounts: Vec<RootfsMount>,
}

impl Bundle {
    /// Load `config.json` and `rootfs.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let dir = std::fs::canonicalize(dir)
            .with_ctx(|| format!("resolve bundle dir {}", dir.display()))?;
        let config = dir.join("config.json");
        let spec = Spec::load(&config)
            .map_err(|e| Error::Spec(format!("load {}: {e}", config.display())))?;
        let rootfs_json = dir.join("rootfs.json");
        let rootfs_mounts = match std::fs::read(&rootfs_json) {
            Ok(data) => parse_rootfs_json(&data)
                .map_err(|e| Error::Spec(format!("parse {}: {e}", rootfs_json.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::os(format!("read {}", rootfs_json.display()), e)),
        };
        validate(&spec)?;
        Ok(Bundle {
            dir,
            spec,
            rootfs_mounts,
        })
    }

    /// The host path of the container's root directory (`DIR/<root.path>`).
    pub fn rootfs(&self) -> PathBuf {
        let rel = self
            .spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .unwrap_or_else(|| PathBuf::from("rootfs"));
        if rel.is_absolute() {
            rel
        } else {
            self.dir.join(rel)
        }
    }
}

/// Parse `rootfs.json`: a JSON array of mounts, or a single mount object.
pub fn parse_rootfs_json(data: &[u8]) -> Result<Vec<RootfsMount>, serde_json::Error> {
    match serde_json::from_slice::<Vec<RootfsMount>>(data) {
        Ok(v) => Ok(v),
        Err(e) => serde_json::from_slice::<RootfsMount>(data)
            .map(|m| vec![m])
            .map_err(|_| e),
    }
}

fn validate(spec: &Spec) -> Result<()> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Spec("config.json has no process".into()))?;
    match process.args() {
        Some(args) if !args.is_empty() && !args[0].is_empty() => {}
        _ => return Err(Error::Spec("process.args is empty".into())),
    }
    if spec.linux().is_none() {
        return Err(Error::Spec("config.json has no linux section".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_json_array_and_object() {
        let a = br#"[{"type":"overlay","source":"overlay","options":["lowerdir=/a:/b","upperdir=/u","workdir=/w"]}]"#;
        let v = parse_rootfs_json(a).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].typ, "overlay");
        assert_eq!(v[0].options[0], "lowerdir=/a:/b");
        let b = br#"{"type":"bind","source":"/dir","options":["rbind","rw"]}"#;
        let v = parse_rootfs_json(b).unwrap();
        assert_eq!(v[0].typ, "bind");
        assert_eq!(v[0].source, "/dir");
        assert!(parse_rootfs_json(b"{").is_err());
    }

    #[test]
    fn bundle_load_and_validate() {
        let dir = std::env::temp_dir().join(format!("berth-rt-spec-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        let spec = Spec::default();
        spec.save(dir.join("config.json")).unwrap();
        std::fs::write(
            dir.join("rootfs.json"),
            br#"[{"type":"bind","source":"/x","options":["rbind"]}]"#,
        )
        .unwrap();
        let b = Bundle::load(&dir).unwrap();
        assert_eq!(
            b.rootfs(),
            std::fs::canonicalize(&dir).unwrap().join("rootfs")
        );
        assert_eq!(b.rootfs_mounts[0].source, "/x");
        std::fs::write(dir.join("config.json"), b"{\"ociVersion\":\"1.0.2\"}").unwrap();
        assert!(matches!(Bundle::load(&dir), Err(Error::Spec(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
