//! `berthd`: the berth engine. Without a subcommand it runs every service in
//! one process (each still serving gRPC on its own unix socket under
//! `--state`); `berthd content|snapshots|tasks|network|gateway` runs one.

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
use tracing::info;

#[derive(Parser, Debug)]
#[command(name = "berthd", version, about = "The berth container engine")]
struct Cli {
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

macro_rules! serve {
    ($svc:expr, $path:expr, $rx:expr) => {{
        let svc = $svc;
        let path: PathBuf = $path;
        let incoming = unix_incoming(&path).with_context(|| format!("listen on {}", path.display()))?;
        info!(socket = %path.display(), "serving");
        let rx = $rx.clone();
        tokio::spawn(async move {
            berth_common::grpc::server()
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

fn tasks_service(p: &Paths, shim: PathBuf) -> Result<TasksServer<berth_tasks::TasksService>> {
    let svc = berth_tasks::TasksService::open(&p.state, shim).context("open berth-tasks")?;
    Ok(TasksServer::new(svc))
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
    let cli = Cli::parse();
    let name = match &cli.command {
        None => "berthd",
        Some(Command::Content { .. }) => "berth-content",
        Some(Command::Snapshots { .. }) => "berth-snapshots",
        Some(Command::Tasks { .. }) => "berth-tasks",
        Some(Command::Network { .. }) => "berth-network",
        Some(Command::Gateway { .. }) => "berth-gateway",
    };
    let _telemetry = berth_common::telemetry::init(name, "info");
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
    for d in [&p.root, &p.state] {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    let (tx, rx) = watch::channel(false);
    let mut servers = Vec::new();
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
            servers.push(serve!(
                tasks_service(&p, shim_path(cli.shim))?,
                socket.unwrap_or(p.sock("tasks")),
                rx
            ));
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
            servers.extend(gateway(
                &p,
                backends,
                socket.unwrap_or(p.sock("berth")),
                &rx,
            )?);
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
            let tasks = tasks_service(&p, shim_path(cli.shim))?;
            let network = network_service(&p).await?;
            let (content, snapshots, gw) = (content.await??, snapshots.await??, gw.await??);
            servers.push(serve!(content, p.sock("content"), rx));
            servers.push(serve!(snapshots, p.sock("snapshots"), rx));
            servers.push(serve!(tasks, p.sock("tasks"), rx));
            servers.push(serve!(network, p.sock("network"), rx));
            servers.extend(serve_gateway(gw, p.sock("berth"), &rx)?);
        }
    }
    tokio::spawn(wait_for_signal(tx));
    for s in servers {
        s.await.context("server task")?.context("gRPC server")?;
    }
    Ok(())
}

fn gateway(
    p: &Paths,
    backends: berth_gateway::Backends,
    socket: PathBuf,
    rx: &watch::Receiver<bool>,
) -> Result<Vec<ServerTask>> {
    let gw = berth_gateway::Gateway::open(&p.root, backends, p.registries.clone())
        .context("open gateway")?;
    serve_gateway(gw, socket, rx)
}

type ServerTask = tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>>;

/// Serves an opened gateway on `socket` and starts its recovery.
fn serve_gateway(
    gw: berth_gateway::Gateway,
    socket: PathBuf,
    rx: &watch::Receiver<bool>,
) -> Result<Vec<ServerTask>> {
    let incoming =
        unix_incoming(&socket).with_context(|| format!("listen on {}", socket.display()))?;
    info!(socket = %socket.display(), "gateway serving");
    let rx = rx.clone();
    let server = {
        let gw = gw.clone();
        tokio::spawn(async move {
            berth_common::grpc::server()
                .add_service(gw.images_server())
                .add_service(gw.containers_server())
                .add_service(gw.processes_server())
                .add_service(gw.system_server())
                .add_service(gw.events_server())
                .add_service(gw.files_server())
                .add_service(gw.volumes_server())
                .add_service(gw.networks_server())
                .serve_with_incoming_shutdown(incoming, shutdown_signal(rx))
                .await
        })
    };
    gw.spawn_recovery();
    Ok(vec![server])
}
