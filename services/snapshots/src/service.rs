//! The `Snapshots` gRPC service.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use berth_proto::content::v1::content_client::ContentClient;
use berth_proto::content::v1::ReadRequest;
use berth_proto::snapshots::v1::{
    apply_stream_request, snapshots_server::Snapshots, ApplyRequest, ApplyResponse,
    ApplyStreamRequest, CommitRequest, ListRequest, ListResponse, MountsRequest, MountsResponse,
    PrepareRequest, RemoveRequest, SnapshotInfo, StatRequest, UsageResponse,
};
use berth_proto::types::v1::{Descriptor, Empty, Mount};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{Error, Result};
use crate::meta::{Kind, NewSnapshot, Rebase, Record, Store};
use crate::unpack;

/// Chunks in flight between the content stream and the unpacker.
const APPLY_QUEUE: usize = 16;

/// berth-snapshots: overlayfs snapshots with metadata in redb and layer
/// unpacking from berth-content.
///
/// Layout under `<root>/snapshots/`: `metadata.redb` and
/// `snapshots/<id>/{fs,work}`. The service never mounts anything; it hands
/// out mount descriptions that the runtime performs.
#[derive(Clone)]
pub struct SnapshotsService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// `<root>/snapshots/snapshots`
    dirs: PathBuf,
    content: ContentClient<Channel>,
    /// (namespace, key) of snapshots with an Apply running.
    applying: Mutex<HashSet<(String, String)>>,
}

impl Inner {
    fn snap_dir(&self, id: u64) -> PathBuf {
        self.dirs.join(id.to_string())
    }
    fn fs_dir(&self, id: u64) -> PathBuf {
        self.snap_dir(id).join("fs")
    }
    fn work_dir(&self, id: u64) -> PathBuf {
        self.snap_dir(id).join("work")
    }

    fn fs_str(&self, id: u64) -> String {
        self.fs_dir(id).to_string_lossy().into_owned()
    }

    /// The mounts of snapshot `key`.
    fn mounts(&self, ns: &str, key: &str) -> Result<Vec<Mount>> {
        let chain = self.store.chain(ns, key)?;
        let (_, rec) = &chain[0];
        let parents: Vec<String> = chain[1..].iter().map(|(_, r)| self.fs_str(r.id)).collect();
        let bind = |source: String, rw: &str| Mount {
            r#type: "bind".into(),
            source,
            options: vec!["rbind".into(), rw.into()],
        };
        Ok(match rec.kind {
            Kind::Committed => {
                return Err(Error::Committed {
                    key: key.to_string(),
                })
            }
            Kind::Active if parents.is_empty() => vec![bind(self.fs_str(rec.id), "rw")],
            Kind::Active => vec![Mount {
                r#type: "overlay".into(),
                source: "overlay".into(),
                options: vec![
                    format!("lowerdir={}", parents.join(":")),
                    format!("upperdir={}", self.fs_str(rec.id)),
                    format!("workdir={}", self.work_dir(rec.id).to_string_lossy()),
                ],
            }],
            Kind::View if parents.is_empty() => vec![bind(self.fs_str(rec.id), "ro")],
            Kind::View if parents.len() == 1 => vec![bind(parents[0].clone(), "ro")],
            Kind::View => vec![Mount {
                r#type: "overlay".into(),
                source: "overlay".into(),
                options: vec![format!("lowerdir={}", parents.join(":"))],
            }],
        })
    }

    /// Makes `<id>/{fs,work}`, replacing a leftover from an aborted create.
    fn make_dirs(&self, id: u64) -> Result<()> {
        let dir = self.snap_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing stale {}", dir.display()), e)),
        }
        for d in [self.fs_dir(id), self.work_dir(id)] {
            std::fs::create_dir_all(&d)
                .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }
        Ok(())
    }

    fn prepare(&self, ns: &str, r: PrepareRequest, kind: Kind) -> Result<Vec<Mount>> {
        check_key(&r.key)?;
        let labels: BTreeMap<String, String> = r.labels.into_iter().collect();
        self.store.create(
            NewSnapshot {
                ns,
                key: &r.key,
                parent: &r.parent,
                kind,
                labels,
                created_at: berth_common::time::now_unix(),
            },
            |id| self.make_dirs(id),
        )?;
        self.mounts(ns, &r.key)
    }

    fn remove(&self, ns: &str, key: &str) -> Result<()> {
        if self.applying_now(ns, key) {
            return Err(Error::Busy {
                key: key.to_string(),
            });
        }
        let rec = self.store.remove(ns, key)?;
        let dir = self.snap_dir(rec.id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            // The record is gone; the next open() removes the orphan.
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove snapshot dir");
        }
        Ok(())
    }

    /// Commits active `r.key` as `r.name`; with `r.parent`, onto that
    /// committed snapshot, first giving the layer's implicit directories the
    /// attributes of the new parent chain. The caller holds the key's
    /// [`ApplyGuard`], so no Apply, Remove or other Commit of it runs
    /// meanwhile. The filesystem is fixed before the metadata transaction:
    /// a crash in between leaves the snapshot active, and committing it
    /// again does the same fix again.
    fn commit(&self, ns: &str, r: CommitRequest) -> Result<()> {
        check_key(&r.name)?;
        let labels: BTreeMap<String, String> = r.labels.into_iter().collect();
        let now = berth_common::time::now_unix();
        if r.parent.is_empty() {
            self.store.commit(ns, &r.name, &r.key, None, labels, now)?;
            return Ok(());
        }
        let rec = self.active(ns, &r.key)?;
        if self.store.get(ns, &r.name)?.is_some() {
            return Err(Error::AlreadyExists { key: r.name });
        }
        if rec.parent != r.parent {
            if !rec.parent.is_empty() {
                return Err(Error::RebaseRefused {
                    key: r.key,
                    prepared: rec.parent,
                    asked: r.parent,
                });
            }
            let chain = match self.store.chain(ns, &r.parent) {
                Ok(c) => c,
                Err(Error::NotFound { .. }) => {
                    return Err(Error::ParentNotFound { parent: r.parent })
                }
                Err(e) => return Err(e),
            };
            if chain[0].1.kind != Kind::Committed {
                return Err(Error::ParentNotFound { parent: r.parent });
            }
            let lowers: Vec<PathBuf> = chain.iter().map(|(_, p)| self.fs_dir(p.id)).collect();
            unpack::rebase_implicit_dirs(&self.fs_dir(rec.id), &lowers, &rec.implicit_dirs)?;
        }
        self.store.commit(
            ns,
            &r.name,
            &r.key,
            Some(Rebase {
                parent: &r.parent,
                id: rec.id,
            }),
            labels,
            now,
        )?;
        Ok(())
    }

    fn applying_now(&self, ns: &str, key: &str) -> bool {
        self.applying
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(ns.to_string(), key.to_string()))
    }

    fn active(&self, ns: &str, key: &str) -> Result<Record> {
        let rec = self.store.get(ns, key)?.ok_or_else(|| Error::NotFound {
            key: key.to_string(),
        })?;
        if rec.kind != Kind::Active {
            return Err(Error::NotActive {
                key: key.to_string(),
                kind: rec.kind.name(),
            });
        }
        Ok(rec)
    }
}

/// Marks an Apply as running until dropped.
struct ApplyGuard {
    inner: Arc<Inner>,
    id: (String, String),
}

impl ApplyGuard {
    fn new(inner: &Arc<Inner>, ns: &str, key: &str) -> Result<Self> {
        let id = (ns.to_string(), key.to_string());
        let mut set = inner.applying.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(id.clone()) {
            return Err(Error::Busy {
                key: key.to_string(),
            });
        }
        Ok(ApplyGuard {
            inner: inner.clone(),
            id,
        })
    }
}

impl Drop for ApplyGuard {
    fn drop(&mut self) {
        self.inner
            .applying
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("snapshot key is empty".into()));
    }
    Ok(())
}

fn check_digest(d: &str) -> Result<()> {
    let ok = d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "layer digest {d:?} is not a sha256:<64 hex> digest"
        )))
    }
}

fn info(key: String, r: Record) -> SnapshotInfo {
    use berth_proto::snapshots::v1::Kind as K;
    let kind = match r.kind {
        Kind::View => K::View,
        Kind::Active => K::Active,
        Kind::Committed => K::Committed,
    };
    SnapshotInfo {
        name: key,
        parent: r.parent,
        kind: kind as i32,
        created_at: r.created_at,
        labels: r.labels.into_iter().collect::<HashMap<_, _>>(),
    }
}

/// Disk usage of a tree: bytes allocated (st_blocks * 512) and inodes, each
/// hard-linked inode counted once; symlinks are not followed.
pub fn disk_usage(root: &Path) -> io::Result<(u64, u64)> {
    let mut seen = HashSet::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p)?;
        if seen.insert((md.dev(), md.ino())) {
            bytes += md.blocks() * 512;
            inodes += 1;
        }
        if md.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok((bytes, inodes))
}

/// Removes everything inside `dir` (not `dir` itself) and resets its mode.
fn wipe(dir: &Path) -> io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(e.path())?;
        } else {
            std::fs::remove_file(e.path())?;
        }
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

/// The bytes of a layer blob as they arrive (from berth-content or from the
/// client).
type Chunks = Pin<Box<dyn Stream<Item = Result<bytes::Bytes>> + Send>>;

/// An active snapshot an Apply writes into, held busy until dropped.
struct Target {
    key: String,
    layer: Descriptor,
    rec: Record,
    /// `fs` dirs of the parent chain, nearest first.
    lowers: Vec<PathBuf>,
    /// Hash the blob and compare it with the layer digest (not when the
    /// caller verifies it: ApplyRequest.digest_verified).
    verify_blob: bool,
    _guard: ApplyGuard,
}

/// A blocking reader over the chunks the async side receives.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<bytes::Bytes>>,
    buf: bytes::Bytes,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl SnapshotsService {
    /// Opens (creating if needed) the snapshotter under `<root>/snapshots/`,
    /// reading layer blobs through `content`. Snapshot directories that no
    /// record references (left by a crash during create or remove) are
    /// deleted.
    pub fn open(root: &Path, content: ContentClient<Channel>) -> Result<Self, Error> {
        let base = root.join("snapshots");
        let dirs = base.join("snapshots");
        std::fs::create_dir_all(&dirs)
            .map_err(|e| Error::io(format!("creating {}", dirs.display()), e))?;
        let store = Store::open(&base.join("metadata.redb"))?;
        let ids = store.all_ids()?;
        for e in std::fs::read_dir(&dirs)
            .map_err(|e| Error::io(format!("reading {}", dirs.display()), e))?
        {
            let e = e.map_err(|e| Error::io(format!("reading {}", dirs.display()), e))?;
            let name = e.file_name();
            let Some(id) = name.to_str().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            if !ids.contains(&id) {
                tracing::info!(dir = %e.path().display(), "removing orphaned snapshot dir");
                std::fs::remove_dir_all(e.path())
                    .map_err(|err| Error::io(format!("removing {}", e.path().display()), err))?;
            }
        }
        let svc = SnapshotsService {
            inner: Arc::new(Inner {
                store,
                dirs,
                content,
                applying: Mutex::new(HashSet::new()),
            }),
        };
        // Unpacks that were streaming when this service stopped cannot go
        // on: their clients lost the stream.
        for (ns, key) in svc
            .inner
            .store
            .active_labelled(berth_common::SNAPSHOT_EPHEMERAL_LABEL)?
        {
            tracing::info!(ns = %ns, key = %key, "removing an unfinished streamed unpack");
            if let Err(e) = svc.inner.remove(&ns, &key) {
                tracing::warn!(ns = %ns, key = %key, "cannot remove it: {e}");
            }
        }
        Ok(svc)
    }

    /// Runs `f` on the blocking pool (redb commits fsync, file trees are
    /// walked synchronously).
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::Internal(format!("task failed: {e}")))?
    }

    /// Checks an Apply's header and marks the snapshot busy.
    async fn begin_apply(&self, ns: &str, r: ApplyRequest) -> Result<Target> {
        check_key(&r.key)?;
        let layer = r.layer.ok_or_else(|| {
            Error::InvalidArgument("apply: the layer descriptor is missing".into())
        })?;
        check_digest(&layer.digest)?;
        // Busy first, so that no Commit or Remove changes the record after
        // it is read.
        let guard = ApplyGuard::new(&self.inner, ns, &r.key)?;
        let (rec, lowers) = {
            let (ns, key) = (ns.to_string(), r.key.clone());
            self.blocking(move |i| {
                let rec = i.active(&ns, &key)?;
                let lowers: Vec<PathBuf> = i
                    .store
                    .chain(&ns, &key)?
                    .iter()
                    .skip(1)
                    .map(|(_, r)| i.fs_dir(r.id))
                    .collect();
                Ok((rec, lowers))
            })
            .await?
        };
        Ok(Target {
            key: r.key,
            layer,
            rec,
            lowers,
            verify_blob: !r.digest_verified,
            _guard: guard,
        })
    }

    /// Apply: the blob is read from berth-content.
    async fn apply(&self, ns: String, r: ApplyRequest) -> Result<ApplyResponse> {
        // The blob comes from berth-content: verified again as it is read.
        let r = ApplyRequest {
            digest_verified: false,
            ..r
        };
        let target = self.begin_apply(&ns, r).await?;
        let digest = target.layer.digest.clone();
        let mut client = self.inner.content.clone();
        let stream = client
            .read(berth_common::request(
                &ns,
                ReadRequest {
                    digest: digest.clone(),
                    offset: 0,
                    size: 0,
                },
            ))
            .await
            .map_err(|status| Error::Content {
                digest: digest.clone(),
                status,
            })?
            .into_inner();
        let chunks = stream.map(move |m| {
            m.map(|m| m.data).map_err(|status| Error::Content {
                digest: digest.clone(),
                status,
            })
        });
        self.unpack_into(&ns, target, Box::pin(chunks)).await
    }

    /// ApplyStream: the header, then the blob from the client.
    async fn apply_stream(
        &self,
        ns: String,
        mut incoming: Streaming<ApplyStreamRequest>,
    ) -> Result<ApplyResponse> {
        use apply_stream_request::Payload;
        let header = match incoming.message().await {
            Ok(Some(ApplyStreamRequest {
                payload: Some(Payload::Header(h)),
            })) => h,
            Ok(_) => {
                return Err(Error::InvalidArgument(
                    "the first ApplyStream message must be the header".into(),
                ))
            }
            Err(s) => return Err(Error::StreamBroken(s.message().to_string())),
        };
        let target = self.begin_apply(&ns, header).await?;
        let chunks = incoming.map(|m| match m {
            Ok(ApplyStreamRequest {
                payload: Some(Payload::Data(d)),
            }) => Ok(d),
            Ok(_) => Err(Error::InvalidArgument(
                "only the first ApplyStream message may be (and must be) the header".into(),
            )),
            Err(s) => Err(Error::StreamBroken(s.message().to_string())),
        });
        self.unpack_into(&ns, target, Box::pin(chunks)).await
    }

    /// Unpacks `chunks` into the target while they arrive, checks digest and
    /// size against the descriptor and records the implicit directories.
    /// On any error the snapshot is emptied.
    async fn unpack_into(
        &self,
        ns: &str,
        target: Target,
        mut chunks: Chunks,
    ) -> Result<ApplyResponse> {
        let Target {
            key,
            layer,
            rec,
            lowers,
            verify_blob,
            _guard,
        } = target;
        let fs = self.inner.fs_dir(rec.id);
        let (tx, rx) = mpsc::channel(APPLY_QUEUE);
        let fs2 = fs.clone();
        let mut implicit = rec.implicit_dirs.clone();
        let task = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx,
                buf: bytes::Bytes::new(),
                pos: 0,
            };
            let u = unpack::unpack_with(reader, &fs2, &lowers, &mut implicit, verify_blob)?;
            Ok::<_, Error>((u, implicit))
        });
        let mut stream_err = None;
        let mut ended = false;
        let mut received = 0u64;
        loop {
            match chunks.next().await {
                Some(Ok(data)) => {
                    received += data.len() as u64;
                    if tx.send(Ok(data)).await.is_err() {
                        break; // the unpacker stopped; its error says why
                    }
                }
                Some(Err(e)) => {
                    let _ = tx
                        .send(Err(io::Error::other("the layer stream failed")))
                        .await;
                    stream_err = Some(e);
                    break;
                }
                None => {
                    ended = true;
                    break;
                }
            }
        }
        drop(tx);
        drop(chunks);
        let joined = task.await;
        let outcome = match (stream_err, joined) {
            (Some(e), _) => Err(e),
            (None, _) if ended && layer.size > 0 && received < layer.size as u64 => {
                Err(Error::InvalidArgument(format!(
                    "layer {}: the data ended after {received} of {} bytes",
                    layer.digest, layer.size
                )))
            }
            (None, Err(e)) => Err(Error::Internal(format!("unpack task failed: {e}"))),
            (None, Ok(Err(e))) => Err(e),
            (None, Ok(Ok((u, _))))
                if u.compressed_digest
                    .as_ref()
                    .is_some_and(|d| *d != layer.digest) =>
            {
                Err(Error::DigestMismatch {
                    expected: layer.digest.clone(),
                    actual: u.compressed_digest.unwrap_or_default(),
                })
            }
            (None, Ok(Ok((u, _)))) if layer.size > 0 && u.compressed_size != layer.size as u64 => {
                Err(Error::InvalidArgument(format!(
                    "layer {} is {} bytes, the descriptor says {}",
                    layer.digest, u.compressed_size, layer.size
                )))
            }
            (None, Ok(Ok((u, implicit)))) => {
                let (ns2, key2, id) = (ns.to_string(), key.clone(), rec.id);
                let t = u.timings;
                self.blocking(move |i| i.store.set_implicit_dirs(&ns2, &key2, id, implicit))
                    .await
                    .map(|()| {
                        tracing::info!(
                            ns = %ns, key = %key, layer = %layer.digest, diff_id = %u.diff_id,
                            bytes = u.compressed_size, unpacked = u.size,
                            wait_ms = t.wait.as_millis() as u64,
                            hash_blob_ms = t.hash_blob.as_millis() as u64,
                            inflate_ms = t.inflate.as_millis() as u64,
                            hash_diff_ms = t.hash_diff.as_millis() as u64,
                            write_ms = t.write.as_millis() as u64,
                            "applied layer"
                        );
                        ApplyResponse {
                            diff_id: u.diff_id,
                            size: u.size as i64,
                        }
                    })
            }
        };
        match &outcome {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(key = %key, layer = %layer.digest, error = %e, "apply failed; wiping the snapshot");
                let (ns, key, id) = (ns.to_string(), key.clone(), rec.id);
                let wiped = self
                    .blocking(move |i| {
                        let fs = i.fs_dir(id);
                        wipe(&fs).map_err(|e| Error::io(format!("wiping {}", fs.display()), e))?;
                        // What earlier applies made is gone too.
                        i.store.set_implicit_dirs(&ns, &key, id, Default::default())
                    })
                    .await;
                if let Err(err) = wiped {
                    tracing::error!(dir = %fs.display(), error = %err, "cannot wipe snapshot");
                }
            }
        }
        outcome
    }
}

fn ns_of<T>(req: &Request<T>) -> Result<String, Status> {
    berth_common::namespace_of(req)
}

#[tonic::async_trait]
impl Snapshots for SnapshotsService {
    async fn prepare(
        &self,
        request: Request<PrepareRequest>,
    ) -> Result<Response<MountsResponse>, Status> {
        let ns = ns_of(&request)?;
        let r = request.into_inner();
        let mounts = self
            .blocking(move |i| i.prepare(&ns, r, Kind::Active))
            .await?;
        Ok(Response::new(MountsResponse { mounts }))
    }

    async fn view(
        &self,
        request: Request<PrepareRequest>,
    ) -> Result<Response<MountsResponse>, Status> {
        let ns = ns_of(&request)?;
        let r = request.into_inner();
        let mounts = self
            .blocking(move |i| i.prepare(&ns, r, Kind::View))
            .await?;
        Ok(Response::new(MountsResponse { mounts }))
    }

    async fn mounts(
        &self,
        request: Request<MountsRequest>,
    ) -> Result<Response<MountsResponse>, Status> {
        let ns = ns_of(&request)?;
        let key = request.into_inner().key;
        let mounts = self.blocking(move |i| i.mounts(&ns, &key)).await?;
        Ok(Response::new(MountsResponse { mounts }))
    }

    async fn commit(&self, request: Request<CommitRequest>) -> Result<Response<Empty>, Status> {
        let ns = ns_of(&request)?;
        let r = request.into_inner();
        let guard = ApplyGuard::new(&self.inner, &ns, &r.key)?;
        self.blocking(move |i| {
            let _guard = guard;
            i.commit(&ns, r)
        })
        .await?;
        Ok(Response::new(Empty {}))
    }

    async fn remove(&self, request: Request<RemoveRequest>) -> Result<Response<Empty>, Status> {
        let ns = ns_of(&request)?;
        let key = request.into_inner().key;
        self.blocking(move |i| i.remove(&ns, &key)).await?;
        Ok(Response::new(Empty {}))
    }

    async fn stat(&self, request: Request<StatRequest>) -> Result<Response<SnapshotInfo>, Status> {
        let ns = ns_of(&request)?;
        let key = request.into_inner().key;
        let info = self
            .blocking(move |i| {
                let rec = i
                    .store
                    .get(&ns, &key)?
                    .ok_or_else(|| Error::NotFound { key: key.clone() })?;
                Ok(info(key, rec))
            })
            .await?;
        Ok(Response::new(info))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let ns = ns_of(&request)?;
        let snapshots = self
            .blocking(move |i| {
                Ok(i.store
                    .list(&ns)?
                    .into_iter()
                    .map(|(k, r)| info(k, r))
                    .collect())
            })
            .await?;
        Ok(Response::new(ListResponse { snapshots }))
    }

    async fn usage(
        &self,
        request: Request<StatRequest>,
    ) -> Result<Response<UsageResponse>, Status> {
        let ns = ns_of(&request)?;
        let key = request.into_inner().key;
        let (size, inodes) = self
            .blocking(move |i| {
                let rec = i
                    .store
                    .get(&ns, &key)?
                    .ok_or_else(|| Error::NotFound { key: key.clone() })?;
                let fs = i.fs_dir(rec.id);
                disk_usage(&fs).map_err(|e| Error::io(format!("usage of {key:?}"), e))
            })
            .await?;
        Ok(Response::new(UsageResponse {
            size: size as i64,
            inodes: inodes as i64,
        }))
    }

    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        let ns = ns_of(&request)?;
        let resp = SnapshotsService::apply(self, ns, request.into_inner()).await?;
        Ok(Response::new(resp))
    }

    async fn apply_stream(
        &self,
        request: Request<Streaming<ApplyStreamRequest>>,
    ) -> Result<Response<ApplyResponse>, Status> {
        let ns = ns_of(&request)?;
        let resp = SnapshotsService::apply_stream(self, ns, request.into_inner()).await?;
        Ok(Response::new(resp))
    }
}
