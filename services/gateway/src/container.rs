//! The container record the gateway keeps, and its Docker-style documents.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Docker's zero time, shown for times that never happened.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub hostname: String,
    pub user: String,
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: String,
    pub stop_timeout: Option<i32>,
    /// The image as the user named it.
    pub image: String,
    /// A pseudo-terminal for the init (-t).
    #[serde(default)]
    pub tty: bool,
    /// Stdin kept open for attaching clients (-i).
    #[serde(default)]
    pub open_stdin: bool,
    /// Close stdin when the first attached client's input ends.
    #[serde(default)]
    pub stdin_once: bool,
    /// Config.Volumes: the image's VOLUME paths and those of `-v /path`.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Config.ExposedPorts ("80/tcp"): the image's EXPOSE, --expose and -p.
    #[serde(default)]
    pub exposed_ports: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HostConfig {
    pub auto_remove: bool,
    pub network_mode: String,
    pub restart_policy: RestartPolicy,
    pub read_only: bool,
    /// A reaper runs as PID 1 with the command as its child (--init).
    pub init: bool,
    /// json-file log options (--log-opt), validated at create.
    pub log_opts: BTreeMap<String, String>,
    /// Resource limits, as checked and defaulted at create.
    pub resources: Resources,
    /// oom_score_adj of the init (-1000..1000).
    pub oom_score_adj: i32,
    /// -v specs as given (HostConfig.Binds).
    pub binds: Vec<String>,
    /// --tmpfs path -> options (HostConfig.Tmpfs).
    pub tmpfs: BTreeMap<String, String>,
    /// --mount entries as docker shows them (HostConfig.Mounts).
    pub mounts: Vec<Value>,
    /// --volumes-from specs (HostConfig.VolumesFrom).
    pub volumes_from: Vec<String>,
    /// -p, expanded (HostConfig.PortBindings).
    pub port_bindings: Vec<crate::networking::PortBinding>,
    /// -P.
    pub publish_all: bool,
    /// The bridge networks joined at start, in order (eth0, eth1, ...):
    /// network_mode's and those connected later.
    pub networks: Vec<crate::networking::NetworkAttachment>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// --add-host HOST:IP.
    pub extra_hosts: Vec<String>,
    /// --link NAME[:ALIAS].
    pub links: Vec<String>,
}

/// Docker's HostConfig.Resources (the memory part so far), after create's
/// checks and defaults: what inspect shows and what the spec asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// Memory limit in bytes; 0: none.
    pub memory: i64,
    /// Memory + swap in bytes; -1: unlimited swap; 0: none (no memory limit).
    pub memory_swap: i64,
    /// Soft limit in bytes; 0: none.
    pub memory_reservation: i64,
    /// 0..100; None: the host's.
    pub memory_swappiness: Option<i64>,
    pub oom_kill_disable: bool,
    /// CPUs in billionths (--cpus); 0: none.
    pub nano_cpus: i64,
    /// CFS period and quota in microseconds; 0: unset.
    pub cpu_period: i64,
    pub cpu_quota: i64,
    /// Relative weight; 0: the default.
    pub cpu_shares: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    /// None: unlimited.
    pub pids_limit: Option<i64>,
    /// 10..1000; 0: unset.
    pub blkio_weight: u16,
    pub blkio_weight_device: Vec<DeviceLimit>,
    pub device_read_bps: Vec<DeviceLimit>,
    pub device_write_bps: Vec<DeviceLimit>,
    pub device_read_iops: Vec<DeviceLimit>,
    pub device_write_iops: Vec<DeviceLimit>,
    /// Accepted, ignored (deprecated); shown by inspect.
    pub kernel_memory: i64,
    pub ulimits: Vec<Ulimit>,
}

/// A per-device weight or throttle: the path as given, its device numbers
/// (looked up at create) and the weight or rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceLimit {
    pub path: String,
    pub major: i64,
    pub minor: i64,
    pub value: u64,
}

/// An rlimit of the container's processes (--ulimit); -1: unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// Docker's HostConfig.RestartPolicy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestartPolicy {
    /// "no" (or empty), "always", "unless-stopped", "on-failure".
    pub name: String,
    /// on-failure only; 0 = no limit.
    pub maximum_retry_count: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// created, running, paused, restarting, removing, exited, dead
    pub status: String,
    pub pid: u32,
    pub exit_code: i64,
    pub error: String,
    /// The kernel OOM-killed a process of the container in its last run.
    pub oom_killed: bool,
    pub started_at: String,
    pub finished_at: String,
    /// OOM kills counted in this run (each new one is an `oom` event).
    #[serde(default)]
    pub oom_kills: u32,
}

impl State {
    pub fn running(&self) -> bool {
        self.status == "running" || self.status == "paused"
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub created: String,
    /// Image ID ("sha256:..." of the config).
    pub image_id: String,
    pub path: String,
    pub args: Vec<String>,
    pub config: ContainerConfig,
    pub host_config: HostConfig,
    pub state: State,
    pub snapshot_key: String,
    pub dir: String,
    pub restart_count: u32,
    /// Set while a removal is in progress.
    #[serde(default)]
    pub removing: bool,
    /// Stopped or killed by the user: the restart policy does not apply
    /// until the next start (docker's HasBeenManuallyStopped).
    #[serde(default)]
    pub manually_stopped: bool,
    /// The restart back-off last used, in milliseconds (0: none yet).
    #[serde(default)]
    pub restart_delay_ms: u64,
    /// Volumes, binds and tmpfs mounts (docker's MountPoints), parents first.
    #[serde(default)]
    pub mount_points: Vec<crate::mounts::MountPoint>,
    /// The interfaces and ports berth-network made, while running.
    #[serde(default)]
    pub net: Option<crate::networking::NetRuntime>,
}

impl ContainerRecord {
    pub fn log_path(&self) -> String {
        format!("{}/{}-json.log", self.dir, self.id)
    }

    /// `docker ps`'s COMMAND: entrypoint and command joined.
    pub fn command_line(&self) -> String {
        std::iter::once(self.path.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The Docker inspect document.
    pub fn inspect(&self) -> Value {
        let st = &self.state;
        let or_zero = |s: &str| {
            if s.is_empty() {
                ZERO_TIME.to_string()
            } else {
                s.to_string()
            }
        };
        let network_mode = if self.host_config.network_mode.is_empty() {
            "bridge"
        } else {
            self.host_config.network_mode.as_str()
        };
        let settings = self.network_settings(network_mode);
        let or_null = |v: Value, empty: bool| if empty { Value::Null } else { v };
        let throttles = |l: &[DeviceLimit]| {
            l.iter()
                .map(|d| json!({"Path": d.path, "Rate": d.value}))
                .collect::<Vec<_>>()
        };
        let hc = &self.host_config;
        let mut doc = json!({
            "Id": self.id,
            "Created": self.created,
            "Path": self.path,
            "Args": self.args,
            "State": {
                "Status": st.status,
                // docker counts a restarting container as running.
                "Running": matches!(st.status.as_str(), "running" | "paused" | "restarting"),
                "Paused": st.status == "paused",
                "Restarting": st.status == "restarting",
                "OOMKilled": st.oom_killed,
                "Dead": st.status == "dead",
                "Pid": st.pid,
                "ExitCode": st.exit_code,
                "Error": st.error,
                "StartedAt": or_zero(&st.started_at),
                "FinishedAt": or_zero(&st.finished_at),
            },
            "Image": self.image_id,
            "ResolvConfPath": format!("{}/resolv.conf", self.dir),
            "HostnamePath": format!("{}/hostname", self.dir),
            "HostsPath": format!("{}/hosts", self.dir),
            "LogPath": self.log_path(),
            "Name": format!("/{}", self.name),
            "RestartCount": self.restart_count,
            "Driver": "overlayfs",
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": null,
            "HostConfig": {
                "Binds": or_null(json!(hc.binds), hc.binds.is_empty()),
                "ContainerIDFile": "",
                "LogConfig": {"Type": "json-file", "Config": self.host_config.log_opts},
                "NetworkMode": network_mode,
                "PortBindings": crate::networking::ports_doc(&hc.port_bindings, &[], false),
                "Dns": hc.dns,
                "DnsOptions": hc.dns_options,
                "DnsSearch": hc.dns_search,
                "ExtraHosts": or_null(json!(hc.extra_hosts), hc.extra_hosts.is_empty()),
                "Links": or_null(json!(hc.links), hc.links.is_empty()),
                "RestartPolicy": {
                    "Name": if self.host_config.restart_policy.name.is_empty() { "no" } else { self.host_config.restart_policy.name.as_str() },
                    "MaximumRetryCount": self.host_config.restart_policy.maximum_retry_count,
                },
                "AutoRemove": self.host_config.auto_remove,
                "VolumeDriver": "",
                "VolumesFrom": or_null(json!(hc.volumes_from), hc.volumes_from.is_empty()),
                "Privileged": false,
                "PublishAllPorts": hc.publish_all,
                "ReadonlyRootfs": self.host_config.read_only,
                // docker shows null unless --init was given.
                "Init": if self.host_config.init { json!(true) } else { Value::Null },
                "Runtime": "berth",
                "CgroupParent": "",
                "OomScoreAdj": self.host_config.oom_score_adj,
                "Memory": self.host_config.resources.memory,
                "MemoryReservation": self.host_config.resources.memory_reservation,
                "MemorySwap": self.host_config.resources.memory_swap,
                "MemorySwappiness": self.host_config.resources.memory_swappiness,
                "OomKillDisable": self.host_config.resources.oom_kill_disable,
                "NanoCpus": hc.resources.nano_cpus,
                "CpuShares": hc.resources.cpu_shares,
                "CpuPeriod": hc.resources.cpu_period,
                "CpuQuota": hc.resources.cpu_quota,
                "CpusetCpus": hc.resources.cpuset_cpus,
                "CpusetMems": hc.resources.cpuset_mems,
                "PidsLimit": hc.resources.pids_limit,
                "BlkioWeight": hc.resources.blkio_weight,
                "BlkioWeightDevice": hc.resources.blkio_weight_device.iter()
                    .map(|d| json!({"Path": d.path, "Weight": d.value})).collect::<Vec<_>>(),
                "BlkioDeviceReadBps": throttles(&hc.resources.device_read_bps),
                "BlkioDeviceWriteBps": throttles(&hc.resources.device_write_bps),
                "BlkioDeviceReadIOps": throttles(&hc.resources.device_read_iops),
                "BlkioDeviceWriteIOps": throttles(&hc.resources.device_write_iops),
                "KernelMemory": hc.resources.kernel_memory,
                "Ulimits": or_null(
                    json!(hc.resources.ulimits.iter()
                        .map(|u| json!({"Name": u.name, "Hard": u.hard, "Soft": u.soft}))
                        .collect::<Vec<_>>()),
                    hc.resources.ulimits.is_empty(),
                ),
            },
            "GraphDriver": {"Name": "overlayfs", "Data": {"Snapshot": self.snapshot_key}},
            "Mounts": self
                .mount_points
                .iter()
                .filter(|m| !m.tmpfs_flag)
                .map(crate::mounts::MountPoint::inspect)
                .collect::<Vec<_>>(),
            "Config": {
                "Hostname": self.config.hostname,
                "Domainname": "",
                "User": self.config.user,
                "AttachStdin": self.config.open_stdin && self.config.stdin_once,
                "AttachStdout": true,
                "AttachStderr": true,
                "Tty": self.config.tty,
                "OpenStdin": self.config.open_stdin,
                "StdinOnce": self.config.stdin_once,
                "Env": self.config.env,
                "Cmd": self.config.cmd,
                "Image": self.config.image,
                "Volumes": or_null(
                    Value::Object(self.config.volumes.iter().map(|v| (v.clone(), json!({}))).collect()),
                    self.config.volumes.is_empty(),
                ),
                "ExposedPorts": or_null(
                    Value::Object(self.config.exposed_ports.iter().map(|p| (p.clone(), json!({}))).collect()),
                    self.config.exposed_ports.is_empty(),
                ),
                "WorkingDir": self.config.working_dir,
                "Entrypoint": self.config.entrypoint,
                "OnBuild": null,
                "Labels": self.config.labels,
                "StopSignal": if self.config.stop_signal.is_empty() { Value::Null } else { json!(self.config.stop_signal) },
                "StopTimeout": self.config.stop_timeout,
            },
            "NetworkSettings": settings,
        });
        // docker leaves these out unless they were given.
        if !hc.tmpfs.is_empty() {
            doc["HostConfig"]["Tmpfs"] = json!(hc.tmpfs);
        }
        if !hc.mounts.is_empty() {
            doc["HostConfig"]["Mounts"] = json!(hc.mounts);
        }
        doc
    }
}

impl ContainerRecord {
    /// docker's NetworkSettings.
    fn network_settings(&self, mode: &str) -> Value {
        let net = self.net.as_ref();
        let mut networks = serde_json::Map::new();
        let attachments: Vec<crate::networking::NetworkAttachment> =
            if self.host_config.networks.is_empty() {
                if mode.starts_with("container:") {
                    Vec::new()
                } else {
                    vec![crate::networking::NetworkAttachment {
                        network: mode.to_string(),
                        ..Default::default()
                    }]
                }
            } else {
                self.host_config.networks.clone()
            };
        for a in &attachments {
            let ep = net.and_then(|n| n.endpoints.iter().find(|e| e.network_name == a.network));
            let s = |f: fn(&crate::networking::Endpoint) -> String| ep.map(f).unwrap_or_default();
            let ipam = if a.ipv4_address.is_empty() {
                Value::Null
            } else {
                json!({"IPv4Address": a.ipv4_address})
            };
            let mut dns_names: Vec<String> = Vec::new();
            if ep.is_some() && mode != "bridge" {
                dns_names.push(self.name.clone());
                dns_names.push(self.id[..12.min(self.id.len())].to_string());
                dns_names.extend(a.aliases.iter().cloned());
            }
            networks.insert(
                a.network.clone(),
                json!({
                    "IPAMConfig": ipam,
                    "Links": null,
                    "Aliases": if a.aliases.is_empty() { Value::Null } else { json!(a.aliases) },
                    "MacAddress": s(|e| e.mac.clone()),
                    "NetworkID": s(|e| e.network_id.clone()),
                    "EndpointID": s(|e| e.endpoint_id.clone()),
                    "Gateway": s(|e| e.gateway.clone()),
                    "IPAddress": s(|e| e.ip.clone()),
                    "IPPrefixLen": ep.map(|e| e.prefix_len).unwrap_or(0),
                    "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                    "DriverOpts": null,
                    "DNSNames": if dns_names.is_empty() { Value::Null } else { json!(dns_names) },
                }),
            );
        }
        let first = net.and_then(|n| n.endpoints.first());
        let s = |f: fn(&crate::networking::Endpoint) -> String| first.map(f).unwrap_or_default();
        let ports = match net {
            Some(n) => crate::networking::ports_doc(&n.ports, &self.config.exposed_ports, true),
            None => json!({}),
        };
        json!({
            "Bridge": "",
            "SandboxID": "",
            "SandboxKey": net.map(|n| n.sandbox_key.clone()).unwrap_or_default(),
            "Ports": ports,
            "HairpinMode": false,
            "Gateway": s(|e| e.gateway.clone()),
            "IPAddress": s(|e| e.ip.clone()),
            "IPPrefixLen": first.map(|e| e.prefix_len).unwrap_or(0),
            "MacAddress": s(|e| e.mac.clone()),
            "EndpointID": s(|e| e.endpoint_id.clone()),
            "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPv6Gateway": "",
            "Networks": Value::Object(networks),
        })
    }
}

/// Validates a container name like Docker.
pub fn validate_name(name: &str) -> Result<(), String> {
    let n = name.strip_prefix('/').unwrap_or(name);
    let ok = n.len() >= 2
        && n.as_bytes()[0].is_ascii_alphanumeric()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        ))
    }
}

const ADJECTIVES: &[&str] = &[
    "admiring",
    "bold",
    "brave",
    "busy",
    "calm",
    "clever",
    "cool",
    "eager",
    "elastic",
    "festive",
    "focused",
    "gallant",
    "happy",
    "hopeful",
    "jolly",
    "keen",
    "kind",
    "lucid",
    "modest",
    "nifty",
    "optimistic",
    "peaceful",
    "quirky",
    "relaxed",
    "serene",
    "sharp",
    "stoic",
    "tender",
    "vibrant",
    "wizardly",
    "youthful",
    "zealous",
];
const SURNAMES: &[&str] = &[
    "albattani",
    "babbage",
    "bohr",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "euler",
    "fermi",
    "galileo",
    "hopper",
    "hypatia",
    "kepler",
    "knuth",
    "lamport",
    "liskov",
    "lovelace",
    "mayer",
    "newton",
    "noether",
    "pascal",
    "ritchie",
    "shannon",
    "thompson",
    "torvalds",
    "turing",
    "wing",
    "wozniak",
    "yonath",
    "zhukovsky",
];

/// A random Docker-style name such as "brave_turing".
pub fn random_name() -> String {
    use rand::seq::IndexedRandom;
    let mut rng = rand::rng();
    format!(
        "{}_{}",
        ADJECTIVES.choose(&mut rng).unwrap_or(&"calm"),
        SURNAMES.choose(&mut rng).unwrap_or(&"turing")
    )
}

/// A new 64-hex-digit container ID.
pub fn new_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("web").is_ok());
        assert!(validate_name("/web-1.a_b").is_ok());
        assert!(validate_name("a").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a b").is_err());
        let n = random_name();
        assert!(validate_name(&n).is_ok(), "{n}");
        assert_eq!(new_id().len(), 64);
    }

    #[test]
    fn inspect_has_docker_fields() {
        let rec = ContainerRecord {
            id: "abc".into(),
            name: "web".into(),
            state: State {
                status: "exited".into(),
                exit_code: 3,
                ..Default::default()
            },
            ..Default::default()
        };
        let doc = rec.inspect();
        assert_eq!(doc["Name"], "/web");
        assert_eq!(doc["State"]["ExitCode"], 3);
        assert_eq!(doc["State"]["Running"], false);
        assert_eq!(doc["State"]["StartedAt"], ZERO_TIME);
        assert_eq!(doc["State"]["OOMKilled"], false);
        // Docker's values without limits.
        let hc = &doc["HostConfig"];
        assert_eq!(hc["Memory"], 0);
        assert_eq!(hc["MemorySwap"], 0);
        assert_eq!(hc["MemoryReservation"], 0);
        assert_eq!(hc["MemorySwappiness"], Value::Null);
        assert_eq!(hc["OomKillDisable"], false);
        assert_eq!(hc["OomScoreAdj"], 0);
    }

    #[test]
    fn inspect_shows_memory_limits() {
        let mut rec = ContainerRecord::default();
        rec.host_config.resources = Resources {
            memory: 8 << 20,
            memory_swap: 16 << 20,
            memory_reservation: 6 << 20,
            memory_swappiness: Some(10),
            oom_kill_disable: true,
            ..Default::default()
        };
        rec.host_config.oom_score_adj = 500;
        rec.state.oom_killed = true;
        let doc = rec.inspect();
        let hc = &doc["HostConfig"];
        assert_eq!(hc["Memory"], 8 << 20);
        assert_eq!(hc["MemorySwap"], 16 << 20);
        assert_eq!(hc["MemoryReservation"], 6 << 20);
        assert_eq!(hc["MemorySwappiness"], 10);
        assert_eq!(hc["OomKillDisable"], true);
        assert_eq!(hc["OomScoreAdj"], 500);
        assert_eq!(doc["State"]["OOMKilled"], true);
    }
}
