//! The ContainerProcesses service: interactive attach, exec, resize,
//! pause/unpause, top and stats of running containers.
//!
//! Output of an attach comes from the container's json-file log (followed
//! from its end when the attach opens, so an attach opened before Start sees
//! everything); input goes to berth-tasks' AttachStdin, which hands it to
//! the shim. Exec I/O flows through berth-tasks' Exec stream.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use berth_common::request;
use berth_proto::gateway::v1::container_processes_server::ContainerProcesses;
use berth_proto::gateway::v1::{
    attach_io_request, attach_io_response, exec_request, exec_response, AttachIoRequest,
    AttachIoResponse, ContainerRef, ContainerStats, Empty, ExecRequest, ExecResponse, ExecStart,
    ExitStatus, LogEntry, ResizeRequest, StatsRequest, Stream, TopRequest, TopResponse,
};
use berth_proto::tasks::v1::{
    exec_process_request, exec_process_response, stdin_request, ExecProcessRequest,
    ExecProcessStart, PauseRequest, PidsRequest, ResizePtyRequest, StatsRequest as TaskStatsReq,
    StdinRequest, TaskStats, TerminalSize,
};
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::warn;

use crate::container::{new_id, ContainerRecord};
use crate::error::{Error, Result};
use crate::logs::{self, Tailer};
use crate::{EventKind, Inner};

/// Docker's default detach sequence.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// Parses docker's detach-key syntax: comma-separated keys, each a single
/// character or `ctrl-<c>` with c in a-z, @, [, \, ], ^, _.
pub fn parse_detach_keys(s: &str) -> std::result::Result<Vec<u8>, String> {
    let s = if s.is_empty() { DEFAULT_DETACH_KEYS } else { s };
    let mut out = Vec::new();
    for key in s.split(',') {
        let lower = key.to_ascii_lowercase();
        if let Some(c) = lower.strip_prefix("ctrl-") {
            let b = match c.as_bytes() {
                [c @ b'a'..=b'z'] => c - b'a' + 1,
                [b'@'] => 0,
                [b'['] => 27,
                [b'\\'] => 28,
                [b']'] => 29,
                [b'^'] => 30,
                [b'_'] => 31,
                _ => return Err(format!("Unknown character: '{key}'")),
            };
            out.push(b);
        } else if key.len() == 1 && key.is_ascii() {
            out.push(key.as_bytes()[0]);
        } else {
            return Err(format!("Unknown character: '{key}'"));
        }
    }
    Ok(out)
}

/// [`parse_detach_keys`] with docker's error for a client's request.
fn detach_keys(s: &str) -> Result<Vec<u8>> {
    parse_detach_keys(s)
        .map_err(|e| Error::InvalidArgument(format!("Invalid detach keys ({s}) provided: {e}")))
}

/// Finds the detach sequence in a byte stream, holding back a partial
/// match until it is decided.
#[derive(Debug)]
pub struct DetachFilter {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachFilter {
    pub fn new(keys: Vec<u8>) -> Self {
        DetachFilter { keys, matched: 0 }
    }

    /// Bytes to pass on, and whether the sequence was completed (the bytes
    /// before it are still returned).
    pub fn feed(&mut self, data: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(data.len());
        if self.keys.is_empty() {
            out.extend_from_slice(data);
            return (out, false);
        }
        for &b in data {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return (out, true);
                }
            } else {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if b == self.keys[0] {
                    self.matched = 1;
                    if self.keys.len() == 1 {
                        self.matched = 0;
                        return (out, true);
                    }
                } else {
                    out.push(b);
                }
            }
        }
        (out, false)
    }
}

/// Serves `berth.gateway.v1.ContainerProcesses`.
pub struct ProcessesApi(pub(crate) Arc<Inner>);

fn get(inner: &Inner, ns: &str, id: &str) -> Option<ContainerRecord> {
    inner
        .containers
        .lock()
        .unwrap()
        .get(&(ns.to_string(), id.to_string()))
        .cloned()
}

fn set_status(inner: &Inner, ns: &str, id: &str, status: &str) -> Result<()> {
    let rec = {
        let mut map = inner.containers.lock().unwrap();
        let Some(rec) = map.get_mut(&(ns.to_string(), id.to_string())) else {
            return Ok(());
        };
        // Only switch between running and paused: an exit wins.
        if !rec.state.running() {
            return Ok(());
        }
        rec.state.status = status.to_string();
        rec.clone()
    };
    inner.store.put(&rec, false)
}

fn not_running(id: &str) -> Error {
    Error::FailedPrecondition(format!("container {id} is not running"))
}

impl Inner {
    /// Freezes a running container (docker pause): its processes stop
    /// where they are; a `pause` event is recorded.
    pub(crate) async fn pause_container(&self, ns: &str, rec: &ContainerRecord) -> Result<()> {
        if rec.state.status == "paused" {
            return Err(Error::FailedPrecondition(format!(
                "Container {} is already paused",
                rec.id
            )));
        }
        if !rec.state.running() {
            return Err(Error::FailedPrecondition(format!(
                "Container {} is not running",
                rec.id
            )));
        }
        self.tasks
            .clone()
            .pause(request(ns, PauseRequest { id: rec.id.clone() }))
            .await
            .map_err(Error::service("tasks"))?;
        set_status(self, ns, &rec.id, "paused")?;
        self.emit_container(ns, &rec.id, "pause", &[]);
        Ok(())
    }

    /// Thaws a paused container (docker unpause); an `unpause` event is
    /// recorded.
    pub(crate) async fn unpause_container(&self, ns: &str, rec: &ContainerRecord) -> Result<()> {
        if rec.state.status != "paused" {
            return Err(Error::FailedPrecondition(format!(
                "Container {} is not paused",
                rec.id
            )));
        }
        self.tasks
            .clone()
            .resume(request(ns, PauseRequest { id: rec.id.clone() }))
            .await
            .map_err(Error::service("tasks"))?;
        set_status(self, ns, &rec.id, "running")?;
        self.emit_container(ns, &rec.id, "unpause", &[]);
        Ok(())
    }
}

impl Inner {
    /// The resource usage of a container's task from berth-tasks (what
    /// `berth stats` and the metrics endpoint show); `None` when it does
    /// not run (any more).
    pub(crate) async fn task_stats(&self, ns: &str, id: &str) -> Result<Option<TaskStats>> {
        match self
            .tasks
            .clone()
            .stats(request(ns, TaskStatsReq { id: id.to_string() }))
            .await
        {
            Ok(t) => Ok(Some(t.into_inner())),
            Err(st) if st.code() == Code::FailedPrecondition || st.code() == Code::NotFound => {
                Ok(None)
            }
            Err(st) => Err(Error::service("tasks")(st)),
        }
    }
}

/// Thaws a paused container so that a signal can act (docker's kill and
/// stop of a paused container). Called before signalling.
pub(crate) async fn thaw_for_signal(inner: &Inner, ns: &str, id: &str) {
    if get(inner, ns, id).is_some_and(|c| c.state.status == "paused") {
        let r = inner
            .tasks
            .clone()
            .resume(request(ns, PauseRequest { id: id.to_string() }))
            .await;
        if r.is_ok() {
            let _ = set_status(inner, ns, id, "running");
        }
    }
}

type Out<T> = ReceiverStream<std::result::Result<T, Status>>;

fn attach_out(e: LogEntry) -> AttachIoResponse {
    AttachIoResponse {
        payload: Some(attach_io_response::Payload::Output(e)),
    }
}

/// Waits until the container is running (or has started since `rx` was
/// subscribed); false if it stopped or went away, or the client did
/// (`client` closed).
async fn wait_running<T>(
    inner: &Inner,
    ns: &str,
    id: &str,
    rx: &mut broadcast::Receiver<crate::Event>,
    client: &mpsc::WeakSender<T>,
) -> bool {
    loop {
        // The output side is done (exit, detach) or the client went away.
        if client.upgrade().is_none_or(|c| c.is_closed()) {
            return false;
        }
        match get(inner, ns, id) {
            None => return false,
            Some(c) if c.state.running() => return true,
            _ => {}
        }
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) if ev.ns == ns && ev.id == id => match ev.kind {
                    EventKind::Start => return true,
                    EventKind::Die(_) | EventKind::Destroy => return false,
                    #[allow(unreachable_patterns)]
                    _ => {}
                },
                Err(broadcast::error::RecvError::Closed) => return false,
                _ => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

#[tonic::async_trait]
impl ContainerProcesses for ProcessesApi {
    type AttachStream = Out<AttachIoResponse>;

    async fn attach(
        &self,
        req: Request<Streaming<AttachIoRequest>>,
    ) -> std::result::Result<Response<Self::AttachStream>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let mut input = req.into_inner();
        let start = match input.next().await {
            Some(Ok(AttachIoRequest {
                payload: Some(attach_io_request::Payload::Start(s)),
            })) => s,
            _ => {
                return Err(Error::InvalidArgument(
                    "the first attach message must be `start`".into(),
                )
                .into())
            }
        };
        let rec = self.0.find(&ns, &start.id)?;
        if rec.state.status == "paused" {
            return Err(Error::FailedPrecondition(
                "You cannot attach to a paused container, unpause it first".to_string(),
            )
            .into());
        }
        let keys = detach_keys(&start.detach_keys)?;
        let tty = rec.config.tty;
        let inner = self.0.clone();
        let id = rec.id.clone();
        let (tx, rx) = mpsc::channel(64);
        // The input side stops waiting for a start when the client is gone.
        let client = tx.downgrade();
        let (detach_tx, mut detach_rx) = watch::channel(false);
        let mut events = inner.events.subscribe();
        let mut tailer = Tailer::open(&rec.log_path(), true).await;
        let (want_out, want_err) = if !start.stdout && !start.stderr {
            (true, true)
        } else {
            (start.stdout, start.stderr)
        };

        // Output: follow the log until the container stops or the client
        // detaches.
        {
            let inner = inner.clone();
            let ns = ns.clone();
            let id = id.clone();
            let mut seen_running = rec.state.running();
            let mut input_done = false;
            tokio::spawn(
                async move {
                    loop {
                        let exit = tokio::select! {
                            ev = events.recv() => match ev {
                                Ok(ev) if ev.ns == ns && ev.id == id => match ev.kind {
                                    EventKind::Start => { seen_running = true; None }
                                    EventKind::Die(code) if seen_running => Some(code),
                                    _ => None,
                                },
                                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => None,
                                Err(broadcast::error::RecvError::Closed) => return,
                            },
                            _ = tokio::time::sleep(Duration::from_millis(30)) => None,
                            changed = detach_rx.changed(), if !input_done => match changed {
                                Ok(()) if *detach_rx.borrow() => {
                                    let _ = tx.send(Ok(AttachIoResponse {
                                        payload: Some(attach_io_response::Payload::Detached(true)),
                                    })).await;
                                    return;
                                }
                                Ok(()) => None,
                                // The input side is gone (no stdin, or its end):
                                // no detach can come any more; keep following.
                                Err(_) => { input_done = true; None }
                            },
                            _ = tx.closed() => return,
                        };
                        for e in logs::select(tailer.read_available().await, want_out, want_err, -1)
                        {
                            if tx.send(Ok(attach_out(e))).await.is_err() {
                                return;
                            }
                        }
                        if !seen_running && get(&inner, &ns, &id).is_some_and(|c| c.state.running())
                        {
                            seen_running = true;
                        }
                        if let Some(code) = exit {
                            let _ = tx
                                .send(Ok(AttachIoResponse {
                                    payload: Some(attach_io_response::Payload::Exit(ExitStatus {
                                        status_code: code,
                                        error: String::new(),
                                    })),
                                }))
                                .await;
                            return;
                        }
                    }
                }
                .in_current_span(),
            );
        }

        // Input: to the container's stdin once it runs.
        if start.stdin && rec.config.open_stdin {
            let stdin_once = rec.config.stdin_once;
            tokio::spawn(
                async move {
                    let mut filter = DetachFilter::new(if tty { keys } else { Vec::new() });
                    let mut ev = inner.events.subscribe();
                    let (in_tx, in_rx) = mpsc::channel::<StdinRequest>(64);
                    let mut in_rx = Some(in_rx);
                    let msg = |p| StdinRequest { payload: Some(p) };
                    let mut closed = false;
                    loop {
                        let m = input.next().await;
                        if let Some(in_rx) = in_rx.take() {
                            // Connect to the container's stdin once it runs.
                            if matches!(m, None | Some(Err(_)))
                                || !wait_running(&inner, &ns, &id, &mut ev, &client).await
                            {
                                return;
                            }
                            let _ = in_tx
                                .send(msg(stdin_request::Payload::Id(id.clone())))
                                .await;
                            let mut tasks = inner.tasks.clone();
                            let stream = ReceiverStream::new(in_rx);
                            let ns2 = ns.clone();
                            tokio::spawn(async move {
                                if let Err(s) = tasks.attach_stdin(request(&ns2, stream)).await {
                                    warn!("attach stdin: {s}");
                                }
                            });
                        }
                        let p = match m {
                            Some(Ok(AttachIoRequest { payload: Some(p) })) => p,
                            Some(Ok(_)) => continue,
                            // End of input (or the client went away).
                            Some(Err(_)) | None => break,
                        };
                        match p {
                            attach_io_request::Payload::Stdin(data) => {
                                let (pass, detach) = filter.feed(&data);
                                if !pass.is_empty() {
                                    let _ =
                                        in_tx.send(msg(stdin_request::Payload::Data(pass))).await;
                                }
                                if detach {
                                    let _ = detach_tx.send(true);
                                    return;
                                }
                            }
                            attach_io_request::Payload::Resize(r) => {
                                let _ = in_tx
                                    .send(msg(stdin_request::Payload::Resize(TerminalSize {
                                        rows: r.rows,
                                        cols: r.cols,
                                    })))
                                    .await;
                            }
                            attach_io_request::Payload::CloseStdin(true) if stdin_once && !tty => {
                                closed = true;
                                let _ = in_tx.send(msg(stdin_request::Payload::Close(true))).await;
                            }
                            _ => {}
                        }
                    }
                    if stdin_once && !tty && !closed {
                        let _ = in_tx.send(msg(stdin_request::Payload::Close(true))).await;
                    }
                }
                .in_current_span(),
            );
        } else {
            // No stdin: still watch for resizes and the end of the stream.
            tokio::spawn(async move {
                let mut ev = inner.events.subscribe();
                while let Some(Ok(m)) = input.next().await {
                    if let Some(attach_io_request::Payload::Resize(r)) = m.payload {
                        if wait_running(&inner, &ns, &id, &mut ev, &client).await {
                            let _ = inner
                                .tasks
                                .clone()
                                .resize_pty(request(
                                    &ns,
                                    ResizePtyRequest {
                                        id: id.clone(),
                                        exec_id: String::new(),
                                        rows: r.rows,
                                        cols: r.cols,
                                    },
                                ))
                                .await;
                        }
                    }
                }
            });
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type ExecStream = Out<ExecResponse>;

    async fn exec(
        &self,
        req: Request<Streaming<ExecRequest>>,
    ) -> std::result::Result<Response<Self::ExecStream>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let mut input = req.into_inner();
        let start: ExecStart = match input.next().await {
            Some(Ok(ExecRequest {
                payload: Some(exec_request::Payload::Start(s)),
            })) => s,
            _ => {
                return Err(
                    Error::InvalidArgument("the first exec message must be `start`".into()).into(),
                )
            }
        };
        if start.cmd.is_empty() {
            return Err(Error::InvalidArgument("No exec command specified".into()).into());
        }
        let keys = detach_keys(&start.detach_keys)?;
        let rec = self.0.find(&ns, &start.id)?;
        if rec.state.status == "paused" {
            return Err(Error::FailedPrecondition(format!(
                "container {} is paused, unpause the container before exec",
                rec.id
            ))
            .into());
        }
        if !rec.state.running() {
            return Err(not_running(&rec.id).into());
        }
        let exec_id = new_id();
        let (to_tasks, from_client) = mpsc::channel::<ExecProcessRequest>(64);
        let msg = |p| ExecProcessRequest { payload: Some(p) };
        let size = (start.rows > 0 && start.cols > 0).then_some(TerminalSize {
            rows: start.rows,
            cols: start.cols,
        });
        let _ = to_tasks
            .send(msg(exec_process_request::Payload::Start(
                ExecProcessStart {
                    id: rec.id.clone(),
                    exec_id: exec_id.clone(),
                    args: start.cmd.clone(),
                    env: start.env.clone(),
                    cwd: start.working_dir.clone(),
                    user: start.user.clone(),
                    terminal: start.tty,
                    stdin: start.stdin,
                    size,
                },
            )))
            .await;
        let mut out = match self
            .0
            .tasks
            .clone()
            .exec(request(&ns, ReceiverStream::new(from_client)))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::FailedPrecondition => {
                return Err(Error::FailedPrecondition(s.message().to_string()).into())
            }
            Err(s) => return Err(Error::service("tasks")(s).into()),
        };
        // With a terminal, the detach keys end the client's stream; the
        // process runs on.
        let mut filter = DetachFilter::new(if start.tty && start.stdin {
            keys
        } else {
            Vec::new()
        });
        let (detach_tx, mut detach_rx) = watch::channel(false);
        tokio::spawn(
            async move {
                while let Some(Ok(m)) = input.next().await {
                    let p = match m.payload {
                        Some(exec_request::Payload::Stdin(d)) => {
                            let (pass, detach) = filter.feed(&d);
                            if detach {
                                if !pass.is_empty() {
                                    let _ = to_tasks
                                        .send(msg(exec_process_request::Payload::Stdin(pass)))
                                        .await;
                                }
                                let _ = detach_tx.send(true);
                                // Ending the input is not "close stdin" for the
                                // exec: it keeps its stdin and runs on.
                                return;
                            }
                            exec_process_request::Payload::Stdin(pass)
                        }
                        Some(exec_request::Payload::CloseStdin(c)) => {
                            exec_process_request::Payload::CloseStdin(c)
                        }
                        Some(exec_request::Payload::Resize(r)) => {
                            exec_process_request::Payload::Resize(TerminalSize {
                                rows: r.rows,
                                cols: r.cols,
                            })
                        }
                        _ => continue,
                    };
                    if to_tasks.send(msg(p)).await.is_err() {
                        break;
                    }
                }
            }
            .in_current_span(),
        );
        let (tx, rx) = mpsc::channel(64);
        let detach = start.detach;
        tokio::spawn(
            async move {
                let resp = |p| Ok(ExecResponse { payload: Some(p) });
                if tx
                    .send(resp(exec_response::Payload::ExecId(exec_id)))
                    .await
                    .is_err()
                {
                    return;
                }
                loop {
                    let m = tokio::select! {
                        m = out.next() => match m {
                            Some(m) => m,
                            None => return,
                        },
                        _ = detach_rx.changed() => return,
                    };
                    let p = match m {
                        Ok(m) => m.payload,
                        Err(s) => {
                            let _ = tx.send(Err(s)).await;
                            return;
                        }
                    };
                    let p = match p {
                        Some(exec_process_response::Payload::Started(_)) => {
                            if detach {
                                return;
                            }
                            continue;
                        }
                        Some(exec_process_response::Payload::Output(o)) => {
                            exec_response::Payload::Output(LogEntry {
                                stream: if o.stream == 2 {
                                    Stream::Stderr as i32
                                } else {
                                    Stream::Stdout as i32
                                },
                                data: o.data,
                                time: berth_common::time::now_rfc3339(),
                            })
                        }
                        Some(exec_process_response::Payload::Exit(e)) => {
                            exec_response::Payload::Exit(ExitStatus {
                                status_code: e.exit_status as i64,
                                error: e.error,
                            })
                        }
                        None => continue,
                    };
                    let last = matches!(p, exec_response::Payload::Exit(_));
                    if tx.send(resp(p)).await.is_err() || last {
                        return;
                    }
                }
            }
            .in_current_span(),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn resize(
        &self,
        req: Request<ResizeRequest>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.into_inner();
        let rec = self.0.find(&ns, &r.id)?;
        if !rec.state.running() {
            return Err(not_running(&rec.id).into());
        }
        self.0
            .tasks
            .clone()
            .resize_pty(request(
                &ns,
                ResizePtyRequest {
                    id: rec.id,
                    exec_id: r.exec_id,
                    rows: r.rows,
                    cols: r.cols,
                },
            ))
            .await
            .map_err(Error::service("tasks"))?;
        Ok(Response::new(Empty {}))
    }

    async fn pause(
        &self,
        req: Request<ContainerRef>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let rec = self.0.find(&ns, &req.get_ref().id)?;
        self.0.pause_container(&ns, &rec).await?;
        Ok(Response::new(Empty {}))
    }

    async fn unpause(
        &self,
        req: Request<ContainerRef>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let rec = self.0.find(&ns, &req.get_ref().id)?;
        self.0.unpause_container(&ns, &rec).await?;
        Ok(Response::new(Empty {}))
    }

    async fn top(
        &self,
        req: Request<TopRequest>,
    ) -> std::result::Result<Response<TopResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.into_inner();
        let rec = self.0.find(&ns, &r.id)?;
        if !rec.state.running() {
            return Err(not_running(&rec.id).into());
        }
        let pids: HashSet<u32> = self
            .0
            .tasks
            .clone()
            .pids(request(&ns, PidsRequest { id: rec.id.clone() }))
            .await
            .map_err(Error::service("tasks"))?
            .into_inner()
            .pids
            .into_iter()
            .collect();
        let resp = if r.ps_args.trim().is_empty() || r.ps_args.trim() == "-ef" {
            crate::top::from_proc(&pids)
        } else {
            crate::top::from_ps(&r.ps_args, &pids).await?
        };
        Ok(Response::new(resp))
    }

    type StatsStream = Out<ContainerStats>;

    async fn stats(
        &self,
        req: Request<StatsRequest>,
    ) -> std::result::Result<Response<Self::StatsStream>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.into_inner();
        let rec = self.0.find(&ns, &r.id)?;
        let inner = self.0.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(
            async move {
                loop {
                    let mut s = ContainerStats {
                        id: rec.id.clone(),
                        name: rec.name.clone(),
                        read: berth_common::time::now_rfc3339(),
                        ..Default::default()
                    };
                    let running = get(&inner, &ns, &rec.id).is_some_and(|c| c.state.running());
                    if running {
                        match inner.task_stats(&ns, &rec.id).await {
                            Ok(None) => {}
                            Ok(Some(t)) => {
                                s.cpu_total_ns = t.cpu_total_ns;
                                s.system_cpu_ns = t.system_cpu_ns;
                                s.online_cpus = t.online_cpus;
                                s.memory_usage = t.memory_usage;
                                s.memory_limit = t.memory_limit;
                                s.memory_cache = t.memory_cache;
                                s.net_rx_bytes = t.net_rx_bytes;
                                s.net_tx_bytes = t.net_tx_bytes;
                                s.blkio_read_bytes = t.blkio_read_bytes;
                                s.blkio_write_bytes = t.blkio_write_bytes;
                                s.pids = t.pids;
                            }
                            Err(e) => {
                                let _ = tx.send(Err(Status::from(e))).await;
                                return;
                            }
                        }
                    }
                    if tx.send(Ok(s)).await.is_err() || !r.stream {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = tx.closed() => return,
                    }
                    if get(&inner, &ns, &rec.id).is_none() {
                        return;
                    }
                }
            }
            .in_current_span(),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys() {
        assert_eq!(parse_detach_keys("").unwrap(), vec![16, 17]);
        assert_eq!(parse_detach_keys("ctrl-x,y").unwrap(), vec![24, b'y']);
        assert_eq!(
            parse_detach_keys("ctrl-@,ctrl-[,ctrl-_").unwrap(),
            vec![0, 27, 31]
        );
        assert_eq!(parse_detach_keys("ctrl-A").unwrap(), vec![1]);
        assert!(parse_detach_keys("ctrl-1").is_err());
        assert!(parse_detach_keys("abc").is_err());
        assert!(parse_detach_keys("ctrl-p,,ctrl-q").is_err());
    }

    #[test]
    fn detach_filter() {
        let mut f = DetachFilter::new(vec![16, 17]);
        assert_eq!(f.feed(b"ab"), (b"ab".to_vec(), false));
        // A partial match is held back, then released on mismatch.
        assert_eq!(f.feed(&[16]), (vec![], false));
        assert_eq!(f.feed(b"x"), (vec![16, b'x'], false));
        // Split across chunks.
        assert_eq!(f.feed(&[b'z', 16]), (vec![b'z'], false));
        assert_eq!(f.feed(&[17, b'q']), (vec![], true));
        // Repeated first key.
        let mut f = DetachFilter::new(vec![16, 17]);
        assert_eq!(f.feed(&[16, 16, 17]), (vec![16], true));
        let mut f = DetachFilter::new(vec![]);
        assert_eq!(f.feed(&[16, 17]), (vec![16, 17], false));
    }
}
