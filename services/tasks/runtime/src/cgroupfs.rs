//! Finding a process's cgroup directories through /proc (no cgroup
//! library state needed): used to join an exec into a container's cgroups
//! and by berth-tasks for pause and stats.

use std::path::PathBuf;

/// Directories of a process's cgroups, from `/proc/PID/cgroup` and
/// `/proc/self/mountinfo` (v1 controllers and cgroup2; named hierarchies
/// are left alone).
pub fn cgroup_dirs(proc_cgroup: &str, mountinfo: &str) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if ctrls.starts_with("name=") {
            continue;
        }
        let rel = path.trim_start_matches('/');
        for m in mountinfo.lines() {
            let Some((left, right)) = m.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = left.split(' ').collect();
            let rfields: Vec<&str> = right.split(' ').collect();
            if fields.len() < 5 || rfields.len() < 3 || fields[3] != "/" {
                continue;
            }
            let matches = match (rfields[0], ctrls) {
                ("cgroup2", "") => true,
                ("cgroup", c) if !c.is_empty() => {
                    let opts: Vec<&str> = rfields[2].split(',').collect();
                    c.split(',').all(|x| opts.contains(&x))
                }
                _ => false,
            };
            if matches {
                out.push((ctrls.to_string(), PathBuf::from(fields[4]).join(rel)));
                break;
            }
        }
    }
    out
}

/// The cgroup directories of a live process (empty when it is gone).
pub fn of_pid(pid: i32) -> Vec<(String, PathBuf)> {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    cgroup_dirs(&cg, &mi)
}

/// The directory of the v1 hierarchy holding `controller`, or the cgroup2
/// directory when the host is pure v2.
pub fn controller_dir(dirs: &[(String, PathBuf)], controller: &str) -> Option<PathBuf> {
    dirs.iter()
        .find(|(c, _)| c.split(',').any(|x| x == controller))
        .or_else(|| {
            // cgroup2 only counts when no v1 hierarchy exists (pure v2).
            if dirs.iter().all(|(c, _)| c.is_empty()) {
                dirs.iter().find(|(c, _)| c.is_empty())
            } else {
                None
            }
        })
        .map(|(_, p)| p.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths() {
        let cg = "12:freezer:/berth/ns/x\n4:cpu,cpuacct:/berth/ns/x\n1:name=systemd:/user\n0::/\n";
        let mi = "30 25 0:26 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n\
                  31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                  32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let dirs = cgroup_dirs(cg, mi);
        assert_eq!(
            dirs,
            vec![
                (
                    "freezer".to_string(),
                    PathBuf::from("/sys/fs/cgroup/freezer/berth/ns/x")
                ),
                (
                    "cpu,cpuacct".to_string(),
                    PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/berth/ns/x")
                ),
                (String::new(), PathBuf::from("/sys/fs/cgroup/unified")),
            ]
        );
    }
}
