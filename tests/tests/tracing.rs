//! OpenTelemetry export: with `telemetry.otlp_endpoint` set, the server's spans reach a real OTLP
//! receiver (a tonic TraceService run by this test).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::ensure;
use corral_e2e::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<String>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut names = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for rs in req.into_inner().resource_spans {
            for ss in rs.scope_spans {
                names.extend(ss.spans.into_iter().map(|s| s.name));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver() -> anyhow::Result<()> {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let svc = TraceServiceServer::new(receiver.clone());
    let serve = tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::select! {
        r = scenario(receiver, addr) => r,
        r = serve => Err(anyhow::anyhow!("the OTLP receiver stopped: {r:?}")),
    }
}

async fn scenario(receiver: Receiver, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let mut dev = DevServer::start_with_env(&[("CORRAL_TELEMETRY__OTLP_ENDPOINT", &format!("http://{addr}"))])?;
    let client = ready_client(&dev.endpoint).await?;
    let s = client.create(Default::default()).await?;
    client.run_argv(&s.id, &["true"]).await?;
    client.destroy(&s.id).await?;
    // Stopping the server flushes the exporter.
    let dev = tokio::task::spawn_blocking(move || {
        dev.proc.stop(Duration::from_secs(10));
        dev
    })
    .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = ["api.Sandboxes.Create", "api.Exec.Run", "api.Sandboxes.Destroy"];
    loop {
        let names = receiver.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if wanted.iter().all(|w| names.iter().any(|n| n == w)) {
            break;
        }
        ensure!(Instant::now() < deadline, "spans received: {names:?}; log:\n{}", dev.proc.log_tail(3000));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
