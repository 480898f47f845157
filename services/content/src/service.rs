//! The `Content` gRPC service.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use berth_common::reference;
use berth_proto::content::v1::content_server::Content;
use berth_proto::content::v1::import_image_request::Payload;
use berth_proto::content::v1::{
    AbortRequest, AddLeaseResourceRequest, CreateLeaseRequest, DeleteImageRequest,
    DeleteLeaseRequest, DeleteRequest, GarbageCollectRequest, GarbageCollectResponse,
    GetImageRequest, Image, ImportImageRequest, ImportImageResponse, InfoRequest, InfoResponse,
    Lease, ListImagesRequest, ListImagesResponse, ListLeasesRequest, ListLeasesResponse,
    ListRequest, ListResponse, PutImageRequest, ReadRequest, ReadResponse, StatusRequest,
    StatusResponse, WriteRequest, WriteResponse,
};
use berth_proto::types::v1::Empty;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::changes::apply_changes;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::import::{finalize, ImportWriter};
use crate::store::Store;

/// Size of the chunks `Read` streams (within 64 KiB–1 MiB).
pub(crate) const READ_CHUNK: usize = 256 * 1024;

/// Write messages queued for the ingest's worker.
const WRITE_QUEUE: usize = 8;

/// One write message, for the ingest's worker.
struct WriteStep {
    expected: Option<Digest>,
    total: i64,
    offset: i64,
    data: bytes::Bytes,
    /// The labels, when the message commits.
    commit: Option<std::collections::HashMap<String, String>>,
}

/// The content service of one berthd root. Cheap to clone.
#[derive(Clone)]
pub struct ContentService {
    store: Arc<Store>,
}

/// Runs blocking store work off the async threads.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

/// A normalised image name: `busybox` → `docker.io/library/busybox:latest`.
fn image_name(name: &str) -> Result<String> {
    reference::parse(name)
        .map(|r| r.full())
        .map_err(|e| Error::invalid(format!("invalid image name {name:?}: {e}")))
}

impl ContentService {
    /// Opens (creating when needed) the content store under `<root>/content`.
    /// Ingests left by a previous run are kept, so their writes can resume.
    pub fn open(root: &Path) -> Result<Self> {
        Ok(ContentService {
            store: Arc::new(Store::open(root)?),
        })
    }

    async fn do_write(&self, mut stream: Streaming<WriteRequest>) -> Result<WriteResponse, Status> {
        let mut msg = stream.message().await?.ok_or_else(|| {
            Error::invalid("empty write stream: the first message must carry ref")
        })?;
        if msg.r#ref.is_empty() {
            return Err(Error::invalid("the first write message must carry ref").into());
        }
        let reference = msg.r#ref.clone();
        let expected = parse_opt(&msg.expected)?;
        let total = msg.total;
        let store = self.store.clone();
        let r = reference.clone();
        let lease = Some(msg.lease.clone()).filter(|l| !l.is_empty());
        let mut ing = blocking(move || {
            let mut ing = store.open_ingest(&r, expected.as_ref(), total, false)?;
            ing.lease = lease;
            Ok(ing)
        })
        .await?;
        // The ingest is written by one blocking worker while the stream is
        // read here, so that receiving the next chunk overlaps with writing
        // and hashing this one.
        let (steps, mut queue) = tokio::sync::mpsc::channel::<WriteStep>(WRITE_QUEUE);
        let worker = tokio::task::spawn_blocking(move || -> Result<WriteResponse> {
            while let Some(step) = queue.blocking_recv() {
                ing.update(step.expected.as_ref(), step.total)?;
                if !step.data.is_empty() {
                    ing.append(step.offset, &step.data)?;
                }
                if let Some(labels) = step.commit {
                    let (digest, size) = ing.commit(step.total, labels)?;
                    return Ok(WriteResponse {
                        digest: digest.to_string(),
                        size: size as i64,
                        offset: size as i64,
                    });
                }
            }
            // The client closed without committing: the ingest stays for a
            // later resume.
            Ok(WriteResponse {
                digest: String::new(),
                size: 0,
                offset: ing.size() as i64,
            })
        });
        let mut labels = std::collections::HashMap::new();
        let mut failed: Option<Status> = None;
        loop {
            let expected = match parse_opt(&msg.expected) {
                Ok(e) => e,
                Err(e) => {
                    failed = Some(e.into());
                    break;
                }
            };
            labels.extend(std::mem::take(&mut msg.labels));
            let commit = msg.commit;
            let step = WriteStep {
                expected,
                total: msg.total,
                offset: msg.offset,
                data: std::mem::take(&mut msg.data),
                commit: commit.then(|| std::mem::take(&mut labels)),
            };
            // A refused step means the worker stopped: its result says why.
            if steps.send(step).await.is_err() || commit {
                break;
            }
            match stream.message().await {
                Ok(Some(m)) => {
                    if !m.r#ref.is_empty() && m.r#ref != reference {
                        failed = Some(
                            Error::invalid(format!(
                                "ref changed within one write stream: {reference:?} then {:?}",
                                m.r#ref
                            ))
                            .into(),
                        );
                        break;
                    }
                    msg = m;
                }
                Ok(None) => break,
                Err(s) => {
                    failed = Some(s);
                    break;
                }
            }
        }
        drop(steps);
        let written = worker
            .await
            .map_err(|e| Error::Internal(format!("write worker failed: {e}")))?;
        // The store's own refusal is the more precise answer.
        let resp = written?;
        match failed {
            Some(s) => Err(s),
            None => Ok(resp),
        }
    }

    async fn do_import(
        &self,
        ns: String,
        mut stream: Streaming<ImportImageRequest>,
    ) -> Result<ImportImageResponse, Status> {
        let header = match stream.message().await?.and_then(|m| m.payload) {
            Some(Payload::Header(h)) => h,
            _ => {
                return Err(
                    Error::invalid("the first ImportImage message must carry the header").into(),
                )
            }
        };
        let name = match header.name.as_str() {
            "" => None,
            n => Some(image_name(n)?),
        };
        let run = apply_changes(&header.changes)?;
        // The blobs are held by the caller's lease, or by one of ours until
        // the image record exists.
        let (lease, own_lease) = if header.lease.is_empty() {
            let store = self.store.clone();
            let expires = berth_common::time::now_unix() + 3600;
            let l = blocking(move || store.create_lease("", expires)).await?;
            (l.id, true)
        } else {
            (header.lease.clone(), false)
        };
        let resp = self
            .import_into(ns, header, name, run, &lease, &mut stream)
            .await;
        if own_lease {
            let store = self.store.clone();
            let _ = blocking(move || store.delete_lease(&lease)).await;
        }
        resp
    }

    async fn import_into(
        &self,
        ns: String,
        header: berth_proto::content::v1::ImportHeader,
        name: Option<String>,
        run: crate::changes::RunConfig,
        lease: &str,
        stream: &mut Streaming<ImportImageRequest>,
    ) -> Result<ImportImageResponse, Status> {
        let store = self.store.clone();
        let l = lease.to_string();
        // Dropping the writer on any error path deletes its ingest.
        let mut w = blocking(move || ImportWriter::new(&store, &l)).await?;
        while let Some(m) = stream.message().await? {
            match m.payload {
                Some(Payload::Data(d)) if !d.is_empty() => {
                    w = blocking(move || {
                        w.feed(&d)?;
                        Ok(w)
                    })
                    .await?;
                }
                Some(Payload::Data(_)) | None => {}
                Some(Payload::Header(_)) => {
                    return Err(Error::invalid("ImportImage got a second header").into())
                }
            }
        }
        let store = self.store.clone();
        let lease = lease.to_string();
        let resp = blocking(move || {
            let (layer, diff_id) = w.finish()?;
            finalize(&store, &lease, &ns, &header, name, run, layer, diff_id)
        })
        .await?;
        Ok(resp)
    }
}

fn parse_opt(d: &str) -> Result<Option<Digest>> {
    if d.is_empty() {
        Ok(None)
    } else {
        Digest::parse(d).map(Some)
    }
}

type ReadStream = Pin<Box<dyn Stream<Item = Result<ReadResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Content for ContentService {
    async fn write(
        &self,
        request: Request<Streaming<WriteRequest>>,
    ) -> Result<Response<WriteResponse>, Status> {
        self.do_write(request.into_inner()).await.map(Response::new)
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let r = request.into_inner().r#ref;
        let store = self.store.clone();
        let st = blocking(move || store.ingest_status(&r)).await?;
        Ok(Response::new(StatusResponse {
            r#ref: st.meta.reference,
            offset: st.offset,
            total: st.meta.total,
            expected: st.meta.expected,
        }))
    }

    async fn abort(&self, request: Request<AbortRequest>) -> Result<Response<Empty>, Status> {
        let r = request.into_inner().r#ref;
        let store = self.store.clone();
        blocking(move || store.abort_ingest(&r)).await?;
        Ok(Response::new(Empty {}))
    }

    type ReadStream = ReadStream;

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let req = request.into_inner();
        let d = Digest::parse(&req.digest)?;
        tracing::debug!(digest = %d, offset = req.offset, size = req.size, "read blob");
        let path = self.store.blob_path(&d);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!("blob {d} not found")).into())
            }
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e).into()),
        };
        let len = file
            .metadata()
            .await
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
            .len();
        if req.offset < 0 || req.offset as u64 > len {
            return Err(Error::invalid(format!(
                "read offset {} is outside blob {d} of {len} bytes",
                req.offset
            ))
            .into());
        }
        if req.size < 0 {
            return Err(Error::invalid(format!("read size {} is negative", req.size)).into());
        }
        let start = req.offset as u64;
        let end = if req.size == 0 {
            len
        } else {
            len.min(start.saturating_add(req.size as u64))
        };
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| Error::io(format!("seek {}", path.display()), e))?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut pos = start;
            while pos < end {
                let want = ((end - pos) as usize).min(READ_CHUNK);
                let mut buf = vec![0u8; want];
                let res = file.read_exact(&mut buf).await;
                let item = match res {
                    Ok(_) => Ok(ReadResponse {
                        offset: pos as i64,
                        data: buf.into(),
                    }),
                    Err(e) => Err(Status::from(Error::io(
                        format!("read {}", path.display()),
                        e,
                    ))),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
                pos += want as u64;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn info(&self, request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let d = Digest::parse(&request.into_inner().digest)?;
        let store = self.store.clone();
        let info = blocking(move || store.info(&d)).await?;
        Ok(Response::new(InfoResponse { info: Some(info) }))
    }

    async fn list(&self, _request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let store = self.store.clone();
        let blobs = blocking(move || store.list()).await?;
        Ok(Response::new(ListResponse { blobs }))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<Empty>, Status> {
        let d = Digest::parse(&request.into_inner().digest)?;
        let store = self.store.clone();
        blocking(move || store.delete(&d)).await?;
        Ok(Response::new(Empty {}))
    }

    async fn import_image(
        &self,
        request: Request<Streaming<ImportImageRequest>>,
    ) -> Result<Response<ImportImageResponse>, Status> {
        let ns = berth_common::namespace_of(&request)?;
        self.do_import(ns, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn put_image(
        &self,
        request: Request<PutImageRequest>,
    ) -> Result<Response<Image>, Status> {
        let ns = berth_common::namespace_of(&request)?;
        let mut img = request
            .into_inner()
            .image
            .ok_or_else(|| Error::invalid("image is required"))?;
        img.name = image_name(&img.name)?;
        let target = img
            .target
            .as_ref()
            .ok_or_else(|| Error::invalid(format!("image {:?} needs a target", img.name)))?;
        Digest::parse(&target.digest)?;
        let store = self.store.clone();
        let img = blocking(move || store.put_image(&ns, img)).await?;
        Ok(Response::new(img))
    }

    async fn get_image(
        &self,
        request: Request<GetImageRequest>,
    ) -> Result<Response<Image>, Status> {
        let ns = berth_common::namespace_of(&request)?;
        let name = image_name(&request.into_inner().name)?;
        let store = self.store.clone();
        let img = blocking(move || store.get_image(&ns, &name)).await?;
        Ok(Response::new(img))
    }

    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let ns = berth_common::namespace_of(&request)?;
        let store = self.store.clone();
        let images = blocking(move || store.list_images(&ns)).await?;
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn delete_image(
        &self,
        request: Request<DeleteImageRequest>,
    ) -> Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&request)?;
        let name = image_name(&request.into_inner().name)?;
        let store = self.store.clone();
        blocking(move || store.delete_image(&ns, &name)).await?;
        Ok(Response::new(Empty {}))
    }

    async fn create_lease(
        &self,
        request: Request<CreateLeaseRequest>,
    ) -> Result<Response<Lease>, Status> {
        let r = request.into_inner();
        let store = self.store.clone();
        let lease = blocking(move || store.create_lease(&r.id, r.expires_at)).await?;
        Ok(Response::new(lease))
    }

    async fn delete_lease(
        &self,
        request: Request<DeleteLeaseRequest>,
    ) -> Result<Response<Empty>, Status> {
        let id = request.into_inner().id;
        let store = self.store.clone();
        blocking(move || store.delete_lease(&id)).await?;
        Ok(Response::new(Empty {}))
    }

    async fn list_leases(
        &self,
        _request: Request<ListLeasesRequest>,
    ) -> Result<Response<ListLeasesResponse>, Status> {
        let store = self.store.clone();
        let leases = blocking(move || store.list_leases()).await?;
        Ok(Response::new(ListLeasesResponse { leases }))
    }

    async fn add_lease_resource(
        &self,
        request: Request<AddLeaseResourceRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = request.into_inner();
        let d = Digest::parse(&r.digest)?;
        let store = self.store.clone();
        blocking(move || store.add_lease_resource(&r.lease, &d)).await?;
        Ok(Response::new(Empty {}))
    }

    async fn garbage_collect(
        &self,
        request: Request<GarbageCollectRequest>,
    ) -> Result<Response<GarbageCollectResponse>, Status> {
        let max_age = request.into_inner().ingest_max_age;
        let store = self.store.clone();
        let report = blocking(move || store.gc(max_age)).await?;
        Ok(Response::new(GarbageCollectResponse {
            reclaimed: report.deleted.iter().map(|b| b.size).sum(),
            deleted: report.deleted,
            expired_leases: report.expired_leases,
            removed_ingests: report.removed_ingests,
        }))
    }
}
