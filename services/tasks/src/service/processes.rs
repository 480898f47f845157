//! Interactive I/O, exec, pause and stats of running tasks.
//!
//! Input for the init goes through the shim's `<bundle>/attach.sock`; an
//! exec is a `berth-shim exec` child of this service that joins the init's
//! namespaces and cgroup. Both speak `berth_runtime::frame`.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::tasks::v1::{
    exec_process_request, exec_process_response, stdin_request, ExecExit, ExecOutput,
    ExecProcessRequest, ExecProcessResponse, ExecProcessStart, Status as TaskStatus, TaskStats,
};
use berth_runtime::cgroupfs;
use berth_runtime::frame::{self, Decoder};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::Streaming;
use tracing::warn;

use super::{Task, TasksService};
use crate::error::Error;
use crate::stats;

/// Connects to a shim's attach socket. The bundle path can be longer than a
/// socket address allows, so the socket is reached through an fd of the
/// bundle directory.
pub(super) async fn connect_attach(dir: &Path) -> Result<tokio::net::UnixStream, Error> {
    let d = std::fs::File::open(dir).map_err(Error::io(format!("open {}", dir.display())))?;
    let path = format!("/proc/self/fd/{}/attach.sock", d.as_raw_fd());
    let s = tokio::net::UnixStream::connect(&path).await;
    drop(d);
    s.map_err(Error::io(format!(
        "connect to {}/attach.sock",
        dir.display()
    )))
}

fn u16_size(v: u32) -> u16 {
    v.min(u16::MAX as u32) as u16
}

impl TasksService {
    /// The task, which must be running (not paused when `allow_paused` is
    /// false), and its init pid.
    pub(super) fn running(
        &self,
        ns: &str,
        id: &str,
        allow_paused: bool,
    ) -> Result<(Arc<Task>, u32), Error> {
        let task = self.get(ns, id)?;
        let (status, pid) = {
            let inner = task.inner.lock().unwrap();
            task.check_known(&inner)?;
            (inner.status, inner.pid)
        };
        if status == TaskStatus::Paused as i32 && !allow_paused {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is paused, unpause the container before exec"
            )));
        }
        if (status != TaskStatus::Running as i32 && status != TaskStatus::Paused as i32) || pid == 0
        {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        Ok((task, pid))
    }

    async fn send_to_shim(&self, ns: &str, id: &str, data: &[u8]) -> Result<(), Error> {
        let (task, _) = self.running(ns, id, true)?;
        let mut s = connect_attach(&task.bundle.dir).await?;
        s.write_all(data)
            .await
            .map_err(Error::io(format!("write to the shim of {id}")))?;
        let _ = s.shutdown().await;
        Ok(())
    }

    pub(super) async fn attach_stdin(
        &self,
        ns: &str,
        mut input: Streaming<berth_proto::tasks::v1::StdinRequest>,
    ) -> Result<(), Error> {
        let id = match input.next().await {
            Some(Ok(m)) => match m.payload {
                Some(stdin_request::Payload::Id(id)) => id,
                _ => {
                    return Err(Error::InvalidArgument(
                        "the first message must name the task".into(),
                    ))
                }
            },
            Some(Err(s)) => return Err(Error::Internal(format!("reading input: {s}"))),
            None => return Ok(()),
        };
        let (task, _) = self.running(ns, &id, true)?;
        let mut sock = connect_attach(&task.bundle.dir).await?;
        while let Some(msg) = input.next().await {
            let Ok(msg) = msg else { break };
            let data = match msg.payload {
                Some(stdin_request::Payload::Data(d)) => frame::encode(frame::STDIN, &d),
                Some(stdin_request::Payload::Close(true)) => frame::encode(frame::CLOSE_STDIN, b""),
                Some(stdin_request::Payload::Resize(r)) => {
                    frame::resize(u16_size(r.rows), u16_size(r.cols))
                }
                _ => continue,
            };
            if sock.write_all(&data).await.is_err() {
                break; // the container exited
            }
        }
        Ok(())
    }

    pub(super) async fn resize_pty(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
        rows: u32,
        cols: u32,
    ) -> Result<(), Error> {
        let data = frame::resize(u16_size(rows), u16_size(cols));
        if exec_id.is_empty() {
            return self.send_to_shim(ns, id, &data).await;
        }
        let tx = self
            .execs
            .lock()
            .unwrap()
            .get(&(ns.to_string(), id.to_string(), exec_id.to_string()))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("{id} exec {exec_id}")))?;
        tx.send(data)
            .await
            .map_err(|_| Error::FailedPrecondition(format!("exec {exec_id} has exited")))
    }

    pub(super) async fn close_stdin(&self, ns: &str, id: &str) -> Result<(), Error> {
        self.send_to_shim(ns, id, &frame::encode(frame::CLOSE_STDIN, b""))
            .await
    }

    pub(super) async fn exec(
        &self,
        ns: &str,
        mut input: Streaming<ExecProcessRequest>,
    ) -> Result<mpsc::Receiver<Result<ExecProcessResponse, tonic::Status>>, Error> {
        let start: ExecProcessStart = match input.next().await {
            Some(Ok(ExecProcessRequest {
                payload: Some(exec_process_request::Payload::Start(s)),
            })) => s,
            _ => {
                return Err(Error::InvalidArgument(
                    "the first message must be `start`".into(),
                ))
            }
        };
        if start.args.is_empty() {
            return Err(Error::InvalidArgument("no command given".into()));
        }
        let (task, pid) = self.running(ns, &start.id, false)?;
        let key = (ns.to_string(), start.id.clone(), start.exec_id.clone());
        let process = serde_json::json!({
            "args": start.args,
            "env": start.env,
            "cwd": start.cwd,
            "user": start.user,
            "terminal": start.terminal,
            "stdin": start.stdin,
            "rows": start.size.as_ref().map_or(0, |s| u16_size(s.rows)),
            "cols": start.size.as_ref().map_or(0, |s| u16_size(s.cols)),
        });
        let mut child = tokio::process::Command::new(&self.shim)
            .arg("exec")
            .arg("--pid")
            .arg(pid.to_string())
            .arg("--bundle")
            .arg(&task.bundle.dir)
            .arg("--process")
            .arg(process.to_string())
            // systemd's notification socket is berth-tasks' own.
            .env_remove(berth_common::notify::NOTIFY_SOCKET_ENV)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map_err(Error::io(format!("run {} exec", self.shim.display())))?;
        let mut stdin = child.stdin.take();
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Internal("exec shim has no stdout".into()))?;

        // Control frames for the exec shim: from the request stream and
        // from ResizePty.
        let (ctl_tx, mut ctl_rx) = mpsc::channel::<Vec<u8>>(64);
        if !start.exec_id.is_empty() {
            self.execs
                .lock()
                .unwrap()
                .insert(key.clone(), ctl_tx.clone());
        }
        tokio::spawn(async move {
            while let Some(data) = ctl_rx.recv().await {
                let Some(w) = stdin.as_mut() else { break };
                if w.write_all(&data).await.is_err() {
                    break;
                }
            }
            // The channel ends only after the exec exited (the reader below
            // holds a sender until then), so the pipe stays open while the
            // exec lives: a gone client is not "close stdin".
            drop(stdin);
        });
        {
            let ctl_tx = ctl_tx.clone();
            tokio::spawn(async move {
                while let Some(Ok(msg)) = input.next().await {
                    let data = match msg.payload {
                        Some(exec_process_request::Payload::Stdin(d)) => {
                            frame::encode(frame::STDIN, &d)
                        }
                        Some(exec_process_request::Payload::CloseStdin(true)) => {
                            frame::encode(frame::CLOSE_STDIN, b"")
                        }
                        Some(exec_process_request::Payload::Resize(r)) => {
                            frame::resize(u16_size(r.rows), u16_size(r.cols))
                        }
                        _ => continue,
                    };
                    if ctl_tx.send(data).await.is_err() {
                        break;
                    }
                }
            });
        }
        let (tx, rx) = mpsc::channel(64);
        let execs = self.execs.clone();
        tokio::spawn(async move {
            let mut decoder = Decoder::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut exit = None;
            'read: loop {
                let n = match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                decoder.push(&buf[..n]);
                loop {
                    let f = match decoder.next_frame() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => {
                            warn!("exec shim output: {e}");
                            break 'read;
                        }
                    };
                    let payload = match f.kind {
                        frame::STARTED if f.payload.len() == 4 => {
                            exec_process_response::Payload::Started(u32::from_be_bytes([
                                f.payload[0],
                                f.payload[1],
                                f.payload[2],
                                f.payload[3],
                            ]))
                        }
                        frame::STDOUT | frame::STDERR => {
                            exec_process_response::Payload::Output(ExecOutput {
                                stream: if f.kind == frame::STDOUT { 1 } else { 2 },
                                data: f.payload,
                            })
                        }
                        frame::EXIT => {
                            let (status, error) =
                                frame::parse_exit(&f.payload).unwrap_or((255, String::new()));
                            exit = Some(ExecExit {
                                exit_status: status as u32,
                                error,
                            });
                            continue;
                        }
                        _ => continue,
                    };
                    // A gone client only stops the forwarding.
                    let _ = tx
                        .send(Ok(ExecProcessResponse {
                            payload: Some(payload),
                        }))
                        .await;
                }
            }
            let _ = child.wait().await;
            execs.lock().unwrap().remove(&key);
            drop(ctl_tx);
            let exit = exit.unwrap_or(ExecExit {
                exit_status: 255,
                error: "exec shim exited without an exit status".into(),
            });
            let _ = tx
                .send(Ok(ExecProcessResponse {
                    payload: Some(exec_process_response::Payload::Exit(exit)),
                }))
                .await;
        });
        Ok(rx)
    }

    /// Freeze (`pause`) or thaw the task's cgroup and wait until the kernel
    /// reports it done.
    pub(super) async fn set_frozen(&self, ns: &str, id: &str, freeze: bool) -> Result<(), Error> {
        let (task, pid) = self.running(ns, id, true)?;
        let status = task.inner.lock().unwrap().status;
        if freeze && status == TaskStatus::Paused as i32 {
            return Ok(());
        }
        if !freeze && status != TaskStatus::Paused as i32 {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not paused"
            )));
        }
        let dirs = cgroupfs::of_pid(pid as i32);
        let v1 =
            cgroupfs::controller_dir(&dirs, "freezer").filter(|d| d.join("freezer.state").exists());
        let is_v1 = v1.is_some();
        let (file, want, value, check): (PathBuf, &str, &str, PathBuf) = match v1 {
            Some(d) => (
                d.join("freezer.state"),
                if freeze { "FROZEN" } else { "THAWED" },
                if freeze { "FROZEN" } else { "THAWED" },
                d.join("freezer.state"),
            ),
            None => {
                let d = dirs
                    .iter()
                    .find(|(c, p)| c.is_empty() && p.join("cgroup.freeze").exists())
                    .map(|(_, p)| p.clone())
                    .ok_or_else(|| {
                        Error::FailedPrecondition(format!(
                            "no freezer cgroup found for container {id}"
                        ))
                    })?;
                (
                    d.join("cgroup.freeze"),
                    if freeze { "frozen 1" } else { "frozen 0" },
                    if freeze { "1" } else { "0" },
                    d.join("cgroup.events"),
                )
            }
        };
        for _ in 0..500 {
            std::fs::write(&file, value).map_err(Error::io(format!("write {}", file.display())))?;
            let now = std::fs::read_to_string(&check)
                .map_err(Error::io(format!("read {}", check.display())))?;
            if now.lines().any(|l| l.trim() == want) {
                task.inner.lock().unwrap().status = if freeze {
                    TaskStatus::Paused as i32
                } else {
                    TaskStatus::Running as i32
                };
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if freeze {
            let _ = std::fs::write(&file, if is_v1 { "THAWED" } else { "0" });
        }
        Err(Error::Internal(format!(
            "container {id}: the cgroup did not become {want}"
        )))
    }

    pub(super) fn stats(&self, ns: &str, id: &str) -> Result<TaskStats, Error> {
        let (_, pid) = self.running(ns, id, true)?;
        stats::collect(pid as i32)
            .ok_or_else(|| Error::FailedPrecondition(format!("container {id} is not running")))
    }

    /// The stats of those of `ids` that run (or are paused), by id.
    pub(super) async fn stats_batch(
        &self,
        ns: &str,
        ids: Vec<String>,
    ) -> Result<HashMap<String, TaskStats>, Error> {
        let pids: Vec<(String, u32)> = ids
            .into_iter()
            .filter_map(|id| {
                let (_, pid) = self.running(ns, &id, true).ok()?;
                Some((id, pid))
            })
            .collect();
        tokio::task::spawn_blocking(move || {
            let host = stats::Host::read();
            pids.into_iter()
                .filter_map(|(id, pid)| Some((id, stats::collect_with(pid as i32, &host)?)))
                .collect()
        })
        .await
        .map_err(|e| Error::Internal(format!("stats: {e}")))
    }
}

/// Whether the task's cgroup is frozen (after a restart of this service),
/// given this process's mountinfo.
pub(super) fn is_frozen(pid: i32, mountinfo: &str) -> bool {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let dirs = cgroupfs::cgroup_dirs(&cg, mountinfo);
    if let Some(d) = cgroupfs::controller_dir(&dirs, "freezer") {
        if let Ok(s) = std::fs::read_to_string(d.join("freezer.state")) {
            return s.trim() == "FROZEN";
        }
        if let Ok(s) = std::fs::read_to_string(d.join("cgroup.events")) {
            return s.lines().any(|l| l.trim() == "frozen 1");
        }
    }
    false
}
