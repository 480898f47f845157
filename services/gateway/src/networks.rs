//! Networks: the public `Networks` service (docker network ...), and the
//! container side of networking: choosing a container's networks at
//! create, attaching it at start (berth-network does the kernel work), and
//! the /etc/hosts and /etc/resolv.conf it sees.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use berth_common::request;
use berth_proto::gateway::v1::networks_server::Networks;
use berth_proto::gateway::v1::{
    ConnectNetworkRequest, CreateContainerRequest, CreateNetworkRequest, DisconnectNetworkRequest,
    Empty, InspectResponse, ListNetworksRequest, ListNetworksResponse, Network, NetworkEndpoint,
    NetworkRef, PruneNetworksRequest, PruneNetworksResponse, StringList,
};
use berth_proto::network::v1 as netv1;
use serde_json::{json, Value};
use tonic::{Code, Request, Response, Status};
use tracing::info;

use crate::container::ContainerRecord;
use crate::error::{Error, Result};
use crate::networking::{self, NetRuntime, NetworkAttachment};
use crate::Inner;

/// berth-network's refusals keep their meaning and words.
pub(crate) fn net_err(s: Status) -> Error {
    let msg = s.message().to_string();
    match s.code() {
        Code::NotFound => Error::NotFound(msg),
        Code::AlreadyExists => Error::Conflict(msg),
        Code::InvalidArgument => Error::InvalidArgument(msg),
        Code::FailedPrecondition => Error::FailedPrecondition(msg),
        code => Error::Service {
            service: "network",
            code,
            message: msg,
        },
    }
}

fn label_matches(labels: &HashMap<String, String>, f: &str) -> bool {
    match f.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(f),
    }
}

/// The modes that are not networks of their own.
fn is_special_mode(m: &str) -> bool {
    m == "host" || m == "none" || m.starts_with("container:")
}

impl Inner {
    pub(crate) async fn network_info(&self, ns: &str, name: &str) -> Result<netv1::NetworkInfo> {
        Ok(self
            .network
            .clone()
            .inspect_network(request(
                ns,
                netv1::NetworkRef {
                    name_or_id: name.to_string(),
                },
            ))
            .await
            .map_err(net_err)?
            .into_inner())
    }

    async fn network_infos(&self, ns: &str) -> Result<Vec<netv1::NetworkInfo>> {
        Ok(self
            .network
            .clone()
            .list_networks(request(ns, netv1::ListNetworksRequest {}))
            .await
            .map_err(net_err)?
            .into_inner()
            .networks)
    }

    /// Chooses the network mode and networks of a container being created,
    /// and checks the networking flags against them (docker's conflicts).
    pub(crate) async fn plan_network(
        &self,
        ns: &str,
        req: &CreateContainerRequest,
    ) -> Result<(String, Vec<NetworkAttachment>)> {
        let mode = match req.network_mode.as_str() {
            "" | "default" => "bridge",
            m => m,
        };
        let special = is_special_mode(mode);
        let conflict = |what: &str| {
            Error::InvalidArgument(format!(
                "conflicting options: {what} and the network mode \"{mode}\""
            ))
        };
        if special && !req.ipv4_address.is_empty() {
            return Err(conflict("--ip"));
        }
        if special && !req.network_aliases.is_empty() {
            return Err(conflict("--network-alias"));
        }
        if mode == "host" && !req.links.is_empty() {
            return Err(Error::InvalidArgument(
                "conflicting options: host type networking can't be used with links. This would result in undefined behavior".into(),
            ));
        }
        if mode.starts_with("container:") || mode == "none" {
            if !req.publish.is_empty() || req.publish_all {
                return Err(conflict("port publishing"));
            }
            if !req.links.is_empty() {
                return Err(conflict("--link"));
            }
        }
        if mode.starts_with("container:")
            && (!req.dns.is_empty() || !req.extra_hosts.is_empty() || !req.hostname.is_empty())
        {
            return Err(conflict("--dns, --add-host and --hostname"));
        }
        for d in &req.dns {
            if d.parse::<std::net::IpAddr>().is_err() {
                return Err(Error::InvalidArgument(format!("{d} is not an ip address")));
            }
        }
        for h in &req.extra_hosts {
            networking::check_extra_host(h).map_err(Error::InvalidArgument)?;
        }
        for l in &req.links {
            let (name, _) = networking::parse_link(l).map_err(Error::InvalidArgument)?;
            self.find(ns, &name).map_err(|_| {
                Error::InvalidArgument(format!("could not get container for {name}"))
            })?;
        }
        if let Some(other) = mode.strip_prefix("container:") {
            let target = self.find(ns, other)?;
            return Ok((format!("container:{}", target.id), Vec::new()));
        }
        if special {
            return Ok((mode.to_string(), Vec::new()));
        }
        let info = self.network_info(ns, mode).await?;
        if info.driver != "bridge" {
            // "host" or "none" addressed by id.
            return Ok((info.name.clone(), Vec::new()));
        }
        if info.builtin && !req.ipv4_address.is_empty() {
            return Err(Error::InvalidArgument(
                "user specified IP address is supported on user defined networks only".into(),
            ));
        }
        if info.builtin && !req.network_aliases.is_empty() {
            return Err(Error::InvalidArgument(
                "network-scoped alias is supported only for containers in user defined networks"
                    .into(),
            ));
        }
        if !req.ipv4_address.is_empty() {
            let ip: std::net::Ipv4Addr = req.ipv4_address.parse().map_err(|_| {
                Error::InvalidArgument(format!("invalid IPv4 address: {}", req.ipv4_address))
            })?;
            let subnet: Option<ipnet::Ipv4Net> = info.subnet.parse().ok();
            if subnet.is_some_and(|s| !s.contains(&ip)) {
                return Err(Error::InvalidArgument(format!(
                    "no configured subnet or ip-range contain the IP address {ip}"
                )));
            }
        }
        Ok((
            info.name.clone(),
            vec![NetworkAttachment {
                network: info.name,
                ipv4_address: req.ipv4_address.clone(),
                aliases: req.network_aliases.clone(),
            }],
        ))
    }

    /// Attaches a container that is starting: berth-network makes its
    /// namespace, interfaces and ports; its hosts and resolv.conf are
    /// written. Returns the namespace to join ("" for the host's).
    pub(crate) async fn attach_container(&self, ns: &str, rec: &ContainerRecord) -> Result<String> {
        let hc = &rec.host_config;
        let mode = if hc.network_mode.is_empty() {
            "bridge"
        } else {
            hc.network_mode.as_str()
        };
        let dir = std::path::Path::new(&rec.dir);
        let (mode, shared_from) = if let Some(other) = mode.strip_prefix("container:") {
            let target = self.get(ns, other).ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "cannot join network namespace of container {other}: it does not exist"
                ))
            })?;
            if !target.state.running() {
                return Err(Error::FailedPrecondition(format!(
                    "cannot join network namespace of a non running container: {}",
                    target.name
                )));
            }
            let m = if target.host_config.network_mode == "host" {
                "host".to_string()
            } else {
                format!("container:{}", target.id)
            };
            (m, Some(target))
        } else if is_special_mode(mode) {
            (mode.to_string(), None)
        } else {
            ("bridge".to_string(), None)
        };
        let mut endpoints: Vec<netv1::EndpointConfig> = hc
            .networks
            .iter()
            .map(|a| netv1::EndpointConfig {
                network: a.network.clone(),
                ipv4_address: a.ipv4_address.clone(),
                aliases: a.aliases.clone(),
            })
            .collect();
        if mode == "bridge" && endpoints.is_empty() {
            endpoints.push(netv1::EndpointConfig {
                network: hc.network_mode.clone(),
                ..Default::default()
            });
        }
        let mut ports = hc.port_bindings.clone();
        if hc.publish_all {
            for e in &rec.config.exposed_ports {
                let (port, proto) = e.split_once('/').unwrap_or((e.as_str(), "tcp"));
                let Ok(port) = port.parse::<u16>() else {
                    continue;
                };
                if !ports
                    .iter()
                    .any(|b| b.container_port == port && b.proto == proto)
                {
                    ports.push(networking::PortBinding {
                        proto: proto.to_string(),
                        host_ip: String::new(),
                        host_port: 0,
                        host_port_end: 0,
                        container_port: port,
                    });
                }
            }
        }
        if mode != "bridge" {
            ports.clear();
        }
        let resp = self
            .network
            .clone()
            .attach(request(
                ns,
                netv1::AttachRequest {
                    container_id: rec.id.clone(),
                    container_name: rec.name.clone(),
                    mode: mode.clone(),
                    endpoints: if mode == "bridge" {
                        endpoints
                    } else {
                        Vec::new()
                    },
                    ports: networking::port_mappings(&ports),
                },
            ))
            .await
            .map_err(net_err)?
            .into_inner();
        let runtime = NetRuntime::from_attach(&resp);
        let files = async {
            if let Some(target) = &shared_from {
                // Same network, same names: the target's files.
                let tdir = std::path::Path::new(&target.dir);
                for f in ["hosts", "resolv.conf"] {
                    std::fs::copy(tdir.join(f), dir.join(f))
                        .map_err(Error::io(format!("copy {f} of {}", target.name)))?;
                }
            } else if mode != "host" {
                self.write_hosts(ns, rec, &runtime)?;
            }
            if mode != "host" && shared_from.is_none() {
                let host = networking::host_resolv_conf();
                // On a user-defined network, names go to its embedded DNS
                // (which forwards the rest), unless --dns says otherwise.
                let embedded: Vec<String> = runtime
                    .endpoints
                    .iter()
                    .map(|e| e.dns_server.clone())
                    .find(|d| !d.is_empty())
                    .into_iter()
                    .collect();
                let servers = if hc.dns.is_empty() {
                    &embedded
                } else {
                    &hc.dns
                };
                let conf = networking::resolv_conf(&host, servers, &hc.dns_search, &hc.dns_options);
                std::fs::write(dir.join("resolv.conf"), conf)
                    .map_err(Error::io("write resolv.conf"))?;
            }
            self.update(ns, &rec.id, false, |c| c.net = Some(runtime.clone()))?;
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = files {
            let _ = self.net_detach(ns, &rec.id).await;
            return Err(e);
        }
        Ok(resp.netns_path)
    }

    /// /etc/hosts of a container on bridge networks: its addresses,
    /// its links (running containers) and --add-host.
    fn write_hosts(&self, ns: &str, rec: &ContainerRecord, net: &NetRuntime) -> Result<()> {
        let mut links = Vec::new();
        for l in &rec.host_config.links {
            let (name, alias) = networking::parse_link(l).map_err(Error::InvalidArgument)?;
            let target = self.find(ns, &name).ok();
            let ip = target
                .as_ref()
                .filter(|t| t.state.running())
                .and_then(|t| t.net.as_ref())
                .and_then(|n| n.endpoints.first())
                .map(|e| e.ip.clone())
                .ok_or_else(|| {
                    Error::FailedPrecondition(format!(
                        "Cannot link to a non running container: /{name} AS /{}/{alias}",
                        rec.name
                    ))
                })?;
            let t = target.expect("checked above");
            let mut names = vec![alias.clone()];
            if alias != t.name {
                names.push(t.name.clone());
            }
            names.push(t.id[..12].to_string());
            links.push((ip, names));
        }
        let extra: Vec<(String, String)> = rec
            .host_config
            .extra_hosts
            .iter()
            .filter_map(|h| networking::check_extra_host(h).ok())
            .map(|(h, ip)| {
                let ip = if ip == "host-gateway" {
                    net.endpoints
                        .first()
                        .map(|e| e.gateway.clone())
                        .unwrap_or_default()
                } else {
                    ip
                };
                (h, ip)
            })
            .collect();
        let own: Vec<String> = net.endpoints.iter().map(|e| e.ip.clone()).collect();
        let text = networking::hosts_file(&rec.config.hostname, &own, &links, &extra);
        std::fs::write(std::path::Path::new(&rec.dir).join("hosts"), text)
            .map_err(Error::io("write hosts"))
    }

    fn network_doc(&self, n: &netv1::NetworkInfo) -> Value {
        let ipam_config = if n.subnet.is_empty() {
            json!([])
        } else {
            let mut c = json!({"Subnet": n.subnet, "Gateway": n.gateway});
            if !n.ip_range.is_empty() {
                c["IPRange"] = json!(n.ip_range);
            }
            json!([c])
        };
        let containers: serde_json::Map<String, Value> = n
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.container_id.clone(),
                    json!({
                        "Name": e.container_name,
                        "EndpointID": e.endpoint_id,
                        "MacAddress": e.mac_address,
                        "IPv4Address": e.ipv4_address,
                        "IPv6Address": "",
                    }),
                )
            })
            .collect();
        json!({
            "Name": n.name,
            "Id": n.id,
            "Created": n.created,
            "Scope": "local",
            "Driver": n.driver,
            "EnableIPv4": n.driver == "bridge",
            "EnableIPv6": false,
            "IPAM": {"Driver": "default", "Options": null, "Config": ipam_config},
            "Internal": n.internal,
            "Attachable": false,
            "Ingress": false,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": false,
            "Containers": containers,
            "Options": n.options,
            "Labels": n.labels,
        })
    }

    fn network_msg(n: netv1::NetworkInfo) -> Network {
        Network {
            id: n.id,
            name: n.name,
            driver: n.driver,
            scope: "local".into(),
            created: n.created,
            internal: n.internal,
            subnet: n.subnet,
            ip_range: n.ip_range,
            gateway: n.gateway,
            labels: n.labels,
            options: n.options,
            containers: n
                .endpoints
                .into_iter()
                .map(|e| NetworkEndpoint {
                    container_id: e.container_id,
                    name: e.container_name,
                    endpoint_id: e.endpoint_id,
                    mac_address: e.mac_address,
                    ipv4_address: e.ipv4_address,
                    aliases: e.aliases,
                })
                .collect(),
            builtin: n.builtin,
        }
    }

    /// `network ls` with docker's filters.
    async fn list_networks(
        &self,
        ns: &str,
        filters: &BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<Network>> {
        for (k, vals) in filters {
            if !["driver", "id", "label", "name", "type", "dangling"].contains(&k.as_str()) {
                return Err(Error::InvalidArgument(format!("invalid filter '{k}'")));
            }
            for v in vals {
                let bad = match k.as_str() {
                    "type" => !["custom", "builtin"].contains(&v.as_str()),
                    "dangling" => !["true", "false", "1", "0"].contains(&v.as_str()),
                    _ => false,
                };
                if bad {
                    return Err(Error::InvalidArgument(format!("invalid filter '{k}={v}'")));
                }
            }
        }
        let mut nets: Vec<netv1::NetworkInfo> = self.network_infos(ns).await?;
        nets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nets
            .into_iter()
            .filter(|n| {
                filters.iter().all(|(k, vals)| {
                    vals.iter().any(|v| match k.as_str() {
                        "driver" => n.driver == *v,
                        "id" => n.id.starts_with(v.as_str()),
                        "label" => label_matches(&n.labels, v),
                        "name" => n.name.contains(v.as_str()),
                        "type" => (v == "builtin") == n.builtin,
                        "dangling" => {
                            let unused = n.endpoints.is_empty() && !n.builtin;
                            (v == "true" || v == "1") == unused
                        }
                        _ => false,
                    })
                })
            })
            .map(Inner::network_msg)
            .collect())
    }

    /// `network prune`: user-defined networks no container is attached to.
    async fn prune_networks(
        &self,
        ns: &str,
        filters: &BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<String>> {
        for k in filters.keys() {
            if !["label", "label!", "until"].contains(&k.as_str()) {
                return Err(Error::InvalidArgument(format!("invalid filter '{k}'")));
            }
        }
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let mut until = None;
        for u in filters.get("until").into_iter().flatten() {
            until = crate::events::parse_time(u, now)?;
        }
        let mut deleted = Vec::new();
        let mut nets = self.network_infos(ns).await?;
        nets.sort_by(|a, b| a.name.cmp(&b.name));
        for n in nets {
            if n.builtin || !n.endpoints.is_empty() {
                continue;
            }
            let created = berth_common::time::parse_rfc3339(&n.created)
                .and_then(|t| t.timestamp_nanos_opt())
                .unwrap_or(0);
            let keep = until.is_some_and(|u| created > u)
                || filters
                    .get("label")
                    .is_some_and(|ls| !ls.iter().all(|l| label_matches(&n.labels, l)))
                || filters
                    .get("label!")
                    .is_some_and(|ls| ls.iter().any(|l| label_matches(&n.labels, l)));
            if keep {
                continue;
            }
            // A container may have joined since the list: then it stays.
            match self
                .network
                .clone()
                .remove_network(request(
                    ns,
                    netv1::NetworkRef {
                        name_or_id: n.id.clone(),
                    },
                ))
                .await
            {
                Ok(_) => {
                    self.emit_network(ns, &n.id, &n.name, "destroy");
                    deleted.push(n.name);
                }
                Err(s) if s.code() == Code::FailedPrecondition => {}
                Err(s) => return Err(net_err(s)),
            }
        }
        Ok(deleted)
    }

    fn emit_network(&self, ns: &str, id: &str, name: &str, action: &str) {
        let mut attrs = BTreeMap::new();
        attrs.insert("name".to_string(), name.to_string());
        attrs.insert("type".to_string(), "bridge".to_string());
        self.emit(ns, "network", action, id, attrs);
    }

    /// `network connect`: live on a running container, at its next start
    /// on a stopped one.
    async fn connect_container(&self, ns: &str, r: &ConnectNetworkRequest) -> Result<()> {
        let c = self.find(ns, &r.container)?;
        let lock = self.op_lock(ns, &c.id);
        let _guard = lock.lock().await;
        let c = self
            .get(ns, &c.id)
            .ok_or_else(|| Error::NotFound(format!("No such container: {}", r.container)))?;
        let info = self.network_info(ns, &r.network).await?;
        let mode = c.host_config.network_mode.as_str();
        if info.driver != "bridge" || is_special_mode(mode) {
            return Err(Error::InvalidArgument(format!(
                "container cannot be connected to network {}: a container in network mode {} (or to host or none) has no other networks",
                info.name,
                if mode.is_empty() { "bridge" } else { mode }
            )));
        }
        if c.host_config
            .networks
            .iter()
            .any(|a| a.network == info.name)
        {
            return Err(Error::Conflict(format!(
                "endpoint with name {} already exists in network {}",
                c.name, info.name
            )));
        }
        if info.builtin && (!r.ipv4_address.is_empty() || !r.aliases.is_empty()) {
            return Err(Error::InvalidArgument(
                "user specified IP address and aliases are supported on user defined networks only"
                    .into(),
            ));
        }
        let att = NetworkAttachment {
            network: info.name.clone(),
            ipv4_address: r.ipv4_address.clone(),
            aliases: r.aliases.clone(),
        };
        if c.state.running() {
            let ep = self
                .network
                .clone()
                .connect_network(request(
                    ns,
                    netv1::ConnectRequest {
                        container_id: c.id.clone(),
                        container_name: c.name.clone(),
                        endpoint: Some(netv1::EndpointConfig {
                            network: info.name.clone(),
                            ipv4_address: r.ipv4_address.clone(),
                            aliases: r.aliases.clone(),
                        }),
                    },
                ))
                .await
                .map_err(net_err)?
                .into_inner();
            let rec = self.update(ns, &c.id, true, |rec| {
                rec.host_config.networks.push(att.clone());
                if let Some(n) = rec.net.as_mut() {
                    n.endpoints.push(networking::endpoint_of(&ep));
                }
            })?;
            if let Some(net) = &rec.net {
                self.write_hosts(ns, &rec, net)?;
            }
        } else {
            // Validated by berth-network at the next start.
            self.update(ns, &c.id, true, |rec| rec.host_config.networks.push(att))?;
        }
        self.emit_network(ns, &info.id, &info.name, "connect");
        info!(container = %c.id, network = %info.name, "connected container");
        Ok(())
    }

    /// `network disconnect`.
    async fn disconnect_container(&self, ns: &str, r: &DisconnectNetworkRequest) -> Result<()> {
        let c = match self.find(ns, &r.container) {
            Ok(c) => c,
            Err(e) if r.force => {
                let _ = e;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let lock = self.op_lock(ns, &c.id);
        let _guard = lock.lock().await;
        let c = self
            .get(ns, &c.id)
            .ok_or_else(|| Error::NotFound(format!("No such container: {}", r.container)))?;
        let info = self.network_info(ns, &r.network).await?;
        if !c
            .host_config
            .networks
            .iter()
            .any(|a| a.network == info.name)
        {
            if r.force {
                return Ok(());
            }
            return Err(Error::FailedPrecondition(format!(
                "container {} is not connected to network {}",
                c.id, info.name
            )));
        }
        if c.state.running() {
            self.network
                .clone()
                .disconnect_network(request(
                    ns,
                    netv1::DisconnectRequest {
                        container_id: c.id.clone(),
                        network: info.id.clone(),
                    },
                ))
                .await
                .map_err(net_err)?;
        }
        let rec = self.update(ns, &c.id, true, |rec| {
            rec.host_config.networks.retain(|a| a.network != info.name);
            if let Some(n) = rec.net.as_mut() {
                n.endpoints.retain(|e| e.network_id != info.id);
            }
        })?;
        if let Some(net) = rec.net.as_ref().filter(|_| rec.state.running()) {
            self.write_hosts(ns, &rec, net)?;
        }
        self.emit_network(ns, &info.id, &info.name, "disconnect");
        Ok(())
    }
}

/// The public `Networks` service.
pub struct NetworksApi(pub(crate) Arc<Inner>);

fn filters(f: HashMap<String, StringList>) -> BTreeMap<String, Vec<String>> {
    f.into_iter().map(|(k, v)| (k, v.values)).collect()
}

#[tonic::async_trait]
impl Networks for NetworksApi {
    async fn create(
        &self,
        req: Request<CreateNetworkRequest>,
    ) -> std::result::Result<Response<Network>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.into_inner();
        let n = self
            .0
            .network
            .clone()
            .create_network(request(
                &ns,
                netv1::CreateNetworkRequest {
                    name: r.name,
                    driver: r.driver,
                    subnet: r.subnet,
                    ip_range: r.ip_range,
                    gateway: r.gateway,
                    internal: r.internal,
                    labels: r.labels,
                    options: r.options,
                },
            ))
            .await
            .map_err(net_err)?
            .into_inner();
        self.0.emit_network(&ns, &n.id, &n.name, "create");
        Ok(Response::new(Inner::network_msg(n)))
    }

    async fn inspect(
        &self,
        req: Request<NetworkRef>,
    ) -> std::result::Result<Response<InspectResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let n = self.0.network_info(&ns, &req.into_inner().name).await?;
        Ok(Response::new(InspectResponse {
            json: self.0.network_doc(&n).to_string(),
        }))
    }

    async fn list(
        &self,
        req: Request<ListNetworksRequest>,
    ) -> std::result::Result<Response<ListNetworksResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let f = filters(req.into_inner().filters);
        Ok(Response::new(ListNetworksResponse {
            networks: self.0.list_networks(&ns, &f).await?,
        }))
    }

    async fn remove(
        &self,
        req: Request<NetworkRef>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let name = req.into_inner().name;
        let info = self.0.network_info(&ns, &name).await?;
        self.0
            .network
            .clone()
            .remove_network(request(
                &ns,
                netv1::NetworkRef {
                    name_or_id: info.id.clone(),
                },
            ))
            .await
            .map_err(net_err)?;
        self.0.emit_network(&ns, &info.id, &info.name, "destroy");
        Ok(Response::new(Empty {}))
    }

    async fn prune(
        &self,
        req: Request<PruneNetworksRequest>,
    ) -> std::result::Result<Response<PruneNetworksResponse>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let f = filters(req.into_inner().filters);
        Ok(Response::new(PruneNetworksResponse {
            deleted: self.0.prune_networks(&ns, &f).await?,
        }))
    }

    async fn connect_container(
        &self,
        req: Request<ConnectNetworkRequest>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        self.0.connect_container(&ns, req.get_ref()).await?;
        Ok(Response::new(Empty {}))
    }

    async fn disconnect_container(
        &self,
        req: Request<DisconnectNetworkRequest>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        self.0.disconnect_container(&ns, req.get_ref()).await?;
        Ok(Response::new(Empty {}))
    }
}
