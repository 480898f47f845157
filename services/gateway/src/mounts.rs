//! A container's mounts: `-v` specs, `--mount`, `--tmpfs`, `--volumes-from`
//! and the image's VOLUME entries, checked and turned into the mount points
//! the container keeps (docker's MountPoints) before anything is created.

use std::collections::{BTreeMap, BTreeSet};

use berth_proto::gateway::v1::MountSpec;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::Inner;

/// A new container's mounts, checked, with what inspect shows of them.
pub struct Planned {
    pub points: Vec<MountPoint>,
    /// Config.Volumes.
    pub config_volumes: Vec<String>,
    /// HostConfig.Mounts.
    pub inspect_mounts: Vec<Value>,
}

/// One mount of a container, as inspect's `Mounts` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MountPoint {
    /// "bind", "volume" or "tmpfs".
    pub kind: String,
    /// Volume name (volumes only).
    pub name: String,
    /// Host path (binds); filled in for volumes once they exist.
    pub source: String,
    pub destination: String,
    /// As the user wrote it ("ro", "z", ...), docker's Mode.
    pub mode: String,
    pub rw: bool,
    /// Bind propagation; empty for volumes and tmpfs.
    pub propagation: String,
    /// A volume to create when missing, with these driver options / labels.
    pub volume_options: BTreeMap<String, String>,
    pub volume_labels: BTreeMap<String, String>,
    /// An anonymous volume (named at create).
    pub anonymous: bool,
    /// Fill a new, empty volume with the image's files at this path.
    pub copy_up: bool,
    /// -v bind: create the host directory when missing.
    pub create_source: bool,
    /// tmpfs: mount(8) data and flags ("size=…", "mode=…", "ro", ...).
    pub tmpfs_options: Vec<String>,
    /// Made by --tmpfs: shown in HostConfig.Tmpfs, not in Mounts (docker).
    pub tmpfs_flag: bool,
}

impl MountPoint {
    /// inspect's `Mounts` entry.
    pub fn inspect(&self) -> Value {
        let mut v = json!({
            "Type": self.kind,
            "Source": self.source,
            "Destination": self.destination,
            "Mode": self.mode,
            "RW": self.rw,
            "Propagation": self.propagation,
        });
        if self.kind == "volume" {
            v["Name"] = json!(self.name);
            v["Driver"] = json!("local");
        }
        v
    }

    /// The OCI spec mount.
    pub fn spec(&self) -> Value {
        if self.kind == "tmpfs" {
            let mut options = vec!["nosuid".to_string(), "nodev".into(), "noexec".into()];
            options.extend(self.tmpfs_options.iter().cloned());
            return json!({
                "destination": self.destination,
                "type": "tmpfs",
                "source": "tmpfs",
                "options": options,
            });
        }
        let mut options = vec![
            "rbind".to_string(),
            if self.rw { "rw" } else { "ro" }.into(),
        ];
        options.push(if self.propagation.is_empty() {
            "rprivate".into()
        } else {
            self.propagation.clone()
        });
        json!({
            "destination": self.destination,
            "type": "bind",
            "source": self.source,
            "options": options,
        })
    }
}

/// Go's path.Clean for absolute paths: no `.`, `..`, doubled or trailing
/// slashes (`..` stops at the root). Relative input is returned as given.
pub fn clean_path(p: &str) -> String {
    if !p.starts_with('/') {
        return p.to_string();
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

const PROPAGATIONS: [&str; 6] = [
    "rprivate", "private", "rshared", "shared", "rslave", "slave",
];

fn clean_target(target: &str, kind: &str) -> Result<String> {
    if !target.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "invalid mount config for type \"{kind}\": invalid mount path: '{target}' mount path must be absolute"
        )));
    }
    let cleaned = clean_path(target);
    if cleaned == "/" {
        return Err(Error::InvalidArgument(format!(
            "invalid mount config for type \"{kind}\": invalid specification: destination can't be '/'"
        )));
    }
    Ok(cleaned)
}

/// One `-v` spec (docker's HostConfig.Binds entry).
pub fn parse_bind(spec: &str) -> Result<MountPoint> {
    let invalid = || Error::InvalidArgument(format!("invalid volume specification: '{spec}'"));
    let parts: Vec<&str> = spec.split(':').collect();
    if spec.is_empty() || parts.iter().any(|p| p.is_empty()) {
        return Err(invalid());
    }
    let (source, target, mode) = match parts.as_slice() {
        [t] => ("", *t, ""),
        [s, t] if t.starts_with('/') => (*s, *t, ""),
        // "/ctr:ro": an anonymous volume with a mode.
        [t, m] if t.starts_with('/') && !m.starts_with('/') => ("", *t, *m),
        [s, t, m] => (*s, *t, *m),
        _ => return Err(invalid()),
    };
    let mut mp = MountPoint {
        rw: true,
        mode: mode.to_string(),
        copy_up: true,
        ..Default::default()
    };
    for opt in mode.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => mp.rw = false,
            "rw" => mp.rw = true,
            "z" | "Z" => {} // SELinux labels: nothing to do here.
            "nocopy" => mp.copy_up = false,
            p if PROPAGATIONS.contains(&p) => mp.propagation = p.to_string(),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "invalid mode: {opt} in volume specification '{spec}'"
                )))
            }
        }
    }
    if source.starts_with('/') {
        mp.kind = "bind".into();
        mp.source = clean_path(source);
        mp.create_source = true;
        mp.copy_up = false;
        if mp.propagation.is_empty() {
            mp.propagation = "rprivate".into();
        }
        if mode.split(',').any(|o| o == "nocopy") {
            return Err(Error::InvalidArgument(format!(
                "invalid mode: nocopy in volume specification '{spec}': only volumes take it"
            )));
        }
    } else {
        mp.kind = "volume".into();
        if !mp.propagation.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "invalid volume specification: '{spec}': propagation is for bind mounts only"
            )));
        }
        if source.is_empty() {
            mp.anonymous = true;
        } else {
            crate::volumes::check_name(source)?;
            mp.name = source.to_string();
        }
    }
    mp.destination = clean_target(target, &mp.kind)?;
    Ok(mp)
}

/// One `--mount`.
pub fn parse_mount(m: &MountSpec) -> Result<MountPoint> {
    let kind = if m.r#type.is_empty() {
        "volume"
    } else {
        m.r#type.as_str()
    };
    let bad = |why: String| {
        Error::InvalidArgument(format!("invalid mount config for type \"{kind}\": {why}"))
    };
    if m.target.is_empty() {
        return Err(bad("field Target must not be empty".into()));
    }
    let destination = clean_target(&m.target, kind)?;
    let mut mp = MountPoint {
        kind: kind.to_string(),
        destination,
        rw: !m.read_only,
        mode: if m.read_only {
            "ro".into()
        } else {
            String::new()
        },
        ..Default::default()
    };
    let volume_fields = m.volume_nocopy
        || !m.volume_driver.is_empty()
        || !m.volume_options.is_empty()
        || !m.volume_labels.is_empty();
    let tmpfs_fields = m.tmpfs_size != 0 || m.tmpfs_mode != 0;
    match kind {
        "bind" => {
            if volume_fields || tmpfs_fields {
                return Err(bad(
                    "only bind options can be given with a bind mount".into()
                ));
            }
            if m.source.is_empty() {
                return Err(bad("field Source must not be empty".into()));
            }
            if !m.source.starts_with('/') {
                return Err(bad(format!(
                    "invalid mount path: '{}' mount path must be absolute",
                    m.source
                )));
            }
            if !std::path::Path::new(&m.source).exists() {
                return Err(bad(format!(
                    "bind source path does not exist: {}",
                    m.source
                )));
            }
            let p = if m.bind_propagation.is_empty() {
                "rprivate"
            } else {
                m.bind_propagation.as_str()
            };
            if !PROPAGATIONS.contains(&p) {
                return Err(bad(format!("invalid propagation mode: {p}")));
            }
            mp.source = clean_path(&m.source);
            mp.propagation = p.to_string();
        }
        "volume" => {
            if tmpfs_fields || !m.bind_propagation.is_empty() {
                return Err(bad("only volume options can be given with a volume".into()));
            }
            crate::volumes::check_driver(&m.volume_driver)?;
            if m.source.is_empty() {
                mp.anonymous = true;
            } else {
                crate::volumes::check_name(&m.source)?;
                mp.name = m.source.clone();
            }
            let opts: BTreeMap<String, String> = m
                .volume_options
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            crate::volumes::backing(&opts)?;
            mp.volume_options = opts;
            mp.volume_labels = m
                .volume_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            mp.copy_up = !m.volume_nocopy;
            if m.volume_nocopy {
                mp.mode = if mp.mode.is_empty() {
                    "nocopy".into()
                } else {
                    format!("{},nocopy", mp.mode)
                };
            }
        }
        "tmpfs" => {
            if volume_fields || !m.bind_propagation.is_empty() {
                return Err(bad("only tmpfs options can be given with a tmpfs".into()));
            }
            if !m.source.is_empty() {
                return Err(bad("field Source must not be specified".into()));
            }
            if m.tmpfs_size < 0 {
                return Err(bad(format!("invalid tmpfs size {}", m.tmpfs_size)));
            }
            if m.tmpfs_size > 0 {
                mp.tmpfs_options.push(format!("size={}", m.tmpfs_size));
            }
            mp.tmpfs_options.push(format!(
                "mode={:o}",
                if m.tmpfs_mode == 0 {
                    0o1777
                } else {
                    m.tmpfs_mode
                }
            ));
            if m.read_only {
                mp.tmpfs_options.push("ro".into());
            }
        }
        other => {
            return Err(Error::InvalidArgument(format!(
                "invalid mount config: unknown mount type \"{other}\" (bind, volume or tmpfs)"
            )))
        }
    }
    Ok(mp)
}

/// One `--tmpfs PATH[:OPTIONS]`.
pub fn parse_tmpfs(path: &str, options: &str) -> Result<MountPoint> {
    let destination = clean_target(path, "tmpfs")?;
    let mut opts = Vec::new();
    let mut rw = true;
    for o in options.split(',').filter(|o| !o.is_empty()) {
        let (k, v) = o.split_once('=').unwrap_or((o, ""));
        match k {
            "size" => {
                let n = berth_common::units::ram_in_bytes(v).map_err(|e| {
                    Error::InvalidArgument(format!("invalid tmpfs option {o:?}: {e}"))
                })?;
                opts.push(format!("size={n}"));
            }
            "mode" => {
                u32::from_str_radix(v, 8).map_err(|_| {
                    Error::InvalidArgument(format!("invalid tmpfs option {o:?}: mode is octal"))
                })?;
                opts.push(o.to_string());
            }
            "ro" => {
                rw = false;
                opts.push(o.to_string());
            }
            "rw" | "exec" | "noexec" | "suid" | "nosuid" | "dev" | "nodev" | "atime"
            | "noatime" | "relatime" | "strictatime" | "nr_inodes" | "uid" | "gid" => {
                opts.push(o.to_string())
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "invalid tmpfs option {o:?}"
                )))
            }
        }
    }
    Ok(MountPoint {
        kind: "tmpfs".into(),
        destination,
        rw,
        mode: options.to_string(),
        tmpfs_options: opts,
        tmpfs_flag: true,
        ..Default::default()
    })
}

/// A `--volumes-from CONTAINER[:ro|rw]`: (container, mode override).
pub fn parse_volumes_from(spec: &str) -> Result<(String, Option<bool>)> {
    match spec.split_once(':') {
        None if !spec.is_empty() => Ok((spec.to_string(), None)),
        Some((c, "ro")) if !c.is_empty() => Ok((c.to_string(), Some(false))),
        Some((c, "rw")) if !c.is_empty() => Ok((c.to_string(), Some(true))),
        _ => Err(Error::InvalidArgument(format!(
            "invalid volumes-from specification: '{spec}' (CONTAINER[:ro|rw])"
        ))),
    }
}

/// Puts together the mounts of a new container: the user's own (binds,
/// --mount, --tmpfs), then those of --volumes-from containers at paths not
/// taken, then anonymous volumes for the image's VOLUME paths not covered.
/// Two user mounts at one path are refused.
pub fn plan(
    own: Vec<MountPoint>,
    inherited: Vec<MountPoint>,
    image_volumes: &[String],
) -> Result<Vec<MountPoint>> {
    let mut taken = BTreeSet::new();
    let mut out = Vec::new();
    for m in own {
        if !taken.insert(m.destination.clone()) {
            return Err(Error::InvalidArgument(format!(
                "Duplicate mount point: {}",
                m.destination
            )));
        }
        out.push(m);
    }
    for m in inherited {
        if taken.insert(m.destination.clone()) {
            out.push(m);
        }
    }
    for v in image_volumes {
        let dest = clean_path(v);
        if dest.starts_with('/') && dest != "/" && taken.insert(dest.clone()) {
            out.push(MountPoint {
                kind: "volume".into(),
                destination: dest,
                rw: true,
                anonymous: true,
                copy_up: true,
                ..Default::default()
            });
        }
    }
    // Parents before children, as the runtime mounts them in order; by
    // path within one depth.
    out.sort_by(|a, b| {
        (a.destination.matches('/').count(), &a.destination)
            .cmp(&(b.destination.matches('/').count(), &b.destination))
    });
    Ok(out)
}

/// Docker's check that slave propagation can work: the source must be on a
/// shared or slave mount of the host, else the container would silently
/// get a private mount. Shared propagation is refused: the container's
/// mount tree is a slave of the host's (the runtime's rslave root), so a
/// shared bind could never pass mounts back.
fn check_propagation(source: &str, propagation: &str) -> Result<()> {
    match propagation {
        "shared" | "rshared" => {
            return Err(Error::InvalidArgument(format!(
                "bind propagation {propagation} is not supported for {source}: the container's mounts are a slave of the host's (use rslave or slave)"
            )))
        }
        "slave" | "rslave" => {}
        _ => return Ok(()),
    }
    let path = std::fs::canonicalize(source)
        .map_err(|e| Error::InvalidArgument(format!("bind source path {source}: {e}")))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::Internal(format!("reading mountinfo: {e}")))?;
    let (mnt, fields) = mount_of(&path.to_string_lossy(), &info)
        .ok_or_else(|| Error::Internal(format!("no mount holds {source}")))?;
    if fields
        .iter()
        .any(|f| f.starts_with("shared:") || f.starts_with("master:"))
    {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "path {source} is mounted on {mnt} but it is not a shared or slave mount"
    )))
}

/// The mount point (the last, longest one in mountinfo) holding `path`,
/// with its optional fields ("shared:N", "master:N").
fn mount_of(path: &str, mountinfo: &str) -> Option<(String, Vec<String>)> {
    let mut best: Option<(String, Vec<String>)> = None;
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(mp) = f.get(4).map(|m| m.replace("\\040", " ")) else {
            continue;
        };
        let within = mp == "/" || path == mp || path.starts_with(&format!("{mp}/"));
        if !within || best.as_ref().is_some_and(|(b, _)| b.len() > mp.len()) {
            continue;
        }
        let optional: Vec<String> = f
            .iter()
            .skip(6)
            .take_while(|x| **x != "-")
            .map(|x| x.to_string())
            .collect();
        best = Some((mp, optional));
    }
    best
}

/// HostConfig.Mounts' entry for one --mount.
fn mount_doc(m: &MountSpec) -> Value {
    let mut v = json!({
        "Type": if m.r#type.is_empty() { "volume" } else { m.r#type.as_str() },
        "Source": m.source,
        "Target": m.target,
    });
    if m.read_only {
        v["ReadOnly"] = json!(true);
    }
    if !m.bind_propagation.is_empty() {
        v["BindOptions"] = json!({"Propagation": m.bind_propagation});
    }
    if m.volume_nocopy || !m.volume_options.is_empty() || !m.volume_labels.is_empty() {
        let mut o = json!({});
        if m.volume_nocopy {
            o["NoCopy"] = json!(true);
        }
        if !m.volume_labels.is_empty() {
            o["Labels"] = json!(m.volume_labels);
        }
        if !m.volume_options.is_empty() {
            o["DriverConfig"] = json!({"Name": "local", "Options": m.volume_options});
        }
        v["VolumeOptions"] = o;
    }
    if m.tmpfs_size != 0 || m.tmpfs_mode != 0 {
        let mut o = json!({});
        if m.tmpfs_size != 0 {
            o["SizeBytes"] = json!(m.tmpfs_size);
        }
        if m.tmpfs_mode != 0 {
            o["Mode"] = json!(m.tmpfs_mode);
        }
        v["TmpfsOptions"] = o;
    }
    v
}

impl Inner {
    /// Checks and plans a new container's mounts; nothing is created.
    /// Anonymous volumes get their names here, so that the container's
    /// record names every volume it will use from the start.
    pub(crate) fn plan_mounts(
        &self,
        ns: &str,
        req: &berth_proto::gateway::v1::CreateContainerRequest,
        image_config: &Value,
    ) -> Result<Planned> {
        let mut own = Vec::new();
        for b in &req.binds {
            own.push(parse_bind(b)?);
        }
        for m in &req.mounts {
            own.push(parse_mount(m)?);
        }
        let mut tmpfs: Vec<(&String, &String)> = req.tmpfs.iter().collect();
        tmpfs.sort();
        for (path, opts) in tmpfs {
            own.push(parse_tmpfs(path, opts)?);
        }
        let mut inherited = Vec::new();
        for spec in &req.volumes_from {
            let (c, rw) = parse_volumes_from(spec)?;
            let from = self.find(ns, &c)?;
            for m in from.mount_points.iter().filter(|m| m.kind != "tmpfs") {
                let mut m = m.clone();
                if let Some(rw) = rw {
                    m.rw = rw;
                    m.mode = if rw { "rw".into() } else { "ro".into() };
                }
                // Shared as they are: nothing to create or fill.
                m.anonymous = false;
                m.copy_up = false;
                m.create_source = false;
                inherited.push(m);
            }
        }
        let image_volumes: Vec<String> = image_config["Volumes"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let mut points = plan(own, inherited, &image_volumes)?;
        let mut config_volumes: Vec<String> = image_volumes;
        for m in points.iter_mut() {
            if m.kind == "volume" && m.anonymous && m.name.is_empty() {
                m.name = crate::volumes::anonymous_name();
                if !config_volumes.contains(&m.destination) {
                    config_volumes.push(m.destination.clone());
                }
            }
            if m.kind == "volume" {
                m.source = self.volume_data(ns, &m.name).to_string_lossy().into_owned();
            }
        }
        config_volumes.sort();
        Ok(Planned {
            points,
            config_volumes,
            inspect_mounts: req.mounts.iter().map(mount_doc).collect(),
        })
    }

    /// Creates what a new container's mounts need: missing volumes and -v
    /// host directories. The volumes made here are added to `made`, for the
    /// caller to remove if the container cannot be created.
    pub(crate) async fn make_mounts(
        &self,
        ns: &str,
        points: &[MountPoint],
        made: &mut Vec<String>,
    ) -> Result<()> {
        let _ops = self.volume_ops.lock().await;
        for m in points {
            match m.kind.as_str() {
                "volume" => {
                    let mut labels = m.volume_labels.clone();
                    if m.anonymous {
                        labels.insert(crate::volumes::ANONYMOUS_LABEL.into(), String::new());
                    }
                    let (_, new) = self
                        .create_volume_locked(
                            ns,
                            &m.name,
                            "local",
                            labels,
                            m.volume_options.clone(),
                            m.anonymous,
                        )
                        .await?;
                    if new {
                        made.push(m.name.clone());
                    }
                    self.ensure_volume_mounted(ns, &m.name)?;
                }
                "bind" => {
                    let p = std::path::Path::new(&m.source);
                    if m.create_source && std::fs::symlink_metadata(p).is_err() {
                        std::fs::create_dir_all(p).map_err(|e| {
                            Error::InvalidArgument(format!(
                                "error while creating mount source path '{}': {e}",
                                m.source
                            ))
                        })?;
                    }
                    check_propagation(&m.source, &m.propagation)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes the volumes a failed create made (its record is gone).
    pub(crate) async fn drop_volumes(&self, ns: &str, names: &[String]) {
        let _ops = self.volume_ops.lock().await;
        for n in names {
            if let Err(e) = self.remove_volume_locked(ns, n, true).await {
                tracing::warn!(volume = %n, "cannot remove the volume again: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        assert_eq!(clean_path("/a//b/./c/"), "/a/b/c");
        assert_eq!(clean_path("/a/../../b"), "/b");
        assert_eq!(clean_path("/"), "/");
        assert_eq!(clean_path("rel/x"), "rel/x");
    }

    #[test]
    fn binds() {
        let m = parse_bind("/srv/data:/data:ro").unwrap();
        assert_eq!(
            (m.kind.as_str(), m.source.as_str(), m.rw),
            ("bind", "/srv/data", false)
        );
        assert_eq!(m.propagation, "rprivate");
        assert!(m.create_source && !m.copy_up);
        let m = parse_bind("db:/var/lib/db").unwrap();
        assert_eq!(
            (m.kind.as_str(), m.name.as_str(), m.rw),
            ("volume", "db", true)
        );
        assert!(m.copy_up && !m.anonymous);
        let m = parse_bind("db:/x:nocopy").unwrap();
        assert!(!m.copy_up);
        let m = parse_bind("/scratch").unwrap();
        assert!(m.anonymous && m.kind == "volume");
        let m = parse_bind("/scratch:ro").unwrap();
        assert!(m.anonymous && !m.rw);
        let m = parse_bind("/a:/b:rshared,rw").unwrap();
        assert_eq!(m.propagation, "rshared");
        for (bad, why) in [
            ("", "invalid volume specification"),
            ("a:b:c:d", "invalid volume specification"),
            ("./rel:/x", "use absolute path"),
            ("data:rel", "invalid volume specification"),
            ("/a:/b:bogus", "invalid mode: bogus"),
            ("vol:/b:rshared", "propagation is for bind"),
            ("/a:/", "destination can't be '/'"),
            ("/a::/b", "invalid volume specification"),
        ] {
            let e = parse_bind(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn mounts() {
        let spec = |t: &str, s: &str, d: &str| MountSpec {
            r#type: t.into(),
            source: s.into(),
            target: d.into(),
            ..Default::default()
        };
        let m = parse_mount(&spec("tmpfs", "", "/t")).unwrap();
        assert_eq!(m.tmpfs_options, vec!["mode=1777".to_string()]);
        let m = parse_mount(&MountSpec {
            tmpfs_size: 1 << 20,
            tmpfs_mode: 0o700,
            ..spec("tmpfs", "", "/t")
        })
        .unwrap();
        assert_eq!(
            m.tmpfs_options,
            vec!["size=1048576".to_string(), "mode=700".into()]
        );
        let m = parse_mount(&spec("", "v1", "/v")).unwrap();
        assert_eq!((m.kind.as_str(), m.name.as_str()), ("volume", "v1"));
        let m = parse_mount(&spec("bind", "/tmp", "/h")).unwrap();
        assert!(!m.create_source);
        for (bad, why) in [
            (
                spec("bind", "/no/such/dir/here", "/h"),
                "bind source path does not exist",
            ),
            (spec("bind", "rel", "/h"), "must be absolute"),
            (spec("bind", "/tmp", "rel"), "must be absolute"),
            (spec("nfs", "x", "/h"), "unknown mount type \"nfs\""),
            (spec("tmpfs", "x", "/h"), "Source must not be specified"),
            (spec("volume", "v", ""), "Target must not be empty"),
            (
                MountSpec {
                    volume_driver: "nfs".into(),
                    ..spec("volume", "v", "/h")
                },
                "plugin \"nfs\" not found",
            ),
            (
                MountSpec {
                    tmpfs_size: 5,
                    ..spec("bind", "/tmp", "/h")
                },
                "only bind options",
            ),
        ] {
            let e = parse_mount(&bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn tmpfs_and_volumes_from() {
        let m = parse_tmpfs("/run", "size=64m,mode=1770").unwrap();
        assert_eq!(
            m.tmpfs_options,
            vec![format!("size={}", 64 << 20), "mode=1770".into()]
        );
        assert!(parse_tmpfs("run", "").is_err());
        assert!(parse_tmpfs("/run", "size=lots").is_err());
        assert!(parse_tmpfs("/run", "mode=9").is_err());
        assert!(parse_tmpfs("/run", "bogus").is_err());
        assert_eq!(parse_volumes_from("db").unwrap(), ("db".into(), None));
        assert_eq!(
            parse_volumes_from("db:ro").unwrap(),
            ("db".into(), Some(false))
        );
        assert!(parse_volumes_from("db:xx").is_err());
        assert!(parse_volumes_from("").is_err());
    }

    #[test]
    fn mount_holding_a_path() {
        let info = "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
                    30 27 0:5 / /srv rw shared:7 - tmpfs t rw\n\
                    31 30 0:6 / /srv/a rw master:7 - tmpfs t rw\n";
        let (mp, f) = mount_of("/srv/a/b", info).unwrap();
        assert_eq!((mp.as_str(), f), ("/srv/a", vec!["master:7".to_string()]));
        let (mp, f) = mount_of("/srv/ab", info).unwrap();
        assert_eq!((mp.as_str(), f), ("/srv", vec!["shared:7".to_string()]));
        let (mp, f) = mount_of("/etc", info).unwrap();
        assert_eq!((mp.as_str(), f.len()), ("/", 0));
    }

    #[test]
    fn planning() {
        let own = vec![
            parse_bind("/a:/data/sub").unwrap(),
            parse_bind("vv:/data").unwrap(),
        ];
        let inherited = vec![
            parse_bind("ww:/data").unwrap(),
            parse_bind("w2:/other").unwrap(),
        ];
        let p = plan(own, inherited, &["/data".into(), "/cache".into()]).unwrap();
        let dests: Vec<&str> = p.iter().map(|m| m.destination.as_str()).collect();
        assert_eq!(dests, vec!["/cache", "/data", "/other", "/data/sub"]);
        assert_eq!(p[1].name, "vv");
        assert!(p[0].anonymous);
        let e = plan(
            vec![parse_bind("aa:/x").unwrap(), parse_bind("/b:/x/").unwrap()],
            vec![],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("Duplicate mount point: /x"), "{e}");
    }
}
