//! Volumes, as docker's `local` driver keeps them: a directory
//! `<root>/volumes/<ns>/<name>/_data` per volume, its record in the
//! gateway's store.
//!
//! With options a volume is a file system of its own, mounted on `_data`
//! when it is created and again when the gateway starts: `type`, `device`
//! and `o` as mount(8) takes them (`type=tmpfs o=size=64m`), or berth's
//! `size=512m`, an ext4 image of that size on a loop device, so the limit
//! is enforced (ENOSPC) and `df` in a container shows it.
//!
//! Creation is crash-safe: the volume is made under a temporary name,
//! renamed into place and only then recorded; a directory without a record
//! (a crash in between) is removed when the gateway starts, so a volume
//! exists whole or not at all. Removal deletes the record first.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_proto::gateway::v1::volumes_server::Volumes;
use berth_proto::gateway::v1::{
    CreateVolumeRequest, Empty, ListVolumesRequest, ListVolumesResponse, PruneVolumesRequest,
    PruneVolumesResponse, RemoveVolumeRequest, StringList, Volume, VolumeRef,
};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::Inner;

/// The label docker puts on anonymous volumes.
pub(crate) const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";
/// The smallest `size` of a size-limited volume (an ext4 file system).
const MIN_DISK_SIZE: u64 = 2 << 20;

/// A volume as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeRecord {
    pub namespace: String,
    pub name: String,
    pub driver: String,
    pub created_at: String,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    /// Made for one container (`-v /path`, an image's VOLUME); removed
    /// with it by `rm -v` and `--rm`, and by `volume prune` without `-a`.
    pub anonymous: bool,
}

/// What backs a volume's `_data`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Backing {
    /// A plain directory.
    Dir,
    /// A mount(2) of `device` with file system `fstype` and options `o`.
    Mount {
        fstype: String,
        device: String,
        options: String,
    },
    /// An ext4 image of `size` bytes on a loop device.
    Disk { size: u64 },
}

/// Checks docker's volume name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = name.len() >= 2
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        return Ok(());
    }
    if name.len() < 2 && name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Error::InvalidArgument(format!(
            "volume name is too short, names should be at least two alphanumeric characters: {name:?}"
        )));
    }
    Err(Error::InvalidArgument(format!(
        "\"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
    )))
}

/// Checks a volume driver name: only `local` exists.
pub(crate) fn check_driver(driver: &str) -> Result<()> {
    if driver.is_empty() || driver == "local" {
        Ok(())
    } else {
        Err(Error::NotFound(format!(
            "error looking up volume plugin {driver}: plugin \"{driver}\" not found"
        )))
    }
}

/// The backing the options of the local driver ask for.
pub(crate) fn backing(options: &BTreeMap<String, String>) -> Result<Backing> {
    for k in options.keys() {
        if !["type", "device", "o", "size"].contains(&k.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "invalid option: \"{k}\" (the local driver takes type, device, o and size)"
            )));
        }
    }
    let get = |k: &str| options.get(k).map(String::as_str).unwrap_or("");
    if let Some(size) = options.get("size") {
        if !get("type").is_empty() || !get("device").is_empty() || !get("o").is_empty() {
            return Err(Error::InvalidArgument(
                "the size option cannot be combined with type, device or o".into(),
            ));
        }
        let bytes = berth_common::units::ram_in_bytes(size)
            .map_err(|e| Error::InvalidArgument(format!("invalid size option {size:?}: {e}")))?
            as u64;
        if bytes < MIN_DISK_SIZE {
            return Err(Error::InvalidArgument(format!(
                "volume size {size} is too small: the minimum is 2MiB"
            )));
        }
        return Ok(Backing::Disk { size: bytes });
    }
    let (fstype, device, o) = (get("type"), get("device"), get("o"));
    if fstype.is_empty() && device.is_empty() && o.is_empty() {
        return Ok(Backing::Dir);
    }
    if fstype.is_empty() {
        return Err(Error::InvalidArgument(
            "missing required option: \"type\"".into(),
        ));
    }
    let device = match (device, fstype) {
        ("", "tmpfs") => "tmpfs",
        ("", _) => {
            return Err(Error::InvalidArgument(
                "missing required option: \"device\"".into(),
            ))
        }
        (d, _) => d,
    };
    Ok(Backing::Mount {
        fstype: fstype.into(),
        device: device.into(),
        options: o.into(),
    })
}

/// A new random (anonymous) volume name: 64 hex digits, as docker.
pub(crate) fn anonymous_name() -> String {
    crate::container::new_id()
}

impl Inner {
    fn volumes_dir(&self, ns: &str) -> PathBuf {
        self.root.join("volumes").join(ns)
    }

    /// The host directory holding a volume's data.
    pub(crate) fn volume_data(&self, ns: &str, name: &str) -> PathBuf {
        self.volumes_dir(ns).join(name).join("_data")
    }

    /// IDs of the containers (in `ns`) that mount volume `name`.
    pub(crate) fn volume_users(&self, ns: &str, name: &str) -> Vec<String> {
        let map = self.containers.lock().unwrap();
        let mut ids: Vec<String> = map
            .values()
            .filter(|c| c.namespace == ns)
            .filter(|c| {
                c.mount_points
                    .iter()
                    .any(|m| m.kind == "volume" && m.name == name)
            })
            .map(|c| c.id.clone())
            .collect();
        ids.sort();
        ids
    }

    fn volume_doc(&self, rec: &VolumeRecord, users: usize, size: i64) -> Volume {
        Volume {
            name: rec.name.clone(),
            driver: if rec.driver.is_empty() {
                "local".into()
            } else {
                rec.driver.clone()
            },
            mountpoint: self
                .volume_data(&rec.namespace, &rec.name)
                .to_string_lossy()
                .into_owned(),
            created_at: rec.created_at.clone(),
            labels: rec.labels.clone().into_iter().collect(),
            options: rec.options.clone().into_iter().collect(),
            scope: "local".into(),
            ref_count: users as i64,
            size,
        }
    }

    pub(crate) fn volume_record(&self, ns: &str, name: &str) -> Option<VolumeRecord> {
        self.volumes
            .lock()
            .unwrap()
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// A volume with a file system of its own must be mounted before a
    /// container uses it: mounted again here when that failed at start-up
    /// (else the container would write to the bare directory below).
    pub(crate) fn ensure_volume_mounted(&self, ns: &str, name: &str) -> Result<()> {
        let rec = self
            .volume_record(ns, name)
            .ok_or_else(|| Error::NotFound(format!("get {name}: no such volume")))?;
        let b = backing(&rec.options)?;
        let data = self.volume_data(ns, name);
        if b == Backing::Dir || is_mount_point(&data) {
            return Ok(());
        }
        mount_backing(&data, &b)
            .map_err(|e| Error::FailedPrecondition(format!("volume {name} is not available: {e}")))
    }

    /// Creates a volume (an empty name: a random one). An existing volume
    /// of the same name is returned as it is, as docker does. The caller
    /// holds `volume_ops`.
    pub(crate) async fn create_volume_locked(
        &self,
        ns: &str,
        name: &str,
        driver: &str,
        labels: BTreeMap<String, String>,
        options: BTreeMap<String, String>,
        anonymous: bool,
    ) -> Result<(VolumeRecord, bool)> {
        check_driver(driver)?;
        let name = if name.is_empty() {
            anonymous_name()
        } else {
            check_name(name)?;
            name.to_string()
        };
        if let Some(v) = self.volume_record(ns, &name) {
            return Ok((v, false));
        }
        let backing = backing(&options)?;
        let rec = VolumeRecord {
            namespace: ns.to_string(),
            name: name.clone(),
            driver: "local".into(),
            created_at: berth_common::time::now_rfc3339(),
            labels,
            options,
            anonymous,
        };
        let dir = self.volumes_dir(ns);
        let final_dir = dir.join(&name);
        let made = tokio::task::spawn_blocking({
            let dir = dir.clone();
            let final_dir = final_dir.clone();
            move || make_volume_dir(&dir, &final_dir, &backing)
        })
        .await
        .map_err(|e| Error::Internal(format!("volume create task: {e}")))?;
        made?;
        if let Err(e) = self.store.put_volume(&rec) {
            let _ = tokio::task::spawn_blocking(move || remove_volume_dir(&final_dir)).await;
            return Err(e);
        }
        self.volumes
            .lock()
            .unwrap()
            .insert((ns.to_string(), name.clone()), rec.clone());
        self.emit_volume(ns, &name, "create");
        tracing::info!(ns, volume = %name, "created volume");
        Ok((rec, true))
    }

    pub(crate) async fn create_volume(
        &self,
        ns: &str,
        name: &str,
        driver: &str,
        labels: BTreeMap<String, String>,
        options: BTreeMap<String, String>,
    ) -> Result<Volume> {
        let _ops = self.volume_ops.lock().await;
        let (rec, _) = self
            .create_volume_locked(ns, name, driver, labels, options, false)
            .await?;
        Ok(self.volume_doc(&rec, self.volume_users(&rec.namespace, &rec.name).len(), -1))
    }

    pub(crate) fn inspect_volume(&self, ns: &str, name: &str) -> Result<Volume> {
        let rec = self
            .volume_record(ns, name)
            .ok_or_else(|| Error::NotFound(format!("get {name}: no such volume")))?;
        Ok(self.volume_doc(&rec, self.volume_users(&rec.namespace, &rec.name).len(), -1))
    }

    /// Volumes in `ns` with docker's filters (dangling, name, label, driver).
    pub(crate) fn list_volumes(
        &self,
        ns: &str,
        filters: &BTreeMap<String, Vec<String>>,
        with_size: bool,
    ) -> Result<Vec<Volume>> {
        for k in filters.keys() {
            if !["dangling", "name", "label", "driver"].contains(&k.as_str()) {
                return Err(Error::InvalidArgument(format!("invalid filter '{k}'")));
            }
        }
        if let Some(bad) = filters
            .get("dangling")
            .into_iter()
            .flatten()
            .find(|v| !["true", "false", "1", "0"].contains(&v.as_str()))
        {
            return Err(Error::InvalidArgument(format!(
                "invalid filter 'dangling={bad}'"
            )));
        }
        let mut recs: Vec<VolumeRecord> = self
            .volumes
            .lock()
            .unwrap()
            .values()
            .filter(|v| v.namespace == ns)
            .cloned()
            .collect();
        recs.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = Vec::new();
        for rec in recs {
            let users = self.volume_users(ns, &rec.name).len();
            let used = users > 0;
            let keep = filters.iter().all(|(k, vals)| {
                vals.iter().any(|v| match k.as_str() {
                    "dangling" => match v.as_str() {
                        "true" | "1" => !used,
                        "false" | "0" => used,
                        _ => false,
                    },
                    "name" => rec.name.contains(v.as_str()),
                    "driver" => rec.driver == *v,
                    "label" => label_matches(&rec.labels, v),
                    _ => false,
                })
            });
            if keep {
                let size = if with_size {
                    dir_size(&self.volume_data(ns, &rec.name)) as i64
                } else {
                    -1
                };
                out.push(self.volume_doc(&rec, users, size));
            }
        }
        Ok(out)
    }

    /// Removes a volume; refused while a container uses it.
    pub(crate) async fn remove_volume(&self, ns: &str, name: &str, force: bool) -> Result<()> {
        let _ops = self.volume_ops.lock().await;
        self.remove_volume_locked(ns, name, force).await
    }

    pub(crate) async fn remove_volume_locked(
        &self,
        ns: &str,
        name: &str,
        force: bool,
    ) -> Result<()> {
        if self.volume_record(ns, name).is_none() {
            if force {
                return Ok(());
            }
            return Err(Error::NotFound(format!("get {name}: no such volume")));
        }
        let users = self.volume_users(ns, name);
        if !users.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            )));
        }
        // The record first: a crash after it leaves a directory that the
        // next start removes.
        self.store.delete_volume(ns, name)?;
        self.volumes
            .lock()
            .unwrap()
            .remove(&(ns.to_string(), name.to_string()));
        let dir = self.volumes_dir(ns).join(name);
        tokio::task::spawn_blocking(move || remove_volume_dir(&dir))
            .await
            .map_err(|e| Error::Internal(format!("volume remove task: {e}")))??;
        self.emit_volume(ns, name, "destroy");
        tracing::info!(ns, volume = %name, "removed volume");
        Ok(())
    }

    /// `volume prune`: unused volumes (anonymous ones unless `all`) that
    /// match the label filters. Returns their names and the bytes freed.
    pub(crate) async fn prune_volumes(
        &self,
        ns: &str,
        all: bool,
        filters: &BTreeMap<String, Vec<String>>,
    ) -> Result<(Vec<String>, u64)> {
        for k in filters.keys() {
            if !["label", "label!", "all"].contains(&k.as_str()) {
                return Err(Error::InvalidArgument(format!("invalid filter '{k}'")));
            }
        }
        let all = all
            || filters
                .get("all")
                .is_some_and(|v| v.iter().any(|x| x == "true" || x == "1"));
        let _ops = self.volume_ops.lock().await;
        let mut candidates: Vec<VolumeRecord> = self
            .volumes
            .lock()
            .unwrap()
            .values()
            .filter(|v| v.namespace == ns && (all || v.anonymous))
            .filter(|v| {
                filters
                    .get("label")
                    .is_none_or(|ls| ls.iter().all(|l| label_matches(&v.labels, l)))
                    && filters
                        .get("label!")
                        .is_none_or(|ls| ls.iter().all(|l| !label_matches(&v.labels, l)))
            })
            .cloned()
            .collect();
        candidates.sort_by(|a, b| a.name.cmp(&b.name));
        let mut deleted = Vec::new();
        let mut freed = 0;
        for v in candidates {
            if !self.volume_users(ns, &v.name).is_empty() {
                continue;
            }
            let size = dir_size(&self.volume_data(ns, &v.name));
            match self.remove_volume_locked(ns, &v.name, false).await {
                Ok(()) => {
                    deleted.push(v.name);
                    freed += size;
                }
                Err(e) => tracing::warn!(volume = %v.name, "prune: {e}"),
            }
        }
        Ok((deleted, freed))
    }

    /// At start-up: loads the records, removes what a crash left half-made,
    /// and mounts the volumes that have a file system of their own.
    pub(crate) fn recover_volumes(&self) -> Result<()> {
        let recs = self.store.load_volumes()?;
        let base = self.root.join("volumes");
        let mut known = std::collections::HashSet::new();
        for rec in &recs {
            known.insert((rec.namespace.clone(), rec.name.clone()));
        }
        if let Ok(namespaces) = std::fs::read_dir(&base) {
            for ns in namespaces.flatten() {
                let ns_name = ns.file_name().to_string_lossy().into_owned();
                let Ok(entries) = std::fs::read_dir(ns.path()) else {
                    continue;
                };
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !known.contains(&(ns_name.clone(), name.clone())) {
                        tracing::info!(dir = %e.path().display(), "removing an unfinished volume");
                        if let Err(err) = remove_volume_dir(&e.path()) {
                            tracing::warn!(dir = %e.path().display(), "{err}");
                        }
                    }
                }
            }
        }
        let mut map = self.volumes.lock().unwrap();
        for rec in recs {
            let data = self.volume_data(&rec.namespace, &rec.name);
            match backing(&rec.options) {
                Ok(Backing::Dir) => {}
                Ok(b) => {
                    if !is_mount_point(&data) {
                        if let Err(e) = mount_backing(&data, &b) {
                            tracing::error!(volume = %rec.name, "cannot mount the volume: {e}");
                        }
                    }
                }
                Err(e) => tracing::error!(volume = %rec.name, "bad volume options: {e}"),
            }
            map.insert((rec.namespace.clone(), rec.name.clone()), rec);
        }
        Ok(())
    }

    pub(crate) fn emit_volume(&self, ns: &str, name: &str, action: &str) {
        self.emit(
            ns,
            "volume",
            action,
            name,
            [("driver".to_string(), "local".to_string())]
                .into_iter()
                .collect(),
        );
    }
}

/// The public `Volumes` service.
pub struct VolumesApi(pub(crate) std::sync::Arc<Inner>);

fn filters(f: std::collections::HashMap<String, StringList>) -> BTreeMap<String, Vec<String>> {
    f.into_iter().map(|(k, v)| (k, v.values)).collect()
}

#[tonic::async_trait]
impl Volumes for VolumesApi {
    async fn create(
        &self,
        req: Request<CreateVolumeRequest>,
    ) -> std::result::Result<Response<Volume>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.into_inner();
        let v = self
            .0
            .create_volume(
                &ns,
                &r.name,
                &r.driver,
                r.labels.into_iter().collect(),
                r.options.into_iter().collect(),
            )
            .await?;
        Ok(Response::new(v))
    }

    async fn inspect(
        &self,
        req: Request<VolumeRef>,
    ) -> std::result::Result<Response<Volume>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        Ok(Response::new(
            self.0.inspect_volume(&ns, &req.into_inner().name)?,
        ))
    }

    async fn list(
        &self,
        req: Request<ListVolumesRequest>,
    ) -> std::result::Result<Response<ListVolumesResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let f = filters(req.into_inner().filters);
        Ok(Response::new(ListVolumesResponse {
            volumes: self.0.list_volumes(&ns, &f, false)?,
        }))
    }

    async fn remove(
        &self,
        req: Request<RemoveVolumeRequest>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.into_inner();
        self.0.remove_volume(&ns, &r.name, r.force).await?;
        Ok(Response::new(Empty {}))
    }

    async fn prune(
        &self,
        req: Request<PruneVolumesRequest>,
    ) -> std::result::Result<Response<PruneVolumesResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.into_inner();
        let (deleted, space_reclaimed) = self
            .0
            .prune_volumes(&ns, r.all, &filters(r.filters))
            .await?;
        Ok(Response::new(PruneVolumesResponse {
            deleted,
            space_reclaimed,
        }))
    }
}

/// docker's label filter: `KEY` (present) or `KEY=VALUE`.
pub(crate) fn label_matches(labels: &BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(filter),
    }
}

/// Makes `final_dir` (with `_data`, mounted per `backing`) through a
/// temporary directory in `dir`, so that it appears whole or not at all.
fn make_volume_dir(dir: &Path, final_dir: &Path, backing: &Backing) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    // Like docker's 0701: other users cannot list or reach into volumes
    // (setuid files in them must not be runnable from the host).
    private_dir(dir)?;
    if let Some(base) = dir.parent() {
        private_dir(base)?;
    }
    let tmp = dir.join(format!(".tmp-{}", &crate::container::new_id()[..16]));
    let made = (|| {
        let data = tmp.join("_data");
        std::fs::create_dir_all(&data).map_err(Error::io(format!("create {}", data.display())))?;
        if let Backing::Disk { size } = backing {
            make_ext4(&tmp.join("disk.img"), *size)?;
        }
        std::fs::rename(&tmp, final_dir).map_err(Error::io(format!(
            "rename {} to {}",
            tmp.display(),
            final_dir.display()
        )))?;
        let data = final_dir.join("_data");
        if *backing != Backing::Dir {
            mount_backing(&data, backing)?;
        }
        Ok(())
    })();
    if made.is_err() {
        let _ = remove_volume_dir(&tmp);
        let _ = remove_volume_dir(final_dir);
    }
    made
}

/// Unmounts a volume's `_data` (every mount stacked there) and deletes the
/// volume. The deletion never crosses into a mount: a volume whose
/// `_data` is a bind of a host directory (`o=bind`) loses the bind, never
/// the host's files; anything still mounted below stops it with an error.
fn remove_volume_dir(dir: &Path) -> Result<()> {
    let data = dir.join("_data");
    for _ in 0..64 {
        if !is_mount_point(&data) {
            break;
        }
        nix::mount::umount2(&data, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| Error::Internal(format!("unmount {}: {e}", data.display())))?;
    }
    if is_mount_point(&data) {
        return Err(Error::Internal(format!(
            "{} is still mounted; not removing it",
            data.display()
        )));
    }
    let mounts = mount_points();
    match remove_tree(dir, &mounts) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Internal(format!("remove {}: {e}", dir.display()))),
    }
}

fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o701))
        .map_err(Error::io(format!("chmod {}", dir.display())))
}

/// The mount points of this mount namespace.
fn mount_points() -> std::collections::HashSet<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .collect()
}

/// Deletes `path` and what is below it without following symlinks and
/// without entering a mount point (an error names it).
fn remove_tree(path: &Path, mounts: &std::collections::HashSet<PathBuf>) -> std::io::Result<()> {
    let md = std::fs::symlink_metadata(path)?;
    if !md.is_dir() {
        return std::fs::remove_file(path);
    }
    if mounts.contains(path) {
        return Err(std::io::Error::other(format!(
            "{} is a mount point",
            path.display()
        )));
    }
    for e in std::fs::read_dir(path)? {
        remove_tree(&e?.path(), mounts)?;
    }
    std::fs::remove_dir(path)
}

/// Whether `path` is a mount point of this mount namespace.
fn is_mount_point(path: &Path) -> bool {
    mount_points().contains(path)
}

/// Mounts a volume's own file system on `data`.
fn mount_backing(data: &Path, backing: &Backing) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    match backing {
        Backing::Dir => Ok(()),
        Backing::Mount {
            fstype,
            device,
            options,
        } => {
            let opts: Vec<String> = options
                .split(',')
                .filter(|o| !o.is_empty())
                .map(String::from)
                .collect();
            let parsed = berth_runtime::mount::parse_options(&opts);
            let d = parsed.data.join(",");
            mount(
                Some(device.as_str()),
                data,
                Some(fstype.as_str()),
                parsed.flags,
                (!d.is_empty()).then_some(d.as_str()),
            )
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "error while mounting volume '{}': mount {device} ({fstype}, {options}): {e}",
                    data.display()
                ))
            })
        }
        Backing::Disk { .. } => {
            let img = data
                .parent()
                .map(|d| d.join("disk.img"))
                .ok_or_else(|| Error::Internal("volume without a directory".into()))?;
            let (dev_path, dev) = loop_attach(&img)?;
            let r = mount(
                Some(dev_path.as_path()),
                data,
                Some("ext4"),
                MsFlags::empty(),
                None::<&str>,
            );
            // The loop device clears itself once unmounted (autoclear);
            // the mount holds it from here on.
            drop(dev);
            r.map_err(|e| {
                Error::Internal(format!(
                    "mount {} on {}: {e}",
                    dev_path.display(),
                    data.display()
                ))
            })?;
            // mkfs's lost+found would make a new volume look non-empty.
            let _ = std::fs::remove_dir(data.join("lost+found"));
            Ok(())
        }
    }
}

/// Makes a sparse file of `size` bytes holding an empty ext4 file system.
fn make_ext4(img: &Path, size: u64) -> Result<()> {
    let f = std::fs::File::create(img).map_err(Error::io(format!("create {}", img.display())))?;
    f.set_len(size)
        .map_err(Error::io(format!("size {}", img.display())))?;
    drop(f);
    // e2fsprogs' mkfs: writing ext4 metadata is not berth's business.
    let out = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0", "-E", "nodiscard,root_owner=0:0"])
        .arg(img)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            Error::Unavailable(format!(
                "a size-limited volume needs mkfs.ext4 (e2fsprogs): {e}"
            ))
        })?;
    if !out.status.success() {
        return Err(Error::Internal(format!(
            "mkfs.ext4 {}: {}",
            img.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LOOP_MAJOR: u32 = 7;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Attaches `img` to a free loop device (autoclear). Returns the device
/// path and an open fd that keeps it attached until something mounts it.
fn loop_attach(img: &Path) -> Result<(PathBuf, OwnedFd)> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let errno = |what: &str| {
        let what = what.to_string();
        move |e: nix::Error| Error::Internal(format!("{what}: {e}"))
    };
    let file = open(img, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(errno(&format!("open {}", img.display())))?;
    let ctl = open(
        "/dev/loop-control",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno("open /dev/loop-control"))?;
    for _ in 0..20 {
        // SAFETY: a valid fd; the request takes no argument.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(Error::Internal(format!(
                "no free loop device: {}",
                std::io::Error::last_os_error()
            )));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        if !path.exists() {
            // No udev here: make the node the kernel just allocated.
            let _ = nix::sys::stat::mknod(
                &path,
                nix::sys::stat::SFlag::S_IFBLK,
                Mode::from_bits_truncate(0o660),
                nix::sys::stat::makedev(LOOP_MAJOR as u64, n as u64),
            );
        }
        let dev = open(&path, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(errno(&format!("open {}", path.display())))?;
        let mut name = [0u8; 64];
        let shown = img.as_os_str().as_encoded_bytes();
        let len = shown.len().min(63);
        name[..len].copy_from_slice(&shown[..len]);
        let cfg = LoopConfig {
            fd: file.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_AUTOCLEAR,
                lo_file_name: name,
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: a valid fd and a pointer to a live loop_config.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &cfg) };
        if r == 0 {
            return Ok((path, dev));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(Error::Internal(format!(
                "attach {} to {}: {e}",
                img.display(),
                path.display()
            )));
        }
        // Taken by someone else meanwhile: ask again.
    }
    Err(Error::Internal("no free loop device after 20 tries".into()))
}

/// Bytes used by the files below `dir` (not following symlinks).
pub(crate) fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else {
                total += md.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn names() {
        assert!(check_name("data").is_ok());
        assert!(check_name("a.b_c-1").is_ok());
        let e = check_name("a").unwrap_err().to_string();
        assert!(e.contains("too short"), "{e}");
        let e = check_name("./data").unwrap_err().to_string();
        assert!(e.contains("use absolute path"), "{e}");
        assert!(check_name("-x").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_driver("local").is_ok());
        assert!(check_driver("").is_ok());
        let e = check_driver("nfs").unwrap_err().to_string();
        assert!(e.contains("plugin \"nfs\" not found"), "{e}");
    }

    #[test]
    fn backings() {
        assert_eq!(backing(&opts(&[])).unwrap(), Backing::Dir);
        assert_eq!(
            backing(&opts(&[("type", "tmpfs"), ("o", "size=64m")])).unwrap(),
            Backing::Mount {
                fstype: "tmpfs".into(),
                device: "tmpfs".into(),
                options: "size=64m".into()
            }
        );
        assert_eq!(
            backing(&opts(&[("size", "512m")])).unwrap(),
            Backing::Disk { size: 512 << 20 }
        );
        for (bad, why) in [
            (opts(&[("foo", "1")]), "invalid option: \"foo\""),
            (opts(&[("size", "1k")]), "too small"),
            (opts(&[("size", "x")]), "invalid size option"),
            (
                opts(&[("size", "8m"), ("type", "tmpfs")]),
                "cannot be combined",
            ),
            (
                opts(&[("o", "size=1m")]),
                "missing required option: \"type\"",
            ),
            (
                opts(&[("type", "ext4")]),
                "missing required option: \"device\"",
            ),
        ] {
            let e = backing(&bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn labels() {
        let l = opts(&[("a", "1"), ("b", "")]);
        assert!(label_matches(&l, "a"));
        assert!(label_matches(&l, "a=1"));
        assert!(!label_matches(&l, "a=2"));
        assert!(label_matches(&l, "b="));
        assert!(!label_matches(&l, "c"));
    }
}
