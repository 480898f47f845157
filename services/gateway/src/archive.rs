//! `docker save` and `docker load`: images to and from tar archives.
//!
//! Save writes the layout of docker 25+, which is at once a Docker archive
//! (`manifest.json`, `repositories`) and an OCI image layout (`oci-layout`,
//! `index.json`): under `blobs/sha256/` the image configs as stored (so the
//! image IDs stay), the layers uncompressed and named by their diff IDs,
//! and an OCI manifest per image. `docker load`, `podman load` and
//! skopeo's `docker-archive:` and `oci-archive:` transports read it.
//!
//! Load takes a Docker archive (`manifest.json`, any layout of paths; layers
//! plain, gzip or zstd) or an OCI layout (`index.json`, nested indexes
//! resolved for this platform), the whole archive plain, gzip or zstd. The
//! archive is spooled to `<root>/tmp/load-*`, every blob is written into
//! berth-content under a lease and every image unpacked before the first
//! name is given; on any failure the lease ends, the snapshots this load
//! made are removed and garbage is collected, so nothing is left.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::Instrument;

use berth_common::{reference, request};
use berth_proto::content::v1::WriteRequest;
use berth_proto::gateway::v1::{LoadRequest, LoadResponse, LoadedImage, SaveChunk};
use berth_proto::snapshots::v1::RemoveRequest;
use berth_proto::types::v1::Descriptor;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::{Code, Status, Streaming};

use crate::error::{Error, Result};
use crate::images::{familiar, go_arch, ImageInfo};
use crate::Inner;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// containerd's (and docker's) annotation with an image's full name.
const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Size of the chunks streamed out and into berth-content.
const CHUNK: usize = 256 * 1024;
/// Manifests, configs and indexes bigger than this are refused.
const JSON_MAX: u64 = 8 << 20;

/// A private directory under `<root>/tmp`, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(root: &Path, prefix: &str) -> Result<TempDir> {
        let base = root.join("tmp");
        std::fs::create_dir_all(&base).map_err(Error::io(format!("create {}", base.display())))?;
        let dir = base.join(format!("{prefix}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        Ok(TempDir(dir))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes what a crashed gateway left in `<root>/tmp` from saves and loads.
pub(crate) fn cleanup_stale_dirs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root.join("tmp")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if ["save-", "load-", "import-"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn invalid(msg: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("invalid archive: {msg}"))
}

/// Hashes what is written through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

fn decoder<'a, R: Read + 'a>(r: R, c: Compression) -> std::io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
    })
}

/// Sends what is written as [`SaveChunk`]s, in chunks of [`CHUNK`].
struct ChunkSender {
    tx: mpsc::Sender<std::result::Result<SaveChunk, Status>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(SaveChunk { data }))
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buf()
    }
}

/// One image to save: its parsed form, raw config and full names.
struct SaveItem {
    info: Arc<ImageInfo>,
    config: Vec<u8>,
    names: Vec<String>,
}

fn file_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn dir_header() -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_mtime(0);
    h
}

/// Writes the archive of `items` whose layers are unpacked in `layers`
/// (files named by diff ID hex).
fn write_archive<W: Write>(out: W, items: &[SaveItem], layers: &Path) -> std::io::Result<W> {
    let mut b = tar::Builder::new(out);
    let add = |b: &mut tar::Builder<W>, path: &str, data: &[u8]| {
        b.append_data(&mut file_header(data.len() as u64), path, data)
    };
    b.append_data(&mut dir_header(), "blobs/", std::io::empty())?;
    b.append_data(&mut dir_header(), "blobs/sha256/", std::io::empty())?;
    let mut written: std::collections::HashSet<String> = Default::default();
    let mut manifest_json = Vec::new();
    let mut index = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for item in items {
        let info = &item.info;
        let config_hex = sha256_hex(&item.config);
        if written.insert(config_hex.clone()) {
            add(&mut b, &format!("blobs/sha256/{config_hex}"), &item.config)?;
        }
        let mut layer_descs = Vec::new();
        let mut layer_paths = Vec::new();
        for diff_id in &info.diff_ids {
            let hex = hex_of(diff_id).to_string();
            let path = layers.join(&hex);
            let size = std::fs::metadata(&path)?.len();
            if written.insert(hex.clone()) {
                let mut f = File::open(&path)?;
                b.append_data(
                    &mut file_header(size),
                    format!("blobs/sha256/{hex}"),
                    &mut f,
                )?;
            }
            layer_descs.push(json!({"mediaType": OCI_LAYER_TAR, "digest": diff_id, "size": size}));
            layer_paths.push(format!("blobs/sha256/{hex}"));
        }
        let platform = json!({
            "architecture": info.config["architecture"],
            "os": info.config["os"],
        });
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": info.id, "size": item.config.len()},
            "layers": layer_descs,
        }))?;
        let manifest_hex = sha256_hex(&manifest);
        if written.insert(manifest_hex.clone()) {
            add(&mut b, &format!("blobs/sha256/{manifest_hex}"), &manifest)?;
        }
        let desc = |annotations: Value| {
            let mut d = json!({
                "mediaType": OCI_MANIFEST,
                "digest": format!("sha256:{manifest_hex}"),
                "size": manifest.len(),
                "platform": platform,
            });
            if !annotations.is_null() {
                d["annotations"] = annotations;
            }
            d
        };
        let mut repo_tags = Vec::new();
        for name in &item.names {
            let Ok(r) = reference::parse(name) else {
                continue;
            };
            let tag = r.tag().unwrap_or(reference::DEFAULT_TAG).to_string();
            index.push(desc(json!({
                ANNOTATION_IMAGE_NAME: r.full(),
                ANNOTATION_REF_NAME: tag,
            })));
            repositories.entry(r.familiar_name()).or_default().insert(
                tag,
                info.diff_ids
                    .last()
                    .map(|d| hex_of(d).to_string())
                    .unwrap_or_default(),
            );
            repo_tags.push(r.familiar());
        }
        if item.names.is_empty() {
            index.push(desc(Value::Null));
        }
        manifest_json.push(json!({
            "Config": format!("blobs/sha256/{config_hex}"),
            "RepoTags": if repo_tags.is_empty() { Value::Null } else { json!(repo_tags) },
            "Layers": layer_paths,
        }));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": index,
    }))?;
    add(&mut b, "index.json", &index)?;
    let mut m = serde_json::to_vec(&manifest_json)?;
    m.push(b'\n');
    add(&mut b, "manifest.json", &m)?;
    add(&mut b, "oci-layout", br#"{"imageLayoutVersion": "1.0.0"}"#)?;
    if !repositories.is_empty() {
        let mut r = serde_json::to_vec(&repositories)?;
        r.push(b'\n');
        add(&mut b, "repositories", &r)?;
    }
    b.into_inner()
}

/// A regular file in the spooled archive.
#[derive(Clone, Copy, Debug)]
struct Member {
    offset: u64,
    size: u64,
}

/// The spooled (uncompressed) archive and the regular files in it.
struct Spool {
    path: PathBuf,
    members: HashMap<String, Member>,
}

fn clean_path(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            x => out.push(x),
        }
    }
    out.join("/")
}

impl Spool {
    /// Indexes the tar at `path`, checking every member lies inside it.
    fn open(path: PathBuf) -> Result<Spool> {
        let len = std::fs::metadata(&path)
            .map_err(Error::io(format!("stat {}", path.display())))?
            .len();
        let f = File::open(&path).map_err(Error::io(format!("open {}", path.display())))?;
        let mut archive = tar::Archive::new(BufReader::new(f));
        let mut members = HashMap::new();
        let mut entries = 0usize;
        for e in archive.entries().map_err(invalid)? {
            let e = e.map_err(invalid)?;
            entries += 1;
            let kind = e.header().entry_type();
            let name = clean_path(&String::from_utf8_lossy(&e.path_bytes()));
            let offset = e.raw_file_position();
            let size = e.size();
            if offset.saturating_add(size) > len {
                return Err(invalid(format!(
                    "{name} is cut short (the archive is truncated)"
                )));
            }
            if kind.is_file() || kind == tar::EntryType::Continuous {
                members.insert(name, Member { offset, size });
            }
        }
        if entries == 0 {
            return Err(invalid("no entries (empty input?)"));
        }
        Ok(Spool { path, members })
    }

    fn get(&self, name: &str) -> Result<Member> {
        self.members
            .get(&clean_path(name))
            .copied()
            .ok_or_else(|| invalid(format!("{name} is missing")))
    }

    fn read_small(&self, name: &str) -> Result<Vec<u8>> {
        let m = self.get(name)?;
        if m.size > JSON_MAX {
            return Err(invalid(format!("{name} is too big ({} bytes)", m.size)));
        }
        let mut f = File::open(&self.path).map_err(Error::io("open the archive"))?;
        f.seek(SeekFrom::Start(m.offset))
            .map_err(Error::io("seek in the archive"))?;
        let mut buf = vec![0u8; m.size as usize];
        f.read_exact(&mut buf)
            .map_err(|e| invalid(format!("{name}: {e}")))?;
        Ok(buf)
    }

    fn read_json(&self, name: &str) -> Result<Value> {
        serde_json::from_slice(&self.read_small(name)?)
            .map_err(|e| invalid(format!("{name} is not valid JSON: {e}")))
    }

    /// Digest of the member as stored, its compression, and the digest and
    /// size of its uncompressed content.
    fn hash_layer(&self, name: &str) -> Result<(String, Compression, String)> {
        let m = self.get(name)?;
        let mut f = File::open(&self.path).map_err(Error::io("open the archive"))?;
        f.seek(SeekFrom::Start(m.offset))
            .map_err(Error::io("seek in the archive"))?;
        let mut head = [0u8; 4];
        let n = (m.size as usize).min(4);
        f.read_exact(&mut head[..n])
            .map_err(|e| invalid(format!("{name}: {e}")))?;
        let c = detect(&head[..n]);
        f.seek(SeekFrom::Start(m.offset))
            .map_err(Error::io("seek in the archive"))?;
        // Both digests in one pass: the raw bytes go through a hasher on
        // their way to the decompressor.
        struct Tee<R> {
            inner: R,
            hasher: Sha256,
        }
        impl<R: Read> Read for Tee<R> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.inner.read(buf)?;
                self.hasher.update(&buf[..n]);
                Ok(n)
            }
        }
        let mut tee = Tee {
            inner: BufReader::new(f).take(m.size),
            hasher: Sha256::new(),
        };
        let mut diff = HashingWriter {
            inner: std::io::sink(),
            hasher: Sha256::new(),
            size: 0,
        };
        {
            let mut dec = decoder(&mut tee, c).map_err(|e| invalid(format!("{name}: {e}")))?;
            std::io::copy(&mut dec, &mut diff)
                .map_err(|e| invalid(format!("layer {name}: {e}")))?;
        }
        // Whatever follows a compressed stream still counts for the blob.
        std::io::copy(&mut tee, &mut std::io::sink())
            .map_err(|e| invalid(format!("layer {name}: {e}")))?;
        Ok((
            format!("sha256:{}", hex::encode(tee.hasher.finalize())),
            c,
            format!("sha256:{}", hex::encode(diff.hasher.finalize())),
        ))
    }
}

/// An image read from an archive, its blobs in berth-content.
struct Loaded {
    manifest: Descriptor,
    /// Full names.
    names: Vec<String>,
}

impl Inner {
    /// Resolves `refs` for a save: each name, ID or prefix, and a name with
    /// no tag to every tag of its repository.
    async fn save_items(&self, ns: &str, refs: &[String]) -> Result<Vec<SaveItem>> {
        if refs.is_empty() {
            return Err(Error::InvalidArgument(
                "save needs at least one image".into(),
            ));
        }
        let records = self.image_records(ns).await?;
        let mut pending: Vec<(Arc<ImageInfo>, Option<String>)> = Vec::new();
        for r in refs {
            let parsed = reference::parse(r).ok();
            let last = r.rsplit('/').next().unwrap_or(r);
            let untagged = !last.contains(':') && !last.contains('@');
            if let (Some(p), true) = (&parsed, untagged) {
                let repo: Vec<&berth_proto::content::v1::Image> = records
                    .iter()
                    .filter(|rec| reference::parse(&rec.name).is_ok_and(|x| x.name() == p.name()))
                    .collect();
                if !repo.is_empty() {
                    for rec in repo {
                        let Some(t) = &rec.target else { continue };
                        let info = self.image_info(ns, t).await?;
                        pending.push((info, Some(rec.name.clone())));
                    }
                    continue;
                }
            }
            let (info, by_name) = self.resolve_image(ns, r).await?;
            pending.push((info, by_name));
        }
        let mut items: Vec<SaveItem> = Vec::new();
        for (info, name) in pending {
            match items.iter_mut().find(|i| i.info.id == info.id) {
                Some(i) => {
                    if let Some(n) = name {
                        if !i.names.contains(&n) {
                            i.names.push(n);
                        }
                    }
                }
                None => {
                    let config = self.read_blob(ns, &info.id).await?;
                    items.push(SaveItem {
                        info,
                        config,
                        names: name.into_iter().collect(),
                    });
                }
            }
        }
        Ok(items)
    }

    /// Streams the archive of `refs` (see the module docs).
    pub(crate) async fn save(
        self: &Arc<Self>,
        ns: &str,
        refs: Vec<String>,
    ) -> Result<mpsc::Receiver<std::result::Result<SaveChunk, Status>>> {
        let items = self.save_items(ns, &refs).await?;
        for item in &items {
            if item.info.diff_ids.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "image {} has no layers: empty export - not implemented",
                    item.info.short_id()
                )));
            }
        }
        let tmp = TempDir::new(&self.root, "save")?;
        let (tx, rx) = mpsc::channel(4);
        let inner = self.clone();
        let ns = ns.to_string();
        tokio::spawn(
            async move {
                let r = inner.save_into(&ns, items, tmp, tx.clone()).await;
                if let Err(e) = r {
                    let _ = tx.send(Err(e.into())).await;
                } else {
                    for id in refs {
                        inner.emit_image(&ns, &id, "save", &id);
                    }
                }
            }
            .in_current_span(),
        );
        Ok(rx)
    }

    async fn save_into(
        &self,
        ns: &str,
        items: Vec<SaveItem>,
        tmp: TempDir,
        tx: mpsc::Sender<std::result::Result<SaveChunk, Status>>,
    ) -> Result<()> {
        // Every layer once, uncompressed, checked against its diff ID.
        let mut done = std::collections::HashSet::new();
        for item in &items {
            for (layer, diff_id) in item.info.layers.iter().zip(&item.info.diff_ids) {
                if !done.insert(diff_id.clone()) {
                    continue;
                }
                let raw = tmp.path().join("blob");
                self.download_blob(ns, &layer.digest, &raw).await?;
                let out = tmp.path().join(hex_of(diff_id));
                let want = diff_id.clone();
                let digest = layer.digest.clone();
                tokio::task::spawn_blocking(move || -> Result<()> {
                    let mut f = File::open(&raw).map_err(Error::io("open layer"))?;
                    let mut head = [0u8; 4];
                    let n = f.read(&mut head).map_err(Error::io("read layer"))?;
                    f.seek(SeekFrom::Start(0))
                        .map_err(Error::io("seek layer"))?;
                    let mut dec = decoder(BufReader::new(f), detect(&head[..n]))
                        .map_err(Error::io("decompress layer"))?;
                    let mut w = HashingWriter {
                        inner: std::io::BufWriter::new(
                            File::create(&out).map_err(Error::io("create layer"))?,
                        ),
                        hasher: Sha256::new(),
                        size: 0,
                    };
                    std::io::copy(&mut dec, &mut w)
                        .map_err(Error::io(format!("decompress layer {digest}")))?;
                    w.flush().map_err(Error::io("write layer"))?;
                    let got = format!("sha256:{}", hex::encode(w.hasher.finalize()));
                    if got != want {
                        return Err(Error::Internal(format!(
                            "layer {digest} unpacks to {got}, the image says {want}"
                        )));
                    }
                    let _ = std::fs::remove_file(&raw);
                    Ok(())
                })
                .await
                .map_err(|e| Error::Internal(format!("save: {e}")))??;
            }
        }
        let layers = tmp.path().to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let out = ChunkSender {
                tx,
                buf: Vec::with_capacity(CHUNK),
            };
            let mut out =
                write_archive(out, &items, &layers).map_err(Error::io("write archive"))?;
            out.flush().map_err(Error::io("write archive"))?;
            drop(tmp);
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(format!("save: {e}")))?
    }

    /// Copies a blob from berth-content into a file.
    async fn download_blob(&self, ns: &str, digest: &str, to: &Path) -> Result<()> {
        let mut stream = self
            .content
            .clone()
            .read(request(
                ns,
                berth_proto::content::v1::ReadRequest {
                    digest: digest.to_string(),
                    offset: 0,
                    size: 0,
                },
            ))
            .await
            .map_err(Error::service("content"))?
            .into_inner();
        let mut f = tokio::fs::File::create(to)
            .await
            .map_err(Error::io(format!("create {}", to.display())))?;
        while let Some(chunk) = stream.message().await.map_err(Error::service("content"))? {
            f.write_all(&chunk.data)
                .await
                .map_err(Error::io(format!("write {}", to.display())))?;
        }
        f.flush().await.map_err(Error::io("flush"))?;
        Ok(())
    }

    /// Reads an archive from `incoming` and records its images.
    pub(crate) async fn load(
        &self,
        ns: &str,
        mut incoming: Streaming<LoadRequest>,
    ) -> Result<LoadResponse> {
        let tmp = TempDir::new(&self.root, "load")?;
        let raw = tmp.path().join("archive");
        {
            let mut f = tokio::fs::File::create(&raw)
                .await
                .map_err(Error::io(format!("create {}", raw.display())))?;
            loop {
                match incoming.message().await {
                    Ok(Some(m)) => f
                        .write_all(&m.data)
                        .await
                        .map_err(Error::io(format!("write {}", raw.display())))?,
                    Ok(None) => break,
                    Err(s) => {
                        return Err(Error::InvalidArgument(format!(
                            "load stream failed: {}",
                            s.message()
                        )))
                    }
                }
            }
            f.flush().await.map_err(Error::io("flush"))?;
        }
        let dir = tmp.path().to_path_buf();
        let spool = tokio::task::spawn_blocking(move || -> Result<Spool> {
            let mut head = [0u8; 4];
            let n = File::open(&raw)
                .and_then(|mut f| f.read(&mut head))
                .map_err(Error::io("read the archive"))?;
            let c = detect(&head[..n]);
            if c == Compression::None {
                return Spool::open(raw);
            }
            let tar = dir.join("archive.tar");
            let mut dec = decoder(
                BufReader::new(File::open(&raw).map_err(Error::io("open the archive"))?),
                c,
            )
            .map_err(|e| invalid(format!("decompress: {e}")))?;
            let mut out =
                std::io::BufWriter::new(File::create(&tar).map_err(Error::io("create tar"))?);
            std::io::copy(&mut dec, &mut out).map_err(|e| invalid(format!("decompress: {e}")))?;
            out.flush().map_err(Error::io("write tar"))?;
            let _ = std::fs::remove_file(&raw);
            Spool::open(tar)
        })
        .await
        .map_err(|e| Error::Internal(format!("load: {e}")))??;
        let spool = Arc::new(spool);

        let lease = self.new_lease("load").await?;
        let mut made_snapshots: Vec<String> = Vec::new();
        let result = self
            .load_leased(ns, spool.clone(), &lease, &mut made_snapshots)
            .await;
        let result = match result {
            Ok(images) => self.name_loaded(ns, images).await,
            Err(e) => Err(e),
        };
        self.end_lease(&lease).await;
        if result.is_err() {
            // Nothing of a failed load stays: its snapshots (top first),
            // then its blobs.
            for key in made_snapshots.iter().rev() {
                let _ = self
                    .snapshots
                    .clone()
                    .remove(request(ns, RemoveRequest { key: key.clone() }))
                    .await;
            }
            self.collect_garbage_quietly().await;
        }
        drop(tmp);
        result
    }

    async fn load_leased(
        &self,
        ns: &str,
        spool: Arc<Spool>,
        lease: &str,
        made: &mut Vec<String>,
    ) -> Result<Vec<(Arc<ImageInfo>, Vec<String>)>> {
        let images = if spool.members.contains_key("manifest.json") {
            self.load_docker(ns, &spool, lease).await?
        } else if spool.members.contains_key("index.json") {
            self.load_oci(ns, &spool, lease).await?
        } else {
            return Err(invalid(
                "neither manifest.json (Docker) nor index.json (OCI) found",
            ));
        };
        if images.is_empty() {
            return Err(invalid("it holds no image"));
        }
        let mut out = Vec::new();
        for img in images {
            let info = self.image_info(ns, &img.manifest).await?;
            for chain_id in info.chain_ids() {
                if !self.snapshot_exists(ns, &chain_id).await? {
                    made.push(chain_id);
                }
            }
            self.ensure_unpacked(ns, &info).await?;
            out.push((info, img.names));
        }
        Ok(out)
    }

    /// Gives the loaded images their names (or keeps them as dangling).
    async fn name_loaded(
        &self,
        ns: &str,
        images: Vec<(Arc<ImageInfo>, Vec<String>)>,
    ) -> Result<LoadResponse> {
        let mut resp = LoadResponse::default();
        for (info, names) in images {
            if names.is_empty() {
                self.record_image(ns, "", &info.manifest, HashMap::new())
                    .await?;
            }
            for n in &names {
                self.record_image(ns, n, &info.manifest, HashMap::new())
                    .await?;
            }
            let shown: Vec<String> = names.iter().map(|n| familiar(n)).collect();
            for n in &shown {
                self.emit_image(ns, &info.id, "load", n);
            }
            if shown.is_empty() {
                self.emit_image(ns, &info.id, "load", &info.id);
            }
            resp.images.push(LoadedImage {
                id: info.id.clone(),
                names: shown,
            });
        }
        Ok(resp)
    }

    /// Stores a member of the archive as a blob held by `lease`, unless
    /// berth-content has it already (then it is added to the lease).
    async fn store_member(
        &self,
        ns: &str,
        spool: &Spool,
        name: &str,
        digest: &str,
        lease: &str,
    ) -> Result<i64> {
        let m = spool.get(name)?;
        if self.hold(lease, digest).await? {
            return Ok(m.size as i64);
        }
        let mut f = tokio::fs::File::open(&spool.path)
            .await
            .map_err(Error::io("open the archive"))?;
        f.seek(SeekFrom::Start(m.offset))
            .await
            .map_err(Error::io("seek in the archive"))?;
        let (wtx, writer) = self.content_writer(ns, 4);
        let r#ref = format!("load-{}-{:08x}", hex_of(digest), rand::random::<u32>());
        let mut off = 0u64;
        let mut first = true;
        loop {
            let want = ((m.size - off) as usize).min(CHUNK);
            let mut buf = vec![0u8; want];
            f.read_exact(&mut buf)
                .await
                .map_err(|e| invalid(format!("{name}: {e}")))?;
            let last = off + want as u64 == m.size;
            let msg = WriteRequest {
                r#ref: r#ref.clone(),
                expected: if first {
                    digest.to_string()
                } else {
                    String::new()
                },
                total: m.size as i64,
                offset: off as i64,
                data: buf.into(),
                commit: last,
                lease: if first {
                    lease.to_string()
                } else {
                    String::new()
                },
                ..Default::default()
            };
            first = false;
            off += want as u64;
            if wtx.send(msg).await.is_err() || last {
                break;
            }
        }
        drop(wtx);
        let r = writer
            .await
            .map_err(|e| Error::Internal(format!("load: {e}")))?;
        match r {
            Ok(_) => Ok(m.size as i64),
            Err(s) if s.code() == Code::InvalidArgument => Err(invalid(format!(
                "{name} does not match its digest {digest}: {}",
                s.message()
            ))),
            Err(s) => Err(Error::service("content")(s)),
        }
    }

    async fn load_docker(&self, ns: &str, spool: &Arc<Spool>, lease: &str) -> Result<Vec<Loaded>> {
        let manifest = spool.read_json("manifest.json")?;
        let items = manifest
            .as_array()
            .ok_or_else(|| invalid("manifest.json is not a list"))?;
        let mut out = Vec::new();
        for item in items {
            let config_path = item["Config"]
                .as_str()
                .ok_or_else(|| invalid("a manifest.json entry has no Config"))?;
            let config = spool.read_small(config_path)?;
            let config_json: Value = serde_json::from_slice(&config)
                .map_err(|e| invalid(format!("{config_path} is not valid JSON: {e}")))?;
            let diff_ids: Vec<String> = config_json["rootfs"]["diff_ids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let layer_paths: Vec<String> = item["Layers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if layer_paths.len() != diff_ids.len() {
                return Err(invalid(format!(
                    "{config_path} lists {} layers, manifest.json {}",
                    diff_ids.len(),
                    layer_paths.len()
                )));
            }
            let mut layers = Vec::new();
            for (path, diff_id) in layer_paths.iter().zip(&diff_ids) {
                let (sp, p) = (spool.clone(), path.clone());
                let (digest, c, got) = tokio::task::spawn_blocking(move || sp.hash_layer(&p))
                    .await
                    .map_err(|e| Error::Internal(format!("load: {e}")))??;
                if &got != diff_id {
                    return Err(invalid(format!(
                        "layer {path} has diff ID {got}, the image config says {diff_id}"
                    )));
                }
                let size = self.store_member(ns, spool, path, &digest, lease).await?;
                let media = match c {
                    Compression::None => DOCKER_LAYER_TAR,
                    Compression::Gzip => DOCKER_LAYER_GZIP,
                    Compression::Zstd => OCI_LAYER_ZSTD,
                };
                layers.push(json!({"mediaType": media, "size": size, "digest": digest}));
            }
            let config_desc = self
                .write_blob(ns, DOCKER_CONFIG, config.clone(), lease)
                .await?;
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": DOCKER_CONFIG, "size": config_desc.size, "digest": config_desc.digest},
                "layers": layers,
            }))
            .map_err(|e| Error::Internal(e.to_string()))?;
            let manifest = self
                .write_blob(ns, DOCKER_MANIFEST, manifest, lease)
                .await?;
            let mut names = Vec::new();
            for t in item["RepoTags"].as_array().into_iter().flatten() {
                let Some(t) = t.as_str() else { continue };
                let r = reference::parse(t)
                    .map_err(|e| invalid(format!("bad name {t:?} in manifest.json: {e}")))?;
                names.push(r.full());
            }
            out.push(Loaded { manifest, names });
        }
        Ok(out)
    }

    async fn load_oci(&self, ns: &str, spool: &Arc<Spool>, lease: &str) -> Result<Vec<Loaded>> {
        let layout = spool.read_json("oci-layout").ok();
        if let Some(l) = &layout {
            if l["imageLayoutVersion"].as_str().is_none() {
                return Err(invalid("oci-layout has no imageLayoutVersion"));
            }
        }
        let index = spool.read_json("index.json")?;
        let blob_path = |digest: &str| -> Result<String> {
            let (alg, hex) = digest
                .split_once(':')
                .ok_or_else(|| invalid(format!("bad digest {digest:?}")))?;
            if alg != "sha256" || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!("unsupported digest {digest:?}")));
            }
            Ok(format!("blobs/{alg}/{hex}"))
        };
        let mut out = Vec::new();
        // (descriptor, annotations of the top-level entry)
        let mut todo: Vec<(Value, Value)> = index["manifests"]
            .as_array()
            .ok_or_else(|| invalid("index.json has no manifests"))?
            .iter()
            .map(|m| (m.clone(), m["annotations"].clone()))
            .collect();
        todo.reverse();
        let (os, arch) = ("linux", go_arch());
        while let Some((desc, annotations)) = todo.pop() {
            let media = desc["mediaType"].as_str().unwrap_or_default();
            let digest = desc["digest"].as_str().unwrap_or_default().to_string();
            let path = blob_path(&digest)?;
            if media == OCI_INDEX || media == DOCKER_LIST {
                let nested: Value = spool.read_json(&path)?;
                let entries = nested["manifests"].as_array().cloned().unwrap_or_default();
                let chosen = entries
                    .iter()
                    .find(|m| {
                        m["platform"]["os"].as_str() == Some(os)
                            && m["platform"]["architecture"].as_str() == Some(arch)
                    })
                    .or(if entries.len() == 1 {
                        entries.first()
                    } else {
                        None
                    })
                    .ok_or_else(|| {
                        invalid(format!("no manifest for {os}/{arch} in index {digest}"))
                    })?;
                todo.push((chosen.clone(), annotations));
                continue;
            }
            let manifest_bytes = spool.read_small(&path)?;
            if sha256_hex(&manifest_bytes) != hex_of(&digest) {
                return Err(invalid(format!("{path} does not match its digest")));
            }
            let manifest: Value = serde_json::from_slice(&manifest_bytes)
                .map_err(|e| invalid(format!("manifest {digest} is not valid JSON: {e}")))?;
            let config = &manifest["config"];
            let config_digest = config["digest"].as_str().unwrap_or_default();
            self.store_member(ns, spool, &blob_path(config_digest)?, config_digest, lease)
                .await?;
            for layer in manifest["layers"].as_array().into_iter().flatten() {
                let d = layer["digest"].as_str().unwrap_or_default();
                self.store_member(ns, spool, &blob_path(d)?, d, lease)
                    .await?;
            }
            let manifest_media = manifest["mediaType"]
                .as_str()
                .filter(|m| !m.is_empty())
                .unwrap_or(if media.is_empty() {
                    OCI_MANIFEST
                } else {
                    media
                })
                .to_string();
            let stored = self
                .write_blob(ns, &manifest_media, manifest_bytes, lease)
                .await?;
            let mut names = Vec::new();
            let full = annotations[ANNOTATION_IMAGE_NAME].as_str();
            let ref_name = annotations[ANNOTATION_REF_NAME].as_str();
            // A bare tag ("latest") in ref.name names nothing by itself.
            let name = full.or(ref_name.filter(|r| r.contains(':') || r.contains('/')));
            if let Some(n) = name {
                let r = reference::parse(n)
                    .map_err(|e| invalid(format!("bad image name {n:?} in index.json: {e}")))?;
                if r.digest().is_none() {
                    names.push(r.full());
                }
            }
            match out
                .iter_mut()
                .find(|l: &&mut Loaded| l.manifest.digest == stored.digest)
            {
                Some(l) => l.names.extend(names),
                None => out.push(Loaded {
                    manifest: stored,
                    names,
                }),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned() {
        assert_eq!(clean_path("./manifest.json"), "manifest.json");
        assert_eq!(clean_path("/blobs//sha256/ab"), "blobs/sha256/ab");
        assert_eq!(clean_path("a/../b"), "b");
    }

    #[test]
    fn compression_is_detected() {
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(detect(b"usta"), Compression::None);
    }
}
