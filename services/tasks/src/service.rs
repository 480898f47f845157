//! The Tasks gRPC service.

mod processes;
mod recovery;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use berth_proto::tasks::v1::tasks_server::Tasks;
use berth_proto::tasks::v1::{
    CloseStdinRequest, CreateTaskRequest, DeleteRequest, ExecProcessRequest, ExecProcessResponse,
    KillRequest, ListTasksRequest, ListTasksResponse, OomEvent, PauseRequest, PidsRequest,
    PidsResponse, ResizePtyRequest, StartRequest, StartResponse, StateRequest, StatsBatchRequest,
    StatsBatchResponse, StatsRequest, Status as TaskStatus, StdinRequest, TaskState, TaskStats,
    UpdateTaskRequest, WaitRequest, WaitResponse, WatchOomRequest,
};
use berth_proto::types::v1::Empty;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::bundle::{validate_id, Bundle, ExitRecord, ShimReport, TaskRecord};
use crate::error::Error;
use crate::pidfd;

type Key = (String, String);

struct Task {
    id: String,
    bundle: Bundle,
    /// What Create recorded; set from the bundle by recovery after a
    /// restart (unset only while the task's status is UNKNOWN).
    record: OnceLock<TaskRecord>,
    inner: Mutex<Inner>,
    exit_tx: watch::Sender<Option<ExitRecord>>,
    /// OOM kills seen in the task's cgroup during this run.
    oom_tx: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    status: i32,
    pid: u32,
    init_fd: Option<Arc<OwnedFd>>,
    started_at: String,
    starting: bool,
}

impl Task {
    fn new(id: String, bundle: Bundle, record: Option<TaskRecord>, status: TaskStatus) -> Self {
        let (exit_tx, _) = watch::channel(None);
        let (oom_tx, _) = watch::channel(0);
        let started_at = record
            .as_ref()
            .map(|r| r.started_at.clone())
            .unwrap_or_default();
        Task {
            id,
            bundle,
            record: record.map(OnceLock::from).unwrap_or_default(),
            inner: Mutex::new(Inner {
                status: status as i32,
                started_at,
                ..Default::default()
            }),
            exit_tx,
            oom_tx,
        }
    }

    fn cgroups_path(&self) -> &str {
        self.record.get().map_or("", |r| r.cgroups_path.as_str())
    }

    /// Refuses to act on a task whose state recovery has not found yet.
    fn check_known(&self, inner: &Inner) -> Result<(), Error> {
        if inner.status == TaskStatus::Unknown as i32 {
            return Err(Error::Unavailable(format!(
                "the state of task {} is not known yet: berth-tasks is still reconnecting to its shim; try again",
                self.id
            )));
        }
        Ok(())
    }

    fn state(&self) -> TaskState {
        let inner = self.inner.lock().unwrap();
        let exit = self.exit_tx.borrow().clone();
        let oom_kills = *self.oom_tx.borrow();
        TaskState {
            id: self.id.clone(),
            status: inner.status,
            pid: inner.pid,
            exit_status: exit.as_ref().map_or(0, |e| e.exit_status),
            exited_at: exit.as_ref().map_or(String::new(), |e| e.exited_at.clone()),
            started_at: inner.started_at.clone(),
            oom_killed: oom_kills > 0 || exit.as_ref().is_some_and(|e| e.oom_killed),
            oom_kills: clamp_u32(oom_kills),
            error: exit.map_or(String::new(), |e| e.error),
        }
    }

    /// Records a higher OOM kill count; returns whether it moved.
    fn saw_oom_kills(&self, n: u64) -> bool {
        self.oom_tx.send_if_modified(|c| {
            if n > *c {
                *c = n;
                true
            } else {
                false
            }
        })
    }

    fn set_exited(&self, mut rec: ExitRecord) {
        {
            let mut inner = self.inner.lock().unwrap();
            inner.status = TaskStatus::Stopped as i32;
            inner.pid = 0;
            inner.init_fd = None;
        }
        // The count first: a WatchOom stream ends on the exit and must see
        // the final count.
        self.saw_oom_kills(rec.oom_kills);
        rec.oom_kills = rec.oom_kills.max(*self.oom_tx.borrow());
        rec.oom_killed |= rec.oom_kills > 0;
        self.exit_tx.send_replace(Some(rec));
    }
}

/// Serves `berth.tasks.v1.Tasks`.
pub struct TasksService {
    root: PathBuf,
    shim: PathBuf,
    tasks: Arc<Mutex<HashMap<Key, Arc<Task>>>>,
    /// Control channels of running execs by (namespace, task, exec id).
    execs: ExecMap,
    /// `true` once recovery has checked the tasks of an earlier run.
    recovered: watch::Receiver<bool>,
}

type ExecMap = Arc<Mutex<HashMap<(String, String, String), mpsc::Sender<Vec<u8>>>>>;

#[derive(Serialize)]
struct MountJson<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    source: &'a str,
    options: &'a [String],
}

impl TasksService {
    /// Opens the service with bundles under `state_dir/tasks`, running shims
    /// from `shim`. Tasks left by an earlier run are entered at once with
    /// status UNKNOWN and found again in the background (see
    /// [`recovery`]): running ones are watched, stopped ones keep their exit
    /// status. The service can serve before any shim has been checked.
    /// Needs a tokio runtime.
    pub fn open(state_dir: &Path, shim: PathBuf) -> Result<Self, Error> {
        let root = state_dir.join("tasks");
        std::fs::create_dir_all(&root).map_err(Error::io(format!("create {}", root.display())))?;
        let svc = TasksService {
            root,
            shim,
            tasks: Arc::default(),
            execs: Arc::default(),
            recovered: watch::channel(false).1,
        };
        let mut found = Vec::new();
        for (ns, id, bundle) in recovery::scan(&svc.root) {
            let task = Arc::new(Task::new(id.clone(), bundle, None, TaskStatus::Unknown));
            svc.tasks
                .lock()
                .unwrap()
                .insert((ns.clone(), id), task.clone());
            found.push(((ns, task.id.clone()), task));
        }
        let recovered = recovery::spawn(svc.tasks.clone(), found, recovery::deadline());
        Ok(TasksService { recovered, ..svc })
    }

    /// Resolves once the tasks of an earlier run have been checked: each is
    /// known again (a running one watched through its shim), or its check
    /// outlasted the deadline and it stays UNKNOWN until the check finishes
    /// (so that one shim stuck in the kernel cannot hold the service back
    /// forever). berthd tells systemd it is ready only after this.
    pub fn recovered(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.recovered.clone();
        async move {
            // An error means the recovery task is gone: nothing to wait for.
            let _ = rx.wait_for(|done| *done).await;
        }
    }

    fn insert(&self, ns: &str, bundle: Bundle, record: TaskRecord) -> Arc<Task> {
        let task = Arc::new(Task::new(
            record.id.clone(),
            bundle,
            Some(record),
            TaskStatus::Created,
        ));
        self.tasks
            .lock()
            .unwrap()
            .insert((ns.to_string(), task.id.clone()), task.clone());
        task
    }

    fn get(&self, ns: &str, id: &str) -> Result<Arc<Task>, Error> {
        self.tasks
            .lock()
            .unwrap()
            .get(&(ns.to_string(), id.to_string()))
            .cloned()
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    async fn create(&self, ns: &str, req: CreateTaskRequest) -> Result<(), Error> {
        validate_id(&req.id)?;
        let spec: serde_json::Value = serde_json::from_slice(&req.spec)
            .map_err(|e| Error::InvalidArgument(format!("spec is not JSON: {e}")))?;
        serde_json::from_value::<oci_spec::runtime::Spec>(spec.clone())
            .map_err(|e| Error::InvalidArgument(format!("invalid OCI runtime spec: {e}")))?;
        if req.rootfs.is_empty() {
            return Err(Error::InvalidArgument("no rootfs mounts given".into()));
        }
        let cgroups_path = spec
            .pointer("/linux/cgroupsPath")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        if self.get(ns, &req.id).is_ok() {
            return Err(Error::AlreadyExists(req.id));
        }
        let ns_dir = self.root.join(ns);
        std::fs::create_dir_all(&ns_dir)
            .map_err(Error::io(format!("create {}", ns_dir.display())))?;
        let dir = ns_dir.join(&req.id);
        // Assemble in a temp dir and rename, so a crash leaves a whole bundle
        // or none.
        let tmp = ns_dir.join(format!(".{}.tmp", req.id));
        let _ = std::fs::remove_dir_all(&tmp);
        let result = (|| {
            std::fs::create_dir_all(tmp.join("rootfs")).map_err(Error::io("create bundle"))?;
            // Plain writes: the whole directory is renamed into place below.
            let write = |name: &str, data: &[u8]| {
                std::fs::write(tmp.join(name), data)
                    .map_err(Error::io(format!("write bundle {name}")))
            };
            write("config.json", &req.spec)?;
            let mounts: Vec<MountJson> = req
                .rootfs
                .iter()
                .map(|m| MountJson {
                    kind: &m.r#type,
                    source: &m.source,
                    options: &m.options,
                })
                .collect();
            write(
                "rootfs.json",
                &serde_json::to_vec(&mounts).map_err(|e| Error::Internal(e.to_string()))?,
            )?;
            let record = TaskRecord {
                id: req.id.clone(),
                log_path: req.log_path.clone(),
                started_at: String::new(),
                cgroups_path,
                open_stdin: req.open_stdin,
                log_max_size: req.log_max_size,
                log_max_files: req.log_max_files,
            };
            Bundle::new(tmp.clone()).write_record(&record)?;
            std::fs::rename(&tmp, &dir)
                .map_err(Error::io(format!("rename bundle to {}", dir.display())))?;
            Ok(record)
        })();
        match result {
            Ok(record) => {
                self.insert(ns, Bundle::new(dir), record);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(e)
            }
        }
    }

    async fn start(&self, ns: &str, id: &str) -> Result<u32, Error> {
        let task = self.get(ns, id)?;
        {
            let mut inner = task.inner.lock().unwrap();
            task.check_known(&inner)?;
            if inner.status != TaskStatus::Created as i32 || inner.starting {
                return Err(Error::FailedPrecondition(format!(
                    "task {id} cannot be started: it has already been started"
                )));
            }
            inner.starting = true;
        }
        let result = self.spawn_shim(&task).await;
        task.inner.lock().unwrap().starting = false;
        result
    }

    async fn spawn_shim(&self, task: &Arc<Task>) -> Result<u32, Error> {
        // Only a CREATED task is started, and those have their record.
        let rec = task
            .record
            .get()
            .ok_or_else(|| Error::Internal(format!("task {} has no record", task.id)))?;
        let mut cmd = tokio::process::Command::new(&self.shim);
        cmd.arg("--id")
            .arg(&task.id)
            .arg("--bundle")
            .arg(&task.bundle.dir);
        if !rec.log_path.is_empty() {
            if let Some(parent) = Path::new(&rec.log_path).parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            cmd.arg("--log").arg(&rec.log_path);
            if rec.log_max_size > 0 {
                cmd.arg("--log-max-size")
                    .arg(rec.log_max_size.to_string())
                    .arg("--log-max-files")
                    .arg(rec.log_max_files.max(1).to_string());
            }
        }
        if rec.open_stdin {
            cmd.arg("--stdin");
        }
        // systemd's notification socket is berth-tasks' own: the shim
        // outlives the service and must not pass it on to the container.
        cmd.env_remove(berth_common::notify::NOTIFY_SOCKET_ENV)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(Error::io(format!("run shim {}", self.shim.display())))?;
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            stdout
                .read_to_string(&mut out)
                .await
                .map_err(Error::io("read shim report"))?;
        }
        let status = child.wait().await.map_err(Error::io("wait for shim"))?;
        let report: ShimReport = serde_json::from_str(out.trim()).map_err(|e| {
            Error::Internal(format!(
                "shim for {} failed ({status}) without a report: {e}; output {:?}",
                task.id,
                out.trim()
            ))
        })?;
        if let Some(message) = report.error {
            let exit_code = report.exit_code.unwrap_or(125);
            let exit = task.bundle.read_exit().unwrap_or(ExitRecord {
                exit_status: exit_code as u32,
                exited_at: berth_common::time::now_rfc3339(),
                error: message.clone(),
                ..Default::default()
            });
            task.set_exited(exit);
            return Err(Error::Exec { message, exit_code });
        }
        let pid = report
            .pid
            .ok_or_else(|| Error::Internal("shim report has neither pid nor error".into()))?;
        let started_at = berth_common::time::now_rfc3339();
        let mut record = rec.clone();
        record.started_at = started_at.clone();
        task.bundle.write_record(&record)?;
        {
            let mut inner = task.inner.lock().unwrap();
            inner.status = TaskStatus::Running as i32;
            inner.pid = pid;
            inner.started_at = started_at;
            // The init cannot be reaped before the shim is, so this pidfd
            // refers to the right process unless it has already exited.
            inner.init_fd = pidfd::open(pid as i32).ok().map(Arc::new);
        }
        match task
            .bundle
            .shim_pid()
            .and_then(|p| open_shim(&task.bundle, p))
        {
            Some(fd) => {
                watch_oom(task.clone());
                watch_shim(task.clone(), fd)
            }
            None => {
                // The shim has already finished.
                let exit = task.bundle.read_exit().unwrap_or(ExitRecord {
                    exit_status: 255,
                    exited_at: berth_common::time::now_rfc3339(),
                    error: "shim exited without recording an exit status".into(),
                    ..Default::default()
                });
                task.set_exited(exit);
            }
        }
        Ok(pid)
    }

    fn kill(&self, ns: &str, req: &KillRequest) -> Result<(), Error> {
        let task = self.get(ns, &req.id)?;
        let fd = {
            let inner = task.inner.lock().unwrap();
            task.check_known(&inner)?;
            if inner.status != TaskStatus::Running as i32
                && inner.status != TaskStatus::Paused as i32
            {
                return Err(Error::FailedPrecondition(format!(
                    "task {} is not running",
                    req.id
                )));
            }
            inner.init_fd.clone()
        };
        let sig = req.signal as i32;
        if sig <= 0 || sig > 64 {
            return Err(Error::InvalidArgument(format!(
                "invalid signal {}",
                req.signal
            )));
        }
        let Some(fd) = fd else {
            return Ok(()); // already exiting
        };
        match pidfd::send_signal(&fd, sig) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(Error::Io {
                context: format!("signal task {}", req.id),
                source: e,
            }),
        }
    }

    async fn wait(&self, ns: &str, id: &str) -> Result<ExitRecord, Error> {
        let task = self.get(ns, id)?;
        let mut rx = task.exit_tx.subscribe();
        let rec = rx
            .wait_for(|e| e.is_some())
            .await
            .map_err(|_| Error::Internal("task watcher went away".into()))?;
        Ok(rec.clone().unwrap_or_default())
    }

    fn delete(&self, ns: &str, id: &str) -> Result<ExitRecord, Error> {
        let task = self.get(ns, id)?;
        {
            let inner = task.inner.lock().unwrap();
            task.check_known(&inner)?;
            if inner.status == TaskStatus::Running as i32
                || inner.status == TaskStatus::Paused as i32
                || inner.starting
            {
                return Err(Error::FailedPrecondition(format!(
                    "task {id} is running: kill it before deleting"
                )));
            }
        }
        self.tasks
            .lock()
            .unwrap()
            .remove(&(ns.to_string(), id.to_string()));
        remove_cgroup(task.cgroups_path());
        std::fs::remove_dir_all(&task.bundle.dir)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(Error::io(format!(
                "remove bundle {}",
                task.bundle.dir.display()
            )))?;
        let exit = task.exit_tx.borrow().clone().unwrap_or_default();
        Ok(exit)
    }

    fn pids(&self, ns: &str, id: &str) -> Result<Vec<u32>, Error> {
        let task = self.get(ns, id)?;
        task.check_known(&task.inner.lock().unwrap())?;
        let cg = task.cgroups_path().trim_start_matches('/');
        for base in [
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup",
        ] {
            let procs = Path::new(base).join(cg).join("cgroup.procs");
            if let Ok(text) = std::fs::read_to_string(&procs) {
                return Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect());
            }
        }
        let pid = task.inner.lock().unwrap().pid;
        Ok(if pid > 0 { vec![pid] } else { vec![] })
    }
}

/// Opens a pidfd for the shim, checking that the process really is the shim
/// of this bundle (pids are reused).
fn open_shim(bundle: &Bundle, pid: i32) -> Option<OwnedFd> {
    try_open_shim(bundle, pid).ok().flatten()
}

/// Like [`open_shim`], telling "gone, or another process" (`Ok(None)`) from
/// a check that failed (an error: the answer is not known).
fn try_open_shim(bundle: &Bundle, pid: i32) -> std::io::Result<Option<OwnedFd>> {
    let gone = |e: &std::io::Error| {
        e.kind() == std::io::ErrorKind::NotFound
            || matches!(e.raw_os_error(), Some(libc::ESRCH | libc::EINVAL))
    };
    let fd = match pidfd::open(pid) {
        Ok(fd) => fd,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    // This read can block for as long as the process's mm lock is held
    // (a process stuck in D state): recovery runs it with a deadline.
    let cmdline = match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(c) => c,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let bundle_arg = bundle.dir.as_os_str().as_encoded_bytes();
    let is_ours = cmdline.split(|b| *b == 0).any(|arg| arg == bundle_arg);
    Ok(is_ours.then_some(fd))
}

/// Waits for the shim to exit, then publishes the exit status it recorded.
fn watch_shim(task: Arc<Task>, shim_fd: OwnedFd) {
    tokio::spawn(async move {
        if let Err(e) = pidfd::exited(shim_fd).await {
            warn!(id = %task.id, "cannot watch shim: {e}");
            return;
        }
        let exit = task.bundle.read_exit().unwrap_or(ExitRecord {
            exit_status: 255,
            exited_at: berth_common::time::now_rfc3339(),
            error: "shim exited without recording an exit status".into(),
            ..Default::default()
        });
        info!(id = %task.id, status = exit.exit_status, "task exited");
        task.set_exited(exit);
    });
}

fn clamp_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Follows the OOM kill counter of a running task's memory cgroup
/// (berth_runtime::oom: an eventfd on v1, inotify on memory.events on v2)
/// until the task exits or its cgroup goes; the shim records the final
/// count in the exit file, so a kill this misses is still reported at the
/// exit.
fn watch_oom(task: Arc<Task>) {
    use berth_runtime::oom::OomWatch;
    use tokio::io::unix::AsyncFd;
    let path = task.cgroups_path().to_string();
    if path.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let id = task.id.clone();
        let cg = match berth_runtime::cgroups::Cgroup::load(Path::new(&path)) {
            Ok(cg) => cg,
            Err(e) => {
                warn!(id = %id, "OOM watch: {e}");
                return;
            }
        };
        let v2 = cg.v2();
        let dir = if v2 {
            cg.dirs().into_iter().next().map(|(_, d)| d)
        } else {
            cg.dir("memory")
        };
        let Some(dir) = dir else {
            return; // no memory controller: nothing is ever counted
        };
        let mut exit_rx = task.exit_tx.subscribe();
        if exit_rx.borrow().is_some() {
            return;
        }
        let watch = match OomWatch::open(&dir, v2).and_then(|w| {
            // SAFETY: the OomWatch owns its descriptor (an OwnedFd it never
            // replaces) and keeps it open until it is dropped with the
            // AsyncFd.
            unsafe { AsyncFd::register_with_interest(w, tokio::io::Interest::READABLE) }
                .map_err(|e| berth_runtime::Error::os("register OOM watch", e.into()))
        }) {
            Ok(w) => w,
            Err(e) => {
                // Gone already (the task exited), or no counter: the exit
                // record still has the final count.
                if dir.is_dir() {
                    warn!(id = %id, "OOM watch on {}: {e}", dir.display());
                }
                return;
            }
        };
        // Kills before the watch was set up.
        if let Some(n) = watch.get_ref().kills() {
            if task.saw_oom_kills(n) {
                info!(id = %id, oom_kills = n, "task OOM-killed");
            }
        }
        loop {
            tokio::select! {
                r = watch.readable() => {
                    let Ok(mut guard) = r else { return };
                    guard.get_inner().drain();
                    guard.clear_ready();
                }
                _ = exit_rx.changed() => return,
            }
            let before = *task.oom_tx.borrow();
            let mut n = match watch.get_ref().kills() {
                Some(n) => n,
                None => return, // the cgroup is gone
            };
            // v1 signals the OOM condition before the killer has picked
            // and killed its victim (the counter moves just after): look
            // again a few times over about a second. With the OOM killer
            // disabled nothing is killed and the counter stays.
            let mut backoff = Duration::from_millis(5);
            while !v2 && n <= before && backoff <= Duration::from_millis(640) {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = exit_rx.changed() => return,
                }
                backoff *= 2;
                n = match watch.get_ref().kills() {
                    Some(n) => n,
                    None => return,
                };
            }
            if task.saw_oom_kills(n) {
                info!(id = %id, oom_kills = n, "task OOM-killed");
            }
            if exit_rx.borrow().is_some() {
                return;
            }
        }
    });
}

/// Removes what is left of a task's cgroup (the shim normally does this).
fn remove_cgroup(cgroups_path: &str) {
    let cg = cgroups_path.trim_start_matches('/');
    if cg.is_empty() {
        return;
    }
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut bases: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    bases.push(PathBuf::from("/sys/fs/cgroup"));
    for base in bases {
        let dir = base.join(cg);
        if dir.is_dir() {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

fn wait_response(exit: ExitRecord) -> WaitResponse {
    WaitResponse {
        exit_status: exit.exit_status,
        exited_at: exit.exited_at,
        oom_killed: exit.oom_killed || exit.oom_kills > 0,
        oom_kills: clamp_u32(exit.oom_kills),
    }
}

#[tonic::async_trait]
impl Tasks for TasksService {
    async fn create(&self, req: Request<CreateTaskRequest>) -> Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        berth_common::grpc::record_container(&req.get_ref().id);
        TasksService::create(self, &ns, req.into_inner()).await?;
        Ok(Response::new(Empty {}))
    }

    async fn start(&self, req: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        berth_common::grpc::record_container(&req.get_ref().id);
        let pid = TasksService::start(self, &ns, &req.get_ref().id).await?;
        Ok(Response::new(StartResponse { pid }))
    }

    async fn state(&self, req: Request<StateRequest>) -> Result<Response<TaskState>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        berth_common::grpc::record_container(&req.get_ref().id);
        Ok(Response::new(self.get(&ns, &req.get_ref().id)?.state()))
    }

    async fn list(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let tasks: Vec<Arc<Task>> = self
            .tasks
            .lock()
            .unwrap()
            .iter()
            .filter(|((n, _), _)| *n == ns)
            .map(|(_, t)| t.clone())
            .collect();
        Ok(Response::new(ListTasksResponse {
            tasks: tasks.iter().map(|t| t.state()).collect(),
        }))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        berth_common::grpc::record_container(&req.get_ref().id);
        TasksService::kill(self, &ns, req.get_ref())?;
        Ok(Response::new(Empty {}))
    }

    async fn wait(&self, req: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        berth_common::grpc::record_container(&req.get_ref().id);
        let exit = TasksService::wait(self, &ns, &req.get_ref().id).await?;
        Ok(Response::new(wait_response(exit)))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<WaitResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        berth_common::grpc::record_container(&req.get_ref().id);
        let exit = TasksService::delete(self, &ns, &req.get_ref().id)?;
        Ok(Response::new(wait_response(exit)))
    }

    async fn pids(&self, req: Request<PidsRequest>) -> Result<Response<PidsResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        berth_common::grpc::record_container(&req.get_ref().id);
        let pids = TasksService::pids(self, &ns, &req.get_ref().id)?;
        Ok(Response::new(PidsResponse { pids }))
    }

    async fn attach_stdin(
        &self,
        req: Request<Streaming<StdinRequest>>,
    ) -> Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        TasksService::attach_stdin(self, &ns, req.into_inner()).await?;
        Ok(Response::new(Empty {}))
    }

    async fn resize_pty(&self, req: Request<ResizePtyRequest>) -> Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.get_ref();
        TasksService::resize_pty(self, &ns, &r.id, &r.exec_id, r.rows, r.cols).await?;
        Ok(Response::new(Empty {}))
    }

    async fn close_stdin(
        &self,
        req: Request<CloseStdinRequest>,
    ) -> Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        TasksService::close_stdin(self, &ns, &req.get_ref().id).await?;
        Ok(Response::new(Empty {}))
    }

    type ExecStream = ReceiverStream<Result<ExecProcessResponse, Status>>;

    async fn exec(
        &self,
        req: Request<Streaming<ExecProcessRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let rx = TasksService::exec(self, &ns, req.into_inner()).await?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn pause(&self, req: Request<PauseRequest>) -> Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        self.set_frozen(&ns, &req.get_ref().id, true).await?;
        Ok(Response::new(Empty {}))
    }

    async fn resume(&self, req: Request<PauseRequest>) -> Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        self.set_frozen(&ns, &req.get_ref().id, false).await?;
        Ok(Response::new(Empty {}))
    }

    type WatchOomStream = ReceiverStream<Result<OomEvent, Status>>;

    async fn watch_oom(
        &self,
        req: Request<WatchOomRequest>,
    ) -> Result<Response<Self::WatchOomStream>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let task = self.get(&ns, &req.get_ref().id)?;
        let mut oom_rx = task.oom_tx.subscribe();
        let mut exit_rx = task.exit_tx.subscribe();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut sent = None;
            loop {
                // The exit is looked at first: set_exited records the
                // final count before the exit, so it is sent below.
                let exited = exit_rx.borrow_and_update().is_some();
                let n = *oom_rx.borrow_and_update();
                if sent != Some(n) {
                    sent = Some(n);
                    let ev = OomEvent {
                        oom_kills: clamp_u32(n),
                    };
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                if exited {
                    return;
                }
                tokio::select! {
                    r = oom_rx.changed() => if r.is_err() { return },
                    r = exit_rx.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn update(&self, req: Request<UpdateTaskRequest>) -> Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.into_inner();
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_str(&r.resources_json)
            .map_err(|e| {
                Status::invalid_argument(format!("bad resources for task {}: {e}", r.id))
            })?;
        let (task, _) = self.running(&ns, &r.id, true)?;
        let path = task.cgroups_path().to_string();
        tokio::task::spawn_blocking(move || {
            let cg = berth_runtime::cgroups::Cgroup::load(Path::new(&path))?;
            cg.apply(&resources)
        })
        .await
        .map_err(|e| Status::internal(format!("update task: {e}")))?
        .map_err(|e| {
            // Gone meanwhile (its cgroup with it), or a value the kernel
            // refused.
            if self.running(&ns, &r.id, true).is_err() {
                Status::failed_precondition(format!("container {} is not running", r.id))
            } else {
                Status::invalid_argument(format!("update of task {}: {e}", r.id))
            }
        })?;
        info!(id = %r.id, "updated the task's resources");
        Ok(Response::new(Empty {}))
    }

    async fn stats(&self, req: Request<StatsRequest>) -> Result<Response<TaskStats>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        Ok(Response::new(TasksService::stats(
            self,
            &ns,
            &req.get_ref().id,
        )?))
    }

    async fn stats_batch(
        &self,
        req: Request<StatsBatchRequest>,
    ) -> Result<Response<StatsBatchResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let stats = TasksService::stats_batch(self, &ns, req.into_inner().ids).await?;
        Ok(Response::new(StatsBatchResponse { stats }))
    }
}
