//! The Images service, and image lookup for the rest of the gateway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::Instrument;

use berth_common::reference;
use berth_common::request;
use berth_proto::content::v1::{
    import_image_request, DeleteImageRequest, GetImageRequest, Image,
    ImportHeader as ContentImportHeader, ImportImageRequest,
    ListImagesRequest as ContentListImages, PutImageRequest, ReadRequest,
};
use berth_proto::gateway::v1::images_server::Images;
use berth_proto::gateway::v1::{
    import_request, HistoryRequest, HistoryResponse, ImageSummary, ImportRequest, ImportResponse,
    InspectImageRequest, InspectResponse, ListImagesRequest, ListImagesResponse, LoadRequest,
    LoadResponse, LoginRequest, LoginResponse, Progress, PruneImagesRequest, PruneImagesResponse,
    PullRequest, PushRequest, RemoveImageRequest, RemoveImageResponse, SaveChunk, SaveRequest,
    SearchRequest, SearchResponse, TagRequest, TagResponse,
};
use berth_proto::snapshots::v1::{
    ApplyRequest, CommitRequest, PrepareRequest, RemoveRequest, StatRequest,
};
use berth_proto::types::v1::Descriptor;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::info;

use crate::error::{Error, Result};
use crate::pull::{ProgressTx, Streamed};
use crate::Inner;

/// The Go name of this machine's architecture ("amd64", "arm64", ...).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An image as read from its manifest and config.
#[derive(Debug)]
pub(crate) struct ImageInfo {
    pub manifest: Descriptor,
    /// "sha256:..." of the config: the image ID.
    pub id: String,
    /// The config blob.
    pub config_desc: Descriptor,
    pub config: Value,
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<String>,
}

impl ImageInfo {
    /// The runtime part of the config (`config.config`), or null.
    pub fn runtime_config(&self) -> &Value {
        &self.config["config"]
    }

    /// Chain IDs of the layers, bottom first (the names of their snapshots).
    pub fn chain_ids(&self) -> Vec<String> {
        chain_ids_of(&self.diff_ids)
    }

    pub fn short_id(&self) -> String {
        short(&self.id)
    }
}

/// The label of an image record that keeps the digest the image was pulled
/// by (a manifest list's, or the manifest's): its RepoDigest.
pub(crate) const REPO_DIGEST_LABEL: &str = "org.berth.repo-digest";

/// Chain IDs of layers with these diff IDs, bottom first (the OCI rule).
pub(crate) fn chain_ids_of(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

/// The 12-digit form of an ID.
pub fn short(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

/// Parsed images by manifest digest (blobs never change).
#[derive(Default)]
pub(crate) struct ImageCache(Mutex<HashMap<String, Arc<ImageInfo>>>);

fn is_hex_prefix(s: &str) -> bool {
    let h = s.strip_prefix("sha256:").unwrap_or(s);
    !h.is_empty() && h.len() <= 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The familiar form of a full name, for display.
pub fn familiar(full: &str) -> String {
    reference::parse(full)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| full.to_string())
}

impl Inner {
    pub(crate) async fn read_blob(&self, ns: &str, digest: &str) -> Result<Vec<u8>> {
        let mut stream = self
            .content
            .clone()
            .read(request(
                ns,
                ReadRequest {
                    digest: digest.to_string(),
                    offset: 0,
                    size: 0,
                },
            ))
            .await
            .map_err(Error::service("content"))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(Error::service("content"))? {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }

    pub(crate) async fn image_info(
        &self,
        ns: &str,
        manifest: &Descriptor,
    ) -> Result<Arc<ImageInfo>> {
        if let Some(i) = self.images.0.lock().unwrap().get(&manifest.digest) {
            return Ok(i.clone());
        }
        let m: Value = serde_json::from_slice(&self.read_blob(ns, &manifest.digest).await?)
            .map_err(|e| {
                Error::Internal(format!("manifest {} is not JSON: {e}", manifest.digest))
            })?;
        let desc = |v: &Value| Descriptor {
            media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
            digest: v["digest"].as_str().unwrap_or_default().to_string(),
            size: v["size"].as_i64().unwrap_or_default(),
            annotations: Default::default(),
        };
        let config_desc = desc(&m["config"]);
        let layers: Vec<Descriptor> = m["layers"]
            .as_array()
            .map(|a| a.iter().map(desc).collect())
            .unwrap_or_default();
        let config: Value = serde_json::from_slice(&self.read_blob(ns, &config_desc.digest).await?)
            .map_err(|e| {
                Error::Internal(format!(
                    "image config {} is not JSON: {e}",
                    config_desc.digest
                ))
            })?;
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if diff_ids.len() != layers.len() {
            return Err(Error::Internal(format!(
                "image {}: {} layers but {} diff_ids",
                config_desc.digest,
                layers.len(),
                diff_ids.len()
            )));
        }
        let info = Arc::new(ImageInfo {
            manifest: manifest.clone(),
            id: config_desc.digest.clone(),
            config_desc,
            config,
            layers,
            diff_ids,
        });
        self.images
            .0
            .lock()
            .unwrap()
            .insert(manifest.digest.clone(), info.clone());
        Ok(info)
    }

    pub(crate) async fn image_records(&self, ns: &str) -> Result<Vec<Image>> {
        Ok(self
            .content
            .clone()
            .list_images(request(ns, ContentListImages {}))
            .await
            .map_err(Error::service("content"))?
            .into_inner()
            .images)
    }

    /// Every image of the namespace with its full names (none for the
    /// dangling ones), one entry per image.
    pub(crate) async fn all_images(&self, ns: &str) -> Result<Vec<(Arc<ImageInfo>, Vec<String>)>> {
        let mut out: Vec<(Arc<ImageInfo>, Vec<String>)> = Vec::new();
        for rec in self.image_records(ns).await? {
            let Some(target) = rec.target else { continue };
            let info = self.image_info(ns, &target).await?;
            match out
                .iter_mut()
                .find(|(i, _)| i.manifest.digest == info.manifest.digest)
            {
                Some((_, names)) => names.push(rec.name),
                None => out.push((info, vec![rec.name])),
            }
        }
        for desc in self.store.dangling(ns)? {
            if out.iter().any(|(i, _)| i.manifest.digest == desc.digest) {
                continue;
            }
            match self.image_info(ns, &desc).await {
                Ok(info) => out.push((info, Vec::new())),
                Err(e) => tracing::warn!("skipping unreadable image {}: {e}", desc.digest),
            }
        }
        Ok(out)
    }

    /// Keeps an image that just lost its last name as `<none>`, like docker.
    pub(crate) async fn keep_if_unnamed(&self, ns: &str, manifest: &Descriptor) -> Result<()> {
        let named = self.image_records(ns).await?.iter().any(|r| {
            r.target
                .as_ref()
                .is_some_and(|t| t.digest == manifest.digest)
        });
        if !named {
            self.put_dangling(ns, manifest).await?;
        }
        Ok(())
    }

    /// Points `name` at `manifest` (with `labels`), or, with no name, keeps
    /// the image as dangling unless a name points at it. An image that
    /// loses its last name this way stays as `<none>`. Returns what the name
    /// pointed at before. Excluded from garbage collection as a whole, so
    /// neither image is ever without a root.
    pub(crate) async fn record_image(
        &self,
        ns: &str,
        name: &str,
        manifest: &Descriptor,
        labels: HashMap<String, String>,
    ) -> Result<Option<Descriptor>> {
        let _g = self.gc_lock.read().await;
        if name.is_empty() {
            self.keep_if_unnamed(ns, manifest).await?;
            return Ok(None);
        }
        let previous = self.current_target(ns, name).await?;
        self.content
            .clone()
            .put_image(request(
                ns,
                PutImageRequest {
                    image: Some(Image {
                        name: name.to_string(),
                        target: Some(manifest.clone()),
                        created_at: 0,
                        updated_at: 0,
                        labels,
                    }),
                },
            ))
            .await
            .map_err(Error::service("content"))?;
        self.delete_dangling(ns, &manifest.digest).await?;
        if let Some(prev) = previous.as_ref().filter(|p| p.digest != manifest.digest) {
            self.keep_if_unnamed(ns, prev).await?;
        }
        Ok(previous)
    }

    /// Whether berth-snapshots has a snapshot named `key`.
    pub(crate) async fn snapshot_exists(&self, ns: &str, key: &str) -> Result<bool> {
        match self
            .snapshots
            .clone()
            .stat(request(
                ns,
                StatRequest {
                    key: key.to_string(),
                },
            ))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(Error::service("snapshots")(s)),
        }
    }

    /// Opens a berth-content Write stream: feed it through the sender,
    /// drop the sender to end it, await the handle for the answer.
    pub(crate) fn content_writer(
        &self,
        ns: &str,
        depth: usize,
    ) -> (
        tokio::sync::mpsc::Sender<berth_proto::content::v1::WriteRequest>,
        tokio::task::JoinHandle<
            std::result::Result<Response<berth_proto::content::v1::WriteResponse>, Status>,
        >,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(depth);
        let mut client = self.content.clone();
        let ns = ns.to_string();
        let handle = tokio::spawn(
            async move { client.write(request(&ns, ReceiverStream::new(rx))).await }
                .in_current_span(),
        );
        (tx, handle)
    }

    /// Prepares the active snapshot a layer is unpacked into before it is
    /// committed as `chain_id` (`extract-<rand>-<chain id>`, on `parent`,
    /// none for a streamed unpack). It is labelled ephemeral: a crash of
    /// berth-snapshots mid-unpack leaves nothing behind, the unpack being
    /// lost with the call anyway.
    pub(crate) async fn prepare_extract(
        &self,
        ns: &str,
        chain_id: &str,
        parent: &str,
    ) -> Result<String> {
        let key = format!(
            "extract-{}-{}",
            crate::container::new_id().get(..12).unwrap_or(""),
            chain_id
        );
        self.snapshots
            .clone()
            .prepare(request(
                ns,
                PrepareRequest {
                    key: key.clone(),
                    parent: parent.to_string(),
                    labels: [(
                        berth_common::SNAPSHOT_EPHEMERAL_LABEL.to_string(),
                        "unpack".to_string(),
                    )]
                    .into(),
                },
            ))
            .await
            .map_err(Error::service("snapshots"))?;
        Ok(key)
    }

    /// The manifest a name points at now, if any.
    pub(crate) async fn current_target(
        &self,
        ns: &str,
        full_name: &str,
    ) -> Result<Option<Descriptor>> {
        match self
            .content
            .clone()
            .get_image(request(
                ns,
                GetImageRequest {
                    name: full_name.to_string(),
                },
            ))
            .await
        {
            Ok(img) => Ok(img.into_inner().target),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(Error::service("content")(s)),
        }
    }

    /// Finds an image by name, full ID or ID prefix. Returns it and the full
    /// name it was found by (None when found by ID).
    pub(crate) async fn resolve_image(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<(Arc<ImageInfo>, Option<String>)> {
        let not_found = || Error::NotFound(format!("No such image: {name}"));
        if name.is_empty() {
            return Err(Error::InvalidArgument("no image given".into()));
        }
        let parsed = reference::parse(name);
        if let Ok(r) = &parsed {
            let full = r.full();
            match self
                .content
                .clone()
                .get_image(request(ns, GetImageRequest { name: full.clone() }))
                .await
            {
                Ok(img) => {
                    let img = img.into_inner();
                    let target = img
                        .target
                        .ok_or_else(|| Error::Internal(format!("image {full} has no target")))?;
                    return Ok((self.image_info(ns, &target).await?, Some(full)));
                }
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(Error::service("content")(s)),
            }
        }
        if !is_hex_prefix(name) {
            return match parsed {
                Err(e) => Err(Error::InvalidArgument(e.to_string())),
                Ok(_) => Err(not_found()),
            };
        }
        let want = if name.starts_with("sha256:") {
            name.to_string()
        } else {
            format!("sha256:{name}")
        };
        let mut found: Option<Arc<ImageInfo>> = None;
        for (info, _) in self.all_images(ns).await? {
            if info.id.starts_with(&want) {
                if let Some(f) = &found {
                    if f.id != info.id {
                        return Err(Error::InvalidArgument(format!(
                            "ambiguous image ID prefix {name}: matches {} and {}",
                            f.short_id(),
                            info.short_id()
                        )));
                    }
                }
                found = Some(info);
            }
        }
        found.map(|f| (f, None)).ok_or_else(not_found)
    }

    /// Makes sure every layer of the image is unpacked into a committed
    /// snapshot named by its chain ID; returns the top chain ID. Records the
    /// uncompressed size when it unpacked all of them now.
    pub(crate) async fn ensure_unpacked(&self, ns: &str, info: &ImageInfo) -> Result<String> {
        self.unpack_layers(ns, info, HashMap::new()).await
    }

    /// Like [`Inner::ensure_unpacked`], where `streamed` holds layers (by
    /// index) a pull already unpacked while downloading, each into an active
    /// snapshot prepared without a parent: those are committed in order onto
    /// the layer below (a rebase, CommitRequest.parent), the others are
    /// applied from berth-content. Every snapshot in `streamed` ends up
    /// committed or removed, also on error.
    pub(crate) async fn unpack_layers(
        &self,
        ns: &str,
        info: &ImageInfo,
        mut streamed: HashMap<usize, Streamed>,
    ) -> Result<String> {
        let r = self.commit_layers(ns, info, &mut streamed).await;
        // Not needed (the layer exists already) or not reached (an error).
        self.remove_snapshots(ns, streamed.into_values().map(|s| s.key))
            .await;
        r
    }

    async fn commit_layers(
        &self,
        ns: &str,
        info: &ImageInfo,
        streamed: &mut HashMap<usize, Streamed>,
    ) -> Result<String> {
        let chain = info.chain_ids();
        let mut parent = String::new();
        let mut total = 0u64;
        let mut unpacked_any = false;
        let mut unpacked_all = true;
        for (i, chain_id) in chain.iter().enumerate() {
            if self.snapshot_exists(ns, chain_id).await? {
                parent = chain_id.clone();
                unpacked_all = false;
                continue;
            }
            let (key, unpacked) = match streamed.remove(&i) {
                Some(s) => (s.key, Ok((s.diff_id, s.size))),
                None => {
                    let key = self.prepare_extract(ns, chain_id, &parent).await?;
                    let applied = self
                        .snapshots
                        .clone()
                        .apply(request(
                            ns,
                            ApplyRequest {
                                key: key.clone(),
                                layer: Some(info.layers[i].clone()),
                                digest_verified: false,
                            },
                        ))
                        .await
                        .map_err(Error::service("snapshots"))
                        .map(|r| {
                            let r = r.into_inner();
                            (r.diff_id, r.size.max(0) as u64)
                        });
                    (key, applied)
                }
            };
            let committed = async {
                let (diff_id, size) = unpacked?;
                if diff_id != info.diff_ids[i] {
                    return Err(Error::InvalidArgument(format!(
                        "layer {} unpacks to {} but the image config says {}",
                        info.layers[i].digest, diff_id, info.diff_ids[i]
                    )));
                }
                total += size;
                // Per layer too, for history and disk usage.
                let _ = self
                    .store
                    .put_image_size(&format!("layer/{chain_id}"), size);
                // Onto the layer below: a layer unpacked without its parent
                // is rebased, one prepared on it stays there.
                match self
                    .snapshots
                    .clone()
                    .commit(request(
                        ns,
                        CommitRequest {
                            name: chain_id.clone(),
                            key: key.clone(),
                            labels: Default::default(),
                            parent: parent.clone(),
                        },
                    ))
                    .await
                {
                    Ok(_) => Ok(true),
                    // Another unpack of the same layer won the race.
                    Err(s) if s.code() == Code::AlreadyExists => Ok(false),
                    Err(s) => Err(Error::service("snapshots")(s)),
                }
            }
            .await;
            match committed {
                Ok(true) => unpacked_any = true,
                Ok(false) => {
                    unpacked_all = false;
                    self.remove_snapshots(ns, [key]).await;
                }
                Err(e) => {
                    self.remove_snapshots(ns, [key]).await;
                    return Err(e);
                }
            }
            parent = chain_id.clone();
        }
        if unpacked_all && unpacked_any {
            let _ = self.store.put_image_size(&info.id, total);
        }
        Ok(parent)
    }

    fn image_size(&self, info: &ImageInfo) -> i64 {
        match self.store.image_size(&info.id) {
            Ok(Some(s)) => s as i64,
            _ => info.layers.iter().map(|l| l.size).sum(),
        }
    }

    /// Docker's RepoDigests of the image with manifest `manifest_digest`:
    /// "NAME@DIGEST" (familiar name) for each name that records the digest
    /// it was pulled by.
    pub(crate) fn repo_digests(records: &[Image], manifest_digest: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in records {
            if r.target
                .as_ref()
                .is_none_or(|t| t.digest != manifest_digest)
            {
                continue;
            }
            let Some(d) = r.labels.get(REPO_DIGEST_LABEL) else {
                continue;
            };
            if let Ok(p) = reference::parse(&r.name) {
                let s = format!("{}@{d}", p.familiar_name());
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out.sort();
        out
    }

    async fn names_of(&self, ns: &str, info: &ImageInfo) -> Result<Vec<String>> {
        Ok(self
            .image_records(ns)
            .await?
            .into_iter()
            .filter(|r| {
                r.target
                    .as_ref()
                    .is_some_and(|t| t.digest == info.manifest.digest)
            })
            .map(|r| r.name)
            .collect())
    }

    async fn import(
        &self,
        ns: &str,
        mut incoming: Streaming<ImportRequest>,
    ) -> Result<ImportResponse> {
        let header = match incoming
            .message()
            .await
            .map_err(|s| Error::InvalidArgument(s.message().to_string()))?
        {
            Some(ImportRequest {
                payload: Some(import_request::Payload::Header(h)),
            }) => h,
            _ => {
                return Err(Error::InvalidArgument(
                    "the first import message must be the header".into(),
                ))
            }
        };
        let name = if header.reference.is_empty() {
            String::new()
        } else {
            let r = reference::parse(&header.reference)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            if r.digest().is_some() {
                return Err(Error::InvalidArgument(
                    "an imported image can be given a tag, not a digest".into(),
                ));
            }
            r.full()
        };
        let lease = self.new_lease("import").await?;
        let r = self.import_leased(ns, header, name, incoming, &lease).await;
        self.end_lease(&lease).await;
        if r.is_err() {
            // What a failed import stored goes now.
            self.collect_garbage_quietly().await;
        }
        r
    }

    async fn import_leased(
        &self,
        ns: &str,
        header: berth_proto::gateway::v1::ImportHeader,
        name: String,
        mut incoming: Streaming<ImportRequest>,
        lease: &str,
    ) -> Result<ImportResponse> {
        // From a URL, the daemon fetches the tarball itself (docker's
        // daemon does too): the request must answer 200 before anything is
        // stored.
        let download = if header.url.is_empty() {
            None
        } else {
            Some(fetch_url(&header.url).await?)
        };
        let source = if !header.url.is_empty() {
            header.url.clone()
        } else if header.source.is_empty() {
            "-".into()
        } else {
            header.source.clone()
        };
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(ImportImageRequest {
            payload: Some(import_image_request::Payload::Header(ContentImportHeader {
                // The name is given by record_image once the image is
                // unpacked: an image that cannot be unpacked gets no record.
                name: String::new(),
                changes: header.changes,
                message: header.message,
                source,
                os: String::new(),
                architecture: String::new(),
                lease: lease.to_string(),
            })),
        })
        .await
        .map_err(|_| Error::Internal("import channel closed".into()))?;
        // Forward the data. On a client error the sender is kept until the
        // content call is dropped, so berth-content sees a cancelled stream,
        // never a short but complete one.
        let forward = tokio::spawn(
            async move {
                if let Some(resp) = download {
                    let mut body = resp.bytes_stream();
                    use futures::StreamExt;
                    while let Some(chunk) = body.next().await {
                        match chunk {
                            Ok(d) => {
                                let msg = ImportImageRequest {
                                    payload: Some(import_image_request::Payload::Data(d.to_vec())),
                                };
                                if tx.send(msg).await.is_err() {
                                    return (Ok(()), Some(tx));
                                }
                            }
                            Err(e) => return (Err(format!("download failed: {e}")), Some(tx)),
                        }
                    }
                    return (Ok(()), None);
                }
                loop {
                    match incoming.message().await {
                        Ok(Some(ImportRequest {
                            payload: Some(import_request::Payload::Data(d)),
                        })) => {
                            if tx
                                .send(ImportImageRequest {
                                    payload: Some(import_image_request::Payload::Data(d)),
                                })
                                .await
                                .is_err()
                            {
                                return (Ok(()), Some(tx));
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => return (Ok(()), None),
                        Err(e) => {
                            return (
                                Err(format!("import stream failed: {}", e.message())),
                                Some(tx),
                            )
                        }
                    }
                }
            }
            .in_current_span(),
        );
        let mut content = self.content.clone();
        let call = content.import_image(request(ns, ReceiverStream::new(rx)));
        tokio::pin!(call);
        let mut forward = forward;
        let resp = tokio::select! {
            r = &mut call => r,
            f = &mut forward => match f {
                Ok((Ok(()), _keep)) => call.await,
                Ok((Err(e), _keep)) => return Err(Error::InvalidArgument(e)),
                Err(e) => return Err(Error::Internal(format!("import forwarder: {e}"))),
            },
        }
        .map_err(Error::service("content"))?
        .into_inner();
        let manifest = resp
            .manifest
            .ok_or_else(|| Error::Internal("import returned no manifest".into()))?;
        let info = self.image_info(ns, &manifest).await?;
        self.ensure_unpacked(ns, &info).await?;
        self.record_image(ns, &name, &info.manifest, HashMap::new())
            .await?;
        info!(id = %info.id, name = %name, "imported image");
        Ok(ImportResponse {
            id: info.id.clone(),
            reference: if name.is_empty() {
                String::new()
            } else {
                familiar(&name)
            },
        })
    }

    fn containers_using(&self, ns: &str, image_id: &str) -> Vec<(String, bool)> {
        self.containers
            .lock()
            .unwrap()
            .values()
            .filter(|c| c.namespace == ns && c.image_id == image_id)
            .map(|c| (c.id.clone(), c.state.running()))
            .collect()
    }

    pub(crate) async fn remove_image(
        &self,
        ns: &str,
        req: &RemoveImageRequest,
    ) -> Result<RemoveImageResponse> {
        let _g = self.gc_lock.read().await;
        let (info, by_name) = self.resolve_image(ns, &req.reference).await?;
        let names = self.names_of(ns, &info).await?;
        let users = self.containers_using(ns, &info.id);
        let mut resp = RemoveImageResponse::default();
        let untag = |n: String| async move {
            self.content
                .clone()
                .delete_image(request(ns, DeleteImageRequest { name: n.clone() }))
                .await
                .map_err(Error::service("content"))?;
            Ok::<String, Error>(familiar(&n))
        };
        match by_name {
            Some(name) if names.len() > 1 => {
                resp.untagged.push(untag(name).await?);
                return Ok(resp);
            }
            Some(name) => {
                if let Some((cid, _)) = users.first() {
                    if !req.force {
                        return Err(Error::FailedPrecondition(format!(
                            "conflict: unable to remove repository reference \"{}\" (must force) - container {} is using its referenced image {}",
                            req.reference,
                            short(cid),
                            info.short_id()
                        )));
                    }
                }
                resp.untagged.push(untag(name).await?);
            }
            None => {
                if let Some((cid, running)) = users.first() {
                    if *running {
                        return Err(Error::FailedPrecondition(format!(
                            "conflict: unable to delete {} (cannot be forced) - image is being used by running container {}",
                            info.short_id(),
                            short(cid)
                        )));
                    }
                    if !req.force {
                        return Err(Error::FailedPrecondition(format!(
                            "conflict: unable to delete {} (must be forced) - image is being used by stopped container {}",
                            info.short_id(),
                            short(cid)
                        )));
                    }
                }
                if names.len() > 1 && !req.force {
                    return Err(Error::FailedPrecondition(format!(
                        "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                        info.short_id()
                    )));
                }
                for n in names {
                    resp.untagged.push(untag(n).await?);
                }
            }
        }
        // The image is gone from this namespace when no name is left.
        if !self.names_of(ns, &info).await?.is_empty() {
            return Ok(resp);
        }
        if users.is_empty() {
            // Free the unpacked layers, top first, as far as nothing else
            // (another image, a container) builds on them. Blobs are left to
            // garbage collection, as they may be shared between namespaces.
            for chain_id in info.chain_ids().iter().rev() {
                match self
                    .snapshots
                    .clone()
                    .remove(request(
                        ns,
                        RemoveRequest {
                            key: chain_id.clone(),
                        },
                    ))
                    .await
                {
                    Ok(_) => resp.deleted.push(chain_id.clone()),
                    Err(s) if s.code() == Code::NotFound => {}
                    Err(_) => break,
                }
            }
        }
        self.delete_dangling(ns, &info.manifest.digest).await?;
        resp.deleted.insert(0, info.id.clone());
        Ok(resp)
    }

    pub(crate) fn inspect_image_doc(
        &self,
        info: &ImageInfo,
        names: &[String],
        repo_digests: &[String],
    ) -> Value {
        let cfg = info.runtime_config();
        let pick = |k: &str| cfg.get(k).cloned().unwrap_or(Value::Null);
        let history = info.config["history"].as_array();
        let comment = history
            .and_then(|h| h.last())
            .and_then(|h| h["comment"].as_str())
            .unwrap_or_default();
        json!({
            "Id": info.id,
            "RepoTags": names.iter().map(|n| familiar(n)).collect::<Vec<_>>(),
            "RepoDigests": repo_digests,
            "Parent": "",
            "Comment": comment,
            "Created": info.config["created"],
            "DockerVersion": "",
            "Author": info.config.get("author").cloned().unwrap_or(json!("")),
            "Config": {
                "Hostname": "",
                "Domainname": "",
                "User": cfg.get("User").cloned().unwrap_or(json!("")),
                "AttachStdin": false,
                "AttachStdout": false,
                "AttachStderr": false,
                "ExposedPorts": pick("ExposedPorts"),
                "Tty": false,
                "OpenStdin": false,
                "StdinOnce": false,
                "Env": pick("Env"),
                "Cmd": pick("Cmd"),
                "Image": "",
                "Volumes": pick("Volumes"),
                "WorkingDir": cfg.get("WorkingDir").cloned().unwrap_or(json!("")),
                "Entrypoint": pick("Entrypoint"),
                "OnBuild": null,
                "Labels": pick("Labels"),
                "StopSignal": pick("StopSignal"),
            },
            "Architecture": info.config["architecture"],
            "Os": info.config["os"],
            "Size": self.image_size(info),
            "GraphDriver": {"Name": "overlayfs", "Data": null},
            "RootFS": {"Type": "layers", "Layers": info.diff_ids},
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
            "Descriptor": {
                "mediaType": info.manifest.media_type,
                "digest": info.manifest.digest,
                "size": info.manifest.size,
            },
        })
    }
}

/// Starts the download of an import's tarball: http(s) only, no proxy
/// from the environment, redirects followed; anything but 200 is refused.
async fn fetch_url(url: &str) -> Result<reqwest::Response> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Error::InvalidArgument(format!("invalid URL {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::InvalidArgument(format!(
            "unsupported URL scheme {:?}: only http and https can be imported",
            parsed.scheme()
        )));
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Internal(format!("HTTP client: {e}")))?;
    let resp = client
        .get(parsed)
        .send()
        .await
        .map_err(|e| Error::InvalidArgument(format!("Get {url}: {e}")))?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(Error::InvalidArgument(format!(
            "Get {url}: unexpected status {}",
            resp.status()
        )));
    }
    Ok(resp)
}

/// Seconds since the epoch of an RFC 3339 time, or 0.
fn unix_of(v: &Value) -> i64 {
    v.as_str()
        .and_then(berth_common::time::parse_rfc3339)
        .map_or(0, |t| t.timestamp())
}

/// Serves `berth.gateway.v1.Images`.
pub struct ImagesApi(pub(crate) Arc<Inner>);

/// A progress stream fed by a task running `op`; the task's error ends the
/// stream as its status.
fn progress_stream<F>(op: impl FnOnce(ProgressTx) -> F) -> ProgressStream
where
    F: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let fut = op(tx.clone());
    tokio::spawn(
        async move {
            if let Err(e) = fut.await {
                let _ = tx.send(Err(e.into())).await;
            }
        }
        .in_current_span(),
    );
    ReceiverStream::new(rx)
}

type ProgressStream = ReceiverStream<std::result::Result<Progress, Status>>;

#[tonic::async_trait]
impl Images for ImagesApi {
    type PullStream = ProgressStream;
    type PushStream = ProgressStream;
    type SaveStream = ReceiverStream<std::result::Result<SaveChunk, Status>>;

    async fn save(&self, req: Request<SaveRequest>) -> Result<Response<Self::SaveStream>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let rx = self.0.save(&ns, req.into_inner().references).await?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn load(
        &self,
        req: Request<Streaming<LoadRequest>>,
    ) -> Result<Response<LoadResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        Ok(Response::new(self.0.load(&ns, req.into_inner()).await?))
    }

    async fn history(
        &self,
        req: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        Ok(Response::new(
            self.0.history(&ns, &req.get_ref().reference).await?,
        ))
    }

    async fn prune(
        &self,
        req: Request<PruneImagesRequest>,
    ) -> Result<Response<PruneImagesResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let filters = req.into_inner().filters;
        Ok(Response::new(self.0.prune_images(&ns, filters).await?))
    }

    async fn pull(&self, req: Request<PullRequest>) -> Result<Response<ProgressStream>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let inner = self.0.clone();
        let req = req.into_inner();
        Ok(Response::new(progress_stream(move |tx| async move {
            if req.all_tags {
                inner.pull_all_tags(&ns, req, tx).await
            } else {
                inner.pull(&ns, req, tx).await.map(|_| ())
            }
        })))
    }

    async fn push(&self, req: Request<PushRequest>) -> Result<Response<ProgressStream>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let inner = self.0.clone();
        let req = req.into_inner();
        Ok(Response::new(progress_stream(move |tx| async move {
            inner.push(&ns, req, tx).await
        })))
    }

    async fn login(&self, req: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        Ok(Response::new(self.0.login(req.into_inner()).await?))
    }

    async fn search(
        &self,
        req: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        Ok(Response::new(self.0.search(req.into_inner()).await?))
    }

    async fn import(
        &self,
        req: Request<Streaming<ImportRequest>>,
    ) -> Result<Response<ImportResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let resp = self.0.import(&ns, req.into_inner()).await?;
        let name = if resp.reference.is_empty() {
            &resp.id
        } else {
            &resp.reference
        };
        self.0.emit_image(&ns, &resp.id, "import", name);
        Ok(Response::new(resp))
    }

    async fn list(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let records = self.0.image_records(&ns).await?;
        let by_manifest: Vec<(Arc<ImageInfo>, Vec<String>)> = self
            .0
            .all_images(&ns)
            .await?
            .into_iter()
            .map(|(i, names)| (i, names.iter().map(|n| familiar(n)).collect()))
            .collect();
        let mut images: Vec<ImageSummary> = by_manifest
            .into_iter()
            .map(|(info, repo_tags)| ImageSummary {
                id: info.id.clone(),
                repo_tags,
                repo_digests: Inner::repo_digests(&records, &info.manifest.digest),
                created: unix_of(&info.config["created"]),
                size: self.0.image_size(&info),
                labels: info.runtime_config()["Labels"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        images.sort_by_key(|i| std::cmp::Reverse(i.created));
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn inspect(
        &self,
        req: Request<InspectImageRequest>,
    ) -> Result<Response<InspectResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let (info, _) = self.0.resolve_image(&ns, &req.get_ref().reference).await?;
        let names = self.0.names_of(&ns, &info).await?;
        let records = self.0.image_records(&ns).await?;
        let digests = Inner::repo_digests(&records, &info.manifest.digest);
        let doc = self.0.inspect_image_doc(&info, &names, &digests);
        Ok(Response::new(InspectResponse {
            json: serde_json::to_string(&doc).map_err(|e| Status::internal(e.to_string()))?,
        }))
    }

    async fn tag(&self, req: Request<TagRequest>) -> Result<Response<TagResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.get_ref();
        let (info, _) = self.0.resolve_image(&ns, &r.source).await?;
        let target =
            reference::parse(&r.target).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if target.digest().is_some() {
            return Err(Status::invalid_argument(
                "refusing to create a tag with a digest reference",
            ));
        }
        self.0
            .record_image(&ns, &target.full(), &info.manifest, HashMap::new())
            .await?;
        self.0
            .emit_image(&ns, &info.id, "tag", &familiar(&target.full()));
        Ok(Response::new(TagResponse {}))
    }

    async fn remove(
        &self,
        req: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let id = self
            .0
            .resolve_image(&ns, &req.get_ref().reference)
            .await
            .map(|(info, _)| info.id.clone())
            .unwrap_or_default();
        let resp = self.0.remove_image(&ns, req.get_ref()).await?;
        if !resp.deleted.is_empty() {
            // The blobs of the image go unless another image, in any
            // namespace, still uses them.
            self.0.collect_garbage_quietly().await;
        }
        for name in &resp.untagged {
            self.0.emit_image(&ns, &id, "untag", name);
        }
        if resp.deleted.first().is_some_and(|d| *d == id) {
            self.0.emit_image(&ns, &id, "delete", &id);
        }
        Ok(Response::new(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let info = ImageInfo {
            manifest: Descriptor::default(),
            id: "sha256:x".into(),
            config_desc: Descriptor::default(),
            config: Value::Null,
            layers: vec![],
            diff_ids: vec!["sha256:a".into(), "sha256:b".into()],
        };
        let c = info.chain_ids();
        assert_eq!(c[0], "sha256:a");
        let want = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(b"sha256:a sha256:b"))
        );
        assert_eq!(c[1], want);
    }

    #[test]
    fn hex_prefixes() {
        assert!(is_hex_prefix("3f57d9401f8d"));
        assert!(is_hex_prefix("sha256:3f57"));
        assert!(!is_hex_prefix("busybox"));
        assert!(!is_hex_prefix(""));
        assert_eq!(short("sha256:0123456789abcdef"), "0123456789ab");
    }
}
