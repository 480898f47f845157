//! The embedded DNS server of user-defined networks (docker's 127.0.0.11,
//! placed like aardvark-dns): one hickory server per network, listening on
//! UDP and TCP port 53 of the network's gateway address in the host's
//! namespace.
//!
//! - Names: container names, 12-character ids and `--network-alias`es of
//!   the containers on the networks the asking container is on (found by
//!   its source address). Several containers under one name answer in a
//!   shuffled order, so clients spread across them.
//! - PTR for those addresses.
//! - Anything else goes to the host's resolvers (or `--dns-upstream`)
//!   through hickory's caching resolver; not from a container that is only
//!   on internal networks.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::net::{DnsError, NetError};
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, PTR};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_server::resolver::Resolver;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use rand::seq::SliceRandom;
use tracing::{info, warn};

/// The TTL of berth's own answers (docker's).
const TTL: u32 = 600;

/// Who is who, rebuilt from the endpoints after every change.
#[derive(Default, Debug)]
pub struct DnsTable {
    /// (network id, lowercase name) → addresses on that network.
    names: HashMap<(String, String), Vec<Ipv4Addr>>,
    /// address → container id.
    owner: HashMap<Ipv4Addr, String>,
    /// container id → its networks.
    networks: HashMap<String, Vec<String>>,
    /// address → container name (PTR).
    ptr: HashMap<Ipv4Addr, String>,
    internal: HashSet<String>,
}

/// One endpoint as DNS sees it.
pub struct DnsEntry<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub container_name: &'a str,
    pub aliases: &'a [String],
    pub ip: Ipv4Addr,
}

impl DnsTable {
    pub fn build<'a>(
        entries: impl IntoIterator<Item = DnsEntry<'a>>,
        internal: impl IntoIterator<Item = String>,
    ) -> DnsTable {
        let mut t = DnsTable {
            internal: internal.into_iter().collect(),
            ..Default::default()
        };
        for e in entries {
            let short = &e.container_id[..12.min(e.container_id.len())];
            let mut names = vec![e.container_name.to_lowercase(), short.to_string()];
            names.extend(e.aliases.iter().map(|a| a.to_lowercase()));
            for n in names.into_iter().filter(|n| !n.is_empty()) {
                let ips = t.names.entry((e.network.to_string(), n)).or_default();
                if !ips.contains(&e.ip) {
                    ips.push(e.ip);
                }
            }
            t.owner.insert(e.ip, e.container_id.to_string());
            t.networks
                .entry(e.container_id.to_string())
                .or_default()
                .push(e.network.to_string());
            t.ptr.insert(e.ip, e.container_name.to_string());
        }
        t
    }

    /// The networks of the container at `src`; None for a stranger.
    fn networks_of(&self, src: Ipv4Addr) -> Option<&[String]> {
        let c = self.owner.get(&src)?;
        self.networks.get(c).map(Vec::as_slice)
    }

    /// Addresses of `name` on the networks of the container at `src`,
    /// shuffled.
    pub fn lookup(&self, src: Ipv4Addr, name: &str) -> Vec<Ipv4Addr> {
        let name = name.trim_end_matches('.').to_lowercase();
        let mut out = Vec::new();
        for n in self.networks_of(src).unwrap_or_default() {
            if let Some(ips) = self.names.get(&(n.clone(), name.clone())) {
                for ip in ips {
                    if !out.contains(ip) {
                        out.push(*ip);
                    }
                }
            }
        }
        out.shuffle(&mut rand::rng());
        out
    }

    /// The container name at `ip`, if `src` shares a network with it.
    fn reverse(&self, src: Ipv4Addr, ip: Ipv4Addr) -> Option<&str> {
        let mine = self.networks_of(src)?;
        let theirs = self.networks.get(self.owner.get(&ip)?)?;
        mine.iter()
            .any(|n| theirs.contains(n))
            .then(|| self.ptr.get(&ip).map(String::as_str))
            .flatten()
    }

    /// Whether `src` is one of our containers: nobody else is answered (the
    /// server listens on the gateway addresses, which other hosts might
    /// route to; it must not be an open resolver).
    fn knows(&self, src: Ipv4Addr) -> bool {
        self.owner.contains_key(&src)
    }

    /// Whether names the table does not know may be forwarded for `src`:
    /// not for a container only on internal networks.
    fn may_forward(&self, src: Ipv4Addr) -> bool {
        self.networks_of(src)
            .is_some_and(|nets| nets.iter().any(|n| !self.internal.contains(n)))
    }
}

/// "4.3.2.1.in-addr.arpa" → 1.2.3.4.
fn ptr_target(name: &str) -> Option<Ipv4Addr> {
    let rest = name
        .trim_end_matches('.')
        .to_lowercase()
        .strip_suffix(".in-addr.arpa")?
        .to_string();
    let mut o: Vec<u8> = rest
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if o.len() != 4 {
        return None;
    }
    o.reverse();
    Some(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
}

/// The upstream resolvers: `given` (ip:port), else the host's
/// /etc/resolv.conf name servers.
pub fn upstreams(given: &[SocketAddr]) -> Vec<SocketAddr> {
    if !given.is_empty() {
        return given.to_vec();
    }
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next()?.parse::<IpAddr>().ok())
                .flatten()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

fn resolver(up: &[SocketAddr]) -> Option<Resolver<TokioRuntimeProvider>> {
    if up.is_empty() {
        return None;
    }
    let servers = up
        .iter()
        .map(|a| {
            let mut udp = ConnectionConfig::udp();
            udp.port = a.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = a.port();
            NameServerConfig::new(a.ip(), true, vec![udp, tcp])
        })
        .collect();
    let mut b = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(servers),
        TokioRuntimeProvider::default(),
    );
    let o = b.options_mut();
    o.timeout = Duration::from_secs(2);
    o.attempts = 2;
    o.cache_size = 1024;
    o.ndots = 0;
    match b.build() {
        Ok(r) => Some(r),
        Err(e) => {
            warn!("DNS upstream resolver: {e}");
            None
        }
    }
}

/// Answers for one network's server.
struct Handler {
    table: Arc<RwLock<DnsTable>>,
    upstream: Arc<Option<Resolver<TokioRuntimeProvider>>>,
}

enum Answer {
    Records(Vec<Record>, bool),
    Code(ResponseCode),
}

impl Handler {
    async fn answer(&self, src: Ipv4Addr, name: &Name, qtype: RecordType) -> Answer {
        let text = name.to_string();
        let (local, reverse, forward) = {
            let t = self.table.read().expect("dns table lock");
            if !t.knows(src) {
                return Answer::Code(ResponseCode::Refused);
            }
            let local = t.lookup(src, &text);
            let reverse = ptr_target(&text).and_then(|ip| t.reverse(src, ip).map(String::from));
            (local, reverse, t.may_forward(src))
        };
        if !local.is_empty() {
            let records = match qtype {
                RecordType::A | RecordType::ANY => local
                    .iter()
                    .map(|ip| Record::from_rdata(name.clone(), TTL, RData::A(A(*ip))))
                    .collect(),
                // The name exists, with IPv4 addresses only.
                _ => Vec::new(),
            };
            return Answer::Records(records, true);
        }
        if qtype == RecordType::PTR {
            if let Some(cname) = reverse {
                let target = Name::from_ascii(format!("{cname}.")).unwrap_or_else(|_| Name::root());
                return Answer::Records(
                    vec![Record::from_rdata(
                        name.clone(),
                        TTL,
                        RData::PTR(PTR(target)),
                    )],
                    true,
                );
            }
        }
        if !forward {
            return Answer::Code(ResponseCode::NXDomain);
        }
        let Some(up) = self.upstream.as_ref() else {
            return Answer::Code(ResponseCode::ServFail);
        };
        match up.lookup(name.clone(), qtype).await {
            Ok(l) => Answer::Records(l.answers().to_vec(), false),
            Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => {
                if nr.response_code == ResponseCode::NoError {
                    Answer::Records(Vec::new(), false)
                } else {
                    Answer::Code(nr.response_code)
                }
            }
            Err(NetError::Dns(DnsError::ResponseCode(c))) => Answer::Code(c),
            Err(e) => {
                warn!(name = %text, "forwarding a DNS query: {e}");
                Answer::Code(ResponseCode::ServFail)
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = true;
        let failed = |meta: Metadata| {
            ResponseInfo::from(Header {
                metadata: meta,
                counts: HeaderCounts::default(),
            })
        };
        let builder = MessageResponseBuilder::from_message_request(request);
        let (src, name, qtype) = match request.request_info() {
            Ok(info) => (
                info.src.ip(),
                Name::from(info.query.name().clone()),
                info.query.query_type(),
            ),
            Err(_) => {
                meta.response_code = ResponseCode::FormErr;
                let r = builder.build_no_records(meta);
                return response_handle
                    .send_response(r)
                    .await
                    .unwrap_or_else(|_| failed(meta));
            }
        };
        let src = match src {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        match self.answer(src, &name, qtype).await {
            Answer::Records(records, authoritative) => {
                meta.authoritative = authoritative;
                let r = builder.build(meta, records.iter(), [], [], []);
                response_handle
                    .send_response(r)
                    .await
                    .unwrap_or_else(|_| failed(meta))
            }
            Answer::Code(code) => {
                meta.response_code = code;
                let r = builder.build_no_records(meta);
                response_handle
                    .send_response(r)
                    .await
                    .unwrap_or_else(|_| failed(meta))
            }
        }
    }
}

/// A UDP socket and a TCP listener on `sa`, bound to `device`.
fn bind_on_device(
    sa: SocketAddr,
    device: &str,
) -> std::io::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    use nix::sys::socket::{setsockopt, sockopt::BindToDevice};
    let dev = std::ffi::OsString::from(device);
    let udp = std::net::UdpSocket::bind(sa)?;
    setsockopt(&udp, BindToDevice, &dev).map_err(std::io::Error::from)?;
    udp.set_nonblocking(true)?;
    let tcp = std::net::TcpListener::bind(sa)?;
    setsockopt(&tcp, BindToDevice, &dev).map_err(std::io::Error::from)?;
    tcp.set_nonblocking(true)?;
    Ok((
        tokio::net::UdpSocket::from_std(udp)?,
        tokio::net::TcpListener::from_std(tcp)?,
    ))
}

/// The DNS servers of the user-defined networks.
pub struct Dns {
    table: Arc<RwLock<DnsTable>>,
    upstream: Arc<Option<Resolver<TokioRuntimeProvider>>>,
    servers: tokio::sync::Mutex<HashMap<String, Server<Handler>>>,
}

impl Dns {
    pub fn new(upstreams: &[SocketAddr]) -> Dns {
        Dns {
            table: Default::default(),
            upstream: Arc::new(resolver(upstreams)),
            servers: Default::default(),
        }
    }

    /// Replaces the table.
    pub fn set_table(&self, t: DnsTable) {
        *self.table.write().expect("dns table lock") = t;
    }

    /// Serves network `id` on `addr`:53 (UDP and TCP), if not yet, taking
    /// only what arrives on its bridge `device` (a packet from elsewhere
    /// claiming a container's address is never answered). Returns whether
    /// it serves.
    pub async fn serve(&self, id: &str, addr: Ipv4Addr, device: &str) -> bool {
        let mut servers = self.servers.lock().await;
        if servers.contains_key(id) {
            return true;
        }
        let sa = SocketAddr::new(IpAddr::V4(addr), 53);
        let (udp, tcp) = match bind_on_device(sa, device) {
            Ok(pair) => pair,
            Err(e) => {
                warn!(network = %id, "embedded DNS cannot listen on {sa} ({device}): {e}");
                return false;
            }
        };
        let mut server = Server::new(Handler {
            table: self.table.clone(),
            upstream: self.upstream.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 4096);
        servers.insert(id.to_string(), server);
        info!(network = %id, "embedded DNS listening on {sa}");
        true
    }

    /// Whether network `id` has a server.
    pub async fn serving(&self, id: &str) -> bool {
        self.servers.lock().await.contains_key(id)
    }

    /// Stops network `id`'s server.
    pub async fn stop(&self, id: &str) {
        let server = self.servers.lock().await.remove(id);
        if let Some(mut s) = server {
            if let Err(e) = s.shutdown_gracefully().await {
                warn!(network = %id, "stopping the embedded DNS: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> DnsTable {
        let a = vec!["svc".to_string()];
        DnsTable::build(
            [
                DnsEntry {
                    network: "n1",
                    container_id: "aaaaaaaaaaaaaaaa",
                    container_name: "web1",
                    aliases: &a,
                    ip: Ipv4Addr::new(10, 0, 0, 2),
                },
                DnsEntry {
                    network: "n1",
                    container_id: "bbbbbbbbbbbbbbbb",
                    container_name: "web2",
                    aliases: &a,
                    ip: Ipv4Addr::new(10, 0, 0, 3),
                },
                DnsEntry {
                    network: "n2",
                    container_id: "cccccccccccccccc",
                    container_name: "other",
                    aliases: &[],
                    ip: Ipv4Addr::new(10, 1, 0, 2),
                },
            ],
            ["n2".to_string()],
        )
    }

    #[test]
    fn names_are_scoped_to_shared_networks_and_aliases_shuffle() {
        let t = table();
        let web1 = Ipv4Addr::new(10, 0, 0, 2);
        assert_eq!(t.lookup(web1, "WEB2."), vec![Ipv4Addr::new(10, 0, 0, 3)]);
        assert_eq!(
            t.lookup(web1, "bbbbbbbbbbbb"),
            vec![Ipv4Addr::new(10, 0, 0, 3)]
        );
        assert!(t.lookup(web1, "other").is_empty());
        assert!(t.lookup(Ipv4Addr::new(10, 1, 0, 2), "web1").is_empty());
        let mut firsts = HashSet::new();
        for _ in 0..64 {
            let ips = t.lookup(web1, "svc");
            assert_eq!(ips.len(), 2);
            firsts.insert(ips[0]);
        }
        assert_eq!(firsts.len(), 2, "both addresses come first sometimes");
        assert_eq!(t.reverse(web1, Ipv4Addr::new(10, 0, 0, 3)), Some("web2"));
        assert_eq!(t.reverse(web1, Ipv4Addr::new(10, 1, 0, 2)), None);
        assert!(t.may_forward(web1));
        assert!(!t.may_forward(Ipv4Addr::new(10, 1, 0, 2)));
        // Strangers get nothing, forwarded or not.
        let stranger = Ipv4Addr::new(192, 0, 2, 1);
        assert!(t.knows(web1) && !t.knows(stranger));
        assert!(!t.may_forward(stranger));
        assert!(t.lookup(stranger, "web1").is_empty());
        assert_eq!(
            ptr_target("3.0.0.10.in-addr.arpa."),
            Some(Ipv4Addr::new(10, 0, 0, 3))
        );
        assert_eq!(ptr_target("example.com."), None);
    }
}
