//! Cgroups: v1 (one directory per controller, hybrid hosts included) or v2
//! (unified), created, limited, joined and removed by writing cgroupfs files.

use crate::error::{Context, Error, Result};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const V1_CONTROLLERS: &[&str] = &[
    "memory", "cpu", "cpuacct", "pids", "cpuset", "blkio", "devices", "freezer",
];

/// A container's cgroup: the leaf directories it owns.
#[derive(Debug, Clone)]
pub struct Cgroup {
    /// v1: (controller, dir) for each mounted controller; v2: ("", dir).
    pub dirs: Vec<(String, PathBuf)>,
    pub v2: bool,
}

/// True when `/sys/fs/cgroup` itself is cgroup2 (pure v2 host).
pub fn is_v2(root: &Path) -> bool {
    nix::sys::statfs::statfs(root)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).with_ctx(|| format!("write {value:?} to {}", path.display()))
}

fn relative(cgroups_path: &Path) -> PathBuf {
    cgroups_path
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect()
}

/// Create every directory from `base` down to `base/rel`; for cpuset, copy
/// cpus/mems from the parent into each level that is still empty.
fn mkdir_levels(base: &Path, rel: &Path, cpuset: bool) -> Result<PathBuf> {
    let mut dir = base.to_path_buf();
    for c in rel.components() {
        let parent = dir.clone();
        dir.push(c);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::os(format!("mkdir cgroup {}", dir.display()), e)),
        }
        if cpuset {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let mine = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
                if mine.trim().is_empty() {
                    let theirs = std::fs::read_to_string(parent.join(f))
                        .with_ctx(|| format!("read {}", parent.join(f).display()))?;
                    write(&dir.join(f), theirs.trim())?;
                }
            }
        }
    }
    Ok(dir)
}

/// Convert v1 cpu shares (2..262144) to v2 cpu.weight (1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

impl Cgroup {
    /// Create the cgroup `cgroups_path` (e.g. `/berth/default/<id>`) under
    /// `root` (normally /sys/fs/cgroup) and apply `resources`.
    pub fn create(
        root: &Path,
        cgroups_path: &Path,
        resources: Option<&LinuxResources>,
    ) -> Result<Self> {
        let rel = relative(cgroups_path);
        if rel.as_os_str().is_empty() {
            return Err(Error::Spec(format!(
                "bad cgroupsPath {}",
                cgroups_path.display()
            )));
        }
        let cg = if is_v2(root) {
            Self::create_v2(root, &rel)?
        } else {
            Self::create_v1(root, &rel)?
        };
        if let Some(r) = resources {
            if let Err(e) = cg.apply(r) {
                cg.remove();
                return Err(e);
            }
        }
        Ok(cg)
    }

    fn create_v1(root: &Path, rel: &Path) -> Result<Self> {
        let mut dirs: Vec<(String, PathBuf)> = Vec::new();
        let mut seen: Vec<PathBuf> = Vec::new();
        for ctl in V1_CONTROLLERS {
            let base = root.join(ctl);
            // Skip controllers that are not mounted (and co-mounted duplicates
            // like cpu,cpuacct reached through symlinks).
            let Ok(real) = std::fs::canonicalize(&base) else {
                continue;
            };
            if !is_mount_of_cgroup(&real) || seen.contains(&real) {
                if seen.contains(&real) {
                    dirs.push((ctl.to_string(), real.join(rel)));
                }
                continue;
            }
            seen.push(real.clone());
            match mkdir_levels(&real, rel, *ctl == "cpuset") {
                Ok(d) => dirs.push((ctl.to_string(), d)),
                Err(e) => {
                    let cg = Cgroup { dirs, v2: false };
                    cg.remove();
                    return Err(e);
                }
            }
        }
        if dirs.is_empty() {
            return Err(Error::Spec(format!(
                "no cgroup controllers under {}",
                root.display()
            )));
        }
        Ok(Cgroup { dirs, v2: false })
    }

    fn create_v2(root: &Path, rel: &Path) -> Result<Self> {
        // Enable the controllers we use along the path.
        let mut dir = root.to_path_buf();
        let wanted = ["cpu", "memory", "pids", "cpuset", "io"];
        for c in rel.components() {
            let avail = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            let enable: Vec<String> = avail
                .split_whitespace()
                .filter(|c| wanted.contains(c))
                .map(|c| format!("+{c}"))
                .collect();
            if !enable.is_empty() {
                // Best effort: a controller may be busy at the root.
                let _ = std::fs::write(dir.join("cgroup.subtree_control"), enable.join(" "));
            }
            dir.push(c);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::os(format!("mkdir cgroup {}", dir.display()), e)),
            }
        }
        Ok(Cgroup {
            dirs: vec![(String::new(), dir)],
            v2: true,
        })
    }

    fn dir(&self, ctl: &str) -> Option<&Path> {
        if self.v2 {
            return self.dirs.first().map(|(_, d)| d.as_path());
        }
        self.dirs
            .iter()
            .find(|(c, _)| c == ctl)
            .map(|(_, d)| d.as_path())
    }

    /// Apply memory, cpu and pids limits.
    pub fn apply(&self, r: &LinuxResources) -> Result<()> {
        if let Some(mem) = r.memory() {
            if let Some(limit) = mem.limit() {
                if let Some(d) = self.dir("memory") {
                    let v = if limit < 0 {
                        "max".to_string()
                    } else {
                        limit.to_string()
                    };
                    if self.v2 {
                        write(&d.join("memory.max"), &v)?;
                    } else {
                        let v = if limit < 0 { "-1".to_string() } else { v };
                        write(&d.join("memory.limit_in_bytes"), &v)?;
                    }
                }
            }
        }
        if let Some(cpu) = r.cpu() {
            if let Some(d) = self.dir("cpu") {
                if self.v2 {
                    if let Some(shares) = cpu.shares() {
                        write(&d.join("cpu.weight"), &shares_to_weight(shares).to_string())?;
                    }
                    if cpu.quota().is_some() || cpu.period().is_some() {
                        let quota = match cpu.quota() {
                            Some(q) if q > 0 => q.to_string(),
                            _ => "max".to_string(),
                        };
                        let period = cpu.period().unwrap_or(100_000);
                        write(&d.join("cpu.max"), &format!("{quota} {period}"))?;
                    }
                } else {
                    if let Some(shares) = cpu.shares() {
                        write(&d.join("cpu.shares"), &shares.to_string())?;
                    }
                    if let Some(period) = cpu.period() {
                        write(&d.join("cpu.cfs_period_us"), &period.to_string())?;
                    }
                    if let Some(quota) = cpu.quota() {
                        write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
                    }
                }
            }
        }
        if let Some(devs) = r.devices() {
            if !self.v2 {
                if let Some(d) = self.dir("devices") {
                    for rule in devs {
                        let file = if rule.allow() {
                            "devices.allow"
                        } else {
                            "devices.deny"
                        };
                        write(&d.join(file), &device_rule(rule))?;
                    }
                }
            }
        }
        if let Some(pids) = r.pids() {
            if let Some(d) = self.dir("pids") {
                let v = if pids.limit() > 0 {
                    pids.limit().to_string()
                } else {
                    "max".into()
                };
                write(&d.join("pids.max"), &v)?;
            }
        }
        Ok(())
    }

    /// Move `pid` into every controller's directory.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        let mut done: Vec<&Path> = Vec::new();
        for (_, d) in &self.dirs {
            if done.contains(&d.as_path()) {
                continue;
            }
            write(&d.join("cgroup.procs"), &pid.to_string())?;
            done.push(d);
        }
        Ok(())
    }

    /// Pids still in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for (_, d) in &self.dirs {
            if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for p in s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()) {
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
        }
        out
    }

    /// SIGKILL every process left in the cgroup.
    pub fn kill_all(&self) {
        for pid in self.pids() {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Remove the leaf directories, killing and retrying briefly while tasks
    /// linger. Best effort; returns whether everything was removed.
    pub fn remove(&self) -> bool {
        let mut all = true;
        for (_, d) in &self.dirs {
            let mut ok = false;
            for attempt in 0..50 {
                match std::fs::remove_dir(d) {
                    Ok(()) => {
                        ok = true;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        ok = true;
                        break;
                    }
                    Err(_) => {
                        if attempt % 10 == 5 {
                            self.kill_all();
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            all &= ok;
        }
        all
    }
}

/// A v1 devices rule line: `c 1:3 rwm`, `a *:* rwm`.
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

fn is_mount_of_cgroup(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP_SUPER_MAGIC)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn root_create_apply_remove() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        let root = Path::new(CGROUP_ROOT);
        let name = format!("/berth-rt-test/cg-{}", std::process::id());
        let res: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":67108864},"cpu":{"shares":512,"quota":50000,"period":100000},"pids":{"limit":64}}"#,
        )
        .unwrap();
        let cg = Cgroup::create(root, Path::new(&name), Some(&res)).unwrap();
        let mem = cg.dir("memory").unwrap().to_path_buf();
        let pids = cg.dir("pids").unwrap().to_path_buf();
        if !cg.v2 {
            assert_eq!(
                std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
                    .unwrap()
                    .trim(),
                "67108864"
            );
            assert!(
                !std::fs::read_to_string(cg.dir("cpuset").unwrap().join("cpuset.cpus"))
                    .unwrap()
                    .trim()
                    .is_empty()
            );
        }
        assert_eq!(
            std::fs::read_to_string(pids.join("pids.max"))
                .unwrap()
                .trim(),
            "64"
        );
        assert!(cg.remove());
        assert!(!mem.exists());
        let parent = Cgroup {
            dirs: cg
                .dirs
                .iter()
                .map(|(c, d)| (c.clone(), d.parent().unwrap().to_path_buf()))
                .collect(),
            v2: cg.v2,
        };
        parent.remove();
    }
}
