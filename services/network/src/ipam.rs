//! IPv4 address management for bridge networks (milestone 1 of
//! docs/network-plan.md): a network's pool (subnet, the range dynamic
//! addresses come from, the gateway) and its leases, kept in redb so they
//! survive restarts.
//!
//! Rules, as docker's default IPAM: a subnet given must not overlap another
//! network's; without one the first free pool of docker's defaults is taken
//! (172.17.0.0/16 … 172.31.0.0/16, then 192.168.0.0/20 … 192.168.240.0/20),
//! also skipping ranges the host routes. The network address, the broadcast
//! address and the gateway are never handed out. Dynamic addresses come from
//! the ip-range (the whole subnet by default) and continue after the last
//! one given (a freed address is not reused at once: stale ARP and conntrack
//! entries). A static address must lie in the subnet and be free.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// Pools by network id → JSON [`Pool`].
const POOLS: TableDefinition<&str, &[u8]> = TableDefinition::new("pools");
/// Leases by "network id/address" → owner (a container id).
const LEASES: TableDefinition<&str, &str> = TableDefinition::new("leases");
/// The last dynamic address given, by network id.
const CURSORS: TableDefinition<&str, u32> = TableDefinition::new("cursors");

/// IPAM errors, with docker's words where docker has them.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("{0}")]
    Invalid(String),
    #[error("Address already in use: {0}")]
    InUse(Ipv4Addr),
    #[error("no available IPv4 addresses on this network's address pools: {0}")]
    Exhausted(String),
    #[error("network {0} not found")]
    UnknownNetwork(String),
    #[error("ipam store: {0}")]
    Store(String),
}

macro_rules! store_err {
    ($($t:ty),*) => {$(
        impl From<$t> for IpamError {
            fn from(e: $t) -> Self {
                IpamError::Store(e.to_string())
            }
        }
    )*};
}
store_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

type Result<T> = std::result::Result<T, IpamError>;

/// What a network create asks for (all optional).
#[derive(Debug, Clone, Default)]
pub struct PoolRequest {
    pub subnet: Option<Ipv4Net>,
    pub ip_range: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
}

/// A network's address pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub subnet: Ipv4Net,
    /// Where dynamic addresses come from (inside `subnet`).
    pub ip_range: Ipv4Net,
    pub gateway: Ipv4Addr,
}

impl Pool {
    /// Whether `ip` can ever be leased: in the subnet, not its network or
    /// broadcast address, not the gateway.
    fn usable(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(&ip)
            && ip != self.subnet.network()
            && ip != self.subnet.broadcast()
            && ip != self.gateway
    }
}

/// docker's default local pools: 172.17-31.0.0/16, then 192.168.0.0/16 cut
/// into /20s.
pub fn default_pools() -> Vec<Ipv4Net> {
    let mut v: Vec<Ipv4Net> = (17..=31)
        .map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).expect("valid prefix"))
        .collect();
    v.extend(
        (0..16)
            .map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).expect("valid prefix")),
    );
    v
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Chooses a network's pool. `taken`: other networks' subnets; `routes`:
/// the host's routes (a default route, 0.0.0.0/0, is left out by the
/// caller), which only automatic choices avoid (docker lets a given subnet
/// overlap a route).
pub fn plan_pool(req: &PoolRequest, taken: &[Ipv4Net], routes: &[Ipv4Net]) -> Result<Pool> {
    let subnet = match req.subnet {
        Some(s) => {
            let s = s.trunc();
            if s.prefix_len() > 30 || s.prefix_len() < 8 {
                return Err(IpamError::Invalid(format!(
                    "invalid subnet {s}: the prefix length must be 8 to 30"
                )));
            }
            if taken.iter().any(|t| overlaps(t, &s)) {
                return Err(IpamError::Invalid(
                    "invalid pool request: Pool overlaps with other one on this address space"
                        .into(),
                ));
            }
            s
        }
        None => {
            if req.ip_range.is_some() || req.gateway.is_some() {
                return Err(IpamError::Invalid(
                    "an ip-range or gateway needs a subnet (--subnet)".into(),
                ));
            }
            default_pools()
                .into_iter()
                .find(|p| !taken.iter().chain(routes).any(|t| overlaps(t, p)))
                .ok_or_else(|| {
                    IpamError::Exhausted(
                        "all predefined address pools have been fully subnetted".into(),
                    )
                })?
        }
    };
    let ip_range = match req.ip_range {
        Some(r) => {
            let r = r.trunc();
            if !subnet.contains(&r) {
                return Err(IpamError::Invalid(format!(
                    "no matching subnet for range {r}"
                )));
            }
            r
        }
        None => subnet,
    };
    let gateway = match req.gateway {
        Some(g) => {
            if !subnet.contains(&g) || g == subnet.network() || g == subnet.broadcast() {
                return Err(IpamError::Invalid(format!(
                    "no matching subnet for gateway {g}"
                )));
            }
            g
        }
        None => first_host(&subnet),
    };
    Ok(Pool {
        subnet,
        ip_range,
        gateway,
    })
}

fn first_host(net: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

/// The persistent IPAM store.
pub struct Ipam {
    db: Database,
}

fn lease_key(net: &str, ip: Ipv4Addr) -> String {
    format!("{net}/{ip}")
}

impl Ipam {
    /// Opens (creating) the store at `path`.
    pub fn open(path: &Path) -> Result<Ipam> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(POOLS)?;
        tx.open_table(LEASES)?;
        tx.open_table(CURSORS)?;
        tx.commit()?;
        Ok(Ipam { db })
    }

    /// The subnets of all networks.
    pub fn subnets(&self) -> Result<Vec<Ipv4Net>> {
        Ok(self.pools()?.into_iter().map(|(_, p)| p.subnet).collect())
    }

    /// All pools by network id.
    pub fn pools(&self) -> Result<Vec<(String, Pool)>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(POOLS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            let pool: Pool = serde_json::from_slice(v.value())
                .map_err(|e| IpamError::Store(format!("pool of {}: {e}", k.value())))?;
            out.push((k.value().to_string(), pool));
        }
        Ok(out)
    }

    /// Plans and records network `id`'s pool in one transaction, so two
    /// creates cannot both take the same free range.
    pub fn add_network(
        &self,
        id: &str,
        req: &PoolRequest,
        host_routes: &[Ipv4Net],
    ) -> Result<Pool> {
        let tx = self.db.begin_write()?;
        let pool = {
            let mut pools = tx.open_table(POOLS)?;
            let mut taken: Vec<Ipv4Net> = Vec::new();
            for item in pools.iter()? {
                let (k, v) = item?;
                if k.value() == id {
                    return Err(IpamError::Invalid(format!("network {id} exists")));
                }
                let p: Pool = serde_json::from_slice(v.value())
                    .map_err(|e| IpamError::Store(e.to_string()))?;
                taken.push(p.subnet);
            }
            let pool = plan_pool(req, &taken, host_routes)?;
            let data = serde_json::to_vec(&pool).map_err(|e| IpamError::Store(e.to_string()))?;
            pools.insert(id, data.as_slice())?;
            pool
        };
        tx.commit()?;
        Ok(pool)
    }

    /// Forgets network `id` and its leases.
    pub fn remove_network(&self, id: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            tx.open_table(POOLS)?.remove(id)?;
            tx.open_table(CURSORS)?.remove(id)?;
            let mut leases = tx.open_table(LEASES)?;
            let (lo, hi) = (format!("{id}/"), format!("{id}0"));
            let keys: Vec<String> = leases
                .range(lo.as_str()..hi.as_str())?
                .map(|i| i.map(|(k, _)| k.value().to_string()))
                .collect::<std::result::Result<_, _>>()?;
            for k in keys {
                leases.remove(k.as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Leases an address of network `id` to `owner`: `want` (static: in the
    /// subnet, usable and free) or the next free one of the ip-range.
    pub fn allocate(&self, id: &str, owner: &str, want: Option<Ipv4Addr>) -> Result<Ipv4Addr> {
        let tx = self.db.begin_write()?;
        let ip = {
            // Read in the same transaction: a network removed meanwhile
            // cannot get a lease.
            let pool: Pool = {
                let pools = tx.open_table(POOLS)?;
                let v = pools
                    .get(id)?
                    .ok_or_else(|| IpamError::UnknownNetwork(id.to_string()))?;
                serde_json::from_slice(v.value()).map_err(|e| IpamError::Store(e.to_string()))?
            };
            let mut leases = tx.open_table(LEASES)?;
            let mut cursors = tx.open_table(CURSORS)?;
            let ip = match want {
                Some(ip) => {
                    if !pool.subnet.contains(&ip) {
                        return Err(IpamError::Invalid(format!(
                            "no configured subnet or ip-range contain the IP address {ip}"
                        )));
                    }
                    if !pool.usable(ip) || leases.get(lease_key(id, ip).as_str())?.is_some() {
                        return Err(IpamError::InUse(ip));
                    }
                    ip
                }
                None => {
                    let lo = u32::from(pool.ip_range.network()) as u64;
                    let hi = u32::from(pool.ip_range.broadcast()) as u64;
                    let size = hi - lo + 1;
                    let last = cursors.get(id)?.map(|v| v.value() as u64).unwrap_or(lo);
                    let start = if (lo..=hi).contains(&last) {
                        last - lo
                    } else {
                        0
                    };
                    let mut found = None;
                    for step in 1..=size {
                        let cand = Ipv4Addr::from((lo + (start + step) % size) as u32);
                        if pool.usable(cand) && leases.get(lease_key(id, cand).as_str())?.is_none()
                        {
                            found = Some(cand);
                            break;
                        }
                    }
                    let ip =
                        found.ok_or_else(|| IpamError::Exhausted(pool.ip_range.to_string()))?;
                    cursors.insert(id, u32::from(ip))?;
                    ip
                }
            };
            leases.insert(lease_key(id, ip).as_str(), owner)?;
            ip
        };
        tx.commit()?;
        Ok(ip)
    }

    /// Frees every address `owner` holds on network `id`. Idempotent.
    pub fn release(&self, id: &str, owner: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut leases = tx.open_table(LEASES)?;
            let (lo, hi) = (format!("{id}/"), format!("{id}0"));
            let keys: Vec<String> = leases
                .range(lo.as_str()..hi.as_str())?
                .filter_map(|i| match i {
                    Ok((k, v)) if v.value() == owner => Some(Ok(k.value().to_string())),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<std::result::Result<_, _>>()?;
            for k in keys {
                leases.remove(k.as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// (address, owner) of network `id`'s leases.
    pub fn leases(&self, id: &str) -> Result<Vec<(Ipv4Addr, String)>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(LEASES)?;
        let (lo, hi) = (format!("{id}/"), format!("{id}0"));
        let mut out = Vec::new();
        for item in t.range(lo.as_str()..hi.as_str())? {
            let (k, v) = item?;
            if let Ok(ip) = k.value()[lo.len()..].parse() {
                out.push((ip, v.value().to_string()));
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn store() -> (tempfile::TempDir, Ipam) {
        let d = tempfile::tempdir().unwrap();
        let i = Ipam::open(&d.path().join("ipam.redb")).unwrap();
        (d, i)
    }

    #[test]
    fn pools_skip_what_is_taken() {
        let p = plan_pool(&PoolRequest::default(), &[], &[]).unwrap();
        assert_eq!(
            (p.subnet, p.gateway),
            (net("172.17.0.0/16"), ip("172.17.0.1"))
        );
        // A network has 172.17/16; the host routes 172.18.5/24.
        let p = plan_pool(
            &PoolRequest::default(),
            &[net("172.17.0.0/16")],
            &[net("172.18.5.0/24")],
        )
        .unwrap();
        assert_eq!(p.subnet, net("172.19.0.0/16"));
        // A route covering everything from 172.16/12 on: 192.168/20s next.
        let p = plan_pool(&PoolRequest::default(), &[], &[net("172.16.0.0/12")]).unwrap();
        assert_eq!(p.subnet, net("192.168.0.0/20"));
        let all: Vec<Ipv4Net> = default_pools();
        assert!(matches!(
            plan_pool(&PoolRequest::default(), &all, &[]),
            Err(IpamError::Exhausted(_))
        ));
    }

    #[test]
    fn given_subnets_ranges_and_gateways_are_checked() {
        let req = |s: &str, r: Option<&str>, g: Option<&str>| PoolRequest {
            subnet: Some(net(s)),
            ip_range: r.map(net),
            gateway: g.map(ip),
        };
        let p = plan_pool(
            &req("10.9.0.0/24", Some("10.9.0.128/25"), Some("10.9.0.254")),
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(
            (p.ip_range, p.gateway),
            (net("10.9.0.128/25"), ip("10.9.0.254"))
        );
        let e = plan_pool(&req("10.9.0.0/24", None, None), &[net("10.9.0.0/16")], &[]).unwrap_err();
        // A host route does not stop a given subnet (docker).
        assert!(plan_pool(&req("10.9.0.0/24", None, None), &[], &[net("10.9.0.0/16")]).is_ok());
        assert!(
            e.to_string().contains("Pool overlaps with other one"),
            "{e}"
        );
        let e = plan_pool(&req("10.9.0.0/24", None, Some("10.8.0.1")), &[], &[]).unwrap_err();
        assert_eq!(e.to_string(), "no matching subnet for gateway 10.8.0.1");
        let e = plan_pool(&req("10.9.0.0/24", Some("10.9.1.0/25"), None), &[], &[]).unwrap_err();
        assert_eq!(e.to_string(), "no matching subnet for range 10.9.1.0/25");
        assert!(plan_pool(&req("10.9.0.0/24", None, Some("10.9.0.255")), &[], &[]).is_err());
        assert!(plan_pool(&req("10.9.0.0/31", None, None), &[], &[]).is_err());
        assert!(plan_pool(&req("0.0.0.0/0", None, None), &[], &[]).is_err());
        let e = plan_pool(
            &PoolRequest {
                gateway: Some(ip("10.0.0.1")),
                ..Default::default()
            },
            &[],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("needs a subnet"), "{e}");
    }

    #[test]
    fn leases_never_give_gateway_network_or_broadcast_and_persist() {
        let (d, ipam) = store();
        let req = PoolRequest {
            subnet: Some(net("10.20.0.0/29")),
            ..Default::default()
        };
        let p = ipam.add_network("n1", &req, &[]).unwrap();
        assert_eq!(p.gateway, ip("10.20.0.1"));
        // .0 network, .1 gateway, .7 broadcast: .2 to .6 are usable.
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| ipam.allocate("n1", &format!("c{i}"), None).unwrap())
            .collect();
        assert_eq!(
            got,
            [
                "10.20.0.2",
                "10.20.0.3",
                "10.20.0.4",
                "10.20.0.5",
                "10.20.0.6"
            ]
            .map(ip)
        );
        assert!(matches!(
            ipam.allocate("n1", "c5", None),
            Err(IpamError::Exhausted(_))
        ));
        // Freed addresses come back, after the ones not yet used again.
        ipam.release("n1", "c1").unwrap();
        ipam.release("n1", "c1").unwrap();
        assert_eq!(ipam.allocate("n1", "c6", None).unwrap(), ip("10.20.0.3"));
        // Static addresses: free, inside, never the gateway.
        ipam.release("n1", "c3").unwrap();
        assert_eq!(
            ipam.allocate("n1", "s", Some(ip("10.20.0.5"))).unwrap(),
            ip("10.20.0.5")
        );
        assert_eq!(
            ipam.allocate("n1", "s2", Some(ip("10.20.0.2"))),
            Err(IpamError::InUse(ip("10.20.0.2")))
        );
        assert_eq!(
            ipam.allocate("n1", "s2", Some(ip("10.20.0.1"))),
            Err(IpamError::InUse(ip("10.20.0.1")))
        );
        let e = ipam
            .allocate("n1", "s2", Some(ip("10.21.0.9")))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("no configured subnet or ip-range contain"),
            "{e}"
        );
        // A second network cannot overlap; an automatic one skips it.
        assert!(ipam.add_network("n2", &req, &[]).is_err());
        let auto = ipam
            .add_network("n3", &PoolRequest::default(), &[net("172.17.0.0/16")])
            .unwrap();
        assert_eq!(auto.subnet, net("172.18.0.0/16"));
        let before = ipam.leases("n1").unwrap();
        drop(ipam);
        // Reopened: pools, leases and the cursor are kept.
        let ipam = Ipam::open(&d.path().join("ipam.redb")).unwrap();
        assert_eq!(ipam.leases("n1").unwrap(), before);
        assert_eq!(ipam.subnets().unwrap().len(), 2);
        assert!(matches!(
            ipam.allocate("n1", "x", None),
            Err(IpamError::Exhausted(_))
        ));
        ipam.remove_network("n1").unwrap();
        assert!(ipam.leases("n1").unwrap().is_empty());
        assert_eq!(
            ipam.allocate("n1", "x", None),
            Err(IpamError::UnknownNetwork("n1".into()))
        );
    }

    #[test]
    fn dynamic_addresses_stay_in_the_ip_range() {
        let (_d, ipam) = store();
        let req = PoolRequest {
            subnet: Some(net("10.30.0.0/24")),
            ip_range: Some(net("10.30.0.64/30")),
            gateway: None,
        };
        ipam.add_network("r", &req, &[]).unwrap();
        let got: Vec<Ipv4Addr> = (0..4)
            .map(|i| ipam.allocate("r", &format!("c{i}"), None).unwrap())
            .collect();
        assert_eq!(
            got,
            ["10.30.0.65", "10.30.0.66", "10.30.0.67", "10.30.0.64"].map(ip)
        );
        assert!(ipam.allocate("r", "more", None).is_err());
        // A static address outside the range but inside the subnet is fine.
        assert_eq!(
            ipam.allocate("r", "s", Some(ip("10.30.0.200"))).unwrap(),
            ip("10.30.0.200")
        );
    }
}
