//! The Containers service: container lifecycle orchestration.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use berth_common::request;
use berth_proto::gateway::v1::containers_server::Containers;
use berth_proto::gateway::v1::{
    attach_response, AttachRequest, AttachResponse, ContainerRef, ContainerSummary,
    CreateContainerRequest, CreateContainerResponse, Empty, ExitStatus, InspectResponse,
    KillContainerRequest, ListContainersRequest, ListContainersResponse, LogEntry, LogsRequest,
    PruneContainersRequest, PruneContainersResponse, RemoveContainerRequest,
    RenameContainerRequest, StartContainerResponse, StopContainerRequest, WaitContainerRequest,
    WaitContainerResponse,
};
use berth_proto::network::v1::DetachRequest as NetDetach;
use berth_proto::snapshots::v1::{PrepareRequest, RemoveRequest};
use berth_proto::tasks::v1::{
    CreateTaskRequest, DeleteRequest, KillRequest, StartRequest, WaitRequest, WatchOomRequest,
};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use tracing::{info, warn};

use crate::container::{
    new_id, random_name, validate_name, ContainerConfig, ContainerRecord, HostConfig, State,
};
use crate::error::{Error, Result};
use crate::lifecycle;
use crate::logs::{self, Tailer};
use crate::spec;
use crate::{Event, EventKind, Inner};

/// How long Stop and Remove wait for a killed container to go.
const KILL_WAIT: Duration = Duration::from_secs(30);

/// Parses a signal given as a number or a name ("KILL", "SIGKILL", "kill").
pub fn parse_signal(s: &str) -> Result<i32> {
    if s.is_empty() {
        return Ok(libc::SIGKILL);
    }
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        return Err(Error::InvalidArgument(format!("Invalid signal: {s}")));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .map(|sig| sig as i32)
        .map_err(|_| Error::InvalidArgument(format!("Invalid signal: {s}")))
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect()
    })
}

fn env_key(e: &str) -> &str {
    e.split_once('=').map_or(e, |(k, _)| k)
}

/// Merges `extra` into `base`, replacing variables of the same name.
fn merge_env(base: Vec<String>, extra: &[String]) -> Vec<String> {
    let mut out = base;
    for e in extra {
        match out.iter_mut().find(|x| env_key(x) == env_key(e)) {
            Some(x) => *x = e.clone(),
            None => out.push(e.clone()),
        }
    }
    out
}

impl Inner {
    pub(crate) fn op_lock(&self, ns: &str, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.op_locks
            .lock()
            .unwrap()
            .entry((ns.to_string(), id.to_string()))
            .or_default()
            .clone()
    }

    /// Finds a container by ID, name or unique ID prefix.
    pub(crate) fn find(&self, ns: &str, r: &str) -> Result<ContainerRecord> {
        let found = self.find_record(ns, r);
        if let Ok(c) = &found {
            berth_common::grpc::record_container(&c.id);
        }
        found
    }

    fn find_record(&self, ns: &str, r: &str) -> Result<ContainerRecord> {
        let map = self.containers.lock().unwrap();
        let name = r.strip_prefix('/').unwrap_or(r);
        if let Some(c) = map.get(&(ns.to_string(), r.to_string())) {
            return Ok(c.clone());
        }
        if let Some(c) = map.values().find(|c| c.namespace == ns && c.name == name) {
            return Ok(c.clone());
        }
        if !r.is_empty() {
            let matches: Vec<&ContainerRecord> = map
                .values()
                .filter(|c| c.namespace == ns && c.id.starts_with(r))
                .collect();
            if matches.len() > 1 {
                return Err(Error::InvalidArgument(format!(
                    "Multiple IDs found with provided prefix: {r}"
                )));
            }
            if let Some(c) = matches.first() {
                return Ok((*c).clone());
            }
        }
        Err(Error::NotFound(format!("No such container: {r}")))
    }

    /// Asks berth-network to tear down everything of container `id`.
    pub(crate) async fn net_detach(&self, ns: &str, id: &str) -> std::result::Result<(), Status> {
        self.network
            .clone()
            .detach(request(
                ns,
                NetDetach {
                    container_id: id.to_string(),
                },
            ))
            .await
            .map(|_| ())
    }

    pub(crate) fn get(&self, ns: &str, id: &str) -> Option<ContainerRecord> {
        self.containers
            .lock()
            .unwrap()
            .get(&(ns.to_string(), id.to_string()))
            .cloned()
    }

    /// Changes a record in memory and in the store.
    pub(crate) fn update(
        &self,
        ns: &str,
        id: &str,
        durable: bool,
        f: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord> {
        let rec = {
            let mut map = self.containers.lock().unwrap();
            let rec = map
                .get_mut(&(ns.to_string(), id.to_string()))
                .ok_or_else(|| Error::NotFound(format!("No such container: {id}")))?;
            f(rec);
            rec.clone()
        };
        self.store.put(&rec, durable)?;
        Ok(rec)
    }

    /// Changes several records in memory and in the store, in one
    /// transaction. Records that are gone are skipped.
    pub(crate) fn update_many(
        &self,
        keys: &[(String, String)],
        durable: bool,
        mut f: impl FnMut(usize, &mut ContainerRecord),
    ) -> Result<()> {
        let recs: Vec<ContainerRecord> = {
            let mut map = self.containers.lock().unwrap();
            keys.iter()
                .enumerate()
                .filter_map(|(i, k)| {
                    map.get_mut(k).map(|rec| {
                        f(i, rec);
                        rec.clone()
                    })
                })
                .collect()
        };
        self.store.put_many(&recs, durable)
    }

    fn publish(&self, ns: &str, id: &str, kind: EventKind) {
        let _ = self.events.send(Event {
            ns: ns.to_string(),
            id: id.to_string(),
            kind,
        });
    }

    async fn create_container(
        &self,
        ns: &str,
        req: CreateContainerRequest,
    ) -> Result<CreateContainerResponse> {
        // Host settings first, as docker's verifyContainerSettings.
        let (mut resources, mut warnings) = crate::resources::check(
            req.resources.as_ref(),
            req.oom_score_adj,
            &crate::resources::MemoryInfo::detect(),
        )
        .map_err(Error::InvalidArgument)?;
        crate::resources::check_cpu_io(
            req.resources.as_ref(),
            &crate::resources::CpuIoInfo::detect(),
            &mut resources,
            &mut warnings,
        )
        .map_err(Error::InvalidArgument)?;
        let (image, _) = self.resolve_image(ns, &req.image).await?;
        berth_common::grpc::record_image(&req.image, Some(&image.id));
        let mut name = req.name.trim_start_matches('/').to_string();
        if !name.is_empty() {
            validate_name(&name).map_err(Error::InvalidArgument)?;
        }
        let (network_mode, networks) = self.plan_network(ns, &req).await?;
        let network_mode = network_mode.as_str();
        let mut port_bindings = Vec::new();
        for p in &req.publish {
            port_bindings
                .extend(crate::networking::parse_publish(p).map_err(Error::InvalidArgument)?);
        }
        if network_mode == "host" && !port_bindings.is_empty() {
            warnings.push("Published ports are discarded when using host network mode".into());
            port_bindings.clear();
        }
        let mut extra_exposed = Vec::new();
        for e in &req.expose {
            extra_exposed
                .extend(crate::networking::parse_expose(e).map_err(Error::InvalidArgument)?);
        }
        let icfg = image.runtime_config().clone();
        let mut exposed_ports: Vec<String> = icfg["ExposedPorts"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for p in extra_exposed.into_iter().chain(
            port_bindings
                .iter()
                .map(|b| format!("{}/{}", b.container_port, b.proto)),
        ) {
            if !exposed_ports.contains(&p) {
                exposed_ports.push(p);
            }
        }
        exposed_ports.sort();
        let id = new_id();
        berth_common::grpc::record_container(&id);
        // Docker's rules: an explicit entrypoint drops the image's Cmd.
        let (entrypoint, cmd) = match &req.entrypoint {
            Some(ep) => (
                Some(ep.values.clone()),
                req.cmd.as_ref().map(|c| c.values.clone()),
            ),
            None => (
                strings(&icfg["Entrypoint"]),
                match &req.cmd {
                    Some(c) if !c.values.is_empty() => Some(c.values.clone()),
                    _ => strings(&icfg["Cmd"]),
                },
            ),
        };
        let argv: Vec<String> = entrypoint
            .iter()
            .flatten()
            .chain(cmd.iter().flatten())
            .cloned()
            .collect();
        if argv.is_empty() {
            return Err(Error::InvalidArgument("No command specified".into()));
        }
        let mut env = strings(&icfg["Env"]).unwrap_or_default();
        if !env.iter().any(|e| env_key(e) == "PATH") {
            env.insert(0, format!("PATH={}", spec::DEFAULT_PATH));
        }
        for e in &req.env {
            if env_key(e).is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "invalid environment variable: {e}"
                )));
            }
        }
        let env = merge_env(env, &req.env);
        let mut labels: BTreeMap<String, String> = icfg["Labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        labels.extend(req.labels.clone());
        let hostname = if !req.hostname.is_empty() {
            req.hostname.clone()
        } else if network_mode == "host" {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| id[..12].to_string())
        } else {
            id[..12].to_string()
        };
        if hostname.len() > 64 || hostname.contains(['/', ' ', '\0']) {
            return Err(Error::InvalidArgument(format!(
                "invalid hostname {hostname:?}"
            )));
        }
        let working_dir = if req.working_dir.is_empty() {
            icfg["WorkingDir"].as_str().unwrap_or_default().to_string()
        } else {
            req.working_dir.clone()
        };
        if !working_dir.is_empty() && !working_dir.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "the working directory '{working_dir}' is invalid, it needs to be an absolute path"
            )));
        }
        let user = if req.user.is_empty() {
            icfg["User"].as_str().unwrap_or_default().to_string()
        } else {
            req.user.clone()
        };
        let stop_signal = if req.stop_signal.is_empty() {
            icfg["StopSignal"].as_str().unwrap_or_default().to_string()
        } else {
            req.stop_signal.clone()
        };
        if !stop_signal.is_empty() {
            parse_signal(&stop_signal)?;
        }
        let restart_policy = lifecycle::parse_restart_policy(&req.restart_policy)?;
        berth_common::logopts::parse_json_file_opts(&req.log_opts)
            .map_err(Error::InvalidArgument)?;
        if req.auto_remove && !restart_policy.name.is_empty() {
            return Err(Error::InvalidArgument(
                "can't create 'AutoRemove' container with restart policy".into(),
            ));
        }

        let planned = self.plan_mounts(ns, &req, &icfg)?;

        // Reserve the name and the record before doing anything on disk.
        let dir = self.root.join("containers").join(&id);
        let rec = {
            let mut map = self.containers.lock().unwrap();
            if name.is_empty() {
                loop {
                    let n = random_name();
                    if !map.values().any(|c| c.namespace == ns && c.name == n) {
                        name = n;
                        break;
                    }
                }
            } else if let Some(c) = map.values().find(|c| c.namespace == ns && c.name == name) {
                return Err(Error::Conflict(format!(
                    "Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                    c.id
                )));
            }
            let rec = ContainerRecord {
                id: id.clone(),
                namespace: ns.to_string(),
                name: name.clone(),
                created: berth_common::time::now_rfc3339(),
                image_id: image.id.clone(),
                path: argv[0].clone(),
                args: argv[1..].to_vec(),
                config: ContainerConfig {
                    hostname,
                    user,
                    env,
                    cmd,
                    entrypoint,
                    working_dir,
                    labels,
                    stop_signal,
                    stop_timeout: req.stop_timeout,
                    image: req.image.clone(),
                    tty: req.tty,
                    open_stdin: req.open_stdin,
                    stdin_once: req.stdin_once,
                    volumes: planned.config_volumes,
                    exposed_ports,
                },
                host_config: HostConfig {
                    auto_remove: req.auto_remove,
                    network_mode: network_mode.to_string(),
                    restart_policy,
                    read_only: req.read_only,
                    init: req.init,
                    log_opts: req
                        .log_opts
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    resources,
                    oom_score_adj: req.oom_score_adj,
                    binds: req.binds.clone(),
                    tmpfs: req.tmpfs.clone().into_iter().collect(),
                    mounts: planned.inspect_mounts,
                    volumes_from: req.volumes_from.clone(),
                    port_bindings,
                    publish_all: req.publish_all,
                    networks,
                    dns: req.dns.clone(),
                    dns_search: req.dns_search.clone(),
                    dns_options: req.dns_options.clone(),
                    extra_hosts: req.extra_hosts.clone(),
                    links: req.links.clone(),
                },
                state: State {
                    status: "created".into(),
                    ..Default::default()
                },
                snapshot_key: id.clone(),
                dir: dir.to_string_lossy().into_owned(),
                restart_count: 0,
                removing: true, // not visible as usable until set up
                manually_stopped: false,
                restart_delay_ms: 0,
                mount_points: planned.points,
                net: None,
            };
            map.insert((ns.to_string(), id.clone()), rec.clone());
            rec
        };
        let mut made_volumes = Vec::new();
        let setup = async {
            self.make_mounts(ns, &rec.mount_points, &mut made_volumes)
                .await?;
            let top = self.ensure_unpacked(ns, &image).await?;
            self.snapshots
                .clone()
                .prepare(request(
                    ns,
                    PrepareRequest {
                        key: rec.snapshot_key.clone(),
                        parent: top,
                        labels: Default::default(),
                    },
                ))
                .await
                .map_err(Error::service("snapshots"))?;
            std::fs::create_dir_all(&dir)
                .map_err(Error::io(format!("create {}", dir.display())))?;
            std::fs::write(dir.join("hostname"), format!("{}\n", rec.config.hostname))
                .map_err(Error::io("write hostname"))?;
            let hosts = if network_mode == "host" {
                std::fs::read_to_string("/etc/hosts")
                    .unwrap_or_else(|_| crate::networking::LOCALHOST_LINES.to_string())
            } else {
                crate::networking::LOCALHOST_LINES.to_string()
            };
            std::fs::write(dir.join("hosts"), hosts).map_err(Error::io("write hosts"))?;
            let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            std::fs::write(dir.join("resolv.conf"), resolv)
                .map_err(Error::io("write resolv.conf"))?;
            std::fs::File::create(rec.log_path()).map_err(Error::io("create log file"))?;
            for m in rec.mount_points.iter().filter(|m| m.copy_up) {
                self.fill_volume(ns, &rec, &m.destination, std::path::Path::new(&m.source))
                    .await?;
            }
            let mut done = rec.clone();
            done.removing = false;
            self.store.put(&done, true)?;
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = setup {
            // Leave nothing behind.
            self.containers
                .lock()
                .unwrap()
                .remove(&(ns.to_string(), id.clone()));
            let _ = self
                .snapshots
                .clone()
                .remove(request(
                    ns,
                    RemoveRequest {
                        key: rec.snapshot_key.clone(),
                    },
                ))
                .await;
            let _ = std::fs::remove_dir_all(&dir);
            self.drop_volumes(ns, &made_volumes).await;
            return Err(e);
        }
        if let Some(r) = self
            .containers
            .lock()
            .unwrap()
            .get_mut(&(ns.to_string(), id.clone()))
        {
            r.removing = false;
        }
        self.emit_container(ns, &id, "create", &[]);
        info!(id = %id, name = %name, "created container");
        for w in &warnings {
            warn!(id = %id, "{w}");
        }
        Ok(CreateContainerResponse { id, warnings })
    }

    pub(crate) async fn start_container(self: &Arc<Self>, ns: &str, r: &str) -> Result<()> {
        let id = self.find(ns, r)?.id;
        let lock = self.op_lock(ns, &id);
        let _guard = lock.lock().await;
        let rec = self
            .get(ns, &id)
            .ok_or_else(|| Error::NotFound(format!("No such container: {r}")))?;
        if rec.removing {
            return Err(Error::FailedPrecondition(format!(
                "container {r} is being removed"
            )));
        }
        if rec.state.running() {
            return Ok(());
        }
        // A volume whose file system failed to mount at start-up is not
        // used as a bare directory.
        for m in rec.mount_points.iter().filter(|m| m.kind == "volume") {
            self.ensure_volume_mounted(ns, &m.name)?;
        }
        // Leftovers of an earlier run.
        let _ = self
            .tasks
            .clone()
            .delete(request(ns, DeleteRequest { id: id.clone() }))
            .await;

        // Leftovers of a teardown that could not finish (berth-network was
        // away when the last run ended).
        let _ = self.net_detach(ns, &id).await;
        let netns = self.attach_container(ns, &rec).await?;
        let result = async {
            let mounts = self.snapshot_mounts(ns, &rec).await?;
            let identity = spec::resolve_user(&rec.config.user, &spec::layer_dirs(&mounts))?;
            let spec = spec::build(&rec, &identity, Some(&netns));
            let log_opts = berth_common::logopts::parse_json_file_opts(
                &rec.host_config.log_opts.clone().into_iter().collect(),
            )
            .map_err(Error::InvalidArgument)?;
            self.tasks
                .clone()
                .create(request(
                    ns,
                    CreateTaskRequest {
                        id: id.clone(),
                        spec: serde_json::to_vec(&spec)
                            .map_err(|e| Error::Internal(e.to_string()))?,
                        rootfs: mounts,
                        log_path: rec.log_path(),
                        open_stdin: rec.config.open_stdin,
                        log_max_size: log_opts.max_size.unwrap_or(0),
                        log_max_files: log_opts.max_file,
                    },
                ))
                .await
                .map_err(Error::service("tasks"))?;
            let pid = self
                .tasks
                .clone()
                .start(request(ns, StartRequest { id: id.clone() }))
                .await
                .map_err(Error::service("tasks"))?
                .into_inner()
                .pid;
            Ok::<u32, Error>(pid)
        }
        .await;
        match result {
            Ok(pid) => {
                self.update(ns, &id, false, |c| {
                    c.state = State {
                        status: "running".into(),
                        pid,
                        started_at: berth_common::time::now_rfc3339(),
                        finished_at: c.state.finished_at.clone(),
                        ..Default::default()
                    };
                })?;
                self.emit_container(ns, &id, "start", &[]);
                self.publish(ns, &id, EventKind::Start);
                self.clone().spawn_watcher(ns.to_string(), id.clone());
                self.clone()
                    .spawn_oom_watcher(ns.to_string(), id.clone(), pid);
                Ok(())
            }
            Err(e) => {
                let _ = self
                    .tasks
                    .clone()
                    .delete(request(ns, DeleteRequest { id: id.clone() }))
                    .await;
                let _ = self.net_detach(ns, &id).await;
                let (code, msg) = match &e {
                    Error::Exec { exit_code, message } => (*exit_code, message.clone()),
                    other => (128, other.to_string()),
                };
                let _ = self.update(ns, &id, false, |c| {
                    c.state.exit_code = code;
                    c.state.error = msg;
                    // The network was torn down with the failed start.
                    c.net = None;
                });
                if rec.host_config.auto_remove {
                    // --rm: a container that could not start is not kept.
                    self.destroy(ns, &rec, true).await;
                    self.publish(ns, &id, EventKind::Destroy);
                }
                Err(e)
            }
        }
    }

    pub(crate) fn spawn_watcher(self: Arc<Self>, ns: String, id: String) {
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                match self
                    .tasks
                    .clone()
                    .wait(request(&ns, WaitRequest { id: id.clone() }))
                    .await
                {
                    Ok(r) => {
                        let r = r.into_inner();
                        self.handle_exit(&ns, &id, r.exit_status as i64, r.exited_at, r.oom_kills)
                            .await;
                        return;
                    }
                    Err(s) if s.code() == Code::NotFound => {
                        self.handle_exit(&ns, &id, 255, berth_common::time::now_rfc3339(), 0)
                            .await;
                        return;
                    }
                    Err(s) => {
                        // berth-tasks may be restarting; it finds its shims again.
                        warn!(id = %id, "waiting for task: {s}; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                        if self.get(&ns, &id).is_none_or(|c| !c.state.running()) {
                            return;
                        }
                    }
                }
            }
        });
    }

    /// Follows the OOM kills of a running container (berth-tasks
    /// WatchOom) and records each new one as an `oom` event with
    /// State.OOMKilled set, while the container runs as `pid`. The exit
    /// path records kills this stream has not reported yet.
    pub(crate) fn spawn_oom_watcher(self: Arc<Self>, ns: String, id: String, pid: u32) {
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            let same_run = |inner: &Inner| {
                inner
                    .get(&ns, &id)
                    .is_some_and(|c| c.state.running() && c.state.pid == pid)
            };
            loop {
                let stream = self
                    .tasks
                    .clone()
                    .watch_oom(request(&ns, WatchOomRequest { id: id.clone() }))
                    .await;
                let mut stream = match stream {
                    Ok(s) => s.into_inner(),
                    Err(s) if s.code() == Code::NotFound => return,
                    Err(s) => {
                        warn!(id = %id, "watching OOM kills: {s}; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                        if !same_run(&self) {
                            return;
                        }
                        continue;
                    }
                };
                loop {
                    match stream.message().await {
                        Ok(Some(ev)) => {
                            let mut new = false;
                            let _ = self.update(&ns, &id, false, |c| {
                                if c.state.running()
                                    && c.state.pid == pid
                                    && ev.oom_kills > c.state.oom_kills
                                {
                                    c.state.oom_kills = ev.oom_kills;
                                    c.state.oom_killed = true;
                                    new = true;
                                }
                            });
                            if new {
                                info!(id = %id, kills = ev.oom_kills, "container OOM-killed");
                                self.emit_container(&ns, &id, "oom", &[]);
                            }
                        }
                        // The task exited: the exit path has the rest.
                        Ok(None) => return,
                        Err(s) => {
                            if !same_run(&self) {
                                return;
                            }
                            warn!(id = %id, "OOM watch ended: {s}; retrying");
                            tokio::time::sleep(delay).await;
                            break;
                        }
                    }
                }
            }
        });
    }

    pub(crate) async fn handle_exit(
        self: &Arc<Self>,
        ns: &str,
        id: &str,
        code: i64,
        exited_at: String,
        oom_kills: u32,
    ) {
        let exited_at = if exited_at.is_empty() {
            berth_common::time::now_rfc3339()
        } else {
            exited_at
        };
        let mut restart_in = None;
        let mut new_oom = false;
        // Durable: the task (and the exit file in its bundle) is deleted
        // next, so after a crash this record is the only place the exit is
        // known. Not for --rm, whose record is deleted (durably) right after.
        let durable = self.get(ns, id).is_none_or(|c| !c.host_config.auto_remove);
        let rec = match self.update(ns, id, durable, |c| {
            // Kills the live watch did not report yet (the init's own,
            // usually): docker's `oom` comes before `die`.
            if oom_kills > c.state.oom_kills {
                c.state.oom_kills = oom_kills;
                c.state.oom_killed = true;
                new_oom = true;
            }
            c.state.status = "exited".into();
            c.state.pid = 0;
            c.state.exit_code = code;
            c.state.finished_at = exited_at.clone();
            c.net = None;
            restart_in = lifecycle::after_exit(c);
        }) {
            Ok(r) => r,
            Err(e) => {
                warn!(id, "recording exit: {e}");
                return;
            }
        };
        info!(
            id,
            code,
            oom_killed = rec.state.oom_killed,
            "container exited"
        );
        if new_oom {
            self.emit_container(ns, id, "oom", &[]);
        }
        self.emit_container(ns, id, "die", &[("exitCode", code.to_string())]);
        let _ = self
            .tasks
            .clone()
            .delete(request(ns, DeleteRequest { id: id.to_string() }))
            .await;
        if let Err(s) = self.net_detach(ns, id).await {
            // The next start clears what is left.
            warn!(id, "network teardown: {}", s.message());
        }
        if rec.host_config.auto_remove {
            self.destroy(ns, &rec, true).await;
            self.publish(ns, id, EventKind::Die(code));
            self.publish(ns, id, EventKind::Destroy);
        } else {
            self.publish(ns, id, EventKind::Die(code));
            if let Some(delay) = restart_in {
                self.clone()
                    .spawn_restart(ns.to_string(), id.to_string(), delay);
            }
        }
    }

    /// Removes a stopped container's snapshot, files and record, and with
    /// `volumes` its anonymous volumes that no other container uses.
    /// Idempotent.
    async fn destroy(&self, ns: &str, rec: &ContainerRecord, volumes: bool) {
        self.emit_container(ns, &rec.id, "destroy", &[]);
        if let Err(s) = self
            .snapshots
            .clone()
            .remove(request(
                ns,
                RemoveRequest {
                    key: rec.snapshot_key.clone(),
                },
            ))
            .await
        {
            if s.code() != Code::NotFound {
                warn!(id = %rec.id, "removing snapshot: {s}");
            }
        }
        let _ = std::fs::remove_dir_all(&rec.dir);
        if let Err(e) = self.store.delete(ns, &rec.id) {
            warn!(id = %rec.id, "removing record: {e}");
        }
        self.containers
            .lock()
            .unwrap()
            .remove(&(ns.to_string(), rec.id.clone()));
        self.op_locks
            .lock()
            .unwrap()
            .remove(&(ns.to_string(), rec.id.clone()));
        if volumes {
            for m in rec.mount_points.iter().filter(|m| m.anonymous) {
                if let Err(e) = self.remove_volume(ns, &m.name, true).await {
                    info!(id = %rec.id, volume = %m.name, "anonymous volume kept: {e}");
                }
            }
        }
    }

    /// Waits until the container is no longer running, up to `limit`.
    async fn wait_stopped(
        &self,
        ns: &str,
        id: &str,
        rx: &mut broadcast::Receiver<Event>,
        limit: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.get(ns, id).is_none_or(|c| !c.state.running()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => return false,
                Ok(Ok(ev))
                    if ev.ns == ns && ev.id == id && matches!(ev.kind, EventKind::Die(_)) =>
                {
                    return true
                }
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) => return false,
            }
        }
    }

    async fn signal(&self, ns: &str, id: &str, sig: i32) -> Result<()> {
        // A paused container is thawed first, like docker.
        crate::processes::thaw_for_signal(self, ns, id).await;
        match self
            .tasks
            .clone()
            .kill(request(
                ns,
                KillRequest {
                    id: id.to_string(),
                    signal: sig as u32,
                    all: false,
                },
            ))
            .await
        {
            Ok(_) => Ok(()),
            // It exited meanwhile.
            Err(s) if s.code() == Code::FailedPrecondition || s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(Error::service("tasks")(s)),
        }
    }

    pub(crate) async fn stop_container(
        &self,
        ns: &str,
        r: &str,
        timeout: Option<i32>,
    ) -> Result<()> {
        let rec = self.find(ns, r)?;
        self.mark_stopped_by_user(ns, &rec.id);
        if !rec.state.running() {
            return Ok(());
        }
        let sig = if rec.config.stop_signal.is_empty() {
            libc::SIGTERM
        } else {
            parse_signal(&rec.config.stop_signal)?
        };
        let secs = timeout.or(rec.config.stop_timeout).unwrap_or(10);
        let mut rx = self.events.subscribe();
        self.emit_container(ns, &rec.id, "kill", &[("signal", sig.to_string())]);
        self.signal(ns, &rec.id, sig).await?;
        let limit = if secs < 0 {
            Duration::from_secs(u64::MAX / 4)
        } else {
            Duration::from_secs(secs as u64)
        };
        if self.wait_stopped(ns, &rec.id, &mut rx, limit).await {
            self.emit_container(ns, &rec.id, "stop", &[]);
            return Ok(());
        }
        self.emit_container(
            ns,
            &rec.id,
            "kill",
            &[("signal", libc::SIGKILL.to_string())],
        );
        self.signal(ns, &rec.id, libc::SIGKILL).await?;
        if self.wait_stopped(ns, &rec.id, &mut rx, KILL_WAIT).await {
            self.emit_container(ns, &rec.id, "stop", &[]);
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "container {r} did not stop after SIGKILL"
            )))
        }
    }

    async fn kill_container(&self, ns: &str, r: &str, signal: &str) -> Result<()> {
        let sig = parse_signal(signal)?;
        let rec = self.find(ns, r)?;
        if rec.state.status == "restarting" {
            // Nothing runs: cancelling the pending restart is the kill.
            self.mark_stopped_by_user(ns, &rec.id);
            self.emit_container(ns, &rec.id, "kill", &[("signal", sig.to_string())]);
            return Ok(());
        }
        if !rec.state.running() {
            return Err(Error::FailedPrecondition(format!(
                "Cannot kill container: {r}: Container {} is not running",
                rec.id
            )));
        }
        self.mark_stopped_by_user(ns, &rec.id);
        self.emit_container(ns, &rec.id, "kill", &[("signal", sig.to_string())]);
        self.signal(ns, &rec.id, sig).await
    }

    pub(crate) async fn remove_container(
        self: &Arc<Self>,
        ns: &str,
        r: &str,
        force: bool,
        volumes: bool,
    ) -> Result<()> {
        let id = self.find(ns, r)?.id;
        let lock = self.op_lock(ns, &id);
        let _guard = lock.lock().await;
        let rec = self
            .get(ns, &id)
            .ok_or_else(|| Error::NotFound(format!("No such container: {r}")))?;
        if rec.state.running() {
            if !force {
                return Err(Error::FailedPrecondition(format!(
                    "You cannot remove a running container {id}. Stop the container before attempting removal or force remove"
                )));
            }
            let mut rx = self.events.subscribe();
            self.mark_stopped_by_user(ns, &id);
            self.emit_container(ns, &id, "kill", &[("signal", libc::SIGKILL.to_string())]);
            self.signal(ns, &id, libc::SIGKILL).await?;
            if !self.wait_stopped(ns, &id, &mut rx, KILL_WAIT).await {
                return Err(Error::Internal(format!(
                    "container {r} did not stop after SIGKILL"
                )));
            }
        }
        let Some(rec) = self.get(ns, &id) else {
            return Ok(()); // auto-removed meanwhile
        };
        let _ = self.update(ns, &id, false, |c| c.removing = true);
        let mut deleted = self
            .tasks
            .clone()
            .delete(request(ns, DeleteRequest { id: id.clone() }))
            .await;
        if force && matches!(&deleted, Err(s) if s.code() == Code::FailedPrecondition) {
            // The record does not say running but berth-tasks still has a
            // live process (after a restart, before recovery has settled a
            // task it could not check): kill it, as rm -f would, then wait
            // for its exit (bounded) and delete again.
            let _ = self.signal(ns, &id, libc::SIGKILL).await;
            let mut tasks = self.tasks.clone();
            let wait = tasks.wait(request(ns, WaitRequest { id: id.clone() }));
            let _ = tokio::time::timeout(KILL_WAIT, wait).await;
            deleted = self
                .tasks
                .clone()
                .delete(request(ns, DeleteRequest { id: id.clone() }))
                .await;
        }
        match deleted {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => {
                let _ = self.update(ns, &id, false, |c| c.removing = false);
                return Err(Error::service("tasks")(s));
            }
        }
        let _ = self.net_detach(ns, &id).await;
        self.destroy(ns, &rec, volumes).await;
        self.publish(ns, &id, EventKind::Destroy);
        info!(id = %id, "removed container");
        Ok(())
    }

    async fn wait_container(&self, ns: &str, r: &str, condition: &str) -> Result<i64> {
        let mut rx = self.events.subscribe();
        let rec = self.find(ns, r)?;
        let id = rec.id.clone();
        match condition {
            "" | "not-running" if !rec.state.running() && rec.state.status != "restarting" => {
                return Ok(rec.state.exit_code)
            }
            "" | "not-running" | "next-exit" | "removed" => {}
            other => {
                return Err(Error::InvalidArgument(format!(
                    "invalid condition: \"{other}\""
                )))
            }
        }
        let mut last_code = rec.state.exit_code;
        loop {
            match rx.recv().await {
                Ok(ev) if ev.ns == ns && ev.id == id => match ev.kind {
                    EventKind::Die(_)
                        if condition != "removed"
                            && self
                                .get(ns, &id)
                                .is_some_and(|c| c.state.status == "restarting") => {}
                    EventKind::Die(code) if condition != "removed" => return Ok(code),
                    EventKind::Die(code) => last_code = code,
                    EventKind::Destroy => return Ok(last_code),
                    EventKind::Start => {}
                },
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => match self.get(ns, &id) {
                    None => return Ok(last_code),
                    Some(c) if !c.state.running() && condition != "removed" => {
                        return Ok(c.state.exit_code)
                    }
                    _ => {}
                },
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Error::Internal("gateway is shutting down".into()))
                }
            }
        }
    }
}

type EntryStream<T> = ReceiverStream<std::result::Result<T, Status>>;

/// Serves `berth.gateway.v1.Containers`.
pub struct ContainersApi(pub(crate) Arc<Inner>);

#[tonic::async_trait]
impl Containers for ContainersApi {
    async fn create(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> std::result::Result<Response<CreateContainerResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        Ok(Response::new(
            self.0.create_container(&ns, req.into_inner()).await?,
        ))
    }

    async fn start(
        &self,
        req: Request<ContainerRef>,
    ) -> std::result::Result<Response<StartContainerResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        self.0.user_start(&ns, &req.get_ref().id).await?;
        Ok(Response::new(StartContainerResponse {}))
    }

    async fn stop(
        &self,
        req: Request<StopContainerRequest>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.get_ref();
        self.0.stop_container(&ns, &r.id, r.timeout).await?;
        Ok(Response::new(Empty {}))
    }

    async fn kill(
        &self,
        req: Request<KillContainerRequest>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.get_ref();
        self.0.kill_container(&ns, &r.id, &r.signal).await?;
        Ok(Response::new(Empty {}))
    }

    async fn wait(
        &self,
        req: Request<WaitContainerRequest>,
    ) -> std::result::Result<Response<WaitContainerResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.get_ref();
        let code = self.0.wait_container(&ns, &r.id, &r.condition).await?;
        Ok(Response::new(WaitContainerResponse {
            status_code: code,
            error: String::new(),
        }))
    }

    async fn remove(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.get_ref();
        self.0
            .remove_container(&ns, &r.id, r.force, r.volumes)
            .await?;
        Ok(Response::new(Empty {}))
    }

    async fn list(
        &self,
        req: Request<ListContainersRequest>,
    ) -> std::result::Result<Response<ListContainersResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let all = req.get_ref().all;
        let mut recs: Vec<ContainerRecord> = self
            .0
            .containers
            .lock()
            .unwrap()
            .values()
            .filter(|c| {
                c.namespace == ns
                    && !(c.removing && c.state.status == "created")
                    && (all || c.state.running() || c.state.status == "restarting")
            })
            .cloned()
            .collect();
        recs.sort_by(|a, b| b.created.cmp(&a.created));
        let containers = recs
            .into_iter()
            .map(|c| ContainerSummary {
                command: c.command_line(),
                created: berth_common::time::parse_rfc3339(&c.created).map_or(0, |t| t.timestamp()),
                state: if c.removing {
                    "removing".into()
                } else {
                    c.state.status.clone()
                },
                exit_code: c.state.exit_code,
                started_at: c.state.started_at.clone(),
                finished_at: c.state.finished_at.clone(),
                labels: c.config.labels.clone().into_iter().collect(),
                ports: String::new(),
                names: vec![c.name.clone()],
                image: c.config.image.clone(),
                image_id: c.image_id.clone(),
                id: c.id,
            })
            .collect();
        Ok(Response::new(ListContainersResponse { containers }))
    }

    async fn inspect(
        &self,
        req: Request<ContainerRef>,
    ) -> std::result::Result<Response<InspectResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let rec = self.0.find(&ns, &req.get_ref().id)?;
        Ok(Response::new(InspectResponse {
            json: serde_json::to_string(&rec.inspect())
                .map_err(|e| Status::internal(e.to_string()))?,
        }))
    }

    async fn restart(
        &self,
        req: Request<StopContainerRequest>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.get_ref();
        self.0.restart_container(&ns, &r.id, r.timeout).await?;
        Ok(Response::new(Empty {}))
    }

    async fn rename(
        &self,
        req: Request<RenameContainerRequest>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.get_ref();
        self.0.rename_container(&ns, &r.id, &r.new_name)?;
        Ok(Response::new(Empty {}))
    }

    async fn prune(
        &self,
        req: Request<PruneContainersRequest>,
    ) -> std::result::Result<Response<PruneContainersResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let filters = req.into_inner().filters;
        Ok(Response::new(self.0.prune_containers(&ns, filters).await?))
    }

    async fn update(
        &self,
        req: Request<berth_proto::gateway::v1::UpdateContainerRequest>,
    ) -> std::result::Result<Response<berth_proto::gateway::v1::UpdateContainerResponse>, Status>
    {
        let ns = berth_common::namespace_of(&req)?;
        let warnings = self.0.update_container(&ns, req.into_inner()).await?;
        Ok(Response::new(
            berth_proto::gateway::v1::UpdateContainerResponse { warnings },
        ))
    }

    type LogsStream = EntryStream<LogEntry>;

    async fn logs(
        &self,
        req: Request<LogsRequest>,
    ) -> std::result::Result<Response<Self::LogsStream>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.into_inner();
        let rec = self.0.find(&ns, &r.id)?;
        let window = lifecycle::LogWindow::parse(&r.since, &r.until)?;
        let inner = self.0.clone();
        let (tx, rx) = mpsc::channel(64);
        let mut events = inner.events.subscribe();
        let mut tailer = Tailer::open(&rec.log_path(), false).await;
        tokio::spawn(
            async move {
                let first = logs::select(
                    window.filter(tailer.read_available().await),
                    r.stdout,
                    r.stderr,
                    r.tail,
                );
                for e in first {
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                if !r.follow {
                    return;
                }
                loop {
                    if inner.get(&ns, &rec.id).is_none_or(|c| !c.state.running()) {
                        let rest = window.filter(tailer.read_available().await);
                        for e in logs::select(rest, r.stdout, r.stderr, -1) {
                            let _ = tx.send(Ok(e)).await;
                        }
                        return;
                    }
                    tokio::select! {
                        _ = events.recv() => {}
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        _ = tx.closed() => return,
                    }
                    let more = window.filter(tailer.read_available().await);
                    for e in logs::select(more, r.stdout, r.stderr, -1) {
                        if tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            .in_current_span(),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type AttachStream = EntryStream<AttachResponse>;

    async fn attach(
        &self,
        req: Request<AttachRequest>,
    ) -> std::result::Result<Response<Self::AttachStream>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.into_inner();
        let rec = self.0.find(&ns, &r.id)?;
        let inner = self.0.clone();
        let (tx, rx) = mpsc::channel(64);
        let mut events = inner.events.subscribe();
        let mut tailer = Tailer::open(&rec.log_path(), true).await;
        let id = rec.id.clone();
        let out = |e: LogEntry| {
            Ok(AttachResponse {
                payload: Some(attach_response::Payload::Output(e)),
            })
        };
        tokio::spawn(
            async move {
                loop {
                    let exit = tokio::select! {
                        ev = events.recv() => match ev {
                            Ok(ev) if ev.ns == ns && ev.id == id => match ev.kind {
                                EventKind::Die(code) => Some(code),
                                _ => None,
                            },
                            Ok(_) => None,
                            Err(broadcast::error::RecvError::Lagged(_)) => None,
                            Err(broadcast::error::RecvError::Closed) => return,
                        },
                        _ = tokio::time::sleep(Duration::from_millis(50)) => None,
                        _ = tx.closed() => return,
                    };
                    for e in logs::select(tailer.read_available().await, r.stdout, r.stderr, -1) {
                        if tx.send(out(e)).await.is_err() {
                            return;
                        }
                    }
                    if let Some(code) = exit {
                        let _ = tx
                            .send(Ok(AttachResponse {
                                payload: Some(attach_response::Payload::Exit(ExitStatus {
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
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("").unwrap(), 9);
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn env_merging() {
        let base = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        let out = merge_env(base, &["A=2".to_string(), "B=3".to_string()]);
        assert_eq!(out, vec!["PATH=/bin", "A=2", "B=3"]);
    }
}
