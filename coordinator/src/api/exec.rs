//! `corral.v1.Exec`: unary Run (collected, capped output) and RunStream (ordered events), plus
//! RunCode (in [`super::code`]) and the background process calls, which live in
//! [`super::processes`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use corral_core::ids::{NodeId, SandboxId};
use corral_core::model::ExecSpec;
use corral_core::protocol::RpcRequest;
use corral_core::task::spawn_detached;
use corral_proto::v1 as pb;
use corral_proto::v1::exec_server::Exec;
use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::{code, convert, processes, tenant};
use crate::dispatch::{ExecOutput, ExecStream};
use crate::error::{ApiError, ApiResult};
use crate::service::Core;

pub struct ExecApi(pub Arc<Core>);

/// Extra time past the command's own timeout before the coordinator gives up on the agent.
pub const GRACE: Duration = Duration::from_secs(10);

impl ExecApi {
    async fn start(&self, req: Request<pb::ExecRequest>) -> ApiResult<(NodeId, SandboxId, ExecStream)> {
        let tenant = tenant(&req);
        let req = req.into_inner();
        let id = convert::sandbox_id("sandbox_id", &req.sandbox_id)?;
        let cfg = &self.0.config;
        let command = convert::command(req.argv, req.shell)?;
        let env = convert::env("env", &req.env)?;
        let stdin = convert::stdin(req.stdin)?;
        let timeout_ms = convert::exec_timeout_ms(req.timeout_seconds, cfg)?;
        let node = self.0.locate(&tenant, &id).await?;
        // An empty cwd means the sandbox's workdir, which the agent knows.
        let cwd = if req.cwd.is_empty() { String::new() } else { convert::sandbox_dir("cwd", &req.cwd)? };
        let spec = ExecSpec {
            command,
            env,
            cwd,
            timeout_ms,
            stdin,
            max_output_bytes: cfg.max_output_bytes,
            side_channel: false,
        };
        let stream = self.0.dispatch.exec(&node, &id, spec, GRACE).await?;
        Ok((node, id, stream))
    }
}

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

pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ExecEvent, Status>> + Send>>;

/// Forwards an output stream to a gRPC response stream. When the client goes away first, the
/// agent is sent `abandon` (kill the command, or stop following).
pub fn forward(core: Arc<Core>, node: NodeId, mut stream: ExecStream, abandon: RpcRequest) -> EventStream {
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
            && let Err(e) = core.dispatch.rpc(&node, &abandon).await
        {
            tracing::debug!(error = %e, "could not tell the agent about an abandoned stream");
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl Exec for ExecApi {
    #[tracing::instrument(name = "api.Exec.Run", skip_all)]
    async fn run(&self, req: Request<pb::ExecRequest>) -> Result<Response<pb::ExecResponse>, Status> {
        let (_, _, stream) = self.start(req).await?;
        Ok(Response::new(collect(stream, self.0.config.max_output_bytes as usize).await?))
    }

    type RunStreamStream = EventStream;

    #[tracing::instrument(name = "api.Exec.RunStream", skip_all)]
    async fn run_stream(&self, req: Request<pb::ExecRequest>) -> Result<Response<EventStream>, Status> {
        let (node, id, stream) = self.start(req).await?;
        // The client went away: stop the command rather than let it run unobserved.
        let kill = RpcRequest::KillExec { sandbox: id, exec: stream.exec };
        Ok(Response::new(forward(self.0.clone(), node, stream, kill)))
    }

    #[tracing::instrument(name = "api.Exec.RunCode", skip_all)]
    async fn run_code(&self, req: Request<pb::RunCodeRequest>) -> Result<Response<pb::ExecResponse>, Status> {
        Ok(Response::new(code::run_code(&self.0, req).await?))
    }

    #[tracing::instrument(name = "api.Exec.StartProcess", skip_all)]
    async fn start_process(
        &self,
        req: Request<pb::StartProcessRequest>,
    ) -> Result<Response<pb::StartProcessResponse>, Status> {
        Ok(Response::new(processes::start(&self.0, req).await?))
    }

    #[tracing::instrument(name = "api.Exec.ListProcesses", skip_all)]
    async fn list_processes(
        &self,
        req: Request<pb::ListProcessesRequest>,
    ) -> Result<Response<pb::ListProcessesResponse>, Status> {
        Ok(Response::new(processes::list(&self.0, req).await?))
    }

    #[tracing::instrument(name = "api.Exec.SendSignal", skip_all)]
    async fn send_signal(
        &self,
        req: Request<pb::SendSignalRequest>,
    ) -> Result<Response<pb::SendSignalResponse>, Status> {
        Ok(Response::new(processes::signal(&self.0, req).await?))
    }

    #[tracing::instrument(name = "api.Exec.KillProcess", skip_all)]
    async fn kill_process(
        &self,
        req: Request<pb::KillProcessRequest>,
    ) -> Result<Response<pb::KillProcessResponse>, Status> {
        Ok(Response::new(processes::kill(&self.0, req).await?))
    }

    type FollowOutputStream = EventStream;

    #[tracing::instrument(name = "api.Exec.FollowOutput", skip_all)]
    async fn follow_output(&self, req: Request<pb::FollowOutputRequest>) -> Result<Response<EventStream>, Status> {
        Ok(Response::new(processes::follow(&self.0, req).await?))
    }
}

/// Appends up to `cap` bytes in total; returns true when something was cut.
fn append_capped(buf: &mut Vec<u8>, data: &[u8], cap: usize) -> bool {
    let room = cap.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
    data.len() > room
}
