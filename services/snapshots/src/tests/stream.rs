//! ApplyStream over a real gRPC connection, and rebasing commits: layers
//! unpacked concurrently without their parents, then committed in order,
//! must equal layers unpacked one on top of the other.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_proto::content::v1::content_client::ContentClient;
use berth_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::snapshots::v1::snapshots_server::{Snapshots, SnapshotsServer};
use berth_proto::snapshots::v1::*;
use berth_proto::types::v1::{Descriptor, Mount};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::{gzip, root_or_skip, serve_content, sha, zstd, FakeContent, Tar, MTIME};
use crate::SnapshotsService;

/// A snapshotter served on a unix socket (its content store is a double
/// that only the sequential Apply reads from).
struct Env {
    dir: tempfile::TempDir,
    content: FakeContent,
    content_sock: PathBuf,
    /// None only while reopening.
    s: Option<SnapshotsService>,
    server: Option<Served>,
}

struct Served {
    client: SnapshotsClient<Channel>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Env {
    async fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-snap-stream-")
            .tempdir()
            .unwrap();
        let content = FakeContent::default();
        let content_sock = serve_content(dir.path(), content.clone());
        let s = open(dir.path(), &content_sock);
        let mut env = Env {
            dir,
            content,
            content_sock,
            s: Some(s),
            server: None,
        };
        env.serve();
        env
    }

    fn s(&self) -> &SnapshotsService {
        self.s.as_ref().unwrap()
    }

    fn serve(&mut self) {
        let sock = self.dir.path().join("snapshots.sock");
        let _ = std::fs::remove_file(&sock);
        let incoming = berth_common::unix_incoming(&sock).unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let svc = SnapshotsServer::new(self.s().clone());
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        let client = SnapshotsClient::new(berth_common::connect_unix(sock));
        self.server = Some(Served { client, stop, task });
    }

    fn client(&self) -> SnapshotsClient<Channel> {
        self.server.as_ref().unwrap().client.clone()
    }

    /// Stops the server and opens the snapshotter again from disk (as after
    /// a restart of berth-snapshots).
    async fn reopen(&mut self) {
        if let Some(sv) = self.server.take() {
            drop(sv.client);
            let _ = sv.stop.send(());
            sv.task.await.unwrap();
        }
        // The last handle closes the database.
        drop(self.s.take());
        self.s = Some(open(self.dir.path(), &self.content_sock));
        self.serve();
    }
}

fn open(dir: &Path, content_sock: &Path) -> SnapshotsService {
    let client = ContentClient::new(berth_common::connect_unix(content_sock.to_path_buf()));
    SnapshotsService::open(&dir.join("root"), client).unwrap()
}

fn req<T>(msg: T) -> Request<T> {
    berth_common::request("default", msg)
}

async fn prepare(s: &SnapshotsService, key: &str, parent: &str) -> Vec<Mount> {
    s.prepare(req(PrepareRequest {
        key: key.into(),
        parent: parent.into(),
        labels: HashMap::new(),
    }))
    .await
    .unwrap()
    .into_inner()
    .mounts
}

async fn commit_onto(
    s: &SnapshotsService,
    name: &str,
    key: &str,
    parent: &str,
) -> Result<(), Status> {
    s.commit(req(CommitRequest {
        name: name.into(),
        key: key.into(),
        labels: HashMap::new(),
        parent: parent.into(),
    }))
    .await
    .map(|_| ())
}

async fn stat(s: &SnapshotsService, key: &str) -> Result<SnapshotInfo, Status> {
    s.stat(req(StatRequest { key: key.into() }))
        .await
        .map(|r| r.into_inner())
}

fn desc(digest: &str, size: usize) -> Descriptor {
    Descriptor {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        digest: digest.into(),
        size: size as i64,
        annotations: HashMap::new(),
    }
}

fn header(key: &str, layer: Descriptor) -> ApplyStreamRequest {
    ApplyStreamRequest {
        payload: Some(apply_stream_request::Payload::Header(ApplyRequest {
            key: key.into(),
            layer: Some(layer),
            digest_verified: false,
        })),
    }
}

fn data(b: &[u8]) -> ApplyStreamRequest {
    ApplyStreamRequest {
        payload: Some(apply_stream_request::Payload::Data(b.to_vec().into())),
    }
}

/// ApplyStream of `blob` (all of it, in odd-sized chunks) into `key`.
async fn stream_blob(
    client: &mut SnapshotsClient<Channel>,
    key: &str,
    layer: Descriptor,
    blob: &[u8],
) -> Result<ApplyResponse, Status> {
    let mut msgs = vec![header(key, layer)];
    msgs.extend(blob.chunks(3001).map(data));
    client
        .apply_stream(req(tokio_stream::iter(msgs)))
        .await
        .map(|r| r.into_inner())
}

/// The `fs` dir named by a bind mount or an overlay's upperdir.
fn own_fs(m: &[Mount]) -> PathBuf {
    if m[0].r#type == "bind" {
        return PathBuf::from(&m[0].source);
    }
    let up = m[0]
        .options
        .iter()
        .find_map(|o| o.strip_prefix("upperdir="))
        .unwrap();
    PathBuf::from(up)
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_stream_unpacks_verifies_and_discards() {
    let env = Env::new().await;
    let s = env.s();
    let mut c = env.client();
    let tar = Tar::new()
        .dir("etc", 0o755)
        .file("etc/os-release", 0o644, &vec![b'x'; 200_000])
        .symlink("bin/sh", "/bin/busybox")
        .bytes();
    let blob = gzip(&tar);
    let digest = sha(&blob);

    // Streamed in chunks, unpacked, verified; the digest and diff ID are
    // those Apply reports.
    let fs = own_fs(&prepare(s, "a", "").await);
    let r = stream_blob(&mut c, "a", desc(&digest, blob.len()), &blob)
        .await
        .unwrap();
    assert_eq!(r.diff_id, sha(&tar));
    assert_eq!(r.size, tar.len() as i64);
    assert_eq!(
        std::fs::read(fs.join("etc/os-release")).unwrap().len(),
        200_000
    );
    // zstd and an unknown size (0) work too.
    let zblob = zstd(&tar);
    prepare(s, "z", "").await;
    let r = stream_blob(&mut c, "z", desc(&sha(&zblob), 0), &zblob)
        .await
        .unwrap();
    assert_eq!(r.diff_id, sha(&tar));
    commit_onto(s, "a-done", "a", "").await.unwrap();
    assert_eq!(stat(s, "a-done").await.unwrap().parent, "");

    // A digest that does not match: InvalidArgument, nothing left.
    let fs = own_fs(&prepare(s, "w", "").await);
    let wrong = sha(b"other bytes");
    let e = stream_blob(&mut c, "w", desc(&wrong, blob.len()), &blob)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains(&wrong), "{}", e.message());
    assert!(e.message().contains(&digest), "{}", e.message());
    assert_eq!(entries(&fs), 0);
    assert_eq!(stat(s, "w").await.unwrap().kind, Kind::Active as i32);

    // A stream that ends early: an error, nothing left, nothing committed.
    let half = &blob[..blob.len() / 2];
    let mut msgs = vec![header("w", desc(&digest, blob.len()))];
    msgs.extend(half.chunks(1000).map(data));
    let e = c
        .apply_stream(req(tokio_stream::iter(msgs)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains(&format!(
            "ended after {} of {} bytes",
            half.len(),
            blob.len()
        )),
        "{}",
        e.message()
    );
    assert_eq!(entries(&fs), 0);
    assert_eq!(stat(s, "w").await.unwrap().kind, Kind::Active as i32);
    // Without a size the digest catches it.
    let msgs = vec![header("w", desc(&digest, 0)), data(half)];
    let e = c
        .apply_stream(req(tokio_stream::iter(msgs)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(entries(&fs), 0);

    // A bad layer: refused and discarded, also what an earlier apply made.
    let bad = Tar::new()
        .file("ok", 0o644, b"ok")
        .file("../escape", 0o644, b"x")
        .bytes();
    let fs = own_fs(&prepare(s, "h", "").await);
    stream_blob(&mut c, "h", desc(&digest, blob.len()), &blob)
        .await
        .unwrap();
    assert!(entries(&fs) > 0);
    let e = stream_blob(&mut c, "h", desc(&sha(&bad), bad.len()), &bad)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("escapes the root"), "{}", e.message());
    assert_eq!(entries(&fs), 0);
    assert!(!fs.parent().unwrap().join("escape").exists());

    // The header must come first, once; the snapshot must be active.
    let e = c
        .apply_stream(req(tokio_stream::iter(vec![data(&blob)])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let msgs = vec![
        header("w", desc(&digest, blob.len())),
        header("w", desc(&digest, blob.len())),
    ];
    let e = c
        .apply_stream(req(tokio_stream::iter(msgs)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = stream_blob(&mut c, "nope", desc(&digest, blob.len()), &blob)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = stream_blob(&mut c, "a-done", desc(&digest, blob.len()), &blob)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = stream_blob(&mut c, "w", desc("md5:x", 1), &blob)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebase_only_onto_the_prepared_parent_or_from_none() {
    let env = Env::new().await;
    let s = env.s();
    for (key, name) in [("b-a", "base"), ("o-a", "other")] {
        prepare(s, key, "").await;
        commit_onto(s, name, key, "").await.unwrap();
    }

    // Prepared on "base": committing onto another parent is refused, and
    // the snapshot stays as it was.
    prepare(s, "on-base", "base").await;
    let e = commit_onto(s, "x", "on-base", "other").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("on-base") && e.message().contains("other"),
        "{}",
        e.message()
    );
    let info = stat(s, "on-base").await.unwrap();
    assert_eq!(
        (info.kind, info.parent.as_str()),
        (Kind::Active as i32, "base")
    );
    assert_eq!(stat(s, "x").await.unwrap_err().code(), Code::NotFound);
    // Its own parent is fine.
    commit_onto(s, "x", "on-base", "base").await.unwrap();
    assert_eq!(stat(s, "x").await.unwrap().parent, "base");

    // Prepared without a parent: the parent must exist and be committed.
    prepare(s, "free", "").await;
    prepare(s, "act", "").await;
    for bad in ["missing", "act"] {
        let e = commit_onto(s, "y", "free", bad).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(e.message().contains(bad), "{}", e.message());
        let info = stat(s, "free").await.unwrap();
        assert_eq!((info.kind, info.parent.as_str()), (Kind::Active as i32, ""));
    }
    // A name that exists is refused before anything is touched.
    let e = commit_onto(s, "x", "free", "other").await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    commit_onto(s, "y", "free", "x").await.unwrap();
    let info = stat(s, "y").await.unwrap();
    assert_eq!(
        (info.kind, info.parent.as_str()),
        (Kind::Committed as i32, "x")
    );
    // The new child keeps its parent chain alive.
    let e = s
        .remove(req(RemoveRequest { key: "x".into() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // And a child of it mounts the whole chain.
    let m = prepare(s, "ctr", "y").await;
    let lower = m[0]
        .options
        .iter()
        .find_map(|o| o.strip_prefix("lowerdir="))
        .unwrap()
        .to_string();
    assert_eq!(lower.split(':').count(), 3, "{lower}");
}

/// Layers whose entries need directories they lack, with attributes that
/// differ from a plain 0755 root-owned directory.
fn rebase_layers() -> [Vec<u8>; 3] {
    let l1 = Tar::new()
        .dir("tmp", 0o1777)
        .dir_as("opt", 0o750, 1000, 50, 1_500_000_001)
        .dir("var", 0o755)
        .dir_as("var/mail", 0o2775, 0, 50, 1_500_000_002)
        .dir_as("srv", 0o711, 0, 0, 1_500_000_003)
        .dir_as("srv/x", 0o701, 0, 0, 1_500_000_004)
        .dir("etc", 0o755)
        .file("etc/gone", 0o644, b"gone")
        .file("etc/kept", 0o644, b"kept")
        .bytes();
    let l2 = Tar::new()
        .file("tmp/a", 0o644, b"a")
        .file("opt/app/bin/tool", 0o755, b"tool")
        .file("var/mail/box/x", 0o600, b"x")
        .file("var/mail/.wh..wh..opq", 0o644, b"")
        .file("srv/x/f", 0o644, b"f")
        // An entry for a directory made implicitly above: the entry wins.
        .dir("srv", 0o700)
        .file("etc/.wh.gone", 0o644, b"")
        .bytes();
    let l3 = Tar::new()
        .file("opt/app/data", 0o644, b"data")
        .file("tmp/b", 0o644, b"b")
        .file("new/deep/file", 0o644, b"n")
        .bytes();
    [l1, l2, l3]
}

/// Everything about a tree that an unpack decides: type, mode, owner,
/// content, link target, opaque flag, and the mtime when it comes from a
/// layer (fixture times are before 2023; directories made now are "now").
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let md = std::fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let what = if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
            let opaque = super::unpack::getxattr(&p, "trusted.overlay.opaque");
            format!("dir opaque={opaque:?}")
        } else if ft.is_file() {
            format!("file {}", sha(&std::fs::read(&p).unwrap()))
        } else if ft.is_symlink() {
            format!("link {:?}", std::fs::read_link(&p).unwrap())
        } else if ft.is_char_device() {
            format!("chr {}", md.rdev())
        } else {
            "other".to_string()
        };
        let mtime = if md.mtime() < 1_680_000_000 {
            md.mtime().to_string()
        } else {
            "now".to_string()
        };
        out.insert(
            rel.to_string_lossy().into_owned(),
            format!(
                "{what} mode={:o} owner={}:{} mtime={mtime}",
                md.mode() & 0o7777,
                md.uid(),
                md.gid()
            ),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebased_layers_equal_sequentially_unpacked_ones() {
    if !root_or_skip("rebased_layers_equal_sequentially_unpacked_ones") {
        return;
    }
    let mut env = Env::new().await;
    let layers = rebase_layers();
    let blobs: Vec<Vec<u8>> = layers.iter().map(|l| gzip(l)).collect();

    // Sequentially: each layer prepared on the one below, from content.
    let mut seq_fs = Vec::new();
    let mut parent = String::new();
    for (i, b) in blobs.iter().enumerate() {
        env.content.put(&sha(b), b.clone());
        let key = format!("seq-{i}-a");
        seq_fs.push(own_fs(&prepare(env.s(), &key, &parent).await));
        let r = env
            .s()
            .apply(req(ApplyRequest {
                key: key.clone(),
                layer: Some(desc(&sha(b), b.len())),
                digest_verified: false,
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.diff_id, sha(&layers[i]));
        let name = format!("seq-{i}");
        commit_onto(env.s(), &name, &key, "").await.unwrap();
        parent = name;
    }

    // Concurrently, each without a parent, streamed.
    let mut par_fs = Vec::new();
    for i in 0..blobs.len() {
        par_fs.push(own_fs(&prepare(env.s(), &format!("par-{i}-a"), "").await));
    }
    let results = futures::future::join_all(blobs.iter().enumerate().map(|(i, b)| {
        let mut c = env.client();
        async move {
            let key = format!("par-{i}-a");
            stream_blob(&mut c, &key, desc(&sha(b), b.len()), b).await
        }
    }))
    .await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap().diff_id, sha(&layers[i]));
    }
    // Before the rebase the layers only know themselves.
    let md = |p: PathBuf| std::fs::metadata(p).unwrap();
    assert_eq!(md(par_fs[1].join("tmp")).mode() & 0o7777, 0o755);
    assert_eq!(md(par_fs[1].join("opt")).uid(), 0);

    // What was unpacked is remembered across a restart of the service.
    env.reopen().await;

    // Committed in order, each onto the one below.
    let mut parent = String::new();
    for i in 0..blobs.len() {
        let name = format!("par-{i}");
        commit_onto(env.s(), &name, &format!("par-{i}-a"), &parent)
            .await
            .unwrap();
        assert_eq!(stat(env.s(), &name).await.unwrap().parent, parent);
        parent = name;
    }

    for i in 0..blobs.len() {
        assert_eq!(tree(&par_fs[i]), tree(&seq_fs[i]), "layer {i}");
    }
    // And what they are: the parent chain's attributes...
    let l2 = &par_fs[1];
    let st = |p: &Path, rel: &str| {
        let m = std::fs::symlink_metadata(p.join(rel)).unwrap();
        (m.mode() & 0o7777, m.uid(), m.gid())
    };
    assert_eq!(st(l2, "tmp"), (0o1777, 0, 0));
    assert_eq!(md(l2.join("tmp")).mtime(), MTIME as i64);
    assert_eq!(st(l2, "opt"), (0o750, 1000, 50));
    assert_eq!(md(l2.join("opt")).mtime(), 1_500_000_001);
    assert_eq!(st(l2, "var/mail"), (0o2775, 0, 50));
    assert_eq!(st(l2, "srv/x"), (0o701, 0, 0));
    assert_eq!(md(l2.join("srv/x")).mtime(), 1_500_000_004);
    // ...the layer's own entry where it has one...
    assert_eq!(st(l2, "srv"), (0o700, 0, 0));
    assert_eq!(md(l2.join("srv")).mtime(), MTIME as i64);
    // ...and 0755 root where no layer below has the directory (not the
    // set-group-ID parent's group).
    assert_eq!(st(l2, "opt/app"), (0o755, 0, 0));
    assert_eq!(st(l2, "var/mail/box"), (0o755, 0, 0));
    // Layer 3 sees layer 2's rebased directories as its parents.
    assert_eq!(st(&par_fs[2], "opt"), (0o750, 1000, 50));
    assert_eq!(st(&par_fs[2], "opt/app"), (0o755, 0, 0));
    assert_eq!(st(&par_fs[2], "tmp"), (0o1777, 0, 0));
    assert_eq!(st(&par_fs[2], "new/deep"), (0o755, 0, 0));
}

/// `digest_verified`: ApplyStream leaves the blob digest to the caller but
/// still checks the size and computes the diff ID; Apply, whose bytes come
/// from berth-content, ignores the flag and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_verified_skips_only_the_stream_blob_hash() {
    let env = Env::new().await;
    let s = env.s();
    let mut c = env.client();
    let tar = Tar::new().file("f", 0o644, &vec![b'y'; 50_000]).bytes();
    let blob = gzip(&tar);
    let other = sha(b"not this blob");
    let verified = |key: &str, layer: Descriptor| ApplyStreamRequest {
        payload: Some(apply_stream_request::Payload::Header(ApplyRequest {
            key: key.into(),
            layer: Some(layer),
            digest_verified: true,
        })),
    };

    // The caller vouches for the digest: not compared here.
    let fs = own_fs(&prepare(s, "v", "").await);
    let mut msgs = vec![verified("v", desc(&other, blob.len()))];
    msgs.extend(blob.chunks(4096).map(data));
    let r = c
        .apply_stream(req(tokio_stream::iter(msgs)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.diff_id, sha(&tar));
    assert_eq!(std::fs::read(fs.join("f")).unwrap().len(), 50_000);

    // The size still is: refused, nothing left.
    let fs = own_fs(&prepare(s, "short", "").await);
    let mut msgs = vec![verified("short", desc(&sha(&blob), blob.len() + 1))];
    msgs.extend(blob.chunks(4096).map(data));
    let e = c
        .apply_stream(req(tokio_stream::iter(msgs)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(entries(&fs), 0);

    // Apply reads berth-content and verifies whatever the flag says.
    env.content.put(&other, blob.clone());
    let fs = own_fs(&prepare(s, "a", "").await);
    let e = c
        .apply(req(ApplyRequest {
            key: "a".into(),
            layer: Some(desc(&other, blob.len())),
            digest_verified: true,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains(&other), "{}", e.message());
    assert_eq!(entries(&fs), 0);
}

/// An unpack that was streaming when the service stopped is removed when it
/// starts again (its client lost the stream); other snapshots stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_unpacks_are_removed_at_start() {
    let mut env = Env::new().await;
    let tar = Tar::new().file("f", 0o644, b"x").bytes();
    let blob = gzip(&tar);
    let mut c = env.client();
    let s = env.s();
    s.prepare(req(PrepareRequest {
        key: "extract-1".into(),
        parent: String::new(),
        labels: [(
            berth_common::SNAPSHOT_EPHEMERAL_LABEL.to_string(),
            "pull".into(),
        )]
        .into(),
    }))
    .await
    .unwrap();
    prepare(s, "keep", "").await;
    stream_blob(&mut c, "keep", desc(&sha(&blob), blob.len()), &blob)
        .await
        .unwrap();
    commit_onto(s, "kept-layer", "keep", "").await.unwrap();
    assert!(stat(s, "extract-1").await.is_ok());
    env.reopen().await;
    let s = env.s();
    let e = stat(s, "extract-1").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(
        stat(s, "kept-layer").await.unwrap().kind,
        Kind::Committed as i32
    );
    let dirs = std::fs::read_dir(env.dir.path().join("root/snapshots/snapshots"))
        .unwrap()
        .count();
    assert_eq!(dirs, 1, "the unfinished unpack's directory is gone");
}
