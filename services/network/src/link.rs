//! Links, addresses and routes over rtnetlink: bridges in the host's
//! namespace, veth pairs whose container end is created directly inside the
//! container's namespace (as netavark does), and the container end's
//! address and routes, configured from a thread that joined that namespace.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

/// A failed netlink or namespace step, described for a person.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LinkError(pub String);

type Result<T> = std::result::Result<T, LinkError>;

/// The errno of a netlink error, if it is one (positive, e.g. EEXIST).
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

fn fail(what: impl std::fmt::Display) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let what = what.to_string();
    move |e| LinkError(format!("{what}: {e}"))
}

/// A rtnetlink connection in the namespace it was made in.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Connects in the calling thread's network namespace; the connection
    /// is driven by a task on the current tokio runtime.
    pub fn connect() -> Result<Netlink> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| LinkError(format!("open rtnetlink: {e}")))?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The index of link `name`, or None.
    pub async fn index_of(&self, name: &str) -> Result<Option<u32>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(l)) => Ok(Some(l.header.index)),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(fail(format!("look up link {name}"))(e)),
        }
    }

    /// Makes bridge `name` (if missing) with `alias`, the gateway address
    /// `addr` and `mtu`, and brings it up. Idempotent. Returns its index.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        alias: &str,
        addr: Ipv4Net,
        mtu: Option<u32>,
    ) -> Result<u32> {
        if self.index_of(name).await?.is_none() {
            let mut b = LinkBridge::new(name);
            if let Some(m) = mtu {
                b = b.mtu(m);
            }
            match self.handle.link().add(b.build()).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(fail(format!("create bridge {name}"))(e)),
            }
        }
        let index = self
            .index_of(name)
            .await?
            .ok_or_else(|| LinkError(format!("bridge {name} vanished")))?;
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(addr.addr()), addr.prefix_len())
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(fail(format!("add address {addr} to {name}"))(e)),
        }
        // The kernel takes an alias only on a change, not at creation.
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).alias(alias).up().build())
            .execute()
            .await
            .map_err(fail(format!("bring {name} up")))?;
        Ok(index)
    }

    /// Deletes link `name`; a missing link is fine.
    pub async fn delete_link(&self, name: &str) -> Result<()> {
        let Some(index) = self.index_of(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(fail(format!("delete link {name}"))(e)),
        }
    }

    /// Creates the veth pair `host` (a port of bridge `bridge`, hairpin on,
    /// up) and `peer`, made directly in the namespace `netns` with `mac`.
    /// On failure nothing is left.
    pub async fn add_veth(
        &self,
        host: &str,
        bridge: u32,
        mtu: Option<u32>,
        netns: &File,
        peer: &str,
        mac: [u8; 6],
    ) -> Result<()> {
        let mut peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .address(mac.to_vec())
            .setns_by_fd(netns.as_raw_fd());
        let mut veth = LinkVeth::new(host, peer);
        if let Some(m) = mtu {
            veth = veth.mtu(m);
            peer_msg = peer_msg.mtu(m);
        }
        let veth = veth.set_info_data(rtnetlink::packet_route::link::InfoData::Veth(
            rtnetlink::packet_route::link::InfoVeth::Peer(peer_msg.build()),
        ));
        self.handle
            .link()
            .add(veth.build())
            .execute()
            .await
            .map_err(fail(format!("create veth pair {host}/{peer}")))?;
        let wire = async {
            let index = self
                .index_of(host)
                .await?
                .ok_or_else(|| LinkError(format!("veth {host} vanished")))?;
            self.handle
                .link()
                .set(
                    LinkUnspec::new_with_index(index)
                        .controller(bridge)
                        .up()
                        .build(),
                )
                .execute()
                .await
                .map_err(fail(format!("attach {host} to its bridge")))?;
            // DNAT back out of the port a packet came in on (a container
            // reaching its own published port) needs hairpin mode.
            self.handle
                .link()
                .set_port(LinkBridgePort::new(index).hairpin(true).build())
                .execute()
                .await
                .map_err(fail(format!("set hairpin on {host}")))?;
            Ok(())
        }
        .await;
        if wire.is_err() {
            let _ = self.delete_link(host).await;
        }
        wire
    }

    /// The IPv4 routes of the main table, without the default route.
    pub async fn routes(&self) -> Result<Vec<Ipv4Net>> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut s = self.handle.route().get(msg).execute();
        let mut out = Vec::new();
        while let Some(r) = s.try_next().await.map_err(fail("list routes"))? {
            use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
            let len = r.header.destination_prefix_length;
            if len == 0 || r.header.table != 254 {
                continue;
            }
            for a in &r.attributes {
                if let RouteAttribute::Destination(RouteAddress::Inet(ip)) = a {
                    if let Ok(n) = Ipv4Net::new(*ip, len) {
                        out.push(n.trunc());
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Runs `f` with a rtnetlink connection inside the namespace at `netns`,
/// in a thread of its own that joined it (setns affects only the calling
/// thread, and the thread ends with the work).
pub fn in_netns<T, F, Fut>(netns: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Netlink) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    let path = netns.to_owned();
    std::thread::spawn(move || -> Result<T> {
        let ns = File::open(&path)
            .map_err(|e| LinkError(format!("open namespace {}: {e}", path.display())))?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| LinkError(format!("join namespace {}: {e}", path.display())))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LinkError(format!("runtime: {e}")))?;
        rt.block_on(async move { f(Netlink::connect()?).await })
    })
    .join()
    .unwrap_or_else(|_| Err(LinkError("namespace thread panicked".into())))
}

/// In the container's namespace: gives `ifname` its address, brings it up
/// and, when `gateway` is set, routes the default route through it. IPv6 is
/// switched off on it (berth's networks are IPv4).
pub fn configure_endpoint(
    netns: &Path,
    ifname: &str,
    addr: Ipv4Net,
    gateway: Option<Ipv4Addr>,
) -> Result<()> {
    let ifname = ifname.to_string();
    in_netns(netns, move |nl| async move {
        let sysctl = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
        if Path::new(&sysctl).exists() {
            std::fs::write(&sysctl, "1").map_err(|e| LinkError(format!("write {sysctl}: {e}")))?;
        }
        let index = nl
            .index_of(&ifname)
            .await?
            .ok_or_else(|| LinkError(format!("{ifname} is missing in the container")))?;
        nl.handle
            .address()
            .add(index, IpAddr::V4(addr.addr()), addr.prefix_len())
            .execute()
            .await
            .map_err(fail(format!("add {addr} to {ifname}")))?;
        nl.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(fail(format!("bring {ifname} up")))?;
        if let Some(gw) = gateway {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gw)
                .output_interface(index)
                .build();
            nl.handle
                .route()
                .add(route)
                .execute()
                .await
                .map_err(fail(format!("add the default route via {gw}")))?;
        }
        Ok(())
    })
}

/// In the container's namespace: deletes `ifname` (its veth peer in the
/// host goes with it). A missing interface is fine.
pub fn remove_endpoint(netns: &Path, ifname: &str) -> Result<()> {
    let ifname = ifname.to_string();
    in_netns(
        netns,
        move |nl| async move { nl.delete_link(&ifname).await },
    )
}

/// Names of the links in the namespace at `netns`.
pub fn links_in(netns: &Path) -> Result<Vec<String>> {
    in_netns(netns, move |nl| async move {
        let mut s = nl.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(l) = s.try_next().await.map_err(fail("list links"))? {
            for a in l.attributes {
                if let LinkAttribute::IfName(n) = a {
                    out.push(n);
                }
            }
        }
        Ok(out)
    })
}

/// A locally administered MAC derived from the address, as docker's
/// 02:42:ac:11:00:02 for 172.17.0.2: unique on a network, stable for an
/// address.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// "02:42:ac:11:00:02".
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_follow_addresses() {
        let mac = mac_for(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(mac_string(mac), "02:42:ac:11:00:02");
    }
}
