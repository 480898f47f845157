#![recursion_limit = "256"]
//! berthd's gateway: the public API `berth.gateway.v1`.
//!
//! The gateway owns container records and orchestration. It reaches
//! berth-content, berth-snapshots, berth-tasks and berth-network only through
//! their gRPC clients, whether they run in the same process or not.

mod archive;
mod container;
mod containers;
mod error;
mod events;
mod files;
mod gc;
mod housekeeping;
mod images;
mod lifecycle;
mod logs;
mod metrics;
mod mounts;
mod networking;
mod networks;
mod processes;
mod pull;
mod push;
mod recovery;
mod resources;
mod rootfs;
mod spec;
mod store;
mod system;
mod top;
mod volumes;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_proto::content::v1::content_client::ContentClient;
use berth_proto::gateway::v1::container_files_server::ContainerFilesServer;
use berth_proto::gateway::v1::container_processes_server::ContainerProcessesServer;
use berth_proto::gateway::v1::containers_server::ContainersServer;
use berth_proto::gateway::v1::events_server::EventsServer;
use berth_proto::gateway::v1::images_server::ImagesServer;
use berth_proto::gateway::v1::networks_server::NetworksServer;
use berth_proto::gateway::v1::system_server::SystemServer;
use berth_proto::gateway::v1::volumes_server::VolumesServer;
use berth_proto::network::v1::network_client::NetworkClient;
use berth_proto::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::tasks::v1::tasks_client::TasksClient;
use tokio::sync::broadcast;
use tonic::transport::Channel;

pub use error::{Error, EXIT_CODE_KEY};
pub use metrics::{ApiMetricsLayer, ApiMetricsService};
pub use pull::RegistryOptions;

use container::ContainerRecord;
use store::Store;

/// Channels to the backing services.
#[derive(Clone)]
pub struct Backends {
    pub content: Channel,
    pub snapshots: Channel,
    pub tasks: Channel,
    pub network: Channel,
}

/// A change in a container's life, published to waiters and attachers.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub ns: String,
    pub id: String,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EventKind {
    Start,
    Die(i64),
    Destroy,
}

/// Serialises operations on one container.
type OpLock = Arc<tokio::sync::Mutex<()>>;

pub(crate) struct Inner {
    root: PathBuf,
    content: ContentClient<Channel>,
    snapshots: SnapshotsClient<Channel>,
    tasks: TasksClient<Channel>,
    network: NetworkClient<Channel>,
    store: Store,
    /// Container records by (namespace, id).
    containers: Mutex<HashMap<(String, String), ContainerRecord>>,
    /// Serialises operations on one container.
    op_locks: Mutex<HashMap<(String, String), OpLock>>,
    events: broadcast::Sender<Event>,
    /// The docker-style event log (`berth events`).
    event_log: events::EventLog,
    images: images::ImageCache,
    registry: berth_registry::Client,
    registry_options: RegistryOptions,
    /// Held (shared) while an image moves between GC roots (name to name,
    /// name to dangling); taken exclusively by garbage collection.
    gc_lock: tokio::sync::RwLock<()>,
    /// Volume records by (namespace, name).
    volumes: Mutex<HashMap<(String, String), volumes::VolumeRecord>>,
    /// Serialises creating, removing and pruning volumes with the creation
    /// of containers that use them.
    volume_ops: tokio::sync::Mutex<()>,
    /// API call counts and latencies, pull bytes (see metrics.rs).
    metrics: Arc<metrics::Metrics>,
}

/// The gateway: build it with [`Gateway::open`], then serve its three
/// services.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl Gateway {
    /// Opens the gateway's store under `root/gateway` and container
    /// directories under `root/containers`.
    pub fn open(
        root: &Path,
        backends: Backends,
        registries: RegistryOptions,
    ) -> Result<Self, Error> {
        let registry = berth_registry::Client::new(berth_registry::Config {
            insecure: registries.insecure.clone(),
            ..Default::default()
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
        let store = Store::open(&root.join("gateway"))?;
        files::cleanup_stale_mounts(root);
        archive::cleanup_stale_dirs(root);
        let mut map = HashMap::new();
        for rec in store.load_containers()? {
            map.insert((rec.namespace.clone(), rec.id.clone()), rec);
        }
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            root: root.to_owned(),
            content: ContentClient::new(backends.content).max_decoding_message_size(64 << 20),
            snapshots: SnapshotsClient::new(backends.snapshots),
            tasks: TasksClient::new(backends.tasks),
            network: NetworkClient::new(backends.network),
            store,
            containers: Mutex::new(map),
            op_locks: Mutex::default(),
            events,
            event_log: events::EventLog::default(),
            images: images::ImageCache::default(),
            registry,
            registry_options: registries,
            gc_lock: tokio::sync::RwLock::new(()),
            volumes: Mutex::default(),
            volume_ops: tokio::sync::Mutex::new(()),
            metrics: Arc::default(),
        });
        inner.recover_volumes()?;
        Ok(Gateway { inner })
    }

    /// Reconciles container records with berth-tasks (after a restart of
    /// either) and watches the running ones. Runs in the background.
    pub fn spawn_recovery(&self) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            inner.restore_dangling_leases().await;
            recovery::recover(inner).await
        });
    }

    /// A tower layer for the gateway's gRPC server that counts calls and
    /// observes their latency for the metrics endpoint.
    pub fn api_metrics_layer(&self) -> ApiMetricsLayer {
        ApiMetricsLayer::new(self.inner.metrics.clone())
    }

    /// Serves Prometheus metrics (`GET /metrics`) on `addr` until
    /// `shutdown` completes. The address is bound before this returns.
    pub fn serve_metrics(
        &self,
        addr: std::net::SocketAddr,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<tokio::task::JoinHandle<()>> {
        metrics::listen(self.inner.clone(), addr, shutdown)
    }

    pub fn images_server(&self) -> ImagesServer<images::ImagesApi> {
        ImagesServer::new(images::ImagesApi(self.inner.clone())).max_decoding_message_size(64 << 20)
    }

    pub fn containers_server(&self) -> ContainersServer<containers::ContainersApi> {
        ContainersServer::new(containers::ContainersApi(self.inner.clone()))
    }

    pub fn files_server(&self) -> ContainerFilesServer<files::FilesApi> {
        ContainerFilesServer::new(files::FilesApi(self.inner.clone()))
            .max_decoding_message_size(64 << 20)
    }

    pub fn events_server(&self) -> EventsServer<events::EventsApi> {
        EventsServer::new(events::EventsApi(self.inner.clone()))
    }

    pub fn processes_server(&self) -> ContainerProcessesServer<processes::ProcessesApi> {
        ContainerProcessesServer::new(processes::ProcessesApi(self.inner.clone()))
    }

    pub fn system_server(&self) -> SystemServer<system::SystemApi> {
        SystemServer::new(system::SystemApi(self.inner.clone()))
    }

    pub fn volumes_server(&self) -> VolumesServer<volumes::VolumesApi> {
        VolumesServer::new(volumes::VolumesApi(self.inner.clone()))
    }

    pub fn networks_server(&self) -> NetworksServer<networks::NetworksApi> {
        NetworksServer::new(networks::NetworksApi(self.inner.clone()))
    }
}
