//! The gateway's own records (containers, image sizes) in redb.

use std::path::Path;

use redb::{Database, Durability, ReadableTable, TableDefinition};

use berth_proto::types::v1::Descriptor;

use crate::container::ContainerRecord;
use crate::error::{Error, Result};
use crate::volumes::VolumeRecord;

const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
const IMAGE_SIZES: TableDefinition<&str, u64> = TableDefinition::new("image_sizes");
/// Images without a name ("<none>"), by "ns/manifest digest" → descriptor JSON.
const DANGLING: TableDefinition<&str, &[u8]> = TableDefinition::new("dangling_images");
/// Volume records by "ns/name" → JSON.
const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("volumes");

/// Crash-safe store of container records.
pub struct Store {
    db: Database,
}

fn key(ns: &str, id: &str) -> String {
    format!("{ns}/{id}")
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let db = Database::create(dir.join("metadata.redb"))?;
        // Create the tables only when missing: a write transaction at every
        // start is one more durable commit (fsync) before the gateway serves.
        let have_tables = {
            let tx = db.begin_read()?;
            tx.open_table(CONTAINERS).is_ok()
                && tx.open_table(IMAGE_SIZES).is_ok()
                && tx.open_table(DANGLING).is_ok()
                && tx.open_table(VOLUMES).is_ok()
        };
        if !have_tables {
            let tx = db.begin_write()?;
            tx.open_table(CONTAINERS)?;
            tx.open_table(IMAGE_SIZES)?;
            tx.open_table(DANGLING)?;
            tx.open_table(VOLUMES)?;
            tx.commit()?;
        }
        Ok(Store { db })
    }

    pub fn load_containers(&self) -> Result<Vec<ContainerRecord>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(CONTAINERS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            match serde_json::from_slice(v.value()) {
                Ok(rec) => out.push(rec),
                Err(e) => tracing::warn!("skipping unreadable container record {}: {e}", k.value()),
            }
        }
        Ok(out)
    }

    /// Writes a record. `durable` forces it to disk before returning;
    /// otherwise it is made durable by the next durable commit.
    pub fn put(&self, rec: &ContainerRecord, durable: bool) -> Result<()> {
        let data = serde_json::to_vec(rec).map_err(|e| Error::Internal(e.to_string()))?;
        let mut tx = self.db.begin_write()?;
        if !durable {
            tx.set_durability(Durability::None);
        }
        {
            let mut table = tx.open_table(CONTAINERS)?;
            table.insert(key(&rec.namespace, &rec.id).as_str(), data.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes several records in one transaction.
    pub fn put_many(&self, recs: &[ContainerRecord], durable: bool) -> Result<()> {
        if recs.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write()?;
        if !durable {
            tx.set_durability(Durability::None);
        }
        {
            let mut table = tx.open_table(CONTAINERS)?;
            for rec in recs {
                let data = serde_json::to_vec(rec).map_err(|e| Error::Internal(e.to_string()))?;
                table.insert(key(&rec.namespace, &rec.id).as_str(), data.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn delete(&self, ns: &str, id: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(CONTAINERS)?;
            table.remove(key(ns, id).as_str())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn load_volumes(&self) -> Result<Vec<VolumeRecord>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(VOLUMES)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            match serde_json::from_slice(v.value()) {
                Ok(rec) => out.push(rec),
                Err(e) => tracing::warn!("skipping unreadable volume record {}: {e}", k.value()),
            }
        }
        Ok(out)
    }

    /// Writes a volume record durably.
    pub fn put_volume(&self, rec: &VolumeRecord) -> Result<()> {
        let data = serde_json::to_vec(rec).map_err(|e| Error::Internal(e.to_string()))?;
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(VOLUMES)?;
            table.insert(key(&rec.namespace, &rec.name).as_str(), data.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn delete_volume(&self, ns: &str, name: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(VOLUMES)?;
            table.remove(key(ns, name).as_str())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn put_image_size(&self, image_id: &str, size: u64) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(IMAGE_SIZES)?;
            table.insert(image_id, size)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn image_size(&self, image_id: &str) -> Result<Option<u64>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(IMAGE_SIZES)?;
        Ok(table.get(image_id)?.map(|v| v.value()))
    }

    /// Records an image that has no name left (docker's `<none>`).
    pub fn put_dangling(&self, ns: &str, manifest: &Descriptor) -> Result<()> {
        let data = serde_json::to_vec(&serde_json::json!({
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": manifest.size,
        }))
        .map_err(|e| Error::Internal(e.to_string()))?;
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(DANGLING)?;
            table.insert(key(ns, &manifest.digest).as_str(), data.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn delete_dangling(&self, ns: &str, manifest_digest: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(DANGLING)?;
            table.remove(key(ns, manifest_digest).as_str())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every unnamed image, with its namespace.
    pub fn all_dangling(&self) -> Result<Vec<(String, Descriptor)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(DANGLING)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            let Some((ns, _)) = k.value().rsplit_once('/') else {
                continue;
            };
            if let Ok(d) = serde_json::from_slice::<serde_json::Value>(v.value()) {
                out.push((
                    ns.to_string(),
                    Descriptor {
                        media_type: d["mediaType"].as_str().unwrap_or_default().to_string(),
                        digest: d["digest"].as_str().unwrap_or_default().to_string(),
                        size: d["size"].as_i64().unwrap_or_default(),
                        annotations: Default::default(),
                    },
                ));
            }
        }
        Ok(out)
    }

    /// The unnamed images of a namespace.
    pub fn dangling(&self, ns: &str) -> Result<Vec<Descriptor>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(DANGLING)?;
        let prefix = format!("{ns}/");
        let mut out = Vec::new();
        for item in table.range(prefix.as_str()..)? {
            let (k, v) = item?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            if let Ok(d) = serde_json::from_slice::<serde_json::Value>(v.value()) {
                out.push(Descriptor {
                    media_type: d["mediaType"].as_str().unwrap_or_default().to_string(),
                    digest: d["digest"].as_str().unwrap_or_default().to_string(),
                    size: d["size"].as_i64().unwrap_or_default(),
                    annotations: Default::default(),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn rec(id: &str, status: &str) -> ContainerRecord {
        let mut r = ContainerRecord {
            id: id.into(),
            namespace: "default".into(),
            ..Default::default()
        };
        r.state.status = status.into();
        r
    }

    #[test]
    fn records_survive_reopening_and_put_many_writes_all() {
        let dir = TempDir(
            std::env::temp_dir().join(format!("berth-gateway-store-{}", std::process::id())),
        );
        {
            let store = Store::open(&dir.0).unwrap();
            assert!(store.load_containers().unwrap().is_empty());
            store.put(&rec("a", "created"), true).unwrap();
            store
                .put_many(&[rec("a", "running"), rec("b", "running")], false)
                .unwrap();
            store.put_image_size("img", 7).unwrap();
        }
        // Opened again (the tables exist: no write at open).
        let store = Store::open(&dir.0).unwrap();
        let mut got: Vec<(String, String)> = store
            .load_containers()
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.state.status))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("a".to_string(), "running".to_string()),
                ("b".to_string(), "running".to_string())
            ]
        );
        assert_eq!(store.image_size("img").unwrap(), Some(7));
        assert!(store.dangling("default").unwrap().is_empty());
    }
}
