//! Cgroups through the cgroups-rs crate: v1 (one directory per controller,
//! hybrid hosts included) or v2 (unified). cgroups-rs finds the hierarchy,
//! creates the directories (copying cpuset.cpus/mems down on v1), writes the
//! limits through its typed controllers, moves the init into the cgroup and
//! removes it again.
//!
//! Hybrid hosts: `hierarchies::auto()` picks v2 only when /sys/fs/cgroup
//! itself is cgroup2. On a hybrid host it is tmpfs, so we get cgroups-rs's
//! V1 hierarchy, built from the `cgroup` (v1) mounts in /proc/self/mountinfo;
//! the cgroup2 mount at /sys/fs/cgroup/unified is not a v1 mount and is never
//! looked at. The `name=systemd` hierarchy is a v1 mount without a
//! controller: cgroups-rs lists it as a subsystem, and we leave it out.

use crate::error::{Error, Result};
use cgroups_rs::cpu::CpuController;
use cgroups_rs::cpuset::CpuSetController;
use cgroups_rs::devices::{DevicePermissions, DeviceType, DevicesController};
use cgroups_rs::hierarchies;
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use cgroups_rs::{CgroupPid, Controller, MaxValue, Subsystem};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxResources};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where cgroups-rs looks for the hierarchies.
pub const CGROUP_ROOT: &str = hierarchies::UNIFIED_MOUNTPOINT;

/// A container's cgroup: a cgroups-rs handle on its leaf in every
/// controller (v1) or on its single directory (v2).
#[derive(Debug, Clone)]
pub struct Cgroup {
    inner: cgroups_rs::Cgroup,
    /// The path below the hierarchy root, e.g. `berth/default/<id>`.
    rel: PathBuf,
}

/// True when `root` (normally /sys/fs/cgroup) itself is cgroup2 (pure v2
/// host). This is the test cgroups-rs's `hierarchies::auto()` makes.
pub fn is_v2(root: &Path) -> bool {
    nix::sys::statfs::statfs(root)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// `/berth/default/x` -> `berth/default/x`, dropping `..` and `.`: cgroups-rs
/// joins the path onto each controller's mount point, where an absolute path
/// would replace the mount point and `..` would escape it.
fn relative(cgroups_path: &Path) -> PathBuf {
    cgroups_path
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect()
}

/// Turn a cgroups-rs error into ours, keeping the OS error when there is one.
fn cg_err(what: impl Into<String>, e: cgroups_rs::error::Error) -> Error {
    let io = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .map(|io| match io.raw_os_error() {
            Some(n) => io::Error::from_raw_os_error(n),
            None => io::Error::new(io.kind(), io.to_string()),
        })
        .unwrap_or_else(|| io::Error::other(e.kind().to_string()));
    Error::os(what, io)
}

/// Docker's wording for a host that cannot limit swap.
pub const NO_SWAP_LIMIT: &str =
    "Your kernel does not support swap limit capabilities or the cgroup is not mounted";

/// v2 `memory.swap.max` for an OCI `memory.swap` (memory + swap, as on v1)
/// and `memory.limit`; -1 is "max". runc's conversion: swap equal to the
/// limit is no swap at all (0).
pub fn swap_v2(swap: i64, limit: i64) -> std::result::Result<i64, String> {
    if swap == -1 {
        return Ok(-1);
    }
    if limit <= 0 {
        return Err("unable to set a swap limit without a memory limit".into());
    }
    if swap < limit {
        return Err(format!(
            "memory+swap limit {swap} should be >= memory limit {limit}"
        ));
    }
    Ok(swap - limit)
}

/// Convert v1 cpu shares (2..262144) to v2 cpu.weight (1..10000).
/// cgroups-rs writes `cpu.weight` verbatim on v2 and leaves this to us.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

/// A cpuset list (`0-3,8`) from cgroups-rs's parsed ranges.
fn cpu_list(ranges: &[(u64, u64)]) -> String {
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Cgroup {
    /// Create the cgroup `cgroups_path` (e.g. `/berth/default/<id>`) in every
    /// available controller (v1) or in the unified hierarchy (v2), and apply
    /// `resources`. On error nothing is left behind.
    pub fn create(cgroups_path: &Path, resources: Option<&LinuxResources>) -> Result<Self> {
        let cg = Self::load(cgroups_path)?;
        if cg.inner.subsystems().is_empty() {
            return Err(Error::Spec(format!(
                "no cgroup controllers under {CGROUP_ROOT}"
            )));
        }
        if let Err(e) = cg.make() {
            cg.remove();
            return Err(e);
        }
        if let Some(r) = resources {
            if let Err(e) = cg.apply(r) {
                cg.remove();
                return Err(e);
            }
        }
        Ok(cg)
    }

    /// A handle on the cgroup `cgroups_path` without creating it.
    pub fn load(cgroups_path: &Path) -> Result<Self> {
        let rel = relative(cgroups_path);
        // cgroups-rs keeps the path as a String (and panics on non-UTF-8).
        let name = match rel.to_str() {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => {
                return Err(Error::Spec(format!(
                    "bad cgroupsPath {}",
                    cgroups_path.display()
                )))
            }
        };
        let hier = hierarchies::auto();
        let inner = if hier.v2() {
            cgroups_rs::Cgroup::load(hier, &name)
        } else {
            // Every v1 controller that is mounted, but not named hierarchies
            // such as name=systemd: they hold no resources, and a cgroupfs
            // manager has no business in systemd's tree.
            let controllers: Vec<String> = hier
                .subsystems()
                .iter()
                .map(Subsystem::controller_name)
                .filter(|n| !n.starts_with("name="))
                .collect();
            cgroups_rs::Cgroup::load_with_specified_controllers(hier, &name, controllers)
        };
        Ok(Cgroup { inner, rel })
    }

    /// Create the directories (cgroups-rs), then check they exist: on v1
    /// cgroups-rs only logs a failed mkdir or cpuset copy. A second try
    /// covers an empty parent level removed by someone else meanwhile.
    fn make(&self) -> Result<()> {
        for attempt in 0..3 {
            self.inner
                .create()
                .map_err(|e| cg_err(format!("create cgroup {}", self.rel.display()), e))?;
            let missing = self
                .inner
                .subsystems()
                .iter()
                .map(|s| s.to_controller())
                .find(|c| !c.exists());
            match missing {
                None => break,
                Some(c) if attempt == 2 => {
                    return Err(Error::os(
                        format!("mkdir cgroup {}", c.path().display()),
                        io::Error::from(io::ErrorKind::NotFound),
                    ))
                }
                Some(_) => {}
            }
        }
        if !self.inner.v2() {
            if let Some(cs) = self.inner.controller_of::<CpuSetController>() {
                self.fill_cpuset(cs.path())?;
            }
        }
        Ok(())
    }

    /// v1 cpuset: a new cgroup starts with empty cpuset.cpus/mems and refuses
    /// tasks until they are set. cgroups-rs's cpuset post-create hook copies
    /// them down from the nearest non-empty ancestor but only logs failures,
    /// so check every level from the mount point down and fill whatever is
    /// still empty from its parent, through cgroups-rs's CpuSetController.
    fn fill_cpuset(&self, leaf: &Path) -> Result<()> {
        let depth = self.rel.components().count();
        let levels: Vec<&Path> = leaf.ancestors().take(depth + 1).collect();
        for pair in levels.windows(2).rev() {
            let (dir, parent) = (pair[0], pair[1]);
            let theirs = CpuSetController::new(parent.to_path_buf(), false).cpuset();
            let ctl = CpuSetController::new(dir.to_path_buf(), false);
            let mine = ctl.cpuset();
            if mine.cpus.is_empty() {
                let v = cpu_list(&theirs.cpus);
                ctl.set_cpus(&v).map_err(|e| {
                    cg_err(format!("set cpuset.cpus {v:?} in {}", dir.display()), e)
                })?;
            }
            if mine.mems.is_empty() {
                let v = cpu_list(&theirs.mems);
                ctl.set_mems(&v).map_err(|e| {
                    cg_err(format!("set cpuset.mems {v:?} in {}", dir.display()), e)
                })?;
            }
        }
        let now = CpuSetController::new(leaf.to_path_buf(), false).cpuset();
        if now.cpus.is_empty() || now.mems.is_empty() {
            return Err(Error::os(
                format!("populate cpuset.cpus/mems in {}", leaf.display()),
                io::Error::other("still empty"),
            ));
        }
        Ok(())
    }

    /// Whether this is a cgroup v2 (unified) cgroup.
    pub fn v2(&self) -> bool {
        self.inner.v2()
    }

    /// (controller, directory) for each controller; on v2 all share one.
    pub fn dirs(&self) -> Vec<(String, PathBuf)> {
        self.inner
            .subsystems()
            .iter()
            .map(|s| (s.controller_name(), s.to_controller().path().to_path_buf()))
            .collect()
    }

    /// The directory of controller `ctl` (`memory`, `cpu`, ...).
    pub fn dir(&self, ctl: &str) -> Option<PathBuf> {
        self.dirs()
            .into_iter()
            .find(|(c, _)| c == ctl)
            .map(|(_, d)| d)
    }

    /// Apply memory, cpu, cpuset, pids and (v1) devices limits through the
    /// cgroups-rs controllers. Unlike `cgroups_rs::Cgroup::apply`, which
    /// drops most write errors, every failure is reported.
    pub fn apply(&self, r: &LinuxResources) -> Result<()> {
        let v2 = self.inner.v2();
        if let Some(m) = r.memory() {
            self.apply_memory(m)?;
        }
        if let Some(cpu) = r.cpu() {
            if let Some(c) = self.inner.controller_of::<CpuController>() {
                let at = c.path().display();
                if let Some(shares) = cpu.shares() {
                    let v = if v2 { shares_to_weight(shares) } else { shares };
                    c.set_shares(v)
                        .map_err(|e| cg_err(format!("set cpu shares {v} in {at}"), e))?;
                }
                let (quota, period) = (cpu.quota(), cpu.period());
                if v2 {
                    if quota.is_some() || period.is_some() {
                        c.set_cfs_quota_and_period(quota, period).map_err(|e| {
                            cg_err(format!("set cpu.max {quota:?} {period:?} in {at}"), e)
                        })?;
                    }
                } else {
                    // Period first: the quota is checked against it.
                    if let Some(p) = period {
                        c.set_cfs_period(p)
                            .map_err(|e| cg_err(format!("set cpu.cfs_period_us {p} in {at}"), e))?;
                    }
                    if let Some(q) = quota {
                        c.set_cfs_quota(q)
                            .map_err(|e| cg_err(format!("set cpu.cfs_quota_us {q} in {at}"), e))?;
                    }
                }
            }
            if let Some(cs) = self.inner.controller_of::<CpuSetController>() {
                let at = cs.path().display();
                if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
                    cs.set_cpus(cpus)
                        .map_err(|e| cg_err(format!("set cpuset.cpus {cpus:?} in {at}"), e))?;
                }
                if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
                    cs.set_mems(mems)
                        .map_err(|e| cg_err(format!("set cpuset.mems {mems:?} in {at}"), e))?;
                }
            }
        }
        if let Some(devs) = r.devices() {
            // v2 has no devices files (it takes an eBPF program); v1 only.
            if !v2 {
                if let Some(d) = self.inner.controller_of::<DevicesController>() {
                    for rule in devs {
                        self.device(d, rule)?;
                    }
                }
            }
        }
        if let Some(pids) = r.pids() {
            if let Some(p) = self.inner.controller_of::<PidController>() {
                let v = if pids.limit() > 0 {
                    MaxValue::Value(pids.limit())
                } else {
                    MaxValue::Max
                };
                p.set_pid_max(v).map_err(|e| {
                    cg_err(format!("set pids.max {v} in {}", p.path().display()), e)
                })?;
            }
        }
        if let Some(b) = r.block_io() {
            self.apply_block_io(b)?;
        }
        if let Some(unified) = r.unified().as_ref().filter(|u| !u.is_empty()) {
            self.apply_unified(unified)?;
        }
        Ok(())
    }

    /// Block I/O: weights and throttles. v1: blkio.weight,
    /// blkio.weight_device and blkio.throttle.{read,write}_{bps,iops}_device;
    /// v2: io.weight (default and per device) and io.max. A zero throttle
    /// removes the device's limit (v1 writes 0, v2 "max").
    fn apply_block_io(&self, b: &oci_spec::runtime::LinuxBlockIo) -> Result<()> {
        let v2 = self.inner.v2();
        let dir = if v2 {
            self.dirs().into_iter().next().map(|(_, d)| d)
        } else {
            self.dir("blkio")
        };
        let any = b.weight().is_some()
            || b.weight_device().as_ref().is_some_and(|v| !v.is_empty())
            || [
                b.throttle_read_bps_device(),
                b.throttle_write_bps_device(),
                b.throttle_read_iops_device(),
                b.throttle_write_iops_device(),
            ]
            .iter()
            .any(|t| t.as_ref().is_some_and(|v| !v.is_empty()));
        if !any {
            return Ok(());
        }
        let Some(dir) = dir else {
            return Err(Error::Spec(
                "block I/O limits need the blkio (v1) or io (v2) controller".into(),
            ));
        };
        let write = |file: &str, value: String| -> Result<()> {
            std::fs::write(dir.join(file), &value).map_err(|e| {
                Error::os(
                    format!("write {value:?} to {}", dir.join(file).display()),
                    e,
                )
            })
        };
        // v2 io.weight is 1..10000 (default 100): runc's conversion of the
        // v1 10..1000 scale.
        let v2_weight = |w: u16| 1 + (u64::from(w).saturating_sub(10)) * 9999 / 990;
        if let Some(w) = b.weight() {
            if v2 {
                write("io.weight", format!("default {}", v2_weight(w)))?;
            } else {
                write("blkio.weight", w.to_string())?;
            }
        }
        for d in b.weight_device().iter().flatten() {
            if let Some(w) = d.weight() {
                let (f, w) = if v2 {
                    ("io.weight", v2_weight(w))
                } else {
                    ("blkio.weight_device", u64::from(w))
                };
                write(f, format!("{}:{} {w}", d.major(), d.minor()))?;
            }
        }
        let throttles = [
            (b.throttle_read_bps_device(), "read_bps_device", "rbps"),
            (b.throttle_write_bps_device(), "write_bps_device", "wbps"),
            (b.throttle_read_iops_device(), "read_iops_device", "riops"),
            (b.throttle_write_iops_device(), "write_iops_device", "wiops"),
        ];
        for (list, v1_file, v2_key) in throttles {
            for d in list.iter().flatten() {
                let rate = d.rate();
                if v2 {
                    let v = if rate == 0 {
                        "max".to_string()
                    } else {
                        rate.to_string()
                    };
                    write(
                        "io.max",
                        format!("{}:{} {v2_key}={v}", d.major(), d.minor()),
                    )?;
                } else {
                    write(
                        &format!("blkio.throttle.{v1_file}"),
                        format!("{}:{} {rate}", d.major(), d.minor()),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Memory limits: on v1 memory.limit_in_bytes, memory.memsw.limit_in_bytes
    /// (limit + swap, only when the kernel accounts swap), memory.soft_limit_in_bytes,
    /// memory.swappiness and memory.oom_control; on v2 memory.max,
    /// memory.swap.max (swap alone: the OCI value minus the limit, as runc
    /// converts it), memory.low. A value the host cannot apply is an error
    /// naming the missing file, never silently dropped.
    fn apply_memory(&self, m: &LinuxMemory) -> Result<()> {
        let limit = m.limit().map(|l| if l < 0 { -1 } else { l });
        let swap = m
            .swap()
            .filter(|s| *s != 0)
            .map(|s| if s < 0 { -1 } else { s });
        let reservation = m.reservation().filter(|r| *r != 0);
        let swappiness = m.swappiness();
        let no_oom_kill = m.disable_oom_killer().unwrap_or(false);
        if limit.is_none()
            && swap.is_none()
            && reservation.is_none()
            && swappiness.is_none()
            && !no_oom_kill
        {
            return Ok(());
        }
        let Some(mem) = self.inner.controller_of::<MemController>() else {
            return Err(Error::Spec(
                "memory limits are set but the memory cgroup controller is not mounted".into(),
            ));
        };
        let dir = mem.path().to_path_buf();
        let at = dir.display();
        if let Some(sw) = swappiness {
            if sw > 100 {
                return Err(Error::Spec(format!(
                    "invalid memory swappiness {sw}: the range is 0-100"
                )));
            }
        }
        if self.inner.v2() {
            if swappiness.is_some() {
                return Err(Error::Spec(
                    "memory swappiness cannot be set on cgroup v2 (no memory.swappiness)".into(),
                ));
            }
            if no_oom_kill {
                return Err(Error::Spec(
                    "the OOM killer cannot be disabled on cgroup v2 (no memory.oom_control)".into(),
                ));
            }
            // -1 (no swap limit) needs no file when the kernel has no swap
            // accounting: there is nothing to limit.
            let has_swap_file = dir.join("memory.swap.max").exists();
            if let Some(swap) = swap.filter(|s| *s != -1 || has_swap_file) {
                let v = swap_v2(swap, limit.unwrap_or(0)).map_err(Error::Spec)?;
                if !has_swap_file {
                    return Err(Error::Spec(format!(
                        "{NO_SWAP_LIMIT}: {at}/memory.swap.max does not exist"
                    )));
                }
                // cgroups-rs writes -1 as "max".
                mem.set_memswap_limit(v)
                    .map_err(|e| cg_err(format!("set memory.swap.max {v} in {at}"), e))?;
            }
            if let Some(l) = limit {
                mem.set_limit(l)
                    .map_err(|e| cg_err(format!("set memory.max {l} in {at}"), e))?;
            }
            if let Some(r) = reservation {
                // cgroups-rs writes the soft limit to memory.low on v2.
                mem.set_soft_limit(r)
                    .map_err(|e| cg_err(format!("set memory.low {r} in {at}"), e))?;
            }
            return Ok(());
        }
        let set_limit = |l: i64| {
            mem.set_limit(l)
                .map_err(|e| cg_err(format!("set memory.limit_in_bytes {l} in {at}"), e))
        };
        let has_memsw = dir.join("memory.memsw.limit_in_bytes").exists();
        match swap.filter(|s| *s != -1 || has_memsw) {
            Some(sw) => {
                if !has_memsw {
                    return Err(Error::Spec(format!(
                        "{NO_SWAP_LIMIT}: {at}/memory.memsw.limit_in_bytes does not exist (boot with swapaccount=1)"
                    )));
                }
                let set_swap = || {
                    mem.set_memswap_limit(sw).map_err(|e| {
                        cg_err(format!("set memory.memsw.limit_in_bytes {sw} in {at}"), e)
                    })
                };
                // The kernel keeps memsw >= limit at every step: raise
                // memsw first when the current limit is below the new
                // memsw (always for a new cgroup, whose limit is "max",
                // it is the other way round), as runc does.
                let current = std::fs::read_to_string(dir.join("memory.limit_in_bytes"))
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .unwrap_or(u64::MAX);
                if sw == -1 || current < sw as u64 {
                    set_swap()?;
                    if let Some(l) = limit {
                        set_limit(l)?;
                    }
                } else {
                    if let Some(l) = limit {
                        set_limit(l)?;
                    }
                    set_swap()?;
                }
            }
            None => {
                if let Some(l) = limit {
                    set_limit(l)?;
                }
            }
        }
        if let Some(r) = reservation {
            mem.set_soft_limit(r)
                .map_err(|e| cg_err(format!("set memory.soft_limit_in_bytes {r} in {at}"), e))?;
        }
        if let Some(sw) = swappiness {
            mem.set_swappiness(sw)
                .map_err(|e| cg_err(format!("set memory.swappiness {sw} in {at}"), e))?;
        }
        if no_oom_kill {
            mem.disable_oom_killer()
                .map_err(|e| cg_err(format!("set memory.oom_control 1 in {at}"), e))?;
        }
        Ok(())
    }

    /// OCI `linux.resources.unified`: files of the v2 cgroup written as
    /// given (`memory.oom.group`, `memory.high`, ...). Refused on v1.
    fn apply_unified(&self, unified: &std::collections::HashMap<String, String>) -> Result<()> {
        if !self.inner.v2() {
            return Err(Error::Spec(
                "linux.resources.unified needs a cgroup v2 host".into(),
            ));
        }
        let Some(dir) = self.dirs().into_iter().next().map(|(_, d)| d) else {
            return Err(Error::Spec("no cgroup v2 directory".into()));
        };
        let mut keys: Vec<&String> = unified.keys().collect();
        keys.sort();
        for k in keys {
            let ok = k.contains('.')
                && !k.starts_with('.')
                && !k.starts_with("cgroup.")
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._".contains(&b));
            if !ok {
                return Err(Error::Spec(format!(
                    "invalid linux.resources.unified key {k:?}"
                )));
            }
            let path = dir.join(k);
            if !path.exists() {
                return Err(Error::Spec(format!(
                    "linux.resources.unified: {} does not exist (controller not enabled?)",
                    path.display()
                )));
            }
            std::fs::write(&path, &unified[k]).map_err(|e| {
                Error::os(format!("write {:?} to {}", unified[k], path.display()), e)
            })?;
        }
        Ok(())
    }

    /// How many processes of this cgroup the kernel's OOM killer killed:
    /// `oom_kill` of v1 memory.oom_control or v2 memory.events. None when
    /// the memory controller or the counter is missing.
    pub fn oom_kills(&self) -> Option<u64> {
        let dir = self.dir("memory").or_else(|| {
            self.inner
                .v2()
                .then(|| self.dirs().into_iter().next().map(|(_, d)| d))
                .flatten()
        })?;
        crate::oom::oom_kills(&dir, self.inner.v2())
    }

    /// Write one devices.allow/devices.deny rule with cgroups-rs.
    fn device(&self, d: &DevicesController, rule: &LinuxDeviceCgroup) -> Result<()> {
        let typ = match rule.typ() {
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => DeviceType::Char,
            Some(LinuxDeviceType::B) => DeviceType::Block,
            Some(LinuxDeviceType::A) | None => DeviceType::All,
            // The v1 devices controller only knows a, b and c (the kernel
            // rejects "p"); FIFOs need no device access, so skip the rule.
            Some(LinuxDeviceType::P) => return Ok(()),
        };
        let access = match rule.access() {
            None => DevicePermissions::all(),
            Some(a) => DevicePermissions::from_str(a)
                .map_err(|_| Error::Spec(format!("bad device access {a:?}")))?,
        };
        // cgroups-rs writes -1 as "*".
        let num = |n: Option<i64>| n.filter(|n| *n >= 0).unwrap_or(-1);
        let (major, minor) = (num(rule.major()), num(rule.minor()));
        let (verb, res) = if rule.allow() {
            ("allow", d.allow_device(typ, major, minor, &access))
        } else {
            ("deny", d.deny_device(typ, major, minor, &access))
        };
        res.map_err(|e| {
            cg_err(
                format!(
                    "{verb} device {:?} in {}",
                    device_rule(rule),
                    d.path().display()
                ),
                e,
            )
        })
    }

    /// Move `pid` (the whole thread group) into the cgroup, in every
    /// controller on v1.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        let task = CgroupPid::from(pid as u64);
        if self.inner.v2() {
            return self
                .inner
                .add_task_by_tgid(task)
                .map_err(|e| cg_err(format!("add pid {pid} to cgroup {}", self.rel.display()), e));
        }
        // cgroups_rs::Cgroup::add_task_by_tgid does this loop too, but its
        // error does not say which controller refused.
        for sub in self.inner.subsystems() {
            let c = sub.to_controller();
            c.add_task_by_tgid(&task).map_err(|e| {
                cg_err(
                    format!("add pid {pid} to {}/cgroup.procs", c.path().display()),
                    e,
                )
            })?;
        }
        Ok(())
    }

    /// Pids still in the cgroup (any controller).
    pub fn pids(&self) -> Vec<i32> {
        self.inner
            .procs()
            .into_iter()
            .filter_map(|p| i32::try_from(p.pid).ok())
            .filter(|p| *p > 0)
            .collect()
    }

    /// SIGKILL every process left in the cgroup: `cgroup.kill` on v2 when
    /// the kernel has it (cgroups-rs `kill`), else kill(2) for each pid.
    pub fn kill_all(&self) {
        if self.inner.v2() && self.inner.kill().is_ok() {
            return;
        }
        for pid in self.pids() {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Remove the cgroup (cgroups-rs `delete`, which retries with backoff
    /// and removes sub-cgroups first), killing and retrying while tasks
    /// linger. Best effort; returns whether everything was removed.
    pub fn remove(&self) -> bool {
        for attempt in 0..10 {
            if attempt > 0 {
                self.kill_all();
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.inner.delete().is_ok() && !self.inner.exists() {
                return true;
            }
        }
        !self.inner.exists()
    }
}

/// A v1 devices rule line, as written to devices.allow/deny: `c 1:3 rwm`,
/// `a *:* rwm`.
pub fn device_rule(rule: &LinuxDeviceCgroup) -> String {
    let typ = match rule.typ() {
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => "c",
        Some(LinuxDeviceType::B) => "b",
        Some(LinuxDeviceType::P) => "p",
        Some(LinuxDeviceType::A) | None => "a",
    };
    let num = |n: Option<i64>| match n {
        Some(n) if n >= 0 => n.to_string(),
        _ => "*".to_string(),
    };
    let access = rule.access().clone().unwrap_or_else(|| "rwm".to_string());
    format!("{typ} {}:{} {access}", num(rule.major()), num(rule.minor()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn weight_conversion() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
    }

    #[test]
    fn device_rules() {
        let rules: Vec<LinuxDeviceCgroup> = serde_json::from_str(
            r#"[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"},{"allow":true,"type":"c","major":136,"access":"rw"}]"#,
        )
        .unwrap();
        assert_eq!(device_rule(&rules[0]), "a *:* rwm");
        assert_eq!(device_rule(&rules[1]), "c 1:3 rwm");
        assert_eq!(device_rule(&rules[2]), "c 136:* rw");
    }

    #[test]
    fn relative_path() {
        assert_eq!(
            relative(Path::new("/berth/default/x")),
            PathBuf::from("berth/default/x")
        );
        assert_eq!(
            relative(Path::new("/../berth/./x")),
            PathBuf::from("berth/x")
        );
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list(&[(0, 0)]), "0");
        assert_eq!(cpu_list(&[(0, 3), (8, 8)]), "0-3,8");
        assert_eq!(cpu_list(&[]), "");
    }

    #[test]
    fn bad_paths_are_refused() {
        assert!(matches!(
            Cgroup::create(Path::new("/"), None),
            Err(Error::Spec(_))
        ));
        assert!(matches!(
            Cgroup::create(Path::new("/.."), None),
            Err(Error::Spec(_))
        ));
    }

    #[test]
    fn io_errors_survive_conversion() {
        let m = MemController::new(PathBuf::from("/nonexistent-berth-cg"), false);
        let e = cg_err("set it", m.set_limit(1).unwrap_err());
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
        assert!(e.to_string().starts_with("set it: "), "{e}");
    }

    /// Test cgroups are /berth-rt-test-<pid>-<n>/<tag>: two levels (so the
    /// cpuset copy runs through a parent), and a parent per test, so one
    /// test's cleanup never removes a parent another is creating under.
    fn unique(tag: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        PathBuf::from(format!(
            "/berth-rt-test-{}-{}/{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Kills the test's child and removes its cgroup and the cgroup's
    /// parent, whatever the test did.
    struct Guard {
        path: PathBuf,
        child: Option<std::process::Child>,
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(c) = &mut self.child {
                let _ = c.kill();
                let _ = c.wait();
            }
            if let Ok(cg) = Cgroup::load(&self.path) {
                cg.kill_all();
                cg.remove();
                // Non-recursive: only ever removes an empty parent.
                for (_, d) in cg.dirs() {
                    if let Some(p) = d.parent() {
                        let _ = std::fs::remove_dir(p);
                    }
                }
            }
        }
    }

    fn read(p: PathBuf) -> String {
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
            .trim()
            .to_string()
    }

    macro_rules! require_root {
        () => {
            if !nix::unistd::geteuid().is_root() {
                eprintln!("skipping: needs root");
                return;
            }
        };
    }

    #[test]
    fn root_create_apply_remove() {
        require_root!();
        let guard = Guard {
            path: unique("limits"),
            child: None,
        };
        let res: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":67108864},"cpu":{"shares":512,"quota":50000,"period":100000},"pids":{"limit":64}}"#,
        )
        .unwrap();
        let cg = Cgroup::create(&guard.path, Some(&res)).unwrap();
        assert_eq!(cg.v2(), is_v2(Path::new(CGROUP_ROOT)));
        let mem = cg.dir("memory").unwrap();
        let cpu = cg.dir("cpu").unwrap();
        let pids = cg.dir("pids").unwrap();
        if cg.v2() {
            assert_eq!(read(mem.join("memory.max")), "67108864");
            assert_eq!(
                read(cpu.join("cpu.weight")),
                shares_to_weight(512).to_string()
            );
            assert_eq!(read(cpu.join("cpu.max")), "50000 100000");
        } else {
            assert_eq!(read(mem.join("memory.limit_in_bytes")), "67108864");
            assert_eq!(read(cpu.join("cpu.shares")), "512");
            assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
            assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
            let cpuset = cg.dir("cpuset").unwrap();
            assert!(!read(cpuset.join("cpuset.cpus")).is_empty());
            assert!(!read(cpuset.join("cpuset.mems")).is_empty());
        }
        assert_eq!(read(pids.join("pids.max")), "64");
        let dirs = cg.dirs();
        assert!(dirs.iter().all(|(_, d)| d.ends_with(relative(&guard.path))));
        assert!(cg.remove());
        for (c, d) in &dirs {
            assert!(!d.exists(), "{c} cgroup {} left behind", d.display());
        }
    }

    /// On a v1/hybrid host every mounted v1 controller gets the cgroup, and
    /// neither the name=systemd hierarchy nor the cgroup2 mount is touched.
    #[test]
    fn root_v1_controllers_only() {
        require_root!();
        if is_v2(Path::new(CGROUP_ROOT)) {
            eprintln!("skipping: pure cgroup v2 host");
            return;
        }
        let guard = Guard {
            path: unique("hybrid"),
            child: None,
        };
        let rel = relative(&guard.path);
        let cg = Cgroup::create(&guard.path, None).unwrap();
        assert!(!cg.v2());
        let names: Vec<String> = cg.dirs().into_iter().map(|(c, _)| c).collect();
        for c in [
            "memory", "cpu", "cpuacct", "pids", "cpuset", "devices", "freezer", "blkio",
        ] {
            if Path::new(CGROUP_ROOT).join(c).join("cgroup.procs").exists() {
                assert!(names.iter().any(|n| n == c), "{c} missing from {names:?}");
                assert!(Path::new(CGROUP_ROOT).join(c).join(&rel).is_dir());
            }
        }
        assert!(!names.iter().any(|n| n.starts_with("name=")), "{names:?}");
        for other in ["systemd", "unified"] {
            let d = Path::new(CGROUP_ROOT).join(other).join(&rel);
            assert!(!d.exists(), "{} created", d.display());
        }
        assert!(cg.remove());
    }

    #[test]
    fn root_add_pid_kill_remove() {
        require_root!();
        let mut guard = Guard {
            path: unique("procs"),
            child: None,
        };
        let res: LinuxResources =
            serde_json::from_str(r#"{"memory":{"limit":67108864},"pids":{"limit":16}}"#).unwrap();
        let cg = Cgroup::create(&guard.path, Some(&res)).unwrap();
        let child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        guard.child = Some(child);
        cg.add_pid(pid).unwrap();
        let mut seen = Vec::new();
        for (c, d) in cg.dirs() {
            if seen.contains(&d) {
                continue;
            }
            let procs = read(d.join("cgroup.procs"));
            assert!(
                procs.lines().any(|l| l == pid.to_string()),
                "{pid} not in {c} {}: {procs:?}",
                d.display()
            );
            seen.push(d);
        }
        assert_eq!(cg.pids(), vec![pid]);
        let own = read(PathBuf::from(format!("/proc/{pid}/cgroup")));
        let rel = relative(&guard.path);
        assert!(own.contains(&format!("/{}", rel.display())), "{own}");

        // While the task is inside, removal must kill it and still succeed.
        assert!(cg.remove());
        let status = guard.child.as_mut().unwrap().wait().unwrap();
        assert!(!status.success());
        guard.child = None;
        for (c, d) in cg.dirs() {
            assert!(!d.exists(), "{c} cgroup {} left behind", d.display());
        }
        assert!(cg.pids().is_empty());
    }

    #[test]
    fn v2_swap_conversion() {
        assert_eq!(swap_v2(-1, 8), Ok(-1));
        assert_eq!(swap_v2(16, 8), Ok(8));
        assert_eq!(swap_v2(8, 8), Ok(0));
        assert!(swap_v2(4, 8).is_err());
        assert!(swap_v2(16, 0).is_err());
        assert!(swap_v2(16, -1).is_err());
    }

    const MIB: i64 = 1 << 20;

    #[test]
    fn root_memory_limits_land_in_files() {
        require_root!();
        let guard = Guard {
            path: unique("memory"),
            child: None,
        };
        let v2 = is_v2(Path::new(CGROUP_ROOT));
        let res: LinuxResources = serde_json::from_value(if v2 {
            serde_json::json!({"memory": {"limit": 8 * MIB, "swap": 24 * MIB, "reservation": 6 * MIB}})
        } else {
            serde_json::json!({"memory": {"limit": 8 * MIB, "swap": 24 * MIB, "reservation": 6 * MIB,
                "swappiness": 10, "disableOOMKiller": true}})
        })
        .unwrap();
        let memsw = Path::new(CGROUP_ROOT)
            .join("memory/memory.memsw.limit_in_bytes")
            .exists();
        if !v2 && !memsw {
            // No swap accounting: a memory+swap limit is refused clearly.
            let e = Cgroup::create(&guard.path, Some(&res)).unwrap_err();
            assert!(e.to_string().contains(NO_SWAP_LIMIT), "{e}");
            return;
        }
        let cg = Cgroup::create(&guard.path, Some(&res)).unwrap();
        let mem = cg.dir("memory").unwrap();
        if v2 {
            assert_eq!(read(mem.join("memory.max")), (8 * MIB).to_string());
            assert_eq!(read(mem.join("memory.swap.max")), (16 * MIB).to_string());
            assert_eq!(read(mem.join("memory.low")), (6 * MIB).to_string());
        } else {
            assert_eq!(
                read(mem.join("memory.limit_in_bytes")),
                (8 * MIB).to_string()
            );
            assert_eq!(
                read(mem.join("memory.memsw.limit_in_bytes")),
                (24 * MIB).to_string()
            );
            assert_eq!(
                read(mem.join("memory.soft_limit_in_bytes")),
                (6 * MIB).to_string()
            );
            assert_eq!(read(mem.join("memory.swappiness")), "10");
            let oc = read(mem.join("memory.oom_control"));
            assert!(oc.contains("oom_kill_disable 1"), "{oc}");
        }
        assert_eq!(cg.oom_kills(), Some(0));
        assert!(cg.remove());
    }

    #[test]
    fn root_bad_memory_limits_are_refused() {
        require_root!();
        let v2 = is_v2(Path::new(CGROUP_ROOT));
        // Memory+swap below the memory limit: the kernel (v1) or our
        // conversion (v2) refuses it, and nothing is left behind.
        let res: LinuxResources = serde_json::from_value(
            serde_json::json!({"memory": {"limit": 16 * MIB, "swap": 8 * MIB}}),
        )
        .unwrap();
        let guard = Guard {
            path: unique("memory-bad"),
            child: None,
        };
        assert!(Cgroup::create(&guard.path, Some(&res)).is_err());
        let cg = Cgroup::load(&guard.path).unwrap();
        for (c, d) in cg.dirs() {
            assert!(!d.exists(), "{c} cgroup {} left behind", d.display());
        }
        let res: LinuxResources =
            serde_json::from_value(serde_json::json!({"memory": {"swappiness": 101}})).unwrap();
        let guard = Guard {
            path: unique("memory-bad"),
            child: None,
        };
        let e = Cgroup::create(&guard.path, Some(&res)).unwrap_err();
        assert!(e.to_string().contains("swappiness"), "{e}");
        if v2 {
            let res: LinuxResources =
                serde_json::from_value(serde_json::json!({"memory": {"disableOOMKiller": true}}))
                    .unwrap();
            let e = Cgroup::create(&guard.path, Some(&res)).unwrap_err();
            assert!(e.to_string().contains("cgroup v2"), "{e}");
        } else {
            let res: LinuxResources =
                serde_json::from_value(serde_json::json!({"unified": {"memory.oom.group": "1"}}))
                    .unwrap();
            let e = Cgroup::create(&guard.path, Some(&res)).unwrap_err();
            assert!(e.to_string().contains("cgroup v2"), "{e}");
        }
        // -1 swap (unlimited) is fine with or without swap accounting.
        let res: LinuxResources =
            serde_json::from_value(serde_json::json!({"memory": {"limit": 8 * MIB, "swap": -1}}))
                .unwrap();
        let guard = Guard {
            path: unique("memory-unlimited-swap"),
            child: None,
        };
        let cg = Cgroup::create(&guard.path, Some(&res)).unwrap();
        assert!(cg.remove());
    }

    /// A process allocating past the limit is OOM-killed: the counter
    /// moves and the watch descriptor becomes readable.
    #[test]
    fn root_oom_kill_is_counted_and_notified() {
        require_root!();
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            eprintln!("skipping: no /bin/busybox");
            return;
        }
        let v2 = is_v2(Path::new(CGROUP_ROOT));
        let mut guard = Guard {
            path: unique("oom"),
            child: None,
        };
        let res: LinuxResources =
            serde_json::from_value(serde_json::json!({"memory": {"limit": 8 * MIB}})).unwrap();
        let cg = Cgroup::create(&guard.path, Some(&res)).unwrap();
        assert_eq!(cg.v2(), v2);
        let dir = if v2 {
            cg.dirs()[0].1.clone()
        } else {
            cg.dir("memory").unwrap()
        };
        // No swapping out of the OOM where the host has swap.
        for (f, v) in [
            ("memory.memsw.limit_in_bytes", (8 * MIB).to_string()),
            ("memory.swap.max", "0".to_string()),
        ] {
            if dir.join(f).exists() {
                std::fs::write(dir.join(f), v).unwrap();
            }
        }
        let watch = crate::oom::OomWatch::open(&dir, cg.v2()).unwrap();
        assert_eq!(cg.oom_kills(), Some(0));
        // The shell waits for a line so that it is in the cgroup before it
        // allocates; then it holds 64 MiB in a variable.
        let mut child = std::process::Command::new(busybox)
            .args([
                "sh",
                "-c",
                "read go; x=$(head -c 64m /dev/zero | tr '\\0' a); echo ${#x}",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut stdin = child.stdin.take().unwrap();
        guard.child = Some(child);
        cg.add_pid(pid).unwrap();
        use std::io::Write;
        stdin.write_all(b"go\n").unwrap();
        drop(stdin);
        let status = guard.child.as_mut().unwrap().wait().unwrap();
        guard.child = None;
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        // The notification is there (bounded wait, a guard against a hang).
        let mut pfd = libc::pollfd {
            fd: watch.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 30_000) };
        assert_eq!(n, 1, "no OOM notification");
        watch.drain();
        assert!(cg.oom_kills().unwrap_or(0) >= 1);
        assert_eq!(watch.kills(), cg.oom_kills());
        assert!(cg.remove());
        assert!(!watch.cgroup_exists());
    }

    #[test]
    fn root_devices_rules_land_in_v1() {
        require_root!();
        if is_v2(Path::new(CGROUP_ROOT)) {
            eprintln!("skipping: no devices files on cgroup v2");
            return;
        }
        let guard = Guard {
            path: unique("devices"),
            child: None,
        };
        let res: LinuxResources = serde_json::from_str(
            r#"{"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"},{"allow":true,"type":"c","major":136,"access":"rw"},{"allow":true,"type":"p","access":"rwm"}]}"#,
        )
        .unwrap();
        let cg = Cgroup::create(&guard.path, Some(&res)).unwrap();
        let list = read(cg.dir("devices").unwrap().join("devices.list"));
        let mut lines: Vec<&str> = list.lines().collect();
        lines.sort();
        assert_eq!(lines, vec!["c 136:* rw", "c 1:3 rwm"]);
        assert!(cg.remove());

        let bad: LinuxResources =
            serde_json::from_str(r#"{"devices":[{"allow":true,"type":"c","access":"rwx"}]}"#)
                .unwrap();
        let path = unique("devices-bad");
        let guard2 = Guard {
            path: path.clone(),
            child: None,
        };
        assert!(matches!(
            Cgroup::create(&path, Some(&bad)),
            Err(Error::Spec(_))
        ));
        let cg = Cgroup::load(&guard2.path).unwrap();
        for (c, d) in cg.dirs() {
            assert!(!d.exists(), "{c} cgroup {} left behind", d.display());
        }
    }
}
