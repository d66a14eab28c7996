//! The background process calls of `corral.v1.Exec`: StartProcess, ListProcesses, SendSignal,
//! KillProcess and FollowOutput. Validation here, the process table on the sandbox's agent.

use std::time::Duration;

use corral_core::model::ExecSpec;
use corral_core::protocol::{RpcReply, RpcRequest};
use corral_proto::v1 as pb;
use tonic::Request;

use super::calls::SandboxCalls;
use super::stream::{EventStream, forward};
use super::{convert, tenant};
use crate::dispatch::Patience;
use crate::error::{ApiError, ApiResult};

/// A follower's stream fails when the agent sends nothing for this long (it sends `Alive` frames
/// every 10 s while the process is quiet).
const FOLLOW_IDLE: Duration = Duration::from_secs(35);

fn unexpected(what: &str, reply: RpcReply) -> ApiError {
    ApiError::Internal(format!("unexpected agent reply to {what}: {reply:?}"))
}

pub async fn start(core: &SandboxCalls, req: Request<pb::StartProcessRequest>) -> ApiResult<pb::StartProcessResponse> {
    let tenant = tenant(&req);
    let req = req.into_inner();
    let id = convert::sandbox_id("sandbox_id", &req.sandbox_id)?;
    let command = convert::command(req.argv, req.shell)?;
    let env = convert::env("env", &req.env)?;
    let cwd = if req.cwd.is_empty() { String::new() } else { convert::sandbox_dir("cwd", &req.cwd)? };
    let node = core.locate(&tenant, &id).await?;
    let spec =
        ExecSpec { command, env, cwd, timeout_ms: 0, stdin: Vec::new(), max_output_bytes: 0, side_channel: false };
    match core.dispatch.rpc(&node, &RpcRequest::StartProcess { sandbox: id, spec }).await? {
        RpcReply::ProcessStarted { pid } => Ok(pb::StartProcessResponse { pid }),
        other => Err(unexpected("StartProcess", other)),
    }
}

pub async fn list(core: &SandboxCalls, req: Request<pb::ListProcessesRequest>) -> ApiResult<pb::ListProcessesResponse> {
    let tenant = tenant(&req);
    let id = convert::sandbox_id("sandbox_id", &req.get_ref().sandbox_id)?;
    let node = core.locate(&tenant, &id).await?;
    match core.dispatch.rpc(&node, &RpcRequest::ListProcesses { sandbox: id }).await? {
        RpcReply::Processes(ps) => {
            Ok(pb::ListProcessesResponse { processes: ps.into_iter().map(convert::process_to_pb).collect() })
        }
        other => Err(unexpected("ListProcesses", other)),
    }
}

pub async fn signal(core: &SandboxCalls, req: Request<pb::SendSignalRequest>) -> ApiResult<pb::SendSignalResponse> {
    let tenant = tenant(&req);
    let r = req.get_ref();
    let id = convert::sandbox_id("sandbox_id", &r.sandbox_id)?;
    let (pid, signal) = (convert::pid(r.pid)?, convert::signal(r.signal)?);
    let node = core.locate(&tenant, &id).await?;
    core.dispatch.rpc(&node, &RpcRequest::SignalProcess { sandbox: id, pid, signal }).await?;
    Ok(pb::SendSignalResponse {})
}

pub async fn kill(core: &SandboxCalls, req: Request<pb::KillProcessRequest>) -> ApiResult<pb::KillProcessResponse> {
    let tenant = tenant(&req);
    let id = convert::sandbox_id("sandbox_id", &req.get_ref().sandbox_id)?;
    let pid = convert::pid(req.get_ref().pid)?;
    let node = core.locate(&tenant, &id).await?;
    core.dispatch.rpc(&node, &RpcRequest::KillProcess { sandbox: id, pid }).await?;
    Ok(pb::KillProcessResponse {})
}

pub async fn follow(core: &SandboxCalls, req: Request<pb::FollowOutputRequest>) -> ApiResult<EventStream> {
    let tenant = tenant(&req);
    let id = convert::sandbox_id("sandbox_id", &req.get_ref().sandbox_id)?;
    let pid = convert::pid(req.get_ref().pid)?;
    let node = core.locate(&tenant, &id).await?;
    let sandbox = id.clone();
    let make = move |follow| RpcRequest::FollowProcess { sandbox, pid, follow };
    let stream = core.dispatch.open_stream(&node, &id, make, Patience::Idle(FOLLOW_IDLE)).await?;
    // The client went away: the agent stops publishing for it (the process keeps running).
    let unfollow = RpcRequest::Unfollow { sandbox: id, follow: stream.exec };
    Ok(forward(core.dispatch.clone(), node, stream, unfollow))
}
