//! End-to-end: CPU, pids, block I/O and ulimit limits at run time and live
//! with `update`, checked in the cgroup files and by behaviour (cgroup v1
//! on these machines; the memory part is in memory.rs).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_integration::{require_root, Mode, Stack};

fn stack_with_busybox() -> Stack {
    let s = Stack::start(Mode::AllInOne);
    s.import_busybox("busybox");
    s
}

/// The container's directory in v1 controller `ctl`.
fn cg(ctl: &str, id: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/cgroup/{ctl}/berth/default/{id}"))
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

fn v1_host() -> bool {
    PathBuf::from("/sys/fs/cgroup/cpu/cpu.shares").exists()
}

fn online_cpus() -> usize {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    s.trim()
        .split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

/// CPU time (ns) the container's cgroup used.
fn cpu_ns(id: &str) -> u64 {
    read(cg("cpuacct", id).join("cpuacct.usage"))
        .parse()
        .unwrap()
}

/// Starts a detached busy loop; returns its full id.
fn busy(s: &Stack, name: &str, flags: &[&str]) -> String {
    let mut a = vec!["run", "-d", "--name", name];
    a.extend_from_slice(flags);
    a.extend(["busybox", "sh", "-c", "while :; do :; done"]);
    let r = s.berth(&a);
    assert_eq!(r.code, 0, "{r:?}");
    s.id_of(name)
}

/// Cores' worth of CPU each cgroup used over `window`.
fn usage(ids: &[&str], window: Duration) -> Vec<f64> {
    let t0 = Instant::now();
    let before: Vec<u64> = ids.iter().map(|i| cpu_ns(i)).collect();
    std::thread::sleep(window);
    let after: Vec<u64> = ids.iter().map(|i| cpu_ns(i)).collect();
    let secs = t0.elapsed().as_secs_f64();
    before
        .iter()
        .zip(after)
        .map(|(b, a)| (a - b) as f64 / 1e9 / secs)
        .collect()
}

#[test]
fn values_land_in_the_cgroup_files_and_inspect() {
    require_root!();
    if !v1_host() {
        eprintln!("skipped: checks cgroup v1 files");
        return;
    }
    let s = stack_with_busybox();
    let r = s.berth(&[
        "run",
        "-d",
        "--name",
        "lim",
        "--cpus",
        "0.5",
        "--cpu-shares",
        "512",
        "--cpuset-cpus",
        "0",
        "--pids-limit",
        "50",
        "--ulimit",
        "nofile=100:200",
        "--kernel-memory",
        "8m",
        "busybox",
        "sleep",
        "300",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("WARNING: Specifying a kernel memory limit is deprecated"),
        "{r:?}"
    );
    let id = s.id_of("lim");
    assert_eq!(read(cg("cpu", &id).join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(cg("cpu", &id).join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(cg("cpu", &id).join("cpu.shares")), "512");
    assert_eq!(read(cg("cpuset", &id).join("cpuset.cpus")), "0");
    assert_eq!(read(cg("pids", &id).join("pids.max")), "50");
    assert_eq!(
        s.berth(&["exec", "lim", "sh", "-c", "ulimit -Sn; ulimit -Hn"])
            .ok(),
        "100\n200\n"
    );
    let f = "{{.HostConfig.NanoCpus}} {{.HostConfig.CpuShares}} {{.HostConfig.CpusetCpus}} {{.HostConfig.PidsLimit}} {{.HostConfig.KernelMemory}} {{json .HostConfig.Ulimits}}";
    assert_eq!(
        s.berth(&["inspect", "-f", f, "lim"]).ok(),
        "500000000 512 0 50 8388608 [{\"Name\":\"nofile\",\"Hard\":200,\"Soft\":100}]\n"
    );
    // No limits: docker's zero values.
    s.berth(&["create", "--name", "plain", "busybox", "true"])
        .ok();
    let f = "{{.HostConfig.NanoCpus}} {{.HostConfig.CpuPeriod}} {{.HostConfig.CpuQuota}} {{json .HostConfig.PidsLimit}} {{.HostConfig.BlkioWeight}} {{json .HostConfig.BlkioDeviceReadBps}} {{json .HostConfig.Ulimits}}";
    assert_eq!(
        s.berth(&["inspect", "-f", f, "plain"]).ok(),
        "0 0 0 null 0 [] null\n"
    );
}

#[test]
fn cpu_shares_split_one_core_two_to_one() {
    require_root!();
    if !v1_host() {
        eprintln!("skipped: reads cgroup v1 cpuacct");
        return;
    }
    let s = stack_with_busybox();
    let a = busy(&s, "heavy", &["--cpuset-cpus", "0", "--cpu-shares", "1024"]);
    let b = busy(&s, "light", &["--cpuset-cpus", "0", "--cpu-shares", "512"]);
    std::thread::sleep(Duration::from_millis(500));
    let u = usage(&[&a, &b], Duration::from_secs(3));
    let ratio = u[0] / u[1].max(1e-6);
    // 2:1 by weight; wide bounds so that other load on the core cannot
    // make it flake, narrow enough that equal shares (1:1) fail.
    assert!((1.5..2.8).contains(&ratio), "ratio {ratio:.2} ({u:?})");
    assert!(u[0] + u[1] < 1.15, "more than one core: {u:?}");
}

#[test]
fn cpus_caps_a_busy_loop_and_update_changes_it_live() {
    require_root!();
    if !v1_host() {
        eprintln!("skipped: reads cgroup v1 cpuacct");
        return;
    }
    let s = stack_with_busybox();
    let id = busy(&s, "capped", &["--cpus", "0.2"]);
    std::thread::sleep(Duration::from_millis(500));
    let u = usage(&[&id], Duration::from_secs(3))[0];
    assert!((0.05..0.3).contains(&u), "--cpus 0.2 used {u:.2} of a core");
    // update: a whole core, at once, without a restart.
    let pid = s.berth(&["inspect", "-f", "{{.State.Pid}}", "capped"]).ok();
    let r = s.berth(&["update", "--cpus", "1", "capped"]);
    assert_eq!(r.ok(), "capped\n");
    assert_eq!(read(cg("cpu", &id).join("cpu.cfs_quota_us")), "100000");
    std::thread::sleep(Duration::from_millis(300));
    let u = usage(&[&id], Duration::from_secs(3))[0];
    assert!(
        (0.4..1.1).contains(&u),
        "after update --cpus 1: {u:.2} of a core"
    );
    assert_eq!(
        s.berth(&["inspect", "-f", "{{.State.Pid}}", "capped"]).ok(),
        pid
    );
    assert_eq!(
        s.berth(&["inspect", "-f", "{{.HostConfig.NanoCpus}}", "capped"])
            .ok(),
        "1000000000\n"
    );
}

#[test]
fn cpuset_pins_the_process() {
    require_root!();
    let s = stack_with_busybox();
    let last = (online_cpus() - 1).to_string();
    let r = s.run(&[
        "--cpuset-cpus",
        &last,
        "busybox",
        "sh",
        "-c",
        "grep Cpus_allowed_list /proc/self/status | tr -d '\\t '; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; cut -d' ' -f39 /proc/self/stat",
    ]);
    assert_eq!(r.ok(), format!("Cpus_allowed_list:{last}\n{last}\n"));
}

#[test]
fn pids_limit_stops_a_fork_loop_and_the_container_survives() {
    require_root!();
    let s = stack_with_busybox();
    let r = s.berth(&[
        "run",
        "-d",
        "--name",
        "pl",
        "--pids-limit",
        "8",
        "busybox",
        "sleep",
        "300",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    // The shell gives up at the first fork the kernel refuses (EAGAIN).
    let r = s.berth(&[
        "exec",
        "pl",
        "sh",
        "-c",
        "exec 2>/tmp/err; n=0; while [ $n -lt 40 ]; do sleep 2 & n=$((n+1)); done; echo all",
    ]);
    assert_ne!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "", "{r:?}");
    let err = s.berth(&["exec", "pl", "cat", "/tmp/err"]).ok();
    assert!(err.contains("Resource temporarily unavailable"), "{err}");
    let pids = std::fs::read_to_string(cg("pids", &s.id_of("pl")).join("pids.current"));
    if let Ok(p) = pids {
        assert!(p.trim().parse::<u32>().unwrap() <= 8, "{p}");
    }
    // Still running; once the sleepers are gone it forks again.
    assert_eq!(
        s.berth(&["inspect", "-f", "{{.State.Running}}", "pl"]).ok(),
        "true\n"
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(s.berth(&["exec", "pl", "echo", "ok"]).ok(), "ok\n");
    // update lifts it live.
    assert_eq!(
        s.berth(&["update", "--pids-limit", "100", "pl"]).ok(),
        "pl\n"
    );
    let r = s.berth(&[
        "exec",
        "pl",
        "sh",
        "-c",
        "n=0; while [ $n -lt 40 ]; do sleep 1 & n=$((n+1)); done; echo forked; wait",
    ]);
    assert_eq!(r.ok(), "forked\n");
}

#[test]
fn device_write_bps_throttles_direct_writes() {
    require_root!();
    if !v1_host() {
        eprintln!("skipped: v1 blkio");
        return;
    }
    let s = stack_with_busybox();
    // A loop device of the test's own: a size-limited volume is an ext4
    // image on one.
    s.berth(&["volume", "create", "--opt", "size=64m", "disk"])
        .ok();
    let data = s.root.join("volumes/default/disk/_data");
    let dev = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(data.to_str().unwrap()))
        .and_then(|l| l.split(" - ").nth(1))
        .and_then(|r| r.split(' ').nth(1))
        .unwrap()
        .to_string();
    assert!(dev.starts_with("/dev/loop"), "{dev}");
    let write = "dd if=/dev/zero of=/d/f bs=64k count=48 oflag=direct 2>&1 | tail -1";
    // Unthrottled: quick.
    let t = Instant::now();
    let r = s.run(&["-v", "disk:/d", "busybox", "sh", "-c", write]);
    assert_eq!(r.code, 0, "{r:?}");
    let free = t.elapsed();
    // 3 MiB at 1 MiB/s: about 3 s.
    let t = Instant::now();
    let r = s.run(&[
        "-v",
        "disk:/d",
        "--device-write-bps",
        &format!("{dev}:1mb"),
        "busybox",
        "sh",
        "-c",
        write,
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let throttled = t.elapsed();
    assert!(
        throttled >= Duration::from_millis(2200) && throttled > free + Duration::from_millis(1500),
        "throttled {throttled:?}, free {free:?}"
    );
    assert!(throttled < Duration::from_secs(20), "{throttled:?}");
    let r = s.berth(&[
        "create",
        "--name",
        "tt",
        "--device-read-iops",
        &format!("{dev}:100"),
        "busybox",
        "true",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        s.berth(&[
            "inspect",
            "-f",
            "{{json .HostConfig.BlkioDeviceReadIOps}}",
            "tt"
        ])
        .ok(),
        format!("[{{\"Path\":\"{dev}\",\"Rate\":100}}]\n")
    );
}

#[test]
fn update_memory_of_a_running_container() {
    require_root!();
    let s = stack_with_busybox();
    s.berth(&[
        "run", "-d", "--name", "mm", "-m", "64m", "busybox", "sleep", "300",
    ])
    .ok();
    let id = s.id_of("mm");
    // Above the swap limit docker set (2x): refused with docker's words.
    let r = s.berth(&["update", "-m", "256m", "mm"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("Memory limit should be smaller than already set memoryswap limit"),
        "{r:?}"
    );
    let r = s.berth(&["update", "-m", "96m", "--memory-swap", "256m", "mm"]);
    assert_eq!(r.ok(), "mm\n");
    if v1_host() {
        assert_eq!(
            read(cg("memory", &id).join("memory.limit_in_bytes")),
            (96u64 << 20).to_string()
        );
    }
    assert_eq!(
        s.berth(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}",
            "mm"
        ])
        .ok(),
        format!("{} {}\n", 96u64 << 20, 256u64 << 20)
    );
    // stats shows the new limit.
    let usage = s
        .berth(&["stats", "--no-stream", "--format", "{{.MemUsage}}", "mm"])
        .ok();
    assert!(usage.trim_end().ends_with("/ 96MiB"), "{usage}");
    // A smaller limit bites at once: allocating past it is OOM-killed.
    s.berth(&["update", "-m", "16m", "--memory-swap", "16m", "mm"])
        .ok();
    let r = s.berth(&[
        "exec",
        "mm",
        "sh",
        "-c",
        "x=$(head -c 64m /dev/zero | tr '\\0' a); echo ${#x}",
    ]);
    assert_eq!(r.code, 137, "{r:?}");
    // Kept for the next start.
    s.berth(&["restart", "-t", "0", "mm"]).ok();
    if v1_host() {
        assert_eq!(
            read(cg("memory", &id).join("memory.limit_in_bytes")),
            (16u64 << 20).to_string()
        );
    }
    // A stopped container is updated too; a restart policy as well.
    s.berth(&["stop", "-t", "0", "mm"]).ok();
    assert_eq!(
        s.berth(&["update", "--cpus", "1", "--restart", "always", "mm"])
            .ok(),
        "mm\n"
    );
    assert_eq!(
        s.berth(&[
            "inspect",
            "-f",
            "{{.HostConfig.NanoCpus}} {{.HostConfig.RestartPolicy.Name}}",
            "mm"
        ])
        .ok(),
        "1000000000 always\n"
    );
    let r = s.berth(&["update", "mm"]);
    assert_eq!(r.code, 1, "{r:?}");
    let r = s.berth(&["update", "--cpus", "1", "nosuch"]);
    assert!(r.stderr.contains("No such container: nosuch"), "{r:?}");
}

#[test]
fn bad_values_give_dockers_errors_before_anything_is_created() {
    require_root!();
    let s = stack_with_busybox();
    let n = online_cpus();
    let too_many = format!("{}", n + 1);
    let range =
        format!("Range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--cpus", &too_many], &range),
        (
            vec!["--cpus", "abc"],
            "failed to parse abc as a rational number",
        ),
        (
            vec!["--cpus", "1", "--cpu-period", "100000"],
            "Nano CPUs and CPU Period cannot both be set",
        ),
        (
            vec!["--cpu-period", "10"],
            "CPU cfs period can not be less than 1ms",
        ),
        (
            vec!["--cpu-quota", "10"],
            "CPU cfs quota can not be less than 1ms",
        ),
        (vec!["--cpu-shares", "-5"], "invalid CPU shares (-5)"),
        (
            vec!["--cpuset-cpus", "0-99"],
            "Requested CPUs are not available - requested 0-99",
        ),
        (
            vec!["--cpuset-cpus", "a"],
            "Invalid value a for cpuset cpus",
        ),
        (
            vec!["--cpuset-mems", "9"],
            "Requested memory nodes are not available",
        ),
        (
            vec!["--blkio-weight", "5"],
            "Range of blkio weight is from 10 to 1000",
        ),
        (
            vec!["--blkio-weight", "x"],
            "invalid argument \"x\" for \"--blkio-weight\" flag",
        ),
        (
            vec!["--pids-limit", "x"],
            "invalid argument \"x\" for \"--pids-limit\" flag",
        ),
        (
            vec!["--ulimit", "nofile=10:5"],
            "soft limit must be less than or equal to hard limit: 10 > 5",
        ),
        (vec!["--ulimit", "bogus=1"], "invalid ulimit type: bogus"),
        (
            vec!["--ulimit", "nofile"],
            "invalid ulimit argument: nofile",
        ),
        (
            vec!["--device-read-bps", "/dev/nosuchdev:1mb"],
            "/dev/nosuchdev",
        ),
        (
            vec!["--device-write-bps", "/dev/null:1mb"],
            "/dev/null is not a block device",
        ),
        (
            vec!["--device-read-bps", "sda:1mb"],
            "bad format for device path: sda:1mb",
        ),
        (
            vec!["--device-read-iops", "/dev/sda:x"],
            "invalid rate for device: /dev/sda:x",
        ),
        (vec!["--memory", "-1x"], "invalid argument"),
    ];
    for (flags, why) in &cases {
        let mut a = vec!["run", "--name", "never"];
        a.extend(flags.iter());
        a.extend(["busybox", "true"]);
        let r = s.berth(&a);
        assert_eq!(r.code, 125, "{flags:?}: {r:?}");
        assert!(r.stderr.contains(why), "{flags:?}: {r:?}");
    }
    assert_eq!(s.berth(&["ps", "-aq"]).ok(), "");
    // update checks the same way and changes nothing.
    s.berth(&["create", "--name", "cc", "--cpus", "0.5", "busybox", "true"])
        .ok();
    let r = s.berth(&["update", "--cpus", &too_many, "cc"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains(&range), "{r:?}");
    assert_eq!(
        s.berth(&["inspect", "-f", "{{.HostConfig.NanoCpus}}", "cc"])
            .ok(),
        "500000000\n"
    );
}
