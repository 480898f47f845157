//! gRPC helpers: unix-socket servers and clients, namespaces, trace context.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use opentelemetry::propagation::{Extractor, Injector};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::codegen::http;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry;

/// Metadata key that scopes a request to a tenant namespace.
pub const NAMESPACE_KEY: &str = "berth-namespace";
/// Metadata key (trailer) that carries the exit code of a command that could
/// not be executed (127 not found, 126 not executable), from berth-tasks
/// through the gateway to clients.
pub const EXIT_CODE_KEY: &str = "berth-exit-code";
/// Namespace used when a request carries none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Errors of the plumbing itself.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("cannot bind {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid address {0}")]
    Address(String),
}

/// The namespace of a request: the `berth-namespace` metadata value, or
/// `default`. Names are `[a-z0-9][a-z0-9_.-]*`, at most 76 characters.
pub fn namespace_of<T>(req: &Request<T>) -> Result<String, Status> {
    let ns = match req.metadata().get(NAMESPACE_KEY) {
        None => return Ok(DEFAULT_NAMESPACE.to_string()),
        Some(v) => v
            .to_str()
            .map_err(|_| Status::invalid_argument("namespace is not ASCII"))?
            .to_string(),
    };
    validate_namespace(&ns)?;
    Ok(ns)
}

/// Checks a namespace name.
pub fn validate_namespace(ns: &str) -> Result<(), Status> {
    let ok = !ns.is_empty()
        && ns.len() <= 76
        && ns.as_bytes()[0].is_ascii_alphanumeric()
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "invalid namespace {ns:?}: use lower-case letters, digits, '_', '.' and '-'"
        )))
    }
}

/// Builds an outgoing request in namespace `ns`, carrying the current span's
/// trace context (W3C `traceparent`) so that one user action is one trace.
pub fn request<T>(ns: &str, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    if let Ok(v) = MetadataValue::try_from(ns) {
        req.metadata_mut().insert(NAMESPACE_KEY, v);
    }
    inject_trace_context(req.metadata_mut());
    req
}

/// Writes the current span's context into gRPC metadata.
pub fn inject_trace_context(md: &mut MetadataMap) {
    use opentelemetry::trace::TraceContextExt;
    let cx = tracing::Span::current().context();
    // Without export only a sampled trace someone else started is passed
    // on; this process starts none (see telemetry).
    if !telemetry::tracing_enabled() && !cx.span().span_context().is_sampled() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetaInjector(md))
    });
}

struct MetaInjector<'a>(&'a mut MetadataMap);

impl Injector for MetaInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// A span for one incoming RPC, child of the caller's trace when the request
/// carries a `traceparent`. Use with `Server::builder().trace_fn(rpc_span)`.
///
/// Its OpenTelemetry name is the method with dots, e.g.
/// `berth.gateway.v1.Containers.Create`, with the `rpc.*` attributes of the
/// semantic conventions; handlers fill in the berth attributes
/// ([`record_container`], [`record_image`]).
pub fn rpc_span(req: &http::Request<()>) -> tracing::Span {
    let path = req.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    let name = format!("{service}.{method}");
    let span = tracing::info_span!(
        "rpc",
        otel.name = %name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        container.id = tracing::field::Empty,
        image.name = tracing::field::Empty,
        image.digest = tracing::field::Empty,
        trace_id = tracing::field::Empty
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    let _ = span.set_parent(parent);
    record_trace_id(&span);
    tracing::debug!(parent: &span, "request");
    span
}

/// Names the container an RPC works on (span attribute `container.id`).
pub fn record_container(id: &str) {
    tracing::Span::current().record("container.id", id);
}

/// Names the image an RPC works on (span attributes `image.name` and, when
/// known, `image.digest`).
pub fn record_image(name: &str, digest: Option<&str>) {
    let span = tracing::Span::current();
    if !name.is_empty() {
        span.record("image.name", name);
    }
    if let Some(d) = digest.filter(|d| !d.is_empty()) {
        span.record("image.digest", d);
    }
}

/// Records the span's W3C trace ID as its `trace_id` field, so that log
/// lines of one user action can be matched across processes.
fn record_trace_id(span: &tracing::Span) {
    use opentelemetry::trace::TraceContextExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
    }
}

/// Makes `span` a child of the trace named by the `TRACEPARENT` environment
/// variable (W3C format), when it is set: a script or CI job can then tie a
/// `berth` command into its own trace.
pub fn parent_from_env(span: &tracing::Span) {
    let Ok(tp) = std::env::var("TRACEPARENT") else {
        return;
    };
    let mut carrier = std::collections::HashMap::new();
    carrier.insert("traceparent".to_string(), tp);
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(cx);
}

/// Binds a unix socket (replacing a stale one) that only root may use
/// (mode 0600) and returns the stream of incoming connections for
/// `Server::serve_with_incoming*`.
pub fn unix_incoming(path: &Path) -> Result<UnixListenerStream, GrpcError> {
    unix_incoming_with(path, 0o600, None)
}

/// Like [`unix_incoming`], with the socket's mode and group. The socket is
/// bound under a temporary name, given its mode and group, and renamed into
/// place, so that it is never reachable with looser permissions.
pub fn unix_incoming_with(
    path: &Path,
    mode: u32,
    gid: Option<u32>,
) -> Result<UnixListenerStream, GrpcError> {
    use std::os::unix::fs::PermissionsExt;
    let bind_err = |source| GrpcError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(bind_err)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .and_then(|()| match gid {
            Some(g) => std::os::unix::fs::chown(&tmp, None, Some(g)),
            None => Ok(()),
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(bind_err(e));
    }
    Ok(UnixListenerStream::new(listener))
}

/// The gRPC health service (grpc.health.v1) of a server, reporting
/// SERVING for the whole server ("") and for each of `services` (their
/// full names, e.g. `berth.content.v1.Content`).
pub async fn health_service(
    services: &[&str],
) -> tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService> {
    let (reporter, _) = tonic_health::server::health_reporter();
    for s in services {
        reporter
            .set_service_status(*s, tonic_health::ServingStatus::Serving)
            .await;
    }
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(reporter),
    )
}

/// A channel to a gRPC server on a unix socket. The connection is made
/// lazily (on first use) and re-made after failures, so a restarted service
/// is found again.
pub fn connect_unix(path: impl Into<PathBuf>) -> Channel {
    let path: PathBuf = path.into();
    // The URI is required by the API but unused by the connector.
    Endpoint::from_static("http://localhost")
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
}

/// A channel to a gateway on TCP (`host:port`), with TLS when `tls` is
/// given. Lazy like [`connect_unix`].
pub fn connect_tcp(
    host_port: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<Channel, GrpcError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let bad = |e: &dyn std::fmt::Display| GrpcError::Address(format!("tcp://{host_port}: {e}"));
    let mut ep = Endpoint::from_shared(format!("{scheme}://{host_port}"))
        .map_err(|e| bad(&e))?
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .connect_timeout(std::time::Duration::from_secs(10));
    if let Some(tls) = tls {
        ep = ep.tls_config(tls).map_err(|e| bad(&e))?;
    }
    Ok(ep.connect_lazy())
}

/// Where a client finds the gateway: `-H`/`BERTH_HOST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAddr {
    /// `unix:///path` or `/path`.
    Unix(PathBuf),
    /// `tcp://host:port`, as `host:port`.
    Tcp(String),
}

impl std::fmt::Display for HostAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostAddr::Unix(p) => write!(f, "unix://{}", p.display()),
            HostAddr::Tcp(h) => write!(f, "tcp://{h}"),
        }
    }
}

/// Parses `unix:///path`, `/path` or `tcp://host:port` (port required,
/// IPv6 hosts in brackets).
pub fn parse_host(addr: &str) -> Result<HostAddr, GrpcError> {
    if let Some(rest) = addr.strip_prefix("tcp://") {
        let rest = rest.trim_end_matches('/');
        let port_ok = rest
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
        if !port_ok || rest.contains('/') {
            return Err(GrpcError::Address(format!(
                "{addr}: expected tcp://host:port"
            )));
        }
        return Ok(HostAddr::Tcp(rest.to_string()));
    }
    if addr.contains("://") && !addr.starts_with("unix://") {
        return Err(GrpcError::Address(format!(
            "{addr}: expected unix:///path or tcp://host:port"
        )));
    }
    parse_unix_addr(addr).map(HostAddr::Unix)
}

/// HTTP/2 flow-control window of one stream. hyper's defaults (1 MiB per
/// stream and per connection on the server side) make a layer upload wait
/// for window updates, and let three concurrent uploads on one connection
/// starve each other; the peers here are local, so the windows can be wide.
pub const STREAM_WINDOW: u32 = 8 << 20;
/// HTTP/2 flow-control window of a whole connection.
pub const CONNECTION_WINDOW: u32 = 32 << 20;

/// A server builder for berth's services: the flow-control windows above
/// and a span per RPC ([`rpc_span`]).
pub fn server() -> tonic::transport::Server<tower::layer::util::Identity> {
    tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .trace_fn(rpc_span)
}

/// Parses an address of the form `unix:///path` or `/path`.
pub fn parse_unix_addr(addr: &str) -> Result<PathBuf, GrpcError> {
    let p = addr.strip_prefix("unix://").unwrap_or(addr);
    if p.starts_with('/') {
        Ok(PathBuf::from(p))
    } else {
        Err(GrpcError::Address(format!(
            "{addr}: expected unix:///absolute/path"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        assert!(validate_namespace("default").is_ok());
        assert!(validate_namespace("a-b.c_1").is_ok());
        assert!(validate_namespace("").is_err());
        assert!(validate_namespace("Upper").is_err());
        assert!(validate_namespace("../x").is_err());
        let req = Request::new(());
        assert_eq!(namespace_of(&req).unwrap(), "default");
        let req = request("team1", ());
        assert_eq!(namespace_of(&req).unwrap(), "team1");
    }

    #[test]
    fn unix_addrs() {
        assert_eq!(
            parse_unix_addr("unix:///run/b.sock").unwrap(),
            PathBuf::from("/run/b.sock")
        );
        assert!(parse_unix_addr("tcp://x:1").is_err());
    }

    #[test]
    fn hosts() {
        assert_eq!(
            parse_host("unix:///run/b.sock").unwrap(),
            HostAddr::Unix("/run/b.sock".into())
        );
        assert_eq!(
            parse_host("tcp://10.0.0.1:2376").unwrap(),
            HostAddr::Tcp("10.0.0.1:2376".into())
        );
        assert_eq!(
            parse_host("tcp://[::1]:2376/").unwrap(),
            HostAddr::Tcp("[::1]:2376".into())
        );
        assert_eq!(
            parse_host("tcp://h:1").unwrap().to_string(),
            "tcp://h:1".to_string()
        );
        for bad in [
            "tcp://h",
            "tcp://h:0",
            "tcp://:1",
            "tcp://h:x",
            "http://h:1",
            "rel/x",
        ] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }
    }
}
