//! OpenTelemetry export, switched on only by the standard OTEL_* variables,
//! received by real OTLP trace receivers built in the test from the
//! official protocol definitions (opentelemetry-proto): gRPC and
//! http/protobuf.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

use berth_integration::{require_root, unique, Mode, Stack};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;

/// One received span with the service that sent it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attrs: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Got>>>);

fn string_of(kvs: &[KeyValue], key: &str) -> Option<String> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            Some(Value::IntValue(i)) => Some(i.to_string()),
            _ => None,
        })
}

impl Receiver {
    fn take(&self, req: ExportTraceServiceRequest) {
        let mut got = self.0.lock().unwrap();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| string_of(&r.attributes, "service.name"))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let attrs = span
                        .attributes
                        .iter()
                        .filter_map(|kv| {
                            Some((kv.key.clone(), string_of(&span.attributes, &kv.key)?))
                        })
                        .collect();
                    got.push(Got {
                        service: service.clone(),
                        name: span.name.clone(),
                        trace_id: hex::encode(&span.trace_id),
                        span_id: hex::encode(&span.span_id),
                        parent: hex::encode(&span.parent_span_id),
                        attrs,
                    });
                }
            }
        }
    }

    fn spans(&self) -> Vec<Got> {
        self.0.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.take(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// An OTLP/gRPC receiver on loopback; returns its endpoint URL.
fn grpc_receiver(rt: &tokio::runtime::Runtime, receiver: &Receiver) -> String {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = TraceServiceServer::new(receiver.clone());
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream_incoming(listener))
            .await
    });
    format!("http://{addr}")
}

/// An OTLP/HTTP (http/protobuf) receiver on loopback: POST /v1/traces with
/// an ExportTraceServiceRequest body. Returns its base URL.
fn http_receiver(receiver: &Receiver) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = receiver.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let receiver = receiver.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                // Keep-alive: one request after another on the connection.
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path_ok = line.starts_with("POST /v1/traces ");
                    let mut len = 0usize;
                    let mut ctype = String::new();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            match k.to_ascii_lowercase().as_str() {
                                "content-length" => len = v.trim().parse().unwrap_or(0),
                                "content-type" => ctype = v.trim().to_string(),
                                _ => {}
                            }
                        }
                    }
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let ok = path_ok && ctype == "application/x-protobuf";
                    if ok {
                        if let Ok(req) = ExportTraceServiceRequest::decode(body.as_slice()) {
                            receiver.take(req);
                        }
                    }
                    let resp = ExportTraceServiceResponse::default().encode_to_vec();
                    let status = if ok { "200 OK" } else { "400 Bad Request" };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
                        resp.len()
                    );
                    if conn.write_all(head.as_bytes()).is_err() || conn.write_all(&resp).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

fn otel_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
    ]
}

/// A stack whose daemons export to an OTLP/gRPC receiver of the test (kept
/// on the returned runtime), and the variables that point there.
fn exporting_stack(
    mode: Mode,
) -> (
    tokio::runtime::Runtime,
    Receiver,
    Vec<(&'static str, String)>,
    Stack,
) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = Receiver::default();
    let endpoint = grpc_receiver(&rt, &receiver);
    let env = otel_env(&endpoint);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = Stack::start_with_env(mode, &env_refs);
    (rt, receiver, env, s)
}

#[test]
fn one_berth_run_is_one_trace_across_every_service() {
    require_root!();
    let (_rt, receiver, env, mut s) = exporting_stack(Mode::Split);
    let image = unique("traced");
    s.import_busybox(&image);
    let out = s
        .cmd()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("BERTH_LOG", "error")
        .args(["run", "--rm", &image, "echo", "traced"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "traced\n");
    // A graceful stop flushes what is left.
    s.stop_daemons();

    let spans = receiver.spans();
    let roots: Vec<&Got> = spans
        .iter()
        .filter(|g| g.service == "berth-cli" && g.name == "berth.run")
        .collect();
    assert_eq!(
        roots.len(),
        1,
        "CLI run spans: {roots:?}; all: {:?}",
        spans
            .iter()
            .map(|g| (g.service.as_str(), g.name.as_str()))
            .collect::<BTreeSet<_>>()
    );
    let root = roots[0];
    assert!(
        root.parent.is_empty(),
        "the CLI's span has a parent: {root:?}"
    );
    let trace: Vec<&Got> = spans
        .iter()
        .filter(|g| g.trace_id == root.trace_id)
        .collect();
    let services: BTreeSet<&str> = trace.iter().map(|g| g.service.as_str()).collect();
    for svc in [
        "berth-cli",
        "berth-gateway",
        "berth-content",
        "berth-snapshots",
        "berth-tasks",
        "berth-network",
    ] {
        assert!(
            services.contains(svc),
            "no span of {svc} in the run's trace; services: {services:?}"
        );
    }
    let by_id: HashMap<&str, &Got> = trace.iter().map(|g| (g.span_id.as_str(), *g)).collect();
    for g in &trace {
        assert!(
            g.name.contains('.') && !g.name.contains('/') && !g.name.contains(' '),
            "span name not dot-separated: {g:?}"
        );
        if g.span_id == root.span_id {
            continue;
        }
        assert!(
            by_id.contains_key(g.parent.as_str()),
            "span {} of {} has a parent outside the trace's spans: {g:?}",
            g.name,
            g.service
        );
    }
    // The CLI's calls are children of its span, and carry the container.
    let create = trace
        .iter()
        .find(|g| g.name == "berth.gateway.v1.Containers.Create")
        .expect("no Containers.Create span");
    assert_eq!(create.service, "berth-gateway");
    assert_eq!(create.parent, root.span_id);
    let id = create
        .attrs
        .get("container.id")
        .expect("container.id")
        .clone();
    assert_eq!(id.len(), 64, "{create:?}");
    assert!(create
        .attrs
        .get("image.name")
        .is_some_and(|n| n.contains(&image)));
    assert!(create
        .attrs
        .get("image.digest")
        .is_some_and(|d| d.starts_with("sha256:")));
    // Each service's work hangs under a gateway span, for this container.
    for (svc, name) in [
        ("berth-tasks", "berth.tasks.v1.Tasks.Create"),
        ("berth-tasks", "berth.tasks.v1.Tasks.Start"),
        ("berth-network", "berth.network.v1.Network.Attach"),
    ] {
        let g = trace
            .iter()
            .find(|g| g.service == svc && g.name == name)
            .unwrap_or_else(|| panic!("no {name} span in the trace"));
        assert_eq!(g.attrs.get("container.id"), Some(&id), "{g:?}");
        assert_eq!(by_id[g.parent.as_str()].service, "berth-gateway", "{g:?}");
    }
}

#[test]
fn http_protobuf_export_service_name_and_sampler_are_honoured() {
    require_root!();
    let receiver = Receiver::default();
    let endpoint = http_receiver(&receiver);
    let mut env = otel_env(&endpoint);
    env.push(("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()));
    let mut daemon_env = env.clone();
    daemon_env.push(("OTEL_SERVICE_NAME", "berth-under-test".into()));
    let env_refs: Vec<(&str, &str)> = daemon_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut s = Stack::start_with_env(Mode::AllInOne, &env_refs);
    // Sampled out by the CLI: nothing of it anywhere (the daemon follows
    // its parent's decision).
    let out = s
        .cmd()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("OTEL_TRACES_SAMPLER", "always_off")
        .args(["volume", "ls"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = s
        .cmd()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["network", "ls"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    s.stop_daemons();

    let spans = receiver.spans();
    assert!(
        !spans
            .iter()
            .any(|g| g.name == "berth.volume" || g.name.ends_with("Volumes.List")),
        "spans of a sampled-out command were exported: {spans:?}"
    );
    let cli = spans
        .iter()
        .find(|g| g.name == "berth.network" && g.service == "berth-cli")
        .unwrap_or_else(|| panic!("no CLI span over http/protobuf: {spans:?}"));
    let list = spans
        .iter()
        .find(|g| g.name == "berth.gateway.v1.Networks.List")
        .expect("no gateway span over http/protobuf");
    assert_eq!(
        list.service, "berth-under-test",
        "OTEL_SERVICE_NAME ignored"
    );
    assert_eq!(list.trace_id, cli.trace_id);
    assert_eq!(list.parent, cli.span_id);
}

#[test]
fn nothing_is_exported_or_propagated_without_otel_variables() {
    require_root!();
    // The daemons export, the CLI is not configured: it sends no trace
    // context, so the gateway's span starts a trace of its own.
    let (_rt, receiver, _env, mut s) = exporting_stack(Mode::AllInOne);
    let r = s.berth(&["volume", "ls"]);
    assert_eq!(r.code, 0, "{r:?}");
    s.stop_daemons();
    let spans = receiver.spans();
    assert!(!spans.iter().any(|g| g.service == "berth-cli"), "{spans:?}");
    let list = spans
        .iter()
        .find(|g| g.name == "berth.gateway.v1.Volumes.List")
        .expect("no gateway span");
    assert!(
        list.parent.is_empty(),
        "a parent came from an unconfigured CLI: {list:?}"
    );
}

fn tokio_stream_incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}
