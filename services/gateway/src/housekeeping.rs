//! Image history, image prune and disk usage (docker history, image prune,
//! system df).

use std::collections::{BTreeMap, HashMap};

use berth_common::request;
use berth_proto::gateway::v1::{
    ContainerUsage, DiskUsageResponse, HistoryEntry, HistoryResponse, ImageDeleteItem, ImageUsage,
    PruneImagesResponse, RemoveImageRequest, StringList,
};
use berth_proto::snapshots::v1::StatRequest;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::events::parse_time;
use crate::images::familiar;
use crate::Inner;

/// Seconds since the epoch of an RFC 3339 time in a JSON value, or 0.
fn unix_of(v: &Value) -> i64 {
    v.as_str()
        .and_then(berth_common::time::parse_rfc3339)
        .map_or(0, |t| t.timestamp())
}

/// Whether labels (a JSON object) satisfy `label=`/`label!=` values.
fn labels_match(labels: &Value, key: &str, v: &str) -> bool {
    let has = match v.split_once('=') {
        Some((lk, lv)) => labels[lk].as_str() == Some(lv),
        None => labels.get(v).is_some(),
    };
    has == (key == "label")
}

impl Inner {
    /// Unpacked size of the snapshot `key`, or None when it does not exist.
    pub(crate) async fn snapshot_usage(&self, ns: &str, key: &str) -> Option<i64> {
        self.snapshots
            .clone()
            .usage(request(ns, StatRequest { key: key.into() }))
            .await
            .ok()
            .map(|u| u.into_inner().size.max(0))
    }

    /// The size of an unpacked layer (by chain ID) as the image sizes count
    /// it (bytes of its uncompressed tar, recorded at unpack); the
    /// snapshot's disk usage, then `fallback`, for layers unpacked before
    /// sizes were recorded.
    pub(crate) async fn layer_size(&self, ns: &str, chain_id: &str, fallback: i64) -> i64 {
        if let Ok(Some(s)) = self.store.image_size(&format!("layer/{chain_id}")) {
            return s as i64;
        }
        self.snapshot_usage(ns, chain_id).await.unwrap_or(fallback)
    }

    /// `docker history`: the config's history, newest first, with the size
    /// of the layer each non-empty entry made.
    pub(crate) async fn history(&self, ns: &str, reference: &str) -> Result<HistoryResponse> {
        let (info, _) = self.resolve_image(ns, reference).await?;
        let mut names: Vec<String> = self
            .image_records(ns)
            .await?
            .into_iter()
            .filter(|r| {
                r.target
                    .as_ref()
                    .is_some_and(|t| t.digest == info.manifest.digest)
            })
            .map(|r| familiar(&r.name))
            .collect();
        names.sort();
        let chain = info.chain_ids();
        let mut sizes = Vec::with_capacity(chain.len());
        for (i, c) in chain.iter().enumerate() {
            sizes.push(self.layer_size(ns, c, info.layers[i].size).await);
        }
        let history: Vec<Value> = info.config["history"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut entries = Vec::new();
        let mut layer = 0usize;
        if history.is_empty() {
            // No history: one entry per layer, as docker shows it.
            for size in &sizes {
                entries.push(HistoryEntry {
                    id: "<missing>".into(),
                    created: unix_of(&info.config["created"]),
                    size: *size,
                    ..Default::default()
                });
            }
        }
        for h in &history {
            let empty = h["empty_layer"].as_bool().unwrap_or(false);
            let size = if empty {
                0
            } else {
                let s = sizes.get(layer).copied().unwrap_or(0);
                layer += 1;
                s
            };
            entries.push(HistoryEntry {
                id: "<missing>".into(),
                created: unix_of(&h["created"]),
                created_by: h["created_by"].as_str().unwrap_or_default().to_string(),
                size,
                comment: h["comment"].as_str().unwrap_or_default().to_string(),
                tags: Vec::new(),
            });
        }
        entries.reverse();
        if let Some(top) = entries.first_mut() {
            top.id = info.id.clone();
            top.tags = names;
        }
        Ok(HistoryResponse { entries })
    }

    /// `docker image prune`; see the Prune RPC.
    pub(crate) async fn prune_images(
        &self,
        ns: &str,
        filters: HashMap<String, StringList>,
    ) -> Result<PruneImagesResponse> {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let mut dangling_only = true;
        let mut until: Vec<i64> = Vec::new();
        let mut labels: Vec<(String, String)> = Vec::new();
        for (k, vals) in &filters {
            for v in &vals.values {
                match k.as_str() {
                    "dangling" => {
                        dangling_only = match v.to_lowercase().as_str() {
                            "true" | "1" => true,
                            "false" | "0" => false,
                            _ => {
                                return Err(Error::InvalidArgument(format!(
                                    "invalid filter 'dangling={v}'"
                                )))
                            }
                        }
                    }
                    "until" => until.push(parse_time(v, now)?.unwrap_or(i64::MAX)),
                    "label" | "label!" => labels.push((k.clone(), v.clone())),
                    other => {
                        return Err(Error::InvalidArgument(format!("invalid filter '{other}'")))
                    }
                }
            }
        }
        let in_use: std::collections::HashSet<String> = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|c| c.namespace == ns)
            .map(|c| c.image_id.clone())
            .collect();
        let mut resp = PruneImagesResponse::default();
        let mut reclaimed = 0u64;
        for (info, names) in self.all_images(ns).await? {
            if dangling_only && !names.is_empty() {
                continue;
            }
            if in_use.contains(&info.id) {
                continue;
            }
            let created = berth_common::time::parse_rfc3339(
                info.config["created"].as_str().unwrap_or_default(),
            )
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or(0);
            if until.iter().any(|u| created >= *u) {
                continue;
            }
            let l = &info.runtime_config()["Labels"];
            if !labels.iter().all(|(k, v)| labels_match(l, k, v)) {
                continue;
            }
            let mut sizes = HashMap::new();
            for c in info.chain_ids() {
                if let Some(s) = self.snapshot_usage(ns, &c).await {
                    sizes.insert(c, s);
                }
            }
            let removed = self
                .remove_image(
                    ns,
                    &RemoveImageRequest {
                        reference: info.id.clone(),
                        force: true,
                    },
                )
                .await;
            let removed = match removed {
                Ok(r) => r,
                Err(Error::NotFound(_)) => continue,
                Err(Error::FailedPrecondition(e)) => {
                    tracing::info!(id = %info.id, "prune: kept: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            for u in &removed.untagged {
                self.emit_image(ns, &info.id, "untag", u);
                resp.deleted.push(ImageDeleteItem {
                    untagged: u.clone(),
                    deleted: String::new(),
                });
            }
            if removed.deleted.first() == Some(&info.id) {
                self.emit_image(ns, &info.id, "delete", &info.id);
            }
            for d in &removed.deleted {
                reclaimed += sizes.get(d).copied().unwrap_or(0).max(0) as u64;
                resp.deleted.push(ImageDeleteItem {
                    untagged: String::new(),
                    deleted: d.clone(),
                });
            }
        }
        if !resp.deleted.is_empty() {
            reclaimed += self.collect_garbage().await?.reclaimed.max(0) as u64;
        }
        resp.space_reclaimed = reclaimed;
        let mut attrs = BTreeMap::new();
        attrs.insert("reclaimed".to_string(), reclaimed.to_string());
        self.emit(ns, "image", "prune", "", attrs);
        Ok(resp)
    }

    /// `docker system df`: images with their shared sizes, containers with
    /// their writable layers.
    pub(crate) async fn disk_usage(&self, ns: &str) -> Result<DiskUsageResponse> {
        let images = self.all_images(ns).await?;
        let containers: Vec<_> = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|c| c.namespace == ns)
            .cloned()
            .collect();
        let mut layer_size: HashMap<String, i64> = HashMap::new();
        let mut users: HashMap<String, usize> = HashMap::new();
        for (info, _) in &images {
            for (i, c) in info.chain_ids().into_iter().enumerate() {
                if !layer_size.contains_key(&c) {
                    let s = self.layer_size(ns, &c, info.layers[i].size).await;
                    layer_size.insert(c.clone(), s);
                }
                *users.entry(c).or_default() += 1;
            }
        }
        let mut resp = DiskUsageResponse {
            layers_size: layer_size.values().sum(),
            ..Default::default()
        };
        for (info, names) in &images {
            let chain = info.chain_ids();
            let size: i64 = chain.iter().map(|c| layer_size[c]).sum();
            let shared: i64 = chain
                .iter()
                .filter(|c| users[*c] > 1)
                .map(|c| layer_size[c])
                .sum();
            let mut repo_tags: Vec<String> = names.iter().map(|n| familiar(n)).collect();
            repo_tags.sort();
            resp.images.push(ImageUsage {
                id: info.id.clone(),
                repo_tags,
                created: unix_of(&info.config["created"]),
                size,
                shared_size: shared,
                containers: containers.iter().filter(|c| c.image_id == info.id).count() as i64,
            });
        }
        resp.images.sort_by_key(|i| std::cmp::Reverse(i.created));
        for c in containers {
            let size_rw = self.snapshot_usage(ns, &c.snapshot_key).await.unwrap_or(0);
            resp.containers.push(ContainerUsage {
                id: c.id.clone(),
                names: vec![c.name.clone()],
                image: c.config.image.clone(),
                command: c.command_line(),
                created: berth_common::time::parse_rfc3339(&c.created).map_or(0, |t| t.timestamp()),
                state: if c.state.status == "restarting" {
                    "running".into()
                } else {
                    c.state.status.clone()
                },
                size_rw,
                local_volumes: c.mount_points.iter().filter(|m| m.kind == "volume").count() as i64,
            });
        }
        resp.containers
            .sort_by_key(|c| std::cmp::Reverse(c.created));
        let no_filters = std::collections::BTreeMap::new();
        resp.volumes = self.list_volumes(ns, &no_filters, true)?;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_filters() {
        let l = json!({"a": "1", "b": "2"});
        assert!(labels_match(&l, "label", "a"));
        assert!(labels_match(&l, "label", "a=1"));
        assert!(!labels_match(&l, "label", "a=2"));
        assert!(!labels_match(&l, "label", "c"));
        assert!(labels_match(&l, "label!", "c"));
        assert!(!labels_match(&l, "label!", "b=2"));
        assert!(!labels_match(&Value::Null, "label", "a"));
    }
}
