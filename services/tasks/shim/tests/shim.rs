//! Root-gated end-to-end tests: build a busybox bundle, run berth-shim on it
//! and check the launcher line, the log and the exit file. Every test cleans
//! up (processes, mounts, cgroups, temp dirs) through a Drop guard.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SHIM: &str = env!("CARGO_BIN_EXE_berth-shim");
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "id", "readlink", "hostname", "ls", "pwd", "kill", "sleep", "grep",
    "true", "ulimit", "wc", "tty",
];
static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn is_root() -> bool {
    // SAFETY: plain geteuid.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipping: this test needs root");
            return;
        }
    };
}

struct TestBundle {
    name: String,
    dir: PathBuf,
    config: Value,
}

impl TestBundle {
    fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}-{}-{}", std::process::id(), n, tag);
        let dir = std::env::temp_dir().join(format!("berth-shim-test-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        let src = dir.join("rootfs-src");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::create_dir_all(src.join("etc")).unwrap();
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        std::fs::copy("/bin/busybox", src.join("bin/busybox")).unwrap();
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", src.join("bin").join(a)).unwrap();
        }
        std::fs::write(src.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::write(
            dir.join("rootfs.json"),
            json!([{"type":"bind","source":src,"options":["rbind","rw"]}]).to_string(),
        )
        .unwrap();
        let config = json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "hostname": "berth-test",
            "process": {
                "user": {"uid": 0, "gid": 0},
                "args": ["true"],
                "env": ["PATH=/usr/bin:/bin", "HOME=/root"],
                "cwd": "/"
            },
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid","noexec","nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid","strictatime","mode=755","size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid","noexec","nodev","mode=1777","size=65536k"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid","noexec","nodev"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid","noexec","nodev","ro"]}
            ],
            "linux": {
                "cgroupsPath": format!("/berth-test/{name}"),
                "namespaces": [{"type":"pid"},{"type":"mount"},{"type":"uts"},{"type":"ipc"},{"type":"network"}],
                "maskedPaths": ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                    "/sys/firmware", "/sys/devices/virtual/powercap"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
            }
        });
        TestBundle { name, dir, config }
    }

    fn src(&self) -> PathBuf {
        self.dir.join("rootfs-src")
    }

    fn args(&mut self, args: &[&str]) -> &mut Self {
        self.config["process"]["args"] = json!(args);
        self
    }

    /// Run the shim; returns (launcher line, exit file, log text).
    fn run(&self) -> (Value, Value, String) {
        std::fs::write(self.dir.join("config.json"), self.config.to_string()).unwrap();
        let log = self.dir.join("ctr.log");
        let out = Command::new(SHIM)
            .args(["--id", &self.name, "--bundle"])
            .arg(&self.dir)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run berth-shim");
        assert!(
            out.status.success(),
            "launcher exit status {:?}",
            out.status
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.lines().count(), 1, "launcher printed {text:?}");
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        let exit = self.wait_exit();
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        (line, exit, log)
    }

    fn wait_exit(&self) -> Value {
        let path = self.dir.join("exit");
        let start = Instant::now();
        loop {
            if let Ok(s) = std::fs::read_to_string(&path) {
                return serde_json::from_str(&s).unwrap();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no exit file after 60s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        [
            "memory", "cpu", "cpuacct", "pids", "cpuset", "blkio", "devices", "freezer", "unified",
            "systemd", "",
        ]
        .iter()
        .map(|c| {
            Path::new("/sys/fs/cgroup")
                .join(c)
                .join("berth-test")
                .join(&self.name)
        })
        .collect()
    }
}

fn stdout_lines(log: &str) -> Vec<String> {
    log.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["stream"] == "stdout")
        .map(|v| v["log"].as_str().unwrap().to_string())
        .collect()
}

impl Drop for TestBundle {
    fn drop(&mut self) {
        for f in ["init.pid", "shim.pid"] {
            if let Ok(s) = std::fs::read_to_string(self.dir.join(f)) {
                if let Ok(pid) = s.trim().parse::<i32>() {
                    if !self.dir.join("exit").exists() {
                        // SAFETY: plain kill of a process this test started.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
        }
        let prefix = self.dir.to_string_lossy().to_string();
        if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut targets: Vec<&str> = mi
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|t| t.starts_with(&prefix))
                .collect();
            targets.reverse();
            for t in targets {
                let _ = nix::mount::umount2(t, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        for d in self.cgroup_dirs() {
            let _ = std::fs::remove_dir(&d);
            // The shared parent goes when the last test using it is done.
            if let Some(p) = d.parent() {
                let _ = std::fs::remove_dir(p);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn assert_clean(b: &TestBundle) {
    for d in b.cgroup_dirs() {
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mi.contains(&b.dir.to_string_lossy().to_string()),
        "mount left behind"
    );
}

#[test]
fn echo_hi_is_logged_and_exits_zero() {
    require_root!();
    let mut b = TestBundle::new("echo");
    b.args(&["echo", "hi"]);
    let (line, exit, log) = b.run();
    assert!(line["pid"].as_i64().unwrap() > 0, "{line}");
    assert_eq!(exit["exit_status"], 0);
    let at = exit["exited_at"].as_str().unwrap();
    assert_eq!(at.len(), 30, "{at}");
    let first: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["log"], "hi\n");
    assert_eq!(first["stream"], "stdout");
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    let pid = std::fs::read_to_string(b.dir.join("init.pid")).unwrap();
    assert_eq!(pid.trim(), line["pid"].to_string());
    assert!(b.dir.join("shim.pid").exists());
    assert_clean(&b);
}

#[test]
fn exit_code_is_reported() {
    require_root!();
    let mut b = TestBundle::new("exit3");
    b.args(&["sh", "-c", "exit 3"]);
    let (_, exit, _) = b.run();
    assert_eq!(exit["exit_status"], 3);
    assert_clean(&b);
}

#[test]
fn command_not_found_is_127() {
    require_root!();
    let mut b = TestBundle::new("nf");
    b.args(&["nosuchcmd"]);
    let (line, exit, _) = b.run();
    assert_eq!(line["exit_code"], 127);
    assert_eq!(
        line["error"],
        "exec: \"nosuchcmd\": executable file not found in $PATH"
    );
    assert_eq!(exit["exit_status"], 127);
    assert_eq!(exit["error"], line["error"]);
    assert!(!b.dir.join("init.pid").exists());
    assert_clean(&b);
}

#[test]
fn not_executable_is_126() {
    require_root!();
    let mut b = TestBundle::new("ne");
    b.args(&["/etc/passwd"]);
    let (line, exit, _) = b.run();
    assert_eq!(line["exit_code"], 126);
    assert_eq!(line["error"], "exec: \"/etc/passwd\": permission denied");
    assert_eq!(exit["exit_status"], 126);
    assert_clean(&b);
}

#[test]
fn setup_failure_is_125_and_names_the_step() {
    require_root!();
    let mut b = TestBundle::new("bad");
    b.args(&["true"]);
    b.config["mounts"] = json!([{"destination": "/x", "type": "nosuchfs", "source": "none"}]);
    let (line, exit, _) = b.run();
    assert_eq!(line["exit_code"], 125, "{line}");
    assert!(
        line["error"].as_str().unwrap().contains("nosuchfs"),
        "{line}"
    );
    assert_eq!(exit["exit_status"], 125);
    assert_clean(&b);
}

#[test]
fn init_is_pid_1() {
    require_root!();
    let mut b = TestBundle::new("pid1");
    b.args(&["sh", "-c", "echo $$"]);
    let (_, exit, log) = b.run();
    assert_eq!(exit["exit_status"], 0);
    assert_eq!(stdout_lines(&log), vec!["1\n"]);
}

#[test]
fn hostname_from_spec() {
    require_root!();
    let mut b = TestBundle::new("host");
    b.args(&["hostname"]);
    let (_, _, log) = b.run();
    assert_eq!(stdout_lines(&log), vec!["berth-test\n"]);
}

#[test]
fn dev_has_standard_nodes() {
    require_root!();
    let mut b = TestBundle::new("dev");
    b.args(&["ls", "/dev"]);
    let (_, exit, log) = b.run();
    assert_eq!(exit["exit_status"], 0);
    let names: Vec<String> = stdout_lines(&log)
        .iter()
        .map(|l| l.trim().to_string())
        .collect();
    for n in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd", "stdin",
        "stdout", "stderr",
    ] {
        assert!(names.iter().any(|x| x == n), "/dev lacks {n}: {names:?}");
    }
}

#[test]
fn sigkill_is_137() {
    require_root!();
    let mut b = TestBundle::new("kill");
    // Without a pid namespace, so the shell is not a pid-1 that ignores signals.
    b.config["linux"]["namespaces"] =
        json!([{"type":"mount"},{"type":"uts"},{"type":"ipc"},{"type":"network"}]);
    b.args(&["sh", "-c", "kill -9 $$"]);
    let (_, exit, _) = b.run();
    assert_eq!(exit["exit_status"], 137);
    assert_clean(&b);
}

#[test]
fn user_and_groups_are_applied() {
    require_root!();
    let mut b = TestBundle::new("user");
    b.config["process"]["user"] = json!({"uid": 1000, "gid": 1001, "additionalGids": [1002]});
    b.args(&["sh", "-c", "id -u; id -g; id -G"]);
    let (_, exit, log) = b.run();
    assert_eq!(exit["exit_status"], 0);
    assert_eq!(stdout_lines(&log), vec!["1000\n", "1001\n", "1001 1002\n"]);
}

#[test]
fn cwd_is_created_and_used() {
    require_root!();
    let mut b = TestBundle::new("cwd");
    b.config["process"]["cwd"] = json!("/work/deep/dir");
    b.args(&["pwd"]);
    let (_, exit, log) = b.run();
    assert_eq!(exit["exit_status"], 0);
    assert_eq!(stdout_lines(&log), vec!["/work/deep/dir\n"]);
}

#[test]
fn stderr_and_partial_lines() {
    require_root!();
    let mut b = TestBundle::new("streams");
    b.args(&["sh", "-c", "echo oops >&2; echo -n tail"]);
    let (_, _, log) = b.run();
    let recs: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        recs.iter()
            .any(|r| r["stream"] == "stderr" && r["log"] == "oops\n"),
        "{log}"
    );
    assert!(
        recs.iter()
            .any(|r| r["stream"] == "stdout" && r["log"] == "tail"),
        "{log}"
    );
}

#[test]
fn rlimits_are_clamped_to_host_hard_limit() {
    require_root!();
    let mut b = TestBundle::new("rlim");
    b.config["process"]["rlimits"] =
        json!([{"type": "RLIMIT_NOFILE", "hard": 1048576u64, "soft": 1048576u64}]);
    b.args(&["sh", "-c", "ulimit -n"]);
    let (_, exit, log) = b.run();
    assert_eq!(exit["exit_status"], 0);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let want = lim.rlim_max.min(1_048_576);
    assert_eq!(stdout_lines(&log), vec![format!("{want}\n")]);
}

#[test]
fn loopback_is_up_in_new_netns() {
    require_root!();
    let mut b = TestBundle::new("lo");
    b.args(&["cat", "/sys/class/net/lo/flags"]);
    let (_, _, log) = b.run();
    let flags = stdout_lines(&log).join("");
    let v = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(v & 1, 1, "lo not up: {flags}");
}

#[test]
fn symlink_in_image_cannot_redirect_a_mount_to_the_host() {
    require_root!();
    let mut b = TestBundle::new("escape");
    let host_dir = b.dir.join("host-target");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::os::unix::fs::symlink(&host_dir, b.src().join("evil")).unwrap();
    let mut mounts = b.config["mounts"].as_array().unwrap().clone();
    mounts.push(json!({"destination": "/evil/sub", "type": "tmpfs", "source": "tmpfs"}));
    b.config["mounts"] = json!(mounts);
    b.args(&["true"]);
    let (_, exit, _) = b.run();
    assert_eq!(exit["exit_status"], 0);
    assert!(
        !host_dir.join("sub").exists(),
        "mount target was created on the host"
    );
    assert_clean(&b);
}

#[test]
fn capabilities_are_applied() {
    require_root!();
    let mut b = TestBundle::new("caps");
    let set = json!(["CAP_CHOWN", "CAP_KILL"]);
    b.config["process"]["capabilities"] = json!({
        "bounding": set, "effective": set, "permitted": set, "inheritable": set
    });
    b.args(&["grep", "-E", "^Cap(Eff|Bnd)", "/proc/self/status"]);
    let (_, exit, log) = b.run();
    assert_eq!(exit["exit_status"], 0, "{log}");
    let out = stdout_lines(&log).join("");
    assert!(out.contains("CapEff:\t0000000000000021"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000021"), "{out}");
}

#[test]
fn resources_are_applied_to_the_cgroup() {
    require_root!();
    let mut b = TestBundle::new("res");
    b.config["linux"]["resources"] = json!({"memory": {"limit": 67108864}, "pids": {"limit": 32}});
    b.args(&["cat", "/proc/self/cgroup"]);
    let (_, exit, log) = b.run();
    assert_eq!(exit["exit_status"], 0);
    let out = stdout_lines(&log).join("");
    assert!(out.contains(&format!("/berth-test/{}", b.name)), "{out}");
    assert_clean(&b);
}

/// While the container runs, its init is in the cgroup of every v1
/// controller (or the v2 one) and the limits are in the cgroup files; after
/// it is killed the shim removes every directory.
#[test]
fn running_container_cgroup_holds_init_and_limits() {
    require_root!();
    let mut b = TestBundle::new("cglim");
    b.config["linux"]["resources"] = json!({
        "memory": {"limit": 67108864},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000},
        "pids": {"limit": 32}
    });
    b.args(&["sleep", "1000"]);
    std::fs::write(b.dir.join("config.json"), b.config.to_string()).unwrap();
    let out = Command::new(SHIM)
        .args(["--id", &b.name, "--bundle"])
        .arg(&b.dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pid = line["pid"].as_i64().expect("pid") as i32;
    let root = Path::new("/sys/fs/cgroup");
    let v2 = nix::sys::statfs::statfs(root)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap();
    let at = |c: &str, f: &str| {
        let p = root.join(c).join("berth-test").join(&b.name).join(f);
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
            .trim()
            .to_string()
    };
    if v2 {
        assert!(at("", "cgroup.procs").lines().any(|l| l == pid.to_string()));
        assert_eq!(at("", "memory.max"), "67108864");
        assert_eq!(at("", "cpu.max"), "50000 100000");
        assert_eq!(at("", "pids.max"), "32");
    } else {
        for c in [
            "memory", "cpu", "cpuacct", "pids", "cpuset", "blkio", "devices", "freezer",
        ] {
            if root.join(c).join("cgroup.procs").exists() {
                let procs = at(c, "cgroup.procs");
                assert!(
                    procs.lines().any(|l| l == pid.to_string()),
                    "{pid} not in {c}: {procs:?}"
                );
            }
        }
        assert_eq!(at("memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(at("cpu", "cpu.shares"), "512");
        assert_eq!(at("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(at("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(at("pids", "pids.max"), "32");
        assert!(!at("cpuset", "cpuset.cpus").is_empty());
        // Named hierarchies (name=systemd) are left alone.
        assert!(!root.join("systemd/berth-test").join(&b.name).exists());
    }
    // SAFETY: kill the container init this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let exit = b.wait_exit();
    assert_eq!(exit["exit_status"], 137);
    assert_clean(&b);
}

#[test]
fn long_overlay_options_through_the_shim() {
    require_root!();
    let b = TestBundle::new("ovl");
    let layers = b
        .dir
        .join("snapshots-with-a-rather-long-directory-name-to-grow-the-options");
    let mut lowers = Vec::new();
    for i in 0..160 {
        let d = layers.join(format!("{i:04}")).join("fs");
        std::fs::create_dir_all(&d).unwrap();
        lowers.push(d);
    }
    // The top lower layer holds the busybox tree.
    let top = &lowers[0];
    let status = Command::new("cp")
        .arg("-a")
        .arg(b.src().join("bin"))
        .arg(top)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(lowers[159].join("bottom"), "from the bottom layer\n").unwrap();
    let upper = layers.join("up/fs");
    let work = layers.join("up/work");
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let opts = vec![
        format!("lowerdir={}", lowerdir.join(":")),
        format!("upperdir={}", upper.display()),
        format!("workdir={}", work.display()),
    ];
    assert!(opts.join(",").len() > 8192);
    std::fs::write(
        b.dir.join("rootfs.json"),
        json!([{"type":"overlay","source":"overlay","options":opts}]).to_string(),
    )
    .unwrap();
    let mut b = b;
    b.args(&["cat", "/bottom"]);
    let (line, exit, log) = b.run();
    assert!(line["pid"].is_number(), "{line}");
    assert_eq!(exit["exit_status"], 0);
    assert_eq!(stdout_lines(&log), vec!["from the bottom layer\n"]);
    assert_clean(&b);
}

/// The config berthd's gateway generates: Docker's caps (no inheritable),
/// a deny-all devices cgroup with allow rules, bind-mounted /etc files, a
/// non-root user, NOFILE 1048576 and a host-net-less netns.
#[test]
fn gateway_like_spec_works() {
    require_root!();
    let mut b = TestBundle::new("gw");
    for f in ["resolv.conf", "hostname", "hosts"] {
        std::fs::write(b.dir.join(f), format!("# {f}\n")).unwrap();
    }
    let dir = b.dir.display().to_string();
    let caps = json!([
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE"
    ]);
    b.config["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps});
    b.config["process"]["rlimits"] =
        json!([{"type": "RLIMIT_NOFILE", "hard": 1048576u64, "soft": 1048576u64}]);
    b.config["process"]["noNewPrivileges"] = json!(false);
    b.config["process"]["user"] = json!({"uid": 0, "gid": 0, "additionalGids": [10]});
    let mut mounts = b.config["mounts"].as_array().unwrap().clone();
    for f in ["resolv.conf", "hostname", "hosts"] {
        mounts.push(json!({"destination": format!("/etc/{f}"), "type": "bind", "source": format!("{dir}/{f}"), "options": ["rbind", "rprivate"]}));
    }
    mounts.push(json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"]}));
    b.config["mounts"] = json!(mounts);
    b.config["linux"]["resources"] = json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
        {"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
        {"allow": true, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
        {"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
        {"allow": true, "type": "c", "major": 136, "access": "rwm"}
    ]});
    b.args(&[
        "sh",
        "-c",
        "cat /etc/hostname; echo x > /dev/null && echo null-ok; ulimit -n; \
         grep CapEff /proc/self/status; wc -c < /proc/timer_list; \
         echo 1 > /proc/sys/vm/drop_caches || echo sys-ro",
    ]);
    let (line, exit, log) = b.run();
    assert!(line["pid"].is_number(), "{line}");
    assert_eq!(exit["exit_status"], 0, "{log}");
    let out = stdout_lines(&log).join("");
    assert!(out.starts_with("# hostname\nnull-ok\n"), "{out}");
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(
        out.contains("\n20000\n") || !out.contains("1048576"),
        "{out}"
    );
    assert!(
        out.contains("\n0\n"),
        "masked /proc/timer_list is not empty: {out}"
    );
    assert!(out.ends_with("sys-ro\n"), "/proc/sys is writable: {out}");
    assert_clean(&b);
}

/// The launcher returns while the container keeps running (the daemon does
/// not hold the launcher's stdout), and a SIGKILL from outside gives 137.
#[test]
fn long_running_container_and_external_kill() {
    require_root!();
    let mut b = TestBundle::new("long");
    b.args(&["sleep", "1000"]);
    std::fs::write(b.dir.join("config.json"), b.config.to_string()).unwrap();
    let out = Command::new(SHIM)
        .args(["--id", &b.name, "--bundle"])
        .arg(&b.dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pid = line["pid"].as_i64().unwrap() as i32;
    assert!(!b.dir.join("exit").exists());
    let shim_pid: i32 = std::fs::read_to_string(b.dir.join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: i32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ppid, shim_pid, "the shim is the init's parent");
    // SAFETY: kill the container init this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let exit = b.wait_exit();
    assert_eq!(exit["exit_status"], 137);
    assert_clean(&b);
}

/// A network namespace given by path is joined (not created).
#[test]
fn joins_network_namespace_by_path() {
    require_root!();
    let mut holder = Command::new("unshare")
        .args(["-n", "sleep", "60"])
        .spawn()
        .expect("unshare");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let ns_path = format!("/proc/{}/ns/net", holder.id());
    // Wait until unshare has exec'd sleep in the new namespace.
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let start = Instant::now();
    while std::fs::read_link(&ns_path)
        .map(|l| l == host_ns)
        .unwrap_or(true)
    {
        assert!(start.elapsed() < Duration::from_secs(30));
        if let Ok(Some(_)) = holder.try_wait() {
            panic!("unshare exited");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _guard = Kill(holder);
    let want = std::fs::read_link(&ns_path).unwrap();
    let mut b = TestBundle::new("netns");
    b.config["linux"]["namespaces"] = json!([{"type":"pid"},{"type":"mount"},{"type":"uts"},{"type":"ipc"},{"type":"network","path":ns_path}]);
    b.args(&["readlink", "/proc/self/ns/net"]);
    let (_, exit, log) = b.run();
    assert_eq!(exit["exit_status"], 0, "{log}");
    assert_eq!(stdout_lines(&log), vec![format!("{}\n", want.display())]);
}

/// Lots of output is drained completely before the exit file appears.
#[test]
fn all_output_is_drained() {
    require_root!();
    let mut b = TestBundle::new("bulk");
    b.args(&[
        "sh",
        "-c",
        "i=0; while [ $i -lt 20000 ]; do echo line$i; i=$((i+1)); done; echo -n end",
    ]);
    let (_, exit, log) = b.run();
    assert_eq!(exit["exit_status"], 0);
    let lines = stdout_lines(&log);
    assert_eq!(lines.len(), 20001);
    assert_eq!(lines[19999], "line19999\n");
    assert_eq!(lines[20000], "end");
}

/// Without a pid namespace, a background child that keeps the output pipe
/// open is killed when the init exits, so the task still finishes.
#[test]
fn background_children_do_not_keep_the_task_alive() {
    require_root!();
    let mut b = TestBundle::new("bg");
    b.config["linux"]["namespaces"] =
        json!([{"type":"mount"},{"type":"uts"},{"type":"ipc"},{"type":"network"}]);
    b.args(&["sh", "-c", "sleep 1000 & echo started"]);
    let (_, exit, log) = b.run();
    assert_eq!(exit["exit_status"], 0);
    assert_eq!(stdout_lines(&log), vec!["started\n"]);
    assert_clean(&b);
}

/// A new cgroup namespace is rooted at the container's own cgroup.
#[test]
fn cgroup_namespace_is_rooted_at_the_container_cgroup() {
    require_root!();
    let mut b = TestBundle::new("cgns");
    b.config["linux"]["namespaces"] = json!([{"type":"pid"},{"type":"mount"},{"type":"uts"},{"type":"ipc"},{"type":"network"},{"type":"cgroup"}]);
    b.args(&["cat", "/proc/self/cgroup"]);
    let (_, exit, log) = b.run();
    assert_eq!(exit["exit_status"], 0);
    let out = stdout_lines(&log).join("");
    assert!(!out.contains("berth-test"), "{out}");
    assert!(out.lines().any(|l| l.ends_with(":/")), "{out}");
}

/// Write the config and start the shim with `extra` arguments and a log;
/// returns the init pid.
fn start_in_background(b: &TestBundle, extra: &[&str]) -> i32 {
    std::fs::write(b.dir.join("config.json"), b.config.to_string()).unwrap();
    let out = Command::new(SHIM)
        .args(["--id", &b.name, "--bundle"])
        .arg(&b.dir)
        .arg("--log")
        .arg(b.dir.join("ctr.log"))
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    line["pid"].as_i64().unwrap_or_else(|| panic!("{line}")) as i32
}

fn log_text(b: &TestBundle) -> String {
    std::fs::read_to_string(b.dir.join("ctr.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["log"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Runs `berth-shim exec` and decodes its frames: (output, exit status,
/// error).
fn shim_exec(b: &TestBundle, pid: i32, process: Value) -> (String, i32, String) {
    use berth_runtime::frame;
    let out = Command::new(SHIM)
        .args(["exec", "--pid", &pid.to_string(), "--bundle"])
        .arg(&b.dir)
        .arg("--process")
        .arg(process.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut d = frame::Decoder::new();
    d.push(&out.stdout);
    let (mut text, mut exit) = (String::new(), None);
    while let Some(f) = d.next_frame().unwrap() {
        match f.kind {
            frame::STDOUT | frame::STDERR => text.push_str(&String::from_utf8_lossy(&f.payload)),
            frame::EXIT => exit = frame::parse_exit(&f.payload),
            _ => {}
        }
    }
    let (status, error) = exit.expect("an EXIT frame");
    (text, status, error)
}

#[test]
fn terminal_is_a_pty_of_the_container() {
    require_root!();
    let mut b = TestBundle::new("tty");
    b.args(&["sh", "-c", "tty; echo done"]);
    b.config["process"]["terminal"] = json!(true);
    let (line, exit, _) = b.run();
    assert!(line["pid"].as_i64().is_some(), "{line}");
    assert_eq!(exit["exit_status"], 0);
    let text = log_text(&b);
    assert!(text.contains("/dev/pts/0\r\n"), "{text:?}");
    assert!(text.contains("done"), "{text:?}");
    assert_clean(&b);
}

#[test]
fn stdin_through_the_attach_socket() {
    require_root!();
    use berth_runtime::frame;
    use std::io::Write;
    let mut b = TestBundle::new("stdin");
    b.args(&["cat"]);
    start_in_background(&b, &["--stdin"]);
    let mut s = std::os::unix::net::UnixStream::connect(b.dir.join("attach.sock")).unwrap();
    s.write_all(&frame::encode(frame::STDIN, b"hello\n"))
        .unwrap();
    s.write_all(&frame::encode(frame::CLOSE_STDIN, b""))
        .unwrap();
    let exit = b.wait_exit();
    assert_eq!(exit["exit_status"], 0);
    assert_eq!(log_text(&b), "hello\n");
    assert_clean(&b);
}

#[test]
fn exec_runs_inside_the_container() {
    require_root!();
    let mut b = TestBundle::new("exec");
    b.args(&["sleep", "1000"]);
    let pid = start_in_background(&b, &[]);
    let (out, status, _) = shim_exec(
        &b,
        pid,
        json!({"args": ["sh", "-c", "echo $$; hostname; echo $FOO; pwd; exit 3"],
               "env": ["FOO=bar"], "cwd": "/bin"}),
    );
    assert_eq!(status, 3);
    // Not PID 1 but inside the pid namespace (small pid), the container's
    // hostname, env and cwd.
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].parse::<i32>().unwrap() < 100, "{out}");
    assert_eq!(&lines[1..], ["berth-test", "bar", "/bin"], "{out}");
    let (_, status, error) = shim_exec(&b, pid, json!({"args": ["nosuch"]}));
    assert_eq!(status, 127);
    assert!(error.contains("executable file not found"), "{error}");
    // The exec left the container alone.
    assert!(!b.dir.join("exit").exists());
    // SAFETY: kill the container init this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(b.wait_exit()["exit_status"], 137);
    assert_clean(&b);
}
