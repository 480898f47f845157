//! Resource usage of a task from its cgroup files and /proc (cgroup v1 and
//! v2), the numbers `docker stats` shows.

use std::path::Path;

use berth_proto::tasks::v1::TaskStats;
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

/// Read and write bytes from v1 `blkio.throttle.io_service_bytes`
/// ("8:0 Read 4096" lines).
pub fn blkio_v1(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0, 0);
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 3 {
            let n: u64 = f[2].parse().unwrap_or(0);
            match f[1] {
                "Read" => r += n,
                "Write" => w += n,
                _ => {}
            }
        }
    }
    (r, w)
}

/// Read and write bytes from v2 `io.stat` ("8:0 rbytes=1 wbytes=2 ...").
pub fn io_v2(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0, 0);
    for l in text.lines() {
        for kv in l.split_whitespace().skip(1) {
            if let Some(v) = kv.strip_prefix("rbytes=") {
                r += v.parse::<u64>().unwrap_or(0);
            } else if let Some(v) = kv.strip_prefix("wbytes=") {
                w += v.parse::<u64>().unwrap_or(0);
            }
        }
    }
    (r, w)
}

/// Received and sent bytes over the interfaces of /proc/PID/net/dev,
/// loopback excluded.
pub fn net_dev(text: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0, 0);
    for l in text.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if f.len() >= 9 {
            rx += f[0];
            tx += f[8];
        }
    }
    (rx, tx)
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

/// Collects the stats of the task whose init is `pid`.
pub fn collect(pid: i32) -> TaskStats {
    let dirs = cgroupfs::of_pid(pid);
    let v1 = dirs.iter().any(|(c, _)| !c.is_empty());
    let mut s = TaskStats::default();
    let host_mem = host_memory();
    if v1 {
        if let Some(d) = cgroupfs::controller_dir(&dirs, "cpuacct") {
            s.cpu_total_ns = read_u64(&d.join("cpuacct.usage")).unwrap_or(0);
        }
        if let Some(d) = cgroupfs::controller_dir(&dirs, "memory") {
            s.memory_usage = read_u64(&d.join("memory.usage_in_bytes")).unwrap_or(0);
            s.memory_limit = read_u64(&d.join("memory.limit_in_bytes")).unwrap_or(0);
            let stat = read(&d.join("memory.stat")).unwrap_or_default();
            s.memory_cache = keyed(&stat, "total_cache")
                .or_else(|| keyed(&stat, "cache"))
                .unwrap_or(0);
        }
        if let Some(d) = cgroupfs::controller_dir(&dirs, "pids") {
            s.pids = read_u64(&d.join("pids.current")).unwrap_or(0);
        }
        if let Some(d) = cgroupfs::controller_dir(&dirs, "blkio") {
            let text = read(&d.join("blkio.throttle.io_service_bytes"))
                .filter(|t| t.lines().count() > 1)
                .or_else(|| read(&d.join("blkio.io_service_bytes")))
                .unwrap_or_default();
            (s.blkio_read_bytes, s.blkio_write_bytes) = blkio_v1(&text);
        }
    } else if let Some((_, d)) = dirs.first() {
        let cpu = read(&d.join("cpu.stat")).unwrap_or_default();
        s.cpu_total_ns = keyed(&cpu, "usage_usec").unwrap_or(0) * 1000;
        s.memory_usage = read_u64(&d.join("memory.current")).unwrap_or(0);
        s.memory_limit = read_u64(&d.join("memory.max")).unwrap_or(0);
        let stat = read(&d.join("memory.stat")).unwrap_or_default();
        s.memory_cache = keyed(&stat, "file").unwrap_or(0);
        s.pids = read_u64(&d.join("pids.current")).unwrap_or(0);
        (s.blkio_read_bytes, s.blkio_write_bytes) =
            io_v2(&read(&d.join("io.stat")).unwrap_or_default());
    }
    // No limit reads as a huge number (v1) or "max" (v2): show the host's.
    if s.memory_limit == 0 || (host_mem > 0 && s.memory_limit > host_mem) {
        s.memory_limit = host_mem;
    }
    (s.net_rx_bytes, s.net_tx_bytes) =
        net_dev(&read(Path::new(&format!("/proc/{pid}/net/dev"))).unwrap_or_default());
    // SAFETY: sysconf has no preconditions.
    let (ticks, cpus) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_NPROCESSORS_ONLN),
        )
    };
    s.system_cpu_ns = system_cpu_ns(
        &read(Path::new("/proc/stat")).unwrap_or_default(),
        ticks.max(1) as u64,
    );
    s.online_cpus = cpus.max(1) as u32;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert_eq!(keyed("cache 10\ntotal_cache 20\n", "total_cache"), Some(20));
        assert_eq!(keyed("cache 10\n", "rss"), None);
        assert_eq!(
            blkio_v1("8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\nTotal 12288\n"),
            (4096, 8192)
        );
        assert_eq!(io_v2("8:0 rbytes=10 wbytes=20 rios=1\n"), (10, 20));
        let dev = "Inter-|   Receive\n face |bytes\n    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 656 8 0 0 0 0 0 0 42 1 0 0 0 0 0 0\n";
        assert_eq!(net_dev(dev), (656, 42));
        assert_eq!(
            system_cpu_ns("cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1\n", 100),
            36 * 10_000_000
        );
    }
}
