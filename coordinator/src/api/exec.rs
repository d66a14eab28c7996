//! `corral.v1.Exec`: unary Run (collected, capped output) and RunStream (ordered events).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use corral_core::ids::{NodeId, SandboxId};
use corral_core::model::{ExecSpec, ExitStatus};
use corral_core::protocol::RpcRequest;
use corral_core::task::spawn_detached;
use corral_proto::v1 as pb;
use corral_proto::v1::exec_server::Exec;
use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::{convert, tenant};
use crate::dispatch::{ExecOutput, ExecStream};
use crate::error::{ApiError, ApiResult};
use crate::service::Core;

pub struct ExecApi(pub Arc<Core>);

/// Extra time past the command's own timeout before the coordinator gives up on the agent.
const GRACE: Duration = Duration::from_secs(10);

impl ExecApi {
    async fn start(&self, req: Request<pb::ExecRequest>) -> ApiResult<(NodeId, SandboxId, ExecStream)> {
        let tenant = tenant(&req);
        let req = req.into_inner();
        let id = convert::sandbox_id("sandbox_id", &req.sandbox_id)?;
        let cfg = &self.0.config;
        let command = convert::command(req.argv, req.shell)?;
        let env = convert::env("env", &req.env)?;
        if req.stdin.len() > convert::MAX_STDIN {
            let why = format!(
                "{} bytes exceed the {} byte limit; write a file and redirect from it",
                req.stdin.len(),
                convert::MAX_STDIN
            );
            return Err(ApiError::field("stdin", why));
        }
        let t = req.timeout_seconds;
        if !t.is_finite() || t < 0.0 || t > cfg.max_exec_timeout_seconds {
            let why = format!(
                "{t} is outside 0..={} (0 = default {})",
                cfg.max_exec_timeout_seconds, cfg.default_exec_timeout_seconds
            );
            return Err(ApiError::field("timeout_seconds", why));
        }
        let timeout = if t == 0.0 { cfg.default_exec_timeout_seconds } else { t };
        let node = self.0.locate(&tenant, &id).await?;
        // An empty cwd means the sandbox's workdir, which the agent knows.
        let cwd = if req.cwd.is_empty() { String::new() } else { convert::sandbox_dir("cwd", &req.cwd)? };
        let spec = ExecSpec {
            command,
            env,
            cwd,
            timeout_ms: (timeout * 1000.0).ceil() as u64,
            stdin: req.stdin,
            max_output_bytes: cfg.max_output_bytes,
        };
        let stream = self.0.dispatch.exec(&node, &id, spec, GRACE).await?;
        Ok((node, id, stream))
    }
}

fn exit_to_pb(s: ExitStatus) -> pb::ExecExit {
    pb::ExecExit {
        exit_code: s.exit_code,
        timed_out: s.timed_out,
        truncated: s.truncated,
        duration_ms: s.duration_ms as i64,
        signal: s.signal,
        oom_killed: s.oom_killed,
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ExecEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Exec for ExecApi {
    #[tracing::instrument(name = "api.Exec.Run", skip_all)]
    async fn run(&self, req: Request<pb::ExecRequest>) -> Result<Response<pb::ExecResponse>, Status> {
        let (_, _, mut stream) = self.start(req).await?;
        let cap = self.0.config.max_output_bytes as usize;
        let (mut stdout, mut stderr, mut cut) = (Vec::new(), Vec::new(), false);
        while let Some(out) = stream.next().await {
            match out? {
                ExecOutput::Stdout(d) => cut |= append_capped(&mut stdout, &d, cap),
                ExecOutput::Stderr(d) => cut |= append_capped(&mut stderr, &d, cap),
                ExecOutput::Exit(s) => {
                    return Ok(Response::new(pb::ExecResponse {
                        stdout,
                        stderr,
                        exit_code: s.exit_code,
                        timed_out: s.timed_out,
                        truncated: s.truncated || cut,
                        duration_ms: s.duration_ms as i64,
                        signal: s.signal,
                        oom_killed: s.oom_killed,
                    }));
                }
            }
        }
        Err(ApiError::Internal("output ended without an exit status".into()).into())
    }

    type RunStreamStream = EventStream;

    #[tracing::instrument(name = "api.Exec.RunStream", skip_all)]
    async fn run_stream(&self, req: Request<pb::ExecRequest>) -> Result<Response<EventStream>, Status> {
        let (node, id, mut stream) = self.start(req).await?;
        let (tx, rx) = mpsc::channel::<Result<pb::ExecEvent, Status>>(32);
        let core = self.0.clone();
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
                        ExecOutput::Exit(s) => pb::exec_event::Event::Exit(exit_to_pb(s)),
                    }),
                });
                if tx.send(event.map_err(Status::from)).await.is_err() {
                    break;
                }
            }
            if tx.is_closed() && !stream.is_done() {
                // The client went away: stop the command rather than let it run unobserved.
                let kill = RpcRequest::KillExec { sandbox: id, exec: stream.exec };
                if let Err(e) = core.dispatch.rpc(&node, &kill).await {
                    tracing::debug!(error = %e, "could not kill an abandoned exec");
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

/// Appends up to `cap` bytes in total; returns true when something was cut.
fn append_capped(buf: &mut Vec<u8>, data: &[u8], cap: usize) -> bool {
    let room = cap.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
    data.len() > room
}
