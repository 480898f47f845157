//! Connection to the gateway and docker-style error reporting.

use std::error::Error as _;

use berth_proto::gateway::v1::container_files_client::ContainerFilesClient;
use berth_proto::gateway::v1::container_processes_client::ContainerProcessesClient;
use berth_proto::gateway::v1::containers_client::ContainersClient;
use berth_proto::gateway::v1::events_client::EventsClient;
use berth_proto::gateway::v1::images_client::ImagesClient;
use berth_proto::gateway::v1::networks_client::NetworksClient;
use berth_proto::gateway::v1::system_client::SystemClient;
use berth_proto::gateway::v1::volumes_client::VolumesClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Trailer carrying the exit code for a command that cannot be executed.
pub use berth_common::EXIT_CODE_KEY;

/// What every command needs: the gateway channel and the namespace.
#[derive(Clone)]
pub struct Ctx {
    pub host: String,
    pub namespace: String,
    channel: Channel,
}

impl Ctx {
    pub fn new(host: String, namespace: String, channel: Channel) -> Self {
        Ctx {
            host,
            namespace,
            channel,
        }
    }

    /// A request in our namespace carrying the current trace context.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        berth_common::request(&self.namespace, msg)
    }

    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }

    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    pub fn processes(&self) -> ContainerProcessesClient<Channel> {
        ContainerProcessesClient::new(self.channel.clone())
    }

    pub fn files(&self) -> ContainerFilesClient<Channel> {
        ContainerFilesClient::new(self.channel.clone())
    }

    pub fn events(&self) -> EventsClient<Channel> {
        EventsClient::new(self.channel.clone())
    }

    pub fn system(&self) -> SystemClient<Channel> {
        SystemClient::new(self.channel.clone())
    }

    pub fn volumes(&self) -> VolumesClient<Channel> {
        VolumesClient::new(self.channel.clone())
    }

    pub fn networks(&self) -> NetworksClient<Channel> {
        NetworksClient::new(self.channel.clone())
    }

    /// The line docker prints for a failed API call: "Cannot connect ..."
    /// when the daemon is not there, else "Error response from daemon: ...".
    pub fn describe(&self, status: &Status) -> String {
        if is_connect_error(status) && permission_denied(status) {
            format!(
                "permission denied while trying to connect to the berth daemon socket at {}: \
                 connect: permission denied",
                self.host
            )
        } else if is_connect_error(status) {
            match (self.host.starts_with("tcp://"), deepest_cause(status)) {
                // A remote daemon may be there and refuse us (TLS): say why.
                (true, Some(cause)) => format!("{} ({cause})", self.cannot_connect()),
                _ => self.cannot_connect(),
            }
        } else {
            format!("Error response from daemon: {}", status.message())
        }
    }

    pub fn cannot_connect(&self) -> String {
        format!(
            "Cannot connect to the berth daemon at {}. Is the berth daemon running?",
            self.host
        )
    }
}

/// Whether a transport failure is the socket's permissions refusing us.
fn permission_denied(status: &Status) -> bool {
    let mut src = status.source();
    while let Some(e) = src {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::PermissionDenied {
                return true;
            }
        }
        src = e.source();
    }
    false
}

/// The innermost error under a transport failure, e.g. the TLS alert.
fn deepest_cause(status: &Status) -> Option<String> {
    let mut src = status.source();
    let mut last = None;
    while let Some(e) = src {
        last = Some(e.to_string());
        src = e.source();
    }
    last
}

/// Whether the call failed because no connection could be made (as opposed
/// to an error answered by the daemon).
pub fn is_connect_error(status: &Status) -> bool {
    // Cancelled: a TLS peer that closes the connection after the handshake
    // (TLS 1.3 servers check the client certificate then).
    if !matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    ) {
        return false;
    }
    // Transport failures carry the transport error (or an I/O error) as
    // their source; errors sent by the daemon have none.
    let mut src = status.source();
    while let Some(e) = src {
        if e.is::<tonic::transport::Error>() || e.is::<std::io::Error>() {
            return true;
        }
        src = e.source();
    }
    false
}

/// The exit code carried by a failed Start (`berth-exit-code`), if any.
pub fn exit_code_of(status: &Status) -> Option<i32> {
    status
        .metadata()
        .get(EXIT_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}
