//! A container's networking as the gateway keeps it: the `-p`, `--expose`,
//! `--add-host`, `--link` and DNS settings (parsed and checked at create),
//! the networks it joins, what berth-network made when it started, and the
//! docker documents and /etc files built from them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use berth_proto::network::v1::{AttachResponse, PortMapping};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One published port (HostConfig.PortBindings), after range expansion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    /// "tcp" or "udp".
    pub proto: String,
    /// "" for every address.
    pub host_ip: String,
    /// 0: a free port.
    pub host_port: u16,
    pub container_port: u16,
    /// With host_port: the end of a range to pick the first free port
    /// from (`-p 8000-8010:80`); 0: none.
    #[serde(default)]
    pub host_port_end: u16,
}

/// A network the container joins, with --ip and --network-alias
/// (docker's EndpointsConfig).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkAttachment {
    /// The network's name.
    pub network: String,
    pub ipv4_address: String,
    pub aliases: Vec<String>,
}

/// One interface of a running container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Endpoint {
    pub network_id: String,
    pub network_name: String,
    pub endpoint_id: String,
    pub interface: String,
    pub ip: String,
    pub prefix_len: u8,
    pub gateway: String,
    pub mac: String,
    pub aliases: Vec<String>,
    /// The network's embedded DNS server ("" on the default bridge).
    pub dns_server: String,
}

/// What berth-network made for a running container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetRuntime {
    pub sandbox_key: String,
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<PortBinding>,
}

impl NetRuntime {
    pub fn from_attach(r: &AttachResponse) -> NetRuntime {
        NetRuntime {
            sandbox_key: r.netns_path.clone(),
            endpoints: r.endpoints.iter().map(endpoint_of).collect(),
            ports: r
                .ports
                .iter()
                .map(|p| PortBinding {
                    proto: p.protocol.clone(),
                    host_ip: p.host_ip.clone(),
                    host_port: p.host_port as u16,
                    container_port: p.container_port as u16,
                    host_port_end: 0,
                })
                .collect(),
        }
    }
}

/// An endpoint as berth-network reports it.
pub fn endpoint_of(e: &berth_proto::network::v1::EndpointInfo) -> Endpoint {
    let (ip, len) = e
        .ipv4_address
        .split_once('/')
        .unwrap_or((e.ipv4_address.as_str(), "0"));
    Endpoint {
        network_id: e.network_id.clone(),
        network_name: e.network_name.clone(),
        endpoint_id: e.endpoint_id.clone(),
        interface: e.interface.clone(),
        ip: ip.to_string(),
        prefix_len: len.parse().unwrap_or(0),
        gateway: e.gateway.clone(),
        mac: e.mac_address.clone(),
        aliases: e.aliases.clone(),
        dns_server: e.dns_server.clone(),
    }
}

fn parse_port(v: &str, what: &str, spec: &str) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("invalid {what} port {v:?} in {spec:?}")),
    }
}

fn parse_range(v: &str, what: &str, spec: &str) -> Result<(u16, u16), String> {
    match v.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse_port(a, what, spec)?, parse_port(b, what, spec)?);
            if b < a {
                return Err(format!("invalid {what} port range {v:?} in {spec:?}"));
            }
            Ok((a, b))
        }
        None => {
            let p = parse_port(v, what, spec)?;
            Ok((p, p))
        }
    }
}

fn parse_proto(p: &str, spec: &str) -> Result<String, String> {
    match p {
        "" | "tcp" => Ok("tcp".into()),
        "udp" => Ok("udp".into()),
        _ => Err(format!("invalid proto {p:?} in {spec:?}: tcp or udp")),
    }
}

/// Parses one -p value into bindings, docker's syntax:
/// `[hostIP:][hostPort[-end]:]containerPort[-end][/proto]`.
pub fn parse_publish(spec: &str) -> Result<Vec<PortBinding>, String> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, parse_proto(p, spec)?),
        None => (spec, "tcp".to_string()),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (host_ip, host, container) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [ip, h, c] => (*ip, *h, *c),
        _ => return Err(format!("invalid port specification: {spec:?}")),
    };
    if !host_ip.is_empty() && host_ip.parse::<Ipv4Addr>().is_err() {
        return Err(format!(
            "invalid IP address {host_ip:?} in {spec:?}: berth publishes on IPv4 addresses"
        ));
    }
    if container.is_empty() {
        return Err(format!("no port specified: {spec:?}"));
    }
    let (c0, c1) = parse_range(container, "container", spec)?;
    if !host.is_empty() && c0 == c1 {
        // One container port, maybe a host range to choose from.
        let (h0, h1) = parse_range(host, "host", spec)?;
        return Ok(vec![PortBinding {
            proto,
            host_ip: host_ip.to_string(),
            host_port: h0,
            container_port: c0,
            host_port_end: if h1 > h0 { h1 } else { 0 },
        }]);
    }
    let hosts: Vec<u16> = if host.is_empty() {
        vec![0; (c1 - c0 + 1) as usize]
    } else {
        let (h0, h1) = parse_range(host, "host", spec)?;
        if h1 - h0 != c1 - c0 {
            return Err(format!(
                "invalid ranges in {spec:?}: the host and container port ranges must be the same size"
            ));
        }
        (h0..=h1).collect()
    };
    Ok((c0..=c1)
        .zip(hosts)
        .map(|(c, h)| PortBinding {
            proto: proto.clone(),
            host_ip: host_ip.to_string(),
            host_port: h,
            container_port: c,
            host_port_end: 0,
        })
        .collect())
}

/// Parses --expose (PORT[-END][/proto]) into "80/tcp" keys.
pub fn parse_expose(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, parse_proto(p, spec)?),
        None => (spec, "tcp".to_string()),
    };
    let (a, b) = parse_range(ports, "exposed", spec)?;
    Ok((a..=b).map(|p| format!("{p}/{proto}")).collect())
}

/// Checks an --add-host value (HOST:IP, also HOST=IP as docker 25).
pub fn check_extra_host(v: &str) -> Result<(String, String), String> {
    let (h, ip) = v
        .split_once('=')
        .or_else(|| v.split_once(':'))
        .ok_or_else(|| format!("invalid argument {v:?} for \"--add-host\": it must be HOST:IP"))?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if h.is_empty() || h.contains(char::is_whitespace) {
        return Err(format!("invalid host name in --add-host {v:?}"));
    }
    if ip.parse::<std::net::IpAddr>().is_err() && ip != "host-gateway" {
        return Err(format!("invalid IP address in --add-host {v:?}: {ip:?}"));
    }
    Ok((h.to_string(), ip.to_string()))
}

/// Checks a --link value (NAME[:ALIAS]) and returns (name, alias).
pub fn parse_link(v: &str) -> Result<(String, String), String> {
    let (name, alias) = match v.split_once(':') {
        Some((n, a)) => (n.trim_start_matches('/'), a),
        None => (v.trim_start_matches('/'), v.trim_start_matches('/')),
    };
    if name.is_empty() || alias.is_empty() {
        return Err(format!("invalid link {v:?}: NAME[:ALIAS]"));
    }
    Ok((name.to_string(), alias.to_string()))
}

/// The localhost lines every container's /etc/hosts starts with.
pub const LOCALHOST_LINES: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// /etc/hosts: localhost, the container's own addresses, --link targets
/// and --add-host lines.
pub fn hosts_file(
    hostname: &str,
    own: &[String],
    links: &[(String, Vec<String>)],
    extra: &[(String, String)],
) -> String {
    let mut s = String::from(LOCALHOST_LINES);
    for (h, ip) in extra {
        s.push_str(&format!("{ip}\t{h}\n"));
    }
    for (ip, names) in links {
        s.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    for ip in own {
        s.push_str(&format!("{ip}\t{hostname}\n"));
    }
    s
}

/// The host's resolver configuration as containers should see it: with
/// systemd-resolved's stub (only loopback servers) the upstream file it
/// keeps, as docker does.
pub fn host_resolv_conf() -> String {
    let main = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let only_loopback = {
        let servers: Vec<std::net::IpAddr> = main
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("nameserver")).then(|| w.next()?.parse().ok())?
            })
            .collect();
        !servers.is_empty() && servers.iter().all(|a| a.is_loopback())
    };
    if only_loopback {
        if let Ok(up) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            return up;
        }
    }
    main
}

/// /etc/resolv.conf: the host's, without loopback name servers (they
/// cannot be reached from the container's namespace), with --dns,
/// --dns-search and --dns-option replacing the host's values.
pub fn resolv_conf(host: &str, dns: &[String], search: &[String], options: &[String]) -> String {
    let mut servers: Vec<String> = Vec::new();
    let mut searches: Vec<String> = Vec::new();
    let mut opts: Vec<String> = Vec::new();
    for line in host.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("nameserver") => {
                if let Some(ip) = w.next() {
                    let loopback = ip
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|a| a.is_loopback());
                    if !loopback {
                        servers.push(ip.to_string());
                    }
                }
            }
            Some("search") | Some("domain") => searches = w.map(String::from).collect(),
            Some("options") => opts.extend(w.map(String::from)),
            _ => {}
        }
    }
    if !dns.is_empty() {
        servers = dns.to_vec();
    }
    if !search.is_empty() {
        searches = search.iter().filter(|s| *s != ".").cloned().collect();
    }
    if !options.is_empty() {
        opts = options.to_vec();
    }
    let mut s = String::new();
    for ns in &servers {
        s.push_str(&format!("nameserver {ns}\n"));
    }
    if !searches.is_empty() {
        s.push_str(&format!("search {}\n", searches.join(" ")));
    }
    if !opts.is_empty() {
        s.push_str(&format!("options {}\n", opts.join(" ")));
    }
    s
}

/// The published ports for network-service Attach.
pub fn port_mappings(b: &[PortBinding]) -> Vec<PortMapping> {
    b.iter()
        .map(|p| PortMapping {
            protocol: p.proto.clone(),
            host_ip: p.host_ip.clone(),
            host_port: p.host_port as u32,
            container_port: p.container_port as u32,
            host_port_end: p.host_port_end as u32,
        })
        .collect()
}

/// docker's map of "80/tcp" → [{HostIp, HostPort}] (HostConfig.PortBindings
/// with the ports as asked, NetworkSettings.Ports as made).
pub fn ports_doc(bindings: &[PortBinding], exposed: &[String], made: bool) -> Value {
    let mut m: BTreeMap<String, Value> = BTreeMap::new();
    if made {
        for e in exposed {
            m.insert(e.clone(), Value::Null);
        }
    }
    for b in bindings {
        let key = format!("{}/{}", b.container_port, b.proto);
        let host_ip = if made && b.host_ip.is_empty() {
            "0.0.0.0".to_string()
        } else {
            b.host_ip.clone()
        };
        let host_port = match (b.host_port, b.host_port_end) {
            (0, _) => String::new(),
            (h, 0) => h.to_string(),
            (h, e) => format!("{h}-{e}"),
        };
        let entry = m.entry(key).or_insert_with(|| json!([]));
        if !entry.is_array() {
            *entry = json!([]);
        }
        if let Some(a) = entry.as_array_mut() {
            a.push(json!({"HostIp": host_ip, "HostPort": host_port}));
        }
    }
    json!(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(proto: &str, ip: &str, h: u16, c: u16) -> PortBinding {
        PortBinding {
            proto: proto.into(),
            host_ip: ip.into(),
            host_port: h,
            container_port: c,
            host_port_end: 0,
        }
    }

    #[test]
    fn publish_specs() {
        assert_eq!(parse_publish("80").unwrap(), vec![b("tcp", "", 0, 80)]);
        assert_eq!(
            parse_publish("8080:80").unwrap(),
            vec![b("tcp", "", 8080, 80)]
        );
        assert_eq!(
            parse_publish("127.0.0.1:8080:80/udp").unwrap(),
            vec![b("udp", "127.0.0.1", 8080, 80)]
        );
        assert_eq!(
            parse_publish("127.0.0.1::80").unwrap(),
            vec![b("tcp", "127.0.0.1", 0, 80)]
        );
        assert_eq!(
            parse_publish("8000-8001:80-81").unwrap(),
            vec![b("tcp", "", 8000, 80), b("tcp", "", 8001, 81)]
        );
        assert_eq!(parse_publish("80-81").unwrap().len(), 2);
        let r = parse_publish("8000-8010:80").unwrap();
        assert_eq!(
            (r.len(), r[0].host_port, r[0].host_port_end),
            (1, 8000, 8010)
        );
        assert_eq!(
            ports_doc(&r, &[], false)["80/tcp"][0]["HostPort"],
            "8000-8010"
        );
        for bad in [
            "",
            "x",
            "80/sctp",
            "1.2.3:80:80",
            "a:b:c:d",
            "8000-8002:80-81",
            "0:80",
            "70000",
            "81-80",
            "8080:",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expose_hosts_links() {
        assert_eq!(parse_expose("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(parse_expose("53/udp").unwrap(), vec!["53/udp"]);
        assert_eq!(parse_expose("80-81").unwrap().len(), 2);
        assert!(parse_expose("x").is_err());
        assert_eq!(
            check_extra_host("db:10.0.0.5").unwrap(),
            ("db".to_string(), "10.0.0.5".to_string())
        );
        assert!(check_extra_host("db").is_err());
        assert!(check_extra_host("db:nope").is_err());
        assert_eq!(
            parse_link("web:w").unwrap(),
            ("web".to_string(), "w".to_string())
        );
        assert_eq!(
            parse_link("web").unwrap(),
            ("web".to_string(), "web".to_string())
        );
    }

    #[test]
    fn resolv_conf_drops_loopback_servers_and_takes_overrides() {
        let host =
            "nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch a.example\noptions ndots:2\n";
        assert_eq!(
            resolv_conf(host, &[], &[], &[]),
            "nameserver 10.0.0.2\nsearch a.example\noptions ndots:2\n"
        );
        assert_eq!(
            resolv_conf(
                host,
                &["1.1.1.1".into()],
                &["b.test".into()],
                &["ndots:1".into()]
            ),
            "nameserver 1.1.1.1\nsearch b.test\noptions ndots:1\n"
        );
    }

    #[test]
    fn port_documents() {
        let made = vec![b("tcp", "", 8080, 80)];
        let doc = ports_doc(&made, &["80/tcp".into(), "443/tcp".into()], true);
        assert_eq!(doc["80/tcp"][0]["HostIp"], "0.0.0.0");
        assert_eq!(doc["80/tcp"][0]["HostPort"], "8080");
        assert!(doc["443/tcp"].is_null());
    }
}
