//! berth under systemd: the unit files in deploy/systemd pass
//! `systemd-analyze verify`; every berthd mode sends READY=1 to
//! $NOTIFY_SOCKET only once its gRPC sockets serve (and berth-tasks only
//! once it has found its shims again); and the split stack started exactly
//! as the units start it (their ExecStart= command lines, in the order of
//! their After= dependencies, each waited for like systemd waits for a
//! Type=notify service) runs a container.
//!
//! PID 1 is not systemd on the machines here, so the units are not started
//! by systemd itself: the tests do what systemd would do with them.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_integration::hang::HungFile;
use berth_integration::{bin_dir, require_root, unique, Mode, Stack};

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd")
}

/// The five services, by berthd subcommand.
const SERVICES: [&str; 5] = ["content", "snapshots", "tasks", "network", "gateway"];

/// Where berthd installs, in the units.
const INSTALLED_BIN: &str = "/usr/local/bin/";
/// The config file the units name.
const INSTALLED_CONFIG: &str = "/etc/berth/config.toml";

// ---------------------------------------------------------------------------
// Unit files

/// A unit file as (section, key, value) assignments, in order.
struct Unit {
    name: String,
    entries: Vec<(String, String, String)>,
}

impl Unit {
    fn load(path: &Path) -> Unit {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let mut section = String::new();
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            assert!(
                !line.ends_with('\\'),
                "{}:{}: keep each setting on one line",
                path.display(),
                n + 1
            );
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s.to_string();
            } else {
                let (k, v) = line
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{}:{}: not KEY=VALUE", path.display(), n + 1));
                entries.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
            }
        }
        Unit {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            entries,
        }
    }

    /// The last value of `key` in `section`.
    fn one(&self, section: &str, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
    }

    /// The whitespace-separated values of every `key` in `section` (a list
    /// setting such as After= or Requires=).
    fn list(&self, section: &str, key: &str) -> BTreeSet<String> {
        self.entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .flat_map(|(_, _, v)| v.split_whitespace().map(str::to_string))
            .collect()
    }

    /// The subcommand its ExecStart= runs (content, ..., gateway).
    fn subcommand(&self) -> String {
        self.exec_start().last().unwrap().clone()
    }

    fn exec_start(&self) -> Vec<String> {
        let line = self
            .one("Service", "ExecStart")
            .unwrap_or_else(|| panic!("{} has no ExecStart=", self.name));
        line.split_whitespace().map(str::to_string).collect()
    }
}

fn unit(name: &str) -> Unit {
    Unit::load(&units_dir().join(name))
}

fn service_unit(svc: &str) -> Unit {
    unit(&format!("berth-{svc}.service"))
}

/// The services of berth.target in an order systemd may start them: each
/// after the units its After= names.
fn start_order() -> Vec<Unit> {
    let target = unit("berth.target");
    let mut pending: Vec<Unit> = target
        .list("Unit", "Wants")
        .iter()
        .map(|n| unit(n))
        .collect();
    let names: BTreeSet<String> = pending.iter().map(|u| u.name.clone()).collect();
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut order = Vec::new();
    while !pending.is_empty() {
        let i = pending
            .iter()
            .position(|u| {
                u.list("Unit", "After")
                    .iter()
                    .filter(|a| names.contains(*a))
                    .all(|a| started.contains(a))
            })
            .unwrap_or_else(|| {
                panic!(
                    "After= loop among {:?}",
                    pending.iter().map(|u| &u.name).collect::<Vec<_>>()
                )
            });
        let u = pending.remove(i);
        started.insert(u.name.clone());
        order.push(u);
    }
    order
}

/// The unit files copied to `dir` with the binaries' path pointed at the
/// ones cargo built (verify checks that ExecStart's program exists).
fn copy_units(dir: &Path) -> Vec<PathBuf> {
    let berthd = bin_dir().join("berthd");
    assert!(
        berthd.exists(),
        "{} is missing: build first (cargo build --workspace --all-targets)",
        berthd.display()
    );
    let mut out = Vec::new();
    for e in std::fs::read_dir(units_dir()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.ends_with(".service") || name.ends_with(".target")) {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap();
        let text = text.replace(INSTALLED_BIN, &format!("{}/", bin_dir().display()));
        let to = dir.join(&name);
        std::fs::write(&to, text).unwrap();
        out.push(to);
    }
    out.sort();
    out
}

/// `systemd-analyze verify` on `units`: (success, everything it printed).
fn verify(units: &[PathBuf]) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(units)
        .stdin(Stdio::null())
        .output()
        .expect("run systemd-analyze (Debian package systemd; .ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let units = copy_units(dir.path());
    assert_eq!(units.len(), 6, "five services and berth.target: {units:?}");
    let (ok, out) = verify(&units);
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify:\n{out}"
    );

    // verify does catch a broken unit: a program that does not exist...
    let content = std::fs::read_to_string(dir.path().join("berth-content.service")).unwrap();
    let missing = dir.path().join("berth-broken.service");
    std::fs::write(
        &missing,
        content.replace(
            &bin_dir().join("berthd").display().to_string(),
            "/nonexistent/berthd",
        ),
    )
    .unwrap();
    let (ok, out) = verify(std::slice::from_ref(&missing));
    assert!(!ok, "a missing ExecStart program passed verify:\n{out}");
    assert!(out.contains("/nonexistent/berthd"), "{out}");

    // ... a dependency on a unit that does not exist...
    let gateway = std::fs::read_to_string(dir.path().join("berth-gateway.service")).unwrap();
    let dangling = dir.path().join("berth-dangling.service");
    std::fs::write(
        &dangling,
        gateway.replace("Requires=", "Requires=berth-nonexistent.service "),
    )
    .unwrap();
    let (ok, out) = verify(std::slice::from_ref(&dangling));
    assert!(!ok, "a dangling Requires= passed verify:\n{out}");

    // ... and a bad value, which systemd only warns about (so the check
    // above also wants verify to print nothing).
    let bad = dir.path().join("berth-badtype.service");
    std::fs::write(&bad, content.replace("Type=notify", "Type=notifyy")).unwrap();
    let (_, out) = verify(std::slice::from_ref(&bad));
    assert!(
        out.contains("notifyy"),
        "a bad Type= went unnoticed:\n{out}"
    );
}

#[test]
fn units_declare_what_berth_needs() {
    let target = unit("berth.target");
    let wanted = target.list("Unit", "Wants");
    let expect: BTreeSet<String> = SERVICES
        .iter()
        .map(|s| format!("berth-{s}.service"))
        .collect();
    assert_eq!(wanted, expect, "berth.target wants every service");
    assert_eq!(target.one("Install", "WantedBy"), Some("multi-user.target"));

    for svc in SERVICES {
        let u = service_unit(svc);
        let n = &u.name;
        assert_eq!(u.one("Service", "Type"), Some("notify"), "{n}");
        assert_eq!(u.one("Service", "Restart"), Some("always"), "{n}");
        assert!(u.list("Unit", "PartOf").contains("berth.target"), "{n}");
        assert!(
            u.list("Install", "WantedBy").contains("berth.target"),
            "{n}"
        );
        assert_eq!(
            u.exec_start(),
            [
                &format!("{INSTALLED_BIN}berthd"),
                "--config",
                INSTALLED_CONFIG,
                svc
            ],
            "{n}"
        );
        let nofile = u
            .one("Service", "LimitNOFILE")
            .unwrap_or_else(|| panic!("{n} sets no LimitNOFILE="));
        assert!(
            nofile.split(':').all(|v| v.parse::<u64>().is_ok()),
            "{n}: LimitNOFILE={nofile} is not a finite number"
        );
        // A dependency is also an ordering: what is required is ready
        // (Type=notify) before this starts.
        let after = u.list("Unit", "After");
        for r in u.list("Unit", "Requires") {
            assert!(after.contains(&r), "{n} requires {r} but is not After= it");
        }
    }
    let needs = |svc: &str| service_unit(svc).list("Unit", "Requires");
    assert_eq!(
        needs("snapshots"),
        BTreeSet::from(["berth-content.service".to_string()])
    );
    assert_eq!(
        needs("gateway"),
        ["content", "snapshots", "tasks", "network"]
            .iter()
            .map(|s| format!("berth-{s}.service"))
            .collect::<BTreeSet<_>>()
    );
    // Containers outlive a restart of berth-tasks: only berthd is killed,
    // and berth's cgroups are its own to manage.
    let tasks = service_unit("tasks");
    assert_eq!(tasks.one("Service", "KillMode"), Some("process"));
    assert_eq!(tasks.one("Service", "Delegate"), Some("yes"));
    // Whatever berth-tasks is denied, every container is denied too.
    for key in [
        "NoNewPrivileges",
        "CapabilityBoundingSet",
        "SystemCallFilter",
        "ProtectSystem",
        "PrivateTmp",
        "MemoryDenyWriteExecute",
    ] {
        assert_eq!(
            tasks.one("Service", key),
            None,
            "berth-tasks must not set {key}="
        );
    }
}

// ---------------------------------------------------------------------------
// Starting berthd like systemd does

/// A datagram socket standing in for systemd's notification socket.
struct NotifySocket {
    sock: UnixDatagram,
    /// The value of NOTIFY_SOCKET: a path, or `@name` (abstract).
    env: OsString,
}

impl NotifySocket {
    /// A socket at a path under `dir`.
    fn at(dir: &Path) -> NotifySocket {
        let path = dir.join(format!("{}.notify", unique("n")));
        let sock = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            sock,
            env: path.into_os_string(),
        }
    }

    /// A socket in the abstract namespace (`@name`), as systemd uses.
    fn abstract_() -> NotifySocket {
        let name = unique("berth-it-notify");
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        NotifySocket {
            sock,
            env: format!("@{name}").into(),
        }
    }

    /// Waits for `line` (e.g. READY=1) from daemon `d`; panics with its log
    /// when it exits first, or after a minute (a liveness bound).
    fn wait_for(&self, d: &mut Daemon, line: &str) -> Vec<String> {
        self.sock
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let found = msg.lines().any(|l| l == line);
                    seen.push(msg);
                    if found {
                        return seen;
                    }
                    continue;
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("notification socket: {e}"),
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!(
                    "{} exited ({status}) before sending {line}; it sent {seen:?}; log:\n{}",
                    d.name,
                    d.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} sent no {line} within a minute; it sent {seen:?}; log:\n{}",
                    d.name,
                    d.log()
                );
            }
        }
    }
}

impl NotifySocket {
    /// What arrives within `d`.
    fn messages_for(&self, d: Duration) -> Vec<String> {
        let end = Instant::now() + d;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            match self.sock.recv(&mut buf) {
                Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => break,
            }
        }
        out
    }
}

/// A berthd process of a test; killed and reaped on drop.
struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A no-op for a child already reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stack's directories and network names (from [`Stack::prepare`]) and
/// the daemons a test starts in them. The stack is dropped first: it
/// removes the containers through the gateway, then kills every process
/// that names the stack's directory (the daemons, the shims), unmounts,
/// removes cgroups, the nftables table and the bridge.
struct Harness {
    stack: Stack,
    daemons: Vec<Daemon>,
}

impl Harness {
    fn new() -> Harness {
        let stack = Stack::prepare(Mode::Split, &[]);
        Harness {
            stack,
            daemons: Vec::new(),
        }
    }

    /// Starts `cmd` with NOTIFY_SOCKET set to `notify`, logging to a file in
    /// the stack's directory. Returns the daemon's index.
    fn spawn(&mut self, name: &str, mut cmd: Command, notify: &NotifySocket) -> usize {
        let log = self
            .stack
            .dir
            .join(format!("{}-{}.log", name, self.daemons.len()));
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .env("NOTIFY_SOCKET", &notify.env)
            .env("BERTH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        self.daemons.push(Daemon {
            name: name.to_string(),
            child,
            log,
        });
        self.daemons.len() - 1
    }

    /// `berthd` with the stack's directories, network names and an empty
    /// config file (so that the host's /etc/berth/config.toml is not read).
    fn berthd(&self, args: &[&str]) -> Command {
        let s = &self.stack;
        let config = s.dir.join("empty-config.toml");
        std::fs::write(&config, "# nothing: the flags say it all\n").unwrap();
        let mut c = Command::new(bin_dir().join("berthd"));
        c.arg("--config")
            .arg(config)
            .arg("--root")
            .arg(&s.root)
            .arg("--state")
            .arg(&s.state)
            .arg("--nft-table")
            .arg(&s.nft_table)
            .arg("--bridge")
            .arg(&s.bridge)
            .arg("--bridge-subnet")
            .arg(s.bridge_subnet.cidr())
            .args(args);
        c
    }

    /// Starts `berthd ARGS` and returns once it sent READY=1.
    fn start(&mut self, name: &str, args: &[&str], notify: &NotifySocket) -> usize {
        let cmd = self.berthd(args);
        let i = self.spawn(name, cmd, notify);
        notify.wait_for(&mut self.daemons[i], "READY=1");
        i
    }

    fn sock(&self, svc: &str) -> PathBuf {
        let file = if svc == "gateway" { "berth" } else { svc };
        self.stack.state.join(format!("{file}.sock"))
    }

    /// One health check of `svc` on its socket, no retry: READY=1 came, so
    /// it must answer now.
    fn assert_serving(&self, svc: &str) {
        let sock = self.sock(svc);
        let service = grpc_service(svc);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let status = rt.block_on(async {
            let mut c = tonic_health::pb::health_client::HealthClient::new(
                berth_common::connect_unix(&sock),
            );
            c.check(tonic_health::pb::HealthCheckRequest {
                service: service.to_string(),
            })
            .await
        });
        match status {
            Ok(r) => assert_eq!(
                r.into_inner().status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
                "{service} on {} is not SERVING after READY=1",
                sock.display()
            ),
            Err(e) => panic!(
                "READY=1 came before {service} served on {}: {e}",
                sock.display()
            ),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for d in &self.daemons {
                eprintln!("--- log of {}:\n{}", d.name, d.log());
            }
        }
    }
}

/// The gRPC service each berthd mode serves (one of them, for the gateway).
fn grpc_service(svc: &str) -> &'static str {
    match svc {
        "content" => berth_proto::content::v1::content_server::SERVICE_NAME,
        "snapshots" => berth_proto::snapshots::v1::snapshots_server::SERVICE_NAME,
        "tasks" => berth_proto::tasks::v1::tasks_server::SERVICE_NAME,
        "network" => berth_proto::network::v1::network_server::SERVICE_NAME,
        "gateway" => berth_proto::gateway::v1::containers_server::SERVICE_NAME,
        other => panic!("no service {other}"),
    }
}

/// Runs `sleep` in a container; returns its id and the init's host pid,
/// as berth-tasks reports them.
fn run_sleeper(s: &Stack) -> (String, u32) {
    s.import_busybox("busybox");
    s.berth(&["run", "-d", "--name", "sleeper", "busybox", "sleep", "1000"])
        .ok();
    let id = s.id_of("sleeper");
    let state = s.task_state(&id);
    assert_eq!(
        state.status,
        berth_proto::tasks::v1::Status::Running as i32,
        "{state:?}"
    );
    assert!(state.pid > 0);
    (id, state.pid)
}

/// Right after READY=1 (no retry, no wait), berth-tasks knows the task it
/// found again: running, same pid.
fn assert_task_known(s: &Stack, id: &str, pid: u32) {
    let state = s.task_state(id);
    assert_eq!(
        state.status,
        berth_proto::tasks::v1::Status::Running as i32,
        "READY=1 came before berth-tasks found the shim of {id} again: {state:?}"
    );
    assert_eq!(state.pid, pid);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None)
        .expect("the container kept running");
}

/// Starts `berthd ARGS` (berth-tasks, alone or all-in-one) again after a
/// crash left container `id` (init `pid`) running, and checks that READY=1
/// comes only once berth-tasks knows the container again. To see that
/// READY=1 waits for it, the shim's pid file cannot be read at first (a
/// FUSE file whose open hangs, like /proc/PID/cmdline of a process stuck in
/// D state) and the check deadline is far away: berth-tasks serves, reports
/// the task UNKNOWN and is not ready until the file is released.
fn restart_with_slow_recovery(
    h: &mut Harness,
    name: &str,
    args: &[&str],
    id: &str,
    pid: u32,
) -> (usize, NotifySocket) {
    let mut hung = HungFile::mount_over(&h.stack.bundle(id).join("shim.pid"));
    let notify = NotifySocket::abstract_();
    let mut cmd = h.berthd(args);
    cmd.env("BERTH_SHIM_CHECK_DEADLINE_MS", "600000");
    let i = h.spawn(name, cmd, &notify);
    let state = loop {
        match h.stack.try_task_state(id) {
            Ok(state) => break state,
            Err(_) if h.daemons[i].child.try_wait().unwrap().is_none() => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("{name} exited: {e}\n{}", h.daemons[i].log()),
        }
    };
    assert_eq!(
        state.status,
        berth_proto::tasks::v1::Status::Unknown as i32,
        "{state:?}"
    );
    let early = notify.messages_for(Duration::from_millis(500));
    assert!(
        !early.iter().any(|m| m.lines().any(|l| l == "READY=1")),
        "READY=1 before berth-tasks found its shims: {early:?}"
    );
    hung.release();
    notify.wait_for(&mut h.daemons[i], "READY=1");
    assert_task_known(&h.stack, id, pid);
    (i, notify)
}

#[test]
fn each_split_service_is_ready_only_when_it_serves_and_tasks_after_its_shims() {
    require_root!();
    let mut h = Harness::new();
    let mut tasks = 0;
    for svc in SERVICES {
        // Both forms of NOTIFY_SOCKET.
        let notify = if svc == "gateway" || svc == "snapshots" {
            NotifySocket::abstract_()
        } else {
            NotifySocket::at(&h.stack.dir)
        };
        let i = h.start(svc, &[svc], &notify);
        h.assert_serving(svc);
        if svc == "tasks" {
            tasks = i;
        }
    }
    assert_eq!(h.stack.berth(&["version"]).code, 0);

    // berth-tasks crashes while a container runs; when it says READY=1
    // again, it has found that container's shim.
    let (id, pid) = run_sleeper(&h.stack);
    h.daemons[tasks].kill9();
    restart_with_slow_recovery(&mut h, "tasks", &["tasks"], &id, pid);
    // And the stack goes on: the gateway stops it through the new
    // berth-tasks.
    h.stack.berth(&["rm", "-f", "sleeper"]).ok();
}

#[test]
fn all_in_one_is_ready_only_when_every_socket_serves_and_after_its_shims() {
    require_root!();
    let mut h = Harness::new();
    let notify = NotifySocket::at(&h.stack.dir);
    let first = h.start("berthd", &[], &notify);
    for svc in SERVICES {
        h.assert_serving(svc);
    }

    let (id, pid) = run_sleeper(&h.stack);
    h.daemons[first].kill9();
    let (second, notify) = restart_with_slow_recovery(&mut h, "berthd", &[], &id, pid);
    for svc in SERVICES {
        h.assert_serving(svc);
    }
    // rm -f at once works, also while the gateway's own recovery may not
    // have settled the task yet (it was UNKNOWN when the gateway looked).
    let r = h.stack.berth(&["rm", "-f", "sleeper"]);
    assert_eq!(r.code, 0, "{r:?}\n{}", h.daemons[second].log());
    h.stack.wait_until("the container's process is gone", || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err()
    });

    // A stop is announced (STOPPING=1), and berthd exits.
    let d = &mut h.daemons[second];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    notify.wait_for(d, "STOPPING=1");
    let status = d.child.wait().unwrap();
    assert!(
        status.success(),
        "berthd exited with {status}:\n{}",
        d.log()
    );
}

/// The command line of a unit's ExecStart=, with the binary rewritten to
/// the one cargo built and --config pointed at `config`; wrapped in setpriv
/// for the unit's CapabilityBoundingSet= and NoNewPrivileges= (the
/// hardening that can be applied without systemd; the seccomp-based
/// settings are checked by systemd-analyze only).
fn unit_command(u: &Unit, config: &Path) -> Command {
    let mut argv = u.exec_start();
    let program = argv[0]
        .strip_prefix(INSTALLED_BIN)
        .unwrap_or_else(|| panic!("{}: ExecStart outside {INSTALLED_BIN}", u.name));
    argv[0] = bin_dir().join(program).display().to_string();
    let at = argv
        .iter()
        .position(|a| a == "--config")
        .unwrap_or_else(|| panic!("{}: ExecStart has no --config", u.name));
    assert_eq!(argv[at + 1], INSTALLED_CONFIG, "{}", u.name);
    argv[at + 1] = config.display().to_string();

    let mut wrap: Vec<String> = Vec::new();
    if u.one("Service", "NoNewPrivileges") == Some("yes") {
        wrap.push("--no-new-privs".into());
    }
    let caps = u.list("Service", "CapabilityBoundingSet");
    if !caps.is_empty() {
        let mut set = vec!["-all".to_string()];
        for c in &caps {
            let c = c
                .strip_prefix("CAP_")
                .unwrap_or_else(|| panic!("{}: capability {c}", u.name));
            set.push(format!("+{}", c.to_lowercase()));
        }
        wrap.push("--bounding-set".into());
        wrap.push(set.join(","));
    }
    let mut cmd = if wrap.is_empty() {
        Command::new(&argv[0])
    } else {
        let mut c = Command::new("setpriv");
        c.args(&wrap).arg("--").arg(&argv[0]);
        c
    };
    cmd.args(&argv[1..]);
    cmd
}

#[test]
fn split_stack_started_as_the_units_start_it_runs_a_container() {
    require_root!();
    let mut h = Harness::new();
    let s = &h.stack;
    let config = s.dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "root = {:?}\nstate = {:?}\nnft-table = {:?}\nbridge = {:?}\nbridge-subnet = {:?}\n",
            s.root.display().to_string(),
            s.state.display().to_string(),
            s.nft_table,
            s.bridge,
            s.bridge_subnet.cidr(),
        ),
    )
    .unwrap();

    let order = start_order();
    let names: Vec<String> = order.iter().map(|u| u.subcommand()).collect();
    assert_eq!(names.len(), 5, "{names:?}");
    assert_eq!(
        names.last().map(String::as_str),
        Some("gateway"),
        "{names:?}"
    );
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(pos("content") < pos("snapshots"), "{names:?}");

    for u in &order {
        assert_eq!(u.one("Service", "Type"), Some("notify"), "{}", u.name);
        let svc = u.subcommand();
        let cmd = unit_command(u, &config);
        let notify = NotifySocket::abstract_();
        let i = h.spawn(&u.name, cmd, &notify);
        // systemd starts what comes After= this unit only once it is ready.
        notify.wait_for(&mut h.daemons[i], "READY=1");
        h.assert_serving(&svc);
    }

    let s = &h.stack;
    s.import_busybox("busybox");
    assert_eq!(
        s.berth(&["run", "--rm", "busybox", "echo", "hi"]).ok(),
        "hi\n"
    );
}
