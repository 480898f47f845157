//! Ingests: blobs being written, under `ingest/<sha256 of ref>/{data,meta}`.
//!
//! An ingest survives a dropped stream and a restart: its data file holds
//! what was received, its meta file the ref, expected digest and total.
//! Opening it again re-hashes the data so the digest keeps growing
//! incrementally from where it stopped.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::store::{RefLock, Store};

/// What `meta` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct IngestMeta {
    #[serde(rename = "ref")]
    pub reference: String,
    #[serde(default)]
    pub expected: String,
    #[serde(default)]
    pub total: i64,
    #[serde(default)]
    pub started_at: i64,
    /// Internal ingest (import, config, manifest) that nobody can resume:
    /// removed when left behind by a crash.
    #[serde(default)]
    pub ephemeral: bool,
}

/// The state of an ingest, as Status reports it.
pub(crate) struct IngestStatus {
    pub meta: IngestMeta,
    pub offset: i64,
}

/// An open ingest with its writer lock held.
pub(crate) struct Ingest {
    store: Arc<Store>,
    dir: PathBuf,
    file: File,
    hasher: Sha256,
    size: u64,
    meta: IngestMeta,
    /// Delete the ingest when dropped uncommitted (imports); plain writes
    /// keep it so that the client can resume.
    ephemeral: bool,
    done: bool,
    /// The lease that holds the blob once committed.
    pub(crate) lease: Option<String>,
    /// Time spent writing and hashing appended data, for the commit's log.
    write_time: Duration,
    hash_time: Duration,
    _lock: RefLock,
}

fn check_ref(reference: &str) -> Result<()> {
    if reference.is_empty() {
        return Err(Error::invalid("ref is required"));
    }
    if reference.len() > 1024 {
        return Err(Error::invalid("ref is longer than 1024 bytes"));
    }
    Ok(())
}

impl Store {
    /// The directory of the ingest `reference` (the ref is hashed, so any
    /// string is a safe name).
    pub(crate) fn ingest_path(&self, reference: &str) -> PathBuf {
        self.ingest_dir
            .join(hex::encode(Sha256::digest(reference.as_bytes())))
    }

    /// Opens the ingest `reference`, creating it when new. `expected` and a
    /// positive `total` update what is recorded.
    pub(crate) fn open_ingest(
        self: &Arc<Self>,
        reference: &str,
        expected: Option<&Digest>,
        total: i64,
        ephemeral: bool,
    ) -> Result<Ingest> {
        check_ref(reference)?;
        let lock = self.lock(reference)?;
        let dir = self.ingest_path(reference);
        fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        let mut meta = read_meta(&dir)?.unwrap_or_else(|| IngestMeta {
            reference: reference.to_string(),
            started_at: berth_common::time::now_unix(),
            ephemeral,
            ..Default::default()
        });
        if let Some(e) = expected {
            meta.expected = e.to_string();
        }
        if total > 0 {
            meta.total = total;
        }
        write_meta(&dir, &meta)?;
        let data = dir.join("data");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&data)
            .ctx(|| format!("open {}", data.display()))?;
        // Resume: hash what is there already.
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = file
                .read(&mut buf)
                .ctx(|| format!("read {}", data.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok(Ingest {
            store: self.clone(),
            dir,
            file,
            hasher,
            size,
            meta,
            ephemeral,
            done: false,
            lease: None,
            write_time: Duration::ZERO,
            hash_time: Duration::ZERO,
            _lock: lock,
        })
    }

    /// The state of an ingest.
    pub(crate) fn ingest_status(&self, reference: &str) -> Result<IngestStatus> {
        check_ref(reference)?;
        let dir = self.ingest_path(reference);
        let meta = read_meta(&dir)?
            .ok_or_else(|| Error::not_found(format!("no ingest for ref {reference:?}")))?;
        let data = dir.join("data");
        let offset = match fs::metadata(&data) {
            Ok(m) => m.len() as i64,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::io(format!("stat {}", data.display()), e)),
        };
        Ok(IngestStatus { meta, offset })
    }

    /// Removes what a crash left behind: internal (ephemeral) ingests and
    /// ingest directories without a meta file. Called on open, before any
    /// writer exists.
    pub(crate) fn clean_ingests(&self) -> Result<()> {
        let rd =
            fs::read_dir(&self.ingest_dir).ctx(|| format!("read {}", self.ingest_dir.display()))?;
        for entry in rd {
            let entry = entry.ctx(|| format!("read {}", self.ingest_dir.display()))?;
            let dir = entry.path();
            let stale = match read_meta(&dir) {
                Ok(Some(meta)) => meta.ephemeral,
                Ok(None) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "keeping an ingest whose meta cannot be read");
                    false
                }
            };
            if stale {
                tracing::info!(dir = %dir.display(), "removing an abandoned ingest");
                fs::remove_dir_all(&dir).ctx(|| format!("remove {}", dir.display()))?;
            }
        }
        Ok(())
    }

    /// Deletes an ingest that no writer holds.
    pub(crate) fn abort_ingest(self: &Arc<Self>, reference: &str) -> Result<()> {
        check_ref(reference)?;
        let _lock = self.lock(reference)?;
        let dir = self.ingest_path(reference);
        if !dir.exists() {
            return Err(Error::not_found(format!("no ingest for ref {reference:?}")));
        }
        fs::remove_dir_all(&dir).ctx(|| format!("remove {}", dir.display()))
    }
}

impl Ingest {
    /// Bytes stored so far.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The digest of the data stored so far.
    pub(crate) fn digest(&self) -> Digest {
        Digest::from_hasher(self.hasher.clone())
    }

    /// The expected digest recorded for this ingest, if any.
    pub(crate) fn expected(&self) -> Option<&str> {
        Some(self.meta.expected.as_str()).filter(|e| !e.is_empty())
    }

    /// Records an expected digest and/or total given by a later message.
    pub(crate) fn update(&mut self, expected: Option<&Digest>, total: i64) -> Result<()> {
        let mut changed = false;
        if let Some(e) = expected {
            if self.meta.expected != e.as_str() {
                self.meta.expected = e.to_string();
                changed = true;
            }
        }
        if total > 0 && total != self.meta.total {
            self.meta.total = total;
            changed = true;
        }
        if changed {
            write_meta(&self.dir, &self.meta)?;
        }
        Ok(())
    }

    /// Appends `data`, which must start at the current size.
    pub(crate) fn append(&mut self, offset: i64, data: &[u8]) -> Result<()> {
        if offset != self.size as i64 {
            return Err(Error::invalid(format!(
                "write offset {offset} does not match the ingest size {} of ref {:?}: resume at offset {}",
                self.size, self.meta.reference, self.size
            )));
        }
        let end = self.size + data.len() as u64;
        if self.meta.total > 0 && end > self.meta.total as u64 {
            return Err(Error::invalid(format!(
                "write of {} bytes at offset {offset} goes past the expected total of {} bytes for ref {:?}",
                data.len(),
                self.meta.total,
                self.meta.reference
            )));
        }
        let t = Instant::now();
        self.file
            .write_all(data)
            .ctx(|| format!("write {}", self.dir.join("data").display()))?;
        let written = Instant::now();
        self.hasher.update(data);
        self.hash_time += written.elapsed();
        self.write_time += written - t;
        self.size += data.len() as u64;
        Ok(())
    }

    /// The path of the data file.
    pub(crate) fn data_path(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Verifies size and digest and makes the data a committed blob. On a
    /// mismatch the ingest is deleted and nothing is committed.
    pub(crate) fn commit(
        mut self,
        total: i64,
        labels: HashMap<String, String>,
    ) -> Result<(Digest, u64)> {
        let reference = self.meta.reference.clone();
        let expected = match self.expected() {
            Some(e) => Digest::parse(e)?,
            None => {
                return Err(Error::invalid(format!(
                    "cannot commit ref {reference:?}: no expected digest was given"
                )))
            }
        };
        let total = if total > 0 { total } else { self.meta.total };
        if total > 0 && total as u64 != self.size {
            let size = self.size;
            self.discard()?;
            return Err(Error::invalid(format!(
                "size mismatch for ref {reference:?}: expected {total} bytes, got {size}"
            )));
        }
        let actual = Digest::from_hasher(self.hasher.clone());
        if actual != expected {
            self.discard()?;
            return Err(Error::invalid(format!(
                "digest mismatch: expected {expected}, got {actual}"
            )));
        }
        let data = self.data_path();
        let t = Instant::now();
        self.file
            .sync_all()
            .ctx(|| format!("fsync {}", data.display()))?;
        tracing::info!(
            digest = %actual, bytes = self.size,
            write_ms = self.write_time.as_millis() as u64,
            hash_ms = self.hash_time.as_millis() as u64,
            fsync_ms = t.elapsed().as_millis() as u64,
            "committing blob"
        );
        let lease = self.lease.clone();
        self.store
            .commit_file(&data, &actual, self.size, labels, lease.as_deref())?;
        let size = self.size;
        self.discard()?;
        Ok((actual, size))
    }

    /// Deletes the ingest.
    pub(crate) fn discard(&mut self) -> Result<()> {
        self.done = true;
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", self.dir.display()), e)),
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if self.ephemeral && !self.done {
            if let Err(e) = self.discard() {
                tracing::warn!(error = %e, "cannot remove an abandoned ingest");
            }
        }
    }
}

pub(crate) fn read_meta(dir: &Path) -> Result<Option<IngestMeta>> {
    let p = dir.join("meta");
    match fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Internal(format!("ingest meta {} is corrupt: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", p.display()), e)),
    }
}

fn write_meta(dir: &Path, meta: &IngestMeta) -> Result<()> {
    let tmp = dir.join("meta.tmp");
    let p = dir.join("meta");
    let b = serde_json::to_vec(meta).map_err(|e| Error::Internal(e.to_string()))?;
    fs::write(&tmp, b).ctx(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, &p).ctx(|| format!("rename {}", tmp.display()))
}
