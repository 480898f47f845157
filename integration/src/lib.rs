//! Harness for berth's end-to-end tests: start a whole stack (all-in-one or
//! split) in temp directories, drive it with the real `berth` CLI, and clean
//! up every process, mount and cgroup afterwards, also when a test fails.

pub mod fixtures;
pub mod hang;
pub mod net;
pub mod pki;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Whether the tests run as root (they need it for namespaces and mounts).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skips the calling test (returns) with a message when not root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!("skipped: this test needs root");
            return;
        }
    };
}

/// Where cargo put the binaries: the directory above the test's deps/ dir.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("BERTH_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    if deps.ends_with("deps") {
        deps.parent().expect("target dir").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique name for this test process and call.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How to run the services.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    AllInOne,
    Split,
}

/// The result of one CLI call.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "command failed: {self:?}");
        self.stdout
    }
}

/// A running berth stack in its own temp directories.
pub struct Stack {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub mode: Mode,
    daemons: Vec<Child>,
    env: Vec<(String, String)>,
    /// berth-network's nftables table (unique per stack).
    pub nft_table: String,
    /// The default bridge's interface (unique per stack).
    pub bridge: String,
    /// The default bridge's subnet.
    pub bridge_subnet: net::SubnetLease,
}

impl Stack {
    /// Starts a stack and waits until the gateway answers.
    pub fn start(mode: Mode) -> Stack {
        Stack::start_with_env(mode, &[])
    }

    /// Like [`Stack::start`], with extra environment for the daemons.
    pub fn start_with_env(mode: Mode, env: &[(&str, &str)]) -> Stack {
        let mut stack = Stack::prepare(mode, env);
        match mode {
            Mode::AllInOne => stack.spawn_daemon(&[]),
            Mode::Split => {
                for svc in ["content", "snapshots", "tasks", "network"] {
                    stack.spawn_daemon(&[svc]);
                }
                stack.spawn_daemon(&["gateway"]);
            }
        }
        stack.wait_ready();
        stack
    }

    /// A stack's directories, nftables table, bridge name and subnet, with
    /// no daemon started: for tests that start berthd their own way (its
    /// Drop still cleans up containers, processes whose command line names
    /// the stack's directory, mounts, cgroups and the network).
    pub fn prepare(mode: Mode, env: &[(&str, &str)]) -> Stack {
        let dir = PathBuf::from("/tmp").join(unique("berth-it"));
        let root = dir.join("root");
        let state = dir.join("state");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        let tag = format!(
            "{:x}{:02x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst) & 0xff
        );
        let bridge_subnet = net::SubnetLease::take();
        let nft_table = format!("berth-it-{tag}");
        let bridge = format!("bi{tag}");
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push(("BERTH_NFT_TABLE".into(), nft_table.clone()));
        env.push(("BERTH_BRIDGE".into(), bridge.clone()));
        env.push(("BERTH_BRIDGE_SUBNET".into(), bridge_subnet.cidr()));
        // Not the host's /etc/berth/config.toml, should berth be installed.
        if !env.iter().any(|(k, _)| k == "BERTHD_CONFIG") {
            let config = dir.join("berthd.toml");
            std::fs::write(&config, "# the flags and environment say it all\n").unwrap();
            env.push(("BERTHD_CONFIG".into(), config.display().to_string()));
        }
        Stack {
            dir,
            root,
            state,
            mode,
            daemons: Vec::new(),
            env,
            nft_table,
            bridge,
            bridge_subnet,
        }
    }

    /// Stops the daemons gracefully (SIGTERM) and waits for them.
    pub fn stop_daemons(&mut self) {
        for d in &mut self.daemons {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for d in &mut self.daemons {
            let _ = d.wait();
        }
    }

    /// Sends SIGTERM to the daemons and waits for them up to `limit` (a
    /// liveness bound). True when all exited; else they are SIGKILLed.
    /// Either way [`Stack::restart`] can start them again.
    pub fn stop_daemons_within(&mut self, limit: Duration) -> bool {
        for d in &mut self.daemons {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + limit;
        let mut exited = false;
        while Instant::now() < deadline {
            if self
                .daemons
                .iter_mut()
                .all(|d| d.try_wait().ok().flatten().is_some())
            {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        exited
    }

    /// SIGKILLs every daemon of the stack (containers keep running under
    /// their shims), then starts them again the same way.
    pub fn kill9_and_restart(&mut self) {
        self.kill9();
        self.restart();
    }

    /// SIGKILLs every daemon of the stack; containers keep running under
    /// their shims. [`Stack::restart`] starts the daemons again.
    pub fn kill9(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
        let n = self.daemons.len();
        self.daemons.clear();
        // Keep the old logs (appended to, over several restarts): new
        // daemons log to new files.
        for i in 0..n {
            let old = std::fs::read(self.log_path(i)).unwrap_or_default();
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(format!("berthd-{i}.log.old")))
                .unwrap();
            std::io::Write::write_all(&mut f, &old).unwrap();
            let _ = std::fs::remove_file(self.log_path(i));
        }
    }

    /// Starts the daemons of a stack stopped by [`Stack::kill9`] and waits
    /// until the gateway answers.
    pub fn restart(&mut self) {
        assert!(self.daemons.is_empty(), "the daemons are running");
        match self.mode {
            Mode::AllInOne => self.spawn_daemon(&[]),
            Mode::Split => {
                for svc in ["content", "snapshots", "tasks", "network"] {
                    self.spawn_daemon(&[svc]);
                }
                self.spawn_daemon(&["gateway"]);
            }
        }
        self.wait_ready();
    }

    /// The task bundle of container `id` (full id) in the default namespace.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.state.join("tasks").join("default").join(id)
    }

    /// The full id of a container.
    pub fn id_of(&self, name: &str) -> String {
        self.berth(&["inspect", "-f", "{{.Id}}", name])
            .ok()
            .trim()
            .to_string()
    }

    /// The state berth-tasks reports for container `id` (full id), asked
    /// directly on its socket.
    pub fn task_state(&self, id: &str) -> berth_proto::tasks::v1::TaskState {
        self.try_task_state(id)
            .unwrap_or_else(|s| panic!("State({id}): {s}"))
    }

    /// Like [`Stack::task_state`], returning berth-tasks' error (one try).
    pub fn try_task_state(
        &self,
        id: &str,
    ) -> Result<berth_proto::tasks::v1::TaskState, tonic::Status> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = berth_proto::tasks::v1::tasks_client::TasksClient::new(
                berth_common::connect_unix(self.state.join("tasks.sock")),
            );
            c.state(berth_proto::tasks::v1::StateRequest { id: id.to_string() })
                .await
                .map(|r| r.into_inner())
        })
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.dir.join(format!("berthd-{n}.log"))
    }

    fn spawn_daemon(&mut self, args: &[&str]) {
        let log = std::fs::File::create(self.log_path(self.daemons.len())).unwrap();
        let child = Command::new(bin_dir().join("berthd"))
            .arg("--root")
            .arg(&self.root)
            .arg("--state")
            .arg(&self.state)
            .args(args)
            .env("BERTH_LOG", "info,berth_common=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start berthd (build it first: cargo build)");
        self.daemons.push(child);
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let sockets = ["berth", "content", "snapshots", "tasks", "network"];
            if sockets
                .iter()
                .all(|s| self.state.join(format!("{s}.sock")).exists())
                && self.berth(&["version"]).code == 0
            {
                return;
            }
            if Instant::now() > deadline {
                panic!("berth stack did not come up; logs:\n{}", self.daemon_logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the daemons printed (since their last start).
    pub fn daemon_logs(&self) -> String {
        (0..self.daemons.len().max(1))
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// Waits until `cond` holds, polling; panics with `what` and the daemon
    /// logs after 30 s (a liveness bound, not a timing assertion).
    #[track_caller]
    pub fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting until {what}; logs:\n{}",
                    self.daemon_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The gateway address for -H.
    pub fn host(&self) -> String {
        format!("unix://{}", self.state.join("berth.sock").display())
    }

    /// A `berth` command aimed at this stack.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin_dir().join("berth"));
        c.arg("-H").arg(self.host());
        c.stdin(Stdio::null());
        c
    }

    /// Runs `berth ARGS...`.
    pub fn berth(&self, args: &[&str]) -> Run {
        self.cmd().args(args).output().expect("run berth").into()
    }

    /// Runs `berth ARGS...` with `input` on stdin.
    pub fn berth_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        let mut cmd = self.cmd();
        cmd.args(args);
        run_with_stdin(cmd, input)
    }

    /// Imports the busybox fixture as `name`.
    pub fn import_busybox(&self, name: &str) -> String {
        let tar = fixtures::busybox_tar_in(&self.dir);
        let r = self.berth(&["image", "import", tar.to_str().unwrap(), name]);
        assert_eq!(r.code, 0, "import failed: {r:?}\n{}", self.daemon_logs());
        r.stdout.trim().to_string()
    }

    /// `berth run --rm IMAGE ARGS...`.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(args);
        self.berth(&a)
    }

    fn container_ids(&self) -> Vec<String> {
        let r = self.berth(&["ps", "-aq", "--no-trunc"]);
        r.stdout
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

/// Runs `cmd` with `input` on its stdin and collects its output.
pub fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Run {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run berth");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait berth");
    let _ = writer.join();
    out.into()
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &Path) -> Vec<i32> {
    let needle = needle.as_os_str().as_encoded_bytes();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if cmd.windows(needle.len()).any(|w| w == needle) {
                out.push(pid);
            }
        }
    }
    out
}

/// Kills what is left in the cgroups of the given containers and removes
/// the cgroups.
fn remove_cgroups(ids: &[String]) {
    let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let bases: Vec<PathBuf> = ctrls
        .flatten()
        .map(|e| e.path())
        .chain([PathBuf::from("/sys/fs/cgroup")])
        .collect();
    for base in &bases {
        let berth = base.join("berth");
        let Ok(nss) = std::fs::read_dir(&berth) else {
            continue;
        };
        for ns in nss.flatten() {
            for id in ids {
                let cg = ns.path().join(id);
                if !cg.is_dir() {
                    continue;
                }
                if let Ok(procs) = std::fs::read_to_string(cg.join("cgroup.procs")) {
                    for p in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(p),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                for _ in 0..50 {
                    if std::fs::remove_dir(&cg).is_ok() || !cg.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// Removes the (empty) per-namespace cgroup directories `berth/<ns>` a test
/// that used its own namespace leaves, on drop (also when the test fails).
pub struct NamespaceCgroups(pub String);

impl Drop for NamespaceCgroups {
    fn drop(&mut self) {
        let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for base in ctrls
            .flatten()
            .map(|e| e.path())
            .chain([PathBuf::from("/sys/fs/cgroup")])
        {
            let _ = std::fs::remove_dir(base.join("berth").join(&self.0));
        }
    }
}

/// Unmounts everything under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(|s| s.replace("\\040", " ")))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let mut ids = self.container_ids();
        for id in &ids {
            let _ = self.berth(&["rm", "-f", id]);
        }
        // Tasks the gateway did not list (it may be down after a failure):
        // their bundles are named by container id.
        for ns in std::fs::read_dir(self.state.join("tasks"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for b in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                let id = b.file_name().to_string_lossy().into_owned();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        for d in &mut self.daemons {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for d in &mut self.daemons {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match d.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = d.kill();
                        let _ = d.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        // Shims (and anything else) still running for this stack.
        for pid in processes_mentioning(&self.dir) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        remove_cgroups(&ids);
        unmount_under(&self.dir);
        net::remove_stack_network(&self.nft_table, &self.bridge);
        if std::thread::panicking() {
            eprintln!("daemon logs of the failed test:\n{}", self.daemon_logs());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
