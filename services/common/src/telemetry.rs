//! Tracing setup: logs to stderr (filter with `BERTH_LOG` or `RUST_LOG`),
//! and OpenTelemetry traces exported over OTLP only when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! variable is set.
//!
//! - `OTEL_EXPORTER_OTLP_PROTOCOL` (or `..._TRACES_PROTOCOL`): `grpc` (the
//!   default) or `http/protobuf`; the endpoint, headers and timeout
//!   variables are read by the exporter as the specification says (for
//!   http/protobuf the generic endpoint gets `/v1/traces` appended).
//! - `OTEL_SERVICE_NAME` overrides the process's name (`berth-gateway`,
//!   `berth-content`, ..., `berth-cli`); `OTEL_RESOURCE_ATTRIBUTES` adds to
//!   the resource.
//! - `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` choose the sampler
//!   (default `parentbased_always_on`), `OTEL_BSP_*` tune the batching.
//!
//! When export is off nothing is exported and no trace is started: spans are
//! sampled only under a sampled caller (`traceparent` in a request,
//! `TRACEPARENT` for the CLI), whose trace id is then logged and passed on,
//! so that a CI job can still follow one command through every process's
//! log. Without such a caller a span costs the sampling decision only.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Flushes and shuts the tracer provider down when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Whether the OTEL_* variables ask for trace export.
pub fn otlp_enabled() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
        && std::env::var("OTEL_TRACES_EXPORTER").map_or(true, |v| v != "none")
}

/// Whether this process exports traces (and so originates trace contexts;
/// otherwise it only passes on a sampled one it was given).
pub fn tracing_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The OTLP transport the variables ask for.
#[derive(Debug, PartialEq, Eq)]
enum Protocol {
    Grpc,
    HttpProtobuf,
}

fn protocol() -> Result<Protocol, String> {
    let v = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    match v.as_str() {
        "" | "grpc" => Ok(Protocol::Grpc),
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        other => Err(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported: use grpc or http/protobuf"
        )),
    }
}

fn exporter() -> Result<opentelemetry_otlp::SpanExporter, String> {
    let built = match protocol()? {
        Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build(),
        Protocol::HttpProtobuf => {
            // The blocking client runs on the batch processor's own
            // thread; it is made there, outside the async runtime.
            let client = std::thread::spawn(reqwest::blocking::Client::new)
                .join()
                .map_err(|_| "cannot make the OTLP HTTP client".to_string())?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build()
        }
    };
    built.map_err(|e| e.to_string())
}

/// Installs the global subscriber. `default_level` applies when neither
/// `BERTH_LOG` nor `RUST_LOG` is set. Must be called inside a tokio runtime
/// when export is enabled.
pub fn init(service_name: &str, default_level: &str) -> TelemetryGuard {
    let filter = std::env::var("BERTH_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .map(EnvFilter::new)
        .unwrap_or_else(|| EnvFilter::new(default_level));
    let ansi = std::io::stderr().is_terminal();
    let mut export_error = None;
    let mut exporting = None;
    if otlp_enabled() {
        match exporter() {
            Ok(exporter) => {
                let mut resource = Resource::builder();
                if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
                    resource = resource.with_service_name(service_name.to_string());
                }
                // The sampler comes from OTEL_TRACES_SAMPLER (default
                // parentbased_always_on).
                exporting = Some(
                    SdkTracerProvider::builder()
                        .with_resource(resource.build())
                        .with_batch_exporter(exporter)
                        .build(),
                );
            }
            Err(e) => export_error = Some(e),
        }
    }
    ENABLED.store(exporting.is_some(), Ordering::Relaxed);
    // Without export, spans are sampled only under a sampled parent (a
    // caller's `traceparent`, or TRACEPARENT for the CLI): then the trace
    // id is logged and passed on, so one user action can still be followed
    // through the logs of every process; nothing is recorded otherwise and
    // no processor exists to export anything.
    let provider = exporting.clone().unwrap_or_else(|| {
        SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .build()
    });
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer("berth");
    // The log filter does not decide what is traced: spans at info and
    // above are traced whatever BERTH_LOG says.
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .with_filter(filter),
        )
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        )
        .try_init();
    if let Some(e) = export_error {
        tracing::warn!("OTLP trace export disabled: {e}");
    }
    TelemetryGuard {
        provider: exporting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols() {
        // One test owns these variables (tests run as threads).
        std::env::remove_var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL");
        std::env::remove_var("OTEL_EXPORTER_OTLP_PROTOCOL");
        assert_eq!(protocol(), Ok(Protocol::Grpc));
        std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
        assert_eq!(protocol(), Ok(Protocol::HttpProtobuf));
        std::env::set_var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc");
        assert_eq!(protocol(), Ok(Protocol::Grpc));
        std::env::set_var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json");
        assert!(protocol().unwrap_err().contains("http/json"));
        std::env::remove_var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL");
        std::env::remove_var("OTEL_EXPORTER_OTLP_PROTOCOL");
    }
}
