//! OpenTelemetry export, switched on only by the standard OTEL_* variables,
//! received by a real OTLP/gRPC trace receiver in the test.

use std::sync::{Arc, Mutex};

use berth_integration::{require_root, Mode, Stack};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[test]
fn traces_are_exported_over_otlp_when_configured() {
    require_root!();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = Receiver::default();
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
    let endpoint = format!("http://{addr}");
    let mut s = Stack::start_with_env(
        Mode::Split,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let tar = berth_integration::fixtures::busybox_tar_in(&s.dir);
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let out = s
        .cmd()
        .env("TRACEPARENT", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .args(["image", "import", tar.to_str().unwrap(), "otel"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // A graceful stop flushes what is left.
    s.stop_daemons();

    let got = receiver.0.lock().unwrap();
    let mut services_in_trace = std::collections::BTreeSet::new();
    for req in got.iter() {
        for rs in &req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    if hex::encode(&span.trace_id) == trace_id {
                        services_in_trace.insert(service.clone());
                    }
                }
            }
        }
    }
    for svc in ["berth-gateway", "berth-content", "berth-snapshots"] {
        assert!(
            services_in_trace.contains(svc),
            "no span of {svc} in the CLI's trace; services seen: {services_in_trace:?}"
        );
    }
}

fn tokio_stream_incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}
