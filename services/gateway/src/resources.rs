//! Resource limits at create: docker's checks, messages, warnings and
//! defaults (its daemon's `verifyPlatformContainerResources` and
//! `adaptContainerSettings`), against what the host's cgroups can do (its
//! `sysinfo`). berth-tasks runs on the same host, so the gateway reads the
//! cgroup mounts itself, as dockerd does.

use std::path::{Path, PathBuf};

use berth_proto::gateway::v1::Resources as ApiResources;

use crate::container::Resources;

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
        let Some(dir) = v1_memory_mount(&mountinfo) else {
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

/// The mount point of the v1 memory hierarchy, from mountinfo.
fn v1_memory_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let fields: Vec<&str> = left.split(' ').collect();
        let rfields: Vec<&str> = right.split(' ').collect();
        (fields.len() >= 5
            && rfields.len() >= 3
            && rfields[0] == "cgroup"
            && rfields[2].split(',').any(|o| o == "memory"))
        .then(|| PathBuf::from(fields[4]))
    })
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
        },
        warnings,
    ))
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

    #[test]
    fn finds_the_v1_memory_mount() {
        let mi = "30 25 0:26 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n\
                  33 25 0:29 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n\
                  32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            v1_memory_mount(mi),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            v1_memory_mount("32 25 0:28 / /x rw - cgroup2 cgroup2 rw\n"),
            None
        );
    }
}
