//! Restart policies and the container operations built on start/stop:
//! restart, rename, prune; and the time window of `logs --since/--until`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_common::request;
use berth_proto::gateway::v1::{LogEntry, PruneContainersResponse, StringList};
use berth_proto::snapshots::v1::StatRequest;
use tracing::{info, warn};

use crate::container::{validate_name, ContainerRecord, RestartPolicy};
use crate::error::{Error, Result};
use crate::events::parse_time;
use crate::{Event, EventKind, Inner};

/// First back-off before a restart; doubled each time (docker's).
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest back-off.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A container that ran this long starts again from the first back-off.
const RESET_AFTER: Duration = Duration::from_secs(10);

/// Parses `--restart`: "no", "always", "unless-stopped", "on-failure[:N]".
pub(crate) fn parse_restart_policy(s: &str) -> Result<RestartPolicy> {
    let (name, count) = match s.split_once(':') {
        Some(("", _)) => {
            return Err(Error::InvalidArgument(
                "invalid restart policy format: no policy provided before colon".into(),
            ))
        }
        Some((n, c)) => (n, Some(c)),
        None => (s, None),
    };
    let count = match count {
        None | Some("") => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            Error::InvalidArgument(
                "invalid restart policy format: maximum retry count must be an integer".into(),
            )
        })?),
    };
    match (name, count) {
        ("" | "no", None) => Ok(RestartPolicy::default()),
        ("always" | "unless-stopped", None) => Ok(RestartPolicy {
            name: name.to_string(),
            maximum_retry_count: 0,
        }),
        ("" | "no" | "always" | "unless-stopped", Some(_)) => Err(Error::InvalidArgument(
            "invalid restart policy: maximum retry count can only be used with 'on-failure'"
                .into(),
        )),
        ("on-failure", Some(c)) if c < 0 => Err(Error::InvalidArgument(
            "invalid restart policy: maximum retry count cannot be negative".into(),
        )),
        ("on-failure", c) => Ok(RestartPolicy {
            name: name.to_string(),
            maximum_retry_count: u32::try_from(c.unwrap_or(0)).unwrap_or(u32::MAX),
        }),
        (other, _) => Err(Error::InvalidArgument(format!(
            "invalid restart policy: unknown policy '{other}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"
        ))),
    }
}

fn ran_for(c: &ContainerRecord) -> Duration {
    let start = berth_common::time::parse_rfc3339(&c.state.started_at);
    let end = berth_common::time::parse_rfc3339(&c.state.finished_at);
    match (start, end) {
        (Some(s), Some(e)) => (e - s).to_std().unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

/// Applies the restart policy to a container that just exited (its state
/// already says so): when it is to be restarted, marks it "restarting",
/// counts the restart and returns the back-off to wait.
pub(crate) fn after_exit(c: &mut ContainerRecord) -> Option<Duration> {
    let p = &c.host_config.restart_policy;
    if c.manually_stopped || c.removing || c.host_config.auto_remove {
        return None;
    }
    let restart = match p.name.as_str() {
        "always" | "unless-stopped" => true,
        "on-failure" => {
            c.state.exit_code != 0
                && (p.maximum_retry_count == 0 || c.restart_count < p.maximum_retry_count)
        }
        _ => false,
    };
    if !restart {
        return None;
    }
    let mut delay = Duration::from_millis(c.restart_delay_ms);
    if ran_for(c) >= RESET_AFTER {
        delay = Duration::ZERO;
    }
    delay = if delay.is_zero() {
        FIRST_DELAY
    } else {
        delay.saturating_mul(2).min(MAX_DELAY)
    };
    c.restart_delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    c.restart_count += 1;
    c.state.status = "restarting".into();
    Some(delay)
}

/// Whether a stopped container is started when the daemon starts (docker:
/// `always` ones always, `unless-stopped` ones unless stopped by the user,
/// `on-failure` ones that failed and have retries left).
fn restart_at_daemon_start(c: &ContainerRecord) -> bool {
    if c.removing || c.state.running() {
        return false;
    }
    if c.state.status == "created" && c.state.started_at.is_empty() {
        return false;
    }
    let p = &c.host_config.restart_policy;
    match p.name.as_str() {
        "always" => true,
        "unless-stopped" => !c.manually_stopped,
        "on-failure" => {
            !c.manually_stopped
                && c.state.exit_code != 0
                && (p.maximum_retry_count == 0 || c.restart_count < p.maximum_retry_count)
        }
        _ => false,
    }
}

/// Keeps log entries inside `[since, until]` (Unix nanoseconds).
pub(crate) struct LogWindow {
    since: Option<i64>,
    until: Option<i64>,
}

impl LogWindow {
    pub(crate) fn parse(since: &str, until: &str) -> Result<Self> {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        Ok(LogWindow {
            since: parse_time(since, now)?,
            until: parse_time(until, now)?,
        })
    }

    pub(crate) fn filter(&self, entries: Vec<LogEntry>) -> Vec<LogEntry> {
        if self.since.is_none() && self.until.is_none() {
            return entries;
        }
        entries
            .into_iter()
            .filter(|e| {
                let Some(t) = berth_common::time::parse_rfc3339(&e.time)
                    .and_then(|t| t.timestamp_nanos_opt())
                else {
                    return false;
                };
                self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
            })
            .collect()
    }
}

/// `container prune` filters: until=, label=, label!=.
fn prune_matches(
    c: &ContainerRecord,
    filters: &HashMap<String, Vec<String>>,
    now: i64,
) -> Result<bool> {
    for (k, vals) in filters {
        for v in vals {
            let ok = match k.as_str() {
                "until" => {
                    let limit = parse_time(v, now)?.unwrap_or(i64::MAX);
                    berth_common::time::parse_rfc3339(&c.created)
                        .and_then(|t| t.timestamp_nanos_opt())
                        .is_some_and(|t| t < limit)
                }
                "label" | "label!" => {
                    let has = match v.split_once('=') {
                        Some((lk, lv)) => c.config.labels.get(lk).is_some_and(|x| x == lv),
                        None => c.config.labels.contains_key(v),
                    };
                    has == (k == "label")
                }
                other => return Err(Error::InvalidArgument(format!("invalid filter '{other}'"))),
            };
            if !ok {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

impl Inner {
    /// Waits out the back-off, then starts the container again unless it
    /// was stopped, removed or started meanwhile.
    pub(crate) fn spawn_restart(self: Arc<Self>, ns: String, id: String, delay: Duration) {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let still = self.containers.lock().is_ok_and(|m| {
                m.get(&(ns.clone(), id.clone()))
                    .is_some_and(|c| c.state.status == "restarting" && !c.removing)
            });
            if !still {
                return;
            }
            info!(id = %id, "restarting container (restart policy)");
            if let Err(e) = self.start_container(&ns, &id).await {
                warn!(id = %id, "restart policy: start failed: {e}");
                let _ = self.update(&ns, &id, true, |c| {
                    if c.state.status == "restarting" {
                        c.state.status = "exited".into();
                    }
                });
            }
        });
    }

    /// The user stopped or killed the container: no policy restarts until
    /// the next start; a pending restart is cancelled.
    pub(crate) fn mark_stopped_by_user(&self, ns: &str, id: &str) {
        let mut cancelled = None;
        let _ = self.update(ns, id, true, |c| {
            c.manually_stopped = true;
            if c.state.status == "restarting" {
                c.state.status = "exited".into();
                cancelled = Some(c.state.exit_code);
            }
        });
        if let Some(code) = cancelled {
            // Waiters were waiting through the restart: this is the end.
            let _ = self.events.send(Event {
                ns: ns.to_string(),
                id: id.to_string(),
                kind: EventKind::Die(code),
            });
        }
    }

    /// A start asked for by the user (start, restart): the policy applies
    /// afresh.
    pub(crate) async fn user_start(self: &Arc<Self>, ns: &str, r: &str) -> Result<()> {
        let id = self.find(ns, r)?.id;
        self.update(ns, &id, false, |c| {
            c.manually_stopped = false;
            c.restart_delay_ms = 0;
            if !c.state.running() {
                c.restart_count = 0;
            }
        })?;
        self.start_container(ns, &id).await
    }

    /// `restart`: stop (with `timeout`) and start again.
    pub(crate) async fn restart_container(
        self: &Arc<Self>,
        ns: &str,
        r: &str,
        timeout: Option<i32>,
    ) -> Result<()> {
        let id = self.find(ns, r)?.id;
        self.stop_container(ns, &id, timeout).await?;
        self.user_start(ns, &id).await?;
        self.emit_container(ns, &id, "restart", &[]);
        Ok(())
    }

    /// `rename OLD NEW`.
    pub(crate) fn rename_container(&self, ns: &str, r: &str, new_name: &str) -> Result<()> {
        let new_name = new_name.trim_start_matches('/');
        if new_name.is_empty() {
            return Err(Error::InvalidArgument(
                "Neither old nor new names may be empty".into(),
            ));
        }
        validate_name(new_name).map_err(Error::InvalidArgument)?;
        let rec = self.find(ns, r)?;
        if rec.name == new_name {
            return Err(Error::InvalidArgument(
                "Renaming a container with the same name as its current name".into(),
            ));
        }
        let old = {
            let mut map = self.containers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = map
                .values()
                .find(|c| c.namespace == ns && c.name == new_name)
            {
                return Err(Error::Conflict(format!(
                    "Conflict. The container name \"/{new_name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                    c.id
                )));
            }
            let c = map
                .get_mut(&(ns.to_string(), rec.id.clone()))
                .ok_or_else(|| Error::NotFound(format!("No such container: {r}")))?;
            std::mem::replace(&mut c.name, new_name.to_string())
        };
        if let Err(e) = self.update(ns, &rec.id, true, |_| {}) {
            let _ = self.update(ns, &rec.id, false, |c| c.name = old.clone());
            return Err(e);
        }
        self.emit_container(ns, &rec.id, "rename", &[("oldName", format!("/{old}"))]);
        info!(id = %rec.id, old = %old, new = %new_name, "renamed container");
        Ok(())
    }

    /// `container prune`: removes stopped containers that match.
    pub(crate) async fn prune_containers(
        self: &Arc<Self>,
        ns: &str,
        filters: HashMap<String, StringList>,
    ) -> Result<PruneContainersResponse> {
        let filters: HashMap<String, Vec<String>> =
            filters.into_iter().map(|(k, v)| (k, v.values)).collect();
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let candidates: Vec<ContainerRecord> = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|c| {
                c.namespace == ns
                    && !c.removing
                    && !c.state.running()
                    && c.state.status != "restarting"
            })
            .cloned()
            .collect();
        let mut resp = PruneContainersResponse::default();
        for c in candidates {
            if !prune_matches(&c, &filters, now)? {
                continue;
            }
            let size = self
                .snapshots
                .clone()
                .usage(request(
                    ns,
                    StatRequest {
                        key: c.snapshot_key.clone(),
                    },
                ))
                .await
                .map(|u| u.into_inner().size.max(0) as u64)
                .unwrap_or(0);
            match self.remove_container(ns, &c.id, false, false).await {
                Ok(()) => {
                    resp.deleted.push(c.id.clone());
                    resp.space_reclaimed += size;
                }
                Err(Error::NotFound(_)) => {}
                Err(e) => warn!(id = %c.id, "prune: {e}"),
            }
        }
        let mut attrs = std::collections::BTreeMap::new();
        attrs.insert("reclaimed".to_string(), resp.space_reclaimed.to_string());
        self.emit(ns, "container", "prune", "", attrs);
        Ok(resp)
    }

    /// After recovery: starts the stopped containers whose policy says so.
    pub(crate) async fn apply_restart_policies_at_start(self: &Arc<Self>) {
        let todo: Vec<(String, String)> = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|c| restart_at_daemon_start(c))
            .map(|c| (c.namespace.clone(), c.id.clone()))
            .collect();
        for (ns, id) in todo {
            info!(id = %id, "starting container (restart policy, daemon start)");
            // A service started beside the gateway (split mode, systemd)
            // may not serve yet: wait for it rather than give up.
            let mut delay = std::time::Duration::from_millis(100);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let result = loop {
                match self.start_container(&ns, &id).await {
                    Err(Error::Service {
                        code: tonic::Code::Unavailable,
                        service,
                        message,
                    }) if std::time::Instant::now() < deadline => {
                        info!(id = %id, "{service} is not serving yet ({message}); retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(std::time::Duration::from_secs(2));
                    }
                    other => break other,
                }
            };
            if let Err(e) = result {
                warn!(id = %id, "restart policy at daemon start: {e}");
                let _ = self.update(&ns, &id, true, |c| {
                    if c.state.status == "restarting" {
                        c.state.status = "exited".into();
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert_eq!(parse_restart_policy("").unwrap().name, "");
        assert_eq!(parse_restart_policy("no").unwrap().name, "");
        assert_eq!(parse_restart_policy("always").unwrap().name, "always");
        let p = parse_restart_policy("on-failure:3").unwrap();
        assert_eq!((p.name.as_str(), p.maximum_retry_count), ("on-failure", 3));
        assert_eq!(
            parse_restart_policy("on-failure")
                .unwrap()
                .maximum_retry_count,
            0
        );
        assert!(parse_restart_policy("always:2").is_err());
        assert!(parse_restart_policy("bogus").is_err());
        assert!(parse_restart_policy("on-failure:x").is_err());
        assert!(parse_restart_policy(":1").is_err());
    }

    fn exited(policy: &str, code: i64) -> ContainerRecord {
        let mut c = ContainerRecord::default();
        c.host_config.restart_policy = parse_restart_policy(policy).unwrap();
        c.state.status = "exited".into();
        c.state.exit_code = code;
        c
    }

    #[test]
    fn on_failure_counts_and_backs_off() {
        let mut c = exited("on-failure:2", 1);
        assert_eq!(after_exit(&mut c), Some(Duration::from_millis(100)));
        assert_eq!(c.state.status, "restarting");
        c.state.status = "exited".into();
        assert_eq!(after_exit(&mut c), Some(Duration::from_millis(200)));
        assert_eq!(c.restart_count, 2);
        c.state.status = "exited".into();
        assert_eq!(after_exit(&mut c), None);
        let mut ok = exited("on-failure", 0);
        assert_eq!(after_exit(&mut ok), None);
    }

    #[test]
    fn stop_by_user_prevents_restart() {
        let mut c = exited("always", 0);
        c.manually_stopped = true;
        assert_eq!(after_exit(&mut c), None);
        assert!(restart_at_daemon_start(&c));
        let mut u = exited("unless-stopped", 0);
        u.manually_stopped = true;
        assert!(!restart_at_daemon_start(&u));
        let mut l = exited("always", 0);
        l.state.started_at = "2024-01-01T00:00:00Z".into();
        l.state.finished_at = "2024-01-01T00:01:00Z".into();
        l.restart_delay_ms = 6400;
        assert_eq!(after_exit(&mut l), Some(Duration::from_millis(100)));
    }
}
