//! Interactive requests from the coordinator (`corral.rpc.{node}`): execs with output streamed to
//! `corral.out.{sandbox}.{exec}` ([`output`]), file operations ([`files`]), background processes
//! ([`processes`]) and shell sessions ([`sessions`]).

pub mod files;
pub mod output;
pub mod processes;
pub mod sessions;

use std::sync::Arc;

use corral_core::bus::Request;
use corral_core::ids::{ExecId, NodeId, SandboxId};
use corral_core::model::ExecSpec;
use corral_core::protocol::{self, AgentError, AgentErrorKind, RpcReply, RpcRequest};
use corral_core::subjects::RpcSubject;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::Agent;
use files::Uploads;

pub use files::{MAX_STAGED_BYTES, MAX_UPLOAD_BYTES};

pub fn subject(node: &NodeId) -> String {
    RpcSubject(node).to_string()
}

pub async fn serve(agent: Arc<Agent>, mut requests: BoxStream<'static, Request>) -> Result<(), String> {
    let uploads = Arc::new(Uploads::default());
    let mut running = tokio::task::JoinSet::new();
    while let Some(req) = requests.next().await {
        while running.try_join_next().is_some() {}
        let (agent, uploads) = (agent.clone(), uploads.clone());
        running.spawn(tracing::Instrument::instrument(
            async move {
                let reply = match protocol::decode::<RpcRequest>(&req.payload) {
                    Ok(r) => handle(&agent, &uploads, r).await,
                    Err(e) => RpcReply::Error(AgentError::new(AgentErrorKind::InvalidArgument, e.to_string())),
                };
                if let Err(e) = req.reply(protocol::encode(&reply)).await {
                    tracing::warn!(error = %e, "could not send a reply");
                }
            },
            tracing::info_span!("agent.rpc"),
        ));
    }
    Err("rpc subscription ended".into())
}

async fn handle(agent: &Arc<Agent>, uploads: &Uploads, req: RpcRequest) -> RpcReply {
    let result: Result<RpcReply, AgentError> = async {
        Ok(match req {
            RpcRequest::Exec { sandbox, exec, spec } => start_exec(agent, sandbox, exec, spec).await?,
            RpcRequest::KillExec { sandbox, exec } => {
                agent.runtime_of(&sandbox)?.kill_exec(&sandbox, exec).await?;
                RpcReply::Ok
            }
            req @ (RpcRequest::ReadFile { .. }
            | RpcRequest::WriteFile { .. }
            | RpcRequest::ListFiles { .. }
            | RpcRequest::RemoveFile { .. }) => files::handle(agent, uploads, req).await?,
            req @ (RpcRequest::StartProcess { .. }
            | RpcRequest::ListProcesses { .. }
            | RpcRequest::SignalProcess { .. }
            | RpcRequest::KillProcess { .. }
            | RpcRequest::FollowProcess { .. }
            | RpcRequest::Unfollow { .. }) => processes::handle(agent, req).await?,
            req @ (RpcRequest::OpenSession { .. }
            | RpcRequest::SessionExec { .. }
            | RpcRequest::CloseSession { .. }) => sessions::handle(agent, req).await?,
            RpcRequest::Pause { sandbox } => {
                agent.runtime_of(&sandbox)?.pause(&sandbox).await?;
                RpcReply::Ok
            }
            RpcRequest::Resume { sandbox } => {
                agent.runtime_of(&sandbox)?.resume(&sandbox).await?;
                RpcReply::Ok
            }
            RpcRequest::CancelJob { job, attempt } => {
                crate::jobs::cancel(agent, &job, attempt).await;
                RpcReply::Ok
            }
            RpcRequest::Ping => RpcReply::Pong { node: agent.node.clone() },
            RpcRequest::Status { sandbox } => {
                let runtime = agent.runtime_of(&sandbox)?;
                let disk = runtime.disk_usage(&sandbox).await?;
                RpcReply::Status { disk, codebase_failed: runtime.codebase_failed(&sandbox) }
            }
            RpcRequest::Diff { sandbox } => {
                let (changes, truncated) = agent.runtime_of(&sandbox)?.diff(&sandbox).await?;
                RpcReply::Changes { changes, truncated }
            }
        })
    }
    .await;
    result.unwrap_or_else(RpcReply::Error)
}

/// The reply for a request routed to a handler that does not take it (a bug).
pub(crate) fn misrouted(req: &RpcRequest) -> AgentError {
    AgentError::new(AgentErrorKind::Internal, format!("request routed to the wrong handler: {req:?}"))
}

async fn start_exec(
    agent: &Arc<Agent>,
    sandbox: SandboxId,
    exec: ExecId,
    mut spec: ExecSpec,
) -> Result<RpcReply, AgentError> {
    if spec.cwd.is_empty() {
        spec.cwd = agent.spec(&sandbox).map(|s| s.workdir).unwrap_or_else(|| "/workspace".to_owned());
    }
    let handle = agent.runtime_of(&sandbox)?.exec(&sandbox, exec, spec).await?;
    output::stream_exec(agent.bus.clone(), &sandbox, exec, handle.events);
    Ok(RpcReply::ExecStarted)
}
