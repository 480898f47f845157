//! Leases and blob garbage collection, as the gateway uses them.
//!
//! berth-content collects every blob that no image record (in any
//! namespace) and no live lease references (see its `gc.rs`). The gateway:
//!
//! - writes every blob of an image it assembles (pull, load, import,
//!   commit) into a lease taken for that operation, and adds blobs it finds
//!   already present to the lease (a blob that vanished meanwhile is
//!   fetched again); the lease is deleted once the image record exists, and
//!   expires after [`LEASE_TTL`] when the gateway dies meanwhile, so an
//!   interrupted operation leaves nothing behind after that;
//! - keeps each dangling image (`<none>`, recorded in its own store) in a
//!   lease `dangling/<ns>/<manifest digest>` that never expires;
//! - serialises the steps that move an image from one root to another (a
//!   name to another name, a name to dangling) with collection through
//!   `gc_lock`, so a collection never sees an image between two roots;
//! - collects after `rmi`, the prunes and a failed load.

use berth_common::request;
use berth_proto::content::v1::{
    AddLeaseResourceRequest, CreateLeaseRequest, DeleteLeaseRequest, GarbageCollectRequest,
    GarbageCollectResponse,
};
use berth_proto::types::v1::Descriptor;
use tonic::Code;

use crate::error::{Error, Result};
use crate::Inner;

/// How long a lease of an operation holds its blobs when the gateway dies
/// before ending it (containerd's default for pulls).
pub(crate) const LEASE_TTL: i64 = 24 * 3600;

fn dangling_lease(ns: &str, digest: &str) -> String {
    format!("dangling/{ns}/{digest}")
}

impl Inner {
    /// Takes a new lease for an operation (`purpose` prefixes its id).
    pub(crate) async fn new_lease(&self, purpose: &str) -> Result<String> {
        let id = format!("{purpose}-{:016x}", rand::random::<u64>());
        self.content
            .clone()
            .create_lease(request(
                "default",
                CreateLeaseRequest {
                    id: id.clone(),
                    expires_at: berth_common::time::now_unix() + LEASE_TTL,
                },
            ))
            .await
            .map_err(Error::service("content"))?;
        Ok(id)
    }

    /// Ends a lease; its blobs are collectable from now on unless an image
    /// references them.
    pub(crate) async fn end_lease(&self, id: &str) {
        match self
            .content
            .clone()
            .delete_lease(request("default", DeleteLeaseRequest { id: id.into() }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => tracing::warn!(lease = id, "cannot delete lease: {}", s.message()),
        }
    }

    /// Adds a committed blob to a lease. Ok(false) when the blob is not
    /// there (any more).
    pub(crate) async fn hold(&self, lease: &str, digest: &str) -> Result<bool> {
        match self
            .content
            .clone()
            .add_lease_resource(request(
                "default",
                AddLeaseResourceRequest {
                    lease: lease.into(),
                    digest: digest.into(),
                },
            ))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound && s.message().starts_with("blob") => Ok(false),
            Err(s) => Err(Error::service("content")(s)),
        }
    }

    /// Records an image that has no name left (docker's `<none>`), held by
    /// its own lease.
    pub(crate) async fn put_dangling(&self, ns: &str, manifest: &Descriptor) -> Result<()> {
        let id = dangling_lease(ns, &manifest.digest);
        self.content
            .clone()
            .create_lease(request(
                "default",
                CreateLeaseRequest {
                    id: id.clone(),
                    expires_at: 0,
                },
            ))
            .await
            .map_err(Error::service("content"))?;
        if !self.hold(&id, &manifest.digest).await? {
            self.end_lease(&id).await;
            return Err(Error::Internal(format!(
                "manifest {} is not in the content store",
                manifest.digest
            )));
        }
        self.store.put_dangling(ns, manifest)
    }

    /// Forgets a dangling image (it got a name, or it is removed).
    pub(crate) async fn delete_dangling(&self, ns: &str, digest: &str) -> Result<()> {
        self.store.delete_dangling(ns, digest)?;
        self.end_lease(&dangling_lease(ns, digest)).await;
        Ok(())
    }

    /// Gives dangling images recorded before leases existed their lease.
    pub(crate) async fn restore_dangling_leases(&self) {
        let all = match self.store.all_dangling() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("cannot read dangling images: {e}");
                return;
            }
        };
        for (ns, desc) in all {
            if let Err(e) = self.put_dangling(&ns, &desc).await {
                tracing::warn!(digest = %desc.digest, "dangling image without its blobs: {e}");
            }
        }
    }

    /// Deletes the blobs nothing references any more. Excludes the
    /// gateway's moves of images between roots while it runs.
    pub(crate) async fn collect_garbage(&self) -> Result<GarbageCollectResponse> {
        let _g = self.gc_lock.write().await;
        Ok(self
            .content
            .clone()
            .garbage_collect(request("default", GarbageCollectRequest::default()))
            .await
            .map_err(Error::service("content"))?
            .into_inner())
    }

    /// [`Inner::collect_garbage`] for cleanup paths: failures are logged.
    pub(crate) async fn collect_garbage_quietly(&self) -> i64 {
        match self.collect_garbage().await {
            Ok(r) => r.reclaimed,
            Err(e) => {
                tracing::warn!("garbage collection failed: {e}");
                0
            }
        }
    }
}
