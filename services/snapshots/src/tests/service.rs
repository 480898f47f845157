//! Service tests: metadata semantics through the gRPC trait, Apply through a
//! content-store double, and (as root) real overlay mounts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use berth_proto::content::v1::content_client::ContentClient;
use berth_proto::snapshots::v1::snapshots_server::Snapshots;
use berth_proto::snapshots::v1::*;
use berth_proto::types::v1::{Descriptor, Mount};
use tonic::{Code, Request, Status};

use super::{gzip, root_or_skip, serve_content, sha, zstd, FakeContent, Tar};
use crate::SnapshotsService;

struct Env {
    dir: tempfile::TempDir,
    content: FakeContent,
    sock: PathBuf,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-snap-svc-")
            .tempdir()
            .unwrap();
        let content = FakeContent::default();
        let sock = serve_content(dir.path(), content.clone());
        Env { dir, content, sock }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn open(&self) -> SnapshotsService {
        let client = ContentClient::new(berth_common::connect_unix(self.sock.clone()));
        SnapshotsService::open(&self.root(), client).unwrap()
    }
}

fn req<T>(ns: &str, msg: T) -> Request<T> {
    berth_common::request(ns, msg)
}

fn prep(key: &str, parent: &str) -> PrepareRequest {
    PrepareRequest {
        key: key.into(),
        parent: parent.into(),
        labels: HashMap::new(),
    }
}

async fn prepare(s: &SnapshotsService, key: &str, parent: &str) -> Vec<Mount> {
    s.prepare(req("default", prep(key, parent)))
        .await
        .unwrap()
        .into_inner()
        .mounts
}

async fn commit(s: &SnapshotsService, name: &str, key: &str) -> Result<(), Status> {
    s.commit(req(
        "default",
        CommitRequest {
            name: name.into(),
            key: key.into(),
            labels: HashMap::new(),
            parent: String::new(),
        },
    ))
    .await
    .map(|_| ())
}

async fn apply(s: &SnapshotsService, key: &str, digest: &str) -> Result<ApplyResponse, Status> {
    s.apply(req(
        "default",
        ApplyRequest {
            key: key.into(),
            layer: Some(Descriptor {
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                digest: digest.into(),
                size: 0,
                annotations: HashMap::new(),
            }),
            digest_verified: false,
        },
    ))
    .await
    .map(|r| r.into_inner())
}

async fn stat(s: &SnapshotsService, ns: &str, key: &str) -> Result<SnapshotInfo, Status> {
    s.stat(req(ns, StatRequest { key: key.into() }))
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

fn opt<'a>(m: &'a Mount, name: &str) -> Option<&'a str> {
    m.options
        .iter()
        .find_map(|o| o.strip_prefix(name)?.strip_prefix('='))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_commit_view_remove() {
    let env = Env::new();
    let s = env.open();

    let m = prepare(&s, "base-active", "").await;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].r#type, "bind");
    assert_eq!(m[0].options, vec!["rbind", "rw"]);
    let base_fs = own_fs(&m);
    assert!(base_fs.starts_with(env.root().join("snapshots/snapshots")));
    assert!(base_fs.ends_with("fs") && base_fs.is_dir());

    let e = s
        .prepare(req("default", prep("base-active", "")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(e.message().contains("base-active"), "{}", e.message());

    // A parent must be committed.
    let e = s
        .prepare(req("default", prep("x", "base-active")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = s
        .prepare(req("default", prep("x", "nope")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("nope"));

    commit(&s, "base", "base-active").await.unwrap();
    assert_eq!(
        stat(&s, "default", "base-active").await.unwrap_err().code(),
        Code::NotFound
    );
    let info = stat(&s, "default", "base").await.unwrap();
    assert_eq!(info.kind, Kind::Committed as i32);
    assert_eq!(info.parent, "");
    let e = commit(&s, "base", "whatever").await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = commit(&s, "other", "missing").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = commit(&s, "other", "base").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("base"));
    let e = s
        .mounts(req("default", MountsRequest { key: "base".into() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // Second layer and a container on top.
    let m = prepare(&s, "l2-active", "base").await;
    assert_eq!(m[0].r#type, "overlay");
    assert_eq!(opt(&m[0], "lowerdir"), Some(base_fs.to_str().unwrap()));
    let l2_fs = own_fs(&m);
    assert!(opt(&m[0], "workdir").unwrap().ends_with("/work"));
    commit(&s, "l2", "l2-active").await.unwrap();
    let m = prepare(&s, "ctr", "l2").await;
    assert_eq!(
        opt(&m[0], "lowerdir").unwrap(),
        format!("{}:{}", l2_fs.display(), base_fs.display())
    );
    let again = s
        .mounts(req("default", MountsRequest { key: "ctr".into() }))
        .await
        .unwrap();
    assert_eq!(again.into_inner().mounts, m);
    assert_eq!(stat(&s, "default", "ctr").await.unwrap().parent, "l2");

    // Views: one parent → read-only bind; more → lowerdir-only overlay.
    let v = s
        .view(req("default", prep("v1", "base")))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(v[0].r#type, "bind");
    assert_eq!(v[0].source, base_fs.to_str().unwrap());
    assert_eq!(v[0].options, vec!["rbind", "ro"]);
    let v = s
        .view(req("default", prep("v2", "l2")))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(v[0].r#type, "overlay");
    assert_eq!(v[0].options.len(), 1);
    assert!(opt(&v[0], "upperdir").is_none());
    assert_eq!(
        stat(&s, "default", "v2").await.unwrap().kind,
        Kind::View as i32
    );
    let e = commit(&s, "v2c", "v2").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // List.
    let names: Vec<String> = s
        .list(req("default", ListRequest {}))
        .await
        .unwrap()
        .into_inner()
        .snapshots
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, vec!["base", "ctr", "l2", "v1", "v2"]);

    // Remove: parents are refused until their children are gone.
    let e = s
        .remove(req("default", RemoveRequest { key: "base".into() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("base"), "{}", e.message());
    let ctr_dir = own_fs(&m).parent().unwrap().to_path_buf();
    for k in ["ctr", "v2", "l2", "v1", "base"] {
        s.remove(req("default", RemoveRequest { key: k.into() }))
            .await
            .unwrap();
    }
    assert!(!ctr_dir.exists());
    assert!(!base_fs.exists());
    let e = s
        .remove(req("default", RemoveRequest { key: "base".into() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(
        std::fs::read_dir(env.root().join("snapshots/snapshots"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_are_isolated() {
    let env = Env::new();
    let s = env.open();
    s.prepare(req("team-a", prep("k", ""))).await.unwrap();
    assert_eq!(
        stat(&s, "team-b", "k").await.unwrap_err().code(),
        Code::NotFound
    );
    s.prepare(req("team-b", prep("k", ""))).await.unwrap();
    s.commit(req(
        "team-a",
        CommitRequest {
            name: "c".into(),
            key: "k".into(),
            labels: HashMap::new(),
            parent: String::new(),
        },
    ))
    .await
    .unwrap();
    // team-b cannot build on team-a's committed snapshot.
    let e = s.prepare(req("team-b", prep("x", "c"))).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let list = |ns: &'static str| {
        let s = s.clone();
        async move {
            s.list(req(ns, ListRequest {}))
                .await
                .unwrap()
                .into_inner()
                .snapshots
                .into_iter()
                .map(|i| i.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list("team-a").await, vec!["c"]);
    assert_eq!(list("team-b").await, vec!["k"]);
    assert!(list("default").await.is_empty());
    // A namespace that is a prefix of another sees nothing of it.
    assert!(list("team").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_metadata_and_removes_orphans() {
    let env = Env::new();
    let labels: HashMap<String, String> = [("a".to_string(), "b".to_string())].into();
    {
        let s = env.open();
        s.prepare(req(
            "default",
            PrepareRequest {
                key: "k".into(),
                parent: "".into(),
                labels: labels.clone(),
            },
        ))
        .await
        .unwrap();
        commit(&s, "base", "k").await.unwrap();
        prepare(&s, "top", "base").await;
    }
    // A crash between metadata and directory removal leaves an orphan.
    let orphan = env.root().join("snapshots/snapshots/999");
    std::fs::create_dir_all(orphan.join("fs/x")).unwrap();
    let s = env.open();
    assert!(!orphan.exists());
    let base = stat(&s, "default", "base").await.unwrap();
    assert_eq!(base.kind, Kind::Committed as i32);
    let top = stat(&s, "default", "top").await.unwrap();
    assert_eq!(top.parent, "base");
    assert_eq!(top.kind, Kind::Active as i32);
    assert!(top.created_at > 0);
    assert_eq!(
        std::fs::read_dir(env.root().join("snapshots/snapshots"))
            .unwrap()
            .count(),
        2
    );
    // Ids keep counting after reopen: a new snapshot gets a fresh dir.
    let m = prepare(&s, "new", "").await;
    assert!(own_fs(&m).is_dir());
    assert_eq!(
        std::fs::read_dir(env.root().join("snapshots/snapshots"))
            .unwrap()
            .count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_layers() {
    let env = Env::new();
    let s = env.open();
    let tar = Tar::new()
        .dir("etc", 0o755)
        .file("etc/os-release", 0o644, &vec![b'x'; 100_000])
        .symlink("bin/sh", "/bin/busybox")
        .bytes();
    let blob = gzip(&tar);
    let digest = sha(&blob);
    env.content.put(&digest, blob.clone());

    let m = prepare(&s, "a", "").await;
    let fs = own_fs(&m);
    let r = apply(&s, "a", &digest).await.unwrap();
    assert_eq!(r.diff_id, sha(&tar));
    assert_eq!(r.size, tar.len() as i64);
    assert_eq!(
        std::fs::read(fs.join("etc/os-release")).unwrap().len(),
        100_000
    );
    let u = s
        .usage(req("default", StatRequest { key: "a".into() }))
        .await
        .unwrap()
        .into_inner();
    assert!(u.size >= 100_000, "{u:?}");
    assert_eq!(u.inodes, 5, "{u:?}"); // fs, etc, os-release, bin, sh

    // Apply into a committed snapshot is refused.
    commit(&s, "c", "a").await.unwrap();
    assert_eq!(
        apply(&s, "c", &digest).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        apply(&s, "zz", &digest).await.unwrap_err().code(),
        Code::NotFound
    );

    // A blob missing from the content store.
    prepare(&s, "b", "c").await;
    let missing = sha(b"missing");
    let e = apply(&s, "b", &missing).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains(&missing));
    assert_eq!(
        apply(&s, "b", "md5:abc").await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Wrong digest: the store serves bytes that do not match the descriptor.
    let wrong = sha(b"something else");
    env.content.put(&wrong, zstd(&tar));
    let m = prepare(&s, "w", "").await;
    let e = apply(&s, "w", &wrong).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains(&wrong), "{}", e.message());
    assert!(e.message().contains(&sha(&zstd(&tar))), "{}", e.message());
    assert_eq!(std::fs::read_dir(own_fs(&m)).unwrap().count(), 0);

    // A size that disagrees with the descriptor.
    let m = prepare(&s, "sz", "").await;
    let e = s
        .apply(req(
            "default",
            ApplyRequest {
                key: "sz".into(),
                layer: Some(Descriptor {
                    media_type: String::new(),
                    digest: digest.clone(),
                    size: blob.len() as i64 + 1,
                    annotations: HashMap::new(),
                }),
                digest_verified: false,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(std::fs::read_dir(own_fs(&m)).unwrap().count(), 0);
    let e = s
        .apply(req(
            "default",
            ApplyRequest {
                key: "sz".into(),
                layer: None,
                digest_verified: false,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // A hostile layer fails and leaves nothing behind.
    let bad = Tar::new()
        .file("ok", 0o644, b"ok")
        .file("../escape", 0o644, b"x")
        .bytes();
    env.content.put(&sha(&bad), bad.clone());
    let m = prepare(&s, "h", "").await;
    let e = apply(&s, "h", &sha(&bad)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("../escape escapes the root"),
        "{}",
        e.message()
    );
    let fs = own_fs(&m);
    assert_eq!(std::fs::read_dir(&fs).unwrap().count(), 0);
    assert!(!fs.parent().unwrap().join("escape").exists());
}

/// Unmounts on drop, also when an assertion fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn mount(m: &Mount, target: &Path) -> Unmount {
    let data = m.options.join(",");
    let flags = if m.r#type == "bind" {
        nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC
    } else {
        nix::mount::MsFlags::empty()
    };
    let data = if m.r#type == "bind" {
        None
    } else {
        Some(data.as_str())
    };
    nix::mount::mount(
        Some(m.source.as_str()),
        target,
        Some(m.r#type.as_str()),
        flags,
        data,
    )
    .unwrap_or_else(|e| panic!("mount {m:?}: {e}"));
    Unmount(target.to_path_buf())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_whiteouts_hide_lower_files() {
    if !root_or_skip("overlay_whiteouts_hide_lower_files") {
        return;
    }
    let env = Env::new();
    let s = env.open();
    let l1 = Tar::new()
        .file("keep", 0o644, b"keep")
        .file("removed", 0o644, b"removed")
        .file("dir/keep", 0o644, b"k")
        .file("dir/del", 0o644, b"d")
        .file("opq/old", 0o644, b"old")
        .bytes();
    let l2 = Tar::new()
        .file(".wh.removed", 0o644, b"")
        .file("dir/.wh.del", 0o644, b"")
        .dir("opq", 0o755)
        .file("opq/.wh..wh..opq", 0o644, b"")
        .file("opq/new", 0o644, b"new")
        .bytes();
    let (b1, b2) = (gzip(&l1), zstd(&l2));
    env.content.put(&sha(&b1), b1.clone());
    env.content.put(&sha(&b2), b2.clone());
    prepare(&s, "l1a", "").await;
    apply(&s, "l1a", &sha(&b1)).await.unwrap();
    commit(&s, "l1", "l1a").await.unwrap();
    prepare(&s, "l2a", "l1").await;
    apply(&s, "l2a", &sha(&b2)).await.unwrap();
    commit(&s, "l2", "l2a").await.unwrap();

    let check = |t: &Path| {
        assert_eq!(std::fs::read(t.join("keep")).unwrap(), b"keep");
        assert!(!t.join("removed").exists());
        assert_eq!(std::fs::read(t.join("dir/keep")).unwrap(), b"k");
        assert!(!t.join("dir/del").exists());
        assert!(!t.join("opq/old").exists());
        assert_eq!(std::fs::read(t.join("opq/new")).unwrap(), b"new");
    };

    // A writable container on top.
    let m = prepare(&s, "ctr", "l2").await;
    let target = env.dir.path().join("mnt-rw");
    std::fs::create_dir(&target).unwrap();
    {
        let _g = mount(&m[0], &target);
        check(&target);
        std::fs::write(target.join("written"), b"w").unwrap();
    }
    assert_eq!(std::fs::read(own_fs(&m).join("written")).unwrap(), b"w");

    // A read-only view of the same chain.
    let v = s
        .view(req("default", prep("view", "l2")))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let target = env.dir.path().join("mnt-ro");
    std::fs::create_dir(&target).unwrap();
    let _g = mount(&v[0], &target);
    check(&target);
    assert!(std::fs::write(target.join("x"), b"x").is_err());
}
