//! Logging and tracing set-up: `tracing` to stderr (text or JSON), plus OpenTelemetry OTLP
//! export when `telemetry.otlp_endpoint` is set. The returned guard flushes spans on drop.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::TelemetryConfig;

/// Flushes and shuts the exporter down when dropped.
pub struct TelemetryGuard(Option<SdkTracerProvider>);

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("corral: flushing traces failed: {e}");
        }
    }
}

pub fn init(cfg: &TelemetryConfig, service: &'static str) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_new(&cfg.log).map_err(|e| anyhow::anyhow!("telemetry.log {:?}: {e}", cfg.log))?;
    let fmt = match cfg.log_format.as_str() {
        "json" => tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed(),
        "text" => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed(),
        other => anyhow::bail!("telemetry.log_format {other:?}: must be \"text\" or \"json\""),
    };
    let (otel, provider) = if cfg.otlp_endpoint.is_empty() {
        (None, None)
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&cfg.otlp_endpoint)
            .build()
            .map_err(|e| anyhow::anyhow!("telemetry.otlp_endpoint {:?}: {e}", cfg.otlp_endpoint))?;
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
        let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
        (Some(layer), Some(provider))
    };
    tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init()?;
    Ok(TelemetryGuard(provider))
}
