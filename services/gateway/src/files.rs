//! The ContainerFiles service: cp in and out, diff, export and commit, on
//! running and stopped containers.
//!
//! Reads use a read-only overlay of the container's snapshot (its upper dir
//! stacked as the top lower dir) mounted on a private temp dir, so nothing
//! the runtime mounts (/proc, /sys) is seen and a running container is not
//! disturbed. Writes go through `/proc/<pid>/root` for a running container
//! (its own view) and through its read-write overlay mounted the same way
//! for a stopped one. Paths are always resolved inside that root (see
//! `rootfs`).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_common::{reference, request};
use berth_proto::content::v1::WriteRequest;
use berth_proto::gateway::v1::container_files_server::ContainerFiles;
use berth_proto::gateway::v1::{
    copy_from_response, copy_to_request, Change, CommitRequest, CommitResponse, ContainerRef,
    CopyFromRequest, CopyFromResponse, CopyToRequest, DataChunk, DiffResponse, Empty, PathStat,
};
use berth_proto::snapshots::v1::MountsRequest;
use berth_proto::types::v1::{Descriptor, Mount};
use nix::fcntl::OFlag;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::container::ContainerRecord;
use crate::error::{Error, Result};
use crate::images::familiar;
use crate::rootfs::{self, WalkOpts};
use crate::Inner;

/// A mount on a private temp dir, undone on drop.
struct TempMount {
    dir: PathBuf,
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH) {
            warn!(dir = %self.dir.display(), "unmounting container root: {e}");
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Unmounts and removes temp roots a crashed gateway left behind.
pub(crate) fn cleanup_stale_mounts(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root.join("tmp")) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with("files-") {
            let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// A container's root opened for reading or writing.
struct Root {
    fd: OwnedFd,
    _mount: Option<TempMount>,
}

fn overlay_dirs(mounts: &[Mount]) -> Result<(PathBuf, Vec<PathBuf>)> {
    let m = mounts
        .iter()
        .find(|m| m.r#type == "overlay")
        .ok_or_else(|| Error::Internal("the container's snapshot is not an overlay".into()))?;
    let mut upper = None;
    let mut lowers = Vec::new();
    for o in &m.options {
        if let Some(u) = o.strip_prefix("upperdir=") {
            upper = Some(PathBuf::from(u));
        } else if let Some(l) = o.strip_prefix("lowerdir=") {
            lowers.extend(l.split(':').map(PathBuf::from));
        }
    }
    let upper =
        upper.ok_or_else(|| Error::Internal("the container's snapshot has no upper dir".into()))?;
    Ok((upper, lowers))
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Internal(format!("{what}: {e}"))
}

impl Inner {
    pub(crate) async fn snapshot_mounts(
        &self,
        ns: &str,
        rec: &ContainerRecord,
    ) -> Result<Vec<Mount>> {
        Ok(self
            .snapshots
            .clone()
            .mounts(request(
                ns,
                MountsRequest {
                    key: rec.snapshot_key.clone(),
                },
            ))
            .await
            .map_err(Error::service("snapshots"))?
            .into_inner()
            .mounts)
    }

    /// Opens the container's root: read-only view, or writable.
    async fn open_root(&self, ns: &str, rec: &ContainerRecord, write: bool) -> Result<Root> {
        if write && rec.state.running() && rec.state.pid > 0 {
            let p = PathBuf::from(format!("/proc/{}/root", rec.state.pid));
            let fd = rootfs::open_dir(&p).map_err(io_err("opening the container's root"))?;
            // The pid must still be the container's (not reused after an
            // exit), and its root can never be the host's.
            let same = self
                .get(ns, &rec.id)
                .is_some_and(|c| c.state.running() && c.state.pid == rec.state.pid);
            let st = nix::sys::stat::fstat(&fd)
                .map_err(|e| Error::Internal(format!("stat of the container's root: {e}")))?;
            let host = nix::sys::stat::stat("/")
                .map_err(|e| Error::Internal(format!("stat of /: {e}")))?;
            if !same || (st.st_dev == host.st_dev && st.st_ino == host.st_ino) {
                return Err(Error::FailedPrecondition(format!(
                    "container {} is changing state; try again",
                    rec.id
                )));
            }
            return Ok(Root { fd, _mount: None });
        }
        if write && (rec.state.running() || rec.state.status == "restarting") {
            return Err(Error::FailedPrecondition(format!(
                "container {} is changing state; try again",
                rec.id
            )));
        }
        let mounts = self.snapshot_mounts(ns, rec).await?;
        let (upper, lowers) = overlay_dirs(&mounts)?;
        let data = if write {
            let m = mounts.iter().find(|m| m.r#type == "overlay");
            m.map(|m| {
                m.options
                    .iter()
                    .filter(|o| *o != "rw" && *o != "ro")
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
        } else {
            let all: Vec<String> = std::iter::once(&upper)
                .chain(lowers.iter())
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            format!("lowerdir={}", all.join(":"))
        };
        let base = self.root.join("tmp");
        std::fs::create_dir_all(&base).map_err(Error::io(format!("create {}", base.display())))?;
        let dir = base.join(format!("files-{}", &crate::container::new_id()[..16]));
        std::fs::create_dir(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        use nix::mount::{mount, MsFlags};
        let mut flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
        if !write {
            flags |= MsFlags::MS_RDONLY;
        }
        if let Err(e) = mount(
            Some("overlay"),
            &dir,
            Some("overlay"),
            flags,
            Some(data.as_str()),
        ) {
            let _ = std::fs::remove_dir(&dir);
            return Err(Error::Internal(format!(
                "mounting the container's file system: {e}"
            )));
        }
        let guard = TempMount { dir: dir.clone() };
        let _ = mount(
            None::<&str>,
            &dir,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        );
        let fd = rootfs::open_dir(&dir).map_err(io_err("opening the container's root"))?;
        Ok(Root {
            fd,
            _mount: Some(guard),
        })
    }

    /// Writes `data` as a blob to berth-content and returns its descriptor.
    /// Stores `data` as a blob held by `lease`.
    /// Docker's copy-up: fills the volume directory `data`, when it is
    /// empty, with what the container's image has at `dest` (resolved
    /// inside the container's root, so a symlink in the image cannot point
    /// it at a host path): files, owners, modes, times and links; and gives
    /// `data` the owner and mode of that directory. Nothing when `dest` is
    /// not a directory in the image.
    pub(crate) async fn fill_volume(
        &self,
        ns: &str,
        rec: &ContainerRecord,
        dest: &str,
        data: &Path,
    ) -> Result<()> {
        let root = self.open_root(ns, rec, false).await?;
        let (dest, data) = (dest.to_string(), data.to_path_buf());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let src = match rootfs::open_in_root(
                &root.fd,
                Path::new(&dest),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            ) {
                Ok(fd) => fd,
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENOTDIR) =>
                {
                    return Ok(())
                }
                Err(e) => return Err(e),
            };
            if std::fs::read_dir(&data)?.next().is_some() {
                return Ok(()); // not empty: left as it is
            }
            let st = nix::sys::stat::fstat(&src).map_err(std::io::Error::from)?;
            std::os::unix::fs::chown(&data, Some(st.st_uid), Some(st.st_gid))?;
            std::fs::set_permissions(
                &data,
                std::os::unix::fs::PermissionsExt::from_mode(st.st_mode & 0o7777),
            )?;
            let (reader, writer) = std::io::pipe()?;
            let volume = rootfs::open_dir(&data)?;
            std::thread::scope(|s| {
                let archiver = s.spawn(|| {
                    let mut b = tar::Builder::new(writer);
                    b.follow_symlinks(false);
                    let opts = WalkOpts {
                        oci_whiteouts: false,
                        skip_mount_points: false,
                    };
                    rootfs::append_children(&mut b, &src, Path::new("."), Path::new(&dest), opts)?;
                    b.into_inner()?.flush()
                });
                let x = rootfs::Extract {
                    root: &volume,
                    dir: PathBuf::from("/"),
                    keep_owner: true,
                    no_overwrite_dir_non_dir: false,
                };
                let extracted = rootfs::extract(&x, reader);
                let archived = archiver
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("archiver panicked")));
                extracted.and(archived)
            })?;
            drop(root);
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(format!("copy-up task: {e}")))?
        .map_err(|e| Error::Internal(format!("copying the image's files into the volume: {e}")))
    }

    pub(crate) async fn write_blob(
        &self,
        ns: &str,
        media_type: &str,
        data: Vec<u8>,
        lease: &str,
    ) -> Result<Descriptor> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
        let size = data.len() as i64;
        let r#ref = format!("commit-{}", &digest[7..23]);
        let mut msgs = Vec::new();
        let mut offset = 0usize;
        const PART: usize = 1 << 20;
        loop {
            let end = (offset + PART).min(data.len());
            let last = end == data.len();
            msgs.push(WriteRequest {
                r#ref: r#ref.clone(),
                expected: digest.clone(),
                total: size,
                offset: offset as i64,
                data: bytes::Bytes::copy_from_slice(&data[offset..end]),
                commit: last,
                labels: Default::default(),
                lease: lease.to_string(),
            });
            offset = end;
            if last {
                break;
            }
        }
        let resp = self
            .content
            .clone()
            .write(request(ns, tokio_stream::iter(msgs)))
            .await
            .map_err(Error::service("content"))?
            .into_inner();
        if resp.digest != digest {
            return Err(Error::Internal(format!(
                "content stored {} for a blob of digest {digest}",
                resp.digest
            )));
        }
        Ok(Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            annotations: Default::default(),
        })
    }

    async fn commit_container(&self, ns: &str, req: CommitRequest) -> Result<String> {
        let rec = self.find(ns, &req.id)?;
        // docker commit --pause (the default): freeze the processes so the
        // layer is a consistent picture, and thaw them whatever happens.
        if !(req.pause && rec.state.status == "running") {
            return self.commit_leased(ns, &rec, req).await;
        }
        self.pause_container(ns, &rec).await?;
        let result = self.commit_leased(ns, &rec, req).await;
        let thawed = match self.find(ns, &rec.id) {
            Ok(now) if now.state.status == "paused" => self.unpause_container(ns, &now).await,
            _ => Ok(()),
        };
        let id = result?;
        thawed?;
        Ok(id)
    }

    /// [`Inner::commit_changes`] with its blobs held by a lease until the
    /// image is recorded.
    async fn commit_leased(
        &self,
        ns: &str,
        rec: &ContainerRecord,
        req: CommitRequest,
    ) -> Result<String> {
        let lease = self.new_lease("commit").await?;
        let r = self.commit_changes(ns, rec, req, &lease).await;
        self.end_lease(&lease).await;
        r
    }

    async fn commit_changes(
        &self,
        ns: &str,
        rec: &ContainerRecord,
        req: CommitRequest,
        lease: &str,
    ) -> Result<String> {
        let target = if req.reference.is_empty() {
            None
        } else {
            let r = reference::parse(&req.reference)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            if r.digest().is_some() {
                return Err(Error::InvalidArgument(
                    "refusing to create a tag with a digest reference".into(),
                ));
            }
            Some(r.full())
        };
        let changes = apply_changes(&req.changes)?;
        let (image, _) = self.resolve_image(ns, &rec.image_id).await?;
        // The layer: the upper dir with whiteouts in OCI form.
        let mounts = self.snapshot_mounts(ns, rec).await?;
        let (upper, _) = overlay_dirs(&mounts)?;
        let layer = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let fd = nix::fcntl::open(
                &upper,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            let mut b = tar::Builder::new(Vec::new());
            let opts = WalkOpts {
                oci_whiteouts: true,
                skip_mount_points: true,
            };
            rootfs::append_children(&mut b, &fd, Path::new(""), Path::new("/"), opts)?;
            b.into_inner()
        })
        .await
        .map_err(|e| Error::Internal(format!("commit: {e}")))?
        .map_err(io_err("archiving the container's changes"))?;
        let docker_types = image.manifest.media_type.contains("docker");
        let layer_type = if docker_types {
            "application/vnd.docker.image.rootfs.diff.tar"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        let layer_desc = self.write_blob(ns, layer_type, layer, lease).await?;

        let now = berth_common::time::now_rfc3339();
        let mut config = image.config.clone();
        {
            let c = &mut config["config"];
            if !c.is_object() {
                *c = json!({});
            }
            c["Env"] = json!(rec.config.env);
            c["Cmd"] = json!(rec.config.cmd);
            c["Entrypoint"] = json!(rec.config.entrypoint);
            c["WorkingDir"] = json!(rec.config.working_dir);
            c["User"] = json!(rec.config.user);
            c["Labels"] = json!(rec.config.labels);
            for (k, v) in changes {
                match k {
                    "__env" => {
                        let mut env = rec.config.env.clone();
                        for e in v.as_array().into_iter().flatten().filter_map(Value::as_str) {
                            let key = e.split_once('=').map_or(e, |(k, _)| k);
                            env.retain(|x| x.split_once('=').map_or(x.as_str(), |(k, _)| k) != key);
                            env.push(e.to_string());
                        }
                        c["Env"] = json!(env);
                    }
                    "__labels" | "__volumes" => {
                        let key = if k == "__labels" { "Labels" } else { "Volumes" };
                        if !c[key].is_object() {
                            c[key] = json!({});
                        }
                        if let (Some(l), Some(new)) = (c[key].as_object_mut(), v.as_object()) {
                            l.extend(new.clone());
                        }
                    }
                    _ => c[k] = v,
                }
            }
        }
        config["created"] = json!(now);
        if !req.author.is_empty() {
            config["author"] = json!(req.author);
        }
        if !config["rootfs"].is_object() {
            config["rootfs"] = json!({"type": "layers", "diff_ids": []});
        }
        match config["rootfs"]["diff_ids"].as_array_mut() {
            Some(a) => a.push(json!(layer_desc.digest)),
            None => config["rootfs"]["diff_ids"] = json!([layer_desc.digest]),
        }
        let mut hist = json!({"created": now, "created_by": rec.command_line()});
        if !req.author.is_empty() {
            hist["author"] = json!(req.author);
        }
        if !req.comment.is_empty() {
            hist["comment"] = json!(req.comment);
        }
        match config["history"].as_array_mut() {
            Some(h) => h.push(hist),
            None => config["history"] = json!([hist]),
        }
        let config_type = if docker_types {
            "application/vnd.docker.container.image.v1+json"
        } else {
            "application/vnd.oci.image.config.v1+json"
        };
        let config_bytes =
            serde_json::to_vec(&config).map_err(|e| Error::Internal(e.to_string()))?;
        let config_desc = self
            .write_blob(ns, config_type, config_bytes, lease)
            .await?;

        let mut manifest: Value =
            serde_json::from_slice(&self.read_blob(ns, &image.manifest.digest).await?)
                .map_err(|e| Error::Internal(format!("manifest is not JSON: {e}")))?;
        let d =
            |d: &Descriptor| json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size});
        manifest["config"] = d(&config_desc);
        match manifest["layers"].as_array_mut() {
            Some(l) => l.push(d(&layer_desc)),
            None => manifest["layers"] = json!([d(&layer_desc)]),
        }
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
        let manifest_desc = self
            .write_blob(ns, &image.manifest.media_type, manifest_bytes, lease)
            .await?;
        let info = self.image_info(ns, &manifest_desc).await?;
        self.ensure_unpacked(ns, &info).await?;
        self.record_image(
            ns,
            target.as_deref().unwrap_or(""),
            &manifest_desc,
            Default::default(),
        )
        .await?;
        let mut attrs = BTreeMap::new();
        attrs.insert("comment".to_string(), req.comment.clone());
        attrs.insert("imageID".to_string(), info.id.clone());
        attrs.insert(
            "imageRef".to_string(),
            target.as_deref().map(familiar).unwrap_or_default(),
        );
        attrs.insert("name".to_string(), rec.name.clone());
        self.emit(ns, "container", "commit", &rec.id, attrs);
        info!(id = %rec.id, image = %info.id, "committed container");
        Ok(info.id.clone())
    }
}

/// Commit's `-c` instructions (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL,
/// EXPOSE, STOPSIGNAL) as config fields to set. ENV and LABEL are merged
/// by the caller's order (later wins).
fn apply_changes(changes: &[String]) -> Result<Vec<(&'static str, Value)>> {
    let mut out: Vec<(&'static str, Value)> = Vec::new();
    let mut env: Option<Vec<String>> = None;
    let mut labels: Option<serde_json::Map<String, Value>> = None;
    let mut volumes: Option<serde_json::Map<String, Value>> = None;
    let argv = |rest: &str| -> Value {
        match serde_json::from_str::<Vec<String>>(rest) {
            Ok(v) => json!(v),
            Err(_) => json!(["/bin/sh", "-c", rest]),
        }
    };
    for c in changes {
        let c = c.trim();
        let (inst, rest) = c.split_once(char::is_whitespace).unwrap_or((c, ""));
        let rest = rest.trim();
        match inst.to_ascii_uppercase().as_str() {
            "CMD" => out.push(("Cmd", argv(rest))),
            "ENTRYPOINT" => out.push(("Entrypoint", argv(rest))),
            "WORKDIR" => out.push(("WorkingDir", json!(rest))),
            "USER" => out.push(("User", json!(rest))),
            "STOPSIGNAL" => out.push(("StopSignal", json!(rest))),
            "ENV" => {
                let e = env.get_or_insert_with(Vec::new);
                if let Some((k, v)) = rest.split_once('=') {
                    e.push(format!("{k}={}", v.trim_matches('"')));
                } else if let Some((k, v)) = rest.split_once(char::is_whitespace) {
                    e.push(format!("{k}={}", v.trim()));
                } else {
                    return Err(Error::InvalidArgument(format!(
                        "ENV must have two arguments: {c}"
                    )));
                }
            }
            "LABEL" => {
                let l = labels.get_or_insert_with(Default::default);
                let (k, v) = rest.split_once('=').ok_or_else(|| {
                    Error::InvalidArgument(format!("LABEL must be KEY=VALUE: {c}"))
                })?;
                l.insert(k.trim_matches('"').to_string(), json!(v.trim_matches('"')));
            }
            "EXPOSE" => {
                let ports: serde_json::Map<String, Value> = rest
                    .split_whitespace()
                    .map(|p| {
                        let p = if p.contains('/') {
                            p.to_string()
                        } else {
                            format!("{p}/tcp")
                        };
                        (p, json!({}))
                    })
                    .collect();
                out.push(("ExposedPorts", Value::Object(ports)));
            }
            "VOLUME" => {
                // VOLUME ["/a", "/b"] or VOLUME /a /b
                let paths = serde_json::from_str::<Vec<String>>(rest)
                    .unwrap_or_else(|_| rest.split_whitespace().map(String::from).collect());
                if paths.is_empty() || paths.iter().any(|p| !p.starts_with('/')) {
                    return Err(Error::InvalidArgument(format!(
                        "VOLUME needs absolute paths: {c}"
                    )));
                }
                let v = volumes.get_or_insert_with(Default::default);
                for p in paths {
                    v.insert(p, json!({}));
                }
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "{other} is not a valid change command"
                )))
            }
        }
    }
    if let Some(v) = volumes {
        out.push(("__volumes", Value::Object(v)));
    }
    if let Some(e) = env {
        out.push(("__env", json!(e)));
    }
    if let Some(l) = labels {
        out.push(("__labels", Value::Object(l)));
    }
    Ok(out)
}

type Stream<T> = ReceiverStream<std::result::Result<T, Status>>;

/// Serves `berth.gateway.v1.ContainerFiles`.
pub struct FilesApi(pub(crate) Arc<Inner>);

fn not_found_in(path: &str, c: &str) -> Error {
    Error::NotFound(format!("Could not find the file {path} in container {c}"))
}

#[tonic::async_trait]
impl ContainerFiles for FilesApi {
    type CopyFromStream = Stream<CopyFromResponse>;

    async fn copy_from(
        &self,
        req: Request<CopyFromRequest>,
    ) -> std::result::Result<Response<Self::CopyFromStream>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.into_inner();
        let rec = self.0.find(&ns, &r.id)?;
        let root = self.0.open_root(&ns, &rec, false).await?;
        let (parent_path, name) = rootfs::split(&r.path);
        let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        let parent = rootfs::open_in_root(&root.fd, &parent_path, dir_flags).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) {
                not_found_in(&r.path, &r.id)
            } else {
                Error::Internal(format!("{}: {e}", r.path))
            }
        })?;
        let stat = match &name {
            Some(n) => rootfs::lstat_at(&parent, n).map_err(|_| not_found_in(&r.path, &r.id))?,
            None => nix::sys::stat::fstat(&parent)
                .map_err(|e| Error::Internal(format!("{}: {e}", r.path)))?,
        };
        let link_target = match &name {
            Some(n) if stat.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                nix::fcntl::readlinkat(&parent, n.as_os_str())
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default()
            }
            _ => String::new(),
        };
        let base_name = name
            .as_ref()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| ".".into());
        let (tx, rx) = mpsc::channel(8);
        let first = CopyFromResponse {
            payload: Some(copy_from_response::Payload::Stat(PathStat {
                name: base_name.clone(),
                size: stat.st_size,
                mode: stat.st_mode,
                mtime: chrono::DateTime::from_timestamp(stat.st_mtime, 0)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default(),
                link_target,
            })),
        };
        let _ = tx.send(Ok(first)).await;
        let cpath = parent_path.join(name.clone().unwrap_or_default());
        tokio::task::spawn_blocking(move || {
            let _root = root; // keeps the mount until the archive is done
            let errs = tx.clone();
            let w = rootfs::ChunkWriter::new(tx, |d| {
                Ok(CopyFromResponse {
                    payload: Some(copy_from_response::Payload::Data(d)),
                })
            });
            let mut b = tar::Builder::new(w);
            b.follow_symlinks(false);
            let opts = WalkOpts {
                oci_whiteouts: false,
                skip_mount_points: false,
            };
            let res = match &name {
                Some(n) => rootfs::append_entry(&mut b, &parent, n, Path::new(n), &cpath, opts),
                None => rootfs::append_children(&mut b, &parent, Path::new("."), &cpath, opts),
            }
            .and_then(|_| b.into_inner())
            .and_then(|mut w| w.flush());
            if let Err(e) = res {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    let _ = errs.blocking_send(Err(Status::internal(format!(
                        "archiving {}: {e}",
                        cpath.display()
                    ))));
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn copy_to(
        &self,
        req: Request<Streaming<CopyToRequest>>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let mut stream = req.into_inner();
        let header = match stream.message().await? {
            Some(CopyToRequest {
                payload: Some(copy_to_request::Payload::Header(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of CopyTo must be its header",
                ))
            }
        };
        let rec = self.0.find(&ns, &header.id)?;
        if rec.host_config.read_only {
            return Err(
                Error::FailedPrecondition("container rootfs is marked read-only".into()).into(),
            );
        }
        let root = self.0.open_root(&ns, &rec, true).await?;
        let dir = PathBuf::from(if header.path.is_empty() {
            "/"
        } else {
            header.path.as_str()
        });
        match rootfs::open_in_root(&root.fd, &dir, OFlag::O_PATH) {
            Ok(fd) => {
                let st = nix::sys::stat::fstat(&fd)
                    .map_err(|e| Status::internal(format!("{}: {e}", dir.display())))?;
                if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                    return Err(Status::invalid_argument(format!(
                        "extraction point is not a directory: {}",
                        header.path
                    )));
                }
            }
            Err(_) => return Err(not_found_in(&header.path, &header.id).into()),
        }
        let (tx, rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(8);
        let keep_owner = header.copy_uid_gid;
        let no_overwrite = header.no_overwrite_dir_non_dir;
        let work = tokio::task::spawn_blocking(move || {
            let x = rootfs::Extract {
                root: &root.fd,
                dir,
                keep_owner,
                no_overwrite_dir_non_dir: no_overwrite,
            };
            let res = rootfs::extract(&x, rootfs::ChunkReader::new(rx));
            drop(root);
            res
        });
        loop {
            match stream.message().await {
                Ok(Some(CopyToRequest {
                    payload: Some(copy_to_request::Payload::Data(d)),
                })) => {
                    if tx.send(Ok(d)).await.is_err() {
                        break; // the extractor stopped: its error says why
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(s) => {
                    let _ = tx
                        .send(Err(std::io::Error::other(format!(
                            "stream failed: {}",
                            s.message()
                        ))))
                        .await;
                    break;
                }
            }
        }
        drop(tx);
        work.await
            .map_err(|e| Status::internal(format!("copy: {e}")))?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::InvalidData => {
                    Status::invalid_argument(e.to_string())
                }
                _ => Status::internal(format!("extracting into {}: {e}", header.path)),
            })?;
        Ok(Response::new(Empty {}))
    }

    async fn diff(
        &self,
        req: Request<ContainerRef>,
    ) -> std::result::Result<Response<DiffResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let rec = self.0.find(&ns, &req.get_ref().id)?;
        let mounts = self.0.snapshot_mounts(&ns, &rec).await?;
        let (upper, lowers) = overlay_dirs(&mounts)?;
        let changes = tokio::task::spawn_blocking(move || rootfs::diff(&upper, &lowers))
            .await
            .map_err(|e| Status::internal(format!("diff: {e}")))?
            .map_err(|e| Status::internal(format!("diff: {e}")))?;
        Ok(Response::new(DiffResponse {
            changes: changes
                .into_iter()
                .map(|(k, path)| Change {
                    kind: k as i32,
                    path,
                })
                .collect(),
        }))
    }

    type ExportStream = Stream<DataChunk>;

    async fn export(
        &self,
        req: Request<ContainerRef>,
    ) -> std::result::Result<Response<Self::ExportStream>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let rec = self.0.find(&ns, &req.get_ref().id)?;
        let root = self.0.open_root(&ns, &rec, false).await?;
        let (tx, rx) = mpsc::channel(8);
        let inner = self.0.clone();
        let id = rec.id.clone();
        tokio::task::spawn_blocking(move || {
            let errs = tx.clone();
            let w = rootfs::ChunkWriter::new(tx, |data| Ok(DataChunk { data }));
            let mut b = tar::Builder::new(w);
            let opts = WalkOpts {
                oci_whiteouts: false,
                skip_mount_points: false,
            };
            let res =
                rootfs::append_children(&mut b, &root.fd, Path::new(""), Path::new("/"), opts)
                    .and_then(|_| b.into_inner())
                    .and_then(|mut w| w.flush());
            drop(root);
            match res {
                Ok(()) => inner.emit_container(&ns, &id, "export", &[]),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => {
                    let _ = errs.blocking_send(Err(Status::internal(format!("export: {e}"))));
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn commit(
        &self,
        req: Request<CommitRequest>,
    ) -> std::result::Result<Response<CommitResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let id = self.0.commit_container(&ns, req.into_inner()).await?;
        Ok(Response::new(CommitResponse { id }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes() {
        let c = apply_changes(&[
            "CMD [\"echo\", \"hi\"]".into(),
            "ENTRYPOINT /bin/app -x".into(),
            "ENV A=1".into(),
            "LABEL k=v".into(),
            "WORKDIR /srv".into(),
        ])
        .unwrap();
        assert_eq!(c[0], ("Cmd", json!(["echo", "hi"])));
        assert_eq!(
            c[1],
            ("Entrypoint", json!(["/bin/sh", "-c", "/bin/app -x"]))
        );
        assert_eq!(c[2], ("WorkingDir", json!("/srv")));
        assert!(apply_changes(&["RUN x".into()]).is_err());
    }
}
