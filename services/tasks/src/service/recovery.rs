//! Finding the tasks of an earlier run again when berth-tasks starts.
//!
//! [`scan`] only lists the bundle directories, so the service enters every
//! task (status UNKNOWN) and serves at once. [`spawn`] then checks the tasks
//! in the background, [`CONCURRENCY`] at a time on the blocking pool: the
//! bundle's record, exit and pid files, whether the shim still runs (its
//! pidfd and `/proc/PID/cmdline`, which blocks while the shim's mm lock is
//! held, e.g. by a process stuck in D state) and the freezer state. A task
//! whose check takes longer than the deadline gives its slot to the next
//! one and is logged; it keeps being checked and reports UNKNOWN until the
//! check finishes (Wait waits, Kill/Delete/Start/Exec answer Unavailable).
//! A check that fails (rather than finding the file or process absent) is
//! tried again, so that a transient error is never taken for an exit.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use berth_proto::tasks::v1::Status as TaskStatus;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::{processes, try_open_shim, watch_oom, watch_shim, Key, Task};
use crate::bundle::{Bundle, ExitRecord, TaskRecord};
use crate::pidfd;

/// Tasks checked at the same time.
pub(super) const CONCURRENCY: usize = 8;
/// How long one task's check may take before it is reported and set aside.
pub(super) const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
/// Overrides [`DEFAULT_DEADLINE`], in milliseconds.
pub(super) const DEADLINE_ENV: &str = "BERTH_SHIM_CHECK_DEADLINE_MS";
/// Longest wait between two tries of a check that failed.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// The per-task deadline: [`DEADLINE_ENV`] when set to a number of
/// milliseconds, else [`DEFAULT_DEADLINE`].
pub(super) fn deadline() -> Duration {
    std::env::var(DEADLINE_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map_or(DEFAULT_DEADLINE, Duration::from_millis)
}

/// The bundles under `root` (`<ns>/<id>`). Leftovers of a Create that did not
/// finish (`<ns>/.<id>.tmp`, renamed into place only when whole) are removed.
pub(super) fn scan(root: &Path) -> Vec<(String, String, Bundle)> {
    let mut out = Vec::new();
    let Ok(namespaces) = std::fs::read_dir(root) else {
        return out;
    };
    for ns in namespaces.flatten() {
        let ns_name = ns.file_name().to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir(ns.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                warn!("removing unfinished bundle {}", entry.path().display());
                let _ = std::fs::remove_dir_all(entry.path());
                continue;
            }
            out.push((ns_name.clone(), name, Bundle::new(entry.path())));
        }
    }
    out
}

/// What a task's bundle and /proc say about it.
enum Found {
    /// No (readable) record: Create never finished.
    Incomplete,
    /// Created, never started.
    Created(TaskRecord),
    Exited(TaskRecord, ExitRecord),
    Running {
        record: TaskRecord,
        shim: OwnedFd,
        pid: i32,
        init: Option<OwnedFd>,
        paused: bool,
    },
}

/// Checks one task. Blocking; an error means "not known", never "exited".
fn check(bundle: &Bundle, mountinfo: &OnceLock<String>) -> std::io::Result<Found> {
    let Some(record) = bundle.try_read_record()? else {
        return Ok(Found::Incomplete);
    };
    if let Some(exit) = bundle.try_read_exit()? {
        return Ok(Found::Exited(record, exit));
    }
    let Some(shim_pid) = bundle.try_read_pid("shim.pid")? else {
        return Ok(Found::Created(record));
    };
    let Some(shim) = try_open_shim(bundle, shim_pid)? else {
        // The shim is gone; it may have written the exit just now.
        let exit = bundle.try_read_exit()?.unwrap_or_else(|| ExitRecord {
            exit_status: 255,
            exited_at: berth_common::time::now_rfc3339(),
            error: "shim exited without recording an exit status".into(),
            ..Default::default()
        });
        return Ok(Found::Exited(record, exit));
    };
    // The shim writes init.pid before it reports the start.
    let pid = bundle.try_read_pid("init.pid")?.unwrap_or(0);
    let (init, paused) = if pid > 0 {
        let mi = mountinfo
            .get_or_init(|| std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
        (pidfd::open(pid).ok(), processes::is_frozen(pid, mi))
    } else {
        (None, false)
    };
    Ok(Found::Running {
        record,
        shim,
        pid,
        init,
        paused,
    })
}

/// Checks a task until the check succeeds, each try on the blocking pool.
async fn resolve(task: Arc<Task>, mountinfo: Arc<OnceLock<String>>) -> Found {
    let mut delay = Duration::from_millis(100);
    loop {
        let bundle = task.bundle.clone();
        let mi = mountinfo.clone();
        match tokio::task::spawn_blocking(move || check(&bundle, &mi)).await {
            Ok(Ok(found)) => return found,
            Ok(Err(e)) => warn!(id = %task.id, "checking task: {e}; trying again in {delay:?}"),
            Err(e) => warn!(id = %task.id, "checking task failed: {e}; trying again in {delay:?}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}

type TaskMap = Arc<Mutex<HashMap<Key, Arc<Task>>>>;

/// Gives the task the state that was found.
fn apply(tasks: &TaskMap, key: &Key, task: Arc<Task>, found: Found) {
    let record = match &found {
        Found::Incomplete => {
            warn!(id = %task.id, "removing bundle without a task record: Create never finished");
            {
                let mut map = tasks.lock().unwrap();
                if map.get(key).is_some_and(|t| Arc::ptr_eq(t, &task)) {
                    map.remove(key);
                }
            }
            let _ = std::fs::remove_dir_all(&task.bundle.dir);
            // Nobody can wait on it now; a waiter from before sees an exit.
            task.set_exited(ExitRecord {
                exit_status: 255,
                exited_at: berth_common::time::now_rfc3339(),
                error: "task bundle was incomplete".into(),
                ..Default::default()
            });
            return;
        }
        Found::Created(r) | Found::Exited(r, _) | Found::Running { record: r, .. } => r.clone(),
    };
    {
        let mut inner = task.inner.lock().unwrap();
        inner.started_at = record.started_at.clone();
        let _ = task.record.set(record);
        if matches!(found, Found::Created(_)) {
            inner.status = TaskStatus::Created as i32;
        }
    }
    match found {
        Found::Incomplete | Found::Created(_) => {}
        Found::Exited(_, exit) => task.set_exited(exit),
        Found::Running {
            shim,
            pid,
            init,
            paused,
            ..
        } => {
            {
                let mut inner = task.inner.lock().unwrap();
                inner.status = if paused {
                    TaskStatus::Paused as i32
                } else {
                    TaskStatus::Running as i32
                };
                inner.pid = pid as u32;
                inner.init_fd = init.map(Arc::new);
            }
            info!(id = %task.id, pid, paused, "found running task");
            watch_oom(task.clone());
            watch_shim(task, shim);
        }
    }
}

/// Checks one task, holding a slot of `slots` until it is done or its
/// deadline passed. Returns whether it was done in time; if not, it goes on
/// in the background.
async fn recover_one(
    tasks: TaskMap,
    key: Key,
    task: Arc<Task>,
    slots: Arc<Semaphore>,
    mountinfo: Arc<OnceLock<String>>,
    deadline: Duration,
) -> bool {
    let Ok(slot) = slots.acquire_owned().await else {
        return false;
    };
    let began = Instant::now();
    let mut job = Box::pin(resolve(task.clone(), mountinfo));
    match tokio::time::timeout(deadline, &mut job).await {
        Ok(found) => {
            drop(slot);
            apply(&tasks, &key, task, found);
            true
        }
        Err(_) => {
            drop(slot);
            warn!(
                id = %task.id,
                namespace = %key.0,
                "checking the task's shim did not finish within {deadline:?}; \
                 the task is reported as UNKNOWN until it does"
            );
            tokio::spawn(async move {
                let found = job.await;
                info!(id = %task.id, "checked the task's shim after {:?}", began.elapsed());
                apply(&tasks, &key, task, found);
            });
            false
        }
    }
}

/// Checks `found` tasks in the background; see the module documentation.
/// The returned channel turns `true` when the pass is over: every task is
/// known again, or was set aside after its deadline (and stays UNKNOWN
/// until its check finishes).
pub(super) fn spawn(
    tasks: TaskMap,
    found: Vec<(Key, Arc<Task>)>,
    deadline: Duration,
) -> watch::Receiver<bool> {
    if found.is_empty() {
        return watch::channel(true).1;
    }
    let (done_tx, done_rx) = watch::channel(false);
    tokio::spawn(async move {
        let began = Instant::now();
        let total = found.len();
        let slots = Arc::new(Semaphore::new(CONCURRENCY));
        let mountinfo = Arc::new(OnceLock::new());
        let mut set = JoinSet::new();
        for (key, task) in found {
            set.spawn(recover_one(
                tasks.clone(),
                key,
                task,
                slots.clone(),
                mountinfo.clone(),
                deadline,
            ));
        }
        let mut late = 0;
        while let Some(done) = set.join_next().await {
            if !done.unwrap_or(false) {
                late += 1;
            }
        }
        info!(
            tasks = total,
            late,
            "recovered tasks in {:?}{}",
            began.elapsed(),
            if late > 0 {
                " (late ones are still being checked)"
            } else {
                ""
            }
        );
        done_tx.send_replace(true);
    });
    done_rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_lists_bundles_and_drops_unfinished_ones() {
        let root = std::env::temp_dir().join(format!("berth-recovery-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        struct Cleanup(std::path::PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _cleanup = Cleanup(root.clone());
        for d in ["default/a", "default/.b.tmp/rootfs", "other/c"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let mut found: Vec<(String, String)> = scan(&root)
            .into_iter()
            .map(|(ns, id, b)| {
                assert_eq!(b.dir, root.join(&ns).join(&id));
                (ns, id)
            })
            .collect();
        found.sort();
        assert_eq!(
            found,
            vec![
                ("default".to_string(), "a".to_string()),
                ("other".to_string(), "c".to_string())
            ]
        );
        assert!(!root.join("default/.b.tmp").exists());
    }
}
