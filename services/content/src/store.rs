//! On-disk layout of `<root>/content/`: committed blobs, ingests and the
//! redb metadata (blob labels and times, image records per namespace).
//!
//! All methods are blocking; the gRPC layer runs them on the blocking pool.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use berth_proto::content::v1::{BlobInfo, Image};
use prost::Message;
use redb::{Database, ReadableTable, TableDefinition};

use crate::digest::Digest;
use crate::error::{db, Error, IoContext, Result};

/// Committed blobs: digest → encoded [`BlobInfo`] (size, created_at, labels).
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
/// Image records: (namespace, full name) → encoded [`Image`].
const IMAGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("images");
/// The image records table, for the garbage collector.
pub(crate) const IMAGES_TABLE: TableDefinition<(&str, &str), &[u8]> = IMAGES;

/// The content store of one berthd root.
pub(crate) struct Store {
    pub(crate) blobs_dir: PathBuf,
    pub(crate) ingest_dir: PathBuf,
    pub(crate) db: Database,
    /// Refs with a writer attached right now.
    pub(crate) locks: Mutex<HashSet<String>>,
    /// Taken exclusively by garbage collection, shared by everything that
    /// adds a reference (commits, leases, image records); see `gc.rs`.
    pub(crate) gc_lock: RwLock<()>,
}

/// Holds the write lock of an ingest ref; released on drop.
pub(crate) struct RefLock {
    store: Arc<Store>,
    reference: String,
}

impl Drop for RefLock {
    fn drop(&mut self) {
        if let Ok(mut l) = self.store.locks.lock() {
            l.remove(&self.reference);
        }
    }
}

impl Store {
    /// Opens (creating when needed) the store under `<root>/content`.
    pub(crate) fn open(root: &Path) -> Result<Self> {
        let base = root.join("content");
        let blobs_dir = base.join("blobs").join("sha256");
        let ingest_dir = base.join("ingest");
        for d in [&blobs_dir, &ingest_dir] {
            fs::create_dir_all(d).ctx(|| format!("create {}", d.display()))?;
        }
        let database = Database::create(base.join("metadata.redb")).map_err(db)?;
        let tx = database.begin_write().map_err(db)?;
        tx.open_table(BLOBS).map_err(db)?;
        tx.open_table(IMAGES).map_err(db)?;
        tx.open_table(crate::gc::LEASES).map_err(db)?;
        tx.open_table(crate::gc::LEASE_RESOURCES).map_err(db)?;
        tx.commit().map_err(db)?;
        let store = Store {
            blobs_dir,
            ingest_dir,
            db: database,
            locks: Mutex::new(HashSet::new()),
            gc_lock: RwLock::new(()),
        };
        store.clean_ingests()?;
        Ok(store)
    }

    /// Takes the write lock of `reference`, failing when another writer has it.
    pub(crate) fn lock(self: &Arc<Self>, reference: &str) -> Result<RefLock> {
        let mut l = self
            .locks
            .lock()
            .map_err(|_| Error::Internal("ingest lock table poisoned".into()))?;
        if !l.insert(reference.to_string()) {
            return Err(Error::FailedPrecondition(format!(
                "ref {reference:?} is locked: another write to it is in progress"
            )));
        }
        Ok(RefLock {
            store: self.clone(),
            reference: reference.to_string(),
        })
    }

    /// The path of a committed blob (which may not exist).
    pub(crate) fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir.join(d.hex())
    }

    /// Whether the blob is committed.
    pub(crate) fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Makes the fsynced file `src` the blob `d` (atomically, by rename) and
    /// records its metadata. When the blob exists already, `src` is removed
    /// and only the labels are merged. With a lease, the blob is added to it
    /// in the same step, excluded from garbage collection (see `gc.rs`).
    pub(crate) fn commit_file(
        &self,
        src: &Path,
        d: &Digest,
        size: u64,
        labels: std::collections::HashMap<String, String>,
        lease: Option<&str>,
    ) -> Result<()> {
        let _gc = self.gc_shared();
        if let Some(l) = lease {
            if !self.has_lease(l)? {
                return Err(Error::FailedPrecondition(format!(
                    "lease {l:?} not found (expired and collected?)"
                )));
            }
        }
        let dst = self.blob_path(d);
        if dst.is_file() {
            fs::remove_file(src).ctx(|| format!("remove {}", src.display()))?;
        } else {
            fs::rename(src, &dst)
                .ctx(|| format!("rename {} to {}", src.display(), dst.display()))?;
            fsync_dir(&self.blobs_dir)?;
        }
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut t = tx.open_table(BLOBS).map_err(db)?;
            let existing = t
                .get(d.as_str())
                .map_err(db)?
                .and_then(|v| BlobInfo::decode(v.value()).ok());
            let info = match existing {
                Some(mut info) => {
                    info.labels.extend(labels);
                    info.size = size as i64;
                    info
                }
                None => BlobInfo {
                    digest: d.to_string(),
                    size: size as i64,
                    created_at: berth_common::time::now_unix(),
                    labels,
                },
            };
            t.insert(d.as_str(), info.encode_to_vec().as_slice())
                .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        if let Some(l) = lease {
            self.add_lease_resource_locked(l, d)?;
        }
        Ok(())
    }

    /// Metadata of a committed blob.
    pub(crate) fn info(&self, d: &Digest) -> Result<BlobInfo> {
        let path = self.blob_path(d);
        let md = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!("blob {d} not found")))
            }
            Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
        };
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(BLOBS).map_err(db)?;
        let stored = t
            .get(d.as_str())
            .map_err(db)?
            .and_then(|v| BlobInfo::decode(v.value()).ok());
        Ok(match stored {
            Some(mut info) => {
                info.size = md.len() as i64;
                info
            }
            // Committed but its metadata was lost (a crash between rename
            // and the metadata commit): fall back to the file's time.
            None => BlobInfo {
                digest: d.to_string(),
                size: md.len() as i64,
                created_at: md
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|t| t.as_secs() as i64)
                    .unwrap_or_default(),
                labels: Default::default(),
            },
        })
    }

    /// All committed blobs, sorted by digest.
    pub(crate) fn list(&self) -> Result<Vec<BlobInfo>> {
        let rd =
            fs::read_dir(&self.blobs_dir).ctx(|| format!("read {}", self.blobs_dir.display()))?;
        let mut digests = Vec::new();
        for entry in rd {
            let entry = entry.ctx(|| format!("read {}", self.blobs_dir.display()))?;
            let name = entry.file_name();
            // Skip anything that is not a blob (never trust a file name).
            if let Some(d) = name
                .to_str()
                .and_then(|n| Digest::parse(&format!("sha256:{n}")).ok())
            {
                digests.push(d);
            }
        }
        digests.sort();
        let mut out = Vec::with_capacity(digests.len());
        for d in digests {
            match self.info(&d) {
                Ok(i) => out.push(i),
                Err(Error::NotFound(_)) => {} // deleted meanwhile
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Deletes a committed blob and its metadata.
    pub(crate) fn delete(&self, d: &Digest) -> Result<()> {
        let path = self.blob_path(d);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!("blob {d} not found")))
            }
            Err(e) => return Err(Error::io(format!("remove {}", path.display()), e)),
        }
        let tx = self.db.begin_write().map_err(db)?;
        tx.open_table(BLOBS)
            .map_err(db)?
            .remove(d.as_str())
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(())
    }

    /// An image record.
    pub(crate) fn get_image(&self, ns: &str, name: &str) -> Result<Image> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(IMAGES).map_err(db)?;
        let v = t
            .get((ns, name))
            .map_err(db)?
            .ok_or_else(|| Error::not_found(format!("image {name:?} not found")))?;
        Image::decode(v.value())
            .map_err(|e| Error::Internal(format!("image record {name:?} is corrupt: {e}")))
    }

    /// Creates or replaces an image record; keeps `created_at` of a record it
    /// replaces. Returns the stored record.
    pub(crate) fn put_image(&self, ns: &str, mut img: Image) -> Result<Image> {
        let _gc = self.gc_shared();
        if let Some(d) = img
            .target
            .as_ref()
            .and_then(|t| Digest::parse(&t.digest).ok())
        {
            if !self.has_blob(&d) {
                return Err(Error::FailedPrecondition(format!(
                    "target {d} of image {:?} is not in the content store",
                    img.name
                )));
            }
        }
        let now = berth_common::time::now_unix();
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut t = tx.open_table(IMAGES).map_err(db)?;
            let old_created = t
                .get((ns, img.name.as_str()))
                .map_err(db)?
                .and_then(|v| Image::decode(v.value()).ok())
                .map(|old| old.created_at);
            img.created_at = match old_created {
                Some(c) => c,
                None if img.created_at > 0 => img.created_at,
                None => now,
            };
            img.updated_at = now;
            t.insert((ns, img.name.as_str()), img.encode_to_vec().as_slice())
                .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(img)
    }

    /// All image records of a namespace, sorted by name.
    pub(crate) fn list_images(&self, ns: &str) -> Result<Vec<Image>> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(IMAGES).map_err(db)?;
        let mut out = Vec::new();
        for row in t.range((ns, "")..).map_err(db)? {
            let (k, v) = row.map_err(db)?;
            if k.value().0 != ns {
                break;
            }
            out.push(
                Image::decode(v.value())
                    .map_err(|e| Error::Internal(format!("image record is corrupt: {e}")))?,
            );
        }
        Ok(out)
    }

    /// Deletes an image record.
    pub(crate) fn delete_image(&self, ns: &str, name: &str) -> Result<()> {
        let tx = self.db.begin_write().map_err(db)?;
        let removed = tx
            .open_table(IMAGES)
            .map_err(db)?
            .remove((ns, name))
            .map_err(db)?
            .is_some();
        if !removed {
            return Err(Error::not_found(format!("image {name:?} not found")));
        }
        tx.commit().map_err(db)?;
        Ok(())
    }
}

/// Makes a directory's entries (a rename into it) durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .ctx(|| format!("fsync {}", dir.display()))
}
