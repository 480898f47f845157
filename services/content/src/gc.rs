//! Leases and garbage collection of blobs.
//!
//! A blob is kept while something references it: an image record (its
//! target, and the digest in its `org.berth.repo-digest` label) in any
//! namespace, or a lease that has not expired; manifests and indexes lead
//! on to the blobs they name. Everything else is deleted by [`Store::gc`].
//!
//! Collection takes the store's GC lock for writing; committing a blob
//! (with its lease), changing a lease and writing an image record take it
//! for reading. So a collection sees either the state before such a change
//! or after it, never half of it: a blob committed into a lease while a
//! collection runs is committed after the collection has finished, and a
//! blob that a client finds present and adds to its lease is either
//! deleted before (the client then gets NotFound and fetches it again) or
//! held. Writes never wait for a whole collection of a big store longer
//! than its mark and sweep, and a collection never waits for a stream: the
//! lock is held only around the commit itself.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::sync::{RwLockReadGuard, RwLockWriteGuard};

use berth_proto::content::v1::{BlobInfo, Image, Lease};
use prost::Message;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{db, Error, IoContext, Result};
use crate::store::Store;

/// Leases: id → JSON [`LeaseMeta`].
pub(crate) const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");
/// Blobs held by leases: (lease id, digest) → ().
pub(crate) const LEASE_RESOURCES: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("lease_resources");

/// The image record label whose value (a digest) is a GC root as well.
pub const REPO_DIGEST_LABEL: &str = "org.berth.repo-digest";

/// Idle ingests older than this are removed by a collection (one day).
pub const DEFAULT_INGEST_MAX_AGE: i64 = 24 * 3600;

/// Blobs bigger than this are never read as manifests.
const MAX_MANIFEST: u64 = 4 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseMeta {
    created_at: i64,
    /// 0: never.
    expires_at: i64,
}

/// What a collection did.
#[derive(Debug, Default)]
pub(crate) struct GcReport {
    pub deleted: Vec<BlobInfo>,
    pub expired_leases: Vec<String>,
    pub removed_ingests: Vec<String>,
}

fn check_lease_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 512 {
        return Err(Error::invalid("a lease id is 1 to 512 bytes long"));
    }
    Ok(())
}

impl Store {
    /// Shared side of the GC lock: held around commits, lease changes and
    /// image record writes.
    pub(crate) fn gc_shared(&self) -> RwLockReadGuard<'_, ()> {
        self.gc_lock.read().unwrap_or_else(|e| e.into_inner())
    }

    fn gc_exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.gc_lock.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a lease, or updates the expiry of an existing one.
    pub(crate) fn create_lease(&self, id: &str, expires_at: i64) -> Result<Lease> {
        let id = if id.is_empty() {
            format!("lease-{:016x}", rand::random::<u64>())
        } else {
            id.to_string()
        };
        check_lease_id(&id)?;
        let _g = self.gc_shared();
        let tx = self.db.begin_write().map_err(db)?;
        let meta = {
            let mut t = tx.open_table(LEASES).map_err(db)?;
            let created_at = t
                .get(id.as_str())
                .map_err(db)?
                .and_then(|v| serde_json::from_slice::<LeaseMeta>(v.value()).ok())
                .map_or_else(berth_common::time::now_unix, |m| m.created_at);
            let meta = LeaseMeta {
                created_at,
                expires_at: expires_at.max(0),
            };
            let data = serde_json::to_vec(&meta).map_err(|e| Error::Internal(e.to_string()))?;
            t.insert(id.as_str(), data.as_slice()).map_err(db)?;
            meta
        };
        tx.commit().map_err(db)?;
        Ok(Lease {
            id: id.clone(),
            created_at: meta.created_at,
            expires_at: meta.expires_at,
            resources: self.lease_resources(&id)?,
        })
    }

    fn lease_resources(&self, id: &str) -> Result<Vec<String>> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(LEASE_RESOURCES).map_err(db)?;
        let mut out = Vec::new();
        for row in t.range((id, "")..).map_err(db)? {
            let (k, _) = row.map_err(db)?;
            if k.value().0 != id {
                break;
            }
            out.push(k.value().1.to_string());
        }
        Ok(out)
    }

    /// Deletes a lease and its resource list.
    pub(crate) fn delete_lease(&self, id: &str) -> Result<()> {
        let _g = self.gc_shared();
        if !self.delete_lease_locked(id)? {
            return Err(Error::not_found(format!("lease {id:?} not found")));
        }
        Ok(())
    }

    fn delete_lease_locked(&self, id: &str) -> Result<bool> {
        let held = self.lease_resources(id)?;
        let tx = self.db.begin_write().map_err(db)?;
        let existed = {
            let mut t = tx.open_table(LEASES).map_err(db)?;
            let existed = t.remove(id).map_err(db)?.is_some();
            let mut r = tx.open_table(LEASE_RESOURCES).map_err(db)?;
            for d in &held {
                r.remove((id, d.as_str())).map_err(db)?;
            }
            existed
        };
        tx.commit().map_err(db)?;
        Ok(existed)
    }

    /// All leases.
    pub(crate) fn list_leases(&self) -> Result<Vec<Lease>> {
        let metas: Vec<(String, LeaseMeta)> = {
            let tx = self.db.begin_read().map_err(db)?;
            let t = tx.open_table(LEASES).map_err(db)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(db)? {
                let (k, v) = row.map_err(db)?;
                if let Ok(m) = serde_json::from_slice::<LeaseMeta>(v.value()) {
                    out.push((k.value().to_string(), m));
                }
            }
            out
        };
        metas
            .into_iter()
            .map(|(id, m)| {
                Ok(Lease {
                    resources: self.lease_resources(&id)?,
                    id,
                    created_at: m.created_at,
                    expires_at: m.expires_at,
                })
            })
            .collect()
    }

    /// Adds a committed blob to a lease. The caller holds the GC lock
    /// (shared).
    pub(crate) fn add_lease_resource_locked(&self, id: &str, d: &Digest) -> Result<()> {
        let tx = self.db.begin_write().map_err(db)?;
        {
            let leases = tx.open_table(LEASES).map_err(db)?;
            if leases.get(id).map_err(db)?.is_none() {
                return Err(Error::not_found(format!("lease {id:?} not found")));
            }
            let mut t = tx.open_table(LEASE_RESOURCES).map_err(db)?;
            t.insert((id, d.as_str()), ()).map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(())
    }

    /// Whether a lease exists.
    pub(crate) fn has_lease(&self, id: &str) -> Result<bool> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(LEASES).map_err(db)?;
        Ok(t.get(id).map_err(db)?.is_some())
    }

    /// Adds a blob that must be committed already to a lease.
    pub(crate) fn add_lease_resource(&self, id: &str, d: &Digest) -> Result<()> {
        let _g = self.gc_shared();
        if !self.has_blob(d) {
            return Err(Error::not_found(format!("blob {d} not found")));
        }
        self.add_lease_resource_locked(id, d)
    }

    /// The digests a manifest or index names, when `d` is one.
    fn children(&self, d: &Digest) -> Vec<Digest> {
        let path = self.blob_path(d);
        let Ok(md) = fs::metadata(&path) else {
            return Vec::new();
        };
        if md.len() > MAX_MANIFEST || md.len() < 2 {
            return Vec::new();
        }
        let Ok(data) = fs::read(&path) else {
            return Vec::new();
        };
        if data.first() != Some(&b'{') {
            return Vec::new();
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut take = |x: &serde_json::Value| {
            if let Some(d) = x["digest"].as_str().and_then(|s| Digest::parse(s).ok()) {
                out.push(d);
            }
        };
        take(&v["config"]);
        take(&v["subject"]);
        for key in ["layers", "manifests", "blobs"] {
            for x in v[key].as_array().into_iter().flatten() {
                take(x);
            }
        }
        out
    }

    /// Mark and sweep; see the module documentation.
    pub(crate) fn gc(&self, ingest_max_age: i64) -> Result<GcReport> {
        let _g = self.gc_exclusive();
        let now = berth_common::time::now_unix();
        let mut report = GcReport::default();
        let mut roots: Vec<Digest> = Vec::new();

        for lease in self.list_leases()? {
            if lease.expires_at > 0 && lease.expires_at <= now {
                self.delete_lease_locked(&lease.id)?;
                report.expired_leases.push(lease.id);
                continue;
            }
            roots.extend(lease.resources.iter().filter_map(|d| Digest::parse(d).ok()));
        }
        {
            let tx = self.db.begin_read().map_err(db)?;
            let t = tx.open_table(crate::store::IMAGES_TABLE).map_err(db)?;
            for row in t.iter().map_err(db)? {
                let (_, v) = row.map_err(db)?;
                let Ok(img) = Image::decode(v.value()) else {
                    continue;
                };
                if let Some(d) = img.target.and_then(|t| Digest::parse(&t.digest).ok()) {
                    roots.push(d);
                }
                if let Some(d) = img
                    .labels
                    .get(REPO_DIGEST_LABEL)
                    .and_then(|s| Digest::parse(s).ok())
                {
                    roots.push(d);
                }
            }
        }

        let mut marked: HashSet<Digest> = HashSet::new();
        while let Some(d) = roots.pop() {
            if marked.contains(&d) {
                continue;
            }
            roots.extend(self.children(&d));
            marked.insert(d);
        }

        for info in self.list()? {
            let Ok(d) = Digest::parse(&info.digest) else {
                continue;
            };
            if marked.contains(&d) {
                continue;
            }
            match self.delete(&d) {
                Ok(()) => report.deleted.push(info),
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }

        let max_age = if ingest_max_age > 0 {
            ingest_max_age
        } else {
            DEFAULT_INGEST_MAX_AGE
        };
        report.removed_ingests = self.remove_idle_ingests(now - max_age)?;
        if !report.deleted.is_empty() || !report.removed_ingests.is_empty() {
            tracing::info!(
                blobs = report.deleted.len(),
                ingests = report.removed_ingests.len(),
                "garbage collected"
            );
        }
        Ok(report)
    }

    /// Removes ingests that no writer holds and whose data was last written
    /// before `before` (seconds since the epoch).
    fn remove_idle_ingests(&self, before: i64) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let rd =
            fs::read_dir(&self.ingest_dir).ctx(|| format!("read {}", self.ingest_dir.display()))?;
        let held: HashSet<String> = self
            .locks
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default();
        for entry in rd.flatten() {
            let dir = entry.path();
            let Some(meta) = crate::ingest::read_meta(&dir).ok().flatten() else {
                continue;
            };
            if held.contains(&meta.reference) {
                continue;
            }
            let written = last_write(&dir.join("data"))
                .or_else(|| last_write(&dir.join("meta")))
                .unwrap_or(0);
            if written < before {
                fs::remove_dir_all(&dir).ctx(|| format!("remove {}", dir.display()))?;
                removed.push(meta.reference);
            }
        }
        Ok(removed)
    }
}

fn last_write(p: &Path) -> Option<i64> {
    fs::metadata(p)
        .ok()?
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}
