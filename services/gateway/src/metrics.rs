//! Prometheus metrics of the gateway, served as text (format 0.0.4) on
//! `GET /metrics` of berthd's `--metrics-addr`.
//!
//! - API calls: a tower layer on the gateway's gRPC server counts every
//!   call by method and status code and observes its latency. The call is
//!   recorded when its response starts: for a unary call that is when the
//!   handler has finished, so the latency is the whole call; for a
//!   server-streaming call (logs, events, stats, attach, exec, pull) it is
//!   the time until the stream was set up and its code is the one the
//!   stream opened with (an error sent later inside the stream is not
//!   counted), so that a `logs -f` open for hours neither stays uncounted
//!   nor fills the top bucket. A call the client abandons before the
//!   response is counted as `Canceled`.
//! - Containers by state, images, bytes downloaded by pulls.
//! - Per running container, cAdvisor's metrics, read at scrape time from
//!   berth-tasks (the same readers as `berth stats`), one StatsBatch call
//!   per namespace; a container that stops during the scrape is left out
//!   of it, the rest are still reported.

mod text;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use berth_common::request;
use berth_proto::tasks::v1::{StatsBatchRequest, TaskStats};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{http, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tonic::Code;
use tracing::{debug, warn};

pub use text::CONTENT_TYPE;
use text::{Exposition, Histogram, Kind};

use crate::Inner;

/// Latency buckets of API calls, in seconds: from cache hits (inspect,
/// list) to pulls of large images.
static API_BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// The containers of a namespace are left out of a scrape when their
/// stats take longer than this.
const BATCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Without StatsBatch: Stats requests in flight at once, and how long one
/// container may take.
const STATS_CONCURRENCY: usize = 32;
const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters kept between scrapes.
#[derive(Default)]
pub(crate) struct Metrics {
    api: Mutex<ApiMetrics>,
    pull_bytes: AtomicU64,
}

#[derive(Default)]
struct ApiMetrics {
    calls: BTreeMap<(String, &'static str), u64>,
    latency: BTreeMap<String, Histogram>,
}

impl Metrics {
    /// Records one finished API call.
    pub(crate) fn observe_call(&self, path: &str, code: Code, seconds: f64) {
        let method = method_label(path, code);
        let mut api = self.api.lock().unwrap();
        *api.calls
            .entry((method.to_string(), code_name(code)))
            .or_default() += 1;
        api.latency
            .entry(method.to_string())
            .or_insert_with(|| Histogram::new(&API_BUCKETS))
            .observe(seconds);
    }

    /// Counts bytes a pull received from a registry.
    pub(crate) fn add_pull_bytes(&self, n: u64) {
        self.pull_bytes.fetch_add(n, Ordering::Relaxed);
    }
}

/// The method label of a call: its gRPC path (`/package.Service/Method`),
/// or `other` for paths that name no method (which would let any client
/// create series at will).
fn method_label(path: &str, code: Code) -> &str {
    let valid = path.len() <= 200
        && path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .is_some_and(|(svc, m)| {
                !svc.is_empty()
                    && !m.is_empty()
                    && svc
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
                    && m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
    if valid && code != Code::Unimplemented {
        path
    } else {
        "other"
    }
}

/// gRPC's names of the status codes, as other gRPC metrics spell them.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The status a gRPC response starts with: `grpc-status` in its headers
/// (a call that failed before any message), else OK when HTTP says so.
fn response_code<B>(resp: &http::Response<B>) -> Code {
    match resp.headers().get("grpc-status") {
        Some(v) => Code::from_bytes(v.as_bytes()),
        None if resp.status() == http::StatusCode::OK => Code::Ok,
        None => Code::Unknown,
    }
}

/// A tower layer for the gateway's gRPC server that records every call in
/// [`Metrics`].
#[derive(Clone)]
pub struct ApiMetricsLayer {
    metrics: Arc<Metrics>,
}

impl ApiMetricsLayer {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        ApiMetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for ApiMetricsLayer {
    type Service = ApiMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`ApiMetricsLayer`].
#[derive(Clone)]
pub struct ApiMetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// Records the call when dropped: with the code set by the response, or
/// as Canceled when the client went away first.
struct CallRecord {
    metrics: Arc<Metrics>,
    path: String,
    started: Instant,
    code: Code,
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.metrics
            .observe_call(&self.path, self.code, self.started.elapsed().as_secs_f64());
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for ApiMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let record = CallRecord {
            metrics: self.metrics.clone(),
            path: req.uri().path().to_string(),
            started: Instant::now(),
            code: Code::Cancelled,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            // The whole record moves in (not just its code), so that it is
            // dropped, and the call recorded, when this future is.
            let mut record = record;
            let r = fut.await;
            record.code = match &r {
                Ok(resp) => response_code(resp),
                Err(_) => Code::Unknown,
            };
            r
        })
    }
}

/// The docker states a container can be in.
const STATES: [&str; 7] = [
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "exited",
    "dead",
];

/// What a scrape needs of a container record.
struct Seen {
    ns: String,
    id: String,
    name: String,
    image: String,
    status: String,
    started_at: String,
    oom_kills: u32,
}

/// The per-container families: (name, help, kind), in output order.
const CONTAINER_FAMILIES: &[(&str, &str, Kind)] = &[
    (
        "container_cpu_usage_seconds_total",
        "CPU time the container used, in seconds.",
        Kind::Counter,
    ),
    (
        "container_cpu_user_seconds_total",
        "CPU time the container used in user mode, in seconds.",
        Kind::Counter,
    ),
    (
        "container_cpu_system_seconds_total",
        "CPU time the container used in kernel mode, in seconds.",
        Kind::Counter,
    ),
    (
        "container_memory_usage_bytes",
        "Memory the container's cgroup uses, page cache included, in bytes.",
        Kind::Gauge,
    ),
    (
        "container_memory_working_set_bytes",
        "Memory usage less inactive file pages, in bytes.",
        Kind::Gauge,
    ),
    (
        "container_memory_rss",
        "Anonymous memory (RSS) of the container, in bytes.",
        Kind::Gauge,
    ),
    (
        "container_memory_cache",
        "Page cache of the container, in bytes.",
        Kind::Gauge,
    ),
    (
        "container_spec_memory_limit_bytes",
        "The container's memory limit in bytes; 0 when it has none.",
        Kind::Gauge,
    ),
    (
        "container_network_receive_bytes_total",
        "Bytes the interface received.",
        Kind::Counter,
    ),
    (
        "container_network_receive_packets_total",
        "Packets the interface received.",
        Kind::Counter,
    ),
    (
        "container_network_receive_packets_dropped_total",
        "Packets the interface dropped on receive.",
        Kind::Counter,
    ),
    (
        "container_network_receive_errors_total",
        "Receive errors of the interface.",
        Kind::Counter,
    ),
    (
        "container_network_transmit_bytes_total",
        "Bytes the interface sent.",
        Kind::Counter,
    ),
    (
        "container_network_transmit_packets_total",
        "Packets the interface sent.",
        Kind::Counter,
    ),
    (
        "container_network_transmit_packets_dropped_total",
        "Packets the interface dropped on send.",
        Kind::Counter,
    ),
    (
        "container_network_transmit_errors_total",
        "Send errors of the interface.",
        Kind::Counter,
    ),
    (
        "container_fs_reads_bytes_total",
        "Bytes the container read from the block device.",
        Kind::Counter,
    ),
    (
        "container_fs_writes_bytes_total",
        "Bytes the container wrote to the block device.",
        Kind::Counter,
    ),
    (
        "container_fs_reads_total",
        "Reads from the block device completed for the container.",
        Kind::Counter,
    ),
    (
        "container_fs_writes_total",
        "Writes to the block device completed for the container.",
        Kind::Counter,
    ),
    (
        "container_processes",
        "Processes in the container.",
        Kind::Gauge,
    ),
    (
        "container_threads",
        "Threads (tasks) in the container.",
        Kind::Gauge,
    ),
    (
        "container_oom_events_total",
        "Processes of the container the OOM killer killed in its current run.",
        Kind::Counter,
    ),
    (
        "container_start_time_seconds",
        "When the container last started, in seconds since the epoch.",
        Kind::Gauge,
    ),
];

/// Everything one scrape found, rendered by [`render`].
pub(crate) struct Snapshot {
    /// Containers by (namespace, state).
    states: BTreeMap<(String, &'static str), u64>,
    /// Images by namespace; a namespace whose images could not be listed
    /// is missing.
    images: BTreeMap<String, u64>,
    /// Running containers with their stats, in (namespace, name) order.
    stats: Vec<(Seen, TaskStats)>,
    /// Containers whose stats could not be read (other than because they
    /// stopped).
    stats_errors: u64,
    pull_bytes: u64,
    api_calls: BTreeMap<(String, &'static str), u64>,
    api_latency: BTreeMap<String, Histogram>,
    seconds: f64,
}

impl Inner {
    /// Gathers the numbers of one scrape: the stats of all running
    /// containers at once, and the image counts, side by side.
    pub(crate) async fn snapshot(&self) -> Snapshot {
        let started = Instant::now();
        let seen: Vec<Seen> = self
            .containers
            .lock()
            .unwrap()
            .values()
            .map(|c| Seen {
                ns: c.namespace.clone(),
                id: c.id.clone(),
                name: c.name.clone(),
                image: c.config.image.clone(),
                status: c.state.status.clone(),
                started_at: c.state.started_at.clone(),
                oom_kills: c.state.oom_kills,
            })
            .collect();
        let mut namespaces: BTreeSet<String> = seen.iter().map(|c| c.ns.clone()).collect();
        namespaces.insert(berth_common::DEFAULT_NAMESPACE.to_string());
        namespaces.extend(
            self.volumes
                .lock()
                .unwrap()
                .keys()
                .map(|(ns, _)| ns.clone()),
        );
        let mut states = BTreeMap::new();
        for ns in &namespaces {
            for s in STATES {
                states.insert((ns.clone(), s), 0);
            }
        }
        for c in &seen {
            let state = STATES
                .iter()
                .find(|s| **s == c.status)
                .copied()
                .unwrap_or("dead");
            *states.entry((c.ns.clone(), state)).or_default() += 1;
        }

        let mut running: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
        for c in seen {
            if c.status == "running" || c.status == "paused" {
                running.entry(c.ns.clone()).or_default().push(c);
            }
        }
        let stats = futures::future::join_all(
            running
                .into_iter()
                .map(|(ns, cs)| self.namespace_stats(ns, cs)),
        );
        let images = futures::future::join_all(
            namespaces
                .iter()
                .map(|ns| async move { (ns.clone(), self.image_count(ns).await) }),
        );
        let (stats, images) = tokio::join!(stats, images);

        let mut stats_errors = 0;
        let mut all = Vec::new();
        for (found, errors) in stats {
            all.extend(found);
            stats_errors += errors;
        }
        all.sort_by(|(a, _), (b, _)| (&a.ns, &a.name, &a.id).cmp(&(&b.ns, &b.name, &b.id)));
        let stats = all;
        let images = images
            .into_iter()
            .filter_map(|(ns, r)| match r {
                Ok(n) => Some((ns, n)),
                Err(e) => {
                    debug!(ns, "metrics: images not counted: {e}");
                    None
                }
            })
            .collect();
        let (api_calls, api_latency) = {
            let api = self.metrics.api.lock().unwrap();
            (api.calls.clone(), api.latency.clone())
        };
        Snapshot {
            states,
            images,
            stats,
            stats_errors,
            pull_bytes: self.metrics.pull_bytes.load(Ordering::Relaxed),
            api_calls,
            api_latency,
            seconds: started.elapsed().as_secs_f64(),
        }
    }

    /// The stats of a namespace's running containers in one StatsBatch
    /// call; those that stopped meanwhile are left out. With a berth-tasks
    /// that has no StatsBatch (an older one, in split mode), one Stats call
    /// per container, several at once. Also returns how many containers
    /// could not be read.
    async fn namespace_stats(&self, ns: String, cs: Vec<Seen>) -> (Vec<(Seen, TaskStats)>, u64) {
        let ids = cs.iter().map(|c| c.id.clone()).collect();
        let mut tasks = self.tasks.clone();
        let call = tasks.stats_batch(request(&ns, StatsBatchRequest { ids }));
        match tokio::time::timeout(BATCH_TIMEOUT, call).await {
            Ok(Ok(r)) => {
                let mut got = r.into_inner().stats;
                let found = cs
                    .into_iter()
                    .filter_map(|c| {
                        let s = got.remove(&c.id)?;
                        Some((c, s))
                    })
                    .collect();
                (found, 0)
            }
            Ok(Err(st)) if st.code() == Code::Unimplemented => self.stats_one_by_one(cs).await,
            Ok(Err(st)) => {
                warn!(ns, "metrics: no stats from berth-tasks: {st}");
                (Vec::new(), cs.len() as u64)
            }
            Err(_) => {
                warn!(
                    ns,
                    "metrics: berth-tasks took over {BATCH_TIMEOUT:?} for the stats"
                );
                (Vec::new(), cs.len() as u64)
            }
        }
    }

    async fn stats_one_by_one(&self, cs: Vec<Seen>) -> (Vec<(Seen, TaskStats)>, u64) {
        let results = futures::stream::iter(cs)
            .map(|c| async move {
                let r = tokio::time::timeout(STATS_TIMEOUT, self.task_stats(&c.ns, &c.id)).await;
                (c, r)
            })
            .buffered(STATS_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut errors = 0;
        let found = results
            .into_iter()
            .filter_map(|(c, r)| match r {
                Ok(Ok(Some(s))) => Some((c, s)),
                // Stopped meanwhile: not running, nothing to report.
                Ok(Ok(None)) => None,
                Ok(Err(e)) => {
                    debug!(id = %c.id, "metrics: no stats: {e}");
                    errors += 1;
                    None
                }
                Err(_) => {
                    warn!(id = %c.id, "metrics: the stats of the container took over {STATS_TIMEOUT:?}");
                    errors += 1;
                    None
                }
            })
            .collect();
        (found, errors)
    }

    /// The images of a namespace as `berth images -a` counts them: one
    /// per manifest, named or dangling.
    async fn image_count(&self, ns: &str) -> crate::error::Result<u64> {
        let mut digests: BTreeSet<String> = self
            .image_records(ns)
            .await?
            .into_iter()
            .filter_map(|r| r.target.map(|t| t.digest))
            .collect();
        digests.extend(self.store.dangling(ns)?.into_iter().map(|d| d.digest));
        Ok(digests.len() as u64)
    }
}

/// The text of a scrape.
pub(crate) fn render(s: &Snapshot) -> String {
    let mut e = Exposition::default();
    e.family(
        "berth_build_info",
        "berthd's version; always 1.",
        Kind::Gauge,
    )
    .int(&[("version", env!("CARGO_PKG_VERSION"))], 1);
    let f = e.family(
        "berth_containers",
        "Containers by namespace and state.",
        Kind::Gauge,
    );
    for ((ns, state), n) in &s.states {
        f.int(&[("namespace", ns), ("state", state)], *n);
    }
    let f = e.family(
        "berth_images",
        "Images by namespace (one per manifest, named or dangling).",
        Kind::Gauge,
    );
    for (ns, n) in &s.images {
        f.int(&[("namespace", ns)], *n);
    }
    e.family(
        "berth_pull_bytes_total",
        "Bytes pulls received from registries (manifests, configs, layers).",
        Kind::Counter,
    )
    .int(&[], s.pull_bytes);
    let f = e.family(
        "berth_api_requests_total",
        "gRPC calls to the gateway by method and status code, counted when the response starts.",
        Kind::Counter,
    );
    for ((method, code), n) in &s.api_calls {
        f.int(&[("method", method), ("code", code)], *n);
    }
    let f = e.family(
        "berth_api_request_duration_seconds",
        "Time until a gRPC call's response starts: the whole call when unary, the set-up when streaming.",
        Kind::Histogram,
    );
    for (method, h) in &s.api_latency {
        f.histogram(&[("method", method)], h);
    }
    e.family(
        "berth_scrape_stats_errors",
        "Running containers whose stats this scrape could not read.",
        Kind::Gauge,
    )
    .int(&[], s.stats_errors);
    e.family(
        "berth_scrape_duration_seconds",
        "Time this scrape took to gather its numbers.",
        Kind::Gauge,
    )
    .float(&[], s.seconds);

    for (name, help, kind) in CONTAINER_FAMILIES {
        e.family(name, help, *kind);
    }
    for (c, t) in &s.stats {
        let base = [
            ("id", c.id.as_str()),
            ("image", c.image.as_str()),
            ("name", c.name.as_str()),
            ("namespace", c.ns.as_str()),
        ];
        let with = |k: &'static str, v: &'static str| {
            let mut l = base.to_vec();
            l.push((k, v));
            l
        };
        let secs = |ns: u64| ns as f64 / 1e9;
        let mut put = |name: &'static str, labels: &[(&str, &str)], v: f64| {
            let (_, help, kind) = CONTAINER_FAMILIES
                .iter()
                .find(|(n, _, _)| *n == name)
                .expect("a declared family");
            e.family(name, help, *kind).float(labels, v);
        };
        put(
            "container_cpu_usage_seconds_total",
            &with("cpu", "total"),
            secs(t.cpu_total_ns),
        );
        put(
            "container_cpu_user_seconds_total",
            &base,
            secs(t.cpu_user_ns),
        );
        put(
            "container_cpu_system_seconds_total",
            &base,
            secs(t.cpu_system_ns),
        );
        put("container_memory_usage_bytes", &base, t.memory_usage as f64);
        put(
            "container_memory_working_set_bytes",
            &base,
            t.memory_working_set as f64,
        );
        put("container_memory_rss", &base, t.memory_rss as f64);
        put("container_memory_cache", &base, t.memory_cache as f64);
        put(
            "container_spec_memory_limit_bytes",
            &base,
            t.memory_cgroup_limit as f64,
        );
        for i in &t.interfaces {
            let mut l = base.to_vec();
            l.push(("interface", i.name.as_str()));
            for (name, v) in [
                ("container_network_receive_bytes_total", i.rx_bytes),
                ("container_network_receive_packets_total", i.rx_packets),
                (
                    "container_network_receive_packets_dropped_total",
                    i.rx_dropped,
                ),
                ("container_network_receive_errors_total", i.rx_errors),
                ("container_network_transmit_bytes_total", i.tx_bytes),
                ("container_network_transmit_packets_total", i.tx_packets),
                (
                    "container_network_transmit_packets_dropped_total",
                    i.tx_dropped,
                ),
                ("container_network_transmit_errors_total", i.tx_errors),
            ] {
                put(name, &l, v as f64);
            }
        }
        for d in &t.block_devices {
            let mut l = base.to_vec();
            l.push(("device", d.device.as_str()));
            for (name, v) in [
                ("container_fs_reads_bytes_total", d.read_bytes),
                ("container_fs_writes_bytes_total", d.write_bytes),
                ("container_fs_reads_total", d.reads),
                ("container_fs_writes_total", d.writes),
            ] {
                put(name, &l, v as f64);
            }
        }
        put("container_processes", &base, t.processes as f64);
        put("container_threads", &base, t.pids as f64);
        put("container_oom_events_total", &base, c.oom_kills as f64);
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(&c.started_at) {
            put(
                "container_start_time_seconds",
                &base,
                at.timestamp_millis() as f64 / 1000.0,
            );
        }
    }
    e.render()
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub(crate) async fn serve(
    inner: Arc<Inner>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: pass.
                    warn!("metrics: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(inner.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                debug!(%peer, "metrics connection: {e}");
            }
        });
    }
}

/// Binds `addr` now (so that a taken port fails berthd's start) and
/// serves the metrics on it in the background.
pub(crate) fn listen(
    inner: Arc<Inner>,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    tracing::info!(addr = %listener.local_addr()?, "serving metrics");
    Ok(tokio::spawn(serve(inner, listener, shutdown)))
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/metrics" {
        return Ok(plain(StatusCode::NOT_FOUND, "404 page not found\n"));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return Ok(r);
    }
    let gzip = req
        .headers()
        .get_all(hyper::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| e.split(';').next().unwrap_or("").trim() == "gzip");
    let text = render(&inner.snapshot().await);
    let mut body = text.into_bytes();
    if gzip {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::fast(),
        );
        if enc.write_all(&body).is_ok() {
            if let Ok(z) = enc.finish() {
                body = z;
            } else {
                return Ok(ungzipped_error());
            }
        } else {
            return Ok(ungzipped_error());
        }
    }
    let mut r = Response::new(Full::new(Bytes::from(body)));
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    if gzip {
        h.insert(
            hyper::header::CONTENT_ENCODING,
            hyper::header::HeaderValue::from_static("gzip"),
        );
    }
    Ok(r)
}

fn ungzipped_error() -> Response<Full<Bytes>> {
    plain(
        StatusCode::INTERNAL_SERVER_ERROR,
        "compressing the metrics failed\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(name: &str) -> Seen {
        Seen {
            ns: "default".into(),
            id: format!("{name}-id"),
            name: name.into(),
            image: "busybox:latest".into(),
            status: "running".into(),
            started_at: "2024-05-01T10:00:00.5Z".into(),
            oom_kills: 1,
        }
    }

    #[test]
    fn method_labels_are_bounded() {
        let m = "/berth.gateway.v1.Containers/Create";
        assert_eq!(method_label(m, Code::Ok), m);
        assert_eq!(method_label(m, Code::NotFound), m);
        assert_eq!(method_label(m, Code::Unimplemented), "other");
        assert_eq!(method_label("/", Code::Ok), "other");
        assert_eq!(method_label("/a/b/c", Code::Ok), "other");
        assert_eq!(method_label("/a\"b/c", Code::Ok), "other");
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check", Code::Ok),
            "/grpc.health.v1.Health/Check"
        );
    }

    #[test]
    fn api_calls_are_counted_by_method_and_code() {
        let m = Metrics::default();
        let create = "/berth.gateway.v1.Containers/Create";
        m.observe_call(create, Code::Ok, 0.002);
        m.observe_call(create, Code::Ok, 0.2);
        m.observe_call(create, Code::AlreadyExists, 0.001);
        m.observe_call("/nope", Code::Unimplemented, 0.0001);
        let api = m.api.lock().unwrap();
        assert_eq!(api.calls[&(create.to_string(), "OK")], 2);
        assert_eq!(api.calls[&(create.to_string(), "AlreadyExists")], 1);
        assert_eq!(api.calls[&("other".to_string(), "Unimplemented")], 1);
        assert_eq!(api.latency[create].count(), 3);
    }

    #[tokio::test]
    async fn the_layer_records_calls_when_their_response_starts() {
        use tower::{Layer, Service, ServiceExt};
        let metrics = Arc::new(Metrics::default());
        let mut svc = ApiMetricsLayer::new(metrics.clone()).layer(tower::service_fn(
            |req: http::Request<()>| async move {
                let mut resp = http::Response::new(());
                match req.uri().path() {
                    "/p.S/Missing" => {
                        resp.headers_mut()
                            .insert("grpc-status", http::HeaderValue::from_static("5"));
                    }
                    "/p.S/Slow" => std::future::pending::<()>().await,
                    _ => {}
                }
                Ok::<_, Infallible>(resp)
            },
        ));
        let call = |path: &str| http::Request::builder().uri(path).body(()).unwrap();
        svc.ready()
            .await
            .unwrap()
            .call(call("/p.S/Get"))
            .await
            .unwrap();
        svc.ready()
            .await
            .unwrap()
            .call(call("/p.S/Get"))
            .await
            .unwrap();
        svc.ready()
            .await
            .unwrap()
            .call(call("/p.S/Missing"))
            .await
            .unwrap();
        // Abandoned before its response: Canceled.
        let slow = svc.ready().await.unwrap().call(call("/p.S/Slow"));
        assert!(tokio::time::timeout(Duration::from_millis(10), slow)
            .await
            .is_err());
        let api = metrics.api.lock().unwrap();
        let n = |m: &str, c| api.calls.get(&(m.to_string(), c)).copied();
        assert_eq!(n("/p.S/Get", "OK"), Some(2));
        assert_eq!(n("/p.S/Missing", "NotFound"), Some(1));
        assert_eq!(n("/p.S/Slow", "Canceled"), Some(1));
        assert_eq!(api.latency["/p.S/Get"].count(), 2);
    }

    #[test]
    fn response_codes() {
        let ok = http::Response::new(());
        assert_eq!(response_code(&ok), Code::Ok);
        let mut failed = http::Response::new(());
        failed
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(response_code(&failed), Code::NotFound);
        let mut bad = http::Response::new(());
        *bad.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
        assert_eq!(response_code(&bad), Code::Unknown);
    }

    #[test]
    fn rendering() {
        let mut states = BTreeMap::new();
        for s in STATES {
            states.insert(("default".to_string(), s), 0);
        }
        states.insert(("default".to_string(), "running"), 1);
        let mut latency = BTreeMap::new();
        let mut h = Histogram::new(&API_BUCKETS);
        h.observe(0.003);
        latency.insert("/berth.gateway.v1.Containers/Create".to_string(), h);
        let stats = TaskStats {
            cpu_total_ns: 1_500_000_000,
            cpu_user_ns: 1_000_000_000,
            cpu_system_ns: 500_000_000,
            memory_usage: 4096,
            memory_working_set: 2048,
            memory_cgroup_limit: 0,
            pids: 3,
            processes: 2,
            interfaces: vec![berth_proto::tasks::v1::InterfaceStats {
                name: "eth0".into(),
                rx_bytes: 100,
                tx_packets: 2,
                ..Default::default()
            }],
            block_devices: vec![berth_proto::tasks::v1::BlockDeviceStats {
                major: 254,
                minor: 0,
                device: "/dev/vda".into(),
                read_bytes: 512,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut weird = seen("we\"ird");
        weird.image = "a\\b".into();
        let snap = Snapshot {
            states,
            images: [("default".to_string(), 2)].into_iter().collect(),
            stats: vec![(seen("web"), stats.clone()), (weird, stats)],
            stats_errors: 0,
            pull_bytes: 12345,
            api_calls: [(("/berth.gateway.v1.Containers/Create".to_string(), "OK"), 1)]
                .into_iter()
                .collect(),
            api_latency: latency,
            seconds: 0.01,
        };
        let text = render(&snap);
        let base = r#"id="web-id",image="busybox:latest",name="web",namespace="default""#;
        for want in [
            "# TYPE berth_containers gauge\n".to_string(),
            "berth_containers{namespace=\"default\",state=\"running\"} 1\n".into(),
            "berth_containers{namespace=\"default\",state=\"exited\"} 0\n".into(),
            "berth_images{namespace=\"default\"} 2\n".into(),
            "# TYPE berth_pull_bytes_total counter\nberth_pull_bytes_total 12345\n".into(),
            "berth_api_requests_total{method=\"/berth.gateway.v1.Containers/Create\",code=\"OK\"} 1\n".into(),
            "# TYPE berth_api_request_duration_seconds histogram\n".into(),
            "berth_api_request_duration_seconds_bucket{method=\"/berth.gateway.v1.Containers/Create\",le=\"0.0025\"} 0\n".into(),
            "berth_api_request_duration_seconds_bucket{method=\"/berth.gateway.v1.Containers/Create\",le=\"0.005\"} 1\n".into(),
            "berth_api_request_duration_seconds_bucket{method=\"/berth.gateway.v1.Containers/Create\",le=\"+Inf\"} 1\n".into(),
            "berth_api_request_duration_seconds_count{method=\"/berth.gateway.v1.Containers/Create\"} 1\n".into(),
            "# TYPE container_cpu_usage_seconds_total counter\n".into(),
            format!("container_cpu_usage_seconds_total{{{base},cpu=\"total\"}} 1.5\n"),
            format!("container_cpu_user_seconds_total{{{base}}} 1\n"),
            format!("container_cpu_system_seconds_total{{{base}}} 0.5\n"),
            "# TYPE container_memory_usage_bytes gauge\n".into(),
            format!("container_memory_usage_bytes{{{base}}} 4096\n"),
            format!("container_memory_working_set_bytes{{{base}}} 2048\n"),
            format!("container_spec_memory_limit_bytes{{{base}}} 0\n"),
            format!("container_network_receive_bytes_total{{{base},interface=\"eth0\"}} 100\n"),
            format!("container_network_transmit_packets_total{{{base},interface=\"eth0\"}} 2\n"),
            format!("container_fs_reads_bytes_total{{{base},device=\"/dev/vda\"}} 512\n"),
            format!("container_processes{{{base}}} 2\n"),
            format!("container_threads{{{base}}} 3\n"),
            format!("container_oom_events_total{{{base}}} 1\n"),
            format!("container_start_time_seconds{{{base}}} 1714557600.5\n"),
            // Label values escaped.
            "id=\"we\\\"ird-id\",image=\"a\\\\b\",name=\"we\\\"ird\"".into(),
        ] {
            assert!(text.contains(&want), "missing {want:?} in\n{text}");
        }
        // Each family once, its samples together.
        let mut types = BTreeSet::new();
        let mut current = String::new();
        let mut done = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(types.insert(name.clone()), "{name} declared twice");
                done.insert(std::mem::replace(&mut current, name));
            } else if !line.starts_with('#') {
                let metric = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| metric.strip_suffix(s).filter(|f| types.contains(*f)))
                    .unwrap_or(metric);
                assert_eq!(family, current, "{line} outside its family");
                assert!(!done.contains(family));
            }
        }
        for (name, _, _) in CONTAINER_FAMILIES {
            assert!(types.contains(*name), "{name} not declared");
        }
    }
}
