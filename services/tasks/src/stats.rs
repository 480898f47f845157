//! Resource usage of a task from its cgroup files and /proc (cgroup v1 and
//! v2), the numbers `docker stats` shows.

use std::path::Path;

use berth_proto::tasks::v1::{BlockDeviceStats, InterfaceStats, TaskStats};
use berth_runtime::cgroupfs;

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

fn read_u64(p: &Path) -> Option<u64> {
    read(p)?.trim().parse().ok()
}

/// Value of `key` in a flat keyed file (`memory.stat`, `cpu.stat`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Per-device I/O from v1 blkio files: `bytes` is an `io_service_bytes`
/// file, `ops` an `io_serviced` one ("8:0 Read 4096" lines; the "Total"
/// lines are ignored). Devices in the order they first appear.
pub fn blkio_v1(bytes: &str, ops: &str) -> Vec<BlockDeviceStats> {
    let mut out: Vec<BlockDeviceStats> = Vec::new();
    for (text, is_bytes) in [(bytes, true), (ops, false)] {
        for l in text.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [dev, op, n] = f[..] else { continue };
            let Some((major, minor)) = major_minor(dev) else {
                continue;
            };
            let n: u64 = n.parse().unwrap_or(0);
            let d = device_entry(&mut out, major, minor);
            match (op, is_bytes) {
                ("Read", true) => d.read_bytes += n,
                ("Write", true) => d.write_bytes += n,
                ("Read", false) => d.reads += n,
                ("Write", false) => d.writes += n,
                _ => {}
            }
        }
    }
    out
}

/// Per-device I/O from v2 `io.stat` ("8:0 rbytes=1 wbytes=2 rios=3 wios=4
/// ...").
pub fn io_v2(text: &str) -> Vec<BlockDeviceStats> {
    let mut out: Vec<BlockDeviceStats> = Vec::new();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let Some((major, minor)) = f.next().and_then(major_minor) else {
            continue;
        };
        let d = device_entry(&mut out, major, minor);
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let v: u64 = v.parse().unwrap_or(0);
            match k {
                "rbytes" => d.read_bytes += v,
                "wbytes" => d.write_bytes += v,
                "rios" => d.reads += v,
                "wios" => d.writes += v,
                _ => {}
            }
        }
    }
    out
}

fn major_minor(dev: &str) -> Option<(u32, u32)> {
    let (a, b) = dev.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn device_entry(out: &mut Vec<BlockDeviceStats>, major: u32, minor: u32) -> &mut BlockDeviceStats {
    let i = match out
        .iter()
        .position(|d| d.major == major && d.minor == minor)
    {
        Some(i) => i,
        None => {
            out.push(BlockDeviceStats {
                major,
                minor,
                ..Default::default()
            });
            out.len() - 1
        }
    };
    &mut out[i]
}

/// The device node of a block device from its sysfs `uevent`
/// ("DEVNAME=vda" gives "/dev/vda"); MAJOR:MINOR when it has none.
pub fn device_name(major: u32, minor: u32, uevent: Option<&str>) -> String {
    uevent
        .and_then(|u| u.lines().find_map(|l| l.strip_prefix("DEVNAME=")))
        .map(|n| format!("/dev/{}", n.trim()))
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

/// The interfaces of /proc/PID/net/dev with their counters, loopback
/// excluded.
pub fn net_dev(text: &str) -> Vec<InterfaceStats> {
    let mut out = Vec::new();
    for l in text.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if f.len() >= 12 {
            out.push(InterfaceStats {
                name: name.to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            });
        }
    }
    out
}

/// User and system CPU nanoseconds from v1 `cpuacct.stat` (in clock
/// ticks).
pub fn cpuacct_stat(text: &str, ticks_per_sec: u64) -> (u64, u64) {
    let ns = |k| keyed(text, k).unwrap_or(0) * (1_000_000_000 / ticks_per_sec.max(1));
    (ns("user"), ns("system"))
}

/// Host CPU time in nanoseconds from the `cpu` line of /proc/stat.
pub fn system_cpu_ns(proc_stat: &str, ticks_per_sec: u64) -> u64 {
    let Some(line) = proc_stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let ticks: u64 = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse::<u64>().unwrap_or(0))
        .sum();
    ticks.saturating_mul(1_000_000_000 / ticks_per_sec.max(1))
}

fn host_memory() -> u64 {
    read(Path::new("/proc/meminfo"))
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A v1 memory limit at or above this is "no limit" (the kernel shows
/// an unlimited cgroup as a page-rounded i64::MAX); as cAdvisor does.
const UNLIMITED: u64 = 1 << 62;

fn count_lines(p: &Path) -> u64 {
    read(p).map_or(0, |t| t.lines().filter(|l| !l.is_empty()).count() as u64)
}

/// What the stats of every task share, read once per call: this
/// process's mountinfo (where the cgroup hierarchies are; reading it is
/// most of the cost of one task's stats when many containers have mounts),
/// the host's memory, CPU time and CPU count.
pub struct Host {
    mountinfo: String,
    memory: u64,
    system_cpu_ns: u64,
    ticks: u64,
    cpus: u32,
}

impl Host {
    pub fn read() -> Host {
        // SAFETY: sysconf has no preconditions.
        let (ticks, cpus) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_NPROCESSORS_ONLN),
            )
        };
        let ticks = ticks.max(1) as u64;
        Host {
            mountinfo: cgroup_mounts(&read(Path::new("/proc/self/mountinfo")).unwrap_or_default()),
            memory: host_memory(),
            system_cpu_ns: system_cpu_ns(&read(Path::new("/proc/stat")).unwrap_or_default(), ticks),
            ticks,
            cpus: cpus.max(1) as u32,
        }
    }
}

/// The cgroup and cgroup2 lines of a mountinfo: all that finding a
/// task's cgroup directories needs, a few lines of the many a host with
/// containers has.
fn cgroup_mounts(mountinfo: &str) -> String {
    mountinfo
        .lines()
        .filter(|l| {
            l.split_once(" - ")
                .is_some_and(|(_, r)| r.starts_with("cgroup ") || r.starts_with("cgroup2 "))
        })
        .flat_map(|l| [l, "\n"])
        .collect()
}

/// Collects the stats of the task whose init is `pid`; `None` when that
/// process is gone.
pub fn collect(pid: i32) -> Option<TaskStats> {
    collect_with(pid, &Host::read())
}

/// [`collect`] with the host's numbers already read.
pub fn collect_with(pid: i32, host: &Host) -> Option<TaskStats> {
    let cg = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
    let dirs = cgroupfs::cgroup_dirs(&cg, &host.mountinfo);
    let v1 = dirs.iter().any(|(c, _)| !c.is_empty());
    let mut s = TaskStats::default();
    let host_mem = host.memory;
    let ticks = host.ticks;
    if v1 {
        if let Some(d) = cgroupfs::controller_dir(&dirs, "cpuacct") {
            s.cpu_total_ns = read_u64(&d.join("cpuacct.usage")).unwrap_or(0);
            (s.cpu_user_ns, s.cpu_system_ns) = match (
                read_u64(&d.join("cpuacct.usage_user")),
                read_u64(&d.join("cpuacct.usage_sys")),
            ) {
                (Some(u), Some(k)) => (u, k),
                _ => cpuacct_stat(&read(&d.join("cpuacct.stat")).unwrap_or_default(), ticks),
            };
        }
        if let Some(d) = cgroupfs::controller_dir(&dirs, "memory") {
            s.memory_usage = read_u64(&d.join("memory.usage_in_bytes")).unwrap_or(0);
            s.memory_limit = read_u64(&d.join("memory.limit_in_bytes")).unwrap_or(0);
            let stat = read(&d.join("memory.stat")).unwrap_or_default();
            let hier = |k: &str| keyed(&stat, &format!("total_{k}")).or_else(|| keyed(&stat, k));
            s.memory_cache = hier("cache").unwrap_or(0);
            s.memory_rss = hier("rss").unwrap_or(0);
            s.memory_working_set = s
                .memory_usage
                .saturating_sub(hier("inactive_file").unwrap_or(0));
            s.processes = count_lines(&d.join("cgroup.procs"));
        }
        if let Some(d) = cgroupfs::controller_dir(&dirs, "pids") {
            s.pids = read_u64(&d.join("pids.current")).unwrap_or(0);
        }
        if let Some(d) = cgroupfs::controller_dir(&dirs, "blkio") {
            // The throttle files count the I/O to devices that have a
            // throttle limit in some cgroup; the others only that of the
            // CFQ/BFQ schedulers (empty with blk-mq).
            let pick = |names: &[&str]| {
                names
                    .iter()
                    .filter_map(|n| read(&d.join(n)))
                    .find(|t| t.lines().count() > 1)
                    .unwrap_or_default()
            };
            s.block_devices = blkio_v1(
                &pick(&[
                    "blkio.throttle.io_service_bytes_recursive",
                    "blkio.throttle.io_service_bytes",
                    "blkio.io_service_bytes",
                ]),
                &pick(&[
                    "blkio.throttle.io_serviced_recursive",
                    "blkio.throttle.io_serviced",
                    "blkio.io_serviced",
                ]),
            );
        }
    } else if let Some((_, d)) = dirs.first() {
        let cpu = read(&d.join("cpu.stat")).unwrap_or_default();
        s.cpu_total_ns = keyed(&cpu, "usage_usec").unwrap_or(0) * 1000;
        s.cpu_user_ns = keyed(&cpu, "user_usec").unwrap_or(0) * 1000;
        s.cpu_system_ns = keyed(&cpu, "system_usec").unwrap_or(0) * 1000;
        s.memory_usage = read_u64(&d.join("memory.current")).unwrap_or(0);
        // "max" when unlimited: not a number, 0.
        s.memory_limit = read_u64(&d.join("memory.max")).unwrap_or(0);
        let stat = read(&d.join("memory.stat")).unwrap_or_default();
        s.memory_cache = keyed(&stat, "file").unwrap_or(0);
        s.memory_rss = keyed(&stat, "anon").unwrap_or(0);
        s.memory_working_set = s
            .memory_usage
            .saturating_sub(keyed(&stat, "inactive_file").unwrap_or(0));
        s.pids = read_u64(&d.join("pids.current")).unwrap_or(0);
        s.processes = count_lines(&d.join("cgroup.procs"));
        s.block_devices = io_v2(&read(&d.join("io.stat")).unwrap_or_default());
    }
    s.memory_cgroup_limit = if s.memory_limit >= UNLIMITED {
        0
    } else {
        s.memory_limit
    };
    // No limit reads as a huge number (v1) or "max" (v2): show the host's.
    if s.memory_limit == 0 || (host_mem > 0 && s.memory_limit > host_mem) {
        s.memory_limit = host_mem;
    }
    for d in &mut s.block_devices {
        let uevent = read(Path::new(&format!(
            "/sys/dev/block/{}:{}/uevent",
            d.major, d.minor
        )));
        d.device = device_name(d.major, d.minor, uevent.as_deref());
        s.blkio_read_bytes += d.read_bytes;
        s.blkio_write_bytes += d.write_bytes;
    }
    s.interfaces = net_dev(&read(Path::new(&format!("/proc/{pid}/net/dev"))).unwrap_or_default());
    for i in &s.interfaces {
        s.net_rx_bytes += i.rx_bytes;
        s.net_tx_bytes += i.tx_bytes;
    }
    s.system_cpu_ns = host.system_cpu_ns;
    s.online_cpus = host.cpus;
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert_eq!(keyed("cache 10\ntotal_cache 20\n", "total_cache"), Some(20));
        assert_eq!(keyed("cache 10\n", "rss"), None);
        let devs = blkio_v1(
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\n8:16 Read 1\nTotal 12289\n",
            "8:0 Read 3\n8:0 Write 5\n8:0 Total 8\nTotal 8\n",
        );
        assert_eq!(devs.len(), 2);
        assert_eq!(
            (
                devs[0].major,
                devs[0].minor,
                devs[0].read_bytes,
                devs[0].write_bytes
            ),
            (8, 0, 4096, 8192)
        );
        assert_eq!((devs[0].reads, devs[0].writes), (3, 5));
        assert_eq!(
            (devs[1].minor, devs[1].read_bytes, devs[1].reads),
            (16, 1, 0)
        );
        let devs = io_v2("8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0\n254:0 rbytes=5\n");
        assert_eq!(devs.len(), 2);
        assert_eq!(
            (
                devs[0].read_bytes,
                devs[0].write_bytes,
                devs[0].reads,
                devs[0].writes
            ),
            (10, 20, 1, 2)
        );
        assert_eq!((devs[1].major, devs[1].read_bytes), (254, 5));
        assert_eq!(
            device_name(
                254,
                0,
                Some("MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n")
            ),
            "/dev/vda"
        );
        assert_eq!(device_name(7, 3, None), "7:3");
        let dev = "Inter-|   Receive\n face |bytes\n    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 656 8 1 2 0 0 0 0 42 1 3 4 0 0 0 0\n";
        let ifs = net_dev(dev);
        assert_eq!(ifs.len(), 1);
        let e = &ifs[0];
        assert_eq!(e.name, "eth0");
        assert_eq!(
            (e.rx_bytes, e.rx_packets, e.rx_errors, e.rx_dropped),
            (656, 8, 1, 2)
        );
        assert_eq!(
            (e.tx_bytes, e.tx_packets, e.tx_errors, e.tx_dropped),
            (42, 1, 3, 4)
        );
        let mi = "25 1 0:22 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                  26 1 0:23 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                  90 1 0:50 / /var/lib/x/rootfs rw - overlay overlay rw,lowerdir=/a\n";
        let kept = cgroup_mounts(mi);
        assert_eq!(kept.lines().count(), 2, "{kept}");
        assert_eq!(
            cgroupfs::cgroup_dirs("4:memory:/berth/x\n", &kept),
            vec![(
                "memory".to_string(),
                std::path::PathBuf::from("/sys/fs/cgroup/memory/berth/x")
            )]
        );
        assert_eq!(
            cgroupfs::cgroup_dirs("4:memory:/berth/x\n", &kept),
            cgroupfs::cgroup_dirs("4:memory:/berth/x\n", mi)
        );
        assert_eq!(
            cpuacct_stat("user 150\nsystem 20\n", 100),
            (1_500_000_000, 200_000_000)
        );
        assert_eq!(
            system_cpu_ns("cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1\n", 100),
            36 * 10_000_000
        );
    }
}
