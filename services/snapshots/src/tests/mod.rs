//! Tests: tar fixtures, a content-store double and root gating.

mod service;
mod stream;
mod unpack;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_proto::content::v1::content_server::{Content, ContentServer};
use berth_proto::content::v1::*;
use berth_proto::types::v1::Empty;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};
use tonic::{Request, Response, Status};

/// The mtime every fixture entry gets.
pub const MTIME: u64 = 1_600_000_000;

/// True when running as root; otherwise prints why the test is skipped.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("skipping {test}: needs root");
        false
    }
}

/// `sha256:<hex>` of bytes.
pub fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// Builds tars with raw (unvalidated) paths, so hostile entries can be made.
pub struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    pub fn new() -> Self {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn header(path: &str, kind: EntryType, mode: u32, size: u64, link: &str) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        assert!(path.len() < 100 && link.len() < 100);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        h
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let h = Self::header(path, EntryType::Directory, mode, 0, "");
        self.0.append(&h, &[][..]).unwrap();
        self
    }

    /// A directory with its own owner and mtime.
    pub fn dir_as(mut self, path: &str, mode: u32, uid: u64, gid: u64, mtime: u64) -> Self {
        let mut h = Self::header(path, EntryType::Directory, mode, 0, "");
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        h.set_cksum();
        self.0.append(&h, &[][..]).unwrap();
        self
    }

    pub fn file(mut self, path: &str, mode: u32, data: &[u8]) -> Self {
        let h = Self::header(path, EntryType::Regular, mode, data.len() as u64, "");
        self.0.append(&h, data).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let h = Self::header(path, EntryType::Symlink, 0o777, 0, target);
        self.0.append(&h, &[][..]).unwrap();
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let h = Self::header(path, EntryType::Link, 0o644, 0, target);
        self.0.append(&h, &[][..]).unwrap();
        self
    }

    pub fn fifo(mut self, path: &str, mode: u32) -> Self {
        let h = Self::header(path, EntryType::Fifo, mode, 0, "");
        self.0.append(&h, &[][..]).unwrap();
        self
    }

    /// The tar bytes (with the end marker).
    pub fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

pub fn zstd(b: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(b, 3).unwrap()
}

/// A content store double serving Read from memory; everything else is
/// unimplemented.
#[derive(Default, Clone)]
pub struct FakeContent {
    pub blobs: Arc<std::sync::Mutex<HashMap<String, Vec<u8>>>>,
}

impl FakeContent {
    /// Stores `data` under `digest` (which may deliberately be wrong).
    pub fn put(&self, digest: &str, data: Vec<u8>) {
        self.blobs.lock().unwrap().insert(digest.to_string(), data);
    }
}

type ReadStream = tokio_stream::Iter<std::vec::IntoIter<Result<ReadResponse, Status>>>;

#[tonic::async_trait]
impl Content for FakeContent {
    async fn write(
        &self,
        _: Request<tonic::Streaming<WriteRequest>>,
    ) -> Result<Response<WriteResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn abort(&self, _: Request<AbortRequest>) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented("test double"))
    }
    type ReadStream = ReadStream;
    async fn read(&self, req: Request<ReadRequest>) -> Result<Response<ReadStream>, Status> {
        let digest = req.into_inner().digest;
        let data = self
            .blobs
            .lock()
            .unwrap()
            .get(&digest)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("blob {digest} not found")))?;
        // Odd-sized chunks exercise reassembly.
        let chunks: Vec<_> = data
            .chunks(7001)
            .enumerate()
            .map(|(i, c)| {
                Ok(ReadResponse {
                    offset: (i * 7001) as i64,
                    data: c.to_vec().into(),
                })
            })
            .collect();
        Ok(Response::new(tokio_stream::iter(chunks)))
    }
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn delete(&self, _: Request<DeleteRequest>) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn import_image(
        &self,
        _: Request<tonic::Streaming<ImportImageRequest>>,
    ) -> Result<Response<ImportImageResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn put_image(&self, _: Request<PutImageRequest>) -> Result<Response<Image>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn get_image(&self, _: Request<GetImageRequest>) -> Result<Response<Image>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn list_images(
        &self,
        _: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn delete_image(
        &self,
        _: Request<DeleteImageRequest>,
    ) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn create_lease(
        &self,
        _: Request<berth_proto::content::v1::CreateLeaseRequest>,
    ) -> Result<Response<berth_proto::content::v1::Lease>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn delete_lease(
        &self,
        _: Request<berth_proto::content::v1::DeleteLeaseRequest>,
    ) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn list_leases(
        &self,
        _: Request<berth_proto::content::v1::ListLeasesRequest>,
    ) -> Result<Response<berth_proto::content::v1::ListLeasesResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn add_lease_resource(
        &self,
        _: Request<berth_proto::content::v1::AddLeaseResourceRequest>,
    ) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn garbage_collect(
        &self,
        _: Request<berth_proto::content::v1::GarbageCollectRequest>,
    ) -> Result<Response<berth_proto::content::v1::GarbageCollectResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
}

/// Serves `content` on `<dir>/content.sock` and returns the socket path.
pub fn serve_content(dir: &Path, content: FakeContent) -> PathBuf {
    let sock = dir.join("content.sock");
    let incoming = berth_common::unix_incoming(&sock).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ContentServer::new(content))
            .serve_with_incoming(incoming),
    );
    sock
}
