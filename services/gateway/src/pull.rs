//! `docker pull`: manifests (picking a platform from a list or index),
//! the config, and the layers, fetched concurrently into berth-content with
//! their digests verified as the bytes arrive.
//!
//! Each downloaded layer is unpacked while it streams, in the same pass:
//! the bytes go both to berth-content (Write) and to berth-snapshots
//! (ApplyStream) into an active snapshot prepared without a parent, so
//! layers unpack concurrently. When all are fetched they are committed in
//! order, each onto the one below it (CommitRequest.parent, a rebase that
//! gives directories the layer lacks the attributes of the parent chain),
//! with their diff IDs checked against the config.
//!
//! A layer download resumes where the content store's ingest stopped:
//! after a dropped connection (with back-off) and after a crash of the
//! daemon (the ingest is on disk, named after the blob). A layer whose
//! download resumed, or whose blob was already stored, is applied from
//! berth-content afterwards, the sequential way.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use berth_common::reference;
use berth_common::request;
use berth_proto::content::v1::{AbortRequest, StatusRequest, WriteRequest};
use berth_proto::gateway::v1::{Progress, PullRequest, RegistryAuth};
use berth_proto::snapshots::v1::{
    apply_stream_request, ApplyRequest, ApplyResponse, ApplyStreamRequest, RemoveRequest,
};
use berth_proto::types::v1::Descriptor;
use berth_registry::{media, Credentials};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};
use tonic::{Code, Status};

use crate::error::{Error, Result};
use crate::images::{familiar, go_arch};
use crate::Inner;

/// Layers fetched at the same time (docker's default is 3).
const CONCURRENT_DOWNLOADS: usize = 3;
/// Attempts at one layer when its connection keeps breaking.
const LAYER_ATTEMPTS: u32 = 5;
/// A config larger than this is refused.
const CONFIG_MAX: usize = 8 << 20;
/// Progress is reported at most every this many bytes of a layer.
const PROGRESS_STEP: u64 = 512 << 10;
/// Chunks in flight to berth-snapshots' ApplyStream per layer.
const APPLY_QUEUE: usize = 16;

/// Where registries are reached: plain-HTTP hosts and mirrors.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// host[:port] of registries allowed over plain HTTP (loopback always).
    pub insecure: Vec<String>,
    /// Mirrors per registry domain ("docker.io" -> ["http://mirror:5000"]),
    /// tried in order before the registry itself when pulling.
    pub mirrors: HashMap<String, Vec<String>>,
}

pub(crate) type ProgressTx = mpsc::Sender<std::result::Result<Progress, Status>>;

pub(crate) fn credentials(auth: Option<&RegistryAuth>) -> Credentials {
    auth.map(|a| Credentials {
        username: a.username.clone(),
        password: a.password.clone(),
        identity_token: a.identity_token.clone(),
    })
    .unwrap_or_default()
}

pub(crate) fn registry_error(e: berth_registry::Error) -> Error {
    use berth_registry::Error as R;
    match e {
        R::NotFound(m) => Error::NotFound(m),
        R::Unauthorized(m) | R::Denied(m) => Error::PermissionDenied(m),
        R::Protocol(m) => Error::InvalidArgument(m),
        e => Error::Unavailable(e.to_string()),
    }
}

/// A platform as os/arch[/variant].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: String,
}

impl Platform {
    pub fn host() -> Platform {
        Platform {
            os: "linux".into(),
            arch: go_arch().into(),
            variant: if go_arch() == "arm64" {
                "v8".into()
            } else {
                String::new()
            },
        }
    }

    pub fn parse(s: &str) -> Result<Platform> {
        if s.is_empty() {
            return Ok(Platform::host());
        }
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            Error::InvalidArgument(format!(
                "\"{s}\": unknown operating system or architecture: invalid argument"
            ))
        };
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        Ok(Platform {
            os: parts[0].to_lowercase(),
            arch: match parts[1].to_lowercase().as_str() {
                "x86_64" | "x86-64" => "amd64".into(),
                "aarch64" => "arm64".into(),
                a => a.into(),
            },
            variant: parts.get(2).map(|v| v.to_lowercase()).unwrap_or_default(),
        })
    }

    fn matches(&self, p: &Value) -> bool {
        let os = p["os"].as_str().unwrap_or("");
        let arch = p["architecture"].as_str().unwrap_or("");
        let variant = p["variant"].as_str().unwrap_or("");
        if os != self.os || arch != self.arch {
            return false;
        }
        // No variant asked: any (arm64's v8 is the default one).
        self.variant.is_empty()
            || variant == self.variant
            || (variant.is_empty() && self.arch == "arm64" && self.variant == "v8")
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

fn descriptor(v: &Value) -> Result<Descriptor> {
    let digest = v["digest"].as_str().unwrap_or("").to_string();
    reference::validate_digest(&digest)
        .map_err(|_| Error::InvalidArgument(format!("bad digest {digest:?} in manifest")))?;
    Ok(Descriptor {
        media_type: v["mediaType"].as_str().unwrap_or("").to_string(),
        digest,
        size: v["size"].as_i64().unwrap_or(-1),
        annotations: Default::default(),
    })
}

fn progress(id: &str, status: impl Into<String>) -> Progress {
    Progress {
        id: id.to_string(),
        status: status.into(),
        ..Default::default()
    }
}

fn short_digest(d: &str) -> String {
    d.trim_start_matches("sha256:").chars().take(12).collect()
}

/// The endpoint and repository a pull talks to.
struct Source {
    host: String,
    repo: String,
    /// `urls` of foreign / non-distributable layers, by digest: where the
    /// spec lets a client fetch them from.
    foreign_urls: HashMap<String, Vec<String>>,
}

impl Inner {
    /// Pulls `req.reference`, reporting progress on `tx`. Returns the image
    /// ID.
    pub(crate) async fn pull(&self, ns: &str, req: PullRequest, tx: ProgressTx) -> Result<String> {
        // Everything written is held by the pull's lease until the name
        // points at it; see gc.rs.
        let lease = self.new_lease("pull").await?;
        let r = self.pull_leased(ns, req, tx, &lease).await;
        self.end_lease(&lease).await;
        r
    }

    async fn pull_leased(
        &self,
        ns: &str,
        req: PullRequest,
        tx: ProgressTx,
        lease: &str,
    ) -> Result<String> {
        let r =
            reference::parse(&req.reference).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let platform = Platform::parse(&req.platform)?;
        let creds = credentials(req.auth.as_ref());
        let send = |p: Progress| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Ok(p)).await;
            }
        };
        let want = r
            .digest()
            .map(str::to_string)
            .or_else(|| r.tag().map(str::to_string))
            .unwrap_or_else(|| reference::DEFAULT_TAG.to_string());

        // Mirrors first, then the registry itself.
        let mut endpoints: Vec<String> = self
            .registry_options
            .mirrors
            .get(r.domain())
            .cloned()
            .unwrap_or_default();
        endpoints.push(berth_registry::endpoint_host(r.domain()).to_string());
        let mut fetched = None;
        let mut last_err = None;
        for host in &endpoints {
            match self.registry.manifest(host, r.path(), &want, &creds).await {
                Ok(m) => {
                    self.metrics.add_pull_bytes(m.0.len() as u64);
                    fetched = Some((host.clone(), m));
                    break;
                }
                Err(e) => {
                    tracing::info!(host, "manifest not fetched: {e}");
                    last_err = Some(e);
                }
            }
        }
        let Some((host, (body, media_type, top_digest))) = fetched else {
            return Err(registry_error(last_err.unwrap_or_else(|| {
                berth_registry::Error::Transport("no registry endpoint".into())
            })));
        };
        berth_common::grpc::record_image(&r.full(), Some(&top_digest));
        let mut src = Source {
            host,
            repo: r.path().to_string(),
            foreign_urls: HashMap::new(),
        };
        if r.digest().is_none() {
            send(progress(&want, format!("Pulling from {}", r.path()))).await;
        }

        // A list or index: store it, and take the manifest for the platform.
        let pulled_index = media::is_index(&media_type);
        let (manifest_bytes, manifest_type, _) = if pulled_index {
            self.write_blob(ns, &media_type, body.to_vec(), lease)
                .await?;
            let index: Value = serde_json::from_slice(&body)
                .map_err(|e| Error::InvalidArgument(format!("bad manifest list: {e}")))?;
            let chosen = index["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| platform.matches(&m["platform"]))
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "no matching manifest for {platform} in the manifest list entries"
                    ))
                })?;
            let d = descriptor(chosen)?;
            let (b, t, dg) = self
                .registry
                .manifest(&src.host, &src.repo, &d.digest, &creds)
                .await
                .map_err(registry_error)?;
            self.metrics.add_pull_bytes(b.len() as u64);
            if media::is_index(&t) {
                return Err(Error::InvalidArgument(
                    "a manifest list entry is itself a list".into(),
                ));
            }
            (b, t, dg)
        } else {
            (body, media_type, top_digest.clone())
        };
        let manifest: Value = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| Error::InvalidArgument(format!("bad manifest: {e}")))?;
        let config_desc = descriptor(&manifest["config"])?;
        let layers: Vec<Descriptor> = manifest["layers"]
            .as_array()
            .ok_or_else(|| Error::InvalidArgument("manifest without layers".into()))?
            .iter()
            .map(descriptor)
            .collect::<Result<_>>()?;
        for l in manifest["layers"].as_array().into_iter().flatten() {
            let kind = l["mediaType"].as_str().unwrap_or("");
            let urls: Vec<String> = l["urls"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u.as_str())
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                .map(String::from)
                .collect();
            if media::is_foreign_layer(kind) && !urls.is_empty() {
                let d = l["digest"].as_str().unwrap_or("").to_string();
                src.foreign_urls.insert(d, urls);
            }
        }

        // The config, then the manifest: the image is readable only when
        // everything it points at is stored.
        let config = self
            .registry
            .blob_bytes(
                &src.host,
                &src.repo,
                &config_desc.digest,
                CONFIG_MAX,
                &creds,
            )
            .await
            .map_err(registry_error)?;
        self.metrics.add_pull_bytes(config.len() as u64);
        let config_json: Value = serde_json::from_slice(&config)
            .map_err(|e| Error::InvalidArgument(format!("bad image config: {e}")))?;
        let cfg_os = config_json["os"].as_str().unwrap_or("");
        let cfg_arch = config_json["architecture"].as_str().unwrap_or("");
        if !pulled_index
            && (cfg_os != platform.os || cfg_arch != platform.arch)
            && !req.platform.is_empty()
        {
            return Err(Error::NotFound(format!(
                "image with reference {} was found but does not match the specified platform: wanted {platform}, actual: {cfg_os}/{cfg_arch}",
                req.reference
            )));
        }
        let diff_ids: Vec<String> = config_json["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if diff_ids.len() != layers.len() {
            return Err(Error::InvalidArgument(format!(
                "the image config lists {} layers, the manifest {}",
                diff_ids.len(),
                layers.len()
            )));
        }
        self.write_blob(ns, &config_desc.media_type, config.to_vec(), lease)
            .await?;

        // Layers whose snapshot exists need nothing; the others are fetched
        // (each blob once) and unpacked concurrently.
        let chain = crate::images::chain_ids_of(&diff_ids);
        let gate = Arc::new(Semaphore::new(CONCURRENT_DOWNLOADS));
        let mut jobs = Vec::new();
        let mut fetching = HashSet::new();
        for (i, layer) in layers.iter().enumerate() {
            let id = short_digest(&layer.digest);
            let have_snapshot = self.snapshot_exists(ns, &chain[i]).await?;
            // The snapshot alone is not enough: the image keeps its blobs
            // (for save and push), so a blob collected since is fetched.
            if have_snapshot && self.hold(lease, &layer.digest).await? {
                send(progress(&id, "Already exists")).await;
                continue;
            }
            if !fetching.insert(layer.digest.clone()) {
                // The same blob again, higher up: fetched once, applied from
                // berth-content.
                continue;
            }
            send(progress(&id, "Pulling fs layer")).await;
            jobs.push((id, layer.clone(), i));
        }
        let downloads = futures::future::join_all(jobs.iter().map(|(id, layer, i)| {
            let gate = gate.clone();
            let tx = tx.clone();
            let (src, creds, chain_id) = (&src, &creds, &chain[*i]);
            async move {
                let _permit = gate.acquire().await;
                self.fetch_layer(ns, src, layer, creds, id, &tx, lease, chain_id)
                    .await
            }
        }))
        .await;
        let mut streamed: HashMap<usize, Streamed> = HashMap::new();
        let mut failed = None;
        for ((_, _, i), d) in jobs.iter().zip(downloads) {
            match d {
                Ok(Some(s)) => {
                    streamed.insert(*i, s);
                }
                Ok(None) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        let stored = match failed {
            Some(e) => Err(e),
            None => {
                async {
                    let manifest_desc = self
                        .write_blob(ns, &manifest_type, manifest_bytes.to_vec(), lease)
                        .await?;
                    let info = self.image_info(ns, &manifest_desc).await?;
                    Ok((manifest_desc, info))
                }
                .await
            }
        };
        let (manifest_desc, info) = match stored {
            Ok(v) => v,
            Err(e) => {
                self.remove_snapshots(ns, streamed.into_values().map(|s| s.key))
                    .await;
                return Err(e);
            }
        };
        for (id, _, _) in &jobs {
            send(progress(id, "Extracting")).await;
        }
        self.unpack_layers(ns, &info, streamed).await?;
        for (id, _, _) in &jobs {
            send(progress(id, "Pull complete")).await;
        }

        // The name now points at the pulled manifest.
        let name = r.full();
        let mut labels = HashMap::new();
        labels.insert(
            crate::images::REPO_DIGEST_LABEL.to_string(),
            top_digest.clone(),
        );
        let previous = self.record_image(ns, &name, &manifest_desc, labels).await?;
        let unchanged = previous
            .as_ref()
            .is_some_and(|p| p.digest == manifest_desc.digest);
        self.emit_image(ns, &info.id, "pull", &familiar(&name));
        let shown = familiar(&name);
        send(Progress {
            status: if unchanged && jobs.is_empty() {
                format!("Status: Image is up to date for {shown}")
            } else {
                format!("Status: Downloaded newer image for {shown}")
            },
            digest: top_digest,
            ..Default::default()
        })
        .await;
        tracing::info!(image = %name, id = %info.id, "pulled");
        Ok(info.id.clone())
    }

    /// `pull --all-tags`: every tag of the repository, one after the other.
    pub(crate) async fn pull_all_tags(
        &self,
        ns: &str,
        req: PullRequest,
        tx: ProgressTx,
    ) -> Result<()> {
        let r =
            reference::parse(&req.reference).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let last = req.reference.rsplit('/').next().unwrap_or("");
        if r.digest().is_some() || last.contains(':') {
            return Err(Error::InvalidArgument(
                "tag can't be used with --all-tags/-a".into(),
            ));
        }
        let creds = credentials(req.auth.as_ref());
        let host = berth_registry::endpoint_host(r.domain());
        let mut tags = self
            .registry
            .tags(host, r.path(), &creds)
            .await
            .map_err(registry_error)?;
        tags.sort();
        if tags.is_empty() {
            return Err(Error::NotFound(format!("no tags in {}", r.familiar_name())));
        }
        for tag in tags {
            let one = PullRequest {
                reference: format!("{}:{tag}", r.name()),
                all_tags: false,
                ..req.clone()
            };
            self.pull(ns, one, tx.clone()).await?;
        }
        Ok(())
    }

    /// Brings one layer blob into berth-content (held by `lease`), resuming
    /// a partial ingest.
    /// When the blob is not stored yet it is unpacked while it downloads,
    /// into a new active snapshot without parent (`extract-*-<chain_id>`),
    /// returned to be committed in order. `None`: the blob is in
    /// berth-content, to be applied from there (it was stored already, or
    /// its download had to resume).
    #[allow(clippy::too_many_arguments)]
    async fn fetch_layer(
        &self,
        ns: &str,
        src: &Source,
        layer: &Descriptor,
        creds: &Credentials,
        id: &str,
        tx: &ProgressTx,
        lease: &str,
        chain_id: &str,
    ) -> Result<Option<Streamed>> {
        let digest = &layer.digest;
        // Present already: held from now on, or fetched when a collection
        // took it meanwhile.
        if self.hold(lease, digest).await? {
            let _ = tx.send(Ok(progress(id, "Download complete"))).await;
            return Ok(None);
        }
        let key = self.prepare_extract(ns, chain_id, "").await?;
        let mut unpack_to = Some(key);
        let ingest = format!("pull-{}", digest.trim_start_matches("sha256:"));
        let mut attempt = 0;
        let applied = loop {
            attempt += 1;
            let r = self
                .download_once(
                    ns,
                    src,
                    layer,
                    creds,
                    id,
                    tx,
                    &ingest,
                    lease,
                    unpack_to.as_deref(),
                )
                .await;
            match r {
                Ok(applied) => break applied,
                Err(e) => {
                    // What this attempt unpacked is incomplete: drop it. The
                    // layer is applied from berth-content once it is there.
                    if let Some(key) = unpack_to.take() {
                        self.remove_snapshots(ns, [key]).await;
                    }
                    if attempt < LAYER_ATTEMPTS && e.transient {
                        let delay = std::time::Duration::from_millis(200 << attempt.min(6));
                        tracing::warn!(%digest, attempt, "layer download broke, resuming: {}", e.error);
                        tokio::time::sleep(delay).await;
                    } else {
                        return Err(e.error);
                    }
                }
            }
        };
        let _ = tx.send(Ok(progress(id, "Download complete"))).await;
        match (applied, unpack_to) {
            (Some(r), Some(key)) => Ok(Some(Streamed {
                key,
                diff_id: r.diff_id,
                size: r.size.max(0) as u64,
            })),
            (_, key) => {
                self.remove_snapshots(ns, key).await;
                Ok(None)
            }
        }
    }

    /// One attempt at a layer: continue the ingest from where it is. When
    /// the attempt sends the whole blob (from offset 0) and `unpack_to`
    /// names an empty active snapshot, the bytes are also unpacked into it
    /// as they arrive; its result is returned (`None`: not unpacked, or the
    /// unpack failed and the layer is to be applied from berth-content).
    #[allow(clippy::too_many_arguments)]
    async fn download_once(
        &self,
        ns: &str,
        src: &Source,
        layer: &Descriptor,
        creds: &Credentials,
        id: &str,
        tx: &ProgressTx,
        ingest: &str,
        lease: &str,
        unpack_to: Option<&str>,
    ) -> std::result::Result<Option<ApplyResponse>, Attempt> {
        let digest = &layer.digest;
        let mut offset = match self
            .content
            .clone()
            .status(request(
                ns,
                StatusRequest {
                    r#ref: ingest.to_string(),
                },
            ))
            .await
        {
            Ok(s) => s.into_inner().offset.max(0) as u64,
            Err(s) if s.code() == Code::NotFound => 0,
            Err(s) => return Err(Attempt::fatal(Error::service("content")(s))),
        };
        // A foreign layer comes from its URLs when one answers (as Docker
        // does), else from the registry.
        let mut from_url = None;
        for url in src.foreign_urls.get(digest).into_iter().flatten() {
            match self.registry.fetch_url(url, offset).await {
                Ok(got) => {
                    from_url = Some(got);
                    break;
                }
                Err(e) => tracing::warn!(%digest, url, "foreign layer URL failed: {e}"),
            }
        }
        let (resp, start) = match from_url {
            Some(got) => got,
            None => self
                .registry
                .blob(&src.host, &src.repo, digest, offset, creds)
                .await
                .map_err(|e| Attempt {
                    transient: e.is_transient(),
                    error: registry_error(e),
                })?,
        };
        if start != offset {
            // The registry sent the whole blob: start the ingest over.
            let _ = self
                .content
                .clone()
                .abort(request(
                    ns,
                    AbortRequest {
                        r#ref: ingest.to_string(),
                    },
                ))
                .await;
            offset = 0;
        }
        let total = if layer.size > 0 { layer.size } else { 0 };
        let mut applier = match unpack_to {
            Some(key) if offset == 0 => Some(self.start_apply_stream(ns, key, layer)),
            _ => None,
        };
        let (wtx, writer) = self.content_writer(ns, 8);
        let first = WriteRequest {
            r#ref: ingest.to_string(),
            expected: digest.clone(),
            total,
            offset: offset as i64,
            lease: lease.to_string(),
            ..Default::default()
        };
        let mut broken = None;
        if wtx.send(first).await.is_ok() {
            let mut body = resp.bytes_stream();
            let mut reported = offset;
            let from = offset;
            let started = Instant::now();
            let (mut net, mut to_content, mut to_apply, mut chunks) =
                (Duration::ZERO, Duration::ZERO, Duration::ZERO, 0u64);
            loop {
                let t = Instant::now();
                let Some(chunk) = body.next().await else {
                    break;
                };
                net += t.elapsed();
                chunks += 1;
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        broken = Some(e.to_string());
                        break;
                    }
                };
                let len = chunk.len() as u64;
                self.metrics.add_pull_bytes(len);
                let msg = WriteRequest {
                    offset: offset as i64,
                    data: chunk.clone(),
                    ..Default::default()
                };
                let t = Instant::now();
                if wtx.send(msg).await.is_err() {
                    break; // the content store refused: its answer says why
                }
                let sent = Instant::now();
                to_content += sent - t;
                if let Some(a) = applier.as_mut() {
                    a.send(chunk).await;
                    to_apply += sent.elapsed();
                }
                offset += len;
                if offset - reported >= PROGRESS_STEP {
                    reported = offset;
                    let _ = tx
                        .send(Ok(Progress {
                            id: id.to_string(),
                            status: "Downloading".into(),
                            current: offset as i64,
                            total,
                            ..Default::default()
                        }))
                        .await;
                }
            }
            tracing::info!(
                %digest, bytes = offset - from, chunks,
                total_ms = started.elapsed().as_millis() as u64,
                network_wait_ms = net.as_millis() as u64,
                content_wait_ms = to_content.as_millis() as u64,
                apply_wait_ms = to_apply.as_millis() as u64,
                "layer download ended"
            );
            if broken.is_none() {
                let _ = tx.send(Ok(progress(id, "Verifying Checksum"))).await;
                let _ = wtx
                    .send(WriteRequest {
                        offset: offset as i64,
                        commit: true,
                        expected: digest.clone(),
                        total: offset as i64,
                        ..Default::default()
                    })
                    .await;
            }
        }
        drop(wtx);
        // Always waited for, so that the snapshot is idle when the caller
        // commits or removes it.
        let applied = match applier {
            Some(a) => a.finish(digest).await,
            None => None,
        };
        let written = writer
            .await
            .map_err(|e| Attempt::fatal(Error::Internal(format!("content writer: {e}"))))?;
        match (broken, written) {
            (Some(why), _) => Err(Attempt {
                transient: true,
                error: Error::Unavailable(format!("download of {digest} broke: {why}")),
            }),
            (None, Ok(_)) => Ok(applied),
            (None, Err(s)) if s.code() == Code::InvalidArgument => {
                // A digest mismatch: the bytes are discarded by the store.
                Err(Attempt::fatal(Error::InvalidArgument(format!(
                    "layer {digest}: {}",
                    s.message()
                ))))
            }
            (None, Err(s)) => Err(Attempt::fatal(Error::service("content")(s))),
        }
    }

    /// Starts berth-snapshots' ApplyStream into `key` for `layer`.
    fn start_apply_stream(&self, ns: &str, key: &str, layer: &Descriptor) -> ApplySink {
        let (atx, arx) = mpsc::channel::<ApplyStreamRequest>(APPLY_QUEUE);
        let header = ApplyStreamRequest {
            payload: Some(apply_stream_request::Payload::Header(ApplyRequest {
                key: key.to_string(),
                layer: Some(layer.clone()),
                // berth-content verifies the same bytes, and the snapshot is
                // committed only when it has stored them (download_once).
                digest_verified: true,
            })),
        };
        // The channel is empty: the header always fits.
        let _ = atx.try_send(header);
        let mut client = self.snapshots.clone();
        let req = request(ns, tokio_stream::wrappers::ReceiverStream::new(arx));
        let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(
            async move {
                let r = client
                    .apply_stream(req)
                    .await
                    .map(tonic::Response::into_inner);
                drop(done_tx);
                r
            }
            .in_current_span(),
        );
        ApplySink {
            tx: Some(atx),
            done,
            task,
        }
    }

    /// Removes snapshots (unfinished unpacks), logging what cannot be.
    pub(crate) async fn remove_snapshots(&self, ns: &str, keys: impl IntoIterator<Item = String>) {
        for key in keys {
            if let Err(s) = self
                .snapshots
                .clone()
                .remove(request(ns, RemoveRequest { key: key.clone() }))
                .await
            {
                if s.code() != Code::NotFound {
                    tracing::warn!(%key, "cannot remove the unfinished snapshot: {}", s.message());
                }
            }
        }
    }
}

/// A layer unpacked while it was downloaded: the active snapshot (prepared
/// without a parent) holding it and what ApplyStream reported.
#[derive(Debug)]
pub(crate) struct Streamed {
    pub key: String,
    pub diff_id: String,
    pub size: u64,
}

/// The sending end of one ApplyStream.
struct ApplySink {
    /// None once the call has ended (its result says why).
    tx: Option<mpsc::Sender<ApplyStreamRequest>>,
    /// Resolves when the call has ended; not polled again after that.
    done: tokio::sync::oneshot::Receiver<()>,
    task: tokio::task::JoinHandle<std::result::Result<ApplyResponse, Status>>,
}

impl ApplySink {
    async fn send(&mut self, data: bytes::Bytes) {
        let Some(tx) = &self.tx else { return };
        let msg = ApplyStreamRequest {
            payload: Some(apply_stream_request::Payload::Data(data)),
        };
        // An answer before the end (a refused layer) must not leave the
        // download waiting for room in the channel.
        tokio::select! {
            sent = tx.send(msg) => {
                if sent.is_err() {
                    self.tx = None;
                }
            }
            _ = &mut self.done => self.tx = None,
        }
    }

    /// Ends the stream and waits for the result. A stream that missed bytes
    /// fails there (the data or digest does not match the descriptor).
    async fn finish(mut self, digest: &str) -> Option<ApplyResponse> {
        self.tx = None;
        match self.task.await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(s)) => {
                tracing::info!(%digest, "not unpacked while downloading: {}", s.message());
                None
            }
            Err(e) => {
                tracing::warn!(%digest, "apply stream task: {e}");
                None
            }
        }
    }
}

/// The outcome of a failed download attempt.
struct Attempt {
    transient: bool,
    error: Error,
}

impl Attempt {
    fn fatal(error: Error) -> Attempt {
        Attempt {
            transient: false,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/amd64").unwrap();
        assert!(p.matches(&json!({"os": "linux", "architecture": "amd64"})));
        assert!(!p.matches(&json!({"os": "linux", "architecture": "arm64"})));
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert!(p.matches(&json!({"os": "linux", "architecture": "arm", "variant": "v7"})));
        assert!(!p.matches(&json!({"os": "linux", "architecture": "arm", "variant": "v6"})));
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert!(p.matches(&json!({"os": "linux", "architecture": "arm64"})));
        assert_eq!(Platform::parse("linux/x86_64").unwrap().arch, "amd64");
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
        assert_eq!(Platform::parse("").unwrap(), Platform::host());
    }
}
