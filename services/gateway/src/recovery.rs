//! Reconciling container records with berth-tasks when the gateway starts
//! (after a restart of either), then applying restart policies.
//!
//! One `List` of tasks per namespace answers for every container at once (not
//! a `State` per container), and the containers found running are written in
//! one transaction. Exits found meanwhile are handled a few at a time. A task
//! berth-tasks reports as UNKNOWN (its shim is still being checked) keeps its
//! record as it is and is asked about again, with a back-off, until it is
//! known; it does not hold up the others or the restart policies.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_common::request;
use berth_proto::tasks::v1::{ListTasksRequest, Status as TaskStatus, TaskState};
use futures::StreamExt;
use tracing::{info, warn};

use crate::Inner;

/// Exits handled (task delete, network detach, restart policy) at once.
const EXIT_CONCURRENCY: usize = 8;
/// Tries of `List` while berth-tasks cannot be reached (it may be starting).
const MAX_FAILED_ROUNDS: u32 = 60;
const FAILED_ROUND_DELAY: Duration = Duration::from_millis(500);
/// Back-off while tasks are UNKNOWN.
const FIRST_UNKNOWN_DELAY: Duration = Duration::from_millis(10);
const MAX_UNKNOWN_DELAY: Duration = Duration::from_secs(1);

/// What to do with a container after one look at its task.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Running or paused: record the state, watch it.
    Running(TaskState),
    /// Exited while nobody watched: record the exit.
    Exited(TaskState),
    /// Gone without a trace although it ran: exit 255.
    Vanished,
    /// Nothing to do (never started, or recorded as not running and gone).
    Nothing,
    /// berth-tasks does not know yet: ask again later.
    Unknown,
}

fn verdict(task: Option<&TaskState>, was_running: bool) -> Verdict {
    let Some(st) = task else {
        return if was_running {
            Verdict::Vanished
        } else {
            Verdict::Nothing
        };
    };
    match TaskStatus::try_from(st.status).unwrap_or(TaskStatus::Unknown) {
        TaskStatus::Unknown => Verdict::Unknown,
        TaskStatus::Running | TaskStatus::Paused => Verdict::Running(st.clone()),
        TaskStatus::Created => Verdict::Nothing,
        TaskStatus::Stopped => Verdict::Exited(st.clone()),
    }
}

/// Reconciles every created or running record with berth-tasks.
pub(crate) async fn recover(inner: Arc<Inner>) {
    let began = Instant::now();
    // (namespace → id → recorded as running). "created" too: the switch to
    // running is not forced to disk, so a crash can leave a started
    // container recorded as created.
    let mut pending: BTreeMap<String, HashMap<String, bool>> = BTreeMap::new();
    for c in inner.containers.lock().unwrap().values() {
        if c.state.running() || c.state.status == "created" {
            pending
                .entry(c.namespace.clone())
                .or_default()
                .insert(c.id.clone(), c.state.running());
        }
    }
    let total: usize = pending.values().map(HashMap::len).sum();
    let mut policies_applied = false;
    let mut failed_rounds = 0;
    let mut unknown_delay = FIRST_UNKNOWN_DELAY;
    loop {
        let mut running = Vec::new();
        let mut exited = Vec::new();
        let mut failed = None;
        for (ns, ids) in pending.iter_mut() {
            let tasks = match inner
                .tasks
                .clone()
                .list(request(ns, ListTasksRequest {}))
                .await
            {
                Ok(r) => r.into_inner().tasks,
                Err(s) => {
                    failed = Some(s);
                    continue;
                }
            };
            let by_id: HashMap<&str, &TaskState> =
                tasks.iter().map(|t| (t.id.as_str(), t)).collect();
            ids.retain(|id, was_running| {
                match verdict(by_id.get(id.as_str()).copied(), *was_running) {
                    Verdict::Unknown => true,
                    Verdict::Running(st) => {
                        running.push(((ns.clone(), id.clone()), st));
                        false
                    }
                    Verdict::Exited(st) => {
                        exited.push((ns.clone(), id.clone(), *was_running, Some(st)));
                        false
                    }
                    Verdict::Vanished => {
                        exited.push((ns.clone(), id.clone(), true, None));
                        false
                    }
                    Verdict::Nothing => false,
                }
            });
        }
        pending.retain(|_, ids| !ids.is_empty());
        record_running(&inner, running);
        handle_exits(&inner, exited).await;

        match &failed {
            Some(s) => {
                failed_rounds += 1;
                if failed_rounds >= MAX_FAILED_ROUNDS {
                    let left: usize = pending.values().map(HashMap::len).sum();
                    warn!(
                        left,
                        "giving up on reconciling containers with berth-tasks: {s}"
                    );
                    pending.clear();
                }
            }
            None if !policies_applied => {
                // Every container's task is known now, except the UNKNOWN
                // ones, which keep their record.
                policies_applied = true;
                let left: usize = pending.values().map(HashMap::len).sum();
                info!(
                    containers = total,
                    unknown = left,
                    "reconciled containers with berth-tasks in {:?}",
                    began.elapsed()
                );
                inner.apply_restart_policies_at_start().await;
            }
            None => {}
        }
        if pending.is_empty() {
            break;
        }
        if failed.is_some() {
            tokio::time::sleep(FAILED_ROUND_DELAY).await;
        } else {
            tokio::time::sleep(unknown_delay).await;
            unknown_delay = (unknown_delay * 2).min(MAX_UNKNOWN_DELAY);
        }
    }
    if !policies_applied {
        inner.apply_restart_policies_at_start().await;
    }
}

/// Records the containers found running (one transaction) and watches them.
fn record_running(inner: &Arc<Inner>, running: Vec<((String, String), TaskState)>) {
    if running.is_empty() {
        return;
    }
    let keys: Vec<(String, String)> = running.iter().map(|(k, _)| k.clone()).collect();
    // Not forced to disk: after a crash this is found again the same way.
    if let Err(e) = inner.update_many(&keys, false, |i, c| {
        let st = &running[i].1;
        c.state.status = if st.status == TaskStatus::Paused as i32 {
            "paused"
        } else {
            "running"
        }
        .into();
        c.state.pid = st.pid;
        if c.state.started_at.is_empty() {
            c.state.started_at = st.started_at.clone();
        }
    }) {
        warn!("recording running containers: {e}");
    }
    for (i, (ns, id)) in keys.into_iter().enumerate() {
        inner
            .clone()
            .spawn_oom_watcher(ns.clone(), id.clone(), running[i].1.pid);
        inner.clone().spawn_watcher(ns, id);
    }
}

/// Records exits that happened while the gateway was down.
async fn handle_exits(inner: &Arc<Inner>, exited: Vec<(String, String, bool, Option<TaskState>)>) {
    futures::stream::iter(exited)
        .for_each_concurrent(EXIT_CONCURRENCY, |(ns, id, was_running, st)| async move {
            match st {
                Some(st) => {
                    if !was_running {
                        let _ = inner.update(&ns, &id, false, |c| {
                            c.state.started_at = st.started_at.clone();
                        });
                    }
                    inner
                        .handle_exit(&ns, &id, st.exit_status as i64, st.exited_at, st.oom_kills)
                        .await;
                }
                None => inner.handle_exit(&ns, &id, 255, String::new(), 0).await,
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(status: TaskStatus) -> TaskState {
        TaskState {
            id: "x".into(),
            status: status as i32,
            ..Default::default()
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(None, true), Verdict::Vanished);
        assert_eq!(verdict(None, false), Verdict::Nothing);
        let unknown = task(TaskStatus::Unknown);
        assert_eq!(verdict(Some(&unknown), true), Verdict::Unknown);
        assert_eq!(verdict(Some(&unknown), false), Verdict::Unknown);
        let running = task(TaskStatus::Running);
        assert_eq!(
            verdict(Some(&running), false),
            Verdict::Running(running.clone())
        );
        let paused = task(TaskStatus::Paused);
        assert_eq!(
            verdict(Some(&paused), true),
            Verdict::Running(paused.clone())
        );
        let created = task(TaskStatus::Created);
        assert_eq!(verdict(Some(&created), true), Verdict::Nothing);
        let stopped = task(TaskStatus::Stopped);
        assert_eq!(
            verdict(Some(&stopped), true),
            Verdict::Exited(stopped.clone())
        );
    }
}
