//! berth-network's records in redb: networks, endpoints (a container on a
//! network) and published ports. Every change is one transaction, made
//! before (create) or after (remove) the kernel work it describes, so a
//! crash leaves records the next start can reconcile.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ipam::Pool;

const NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("networks");
/// "container id/network id" → endpoint.
const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints");
/// container id → its published ports.
const PORTS: TableDefinition<&str, &[u8]> = TableDefinition::new("ports");

/// A network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    /// The berth namespace; "" for the built-in networks (every namespace).
    pub namespace: String,
    /// "bridge", "host" or "null".
    pub driver: String,
    pub created: String,
    pub internal: bool,
    /// The Linux bridge ("" for host and none).
    pub bridge: String,
    pub mtu: Option<u32>,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    /// The address pool (bridge networks).
    pub pool: Option<Pool>,
    pub builtin: bool,
}

/// A container's interface on a network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointRecord {
    pub endpoint_id: String,
    pub container_id: String,
    pub container_name: String,
    pub network_id: String,
    /// In the container: eth0, eth1, ...
    pub ifname: String,
    /// The host end of the veth pair.
    pub host_if: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    /// None on an internal network (no default route out).
    pub gateway: Option<Ipv4Addr>,
    pub mac: String,
    pub aliases: Vec<String>,
}

/// A published port of a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortRecord {
    pub proto: String,
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    /// The container address the port is forwarded to.
    pub ip: Ipv4Addr,
}

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[error("network store: {0}")]
pub struct StoreError(pub String);

macro_rules! store_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError(e.to_string())
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
    redb::CommitError,
    serde_json::Error
);

type Result<T> = std::result::Result<T, StoreError>;

/// The redb database of berth-network.
pub struct Store {
    db: Database,
}

/// The key of an endpoint.
pub fn endpoint_key(container: &str, network: &str) -> String {
    format!("{container}/{network}")
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(NETWORKS)?;
        tx.open_table(ENDPOINTS)?;
        tx.open_table(PORTS)?;
        tx.commit()?;
        Ok(Store { db })
    }

    fn all<T: DeserializeOwned>(&self, t: TableDefinition<&str, &[u8]>) -> Result<Vec<T>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(t)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (_, v) = item?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    fn put<T: Serialize>(&self, t: TableDefinition<&str, &[u8]>, key: &str, v: &T) -> Result<()> {
        let data = serde_json::to_vec(v)?;
        let tx = self.db.begin_write()?;
        tx.open_table(t)?.insert(key, data.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    fn delete(&self, t: TableDefinition<&str, &[u8]>, key: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(t)?.remove(key)?;
        tx.commit()?;
        Ok(())
    }

    pub fn networks(&self) -> Result<Vec<NetworkRecord>> {
        self.all(NETWORKS)
    }
    pub fn put_network(&self, n: &NetworkRecord) -> Result<()> {
        self.put(NETWORKS, &n.id, n)
    }
    pub fn delete_network(&self, id: &str) -> Result<()> {
        self.delete(NETWORKS, id)
    }

    pub fn endpoints(&self) -> Result<Vec<EndpointRecord>> {
        self.all(ENDPOINTS)
    }
    pub fn put_endpoint(&self, e: &EndpointRecord) -> Result<()> {
        self.put(ENDPOINTS, &endpoint_key(&e.container_id, &e.network_id), e)
    }
    pub fn delete_endpoint(&self, container: &str, network: &str) -> Result<()> {
        self.delete(ENDPOINTS, &endpoint_key(container, network))
    }

    /// Published ports by container id.
    pub fn ports(&self) -> Result<Vec<(String, Vec<PortRecord>)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(PORTS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_string(), serde_json::from_slice(v.value())?));
        }
        Ok(out)
    }
    pub fn put_ports(&self, container: &str, p: &[PortRecord]) -> Result<()> {
        self.put(PORTS, container, &p)
    }
    pub fn delete_ports(&self, container: &str) -> Result<()> {
        self.delete(PORTS, container)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.redb");
        let e = EndpointRecord {
            endpoint_id: "e".into(),
            container_id: "c".into(),
            container_name: "web".into(),
            network_id: "n".into(),
            ifname: "eth0".into(),
            host_if: "vb1".into(),
            ip: "10.0.0.2".parse().unwrap(),
            prefix_len: 24,
            gateway: Some("10.0.0.1".parse().unwrap()),
            mac: "02:42:0a:00:00:02".into(),
            aliases: vec!["a".into()],
        };
        {
            let s = Store::open(&path).unwrap();
            s.put_endpoint(&e).unwrap();
            s.put_ports(
                "c",
                &[PortRecord {
                    proto: "tcp".into(),
                    host_ip: None,
                    host_port: 8080,
                    container_port: 80,
                    ip: e.ip,
                }],
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.endpoints().unwrap(), vec![e]);
        assert_eq!(s.ports().unwrap()[0].1[0].host_port, 8080);
        s.delete_endpoint("c", "n").unwrap();
        s.delete_ports("c").unwrap();
        assert!(s.endpoints().unwrap().is_empty());
        assert!(s.ports().unwrap().is_empty());
    }
}
