//! End-to-end: memory limits (-m, --memory-swap, --memory-reservation,
//! --memory-swappiness, --oom-kill-disable, --oom-score-adj) land in the
//! container's cgroup and in inspect; the kernel's OOM kills show as
//! State.OOMKilled, exit code 137 and `oom` events; bad values are refused
//! with docker's messages before anything is created.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_integration::{require_root, Mode, Stack};

const MIB: u64 = 1 << 20;

/// Holds 64 MiB in a shell variable (busybox only): far past an 8 MiB
/// limit, and the shell holding it is the biggest process, so it is the
/// one the OOM killer picks.
const EAT_64M: &str = "x=$(head -c 64m /dev/zero | tr '\\0' a); echo ${#x}";

fn stack_with_busybox(mode: Mode) -> Stack {
    let s = Stack::start(mode);
    s.import_busybox("busybox");
    s
}

fn inspect(s: &Stack, format: &str, c: &str) -> String {
    s.berth(&["inspect", "-f", format, c])
        .ok()
        .trim()
        .to_string()
}

fn unix_now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Actions of the container's events between `since` and now.
fn actions(s: &Stack, since: &str, c: &str) -> Vec<String> {
    s.berth(&[
        "events",
        "--since",
        since,
        "--until",
        &unix_now(),
        "--filter",
        &format!("container={c}"),
        "--format",
        "{{.Action}}",
    ])
    .ok()
    .lines()
    .map(String::from)
    .collect()
}

/// The v1 memory cgroup directory (or the v2 one) of a running pid.
fn memory_cgroup(pid: &str) -> PathBuf {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v1 = cg.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls
            .split(',')
            .any(|c| c == "memory")
            .then(|| PathBuf::from("/sys/fs/cgroup/memory").join(path.trim_start_matches('/')))
    });
    v1.unwrap_or_else(|| {
        let path = cg.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        PathBuf::from("/sys/fs/cgroup").join(path.trim_start_matches('/'))
    })
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

fn is_v2(dir: &Path) -> bool {
    dir.join("memory.max").exists()
}

/// Whether this process has CAP_SYS_RESOURCE (needed to lower
/// oom_score_adj below the inherited minimum).
fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    const CAP_SYS_RESOURCE: u32 = 24;
    eff & (1 << CAP_SYS_RESOURCE) != 0
}

fn oom_kill_of_the_init(mode: Mode) {
    let s = stack_with_busybox(mode);
    let since = unix_now();
    // The first run eats memory and is killed; a later start finds /ran
    // and just sleeps.
    let script = format!("test -e /ran && exec sleep 1000; touch /ran; {EAT_64M}");
    let r = s.berth(&[
        "run", "--name", "eater", "-m", "8m", "busybox", "sh", "-c", &script,
    ]);
    assert_eq!(r.code, 137, "{r:?}\n{}", s.daemon_logs());
    assert_eq!(inspect(&s, "{{.State.OOMKilled}}", "eater"), "true");
    assert_eq!(inspect(&s, "{{.State.ExitCode}}", "eater"), "137");
    assert_eq!(inspect(&s, "{{.State.Status}}", "eater"), "exited");
    assert_eq!(
        inspect(&s, "{{.HostConfig.Memory}}", "eater"),
        (8 * MIB).to_string()
    );
    // Docker's default: memory + swap = twice the memory (where the host
    // accounts swap; else docker's warning and -1).
    let swap = inspect(&s, "{{.HostConfig.MemorySwap}}", "eater");
    assert!(swap == (16 * MIB).to_string() || swap == "-1", "{swap}");
    // docker: oom, then die with the exit code.
    let a = actions(&s, &since, "eater");
    assert_eq!(a, ["create", "start", "oom", "die"], "{a:?}");
    let die = s
        .berth(&[
            "events",
            "--since",
            &since,
            "--until",
            &unix_now(),
            "--filter",
            "container=eater",
            "--filter",
            "event=die",
            "--format",
            "{{.Actor.Attributes.exitCode}}",
        ])
        .ok();
    assert_eq!(die.trim(), "137");
    // A new run starts without the mark (docker resets OOMKilled).
    s.berth(&["start", "eater"]).ok();
    assert_eq!(inspect(&s, "{{.State.Running}}", "eater"), "true");
    assert_eq!(inspect(&s, "{{.State.OOMKilled}}", "eater"), "false");
    s.berth(&["rm", "-f", "eater"]).ok();
}

#[test]
fn oom_killed_init_exits_137_with_an_oom_event() {
    require_root!();
    oom_kill_of_the_init(Mode::AllInOne);
}

#[test]
fn oom_killed_init_with_split_services() {
    require_root!();
    oom_kill_of_the_init(Mode::Split);
}

/// A child of the init is OOM-killed: the container runs on, the `oom`
/// event comes as it happens and State.OOMKilled is set (docker's
/// meaning: the cgroup saw an OOM kill), once, also after the exit.
#[test]
fn oom_kill_of_a_child_is_reported_while_running() {
    require_root!();
    let s = stack_with_busybox(Mode::AllInOne);
    let since = unix_now();
    let mut events = s
        .cmd()
        .args([
            "events",
            "--since",
            &since,
            "--filter",
            "container=parent",
            "--filter",
            "event=oom",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = events.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let script = format!("({EAT_64M}); echo survived; exec sleep 1000");
    s.berth(&[
        "run", "-d", "--name", "parent", "-m", "8m", "busybox", "sh", "-c", &script,
    ])
    .ok();
    let got = rx.recv_timeout(Duration::from_secs(60));
    let _ = events.kill();
    let _ = events.wait();
    assert_eq!(got.as_deref(), Ok("oom parent"), "{}", s.daemon_logs());
    assert_eq!(inspect(&s, "{{.State.OOMKilled}}", "parent"), "true");
    assert_eq!(inspect(&s, "{{.State.Running}}", "parent"), "true");
    // The init went on.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !s.berth(&["logs", "parent"]).ok().contains("survived") {
        assert!(
            std::time::Instant::now() < deadline,
            "no 'survived' in logs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The kernel's own count: the OOM killer may take more than one
    // process of the pipeline (CI saw two kills, and two events).
    let kills = kernel_oom_kills(&s.id_of("parent"));
    assert!(kills >= 1, "the kernel counted no OOM kill");
    s.berth(&["kill", "parent"]).ok();
    assert_eq!(s.berth(&["wait", "parent"]).ok().trim(), "137");
    assert_eq!(inspect(&s, "{{.State.OOMKilled}}", "parent"), "true");
    let a = actions(&s, &since, "parent");
    // An event per kill seen; kills close together may be seen as one
    // (the counter is read after the notification), never more events
    // than kills.
    let ooms = a.iter().filter(|a| *a == "oom").count() as u64;
    assert!(
        (1..=kills).contains(&ooms),
        "{ooms} oom events for {kills} kills: {a:?}"
    );
    assert_eq!(a.last().map(String::as_str), Some("die"), "{a:?}");

    s.berth(&["rm", "parent"]).ok();
}

#[test]
fn memory_limits_land_in_the_cgroup_and_inspect() {
    require_root!();
    let s = stack_with_busybox(Mode::AllInOne);
    s.berth(&[
        "run",
        "-d",
        "--name",
        "lim",
        "-m",
        "32m",
        "--memory-swap",
        "64m",
        "--memory-reservation",
        "16m",
        "--memory-swappiness",
        "10",
        "--oom-kill-disable",
        "--oom-score-adj",
        "500",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    let pid = inspect(&s, "{{.State.Pid}}", "lim");
    let dir = memory_cgroup(&pid);
    let v2 = is_v2(&dir);
    let hc = inspect(&s, "{{json .HostConfig}}", "lim");
    let hc: serde_json::Value = serde_json::from_str(&hc).unwrap();
    assert_eq!(hc["Memory"], 32 * MIB);
    assert_eq!(hc["MemoryReservation"], 16 * MIB);
    assert_eq!(hc["OomScoreAdj"], 500);
    if v2 {
        assert_eq!(read(&dir.join("memory.max")), (32 * MIB).to_string());
        assert_eq!(read(&dir.join("memory.low")), (16 * MIB).to_string());
        // Dropped with docker's warnings on v2.
        assert_eq!(hc["MemorySwappiness"], serde_json::Value::Null);
        assert_eq!(hc["OomKillDisable"], false);
    } else {
        assert_eq!(
            read(&dir.join("memory.limit_in_bytes")),
            (32 * MIB).to_string()
        );
        assert_eq!(
            read(&dir.join("memory.soft_limit_in_bytes")),
            (16 * MIB).to_string()
        );
        assert_eq!(read(&dir.join("memory.swappiness")), "10");
        assert!(read(&dir.join("memory.oom_control")).contains("oom_kill_disable 1"));
        assert_eq!(hc["MemorySwappiness"], 10);
        assert_eq!(hc["OomKillDisable"], true);
        // Swap accounting (memsw) exists on this kind of host; without it
        // the swap limit is dropped with docker's warning (MemorySwap -1).
        if dir.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(
                read(&dir.join("memory.memsw.limit_in_bytes")),
                (64 * MIB).to_string()
            );
            assert_eq!(hc["MemorySwap"], 64 * MIB);
        } else {
            assert_eq!(hc["MemorySwap"], -1);
        }
    }
    assert_eq!(
        read(Path::new(&format!("/proc/{pid}/oom_score_adj"))),
        "500"
    );
    // An exec gets the container's score too.
    let adj = s
        .berth(&["exec", "lim", "cat", "/proc/self/oom_score_adj"])
        .ok();
    assert_eq!(adj.trim(), "500");
    // stats shows the limit.
    let mem = s
        .berth(&["stats", "--no-stream", "--format", "{{.MemUsage}}", "lim"])
        .ok();
    assert!(mem.trim().ends_with("/ 32MiB"), "{mem:?}");
    s.berth(&["rm", "-f", "lim"]).ok();

    // -m alone: memory+swap twice the memory, in the cgroup too.
    s.berth(&[
        "run", "-d", "--name", "dbl", "-m", "16m", "busybox", "sleep", "1000",
    ])
    .ok();
    let pid = inspect(&s, "{{.State.Pid}}", "dbl");
    let dir = memory_cgroup(&pid);
    let swap_file = dir.join("memory.memsw.limit_in_bytes");
    if swap_file.exists() {
        assert_eq!(
            inspect(&s, "{{.HostConfig.MemorySwap}}", "dbl"),
            (32 * MIB).to_string()
        );
        assert_eq!(read(&swap_file), (32 * MIB).to_string());
    }
    if v2 && dir.join("memory.swap.max").exists() {
        // v2 takes the swap alone.
        assert_eq!(read(&dir.join("memory.swap.max")), (16 * MIB).to_string());
    }
    // The init gets 0, like docker, whatever the daemon has.
    assert_eq!(read(Path::new(&format!("/proc/{pid}/oom_score_adj"))), "0");
    assert_eq!(
        inspect(&s, "{{.HostConfig.MemorySwappiness}}", "dbl"),
        "<no value>"
    );
    s.berth(&["rm", "-f", "dbl"]).ok();

    // Unlimited swap, and a score below the inherited minimum: without
    // CAP_SYS_RESOURCE it is clamped to the lowest allowed value.
    s.berth(&[
        "run",
        "-d",
        "--name",
        "unl",
        "-m",
        "16m",
        "--memory-swap",
        "-1",
        "--oom-score-adj",
        "-500",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    assert_eq!(inspect(&s, "{{.HostConfig.MemorySwap}}", "unl"), "-1");
    assert_eq!(inspect(&s, "{{.HostConfig.OomScoreAdj}}", "unl"), "-500");
    let pid = inspect(&s, "{{.State.Pid}}", "unl");
    let dir = memory_cgroup(&pid);
    if dir.join("memory.memsw.limit_in_bytes").exists() {
        let v: u64 = read(&dir.join("memory.memsw.limit_in_bytes"))
            .parse()
            .unwrap();
        assert!(v > 1 << 40, "memsw not unlimited: {v}");
    }
    let adj: i32 = read(Path::new(&format!("/proc/{pid}/oom_score_adj")))
        .parse()
        .unwrap();
    if has_cap_sys_resource() {
        assert_eq!(adj, -500);
    } else {
        assert!((-500..=0).contains(&adj), "{adj}");
    }
    s.berth(&["rm", "-f", "unl"]).ok();
}

#[test]
fn bad_memory_values_are_refused_before_anything_is_created() {
    require_root!();
    let s = stack_with_busybox(Mode::AllInOne);
    let cases: &[(&[&str], &str)] = &[
        (&["-m", "4m"], "Minimum memory limit allowed is 6MB"),
        (&["-m", "4"], "Minimum memory limit allowed is 6MB"),
        (
            &["-m", "12x"],
            "invalid argument \"12x\" for \"-m, --memory\" flag: invalid suffix: 'x'",
        ),
        (
            &["--memory", "abc"],
            "invalid argument \"abc\" for \"-m, --memory\" flag: invalid size: 'abc'",
        ),
        (
            &["-m", "16m", "--memory-swap", "8m"],
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        ),
        (
            &["--memory-swap", "16m"],
            "You should always set the Memory limit when using Memoryswap limit, see usage",
        ),
        (
            &["--memory-swappiness", "101"],
            "Invalid value: 101, valid memory swappiness range is 0-100",
        ),
        (
            &["--memory-reservation", "1m"],
            "Minimum memory reservation allowed is 6MB",
        ),
        (
            &["-m", "8m", "--memory-reservation", "16m"],
            "Minimum memory limit can not be less than memory reservation limit, see usage",
        ),
        (
            &["--oom-score-adj", "1001"],
            "Invalid value 1001, range for oom score adj is [-1000, 1000]",
        ),
        (
            &["--oom-score-adj", "-1001"],
            "Invalid value -1001, range for oom score adj is [-1000, 1000]",
        ),
    ];
    for verb in ["run", "create"] {
        for (flags, msg) in cases {
            let mut args = vec![verb, "--name", "never"];
            args.extend_from_slice(flags);
            args.extend_from_slice(&["busybox", "true"]);
            let r = s.berth(&args);
            assert_eq!(r.code, 125, "{args:?}: {r:?}");
            assert!(r.stderr.contains(msg), "{args:?}: {r:?}");
            assert!(
                r.stderr.contains(&format!("See 'berth {verb} --help'.")),
                "{r:?}"
            );
        }
    }
    // Checked before the image is looked up, as docker does.
    let r = s.berth(&["create", "-m", "4m", "no-such-image-here", "true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(
        r.stderr.contains("Minimum memory limit allowed is 6MB"),
        "{r:?}"
    );
    assert_eq!(s.berth(&["ps", "-aq"]).ok(), "");
    let containers = s.root.join("containers");
    let left: Vec<_> = std::fs::read_dir(&containers)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // Docker's byte sizes: -m 6m is the smallest allowed.
    s.berth(&[
        "create", "--name", "smallest", "-m", "6m", "busybox", "true",
    ])
    .ok();
    assert_eq!(
        inspect(&s, "{{.HostConfig.Memory}}", "smallest"),
        (6 * MIB).to_string()
    );
    s.berth(&["rm", "smallest"]).ok();
}

/// After the daemons are killed and started again, the OOM watch is set up
/// again for running containers: an exec that eats memory is reported.
#[test]
fn oom_watch_survives_a_daemon_restart() {
    require_root!();
    let mut s = stack_with_busybox(Mode::AllInOne);
    s.berth(&[
        "run", "-d", "--name", "survivor", "-m", "8m", "busybox", "sleep", "1000",
    ])
    .ok();
    s.kill9_and_restart();
    assert_eq!(inspect(&s, "{{.State.Running}}", "survivor"), "true");
    assert_eq!(inspect(&s, "{{.State.OOMKilled}}", "survivor"), "false");
    let since = unix_now();
    let mut events = s
        .cmd()
        .args([
            "events",
            "--since",
            &since,
            "--filter",
            "container=survivor",
            "--filter",
            "event=oom",
            "--format",
            "{{.Action}}",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = events.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The exec's shell is in the container's cgroup and is the one killed.
    let r = s.berth(&["exec", "survivor", "sh", "-c", EAT_64M]);
    assert_eq!(r.code, 137, "{r:?}");
    let got = rx.recv_timeout(Duration::from_secs(60));
    let _ = events.kill();
    let _ = events.wait();
    assert_eq!(got.as_deref(), Ok("oom"), "{}", s.daemon_logs());
    assert_eq!(inspect(&s, "{{.State.OOMKilled}}", "survivor"), "true");
    assert_eq!(inspect(&s, "{{.State.Running}}", "survivor"), "true");
    s.berth(&["rm", "-f", "survivor"]).ok();
}

/// OOM kills the kernel counted in the container's memory cgroup (v1
/// memory.oom_control, v2 memory.events).
fn kernel_oom_kills(id: &str) -> u64 {
    let v1 = format!("/sys/fs/cgroup/memory/berth/default/{id}/memory.oom_control");
    let v2 = format!("/sys/fs/cgroup/berth/default/{id}/memory.events");
    let text = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .expect("the container's memory cgroup");
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .expect("an oom_kill counter")
}
