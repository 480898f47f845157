//! The OCI runtime spec for a container, built from its record and image.

use std::path::Path;

use serde_json::{json, Value};

use crate::container::{ContainerRecord, Resources};
use crate::error::{Error, Result};

/// PATH that Docker gives containers whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set.
const DEFAULT_CAPS: &[&str] = &[
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
    "CAP_AUDIT_WRITE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub use berth_runtime::user::Identity;

/// Reads a file of the image's root filesystem from its layer directories
/// (upper first), without following symlinks out of them.
fn read_image_file(layer_dirs: &[String], rel: &str) -> Option<String> {
    for dir in layer_dirs {
        let mut p = Path::new(dir).to_path_buf();
        let mut ok = true;
        for comp in rel.split('/').filter(|c| !c.is_empty()) {
            p.push(comp);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    ok = false;
                    break;
                }
                Ok(_) => {}
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            if let Ok(s) = std::fs::read_to_string(&p) {
                return Some(s);
            }
        }
    }
    None
}

/// The directories making up a rootfs, topmost first, from its mounts.
pub fn layer_dirs(mounts: &[berth_proto::types::v1::Mount]) -> Vec<String> {
    let mut out = Vec::new();
    for m in mounts {
        if m.r#type == "bind" {
            out.push(m.source.clone());
            continue;
        }
        let mut upper = None;
        let mut lowers = Vec::new();
        for o in &m.options {
            if let Some(u) = o.strip_prefix("upperdir=") {
                upper = Some(u.to_string());
            } else if let Some(l) = o.strip_prefix("lowerdir=") {
                lowers.extend(l.split(':').map(String::from));
            }
        }
        out.extend(upper);
        out.extend(lowers);
    }
    out
}

/// Resolves `user` ("", "name", "uid", "name:group", "uid:gid") against the
/// image's /etc/passwd and /etc/group, like Docker.
pub fn resolve_user(user: &str, layer_dirs: &[String]) -> Result<Identity> {
    let passwd = read_image_file(layer_dirs, "etc/passwd").unwrap_or_default();
    let group = read_image_file(layer_dirs, "etc/group").unwrap_or_default();
    berth_runtime::user::resolve(user, &passwd, &group).map_err(Error::InvalidArgument)
}

/// Builds config.json for the container.
pub fn build(rec: &ContainerRecord, identity: &Identity, netns: Option<&str>) -> Value {
    let mut env = rec.config.env.clone();
    let has = |env: &[String], k: &str| {
        env.iter()
            .any(|e| e.split_once('=').map_or(e.as_str(), |(a, _)| a) == k)
    };
    if !has(&env, "HOSTNAME") {
        env.push(format!("HOSTNAME={}", rec.config.hostname));
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={}", identity.home));
    }
    let mut args = vec![rec.path.clone()];
    args.extend(rec.args.iter().cloned());
    let cwd = if rec.config.working_dir.is_empty() {
        "/".to_string()
    } else {
        rec.config.working_dir.clone()
    };
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match netns {
        Some(p) if !p.is_empty() => namespaces.push(json!({"type": "network", "path": p})),
        Some(_) => {} // host network
        None => namespaces.push(json!({"type": "network"})),
    }
    let dir = &rec.dir;
    let caps: Vec<&str> = DEFAULT_CAPS.to_vec();
    let mut annotations = serde_json::Map::new();
    if rec.host_config.init {
        annotations.insert(berth_runtime::init::ANNOTATION.into(), json!("true"));
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "annotations": annotations,
        "process": {
            "terminal": rec.config.tty,
            "user": {"uid": identity.uid, "gid": identity.gid, "additionalGids": identity.additional_gids},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576u64, "soft": 1048576u64}],
            "noNewPrivileges": false,
            // Always set, like docker: a container does not inherit the
            // daemon's own value.
            "oomScoreAdj": rec.host_config.oom_score_adj,
        },
        "root": {"path": "rootfs", "readonly": rec.host_config.read_only},
        "hostname": rec.config.hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/etc/resolv.conf", "type": "bind", "source": format!("{dir}/resolv.conf"), "options": ["rbind", "rprivate"]},
            {"destination": "/etc/hostname", "type": "bind", "source": format!("{dir}/hostname"), "options": ["rbind", "rprivate"]},
            {"destination": "/etc/hosts", "type": "bind", "source": format!("{dir}/hosts"), "options": ["rbind", "rprivate"]},
        ],
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": format!("/berth/{}/{}", rec.namespace, rec.id),
            "resources": {
                "devices": [
                    {"allow": false, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 136, "access": "rwm"},
                ],
            },
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    });
    // Volumes, binds and tmpfs after the defaults, parents first: the
    // runtime resolves each target inside the root.
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        mounts.extend(rec.mount_points.iter().map(crate::mounts::MountPoint::spec));
    }
    if let Some(res) = spec["linux"]["resources"].as_object_mut() {
        res.extend(limits(&rec.host_config.resources));
    }
    if let Some(rl) = spec["process"]["rlimits"].as_array_mut() {
        for u in &rec.host_config.resources.ulimits {
            let name = format!("RLIMIT_{}", u.name.to_uppercase());
            rl.retain(|r| r["type"] != name.as_str());
            let v = |x: i64| if x < 0 { u64::MAX } else { x as u64 };
            rl.push(json!({"type": name, "soft": v(u.soft), "hard": v(u.hard)}));
        }
    }
    spec
}

/// linux.resources (without devices) for the container's limits: memory,
/// cpu, pids, blockIO. Also what `update` sends to a running task.
pub fn limits(r: &Resources) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    if let Some(m) = memory(r) {
        out.insert("memory".into(), m);
    }
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(r.cpu_shares));
    }
    if r.nano_cpus > 0 {
        // docker: a 100 ms period and the matching quota.
        cpu.insert("period".into(), json!(100_000));
        cpu.insert("quota".into(), json!(r.nano_cpus / 10_000));
    } else {
        if r.cpu_period > 0 {
            cpu.insert("period".into(), json!(r.cpu_period));
        }
        if r.cpu_quota != 0 {
            cpu.insert("quota".into(), json!(r.cpu_quota));
        }
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(r.cpuset_mems));
    }
    if !cpu.is_empty() {
        out.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(p) = r.pids_limit {
        out.insert("pids".into(), json!({"limit": p}));
    }
    let mut bio = serde_json::Map::new();
    if r.blkio_weight > 0 {
        bio.insert("weight".into(), json!(r.blkio_weight));
    }
    let devs = |l: &[crate::container::DeviceLimit], key: &str| -> Vec<Value> {
        l.iter()
            .map(|d| json!({"major": d.major, "minor": d.minor, key: d.value}))
            .collect()
    };
    for (key, list, field) in [
        ("weightDevice", &r.blkio_weight_device, "weight"),
        ("throttleReadBpsDevice", &r.device_read_bps, "rate"),
        ("throttleWriteBpsDevice", &r.device_write_bps, "rate"),
        ("throttleReadIOPSDevice", &r.device_read_iops, "rate"),
        ("throttleWriteIOPSDevice", &r.device_write_iops, "rate"),
    ] {
        if !list.is_empty() {
            bio.insert(key.into(), json!(devs(list, field)));
        }
    }
    if !bio.is_empty() {
        out.insert("blockIO".into(), Value::Object(bio));
    }
    out
}

/// linux.resources.memory for the container's limits (None: no limits).
/// `swap` is memory + swap, as docker and runc take it.
fn memory(r: &Resources) -> Option<Value> {
    let mut m = serde_json::Map::new();
    if r.memory != 0 {
        m.insert("limit".into(), json!(r.memory));
    }
    if r.memory_swap != 0 {
        m.insert("swap".into(), json!(r.memory_swap));
    }
    if r.memory_reservation != 0 {
        m.insert("reservation".into(), json!(r.memory_reservation));
    }
    if let Some(s) = r.memory_swappiness {
        m.insert("swappiness".into(), json!(s));
    }
    if r.oom_kill_disable {
        m.insert("disableOOMKiller".into(), json!(true));
    }
    (!m.is_empty()).then_some(Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with(passwd: &str, group: &str) -> (std::path::PathBuf, Vec<String>) {
        let d = std::env::temp_dir().join(format!(
            "berth-spec-{}-{}",
            std::process::id(),
            crate::container::new_id()
        ));
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::write(d.join("etc/passwd"), passwd).unwrap();
        std::fs::write(d.join("etc/group"), group).unwrap();
        let dirs = vec![d.to_string_lossy().into_owned()];
        (d, dirs)
    }

    #[test]
    fn users() {
        let (d, dirs) = image_with(
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\napp:x:1000:1000::/app:/bin/sh\n",
            "root:x:0:\nnogroup:x:65534:\nstaff:x:50:app\napp:x:1000:\n",
        );
        assert_eq!(resolve_user("", &dirs).unwrap().uid, 0);
        assert_eq!(resolve_user("", &dirs).unwrap().home, "/root");
        let app = resolve_user("app", &dirs).unwrap();
        assert_eq!((app.uid, app.gid, app.home.as_str()), (1000, 1000, "/app"));
        assert_eq!(app.additional_gids, vec![50]);
        let n = resolve_user("1234:5678", &dirs).unwrap();
        assert_eq!((n.uid, n.gid), (1234, 5678));
        assert_eq!(resolve_user("nobody:staff", &dirs).unwrap().gid, 50);
        assert!(resolve_user("ghost", &dirs)
            .unwrap_err()
            .to_string()
            .contains("unable to find user ghost"));
        assert!(resolve_user("app:ghost", &dirs).is_err());
        std::fs::remove_dir_all(d).unwrap();
    }

    fn root_identity() -> Identity {
        Identity {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            home: "/root".into(),
        }
    }

    #[test]
    fn memory_limits_in_the_spec() {
        let id = root_identity();
        let mut rec = ContainerRecord::default();
        let spec = build(&rec, &id, None);
        assert!(spec["linux"]["resources"].get("memory").is_none());
        assert_eq!(spec["process"]["oomScoreAdj"], 0);
        rec.host_config.resources = Resources {
            memory: 8 << 20,
            memory_swap: 16 << 20,
            memory_reservation: 7 << 20,
            memory_swappiness: Some(0),
            oom_kill_disable: true,
            ..Default::default()
        };
        rec.host_config.oom_score_adj = -300;
        let spec = build(&rec, &id, None);
        let m = &spec["linux"]["resources"]["memory"];
        assert_eq!(m["limit"], 8 << 20);
        assert_eq!(m["swap"], 16 << 20);
        assert_eq!(m["reservation"], 7 << 20);
        assert_eq!(m["swappiness"], 0);
        assert_eq!(m["disableOOMKiller"], true);
        assert_eq!(spec["process"]["oomScoreAdj"], -300);
        // The devices rules stay beside it, and the runtime can read it.
        assert!(spec["linux"]["resources"]["devices"].is_array());
        let parsed: oci_spec::runtime::Spec = serde_json::from_value(spec).unwrap();
        let mem = parsed
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.memory().as_ref())
            .cloned()
            .unwrap();
        assert_eq!(mem.swap(), Some(16 << 20));
        assert_eq!(mem.disable_oom_killer(), Some(true));
    }

    #[test]
    fn cpu_pids_blkio_and_ulimits_in_the_spec() {
        use crate::container::{DeviceLimit, Ulimit};
        let id = root_identity();
        let mut rec = ContainerRecord::default();
        rec.host_config.resources = Resources {
            nano_cpus: 1_500_000_000,
            cpu_shares: 512,
            cpuset_cpus: "1".into(),
            pids_limit: Some(20),
            device_write_bps: vec![DeviceLimit {
                path: "/dev/loop9".into(),
                major: 7,
                minor: 9,
                value: 1 << 20,
            }],
            ulimits: vec![Ulimit {
                name: "nofile".into(),
                soft: 100,
                hard: 200,
            }],
            ..Default::default()
        };
        let spec = build(&rec, &id, None);
        let r = &spec["linux"]["resources"];
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["cpu"]["quota"], 150_000);
        assert_eq!(r["cpu"]["shares"], 512);
        assert_eq!(r["cpu"]["cpus"], "1");
        assert_eq!(r["pids"]["limit"], 20);
        assert_eq!(
            r["blockIO"]["throttleWriteBpsDevice"],
            json!([{"major": 7, "minor": 9, "rate": 1 << 20}])
        );
        let rl = spec["process"]["rlimits"].as_array().unwrap();
        assert_eq!(rl.len(), 1, "{rl:?}");
        assert_eq!(
            rl[0],
            json!({"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200})
        );
        // The devices rules are not part of what update sends.
        assert!(limits(&rec.host_config.resources).get("devices").is_none());
    }

    #[test]
    fn symlinked_passwd_is_not_followed() {
        let d = std::env::temp_dir().join(format!("berth-spec-link-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink("/etc", d.join("etc")).unwrap();
        let dirs = vec![d.to_string_lossy().into_owned()];
        // root exists on the host, but the image's /etc is a symlink out.
        assert!(resolve_user("root", &dirs).is_err());
        std::fs::remove_dir_all(d).unwrap();
    }
}
