//! Command output on its way to the client, shared by Exec, RunCode, processes and sessions:
//! collected into one capped response ([`collect`]) or forwarded as a gRPC stream ([`forward`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use corral_core::ids::NodeId;
use corral_core::protocol::RpcRequest;
use corral_core::task::spawn_detached;
use corral_proto::v1 as pb;
use futures::Stream;
use tokio::sync::mpsc;
use tonic::Status;

use super::convert;
use crate::dispatch::{Dispatcher, ExecOutput, ExecStream};
use crate::error::{ApiError, ApiResult};

/// Extra time past the command's own timeout before the coordinator gives up on the agent.
pub const GRACE: Duration = Duration::from_secs(10);

pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ExecEvent, Status>> + Send>>;

/// Collects a command's output into one response, each stream capped at `cap` bytes.
pub async fn collect(mut stream: ExecStream, cap: usize) -> ApiResult<pb::ExecResponse> {
    let (mut stdout, mut stderr, mut cut) = (Vec::new(), Vec::new(), false);
    while let Some(out) = stream.next().await {
        match out? {
            ExecOutput::Stdout(d) => cut |= append_capped(&mut stdout, &d, cap),
            ExecOutput::Stderr(d) => cut |= append_capped(&mut stderr, &d, cap),
            ExecOutput::Dropped(_) => cut = true,
            ExecOutput::Exit(s) => {
                return Ok(pb::ExecResponse {
                    stdout,
                    stderr,
                    exit_code: s.exit_code,
                    timed_out: s.timed_out,
                    truncated: s.truncated || cut,
                    duration_ms: s.duration_ms as i64,
                    signal: s.signal,
                    oom_killed: s.oom_killed,
                });
            }
        }
    }
    Err(ApiError::Internal("output ended without an exit status".into()))
}

/// Forwards an output stream to a gRPC response stream. When the client goes away first, the
/// agent is sent `abandon` (kill the command, or stop following).
pub fn forward(dispatch: Arc<Dispatcher>, node: NodeId, mut stream: ExecStream, abandon: RpcRequest) -> EventStream {
    let (tx, rx) = mpsc::channel::<Result<pb::ExecEvent, Status>>(32);
    spawn_detached("coordinator.exec_stream", async move {
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = tx.closed() => None,
            };
            let Some(item) = item else { break };
            let event = item.map(|out| pb::ExecEvent {
                event: Some(match out {
                    ExecOutput::Stdout(d) => pb::exec_event::Event::Stdout(d),
                    ExecOutput::Stderr(d) => pb::exec_event::Event::Stderr(d),
                    ExecOutput::Dropped(n) => pb::exec_event::Event::DroppedBytes(n),
                    ExecOutput::Exit(s) => pb::exec_event::Event::Exit(convert::exit_to_pb(s)),
                }),
            });
            if tx.send(event.map_err(Status::from)).await.is_err() {
                break;
            }
        }
        if tx.is_closed()
            && !stream.is_done()
            && let Err(e) = dispatch.rpc(&node, &abandon).await
        {
            tracing::debug!(error = %e, "could not tell the agent about an abandoned stream");
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Appends up to `cap` bytes in total; returns true when something was cut.
fn append_capped(buf: &mut Vec<u8>, data: &[u8], cap: usize) -> bool {
    let room = cap.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
    data.len() > room
}
