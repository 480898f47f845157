//! Resource limits at create: docker's checks, messages, warnings and
//! defaults (its daemon's `verifyPlatformContainerResources` and
//! `adaptContainerSettings`), against what the host's cgroups can do (its
//! `sysinfo`). berth-tasks runs on the same host, so the gateway reads the
//! cgroup mounts itself, as dockerd does.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use berth_proto::gateway::v1::Resources as ApiResources;

use crate::container::{DeviceLimit, Resources};

/// Docker's smallest memory limit and reservation (`linuxMinMemory`).
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// What the host's memory cgroup can do (docker's SysInfo memory part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryInfo {
    pub memory_limit: bool,
    pub swap_limit: bool,
    pub reservation: bool,
    pub swappiness: bool,
    pub oom_kill_disable: bool,
}

impl MemoryInfo {
    /// Everything supported (a v1 host with swap accounting).
    #[cfg(test)]
    pub const ALL: MemoryInfo = MemoryInfo {
        memory_limit: true,
        swap_limit: true,
        reservation: true,
        swappiness: true,
        oom_kill_disable: true,
    };

    /// Looks at the cgroup mounts of this host: on v1 the files of the
    /// memory hierarchy's root (memory.memsw.limit_in_bytes only exists
    /// with swap accounting); on v2 the root's `cgroup.controllers` and,
    /// for swap, `memory.swap.max` in a child cgroup.
    pub fn detect() -> MemoryInfo {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let v2_root = Path::new("/sys/fs/cgroup");
        let pure_v2 = nix::sys::statfs::statfs(v2_root)
            .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(false);
        if pure_v2 {
            let controllers =
                std::fs::read_to_string(v2_root.join("cgroup.controllers")).unwrap_or_default();
            let memory = controllers.split_whitespace().any(|c| c == "memory");
            return MemoryInfo {
                memory_limit: memory,
                swap_limit: memory && v2_child_has(v2_root, "memory.swap.max"),
                reservation: memory,
                swappiness: false,
                oom_kill_disable: false,
            };
        }
        let Some(dir) = v1_mount(&mountinfo, "memory") else {
            return MemoryInfo {
                memory_limit: false,
                swap_limit: false,
                reservation: false,
                swappiness: false,
                oom_kill_disable: false,
            };
        };
        let has = |f: &str| dir.join(f).exists();
        MemoryInfo {
            memory_limit: has("memory.limit_in_bytes"),
            swap_limit: has("memory.memsw.limit_in_bytes"),
            reservation: has("memory.soft_limit_in_bytes"),
            swappiness: has("memory.swappiness"),
            oom_kill_disable: has("memory.oom_control"),
        }
    }
}

/// Whether some cgroup below the v2 root has the file `name` (the root
/// itself has no memory.* limit files).
fn v2_child_has(root: &Path, name: &str) -> bool {
    std::fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .any(|e| e.path().join(name).exists())
        })
        .unwrap_or(false)
}

/// Checks a create's limits like docker, in docker's order and with its
/// messages, drops what the host cannot do (with docker's warnings) and
/// fills docker's defaults (memory+swap twice the memory).
pub fn check(
    req: Option<&ApiResources>,
    oom_score_adj: i32,
    host: &MemoryInfo,
) -> Result<(Resources, Vec<String>), String> {
    let mut warnings = Vec::new();
    let req = req.cloned().unwrap_or_default();
    let mut memory = req.memory;
    // Any negative swap is "unlimited", as -1.
    let mut swap = if req.memory_swap < 0 {
        -1
    } else {
        req.memory_swap
    };
    let mut reservation = req.memory_reservation;
    // docker's fixMemorySwappiness: -1 is unset.
    let mut swappiness = req.memory_swappiness.filter(|s| *s != -1);
    let mut oom_kill_disable = req.oom_kill_disable;

    if memory != 0 && memory < MIN_MEMORY {
        return Err("Minimum memory limit allowed is 6MB".into());
    }
    if memory > 0 && !host.memory_limit {
        warnings.push("Your kernel does not support memory limit capabilities or the cgroup is not mounted. Limitation discarded.".into());
        memory = 0;
        swap = -1;
    }
    if memory > 0 && swap != -1 && !host.swap_limit {
        warnings.push("Your kernel does not support swap limit capabilities or the cgroup is not mounted. Memory limited without swap.".into());
        swap = -1;
    }
    if memory > 0 && swap > 0 && swap < memory {
        return Err(
            "Minimum memoryswap limit should be larger than memory limit, see usage".into(),
        );
    }
    if memory == 0 && swap > 0 {
        return Err(
            "You should always set the Memory limit when using Memoryswap limit, see usage".into(),
        );
    }
    if swappiness.is_some() && !host.swappiness {
        warnings.push("Your kernel does not support memory swappiness capabilities or the cgroup is not mounted. Memory swappiness discarded.".into());
        swappiness = None;
    }
    if let Some(s) = swappiness {
        if !(0..=100).contains(&s) {
            return Err(format!(
                "Invalid value: {s}, valid memory swappiness range is 0-100"
            ));
        }
    }
    if reservation > 0 && !host.reservation {
        warnings.push("Your kernel does not support memory soft limit capabilities or the cgroup is not mounted. Limitation discarded.".into());
        reservation = 0;
    }
    if reservation != 0 && reservation < MIN_MEMORY {
        return Err("Minimum memory reservation allowed is 6MB".into());
    }
    if memory > 0 && reservation > 0 && memory < reservation {
        return Err(
            "Minimum memory limit can not be less than memory reservation limit, see usage".into(),
        );
    }
    if oom_kill_disable.is_some() && !host.oom_kill_disable {
        if oom_kill_disable == Some(true) {
            warnings.push(
                "Your kernel does not support OomKillDisable. OomKillDisable discarded.".into(),
            );
        }
        oom_kill_disable = None;
    }
    if oom_kill_disable == Some(true) && memory == 0 {
        warnings.push("OOM killer is disabled for the container, but no memory limit is set, this can result in the system running out of resources.".into());
    }
    if !(-1000..=1000).contains(&oom_score_adj) {
        return Err(format!(
            "Invalid value {oom_score_adj}, range for oom score adj is [-1000, 1000]"
        ));
    }
    // adaptContainerSettings: swap defaults to twice the memory.
    if memory > 0 && swap == 0 {
        swap = memory.saturating_mul(2);
    }
    Ok((
        Resources {
            memory,
            memory_swap: swap,
            memory_reservation: reservation,
            memory_swappiness: swappiness,
            oom_kill_disable: oom_kill_disable.unwrap_or(false),
            ..Default::default()
        },
        warnings,
    ))
}

/// What the host offers for CPU, pids and block I/O limits (the rest of
/// docker's SysInfo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuIoInfo {
    /// Online CPUs and memory nodes.
    pub cpus: BTreeSet<u32>,
    pub mems: BTreeSet<u32>,
    pub cfs: bool,
    pub shares: bool,
    pub cpuset: bool,
    pub pids: bool,
    pub blkio_weight: bool,
    pub blkio_weight_device: bool,
    pub blkio_throttle: bool,
}

impl CpuIoInfo {
    /// Everything on two CPUs and one memory node.
    #[cfg(test)]
    pub fn all() -> CpuIoInfo {
        CpuIoInfo {
            cpus: [0, 1].into(),
            mems: [0].into(),
            cfs: true,
            shares: true,
            cpuset: true,
            pids: true,
            blkio_weight: true,
            blkio_weight_device: true,
            blkio_throttle: true,
        }
    }

    pub fn detect() -> CpuIoInfo {
        let list = |p: &str, default: &str| {
            parse_cpu_list(
                std::fs::read_to_string(p)
                    .unwrap_or_else(|_| default.to_string())
                    .trim(),
            )
            .unwrap_or_default()
        };
        let cpus = list("/sys/devices/system/cpu/online", "0");
        let mems = list("/sys/devices/system/node/online", "0");
        let v2_root = Path::new("/sys/fs/cgroup");
        let pure_v2 = nix::sys::statfs::statfs(v2_root)
            .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(false);
        if pure_v2 {
            let c = std::fs::read_to_string(v2_root.join("cgroup.controllers")).unwrap_or_default();
            let has = |n: &str| c.split_whitespace().any(|x| x == n);
            return CpuIoInfo {
                cpus,
                mems,
                cfs: has("cpu"),
                shares: has("cpu"),
                cpuset: has("cpuset"),
                pids: has("pids"),
                blkio_weight: has("io") && v2_child_has(v2_root, "io.weight"),
                blkio_weight_device: has("io") && v2_child_has(v2_root, "io.weight"),
                blkio_throttle: has("io"),
            };
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let file =
            |ctl: &str, f: &str| v1_mount(&mountinfo, ctl).is_some_and(|d| d.join(f).exists());
        CpuIoInfo {
            cpus,
            mems,
            cfs: file("cpu", "cpu.cfs_period_us"),
            shares: file("cpu", "cpu.shares"),
            cpuset: file("cpuset", "cpuset.cpus"),
            pids: v1_mount(&mountinfo, "pids").is_some(),
            blkio_weight: file("blkio", "blkio.weight"),
            blkio_weight_device: file("blkio", "blkio.weight_device"),
            blkio_throttle: file("blkio", "blkio.throttle.read_bps_device"),
        }
    }
}

/// "0-2,4" → {0, 1, 2, 4}; None when malformed.
pub fn parse_cpu_list(s: &str) -> Option<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    if s.is_empty() {
        return Some(out);
    }
    for part in s.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let n = part.parse::<u32>().ok()?;
                (n, n)
            }
        };
        if a > b || b - a > 4096 {
            return None;
        }
        out.extend(a..=b);
    }
    Some(out)
}

fn show_list(set: &BTreeSet<u32>) -> String {
    let mut parts = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().unwrap_or(end);
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// Docker's Linux CPU shares range.
const MIN_CPU_SHARES: i64 = 2;
const MAX_CPU_SHARES: i64 = 262_144;
/// The rlimits docker's --ulimit takes.
const ULIMITS: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// The CPU, pids, block I/O and ulimit part of [`check`]: docker's checks
/// and messages, warnings for what the host lacks (the value is then
/// dropped), device paths looked up. Fills `out`.
pub fn check_cpu_io(
    req: Option<&ApiResources>,
    host: &CpuIoInfo,
    out: &mut Resources,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let req = req.cloned().unwrap_or_default();
    let ncpu = host.cpus.len().max(1) as i64;
    if req.nano_cpus > 0 && req.cpu_period > 0 {
        return Err("Conflicting options: Nano CPUs and CPU Period cannot both be set".into());
    }
    if req.nano_cpus > 0 && req.cpu_quota > 0 {
        return Err("Conflicting options: Nano CPUs and CPU Quota cannot both be set".into());
    }
    if req.nano_cpus < 0 || req.nano_cpus > ncpu * 1_000_000_000 {
        return Err(format!(
            "Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
        ));
    }
    let (mut period, mut quota, mut nano) = (req.cpu_period, req.cpu_quota, req.nano_cpus);
    if (period != 0 || quota != 0 || nano != 0) && !host.cfs {
        warnings.push(
            "Your kernel does not support CPU CFS scheduler. CPU period/quota discarded.".into(),
        );
        (period, quota, nano) = (0, 0, 0);
    }
    if period != 0 && !(1000..=1_000_000).contains(&period) {
        return Err(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"
                .into(),
        );
    }
    if quota > 0 && quota < 1000 {
        return Err("CPU cfs quota can not be less than 1ms (i.e. 1000)".into());
    }
    if quota < -1 {
        return Err(format!(
            "invalid CPU quota {quota}: -1 (unlimited) or at least 1000"
        ));
    }
    let mut shares = req.cpu_shares;
    if shares < 0 {
        return Err(format!(
            "invalid CPU shares ({shares}): value must be a positive integer"
        ));
    }
    if shares > 0 && !host.shares {
        warnings.push("Your kernel does not support CPU shares or the cgroup is not mounted. Shares discarded.".into());
        shares = 0;
    }
    if shares > 0 {
        shares = shares.clamp(MIN_CPU_SHARES, MAX_CPU_SHARES);
    }
    let (mut cpuset_cpus, mut cpuset_mems) = (req.cpuset_cpus.clone(), req.cpuset_mems.clone());
    if (!cpuset_cpus.is_empty() || !cpuset_mems.is_empty()) && !host.cpuset {
        warnings.push(
            "Your kernel does not support cpuset or the cgroup is not mounted. Cpuset discarded."
                .into(),
        );
        cpuset_cpus.clear();
        cpuset_mems.clear();
    }
    if !cpuset_cpus.is_empty() {
        let want = parse_cpu_list(&cpuset_cpus)
            .filter(|w| !w.is_empty())
            .ok_or_else(|| format!("Invalid value {cpuset_cpus} for cpuset cpus"))?;
        if !want.is_subset(&host.cpus) {
            return Err(format!(
                "Requested CPUs are not available - requested {cpuset_cpus}, available: {}",
                show_list(&host.cpus)
            ));
        }
    }
    if !cpuset_mems.is_empty() {
        let want = parse_cpu_list(&cpuset_mems)
            .filter(|w| !w.is_empty())
            .ok_or_else(|| format!("Invalid value {cpuset_mems} for cpuset mems"))?;
        if !want.is_subset(&host.mems) {
            return Err(format!(
                "Requested memory nodes are not available - requested {cpuset_mems}, available: {}",
                show_list(&host.mems)
            ));
        }
    }
    let mut pids = req.pids_limit.filter(|p| *p > 0);
    if pids.is_some() && !host.pids {
        warnings.push("Your kernel does not support pids limit capabilities or the cgroup is not mounted. PIDs limit discarded.".into());
        pids = None;
    }
    let mut weight = req.blkio_weight;
    if weight > 0 && !(10..=1000).contains(&weight) {
        return Err("Range of blkio weight is from 10 to 1000".into());
    }
    if weight > 0 && !host.blkio_weight {
        warnings.push("Your kernel does not support Block I/O weight or the cgroup is not mounted. Weight discarded.".into());
        weight = 0;
    }
    let mut weight_devices = devices(
        req.blkio_weight_device
            .iter()
            .map(|d| (d.path.as_str(), d.weight as u64)),
    )?;
    if let Some(d) = weight_devices
        .iter()
        .find(|d| !(10..=1000).contains(&d.value))
    {
        return Err(format!(
            "invalid weight for device: {}:{} (the range is 10 to 1000)",
            d.path, d.value
        ));
    }
    if !weight_devices.is_empty() && !host.blkio_weight_device {
        warnings.push("Your kernel does not support Block I/O weight_device or the cgroup is not mounted. Weight-device discarded.".into());
        weight_devices.clear();
    }
    let throttle = |l: &[berth_proto::gateway::v1::ThrottleDevice]| {
        devices(l.iter().map(|d| (d.path.as_str(), d.rate)))
    };
    let mut read_bps = throttle(&req.device_read_bps)?;
    let mut write_bps = throttle(&req.device_write_bps)?;
    let mut read_iops = throttle(&req.device_read_iops)?;
    let mut write_iops = throttle(&req.device_write_iops)?;
    let any_throttle = [&read_bps, &write_bps, &read_iops, &write_iops]
        .iter()
        .any(|l| !l.is_empty());
    if any_throttle && !host.blkio_throttle {
        warnings.push("Your kernel does not support IOPS/BPS Block I/O throttling or the cgroup is not mounted. Throttling discarded.".into());
        for l in [
            &mut read_bps,
            &mut write_bps,
            &mut read_iops,
            &mut write_iops,
        ] {
            l.clear();
        }
    }
    if req.kernel_memory != 0 {
        warnings.push("Specifying a kernel memory limit is deprecated and will be removed in a future release.".into());
    }
    let mut ulimits = Vec::new();
    for u in &req.ulimits {
        if !ULIMITS.contains(&u.name.as_str()) {
            return Err(format!("invalid ulimit type: {}", u.name));
        }
        if u.soft < -1 || u.hard < -1 {
            return Err(format!(
                "invalid ulimit value for {}: -1 (unlimited) or a count",
                u.name
            ));
        }
        let unl = |v: i64| if v == -1 { i64::MAX } else { v };
        if unl(u.soft) > unl(u.hard) {
            return Err(format!(
                "ulimit soft limit must be less than or equal to hard limit: {} > {}",
                u.soft, u.hard
            ));
        }
        ulimits.retain(|x: &crate::container::Ulimit| x.name != u.name);
        ulimits.push(crate::container::Ulimit {
            name: u.name.clone(),
            soft: u.soft,
            hard: u.hard,
        });
    }
    out.nano_cpus = nano;
    out.cpu_period = period;
    out.cpu_quota = quota;
    out.cpu_shares = shares;
    out.cpuset_cpus = cpuset_cpus;
    out.cpuset_mems = cpuset_mems;
    out.pids_limit = pids;
    out.blkio_weight = weight as u16;
    out.blkio_weight_device = weight_devices;
    out.device_read_bps = read_bps;
    out.device_write_bps = write_bps;
    out.device_read_iops = read_iops;
    out.device_write_iops = write_iops;
    out.kernel_memory = req.kernel_memory;
    out.ulimits = ulimits;
    Ok(())
}

/// Looks up block devices by path: (path, value) → device limits.
fn devices<'a>(list: impl Iterator<Item = (&'a str, u64)>) -> Result<Vec<DeviceLimit>, String> {
    let mut out = Vec::new();
    for (path, value) in list {
        let st = nix::sys::stat::stat(path).map_err(|e| {
            format!("error gathering device information while adding custom device \"{path}\": {e}")
        })?;
        if st.st_mode & libc::S_IFMT != libc::S_IFBLK {
            return Err(format!("{path} is not a block device"));
        }
        out.push(DeviceLimit {
            path: path.to_string(),
            major: libc::major(st.st_rdev) as i64,
            minor: libc::minor(st.st_rdev) as i64,
            value,
        });
    }
    Ok(out)
}

/// The API form of stored limits, to check them again merged with an
/// update.
fn to_api(r: &Resources) -> ApiResources {
    use berth_proto::gateway::v1::{ThrottleDevice, Ulimit as U, WeightDevice};
    let t = |l: &[DeviceLimit]| {
        l.iter()
            .map(|d| ThrottleDevice {
                path: d.path.clone(),
                rate: d.value,
            })
            .collect()
    };
    ApiResources {
        memory: r.memory,
        memory_swap: r.memory_swap,
        memory_reservation: r.memory_reservation,
        memory_swappiness: r.memory_swappiness,
        oom_kill_disable: r.oom_kill_disable.then_some(true),
        nano_cpus: r.nano_cpus,
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        pids_limit: r.pids_limit,
        blkio_weight: r.blkio_weight as u32,
        blkio_weight_device: r
            .blkio_weight_device
            .iter()
            .map(|d| WeightDevice {
                path: d.path.clone(),
                weight: d.value as u32,
            })
            .collect(),
        device_read_bps: t(&r.device_read_bps),
        device_write_bps: t(&r.device_write_bps),
        device_read_iops: t(&r.device_read_iops),
        device_write_iops: t(&r.device_write_iops),
        kernel_memory: r.kernel_memory,
        ulimits: r
            .ulimits
            .iter()
            .map(|u| U {
                name: u.name.clone(),
                soft: u.soft,
                hard: u.hard,
            })
            .collect(),
    }
}

/// `docker update`'s merge: what the request sets replaces the stored
/// value; the rest stays. Errors as docker's.
pub fn merge_update(cur: &Resources, u: &ApiResources) -> Result<ApiResources, String> {
    let mut m = to_api(cur);
    if u.memory != 0 {
        if u.memory_swap == 0 && cur.memory_swap > 0 && u.memory > cur.memory_swap {
            return Err("Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time".into());
        }
        m.memory = u.memory;
    }
    if u.memory_swap != 0 {
        m.memory_swap = u.memory_swap;
    }
    if u.memory_reservation != 0 {
        m.memory_reservation = u.memory_reservation;
    }
    if u.nano_cpus != 0 {
        m.nano_cpus = u.nano_cpus;
        (m.cpu_period, m.cpu_quota) = (0, 0);
    }
    if u.cpu_period != 0 || u.cpu_quota != 0 {
        if u.nano_cpus == 0 && cur.nano_cpus != 0 {
            m.nano_cpus = 0;
        }
        if u.cpu_period != 0 {
            m.cpu_period = u.cpu_period;
        }
        if u.cpu_quota != 0 {
            m.cpu_quota = u.cpu_quota;
        }
    }
    if u.cpu_shares != 0 {
        m.cpu_shares = u.cpu_shares;
    }
    if !u.cpuset_cpus.is_empty() {
        m.cpuset_cpus = u.cpuset_cpus.clone();
    }
    if !u.cpuset_mems.is_empty() {
        m.cpuset_mems = u.cpuset_mems.clone();
    }
    if u.pids_limit.is_some() {
        m.pids_limit = u.pids_limit;
    }
    if u.blkio_weight != 0 {
        m.blkio_weight = u.blkio_weight;
    }
    if u.kernel_memory != 0 {
        m.kernel_memory = u.kernel_memory;
    }
    Ok(m)
}

impl crate::Inner {
    /// `docker update`: checks the merged limits like create, writes them
    /// to the running task's cgroup, then keeps them in the record (for
    /// inspect and the next starts). Returns docker's warnings.
    pub(crate) async fn update_container(
        &self,
        ns: &str,
        req: berth_proto::gateway::v1::UpdateContainerRequest,
    ) -> crate::error::Result<Vec<String>> {
        use crate::error::Error;
        let id = self.find(ns, &req.id)?.id;
        // One change of the container at a time: not beside a start (which
        // builds the spec from the record) or another update.
        let lock = self.op_lock(ns, &id);
        let _guard = lock.lock().await;
        let rec = self
            .get(ns, &id)
            .ok_or_else(|| Error::NotFound(format!("No such container: {}", req.id)))?;
        let u = req.resources.clone().unwrap_or_default();
        let merged =
            merge_update(&rec.host_config.resources, &u).map_err(Error::InvalidArgument)?;
        let (mut new, mut warnings) = check(
            Some(&merged),
            rec.host_config.oom_score_adj,
            &MemoryInfo::detect(),
        )
        .map_err(Error::InvalidArgument)?;
        check_cpu_io(Some(&merged), &CpuIoInfo::detect(), &mut new, &mut warnings)
            .map_err(Error::InvalidArgument)?;
        let restart = if req.restart_policy.is_empty() {
            None
        } else {
            if rec.host_config.auto_remove {
                return Err(Error::InvalidArgument(
                    "Restart policy cannot be updated because AutoRemove is enabled for the container".into(),
                ));
            }
            Some(crate::lifecycle::parse_restart_policy(&req.restart_policy)?)
        };
        if rec.state.running() {
            let mut limits = crate::spec::limits(&new);
            // A limit taken away is written as "none".
            if rec.host_config.resources.pids_limit.is_some() && new.pids_limit.is_none() {
                limits.insert("pids".into(), serde_json::json!({"limit": 0}));
            }
            self.tasks
                .clone()
                .update(berth_common::request(
                    ns,
                    berth_proto::tasks::v1::UpdateTaskRequest {
                        id: rec.id.clone(),
                        resources_json: serde_json::Value::Object(limits).to_string(),
                    },
                ))
                .await
                .map_err(|s| match s.code() {
                    tonic::Code::InvalidArgument => Error::InvalidArgument(format!(
                        "Cannot update container {}: {}",
                        rec.id,
                        s.message()
                    )),
                    _ => Error::service("tasks")(s),
                })?;
        }
        self.update(ns, &rec.id, true, |c| {
            c.host_config.resources = new;
            if let Some(p) = restart {
                c.host_config.restart_policy = p;
            }
        })?;
        self.emit_container(ns, &rec.id, "update", &[]);
        for w in &warnings {
            tracing::warn!(id = %rec.id, "{w}");
        }
        Ok(warnings)
    }
}

/// A v1 controller's mount point.
fn v1_mount(mountinfo: &str, ctl: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let fields: Vec<&str> = left.split(' ').collect();
        let rfields: Vec<&str> = right.split(' ').collect();
        (fields.len() >= 5
            && rfields.len() >= 3
            && rfields[0] == "cgroup"
            && rfields[2].split(',').any(|o| o == ctl))
        .then(|| PathBuf::from(fields[4]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: i64 = 1 << 20;

    fn req(memory: i64, swap: i64) -> ApiResources {
        ApiResources {
            memory,
            memory_swap: swap,
            ..Default::default()
        }
    }

    fn ok(r: &ApiResources, host: &MemoryInfo) -> (Resources, Vec<String>) {
        check(Some(r), 0, host).unwrap()
    }

    #[test]
    fn swap_defaults_and_limits() {
        let all = MemoryInfo::ALL;
        // Nothing asked: nothing set (MemorySwap 0, as docker shows it).
        let (r, w) = check(None, 0, &all).unwrap();
        assert_eq!(r, Resources::default());
        assert!(w.is_empty());
        // -m alone: swap twice the memory.
        let (r, _) = ok(&req(8 * MIB, 0), &all);
        assert_eq!((r.memory, r.memory_swap), (8 * MIB, 16 * MIB));
        // Explicit swap, equal (no swap) or unlimited.
        assert_eq!(ok(&req(8 * MIB, 20 * MIB), &all).0.memory_swap, 20 * MIB);
        assert_eq!(ok(&req(8 * MIB, 8 * MIB), &all).0.memory_swap, 8 * MIB);
        assert_eq!(ok(&req(8 * MIB, -1), &all).0.memory_swap, -1);
        assert_eq!(ok(&req(0, -1), &all).0.memory_swap, -1);
        // Exactly the minimum is fine.
        assert_eq!(ok(&req(MIN_MEMORY, 0), &all).0.memory, MIN_MEMORY);
    }

    #[test]
    fn docker_errors() {
        let all = MemoryInfo::ALL;
        let err = |r: ApiResources| check(Some(&r), 0, &all).unwrap_err();
        assert_eq!(err(req(4, 0)), "Minimum memory limit allowed is 6MB");
        assert_eq!(
            err(req(MIN_MEMORY - 1, 0)),
            "Minimum memory limit allowed is 6MB"
        );
        assert_eq!(err(req(-5, 0)), "Minimum memory limit allowed is 6MB");
        assert_eq!(
            err(req(16 * MIB, 8 * MIB)),
            "Minimum memoryswap limit should be larger than memory limit, see usage"
        );
        assert_eq!(
            err(req(0, 8 * MIB)),
            "You should always set the Memory limit when using Memoryswap limit, see usage"
        );
        assert_eq!(
            err(ApiResources {
                memory_swappiness: Some(101),
                ..Default::default()
            }),
            "Invalid value: 101, valid memory swappiness range is 0-100"
        );
        assert_eq!(
            err(ApiResources {
                memory_reservation: MIB,
                ..Default::default()
            }),
            "Minimum memory reservation allowed is 6MB"
        );
        assert_eq!(
            err(ApiResources {
                memory: 8 * MIB,
                memory_reservation: 16 * MIB,
                ..Default::default()
            }),
            "Minimum memory limit can not be less than memory reservation limit, see usage"
        );
        assert_eq!(
            check(None, 1001, &all).unwrap_err(),
            "Invalid value 1001, range for oom score adj is [-1000, 1000]"
        );
        assert_eq!(
            check(None, -1001, &all).unwrap_err(),
            "Invalid value -1001, range for oom score adj is [-1000, 1000]"
        );
        assert!(check(None, -1000, &all).is_ok());
        assert!(check(None, 1000, &all).is_ok());
    }

    #[test]
    fn swappiness_reservation_oom_kill() {
        let all = MemoryInfo::ALL;
        let (r, w) = ok(
            &ApiResources {
                memory: 32 * MIB,
                memory_reservation: 16 * MIB,
                memory_swappiness: Some(0),
                oom_kill_disable: Some(true),
                ..Default::default()
            },
            &all,
        );
        assert_eq!(r.memory_reservation, 16 * MIB);
        assert_eq!(r.memory_swappiness, Some(0));
        assert!(r.oom_kill_disable);
        assert!(w.is_empty(), "{w:?}");
        // -1 is docker's "unset".
        let (r, _) = ok(
            &ApiResources {
                memory_swappiness: Some(-1),
                ..Default::default()
            },
            &all,
        );
        assert_eq!(r.memory_swappiness, None);
        // Without a memory limit docker warns.
        let (r, w) = ok(
            &ApiResources {
                oom_kill_disable: Some(true),
                ..Default::default()
            },
            &all,
        );
        assert!(r.oom_kill_disable);
        assert_eq!(w, ["OOM killer is disabled for the container, but no memory limit is set, this can result in the system running out of resources."]);
    }

    #[test]
    fn unsupported_settings_are_dropped_with_docker_warnings() {
        let no_swap = MemoryInfo {
            swap_limit: false,
            ..MemoryInfo::ALL
        };
        let (r, w) = ok(&req(8 * MIB, 0), &no_swap);
        assert_eq!((r.memory, r.memory_swap), (8 * MIB, -1));
        assert_eq!(w, ["Your kernel does not support swap limit capabilities or the cgroup is not mounted. Memory limited without swap."]);
        // As in docker, the swap is dropped before it is compared.
        assert_eq!(ok(&req(16 * MIB, 8 * MIB), &no_swap).0.memory_swap, -1);

        let v2 = MemoryInfo {
            swappiness: false,
            oom_kill_disable: false,
            ..MemoryInfo::ALL
        };
        let (r, w) = ok(
            &ApiResources {
                memory: 8 * MIB,
                memory_swappiness: Some(10),
                oom_kill_disable: Some(true),
                ..Default::default()
            },
            &v2,
        );
        assert_eq!(r.memory_swappiness, None);
        assert!(!r.oom_kill_disable);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("memory swappiness"), "{w:?}");
        assert_eq!(
            w[1],
            "Your kernel does not support OomKillDisable. OomKillDisable discarded."
        );

        let none = MemoryInfo {
            memory_limit: false,
            swap_limit: false,
            reservation: false,
            swappiness: false,
            oom_kill_disable: false,
        };
        let (r, w) = ok(&req(8 * MIB, 0), &none);
        assert_eq!((r.memory, r.memory_swap), (0, -1));
        assert!(
            w[0].starts_with("Your kernel does not support memory limit"),
            "{w:?}"
        );
    }

    fn cpu_err(r: ApiResources) -> String {
        let mut out = Resources::default();
        check_cpu_io(Some(&r), &CpuIoInfo::all(), &mut out, &mut Vec::new()).unwrap_err()
    }

    #[test]
    fn cpu_pids_blkio_and_ulimits() {
        use berth_proto::gateway::v1::{ThrottleDevice, Ulimit as U};
        assert_eq!(
            cpu_err(ApiResources {
                nano_cpus: 3_000_000_000,
                ..Default::default()
            }),
            "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"
        );
        assert!(cpu_err(ApiResources {
            nano_cpus: 1,
            cpu_period: 1000,
            ..Default::default()
        })
        .contains("Nano CPUs and CPU Period"));
        assert!(cpu_err(ApiResources {
            cpu_period: 999,
            ..Default::default()
        })
        .contains("CPU cfs period can not be less than 1ms"));
        assert!(cpu_err(ApiResources {
            cpu_quota: 5,
            ..Default::default()
        })
        .contains("CPU cfs quota can not be less than 1ms"));
        assert_eq!(
            cpu_err(ApiResources {
                cpuset_cpus: "0-3".into(),
                ..Default::default()
            }),
            "Requested CPUs are not available - requested 0-3, available: 0-1"
        );
        assert_eq!(
            cpu_err(ApiResources {
                cpuset_cpus: "x".into(),
                ..Default::default()
            }),
            "Invalid value x for cpuset cpus"
        );
        assert!(cpu_err(ApiResources {
            cpuset_mems: "1".into(),
            ..Default::default()
        })
        .contains("Requested memory nodes are not available"));
        assert_eq!(
            cpu_err(ApiResources {
                blkio_weight: 5,
                ..Default::default()
            }),
            "Range of blkio weight is from 10 to 1000"
        );
        assert!(cpu_err(ApiResources {
            device_read_bps: vec![ThrottleDevice {
                path: "/dev/null".into(),
                rate: 1
            }],
            ..Default::default()
        })
        .contains("/dev/null is not a block device"));
        assert!(cpu_err(ApiResources {
            ulimits: vec![U {
                name: "bogus".into(),
                soft: 1,
                hard: 1
            }],
            ..Default::default()
        })
        .contains("invalid ulimit type: bogus"));
        assert!(cpu_err(ApiResources {
            ulimits: vec![U {
                name: "nofile".into(),
                soft: 10,
                hard: 5
            }],
            ..Default::default()
        })
        .contains("soft limit must be less than or equal to hard limit: 10 > 5"));

        let mut out = Resources::default();
        let mut w = Vec::new();
        let r = ApiResources {
            cpu_shares: 1,
            pids_limit: Some(-1),
            kernel_memory: 1 << 20,
            cpuset_cpus: "1".into(),
            ..Default::default()
        };
        check_cpu_io(Some(&r), &CpuIoInfo::all(), &mut out, &mut w).unwrap();
        assert_eq!(
            (out.cpu_shares, out.pids_limit, out.cpuset_cpus.as_str()),
            (2, None, "1")
        );
        assert!(w[0].contains("kernel memory limit is deprecated"), "{w:?}");
        // A host without the blkio weight file: discarded with docker's warning.
        let host = CpuIoInfo {
            blkio_weight: false,
            ..CpuIoInfo::all()
        };
        let mut w = Vec::new();
        let r = ApiResources {
            blkio_weight: 300,
            ..Default::default()
        };
        check_cpu_io(Some(&r), &host, &mut out, &mut w).unwrap();
        assert_eq!(out.blkio_weight, 0);
        assert!(w[0].contains("does not support Block I/O weight"), "{w:?}");
        assert_eq!(parse_cpu_list("0-2,4"), Some([0, 1, 2, 4].into()));
        assert_eq!(show_list(&[0, 1, 2, 4].into()), "0-2,4");
        assert_eq!(parse_cpu_list("2-1"), None);
    }

    #[test]
    fn finds_the_v1_memory_mount() {
        let mi = "30 25 0:26 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n\
                  33 25 0:29 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n\
                  32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            v1_mount(mi, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            v1_mount("32 25 0:28 / /x rw - cgroup2 cgroup2 rw\n", "memory"),
            None
        );
    }
}
