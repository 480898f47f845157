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
    let cx = tracing::Span::current().context();
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
pub fn rpc_span(req: &http::Request<()>) -> tracing::Span {
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    let span = tracing::info_span!(
        "rpc",
        rpc.method = %req.uri().path(),
        otel.kind = "server",
        trace_id = tracing::field::Empty
    );
    let _ = span.set_parent(parent);
    record_trace_id(&span);
    tracing::debug!(parent: &span, "request");
    span
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

/// Binds a unix socket (replacing a stale one) and returns the stream of
/// incoming connections for `Server::serve_with_incoming*`.
pub fn unix_incoming(path: &Path) -> Result<UnixListenerStream, GrpcError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| GrpcError::Bind {
            path: path.to_owned(),
            source,
        })?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(GrpcError::Bind {
                path: path.to_owned(),
                source,
            })
        }
    }
    let listener = UnixListener::bind(path).map_err(|source| GrpcError::Bind {
        path: path.to_owned(),
        source,
    })?;
    Ok(UnixListenerStream::new(listener))
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
}
