//! Snapshot metadata in redb: one record per (namespace, key), plus the id
//! counter. Every change is one write transaction, so a crash leaves either the
//! old or the new state.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `"<namespace>/<key>"` → JSON [`Record`].
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
/// Counters; `next_id` is the id the next snapshot directory gets.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// The kind of a snapshot, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    View,
    Active,
    Committed,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::View => "a view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// One snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Directory number under `snapshots/`.
    pub id: u64,
    pub kind: Kind,
    /// Parent key in the same namespace; empty for none.
    #[serde(default)]
    pub parent: String,
    /// Seconds since the epoch.
    pub created_at: i64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Of an active snapshot: the directories layers unpacked into it
    /// created for entries whose parent directory the layer lacks
    /// ([`crate::unpack::DirSet`]). A rebasing commit gives them the
    /// attributes of the new parent chain; committed records drop them.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub implicit_dirs: BTreeSet<Vec<u8>>,
}

fn db_key(ns: &str, key: &str) -> String {
    format!("{ns}/{key}")
}

/// Namespaces cannot contain '/', and '0' is the byte after '/', so this is
/// exactly the range of keys in `ns`.
fn ns_range(ns: &str) -> (String, String) {
    (format!("{ns}/"), format!("{ns}0"))
}

fn decode(key: &str, v: &[u8]) -> Result<Record> {
    serde_json::from_slice(v)
        .map_err(|e| Error::Internal(format!("unreadable record for {key:?}: {e}")))
}

fn encode(r: &Record) -> Vec<u8> {
    serde_json::to_vec(r).expect("records always serialize")
}

/// The redb store.
pub(crate) struct Store {
    db: Database,
}

/// The new parent of a rebasing [`Store::commit`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rebase<'a> {
    /// The committed snapshot to become the parent.
    pub parent: &'a str,
    /// The directory id the active snapshot had when its layer's implicit
    /// directories were fixed up.
    pub id: u64,
}

/// What [`Store::create`] needs to know.
pub(crate) struct NewSnapshot<'a> {
    pub ns: &'a str,
    pub key: &'a str,
    pub parent: &'a str,
    pub kind: Kind,
    pub labels: BTreeMap<String, String>,
    pub created_at: i64,
}

impl Store {
    /// Opens (or creates) the database file.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        {
            tx.open_table(SNAPSHOTS)?;
            tx.open_table(COUNTERS)?;
        }
        tx.commit()?;
        Ok(Store { db })
    }

    /// One record.
    pub fn get(&self, ns: &str, key: &str) -> Result<Option<Record>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(SNAPSHOTS)?;
        let k = db_key(ns, key);
        match t.get(k.as_str())? {
            Some(v) => Ok(Some(decode(key, v.value())?)),
            None => Ok(None),
        }
    }

    /// The record of `key` and of each ancestor, nearest first.
    pub fn chain(&self, ns: &str, key: &str) -> Result<Vec<(String, Record)>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(SNAPSHOTS)?;
        let mut out: Vec<(String, Record)> = Vec::new();
        let mut cur = key.to_string();
        loop {
            let k = db_key(ns, &cur);
            let rec = match t.get(k.as_str())? {
                Some(v) => decode(&cur, v.value())?,
                None if out.is_empty() => return Err(Error::NotFound { key: cur }),
                None => {
                    return Err(Error::Internal(format!(
                        "parent {cur:?} of {:?} is missing",
                        out.last().map(|(k, _)| k.as_str()).unwrap_or("")
                    )))
                }
            };
            let parent = rec.parent.clone();
            out.push((cur, rec));
            if parent.is_empty() {
                return Ok(out);
            }
            if out.len() > 10_000 {
                return Err(Error::Internal(format!("parent chain of {key:?} loops")));
            }
            cur = parent;
        }
    }

    /// All records of a namespace, sorted by key.
    pub fn list(&self, ns: &str) -> Result<Vec<(String, Record)>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(SNAPSHOTS)?;
        let (lo, hi) = ns_range(ns);
        let mut out = Vec::new();
        for item in t.range(lo.as_str()..hi.as_str())? {
            let (k, v) = item?;
            let key = k.value()[lo.len()..].to_string();
            let rec = decode(&key, v.value())?;
            out.push((key, rec));
        }
        Ok(out)
    }

    /// (namespace, key) of the active snapshots labelled `label`, in every
    /// namespace.
    pub fn active_labelled(&self, label: &str) -> Result<Vec<(String, String)>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(SNAPSHOTS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            let rec = decode(k.value(), v.value())?;
            if rec.kind == Kind::Active && rec.labels.contains_key(label) {
                if let Some((ns, key)) = k.value().split_once('/') {
                    out.push((ns.to_string(), key.to_string()));
                }
            }
        }
        Ok(out)
    }

    /// Every directory id referenced by any namespace.
    pub fn all_ids(&self) -> Result<HashSet<u64>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(SNAPSHOTS)?;
        let mut ids = HashSet::new();
        for item in t.iter()? {
            let (k, v) = item?;
            ids.insert(decode(k.value(), v.value())?.id);
        }
        Ok(ids)
    }

    /// Creates a record. `make_dir(id)` is called inside the transaction,
    /// before the commit, so a crash can only leave an unreferenced directory
    /// (removed at the next open), never a record without its directory.
    pub fn create(
        &self,
        s: NewSnapshot<'_>,
        make_dir: impl FnOnce(u64) -> Result<()>,
    ) -> Result<Record> {
        let tx = self.db.begin_write()?;
        let rec;
        {
            let mut t = tx.open_table(SNAPSHOTS)?;
            let k = db_key(s.ns, s.key);
            if t.get(k.as_str())?.is_some() {
                return Err(Error::AlreadyExists {
                    key: s.key.to_string(),
                });
            }
            if !s.parent.is_empty() {
                let pk = db_key(s.ns, s.parent);
                let parent_ok = match t.get(pk.as_str())? {
                    Some(v) => decode(s.parent, v.value())?.kind == Kind::Committed,
                    None => false,
                };
                if !parent_ok {
                    return Err(Error::ParentNotFound {
                        parent: s.parent.to_string(),
                    });
                }
            }
            let mut c = tx.open_table(COUNTERS)?;
            let id = c.get("next_id")?.map(|v| v.value()).unwrap_or(1);
            c.insert("next_id", id + 1)?;
            rec = Record {
                id,
                kind: s.kind,
                parent: s.parent.to_string(),
                created_at: s.created_at,
                labels: s.labels,
                implicit_dirs: BTreeSet::new(),
            };
            t.insert(k.as_str(), encode(&rec).as_slice())?;
            make_dir(id)?;
        }
        tx.commit()?;
        Ok(rec)
    }

    /// Records the implicit directories of active snapshot `key`, which
    /// must still be the snapshot with directory `id`.
    pub fn set_implicit_dirs(
        &self,
        ns: &str,
        key: &str,
        id: u64,
        dirs: BTreeSet<Vec<u8>>,
    ) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(SNAPSHOTS)?;
            let k = db_key(ns, key);
            let mut rec = match t.get(k.as_str())? {
                Some(v) => decode(key, v.value())?,
                None => {
                    return Err(Error::NotFound {
                        key: key.to_string(),
                    })
                }
            };
            if rec.kind != Kind::Active || rec.id != id {
                return Err(Error::Internal(format!(
                    "snapshot {key:?} changed while a layer was applied to it"
                )));
            }
            rec.implicit_dirs = dirs;
            t.insert(k.as_str(), encode(&rec).as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Turns active `key` into committed `name`. With `rebase`, the new
    /// record's parent is `rebase.parent` (which must be committed; `key`
    /// must have been prepared without a parent or with that one) and `key`
    /// must still be the snapshot with directory `rebase.id`.
    pub fn commit(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        rebase: Option<Rebase<'_>>,
        labels: BTreeMap<String, String>,
        now: i64,
    ) -> Result<Record> {
        let tx = self.db.begin_write()?;
        let rec;
        {
            let mut t = tx.open_table(SNAPSHOTS)?;
            let nk = db_key(ns, name);
            if t.get(nk.as_str())?.is_some() {
                return Err(Error::AlreadyExists {
                    key: name.to_string(),
                });
            }
            let kk = db_key(ns, key);
            let old = match t.get(kk.as_str())? {
                Some(v) => decode(key, v.value())?,
                None => {
                    return Err(Error::NotFound {
                        key: key.to_string(),
                    })
                }
            };
            if old.kind != Kind::Active {
                return Err(Error::NotActive {
                    key: key.to_string(),
                    kind: old.kind.name(),
                });
            }
            let parent = match rebase {
                None => old.parent,
                Some(r) => {
                    if old.id != r.id {
                        return Err(Error::Internal(format!(
                            "snapshot {key:?} changed while it was committed"
                        )));
                    }
                    if !old.parent.is_empty() && old.parent != r.parent {
                        return Err(Error::RebaseRefused {
                            key: key.to_string(),
                            prepared: old.parent,
                            asked: r.parent.to_string(),
                        });
                    }
                    let pk = db_key(ns, r.parent);
                    let parent_ok = match t.get(pk.as_str())? {
                        Some(v) => decode(r.parent, v.value())?.kind == Kind::Committed,
                        None => false,
                    };
                    if !parent_ok {
                        return Err(Error::ParentNotFound {
                            parent: r.parent.to_string(),
                        });
                    }
                    r.parent.to_string()
                }
            };
            rec = Record {
                id: old.id,
                kind: Kind::Committed,
                parent,
                created_at: now,
                labels,
                implicit_dirs: BTreeSet::new(),
            };
            t.remove(kk.as_str())?;
            t.insert(nk.as_str(), encode(&rec).as_slice())?;
        }
        tx.commit()?;
        Ok(rec)
    }

    /// Removes the record of `key`, refusing when another snapshot names it as
    /// parent. Returns the removed record (its id names the directory).
    pub fn remove(&self, ns: &str, key: &str) -> Result<Record> {
        let tx = self.db.begin_write()?;
        let rec;
        {
            let mut t = tx.open_table(SNAPSHOTS)?;
            let k = db_key(ns, key);
            rec = match t.get(k.as_str())? {
                Some(v) => decode(key, v.value())?,
                None => {
                    return Err(Error::NotFound {
                        key: key.to_string(),
                    })
                }
            };
            if rec.kind == Kind::Committed {
                let (lo, hi) = ns_range(ns);
                for item in t.range(lo.as_str()..hi.as_str())? {
                    let (ck, v) = item?;
                    let child = &ck.value()[lo.len()..];
                    if decode(child, v.value())?.parent == key {
                        return Err(Error::HasChildren {
                            key: key.to_string(),
                            child: child.to_string(),
                        });
                    }
                }
            }
            t.remove(k.as_str())?;
        }
        tx.commit()?;
        Ok(rec)
    }
}
