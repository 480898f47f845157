//! berth-network: container networking on the kernel.
//!
//! - Modes: `none` (a private namespace with loopback only), `host` (the
//!   host's namespace), `container:<id>` (another container's namespace)
//!   and bridge networks: the default bridge and user-defined ones.
//! - A container on bridge networks gets a namespace of its own, pinned as a
//!   bind mount under `<state>/netns/<id>`, and per network a veth pair:
//!   the host end is a port of the network's Linux bridge, the other end
//!   (eth0, eth1, ...) is made directly in the container's namespace with an
//!   address from IPAM ([`ipam`]) and, on the first network, the default
//!   route via the bridge's gateway address.
//! - One nftables table ([`nft`]) masquerades traffic out, keeps networks
//!   apart and forwards published ports; host ports are also held by bound
//!   sockets ([`ports`]).
//! - Everything is recorded in redb ([`store`]) before or after the kernel
//!   work, so that a restart rebuilds the table, re-holds the ports and
//!   leaves running containers' networking alone.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub mod conntrack;
pub mod dns;
pub mod ipam;
pub mod link;
pub mod nft;
pub mod ports;
mod rpc;
pub mod store;

use ipnet::Ipv4Net;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use tracing::{info, warn};

use berth_proto::network::v1::{
    AttachResponse, CreateNetworkRequest, EndpointConfig, EndpointInfo, NetworkInfo, PortMapping,
};
use ipam::{Ipam, IpamError, PoolRequest};
use store::{EndpointRecord, NetworkRecord, PortRecord, Store};

/// Errors of berth-network, mapped to gRPC codes in one place ([`rpc`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Kernel(String),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

impl From<IpamError> for Error {
    fn from(e: IpamError) -> Error {
        match e {
            IpamError::Invalid(_) => Error::InvalidArgument(e.to_string()),
            IpamError::InUse(_) => Error::AlreadyExists(e.to_string()),
            IpamError::Exhausted(_) => Error::FailedPrecondition(e.to_string()),
            IpamError::UnknownNetwork(_) => Error::NotFound(e.to_string()),
            IpamError::Store(s) => Error::Kernel(format!("ipam store: {s}")),
        }
    }
}

impl From<link::LinkError> for Error {
    fn from(e: link::LinkError) -> Error {
        Error::Kernel(e.0)
    }
}

impl From<ports::PortError> for Error {
    fn from(e: ports::PortError) -> Error {
        match e {
            ports::PortError::Allocated(..) => Error::AlreadyExists(e.to_string()),
            ports::PortError::Other(..) => Error::InvalidArgument(e.to_string()),
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

type Result<T> = std::result::Result<T, Error>;

/// Daemon settings of berth-network.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Directory for the store (`<root>/network`).
    pub root: PathBuf,
    /// Directory for namespace files (`<state>/netns`).
    pub state: PathBuf,
    /// The nftables table (inet family) this instance owns.
    pub nft_table: String,
    /// The default bridge's interface name.
    pub bridge: String,
    /// The default bridge's subnet; None picks a free one.
    pub bridge_subnet: Option<Ipv4Net>,
    /// The default bridge's MTU.
    pub bridge_mtu: Option<u32>,
    /// Where the embedded DNS forwards names it does not know; empty: the
    /// host's /etc/resolv.conf servers.
    pub dns_upstreams: Vec<std::net::SocketAddr>,
}

impl NetworkConfig {
    /// docker's defaults under `root` and `state`.
    pub fn new(root: &Path, state: &Path) -> NetworkConfig {
        NetworkConfig {
            root: root.join("network"),
            state: state.to_owned(),
            nft_table: "berth".into(),
            bridge: "berth0".into(),
            bridge_subnet: None,
            bridge_mtu: None,
            dns_upstreams: Vec::new(),
        }
    }
}

/// What berth-network knows, loaded from the store at start.
#[derive(Default)]
struct State {
    networks: BTreeMap<String, NetworkRecord>,
    /// By (container id, network id).
    endpoints: BTreeMap<(String, String), EndpointRecord>,
    ports: HashMap<String, Vec<PortRecord>>,
    reservations: ports::Reservations,
}

impl State {
    /// Closes the sockets that hold `ports`.
    fn release_ports(&mut self, ports: &[PortRecord]) {
        for p in ports {
            self.reservations.release(
                &p.proto,
                p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                p.host_port,
            );
        }
    }

    fn endpoints_of(&self, container: &str) -> Vec<EndpointRecord> {
        self.endpoints
            .range((container.to_string(), String::new())..)
            .take_while(|((c, _), _)| c == container)
            .map(|(_, e)| e.clone())
            .collect()
    }

    fn endpoints_on(&self, network: &str) -> Vec<EndpointRecord> {
        self.endpoints
            .values()
            .filter(|e| e.network_id == network)
            .cloned()
            .collect()
    }

    /// Finds a network visible in namespace `ns` by name, id or id prefix.
    fn find(&self, ns: &str, r: &str) -> Result<NetworkRecord> {
        let visible = || {
            self.networks
                .values()
                .filter(move |n| n.namespace.is_empty() || n.namespace == ns)
        };
        if r.is_empty() {
            return Err(Error::InvalidArgument("no network given".into()));
        }
        if let Some(n) = visible().find(|n| n.name == r) {
            return Ok(n.clone());
        }
        if let Some(n) = visible().find(|n| n.id == r) {
            return Ok(n.clone());
        }
        let matches: Vec<&NetworkRecord> = visible().filter(|n| n.id.starts_with(r)).collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::NotFound(format!("network {r} not found"))),
            _ => Err(Error::InvalidArgument(format!(
                "network {r} is ambiguous ({} matches found based on ID prefix)",
                matches.len()
            ))),
        }
    }

    fn nft_input(&self) -> (Vec<nft::BridgeNet>, Vec<nft::Dnat>) {
        let nets = self
            .networks
            .values()
            .filter(|n| n.driver == "bridge")
            .filter_map(|n| {
                Some(nft::BridgeNet {
                    bridge: n.bridge.clone(),
                    subnet: n.pool?.subnet,
                    internal: n.internal,
                })
            })
            .collect();
        let dnats = self
            .ports
            .values()
            .flatten()
            .map(|p| nft::Dnat {
                proto: p.proto.clone(),
                host_ip: p.host_ip,
                host_port: p.host_port,
                ip: p.ip,
                port: p.container_port,
            })
            .collect();
        (nets, dnats)
    }
}

/// berth-network.
#[derive(Clone)]
pub struct NetworkService {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: NetworkConfig,
    netns_dir: PathBuf,
    store: Store,
    ipam: Ipam,
    nl: link::Netlink,
    state: tokio::sync::Mutex<State>,
    /// Rules in our table after our last apply (for the watcher).
    rules: AtomicUsize,
    dns: dns::Dns,
}

const BRIDGE_NAME_OPT: &str = "com.docker.network.bridge.name";
const MTU_OPT: &str = "com.docker.network.driver.mtu";

/// A new 64-hex id.
fn new_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn valid_ifname(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n != "."
        && n != ".."
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn validate_network_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

fn parse_cidr(what: &str, v: &str) -> Result<Option<Ipv4Net>> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| Error::InvalidArgument(format!("invalid {what} {v:?}: not an IPv4 CIDR")))
}

fn parse_ip(what: &str, v: &str) -> Result<Option<Ipv4Addr>> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| Error::InvalidArgument(format!("invalid {what} {v:?}: not an IPv4 address")))
}

/// Writes a sysctl file.
fn sysctl(path: &str, value: &str) -> Result<()> {
    fs::write(path, value).map_err(io_err(format!("write {path}")))
}

/// Holds an exclusive lock on a file shared by every berth instance on the
/// host while automatic subnets are chosen and their bridges made, so two
/// daemons cannot pick the same free range.
struct HostLock(#[allow(dead_code)] nix::fcntl::Flock<fs::File>);

impl HostLock {
    fn take() -> Result<HostLock> {
        let dir = Path::new("/run/lock");
        let _ = fs::create_dir_all(dir);
        let path = dir.join("berth-network.lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("open {}", path.display())))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map(HostLock)
            .map_err(|(_, e)| io_err(format!("lock {}", path.display()))(e.into()))
    }
}

impl NetworkService {
    /// Opens the store, makes the built-in networks, re-holds published
    /// ports and rebuilds the nftables table. Must run inside a tokio
    /// runtime (the netlink connection is driven by a task).
    pub async fn open(cfg: NetworkConfig) -> Result<NetworkService> {
        if !valid_ifname(&cfg.bridge) {
            return Err(Error::InvalidArgument(format!(
                "invalid bridge name {:?}: at most 15 of [a-zA-Z0-9_.-]",
                cfg.bridge
            )));
        }
        let netns_dir = cfg.state.join("netns");
        fs::create_dir_all(&netns_dir)
            .map_err(io_err(format!("create {}", netns_dir.display())))?;
        fs::create_dir_all(&cfg.root).map_err(io_err(format!("create {}", cfg.root.display())))?;
        let store = Store::open(&cfg.root.join("network.redb"))?;
        let ipam = Ipam::open(&cfg.root.join("ipam.redb"))?;
        let nl = link::Netlink::connect()?;
        let dns = dns::Dns::new(&dns::upstreams(&cfg.dns_upstreams));
        let svc = NetworkService {
            inner: Arc::new(Inner {
                dns,
                cfg,
                netns_dir,
                store,
                ipam,
                nl,
                state: Default::default(),
                rules: AtomicUsize::new(0),
            }),
        };
        svc.load().await?;
        svc.clone().spawn_table_watcher();
        Ok(svc)
    }

    async fn load(&self) -> Result<()> {
        let inner = &self.inner;
        let mut st = inner.state.lock().await;
        for n in inner.store.networks()? {
            st.networks.insert(n.id.clone(), n);
        }
        self.ensure_builtins(&mut st).await?;
        for e in inner.store.endpoints()? {
            st.endpoints
                .insert((e.container_id.clone(), e.network_id.clone()), e);
        }
        self.collect_orphans(&st).await?;
        // Endpoints whose namespace is gone (the host rebooted, or the
        // container went while berth-network was down) are collected.
        let stale: Vec<EndpointRecord> = st
            .endpoints
            .values()
            .filter(|e| !is_nsfs(&inner.netns_dir.join(&e.container_id)))
            .cloned()
            .collect();
        for (cid, ports) in inner.store.ports()? {
            st.ports.insert(cid, ports);
        }
        for e in stale {
            warn!(container = %e.container_id, network = %e.network_id, "collecting an endpoint whose namespace is gone");
            self.drop_endpoint(&mut st, &e).await;
            let _ = inner.store.delete_ports(&e.container_id);
            st.ports.remove(&e.container_id);
        }
        // Bridges of user networks (after a reboot they are gone).
        let nets: Vec<NetworkRecord> = st.networks.values().cloned().collect();
        for n in nets.iter().filter(|n| n.driver == "bridge") {
            let used = !st.endpoints_on(&n.id).is_empty();
            if !n.builtin || used {
                if let Err(e) = self.ensure_bridge(n).await {
                    warn!(network = %n.name, "{e}");
                }
            }
        }
        // Published ports of running containers are held again.
        let held: Vec<PortRecord> = st.ports.values().flatten().cloned().collect();
        for p in held {
            if let Err(e) = st.reservations.reserve(
                &p.proto,
                p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                p.host_port,
            ) {
                warn!("re-holding a published port: {e}");
            }
        }
        self.apply_rules(&st).await?;
        self.refresh_dns(&st);
        Ok(())
    }

    /// Gives the embedded DNS the current endpoints.
    fn refresh_dns(&self, st: &State) {
        // Built-in networks have no name resolution (docker's default
        // bridge): their containers are strangers to every server.
        let user = |e: &&EndpointRecord| st.networks.get(&e.network_id).is_some_and(|n| !n.builtin);
        let entries = st.endpoints.values().filter(user).map(|e| dns::DnsEntry {
            network: &e.network_id,
            container_id: &e.container_id,
            container_name: &e.container_name,
            aliases: &e.aliases,
            ip: e.ip,
        });
        let internal = st
            .networks
            .values()
            .filter(|n| n.internal)
            .map(|n| n.id.clone());
        self.inner
            .dns
            .set_table(dns::DnsTable::build(entries, internal));
    }

    /// The embedded DNS server of an endpoint's network (user-defined
    /// networks only), or "".
    async fn dns_server_of(&self, n: &NetworkRecord) -> String {
        match n.pool {
            Some(p) if !n.builtin && self.inner.dns.serving(&n.id).await => p.gateway.to_string(),
            _ => String::new(),
        }
    }

    /// Pools and leases a crash left without their network or endpoint
    /// record (they are committed before the kernel work and the record).
    async fn collect_orphans(&self, st: &State) -> Result<()> {
        let inner = &self.inner;
        for (id, _) in inner.ipam.pools()? {
            if !st.networks.contains_key(&id) {
                warn!(network = %id, "collecting the address pool of a network that was never recorded");
                inner.ipam.remove_network(&id)?;
                // Its bridge, if it got that far, has the default name.
                let _ = inner
                    .nl
                    .delete_link(&format!("br-{}", &id[..12.min(id.len())]))
                    .await;
            }
        }
        for id in st.networks.keys() {
            for (ip, owner) in inner.ipam.leases(id)? {
                if !st.endpoints.contains_key(&(owner.clone(), id.clone())) {
                    warn!(network = %id, ip = %ip, container = %owner, "collecting an address lease without an endpoint");
                    inner.ipam.release(id, &owner)?;
                }
            }
        }
        Ok(())
    }

    /// Makes the records of bridge, host and none if missing.
    async fn ensure_builtins(&self, st: &mut State) -> Result<()> {
        let inner = &self.inner;
        for (name, driver) in [("bridge", "bridge"), ("host", "host"), ("none", "null")] {
            if st.networks.values().any(|n| n.builtin && n.name == name) {
                continue;
            }
            let id = new_id();
            let mut rec = NetworkRecord {
                id: id.clone(),
                name: name.to_string(),
                namespace: String::new(),
                driver: driver.to_string(),
                created: berth_common::time::now_rfc3339(),
                internal: false,
                bridge: String::new(),
                mtu: None,
                labels: Default::default(),
                options: Default::default(),
                pool: None,
                builtin: true,
            };
            if driver == "bridge" {
                rec.bridge = inner.cfg.bridge.clone();
                rec.mtu = inner.cfg.bridge_mtu;
                rec.options
                    .insert(BRIDGE_NAME_OPT.into(), inner.cfg.bridge.clone());
                let _lock = HostLock::take()?;
                let routes = inner.nl.routes().await?;
                let pool = inner.ipam.add_network(
                    &id,
                    &PoolRequest {
                        subnet: inner.cfg.bridge_subnet,
                        ..Default::default()
                    },
                    &routes,
                )?;
                rec.pool = Some(pool);
            }
            inner.store.put_network(&rec)?;
            st.networks.insert(id, rec);
        }
        Ok(())
    }

    /// Makes a bridge network's Linux bridge (idempotent), with docker's
    /// sysctls, and switches on IPv4 forwarding for networks with a way out.
    async fn ensure_bridge(&self, n: &NetworkRecord) -> Result<u32> {
        let pool = n
            .pool
            .ok_or_else(|| Error::Kernel(format!("network {} has no address pool", n.name)))?;
        let addr = Ipv4Net::new(pool.gateway, pool.subnet.prefix_len())
            .map_err(|e| Error::Kernel(e.to_string()))?;
        let alias = format!("berth:{}", self.inner.cfg.nft_table);
        let index = self
            .inner
            .nl
            .ensure_bridge(&n.bridge, &alias, addr, n.mtu)
            .await?;
        if !n.internal {
            // 127.0.0.1:port may be DNATed to a container on this bridge.
            sysctl(
                &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", n.bridge),
                "1",
            )?;
            let fwd = "/proc/sys/net/ipv4/ip_forward";
            if fs::read_to_string(fwd).is_ok_and(|v| v.trim() == "0") {
                info!("enabling IPv4 forwarding ({fwd}), as docker does");
                sysctl(fwd, "1")?;
            }
        }
        if !n.builtin {
            self.inner.dns.serve(&n.id, pool.gateway, &n.bridge).await;
        }
        Ok(index)
    }

    /// Rebuilds our nftables table from `st`.
    async fn apply_rules(&self, st: &State) -> Result<()> {
        let (nets, dnats) = st.nft_input();
        let table = self.inner.cfg.nft_table.clone();
        let n = tokio::task::spawn_blocking(move || nft::apply(&table, &nets, &dnats))
            .await
            .map_err(|e| Error::Kernel(e.to_string()))?
            .map_err(Error::Kernel)?;
        self.inner.rules.store(n, Ordering::SeqCst);
        Ok(())
    }

    /// Puts our table back when someone else flushed or deleted it.
    fn spawn_table_watcher(self) {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                // Looked at without the state lock (attaches go on); only a
                // mismatch is checked again under it, since an apply may
                // have changed the table in between.
                if self.table_intact().await {
                    continue;
                }
                let st = self.inner.state.lock().await;
                if !self.table_intact().await {
                    warn!(table = %self.inner.cfg.nft_table, "our nftables table was changed by someone else; putting it back");
                    if let Err(e) = self.apply_rules(&st).await {
                        warn!("{e}");
                    }
                }
            }
        });
    }

    /// Whether our table holds the rules of our last apply.
    async fn table_intact(&self) -> bool {
        let table = self.inner.cfg.nft_table.clone();
        let now = tokio::task::spawn_blocking(move || nft::rule_count(&table))
            .await
            .ok()
            .flatten();
        now == Some(self.inner.rules.load(Ordering::SeqCst))
    }

    fn netns_path(&self, id: &str) -> Result<PathBuf> {
        let ok = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && !id.starts_with('.');
        if !ok {
            return Err(Error::InvalidArgument(format!(
                "invalid container id {id:?}"
            )));
        }
        Ok(self.inner.netns_dir.join(id))
    }

    fn info(&self, st: &State, n: &NetworkRecord) -> NetworkInfo {
        let (subnet, ip_range, gateway) = match &n.pool {
            Some(p) => (
                p.subnet.to_string(),
                if p.ip_range == p.subnet {
                    String::new()
                } else {
                    p.ip_range.to_string()
                },
                p.gateway.to_string(),
            ),
            None => Default::default(),
        };
        NetworkInfo {
            id: n.id.clone(),
            name: n.name.clone(),
            driver: n.driver.clone(),
            created: n.created.clone(),
            internal: n.internal,
            subnet,
            ip_range,
            gateway,
            bridge: n.bridge.clone(),
            mtu: n.mtu.unwrap_or(0),
            labels: n.labels.clone().into_iter().collect(),
            options: n.options.clone().into_iter().collect(),
            endpoints: st
                .endpoints_on(&n.id)
                .iter()
                .map(|e| endpoint_info(e, n))
                .collect(),
            builtin: n.builtin,
        }
    }

    /// Creates a user-defined bridge network.
    pub async fn create_network(
        &self,
        ns: &str,
        req: &CreateNetworkRequest,
    ) -> Result<NetworkInfo> {
        validate_network_name(&req.name)?;
        match req.driver.as_str() {
            "" | "bridge" => {}
            d => {
                return Err(Error::NotFound(format!(
                    "plugin \"{d}\" not found: the only network driver is bridge"
                )))
            }
        }
        for k in req.options.keys() {
            if k != BRIDGE_NAME_OPT && k != MTU_OPT {
                return Err(Error::InvalidArgument(format!(
                    "unknown network option {k:?}: the options are {BRIDGE_NAME_OPT} and {MTU_OPT}"
                )));
            }
        }
        let mtu = match req.options.get(MTU_OPT) {
            None => None,
            Some(v) => match v.parse::<u32>() {
                Ok(m) if (68..=65535).contains(&m) => Some(m),
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "invalid MTU {v:?}: it must be a number from 68 to 65535"
                    )))
                }
            },
        };
        let pool_req = PoolRequest {
            subnet: parse_cidr("subnet", &req.subnet)?,
            ip_range: parse_cidr("ip-range", &req.ip_range)?,
            gateway: parse_ip("gateway", &req.gateway)?,
        };
        let id = new_id();
        let bridge = match req.options.get(BRIDGE_NAME_OPT) {
            Some(b) => {
                if !valid_ifname(b) {
                    return Err(Error::InvalidArgument(format!(
                        "invalid bridge name {b:?}: at most 15 of [a-zA-Z0-9_.-]"
                    )));
                }
                b.clone()
            }
            None => format!("br-{}", &id[..12]),
        };
        let inner = &self.inner;
        let mut st = inner.state.lock().await;
        let visible = |n: &&NetworkRecord| n.namespace.is_empty() || n.namespace == ns;
        if st
            .networks
            .values()
            .filter(visible)
            .any(|n| n.name == req.name)
        {
            return Err(Error::AlreadyExists(format!(
                "network with name {} already exists",
                req.name
            )));
        }
        if st.networks.values().any(|n| n.bridge == bridge)
            || inner.nl.index_of(&bridge).await?.is_some()
        {
            return Err(Error::AlreadyExists(format!(
                "bridge name {bridge} is already in use"
            )));
        }
        let mut options: BTreeMap<String, String> = req.options.clone().into_iter().collect();
        options.insert(BRIDGE_NAME_OPT.into(), bridge.clone());
        let mut rec = NetworkRecord {
            id: id.clone(),
            name: req.name.clone(),
            namespace: ns.to_string(),
            driver: "bridge".into(),
            created: berth_common::time::now_rfc3339(),
            internal: req.internal,
            bridge: bridge.clone(),
            mtu,
            labels: req.labels.clone().into_iter().collect(),
            options,
            pool: None,
            builtin: false,
        };
        {
            // The choice of a free range and the bridge that takes it are
            // one step for every daemon on the host.
            let _lock = HostLock::take()?;
            let routes = inner.nl.routes().await?;
            rec.pool = Some(inner.ipam.add_network(&id, &pool_req, &routes)?);
            if let Err(e) = self.ensure_bridge(&rec).await {
                inner.dns.stop(&id).await;
                let _ = inner.nl.delete_link(&bridge).await;
                let _ = inner.ipam.remove_network(&id);
                return Err(e);
            }
        }
        if let Err(e) = inner.store.put_network(&rec) {
            inner.dns.stop(&id).await;
            let _ = inner.nl.delete_link(&bridge).await;
            let _ = inner.ipam.remove_network(&id);
            return Err(e.into());
        }
        st.networks.insert(id.clone(), rec.clone());
        if let Err(e) = self.apply_rules(&st).await {
            st.networks.remove(&id);
            let _ = inner.store.delete_network(&id);
            inner.dns.stop(&id).await;
            let _ = inner.nl.delete_link(&bridge).await;
            let _ = inner.ipam.remove_network(&id);
            let _ = self.apply_rules(&st).await;
            return Err(e);
        }
        info!(network = %rec.name, id = %id, bridge = %bridge, "created network");
        Ok(self.info(&st, &rec))
    }

    pub async fn inspect_network(&self, ns: &str, r: &str) -> Result<NetworkInfo> {
        let st = self.inner.state.lock().await;
        let n = st.find(ns, r)?;
        Ok(self.info(&st, &n))
    }

    pub async fn list_networks(&self, ns: &str) -> Result<Vec<NetworkInfo>> {
        let st = self.inner.state.lock().await;
        Ok(st
            .networks
            .values()
            .filter(|n| n.namespace.is_empty() || n.namespace == ns)
            .map(|n| self.info(&st, n))
            .collect())
    }

    /// Removes a user-defined network that no container is attached to.
    pub async fn remove_network(&self, ns: &str, r: &str) -> Result<String> {
        let inner = &self.inner;
        let mut st = inner.state.lock().await;
        let n = st.find(ns, r)?;
        if n.builtin {
            return Err(Error::FailedPrecondition(format!(
                "{} is a pre-defined network and cannot be removed",
                n.name
            )));
        }
        let eps = st.endpoints_on(&n.id);
        if !eps.is_empty() {
            let names: Vec<String> = eps
                .iter()
                .map(|e| {
                    if e.container_name.is_empty() {
                        e.container_id[..12.min(e.container_id.len())].to_string()
                    } else {
                        e.container_name.clone()
                    }
                })
                .collect();
            return Err(Error::FailedPrecondition(format!(
                "error while removing network: network {} id {} has active endpoints ({})",
                n.name,
                n.id,
                names.join(", ")
            )));
        }
        // The rules without it first; if that fails, it stays whole.
        let rec = st.networks.remove(&n.id).expect("found above");
        if let Err(e) = self.apply_rules(&st).await {
            st.networks.insert(n.id.clone(), rec);
            return Err(e);
        }
        // The record before the bridge and the pool: a crash after it
        // leaves a pool and a link that the next start collects.
        if let Err(e) = inner.store.delete_network(&n.id) {
            st.networks.insert(n.id.clone(), rec);
            let _ = self.apply_rules(&st).await;
            return Err(e.into());
        }
        inner.dns.stop(&n.id).await;
        if let Err(e) = inner.nl.delete_link(&n.bridge).await {
            warn!(network = %n.name, "{e}");
        }
        if let Err(e) = inner.ipam.remove_network(&n.id) {
            warn!(network = %n.name, "{e}");
        }
        info!(network = %n.name, id = %n.id, "removed network");
        Ok(n.id)
    }

    /// Sets up networking for container `id` (see the proto).
    pub async fn attach(
        &self,
        ns: &str,
        id: &str,
        name: &str,
        mode: &str,
        endpoints: &[EndpointConfig],
        publish: &[PortMapping],
    ) -> Result<AttachResponse> {
        match mode {
            "host" => {
                return Ok(AttachResponse {
                    netns_path: String::new(),
                    interfaces: host_interfaces(),
                    ..Default::default()
                })
            }
            "" | "none" => {
                let path = self.netns_path(id)?;
                if !is_nsfs(&path) {
                    create_netns(&path)?;
                    info!(id, path = %path.display(), "created network namespace");
                }
                return Ok(AttachResponse {
                    netns_path: path.to_string_lossy().into_owned(),
                    interfaces: vec!["lo".into()],
                    ..Default::default()
                });
            }
            "bridge" => {}
            m => {
                if let Some(other) = m.strip_prefix("container:") {
                    let path = self.netns_path(other)?;
                    if !is_nsfs(&path) {
                        return Err(Error::FailedPrecondition(format!(
                            "cannot join the network of container {other}: it has no network namespace (is it running?)"
                        )));
                    }
                    return Ok(AttachResponse {
                        netns_path: path.to_string_lossy().into_owned(),
                        interfaces: link::links_in(&path)?,
                        ..Default::default()
                    });
                }
                return Err(Error::InvalidArgument(format!(
                    "unknown network mode {m:?}: none, host, bridge or container:<id>"
                )));
            }
        }
        let path = self.netns_path(id)?;
        let result = async {
            if !is_nsfs(&path) {
                create_netns(&path)?;
            }
            let default = [EndpointConfig {
                network: "bridge".into(),
                ..Default::default()
            }];
            let eps = if endpoints.is_empty() {
                &default[..]
            } else {
                endpoints
            };
            let mut st = self.inner.state.lock().await;
            let mut made = Vec::new();
            for cfg in eps {
                made.push(
                    self.connect_locked(&mut st, ns, id, name, &path, cfg)
                        .await?,
                );
            }
            let ports = self.publish_locked(&mut st, id, &made[0], publish).await?;
            Ok::<_, Error>((made, ports))
        }
        .await;
        match result {
            Ok((made, ports)) => {
                let st = self.inner.state.lock().await;
                let mut infos = Vec::new();
                for e in &made {
                    let n = &st.networks[&e.network_id];
                    let mut info = endpoint_info(e, n);
                    info.dns_server = self.dns_server_of(n).await;
                    infos.push(info);
                }
                let mut interfaces = vec!["lo".to_string()];
                interfaces.extend(made.iter().map(|e| e.ifname.clone()));
                Ok(AttachResponse {
                    netns_path: path.to_string_lossy().into_owned(),
                    interfaces,
                    endpoints: infos,
                    ports: ports
                        .iter()
                        .map(|p| PortMapping {
                            protocol: p.proto.clone(),
                            host_ip: p.host_ip.map(|i| i.to_string()).unwrap_or_default(),
                            host_port: p.host_port as u32,
                            container_port: p.container_port as u32,
                            host_port_end: 0,
                        })
                        .collect(),
                })
            }
            Err(e) => {
                // Nothing half-made stays.
                if let Err(d) = self.detach(id).await {
                    warn!(id, "cleaning up a failed attach: {d}");
                }
                Err(e)
            }
        }
    }

    /// Connects container `id` (namespace `netns`) to one network.
    async fn connect_locked(
        &self,
        st: &mut State,
        ns: &str,
        id: &str,
        name: &str,
        netns: &Path,
        cfg: &EndpointConfig,
    ) -> Result<EndpointRecord> {
        let inner = &self.inner;
        let net = st.find(ns, &cfg.network)?;
        if net.driver != "bridge" {
            return Err(Error::InvalidArgument(format!(
                "container cannot be connected to network {}: a container joins host or none as its network mode, alone",
                net.name
            )));
        }
        if st.endpoints.contains_key(&(id.to_string(), net.id.clone())) {
            return Err(Error::AlreadyExists(format!(
                "endpoint with name {name} already exists in network {}",
                net.name
            )));
        }
        let want = parse_ip("IPv4 address", &cfg.ipv4_address)?;
        if net.builtin && want.is_some() {
            return Err(Error::InvalidArgument(
                "user specified IP address is supported on user defined networks only".into(),
            ));
        }
        if net.builtin && !cfg.aliases.is_empty() {
            return Err(Error::InvalidArgument(
                "network-scoped alias is supported only for containers in user defined networks"
                    .into(),
            ));
        }
        let pool = net
            .pool
            .ok_or_else(|| Error::Kernel(format!("network {} has no address pool", net.name)))?;
        let bridge = self.ensure_bridge(&net).await?;
        let mine = st.endpoints_of(id);
        let ifname = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !mine.iter().any(|e| &e.ifname == n))
            .expect("an unused ethN");
        let first = mine.is_empty();
        let ip = inner.ipam.allocate(&net.id, id, want)?;
        let endpoint_id = new_id();
        let host_if = format!("vb{}", &endpoint_id[..11]);
        let mac = link::mac_for(ip);
        let rec = EndpointRecord {
            endpoint_id,
            container_id: id.to_string(),
            container_name: name.trim_start_matches('/').to_string(),
            network_id: net.id.clone(),
            ifname: ifname.clone(),
            host_if: host_if.clone(),
            ip,
            prefix_len: pool.subnet.prefix_len(),
            gateway: (!net.internal).then_some(pool.gateway),
            mac: link::mac_string(mac),
            aliases: cfg.aliases.clone(),
        };
        let wire = async {
            let ns_file =
                fs::File::open(netns).map_err(io_err(format!("open {}", netns.display())))?;
            inner
                .nl
                .add_veth(&host_if, bridge, net.mtu, &ns_file, &ifname, mac)
                .await?;
            let (netns, ifname) = (netns.to_owned(), ifname.clone());
            let addr = Ipv4Net::new(ip, pool.subnet.prefix_len())
                .map_err(|e| Error::Kernel(e.to_string()))?;
            let gw = if first { rec.gateway } else { None };
            tokio::task::spawn_blocking(move || {
                link::configure_endpoint(&netns, &ifname, addr, gw)
            })
            .await
            .map_err(|e| Error::Kernel(e.to_string()))??;
            inner.store.put_endpoint(&rec)?;
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = wire {
            let _ = inner.nl.delete_link(&host_if).await;
            let _ = inner.ipam.release(&net.id, id);
            return Err(e);
        }
        st.endpoints
            .insert((id.to_string(), net.id.clone()), rec.clone());
        self.refresh_dns(st);
        info!(container = %id, network = %net.name, ip = %ip, interface = %rec.ifname, "connected");
        Ok(rec)
    }

    /// Publishes `ports` of container `id` to `ep`'s address.
    async fn publish_locked(
        &self,
        st: &mut State,
        id: &str,
        ep: &EndpointRecord,
        ports: &[PortMapping],
    ) -> Result<Vec<PortRecord>> {
        if ports.is_empty() {
            return Ok(Vec::new());
        }
        let mut made: Vec<PortRecord> = Vec::new();
        let result = (|| {
            for p in ports {
                // 0.0.0.0 is every address, as no address.
                let host_ip = parse_ip("host IP", &p.host_ip)?.filter(|ip| !ip.is_unspecified());
                let port = |v: u32, what: &str| {
                    u16::try_from(v).map_err(|_| {
                        Error::InvalidArgument(format!("invalid {what} port {v}: above 65535"))
                    })
                };
                let (host_port, container_port) = (
                    port(p.host_port, "host")?,
                    port(p.container_port, "container")?,
                );
                if container_port == 0 {
                    return Err(Error::InvalidArgument("invalid container port 0".into()));
                }
                let proto = match p.protocol.as_str() {
                    "" | "tcp" => "tcp",
                    "udp" => "udp",
                    other => {
                        return Err(Error::InvalidArgument(format!(
                            "invalid protocol {other:?}: tcp or udp"
                        )))
                    }
                };
                let end = port(p.host_port_end, "host")?;
                let addr = host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
                let got = if end > host_port && host_port != 0 {
                    // The first free port of the range, as docker.
                    (host_port..=end)
                        .find_map(|h| st.reservations.reserve(proto, addr, h).ok())
                        .ok_or_else(|| {
                            Error::AlreadyExists(format!(
                                "Bind for {addr}:{host_port}-{end} failed: all ports of the range are allocated"
                            ))
                        })?
                } else {
                    st.reservations.reserve(proto, addr, host_port)?
                };
                made.push(PortRecord {
                    proto: proto.to_string(),
                    host_ip,
                    host_port: got,
                    container_port,
                    ip: ep.ip,
                });
            }
            Ok(())
        })();
        let result = match result {
            Ok(()) => self.inner.store.put_ports(id, &made).map_err(Error::from),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            st.release_ports(&made);
            return Err(e);
        }
        st.ports.insert(id.to_string(), made.clone());
        self.apply_rules(st).await?;
        Ok(made)
    }

    /// Removes one endpoint: the veth (its peer goes with it), the lease,
    /// the record. Logs rather than fails: teardown goes on.
    async fn drop_endpoint(&self, st: &mut State, e: &EndpointRecord) {
        let inner = &self.inner;
        let t0 = std::time::Instant::now();
        if let Err(err) = inner.nl.delete_link(&e.host_if).await {
            warn!(container = %e.container_id, "{err}");
        }
        let t1 = std::time::Instant::now();
        // After the link and the rules: no flow of the address outlives it.
        let ip = e.ip;
        let conntrack = match tokio::task::spawn_blocking(move || conntrack::forget(ip)).await {
            Ok(Ok(n)) => n,
            Ok(Err(err)) => {
                warn!(ip = %ip, "removing conntrack entries: {err}");
                0
            }
            Err(err) => {
                warn!(ip = %ip, "removing conntrack entries: {err}");
                0
            }
        };
        let t2 = std::time::Instant::now();
        if let Err(err) = inner.ipam.release(&e.network_id, &e.container_id) {
            warn!(container = %e.container_id, "{err}");
        }
        if let Err(err) = inner.store.delete_endpoint(&e.container_id, &e.network_id) {
            warn!(container = %e.container_id, "{err}");
        }
        info!(
            container = %e.container_id,
            ip = %ip,
            conntrack_entries = conntrack,
            link_ms = (t1 - t0).as_millis() as u64,
            conntrack_ms = (t2 - t1).as_millis() as u64,
            records_ms = t2.elapsed().as_millis() as u64,
            "removed endpoint"
        );
        st.endpoints
            .remove(&(e.container_id.clone(), e.network_id.clone()));
        self.refresh_dns(st);
    }

    /// Tears down everything of container `id`. Idempotent.
    pub async fn detach(&self, id: &str) -> Result<()> {
        let path = self.netns_path(id)?;
        let mut st = self.inner.state.lock().await;
        let eps = st.endpoints_of(id);
        // Every step is tried, whatever failed before it: a half-done
        // teardown would hold ports, leases and names for good. The first
        // error is reported at the end.
        let mut failed: Option<Error> = None;
        let had_ports = st.ports.remove(id);
        if let Some(ports) = &had_ports {
            st.release_ports(ports);
            if let Err(e) = self.inner.store.delete_ports(id) {
                failed.get_or_insert(e.into());
            }
            if let Err(e) = self.apply_rules(&st).await {
                failed.get_or_insert(e);
            }
        }
        for e in &eps {
            self.drop_endpoint(&mut st, e).await;
        }
        drop(st);
        if let Err(e) = remove_netns_file(&path) {
            failed.get_or_insert(e);
        }
        failed.map_or(Ok(()), Err)
    }

    /// Connects a running container to one more network.
    pub async fn connect(
        &self,
        ns: &str,
        id: &str,
        name: &str,
        cfg: &EndpointConfig,
    ) -> Result<EndpointInfo> {
        let path = self.netns_path(id)?;
        if !is_nsfs(&path) {
            return Err(Error::FailedPrecondition(format!(
                "container {name} has no network namespace of its own (is it running on a bridge network?)"
            )));
        }
        let mut st = self.inner.state.lock().await;
        if st.endpoints_of(id).is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "container {name} is not on a bridge network: it cannot be connected to others"
            )));
        }
        let e = self
            .connect_locked(&mut st, ns, id, name, &path, cfg)
            .await?;
        let n = &st.networks[&e.network_id];
        let mut info = endpoint_info(&e, n);
        info.dns_server = self.dns_server_of(n).await;
        Ok(info)
    }

    /// Disconnects a running container from a network.
    pub async fn disconnect(&self, ns: &str, id: &str, network: &str) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        let net = st.find(ns, network)?;
        let Some(e) = st.endpoints.get(&(id.to_string(), net.id.clone())).cloned() else {
            return Err(Error::NotFound(format!(
                "container {} is not connected to network {}",
                &id[..12.min(id.len())],
                net.name
            )));
        };
        // Ports forwarded to the address that goes, go too.
        if let Some(ports) = st.ports.get_mut(id) {
            let (gone, kept): (Vec<PortRecord>, Vec<PortRecord>) =
                ports.drain(..).partition(|p| p.ip == e.ip);
            *ports = kept.clone();
            if !gone.is_empty() {
                st.release_ports(&gone);
                self.inner.store.put_ports(id, &kept)?;
                self.apply_rules(&st).await?;
            }
        }
        self.drop_endpoint(&mut st, &e).await;
        info!(container = %id, network = %net.name, "disconnected");
        Ok(())
    }
}

fn endpoint_info(e: &EndpointRecord, n: &NetworkRecord) -> EndpointInfo {
    EndpointInfo {
        network_id: n.id.clone(),
        network_name: n.name.clone(),
        container_id: e.container_id.clone(),
        container_name: e.container_name.clone(),
        interface: e.ifname.clone(),
        host_interface: e.host_if.clone(),
        ipv4_address: format!("{}/{}", e.ip, e.prefix_len),
        gateway: e.gateway.map(|g| g.to_string()).unwrap_or_default(),
        mac_address: e.mac.clone(),
        aliases: e.aliases.clone(),
        endpoint_id: e.endpoint_id.clone(),
        dns_server: String::new(),
    }
}

/// Unmounts and removes a namespace file; a missing one is fine.
fn remove_netns_file(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(io_err(format!("unmount {}", path.display()))(e.into())),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("remove {}", path.display()))(e)),
    }
}

/// Whether `path` is a namespace file (a bind mount of nsfs).
fn is_nsfs(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == NSFS_MAGIC)
}

/// Creates a new network namespace with loopback up, pinned at `path`.
fn create_netns(path: &Path) -> Result<()> {
    fs::File::create(path).map_err(io_err(format!("create {}", path.display())))?;
    let target = path.to_owned();
    // unshare() affects only the calling thread, so do it in a thread of its
    // own that ends right after pinning the namespace with a bind mount.
    let result = std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| io_err("unshare network namespace")(e.into()))?;
        loopback_up().map_err(io_err("bring loopback up"))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| io_err(format!("bind network namespace to {}", target.display()))(e.into()))
    })
    .join()
    .unwrap_or_else(|_| Err(Error::Kernel("network namespace thread panicked".into())));
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) returns a new fd or -1.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh, valid fd.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: valid fd and a properly initialised ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn host_interfaces() -> Vec<String> {
    fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn config(dir: &Path) -> NetworkConfig {
        let tag = format!("{:x}", std::process::id() ^ rand::random::<u32>());
        let tag = &tag[..tag.len().min(6)];
        let mut c = NetworkConfig::new(&dir.join("root"), &dir.join("state"));
        c.nft_table = format!("berth-ut-{tag}");
        c.bridge = format!("but{tag}");
        c.bridge_subnet = Some("10.199.77.0/24".parse().unwrap());
        c
    }

    #[tokio::test]
    async fn bad_ids_and_modes() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let table = cfg.nft_table.clone();
        let svc = NetworkService::open(cfg).await.unwrap();
        assert!(svc
            .attach("default", "../x", "", "none", &[], &[])
            .await
            .is_err());
        let e = svc
            .attach("default", "abc", "", "nosuchnet", &[], &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("nosuchnet"), "{e}");
        let e = svc
            .attach("default", "abc", "", "container:zzz", &[], &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("zzz"), "{e}");
        assert_eq!(
            svc.attach("default", "abc", "", "host", &[], &[])
                .await
                .unwrap()
                .netns_path,
            ""
        );
        nft::remove(&table).unwrap();
    }

    #[tokio::test]
    async fn none_mode_has_only_loopback_up() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let table = cfg.nft_table.clone();
        let svc = NetworkService::open(cfg).await.unwrap();
        let resp = svc
            .attach("default", "c1", "", "none", &[], &[])
            .await
            .unwrap();
        let path = PathBuf::from(&resp.netns_path);
        // Idempotent.
        assert_eq!(
            svc.attach("default", "c1", "", "none", &[], &[])
                .await
                .unwrap()
                .netns_path,
            resp.netns_path
        );
        let p2 = path.clone();
        let links = tokio::task::spawn_blocking(move || link::links_in(&p2))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(links, vec!["lo".to_string()]);
        let p3 = path.clone();
        let lo_flags = std::thread::spawn(move || {
            let f = fs::File::open(&p3).unwrap();
            nix::sched::setns(f, CloneFlags::CLONE_NEWNET).unwrap();
            fs::read_to_string("/sys/class/net/lo/flags").ok();
            // SAFETY: see loopback_up.
            let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
            let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
            for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
                *d = *s as libc::c_char;
            }
            unsafe { libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut ifr) };
            unsafe { libc::close(raw) };
            unsafe { ifr.ifr_ifru.ifru_flags }
        })
        .join()
        .unwrap();
        assert!(lo_flags & libc::IFF_UP as libc::c_short != 0);
        svc.detach("c1").await.unwrap();
        assert!(!path.exists());
        svc.detach("c1").await.unwrap();
        nft::remove(&table).unwrap();
    }
}
