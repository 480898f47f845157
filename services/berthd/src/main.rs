//! `berthd`: the berth engine. Without a subcommand it runs every service in
//! one process (each still serving gRPC on its own unix socket under
//! `--state`); `berthd content|snapshots|tasks|network|gateway` runs one.

mod config;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use berth_common::grpc::parse_unix_addr;
use berth_common::{connect_unix, unix_incoming};
use berth_proto::content::v1::content_server::ContentServer;
use berth_proto::network::v1::network_server::NetworkServer;
use berth_proto::snapshots::v1::snapshots_server::SnapshotsServer;
use berth_proto::tasks::v1::tasks_server::TasksServer;
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;
use tracing::info;

#[derive(Parser, Debug)]
#[command(name = "berthd", version, about = "The berth container engine")]
struct Cli {
    /// The config file (TOML): any flag below by its long name, global ones
    /// at the top, a subcommand's own in a [table] named after it. The
    /// command line and environment win over it; a missing default file is
    /// fine. Example: deploy/config.toml.
    #[arg(
        long,
        global = true,
        env = "BERTHD_CONFIG",
        default_value = config::DEFAULT_CONFIG,
        value_name = "PATH"
    )]
    config: PathBuf,
    /// Directory for persistent data (images, snapshots, container records).
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/berth",
        env = "BERTH_ROOT"
    )]
    root: PathBuf,
    /// Directory for runtime state (sockets, task bundles, network namespaces).
    #[arg(long, global = true, default_value = "/run/berth", env = "BERTH_STATE")]
    state: PathBuf,
    /// The berth-shim binary (default: next to berthd, else on PATH).
    #[arg(long, global = true, env = "BERTH_SHIM")]
    shim: Option<PathBuf>,
    /// A registry (host[:port]) that may be used over plain HTTP; loopback
    /// registries always may. Repeatable.
    #[arg(
        long = "insecure-registry",
        global = true,
        value_name = "HOST",
        env = "BERTH_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,
    /// A pull-through mirror, tried before the registry: URL for Docker Hub,
    /// or DOMAIN=URL for another registry. Repeatable.
    #[arg(
        long = "registry-mirror",
        global = true,
        value_name = "[DOMAIN=]URL",
        env = "BERTH_REGISTRY_MIRRORS",
        value_delimiter = ','
    )]
    registry_mirrors: Vec<String>,
    /// The nftables table (inet family) berth-network owns.
    #[arg(long, global = true, default_value = "berth", env = "BERTH_NFT_TABLE")]
    nft_table: String,
    /// The default bridge network's interface.
    #[arg(long, global = true, default_value = "berth0", env = "BERTH_BRIDGE")]
    bridge: String,
    /// The default bridge network's subnet (CIDR); by default the first of
    /// 172.17.0.0/16, 172.18.0.0/16, ... that the host does not route.
    #[arg(long = "bridge-subnet", global = true, env = "BERTH_BRIDGE_SUBNET")]
    bridge_subnet: Option<ipnet::Ipv4Net>,
    /// The default bridge network's MTU.
    #[arg(long = "bridge-mtu", global = true, env = "BERTH_BRIDGE_MTU")]
    bridge_mtu: Option<u32>,
    /// Where the embedded DNS of user-defined networks forwards the names
    /// it does not know (IP:PORT, repeatable); by default the host's
    /// /etc/resolv.conf name servers.
    #[arg(
        long = "dns-upstream",
        global = true,
        env = "BERTH_DNS_UPSTREAM",
        value_delimiter = ','
    )]
    dns_upstream: Vec<std::net::SocketAddr>,
    /// Also serve the gateway's API on this TCP address (HOST:PORT), with
    /// mutual TLS: --tlscacert, --tlscert and --tlskey are required unless
    /// --insecure-tcp is given.
    #[arg(long, global = true, env = "BERTH_TCP", value_name = "HOST:PORT")]
    tcp: Option<std::net::SocketAddr>,
    /// PEM file of the CA that signs the client certificates accepted on
    /// --tcp; a client without one is refused before any RPC runs.
    #[arg(long, global = true, env = "BERTH_TLS_CACERT", value_name = "PATH")]
    tlscacert: Option<PathBuf>,
    /// PEM file of the server's certificate (chain) for --tcp.
    #[arg(long, global = true, env = "BERTH_TLS_CERT", value_name = "PATH")]
    tlscert: Option<PathBuf>,
    /// PEM file of the server's private key for --tcp.
    #[arg(long, global = true, env = "BERTH_TLS_KEY", value_name = "PATH")]
    tlskey: Option<PathBuf>,
    /// Serve --tcp as plain, unauthenticated TCP: anyone who reaches the
    /// port controls the host. For tests on loopback only.
    #[arg(long = "insecure-tcp", global = true, env = "BERTH_INSECURE_TCP")]
    insecure_tcp: bool,
    /// Group (name or number) that may use the gateway's unix socket (mode
    /// 0660). When the default group does not exist the socket stays
    /// root's alone; a group given explicitly must exist.
    #[arg(long, global = true, default_value = DEFAULT_GROUP, env = "BERTH_GROUP")]
    group: String,
    /// Serve Prometheus metrics (GET /metrics) of the gateway on this TCP
    /// address (HOST:PORT); off when unset. See docs/metrics.md.
    #[arg(
        long = "metrics-addr",
        global = true,
        env = "BERTH_METRICS_ADDR",
        value_name = "HOST:PORT"
    )]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run only berth-content.
    Content {
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Run only berth-snapshots.
    Snapshots {
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Address of berth-content (unix:///path).
        #[arg(long)]
        content_addr: Option<String>,
    },
    /// Run only berth-tasks.
    Tasks {
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Run only berth-network.
    Network {
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Run only the gateway, using services at the given addresses.
    Gateway {
        #[arg(long)]
        socket: Option<PathBuf>,
        #[arg(long)]
        content_addr: Option<String>,
        #[arg(long)]
        snapshots_addr: Option<String>,
        #[arg(long)]
        tasks_addr: Option<String>,
        #[arg(long)]
        network_addr: Option<String>,
    },
}

/// The group of the gateway socket unless --group says otherwise.
const DEFAULT_GROUP: &str = "berth";

/// How the gateway is reached besides its unix socket.
#[derive(Default)]
struct Listen {
    /// Group of the unix socket.
    gid: Option<u32>,
    /// The TCP address and, unless --insecure-tcp, its mutual TLS.
    tcp: Option<(
        std::net::SocketAddr,
        Option<tonic::transport::ServerTlsConfig>,
    )>,
    /// Where the Prometheus metrics are served (--metrics-addr).
    metrics: Option<std::net::SocketAddr>,
}

/// Checks the remote-management flags and reads the TLS material, before
/// any store is opened, so that a bad flag costs nothing.
fn listen_options(cli: &Cli) -> Result<Listen> {
    let gid = socket_group(&cli.group)?;
    let tls_given = cli.tlscacert.is_some() || cli.tlscert.is_some() || cli.tlskey.is_some();
    let Some(addr) = cli.tcp else {
        if tls_given || cli.insecure_tcp {
            anyhow::bail!("--tlscacert, --tlscert, --tlskey and --insecure-tcp need --tcp");
        }
        return Ok(Listen {
            gid,
            tcp: None,
            metrics: cli.metrics_addr,
        });
    };
    if cli.insecure_tcp {
        if tls_given {
            anyhow::bail!("--insecure-tcp and the --tls* flags exclude each other");
        }
        tracing::warn!(
            %addr,
            "serving the API on plain TCP (--insecure-tcp): anyone who can reach it controls this host"
        );
        return Ok(Listen {
            gid,
            tcp: Some((addr, None)),
            metrics: cli.metrics_addr,
        });
    }
    let (Some(ca), Some(cert), Some(key)) = (&cli.tlscacert, &cli.tlscert, &cli.tlskey) else {
        anyhow::bail!(
            "--tcp {addr} needs mutual TLS: give --tlscacert (the CA of client certificates), \
             --tlscert and --tlskey (the server's), or --insecure-tcp for plain TCP"
        );
    };
    let read = |what: &str, p: &PathBuf| {
        std::fs::read(p).with_context(|| format!("read {what} {}", p.display()))
    };
    let (ca, cert, key) = (
        read("--tlscacert", ca)?,
        read("--tlscert", cert)?,
        read("--tlskey", key)?,
    );
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert, key))
        .client_ca_root(tonic::transport::Certificate::from_pem(ca))
        .timeout(std::time::Duration::from_secs(10));
    // Building the acceptor checks the PEM files now rather than at the
    // first connection.
    tonic::transport::Server::builder()
        .tls_config(tls.clone())
        .context("the --tlscacert/--tlscert/--tlskey files are not a usable TLS setup")?;
    Ok(Listen {
        gid,
        tcp: Some((addr, Some(tls))),
        metrics: cli.metrics_addr,
    })
}

/// The gid of --group: a number, or a name from the group database.
fn socket_group(group: &str) -> Result<Option<u32>> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(Some(gid));
    }
    match nix::unistd::Group::from_name(group).with_context(|| format!("look up group {group}"))? {
        Some(g) => Ok(Some(g.gid.as_raw())),
        None if group == DEFAULT_GROUP => Ok(None),
        None => anyhow::bail!("--group {group}: no such group"),
    }
}

#[derive(Clone)]
struct Paths {
    root: PathBuf,
    state: PathBuf,
    registries: berth_gateway::RegistryOptions,
    network: berth_network::NetworkConfig,
}

/// `--registry-mirror` values: URL (Docker Hub) or DOMAIN=URL.
fn registry_options(cli: &Cli) -> Result<berth_gateway::RegistryOptions> {
    let mut mirrors: std::collections::HashMap<String, Vec<String>> = Default::default();
    for m in &cli.registry_mirrors {
        let (domain, url) = match m.split_once('=') {
            Some((d, u)) => (d.to_string(), u.to_string()),
            None => ("docker.io".to_string(), m.clone()),
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            anyhow::bail!("invalid mirror {m:?}: the URL must start with http:// or https://");
        }
        mirrors.entry(domain).or_default().push(url);
    }
    Ok(berth_gateway::RegistryOptions {
        insecure: cli.insecure_registries.clone(),
        mirrors,
    })
}

impl Paths {
    fn sock(&self, name: &str) -> PathBuf {
        self.state.join(format!("{name}.sock"))
    }
    fn addr(&self, given: &Option<String>, name: &str) -> Result<PathBuf> {
        match given {
            Some(a) => Ok(parse_unix_addr(a)?),
            None => Ok(self.sock(name)),
        }
    }
}

async fn shutdown_signal(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// The gRPC name of a server's service, e.g. `berth.content.v1.Content`.
fn service_name<S: tonic::server::NamedService>(_: &S) -> &'static str {
    S::NAME
}

macro_rules! serve {
    ($svc:expr, $path:expr, $rx:expr) => {{
        let svc = $svc;
        let health = berth_common::grpc::health_service(&[service_name(&svc)]).await;
        let path: PathBuf = $path;
        let incoming = unix_incoming(&path).with_context(|| format!("listen on {}", path.display()))?;
        info!(socket = %path.display(), "serving");
        let rx = $rx.clone();
        tokio::spawn(async move {
            berth_common::grpc::server()
                .add_service(health)
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, shutdown_signal(rx))
                .await
        })
    }};
}

fn shim_path(given: Option<PathBuf>) -> PathBuf {
    if let Some(p) = given {
        return p;
    }
    if let Ok(exe) = std::env::current_exe() {
        let p = exe.with_file_name("berth-shim");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("berth-shim")
}

fn content_service(p: &Paths) -> Result<ContentServer<berth_content::ContentService>> {
    let svc = berth_content::ContentService::open(&p.root).context("open berth-content")?;
    Ok(ContentServer::new(svc)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

fn snapshots_service(
    p: &Paths,
    content: &Path,
) -> Result<SnapshotsServer<berth_snapshots::SnapshotsService>> {
    let client =
        berth_proto::content::v1::content_client::ContentClient::new(connect_unix(content))
            .max_decoding_message_size(64 << 20);
    let svc =
        berth_snapshots::SnapshotsService::open(&p.root, client).context("open berth-snapshots")?;
    Ok(SnapshotsServer::new(svc))
}

/// Resolves when a service has finished starting (berth-tasks: its shims
/// are found again); systemd hears READY=1 only after that.
type Startup = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

fn tasks_service(
    p: &Paths,
    shim: PathBuf,
) -> Result<(TasksServer<berth_tasks::TasksService>, Startup)> {
    let svc = berth_tasks::TasksService::open(&p.state, shim).context("open berth-tasks")?;
    let recovered = Box::pin(svc.recovered());
    Ok((TasksServer::new(svc), recovered))
}

/// Tells systemd (Type=notify) that this berthd serves; a no-op when not
/// started by systemd.
fn notify_ready(name: &str) {
    match berth_common::notify::ready(&format!("{name} is serving")) {
        Ok(true) => info!("notified systemd: ready"),
        Ok(false) => {}
        Err(e) => tracing::warn!("cannot notify systemd that {name} is ready: {e}"),
    }
}

async fn network_service(p: &Paths) -> Result<NetworkServer<berth_network::NetworkService>> {
    let svc = berth_network::NetworkService::open(p.network.clone())
        .await
        .context("open berth-network")?;
    Ok(NetworkServer::new(svc))
}

async fn wait_for_signal(tx: watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    info!("shutting down; containers keep running");
    if let Err(e) = berth_common::notify::stopping("shutting down") {
        tracing::warn!("cannot notify systemd of the shutdown: {e}");
    }
    let _ = tx.send(true);
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    let result = rt.block_on(run());
    // A check of a stuck shim (berth-tasks recovery) may still be blocked
    // on the blocking pool: do not wait for it to exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

async fn run() -> Result<()> {
    let cli = config::parse_cli()?;
    let name = match &cli.command {
        None => "berthd",
        Some(Command::Content { .. }) => "berth-content",
        Some(Command::Snapshots { .. }) => "berth-snapshots",
        Some(Command::Tasks { .. }) => "berth-tasks",
        Some(Command::Network { .. }) => "berth-network",
        Some(Command::Gateway { .. }) => "berth-gateway",
    };
    let _telemetry = berth_common::telemetry::init(name, "info");
    tracing::debug!(config = %cli.config.display(), "configuration file (read if present)");
    let mut network = berth_network::NetworkConfig::new(&cli.root, &cli.state);
    network.nft_table = cli.nft_table.clone();
    network.bridge = cli.bridge.clone();
    network.bridge_subnet = cli.bridge_subnet;
    network.bridge_mtu = cli.bridge_mtu;
    network.dns_upstreams = cli.dns_upstream.clone();
    let p = Paths {
        root: cli.root.clone(),
        state: cli.state.clone(),
        registries: registry_options(&cli)?,
        network,
    };
    // Only the gateway listens for clients: the other services neither read
    // the TLS files nor look up the group.
    let listen = if matches!(cli.command, None | Some(Command::Gateway { .. })) {
        listen_options(&cli)?
    } else {
        Listen::default()
    };
    for d in [&p.root, &p.state] {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    let (tx, rx) = watch::channel(false);
    let mut servers = Vec::new();
    let mut startup: Vec<Startup> = Vec::new();
    match cli.command {
        Some(Command::Content { socket }) => {
            servers.push(serve!(
                content_service(&p)?,
                socket.unwrap_or(p.sock("content")),
                rx
            ));
        }
        Some(Command::Snapshots {
            socket,
            content_addr,
        }) => {
            let content = p.addr(&content_addr, "content")?;
            servers.push(serve!(
                snapshots_service(&p, &content)?,
                socket.unwrap_or(p.sock("snapshots")),
                rx
            ));
        }
        Some(Command::Tasks { socket }) => {
            let (tasks, recovered) = tasks_service(&p, shim_path(cli.shim))?;
            servers.push(serve!(tasks, socket.unwrap_or(p.sock("tasks")), rx));
            startup.push(recovered);
        }
        Some(Command::Network { socket }) => {
            servers.push(serve!(
                network_service(&p).await?,
                socket.unwrap_or(p.sock("network")),
                rx
            ));
        }
        Some(Command::Gateway {
            socket,
            content_addr,
            snapshots_addr,
            tasks_addr,
            network_addr,
        }) => {
            let backends = berth_gateway::Backends {
                content: connect_unix(p.addr(&content_addr, "content")?),
                snapshots: connect_unix(p.addr(&snapshots_addr, "snapshots")?),
                tasks: connect_unix(p.addr(&tasks_addr, "tasks")?),
                network: connect_unix(p.addr(&network_addr, "network")?),
            };
            let gw = berth_gateway::Gateway::open(&p.root, backends, p.registries.clone())
                .context("open gateway")?;
            servers
                .extend(serve_gateway(gw, socket.unwrap_or(p.sock("berth")), &listen, &rx).await?);
        }
        None => {
            // The stores are opened side by side (after a crash each redb
            // open is a repair and several fsyncs); the sockets are served
            // only when all are open, so that no client finds the gateway
            // up and a service behind it not yet.
            let content = {
                let p = p.clone();
                tokio::task::spawn_blocking(move || content_service(&p))
            };
            let snapshots = {
                let p = p.clone();
                tokio::task::spawn_blocking(move || snapshots_service(&p, &p.sock("content")))
            };
            let backends = berth_gateway::Backends {
                content: connect_unix(p.sock("content")),
                snapshots: connect_unix(p.sock("snapshots")),
                tasks: connect_unix(p.sock("tasks")),
                network: connect_unix(p.sock("network")),
            };
            let gw = {
                let root = p.root.clone();
                let registries = p.registries.clone();
                tokio::task::spawn_blocking(move || {
                    berth_gateway::Gateway::open(&root, backends, registries)
                        .context("open gateway")
                })
            };
            let (tasks, recovered) = tasks_service(&p, shim_path(cli.shim))?;
            startup.push(recovered);
            let network = network_service(&p).await?;
            let (content, snapshots, gw) = (content.await??, snapshots.await??, gw.await??);
            servers.push(serve!(content, p.sock("content"), rx));
            servers.push(serve!(snapshots, p.sock("snapshots"), rx));
            servers.push(serve!(tasks, p.sock("tasks"), rx));
            servers.push(serve!(network, p.sock("network"), rx));
            servers.extend(serve_gateway(gw, p.sock("berth"), &listen, &rx).await?);
        }
    }
    tokio::spawn(wait_for_signal(tx));
    // Every socket is bound and served; once berth-tasks has found its
    // shims again, systemd may start the units that need this one.
    let mut stop = rx.clone();
    tokio::select! {
        _ = async { for s in startup { s.await } } => notify_ready(name),
        _ = stop.wait_for(|v| *v) => {}
    }
    // After a stop signal the servers finish the calls in flight; streams
    // that never end on their own (the gateway's Wait on every running
    // task, an attach, `events`) are cut after a grace period, so that a
    // stop does not hang while containers run.
    let mut stopped = rx.clone();
    let all = async {
        for s in servers {
            s.await.context("server task")?.context("gRPC server")?;
        }
        Ok::<(), anyhow::Error>(())
    };
    tokio::select! {
        r = all => r?,
        _ = async {
            let _ = stopped.wait_for(|v| *v).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            info!(grace_s = SHUTDOWN_GRACE.as_secs(), "closing the connections still open");
        }
    }
    Ok(())
}

/// How long a stopping berthd lets open calls finish.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

type ServerTask = tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>>;

/// The gateway's API services (and their health) on a server builder.
fn gateway_routes(
    builder: tonic::transport::Server<tower::layer::util::Identity>,
    gw: &berth_gateway::Gateway,
    health: &HealthServer<HealthService>,
) -> tonic::transport::server::Router<
    tower::layer::util::Stack<berth_gateway::ApiMetricsLayer, tower::layer::util::Identity>,
> {
    builder
        .layer(gw.api_metrics_layer())
        .add_service(health.clone())
        .add_service(gw.images_server())
        .add_service(gw.containers_server())
        .add_service(gw.processes_server())
        .add_service(gw.system_server())
        .add_service(gw.events_server())
        .add_service(gw.files_server())
        .add_service(gw.volumes_server())
        .add_service(gw.networks_server())
}

/// Serves an opened gateway on `socket` (and on TCP when asked) and starts
/// its recovery.
async fn serve_gateway(
    gw: berth_gateway::Gateway,
    socket: PathBuf,
    listen: &Listen,
    rx: &watch::Receiver<bool>,
) -> Result<Vec<ServerTask>> {
    let health = berth_common::grpc::health_service(&[
        service_name(&gw.images_server()),
        service_name(&gw.containers_server()),
        service_name(&gw.processes_server()),
        service_name(&gw.system_server()),
        service_name(&gw.events_server()),
        service_name(&gw.files_server()),
        service_name(&gw.volumes_server()),
        service_name(&gw.networks_server()),
    ])
    .await;
    let mut servers = Vec::new();
    if let Some((addr, tls)) = &listen.tcp {
        // No Nagle: a TLS record held back until the peer's delayed ACK
        // costs 40 ms a call.
        let incoming = tonic::transport::server::TcpIncoming::bind(*addr)
            .map_err(|e| anyhow::anyhow!("listen on tcp://{addr}: {e}"))?
            .with_nodelay(Some(true));
        let mut builder = berth_common::grpc::server();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls.clone()).context("TLS setup")?;
        }
        let router = gateway_routes(builder, &gw, &health);
        info!(%addr, tls = tls.is_some(), "gateway serving on TCP");
        let rx = rx.clone();
        servers.push(tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, shutdown_signal(rx))
                .await
        }));
    }
    if let Some(addr) = listen.metrics {
        gw.serve_metrics(addr, shutdown_signal(rx.clone()))
            .with_context(|| format!("listen for metrics on {addr}"))?;
    }
    let incoming = berth_common::grpc::unix_incoming_with(&socket, 0o660, listen.gid)
        .with_context(|| format!("listen on {}", socket.display()))?;
    info!(socket = %socket.display(), gid = ?listen.gid, "gateway serving");
    let router = gateway_routes(berth_common::grpc::server(), &gw, &health);
    let rx = rx.clone();
    servers.push(tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, shutdown_signal(rx))
            .await
    }));
    gw.spawn_recovery();
    Ok(servers)
}
