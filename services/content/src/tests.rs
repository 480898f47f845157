//! Service tests on a temp root. Streaming RPCs go through a real tonic
//! server on a unix socket; unary RPCs call the trait methods directly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_proto::content::v1::content_client::ContentClient;
use berth_proto::content::v1::content_server::{Content, ContentServer};
use berth_proto::content::v1::import_image_request::Payload;
use berth_proto::content::v1::*;
use berth_proto::types::v1::Descriptor;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request};

use crate::import::{host_arch, MEDIA_CONFIG, MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_MANIFEST};
use crate::ContentService;

struct Stack {
    root: PathBuf,
    client: ContentClient<Channel>,
    svc: ContentService,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Stack {
    fn start(root: &Path) -> Stack {
        let svc = ContentService::open(root).unwrap();
        let sock = root.join(format!("content-{:x}.sock", rand::random::<u32>()));
        let incoming = berth_common::unix_incoming(&sock).unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let server_svc = svc.clone();
        let task = tokio::spawn(async move {
            Server::builder()
                .add_service(ContentServer::new(server_svc))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Stack {
            root: root.to_owned(),
            client: ContentClient::new(berth_common::connect_unix(sock)),
            svc,
            stop,
            task,
        }
    }

    /// Stops the server and drops every handle on the store.
    async fn shutdown(self) {
        let Stack {
            client,
            svc,
            stop,
            task,
            ..
        } = self;
        drop(client);
        drop(svc);
        let _ = stop.send(());
        task.await.unwrap();
    }

    fn ingest_count(&self) -> usize {
        std::fs::read_dir(self.root.join("content/ingest"))
            .unwrap()
            .count()
    }

    fn blob_count(&self) -> usize {
        std::fs::read_dir(self.root.join("content/blobs/sha256"))
            .unwrap()
            .count()
    }

    async fn write(&self, msgs: Vec<WriteRequest>) -> Result<WriteResponse, tonic::Status> {
        let mut c = self.client.clone();
        c.write(tokio_stream::iter(msgs))
            .await
            .map(|r| r.into_inner())
    }

    /// Writes and commits `data` in one stream, in chunks.
    async fn put(&self, reference: &str, data: &[u8]) -> WriteResponse {
        let mut msgs = vec![WriteRequest {
            r#ref: reference.into(),
            expected: sha(data),
            total: data.len() as i64,
            ..Default::default()
        }];
        let mut off = 0;
        for chunk in data.chunks(100_000) {
            msgs.push(WriteRequest {
                offset: off,
                data: chunk.to_vec().into(),
                ..Default::default()
            });
            off += chunk.len() as i64;
        }
        msgs.push(WriteRequest {
            commit: true,
            offset: off,
            ..Default::default()
        });
        self.write(msgs).await.unwrap()
    }

    async fn read(&self, digest: &str, offset: i64, size: i64) -> Result<Vec<u8>, tonic::Status> {
        let mut s = self
            .svc
            .read(Request::new(ReadRequest {
                digest: digest.into(),
                offset,
                size,
            }))
            .await?
            .into_inner();
        let mut out = Vec::new();
        let mut expect_off = offset;
        while let Some(chunk) = s.next().await {
            let chunk = chunk?;
            assert_eq!(chunk.offset, expect_off);
            assert!(chunk.data.len() <= 1024 * 1024);
            expect_off += chunk.data.len() as i64;
            out.extend(chunk.data);
        }
        Ok(out)
    }

    async fn status(&self, reference: &str) -> Result<StatusResponse, tonic::Status> {
        self.svc
            .status(Request::new(StatusRequest {
                r#ref: reference.into(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    async fn info(&self, digest: &str) -> Result<BlobInfo, tonic::Status> {
        self.svc
            .info(Request::new(InfoRequest {
                digest: digest.into(),
            }))
            .await
            .map(|r| r.into_inner().info.unwrap())
    }

    async fn import(
        &self,
        header: ImportHeader,
        data: &[u8],
        chunk: usize,
    ) -> Result<ImportImageResponse, tonic::Status> {
        let mut msgs = vec![ImportImageRequest {
            payload: Some(Payload::Header(header)),
        }];
        // A one-byte first chunk checks gzip detection across chunks.
        if !data.is_empty() {
            msgs.push(ImportImageRequest {
                payload: Some(Payload::Data(data[..1].to_vec())),
            });
            for c in data[1..].chunks(chunk) {
                msgs.push(ImportImageRequest {
                    payload: Some(Payload::Data(c.to_vec())),
                });
            }
        }
        let mut c = self.client.clone();
        let req = berth_common::request("default", tokio_stream::iter(msgs));
        c.import_image(req).await.map(|r| r.into_inner())
    }
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[tokio::test]
async fn write_commit_read() {
    let dir = tmp();
    let s = Stack::start(dir.path());
    let data = payload(700_000);
    let mut msgs = vec![WriteRequest {
        r#ref: "blob-1".into(),
        expected: sha(&data),
        total: data.len() as i64,
        offset: 0,
        data: data[..300_000].to_vec().into(),
        labels: [("k".to_string(), "v".to_string())].into(),
        ..Default::default()
    }];
    msgs.push(WriteRequest {
        offset: 300_000,
        data: data[300_000..].to_vec().into(),
        commit: true,
        ..Default::default()
    });
    let resp = s.write(msgs).await.unwrap();
    assert_eq!(resp.digest, sha(&data));
    assert_eq!(resp.size, data.len() as i64);
    assert_eq!(s.ingest_count(), 0);
    let hex = resp.digest.strip_prefix("sha256:").unwrap();
    assert!(dir.path().join("content/blobs/sha256").join(hex).is_file());

    assert_eq!(s.read(&resp.digest, 0, 0).await.unwrap(), data);
    assert_eq!(
        s.read(&resp.digest, 1000, 5000).await.unwrap(),
        &data[1000..6000]
    );
    assert_eq!(
        s.read(&resp.digest, 699_000, 5000).await.unwrap(),
        &data[699_000..]
    );
    assert!(s.read(&resp.digest, 700_001, 0).await.is_err());
    // Through the real client too.
    let mut c = s.client.clone();
    let mut st = c
        .read(ReadRequest {
            digest: resp.digest.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = st.message().await.unwrap() {
        got.extend(m.data);
    }
    assert_eq!(got, data);

    let info = s.info(&resp.digest).await.unwrap();
    assert_eq!(info.size, data.len() as i64);
    assert_eq!(info.labels["k"], "v");
    assert!(info.created_at > 0);

    // Writing the same content again is not an error.
    let again = s.put("blob-2", &data).await;
    assert_eq!(again.digest, resp.digest);
    assert_eq!(s.ingest_count(), 0);
    assert_eq!(s.blob_count(), 1);
    let list = s.svc.list(Request::new(ListRequest {})).await.unwrap();
    assert_eq!(list.into_inner().blobs.len(), 1);
    s.shutdown().await;
}

#[tokio::test]
async fn wrong_digest_commits_nothing() {
    let dir = tmp();
    let s = Stack::start(dir.path());
    let data = payload(10_000);
    let wrong = sha(b"something else");
    let err = s
        .write(vec![WriteRequest {
            r#ref: "bad".into(),
            expected: wrong.clone(),
            data: data.clone().into(),
            commit: true,
            ..Default::default()
        }])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        format!("digest mismatch: expected {wrong}, got {}", sha(&data))
    );
    assert_eq!(s.blob_count(), 0);
    assert_eq!(s.ingest_count(), 0);
    assert_eq!(s.status("bad").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(
        s.info(&sha(&data)).await.unwrap_err().code(),
        Code::NotFound
    );

    // A size mismatch is refused the same way.
    let err = s
        .write(vec![WriteRequest {
            r#ref: "short".into(),
            expected: sha(&data),
            total: 20_000,
            data: data.clone().into(),
            commit: true,
            ..Default::default()
        }])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("size mismatch"), "{}", err.message());
    assert_eq!(s.blob_count(), 0);
    assert_eq!(s.ingest_count(), 0);

    // Data past the announced total.
    let err = s
        .write(vec![WriteRequest {
            r#ref: "long".into(),
            total: 5,
            data: data.clone().into(),
            ..Default::default()
        }])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("past the expected total"),
        "{}",
        err.message()
    );
    s.svc
        .abort(Request::new(AbortRequest {
            r#ref: "long".into(),
        }))
        .await
        .unwrap();

    // Commit without any expected digest.
    let err = s
        .write(vec![WriteRequest {
            r#ref: "noexp".into(),
            data: data.clone().into(),
            commit: true,
            ..Default::default()
        }])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    s.shutdown().await;
}

/// Starts a write whose stream stays open; returns the sender and the task.
async fn open_write(
    s: &Stack,
    first: WriteRequest,
) -> (
    mpsc::Sender<WriteRequest>,
    JoinHandle<Result<tonic::Response<WriteResponse>, tonic::Status>>,
) {
    let (tx, rx) = mpsc::channel(4);
    tx.send(first).await.unwrap();
    let mut c = s.client.clone();
    let task = tokio::spawn(async move { c.write(ReceiverStream::new(rx)).await });
    (tx, task)
}

async fn wait_offset(s: &Stack, reference: &str, want: i64) {
    for _ in 0..500 {
        if let Ok(st) = s.status(reference).await {
            if st.offset == want {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("ingest {reference} never reached offset {want}");
}

/// Writes, retrying while the previous (dropped) stream still holds the lock.
async fn write_retry(s: &Stack, msgs: Vec<WriteRequest>) -> Result<WriteResponse, tonic::Status> {
    for _ in 0..500 {
        match s.write(msgs.clone()).await {
            Err(e) if e.code() == Code::FailedPrecondition && e.message().contains("locked") => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            other => return other,
        }
    }
    panic!("ref stayed locked");
}

#[tokio::test]
async fn resume_after_dropped_stream() {
    let dir = tmp();
    let s = Stack::start(dir.path());
    let data = payload(500_000);
    let (a, b) = data.split_at(200_000);
    let (tx, task) = open_write(
        &s,
        WriteRequest {
            r#ref: "resume".into(),
            expected: sha(&data),
            total: data.len() as i64,
            data: a.to_vec().into(),
            ..Default::default()
        },
    )
    .await;
    wait_offset(&s, "resume", a.len() as i64).await;
    // A second writer on the same ref is refused while the first holds it.
    let err = s
        .write(vec![WriteRequest {
            r#ref: "resume".into(),
            ..Default::default()
        }])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("locked"), "{}", err.message());
    // Drop the stream mid-way.
    task.abort();
    let _ = task.await;
    drop(tx);

    let st = s.status("resume").await.unwrap();
    assert_eq!(st.offset, a.len() as i64);
    assert_eq!(st.total, data.len() as i64);
    assert_eq!(st.expected, sha(&data));
    assert_eq!(st.r#ref, "resume");

    // Resuming at the wrong offset names both offsets.
    let err = write_retry(
        &s,
        vec![WriteRequest {
            r#ref: "resume".into(),
            offset: 0,
            data: b.to_vec().into(),
            ..Default::default()
        }],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("offset 0") && err.message().contains("200000"),
        "{}",
        err.message()
    );
    assert_eq!(s.status("resume").await.unwrap().offset, a.len() as i64);

    let resp = write_retry(
        &s,
        vec![WriteRequest {
            r#ref: "resume".into(),
            offset: st.offset,
            data: b.to_vec().into(),
            commit: true,
            ..Default::default()
        }],
    )
    .await
    .unwrap();
    assert_eq!(resp.digest, sha(&data));
    assert_eq!(s.read(&resp.digest, 0, 0).await.unwrap(), data);
    assert_eq!(s.ingest_count(), 0);
    s.shutdown().await;
}

#[tokio::test]
async fn close_without_commit_then_abort() {
    let dir = tmp();
    let s = Stack::start(dir.path());
    let resp = s
        .write(vec![WriteRequest {
            r#ref: "paused".into(),
            data: b"hello".to_vec().into(),
            ..Default::default()
        }])
        .await
        .unwrap();
    assert_eq!(resp.offset, 5);
    assert!(resp.digest.is_empty());
    assert_eq!(s.status("paused").await.unwrap().offset, 5);
    s.svc
        .abort(Request::new(AbortRequest {
            r#ref: "paused".into(),
        }))
        .await
        .unwrap();
    assert_eq!(s.status("paused").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(s.ingest_count(), 0);
    let err = s
        .svc
        .abort(Request::new(AbortRequest {
            r#ref: "paused".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    s.shutdown().await;
}

#[tokio::test]
async fn invalid_digests_are_rejected() {
    let dir = tmp();
    let s = Stack::start(dir.path());
    let upper = format!("sha256:{}", "AB".repeat(32));
    let long = format!("sha256:{}", "ab".repeat(33));
    let sha512 = format!("sha512:{}", "ab".repeat(64));
    let traversal = format!("sha256:../../{}", "a".repeat(58));
    for bad in [
        "",
        "sha256:abc",
        "../../etc/passwd",
        upper.as_str(),
        long.as_str(),
        sha512.as_str(),
        traversal.as_str(),
    ] {
        assert_eq!(
            s.info(bad).await.unwrap_err().code(),
            Code::InvalidArgument,
            "{bad}"
        );
        assert_eq!(
            s.read(bad, 0, 0).await.unwrap_err().code(),
            Code::InvalidArgument,
            "{bad}"
        );
        let err = s
            .svc
            .delete(Request::new(DeleteRequest { digest: bad.into() }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        if !bad.is_empty() {
            let err = s
                .write(vec![WriteRequest {
                    r#ref: "x".into(),
                    expected: bad.into(),
                    data: b"x".to_vec().into(),
                    commit: true,
                    ..Default::default()
                }])
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        }
    }
    assert_eq!(s.ingest_count(), 0);
    // A write without a ref.
    let err = s
        .write(vec![WriteRequest {
            data: b"x".to_vec().into(),
            ..Default::default()
        }])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    s.shutdown().await;
}

#[tokio::test]
async fn delete_blob() {
    let dir = tmp();
    let s = Stack::start(dir.path());
    let d = s.put("del", b"delete me").await.digest;
    s.svc
        .delete(Request::new(DeleteRequest { digest: d.clone() }))
        .await
        .unwrap();
    assert_eq!(s.info(&d).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(s.read(&d, 0, 0).await.unwrap_err().code(), Code::NotFound);
    let err = s
        .svc
        .delete(Request::new(DeleteRequest { digest: d.clone() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(s.blob_count(), 0);
    s.shutdown().await;
}

fn rootfs_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "bin/", std::io::empty()).unwrap();
    let body = payload(100_000);
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(body.len() as u64);
    b.append_data(&mut h, "bin/sh", body.as_slice()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(6);
    b.append_data(&mut h, "etc/hostname", &b"berth\n"[..])
        .unwrap();
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn blob_json(s: &Stack, d: &Descriptor) -> serde_json::Value {
    let bytes = s.read(&d.digest, 0, 0).await.unwrap();
    assert_eq!(sha(&bytes), d.digest);
    assert_eq!(bytes.len() as i64, d.size);
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn import_plain_tar() {
    let dir = tmp();
    let s = Stack::start(dir.path());
    let tar = rootfs_tar();
    let resp = s
        .import(
            ImportHeader {
                name: "docker.io/library/imp:1".into(),
                changes: vec![
                    r#"CMD ["/bin/sh", "-c", "echo hi"]"#.into(),
                    "ENTRYPOINT [\"/bin/tini\"]".into(),
                    "ENV A=B C=\"d e\"".into(),
                    "WORKDIR /srv".into(),
                    "USER 1000".into(),
                    "EXPOSE 80".into(),
                    "LABEL org.x=y".into(),
                    "VOLUME /data".into(),
                    "STOPSIGNAL SIGKILL".into(),
                ],
                source: "-".into(),
                ..Default::default()
            },
            &tar,
            4096,
        )
        .await
        .unwrap();
    assert_eq!(resp.layers.len(), 1);
    let layer = &resp.layers[0];
    assert_eq!(layer.media_type, MEDIA_LAYER_TAR);
    assert_eq!(layer.digest, sha(&tar));
    assert_eq!(layer.size, tar.len() as i64);
    assert_eq!(resp.diff_ids, vec![sha(&tar)]);
    assert_eq!(s.read(&layer.digest, 0, 0).await.unwrap(), tar);

    let config = resp.config.clone().unwrap();
    assert_eq!(config.media_type, MEDIA_CONFIG);
    let cfg = blob_json(&s, &config).await;
    assert_eq!(cfg["architecture"], host_arch());
    assert_ne!(cfg["architecture"], "x86_64");
    assert_eq!(cfg["os"], "linux");
    assert!(berth_common::time::parse_rfc3339(cfg["created"].as_str().unwrap()).is_some());
    let c = &cfg["config"];
    assert_eq!(c["Cmd"], serde_json::json!(["/bin/sh", "-c", "echo hi"]));
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/tini"]));
    assert_eq!(c["Env"], serde_json::json!(["A=B", "C=d e"]));
    assert_eq!(c["WorkingDir"], "/srv");
    assert_eq!(c["User"], "1000");
    assert_eq!(c["ExposedPorts"], serde_json::json!({"80/tcp": {}}));
    assert_eq!(c["Labels"], serde_json::json!({"org.x": "y"}));
    assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(c["StopSignal"], "SIGKILL");
    assert_eq!(cfg["rootfs"]["type"], "layers");
    assert_eq!(cfg["rootfs"]["diff_ids"], serde_json::json!([sha(&tar)]));
    assert_eq!(cfg["history"][0]["comment"], "Imported from -");
    assert_eq!(cfg["history"][0]["created_by"], "");

    let manifest = resp.manifest.clone().unwrap();
    assert_eq!(manifest.media_type, MEDIA_MANIFEST);
    let m = blob_json(&s, &manifest).await;
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], MEDIA_MANIFEST);
    assert_eq!(m["config"]["digest"], config.digest);
    assert_eq!(m["config"]["mediaType"], MEDIA_CONFIG);
    assert_eq!(m["layers"][0]["digest"], layer.digest);
    assert_eq!(m["layers"][0]["size"], layer.size);

    let img = resp.image.unwrap();
    assert_eq!(img.name, "docker.io/library/imp:1");
    assert_eq!(img.target.as_ref().unwrap().digest, manifest.digest);
    let got = s
        .svc
        .get_image(Request::new(GetImageRequest {
            name: "docker.io/library/imp:1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.target.unwrap().digest, manifest.digest);
    assert_eq!(s.ingest_count(), 0);
    assert_eq!(s.blob_count(), 3);
    s.shutdown().await;
}

#[tokio::test]
async fn import_gzip_tar() {
    let dir = tmp();
    let s = Stack::start(dir.path());
    let tar = rootfs_tar();
    let gz = gzip(&tar);
    let resp = s
        .import(
            ImportHeader {
                changes: vec![
                    "CMD echo hello world".into(),
                    "ENV PATH /bin:/usr/bin".into(),
                ],
                message: "my import".into(),
                source: "rootfs.tgz".into(),
                architecture: "arm64".into(),
                ..Default::default()
            },
            &gz,
            777,
        )
        .await
        .unwrap();
    let layer = &resp.layers[0];
    assert_eq!(layer.media_type, MEDIA_LAYER_GZIP);
    assert_eq!(layer.digest, sha(&gz));
    assert_eq!(layer.size, gz.len() as i64);
    assert_eq!(resp.diff_ids, vec![sha(&tar)]);
    assert_ne!(resp.diff_ids[0], layer.digest);
    assert!(resp.image.is_none());
    let cfg = blob_json(&s, resp.config.as_ref().unwrap()).await;
    assert_eq!(cfg["architecture"], "arm64");
    assert_eq!(
        cfg["config"]["Cmd"],
        serde_json::json!(["/bin/sh", "-c", "echo hello world"])
    );
    assert_eq!(
        cfg["config"]["Env"],
        serde_json::json!(["PATH=/bin:/usr/bin"])
    );
    assert_eq!(cfg["rootfs"]["diff_ids"], serde_json::json!([sha(&tar)]));
    assert_eq!(cfg["history"][0]["comment"], "my import");
    assert_eq!(s.read(&layer.digest, 0, 0).await.unwrap(), gz);
    assert_eq!(s.ingest_count(), 0);
    s.shutdown().await;
}

#[tokio::test]
async fn import_errors_leave_nothing() {
    let dir = tmp();
    let s = Stack::start(dir.path());
    let tar = rootfs_tar();

    let err = s
        .import(
            ImportHeader {
                changes: vec!["FOO bar".into()],
                ..Default::default()
            },
            &tar,
            4096,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "invalid change: unknown instruction \"FOO\"");

    let garbage = b"this is certainly not a tar archive\n".repeat(100);
    let corrupt_gz = {
        let mut g = gzip(&tar);
        g.truncate(g.len() / 2);
        g
    };
    for (what, input) in [
        ("text", garbage.clone()),
        ("empty", Vec::new()),
        ("short", b"x".to_vec()),
        ("gzip text", gzip(&garbage)),
        ("truncated gzip", corrupt_gz),
    ] {
        let err = s
            .import(ImportHeader::default(), &input, 1000)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().starts_with("invalid tar archive"),
            "{what}: {}",
            err.message()
        );
    }

    let err = s
        .import(
            ImportHeader {
                name: "Upper/Case".into(),
                ..Default::default()
            },
            &tar,
            4096,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("must be lowercase"),
        "{}",
        err.message()
    );

    assert_eq!(s.ingest_count(), 0);
    assert_eq!(s.blob_count(), 0);
    s.shutdown().await;
}

#[tokio::test]
async fn images_per_namespace() {
    let dir = tmp();
    let s = Stack::start(dir.path());
    let manifest = s.put("m", br#"{"schemaVersion":2}"#).await;
    let target = Descriptor {
        media_type: MEDIA_MANIFEST.into(),
        digest: manifest.digest.clone(),
        size: manifest.size,
        annotations: Default::default(),
    };
    let put = |ns: &str, name: &str, target: Descriptor| {
        let svc = s.svc.clone();
        let req = berth_common::request(
            ns,
            PutImageRequest {
                image: Some(Image {
                    name: name.into(),
                    target: Some(target),
                    ..Default::default()
                }),
            },
        );
        async move { svc.put_image(req).await.map(|r| r.into_inner()) }
    };
    let get = |ns: &str, name: &str| {
        let svc = s.svc.clone();
        let req = berth_common::request(ns, GetImageRequest { name: name.into() });
        async move { svc.get_image(req).await.map(|r| r.into_inner()) }
    };
    let list = |ns: &str| {
        let svc = s.svc.clone();
        let req = berth_common::request(ns, ListImagesRequest {});
        async move { svc.list_images(req).await.unwrap().into_inner().images }
    };

    let img = put("team-a", "busybox", target.clone()).await.unwrap();
    assert_eq!(img.name, "docker.io/library/busybox:latest");
    assert!(img.created_at > 0);
    put("team-a", "docker.io/me/app:v1", target.clone())
        .await
        .unwrap();
    put("team-b", "localhost:5000/x", target.clone())
        .await
        .unwrap();

    let got = get("team-a", "docker.io/library/busybox:latest")
        .await
        .unwrap();
    assert_eq!(got.target.unwrap().digest, manifest.digest);
    assert_eq!(
        get("team-b", "docker.io/library/busybox:latest")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let names: Vec<_> = list("team-a").await.into_iter().map(|i| i.name).collect();
    assert_eq!(
        names,
        vec!["docker.io/library/busybox:latest", "docker.io/me/app:v1"]
    );
    let names: Vec<_> = list("team-b").await.into_iter().map(|i| i.name).collect();
    assert_eq!(names, vec!["localhost:5000/x:latest"]);
    assert!(list("team-c").await.is_empty());

    // Replacing keeps created_at.
    let again = put("team-a", "busybox", target.clone()).await.unwrap();
    assert_eq!(again.created_at, img.created_at);

    // Validation.
    let missing = Descriptor {
        digest: sha(b"not stored"),
        ..target.clone()
    };
    let err = put("team-a", "busybox", missing).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = put("team-a", "BusyBox", target.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("repository name must be lowercase"));
    let bad_digest = Descriptor {
        digest: "sha256:nope".into(),
        ..target.clone()
    };
    let err = put("team-a", "busybox", bad_digest).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Delete.
    let del = |ns: &str, name: &str| {
        let svc = s.svc.clone();
        let req = berth_common::request(ns, DeleteImageRequest { name: name.into() });
        async move { svc.delete_image(req).await.map(|r| r.into_inner()) }
    };
    assert_eq!(
        del("team-b", "busybox").await.unwrap_err().code(),
        Code::NotFound
    );
    del("team-a", "docker.io/library/busybox:latest")
        .await
        .unwrap();
    assert_eq!(
        get("team-a", "busybox").await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(list("team-a").await.len(), 1);
    // The manifest blob stays until garbage collection.
    assert!(s.info(&manifest.digest).await.is_ok());
    s.shutdown().await;
}

#[tokio::test]
async fn state_survives_restart() {
    let dir = tmp();
    let s = Stack::start(dir.path());
    let blob = s.put("b", b"persistent").await;
    let data = payload(300_000);
    let (tx, task) = open_write(
        &s,
        WriteRequest {
            r#ref: "half".into(),
            expected: sha(&data),
            total: data.len() as i64,
            data: data[..123_456].to_vec().into(),
            ..Default::default()
        },
    )
    .await;
    wait_offset(&s, "half", 123_456).await;
    task.abort();
    let _ = task.await;
    drop(tx);
    let imp = s
        .import(
            ImportHeader {
                name: "docker.io/library/kept:1".into(),
                ..Default::default()
            },
            &rootfs_tar(),
            4096,
        )
        .await
        .unwrap();
    // What a crash in the middle of an import would leave.
    let ingest = dir.path().join("content/ingest");
    std::fs::create_dir_all(ingest.join("crashed-import")).unwrap();
    std::fs::write(
        ingest.join("crashed-import/meta"),
        r#"{"ref":"import-1","ephemeral":true}"#,
    )
    .unwrap();
    std::fs::create_dir_all(ingest.join("no-meta")).unwrap();
    assert_eq!(s.ingest_count(), 3);
    s.shutdown().await;

    let s = Stack::start(dir.path());
    assert_eq!(s.ingest_count(), 1, "only the resumable ingest is kept");
    assert_eq!(s.info(&blob.digest).await.unwrap().size, 10);
    assert_eq!(s.read(&blob.digest, 0, 0).await.unwrap(), b"persistent");
    let img = s
        .svc
        .get_image(Request::new(GetImageRequest {
            name: "kept:1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(img.target, imp.manifest);
    let st = s.status("half").await.unwrap();
    assert_eq!(st.offset, 123_456);
    assert_eq!(st.expected, sha(&data));
    let resp = write_retry(
        &s,
        vec![WriteRequest {
            r#ref: "half".into(),
            offset: st.offset,
            data: data[123_456..].to_vec().into(),
            commit: true,
            ..Default::default()
        }],
    )
    .await
    .unwrap();
    assert_eq!(resp.digest, sha(&data));
    assert_eq!(s.ingest_count(), 0);
    s.shutdown().await;
}

// ---- leases and garbage collection ----

impl Stack {
    async fn gc(&self) -> GarbageCollectResponse {
        self.svc
            .garbage_collect(Request::new(GarbageCollectRequest::default()))
            .await
            .unwrap()
            .into_inner()
    }

    async fn lease(&self, id: &str, expires_at: i64) -> Lease {
        self.svc
            .create_lease(Request::new(CreateLeaseRequest {
                id: id.into(),
                expires_at,
            }))
            .await
            .unwrap()
            .into_inner()
    }

    /// Writes `data` in one message, committed into `lease`.
    async fn put_leased(&self, lease: &str, data: &[u8]) -> Result<WriteResponse, tonic::Status> {
        self.write(vec![WriteRequest {
            r#ref: format!("leased-{}", &sha(data)[7..19]),
            expected: sha(data),
            total: data.len() as i64,
            data: data.to_vec().into(),
            commit: true,
            lease: lease.into(),
            ..Default::default()
        }])
        .await
    }

    fn has(&self, digest: &str) -> bool {
        self.root
            .join("content/blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
            .exists()
    }

    async fn put_image_rec(&self, ns: &str, name: &str, target: &str, labels: &[(&str, &str)]) {
        self.svc
            .put_image(berth_common::request(
                ns,
                PutImageRequest {
                    image: Some(Image {
                        name: name.into(),
                        target: Some(Descriptor {
                            media_type: MEDIA_MANIFEST.into(),
                            digest: target.into(),
                            size: 0,
                            annotations: Default::default(),
                        }),
                        labels: labels
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .unwrap();
    }
}

/// A manifest JSON naming `config` and `layers`.
fn manifest_json(config: &str, layers: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config, "size": 2},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": MEDIA_LAYER_TAR, "digest": l, "size": 1})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

#[tokio::test]
async fn gc_keeps_what_images_reference_in_any_namespace() {
    let dir = tmp();
    let s = Stack::start(dir.path());
    let shared = s.put("l-shared", b"shared layer").await.digest;
    let only_a = s.put("l-a", b"layer of a").await.digest;
    let cfg_a = s.put("c-a", b"{\"a\":1}").await.digest;
    let cfg_b = s.put("c-b", b"{\"b\":1}").await.digest;
    let man_a = s
        .put("m-a", &manifest_json(&cfg_a, &[&shared, &only_a]))
        .await
        .digest;
    let man_b = s
        .put("m-b", &manifest_json(&cfg_b, &[&shared]))
        .await
        .digest;
    let index = s
        .put(
            "i-b",
            &serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "manifests": [{"mediaType": MEDIA_MANIFEST, "digest": man_b, "size": 1}],
            }))
            .unwrap(),
        )
        .await
        .digest;
    let stray = s.put("stray", b"nobody's").await.digest;
    s.put_image_rec("ns-a", "a:1", &man_a, &[]).await;
    s.put_image_rec("ns-b", "b:1", &man_b, &[("org.berth.repo-digest", &index)])
        .await;

    let r = s.gc().await;
    let deleted: Vec<&str> = r.deleted.iter().map(|b| b.digest.as_str()).collect();
    assert_eq!(deleted, vec![stray.as_str()]);
    assert_eq!(r.reclaimed, b"nobody's".len() as i64);
    for d in [&shared, &only_a, &cfg_a, &cfg_b, &man_a, &man_b, &index] {
        assert!(s.has(d), "{d} was collected");
    }

    // The last user of a blob goes: it goes; what another namespace uses stays.
    s.svc
        .delete_image(berth_common::request(
            "ns-a",
            DeleteImageRequest { name: "a:1".into() },
        ))
        .await
        .unwrap();
    s.gc().await;
    for d in [&only_a, &cfg_a, &man_a] {
        assert!(!s.has(d), "{d} should be collected");
    }
    for d in [&shared, &cfg_b, &man_b, &index] {
        assert!(s.has(d), "{d} was collected");
    }
    s.svc
        .delete_image(berth_common::request(
            "ns-b",
            DeleteImageRequest { name: "b:1".into() },
        ))
        .await
        .unwrap();
    s.gc().await;
    assert_eq!(s.blob_count(), 0);
    s.shutdown().await;
}

#[tokio::test]
async fn leases_hold_blobs_until_deleted_or_expired() {
    let dir = tmp();
    let s = Stack::start(dir.path());
    let now = berth_common::time::now_unix();
    s.lease("pull-1", now + 3600).await;
    // What a pull writes first (layers, config) is held before the manifest
    // and the record exist.
    let layer = s.put_leased("pull-1", b"a layer").await.unwrap().digest;
    // A blob that was there already is added to the lease.
    let present = s.put("present", b"already here").await.digest;
    s.svc
        .add_lease_resource(Request::new(AddLeaseResourceRequest {
            lease: "pull-1".into(),
            digest: present.clone(),
        }))
        .await
        .unwrap();
    // A missing blob cannot be added: the caller learns it must fetch it.
    let err = s
        .svc
        .add_lease_resource(Request::new(AddLeaseResourceRequest {
            lease: "pull-1".into(),
            digest: sha(b"not here"),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let r = s.gc().await;
    assert!(r.deleted.is_empty(), "{r:?}");
    assert!(s.has(&layer) && s.has(&present));

    // A commit into a lease that does not exist is refused, nothing kept.
    let err = s.put_leased("nope", b"orphan").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(!s.has(&sha(b"orphan")));

    // Creating it again only moves the expiry; resources stay.
    let l = s.lease("pull-1", now + 7200).await;
    assert_eq!(l.resources.len(), 2);
    assert_eq!(l.expires_at, now + 7200);

    // An expired lease holds nothing and is removed.
    s.lease("pull-1", now - 1).await;
    let r = s.gc().await;
    assert_eq!(r.expired_leases, vec!["pull-1".to_string()]);
    assert_eq!(r.deleted.len(), 2);
    assert!(!s.has(&layer) && !s.has(&present));

    // Deleting a lease releases its blobs.
    s.lease("never", 0).await;
    let b = s.put_leased("never", b"kept forever").await.unwrap().digest;
    assert!(s.gc().await.deleted.is_empty());
    s.svc
        .delete_lease(Request::new(DeleteLeaseRequest { id: "never".into() }))
        .await
        .unwrap();
    assert_eq!(s.gc().await.deleted.len(), 1);
    assert!(!s.has(&b));
    let err = s
        .svc
        .delete_lease(Request::new(DeleteLeaseRequest { id: "never".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    s.shutdown().await;
}

#[tokio::test]
async fn import_without_a_name_is_held_by_the_callers_lease() {
    let dir = tmp();
    let s = Stack::start(dir.path());
    s.lease("imp", 0).await;
    let resp = s
        .import(
            ImportHeader {
                lease: "imp".into(),
                ..Default::default()
            },
            &rootfs_tar(),
            4096,
        )
        .await
        .unwrap();
    assert!(resp.image.is_none());
    assert!(s.gc().await.deleted.is_empty());
    assert_eq!(s.blob_count(), 3);
    // The import's own lease is gone; only the caller's is left.
    let leases = s
        .svc
        .list_leases(Request::new(ListLeasesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .leases;
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0].resources.len(), 3);
    s.svc
        .delete_lease(Request::new(DeleteLeaseRequest { id: "imp".into() }))
        .await
        .unwrap();
    assert_eq!(s.gc().await.deleted.len(), 3);
    // A named import needs no lease from the caller and leaves none.
    s.import(
        ImportHeader {
            name: "docker.io/library/named:1".into(),
            ..Default::default()
        },
        &rootfs_tar(),
        4096,
    )
    .await
    .unwrap();
    assert!(s.gc().await.deleted.is_empty());
    assert_eq!(s.blob_count(), 3);
    let leases = s
        .svc
        .list_leases(Request::new(ListLeasesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .leases;
    assert!(leases.is_empty(), "{leases:?}");
    s.shutdown().await;
}

#[tokio::test]
async fn gc_removes_idle_ingests_only() {
    let dir = tmp();
    let s = Stack::start(dir.path());
    // An ingest left by an interrupted write.
    s.write(vec![WriteRequest {
        r#ref: "pull-abc".into(),
        expected: sha(b"0123456789"),
        total: 10,
        data: b"01234".to_vec().into(),
        ..Default::default()
    }])
    .await
    .unwrap();
    assert_eq!(s.ingest_count(), 1);
    // Recent: kept (it can resume).
    assert!(s.gc().await.removed_ingests.is_empty());
    assert_eq!(s.status("pull-abc").await.unwrap().offset, 5);
    // Idle for longer than the given age: removed. Set its time back.
    let ingest = std::fs::read_dir(s.root.join("content/ingest"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let old = std::time::SystemTime::now() - Duration::from_secs(7200);
    for f in ["data", "meta"] {
        std::fs::File::options()
            .write(true)
            .open(ingest.join(f))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let r = s
        .svc
        .garbage_collect(Request::new(GarbageCollectRequest {
            ingest_max_age: 3600,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.removed_ingests, vec!["pull-abc".to_string()]);
    assert_eq!(s.ingest_count(), 0);
    s.shutdown().await;
}

/// Collections running all the time while a "pull" commits blobs into its
/// lease (and adds one that was there already) never lose a held blob,
/// whatever the interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_running_during_leased_writes_loses_nothing() {
    let dir = tmp();
    let s = std::sync::Arc::new(Stack::start(dir.path()));
    s.lease("pull-race", 0).await;
    let present = s.put("present-race", b"was here before").await.digest;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (s, done) = (s.clone(), done.clone());
        tokio::spawn(async move {
            let mut runs = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) || runs == 0 {
                s.gc().await;
                runs += 1;
            }
            runs
        })
    };
    let mut written = Vec::new();
    for i in 0..40 {
        let data = format!("blob number {i}").into_bytes();
        written.push(s.put_leased("pull-race", &data).await.unwrap().digest);
        if i == 20 {
            // Found present: held from now on, or NotFound if it went.
            let r = s
                .svc
                .add_lease_resource(Request::new(AddLeaseResourceRequest {
                    lease: "pull-race".into(),
                    digest: present.clone(),
                }))
                .await;
            match r {
                Ok(_) => written.push(present.clone()),
                Err(e) => assert_eq!(e.code(), Code::NotFound),
            }
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(collector.await.unwrap() > 0);
    s.gc().await;
    for d in &written {
        assert!(s.has(d), "held blob {d} was collected");
    }
    std::sync::Arc::try_unwrap(s)
        .ok()
        .expect("no other handle")
        .shutdown()
        .await;
}
