//! Background process requests: start, list, signal, kill, follow and unfollow.

use std::sync::Arc;

use corral_core::protocol::{AgentError, RpcReply, RpcRequest};

use crate::Agent;

pub async fn handle(agent: &Arc<Agent>, req: RpcRequest) -> Result<RpcReply, AgentError> {
    let procs = &agent.supervisor.processes;
    Ok(match req {
        RpcRequest::StartProcess { sandbox, mut spec } => {
            if spec.cwd.is_empty() {
                spec.cwd = agent.spec(&sandbox).map(|s| s.workdir).unwrap_or_else(|| "/workspace".to_owned());
            }
            let pid = procs.start(&agent.runtime_of(&sandbox)?, &sandbox, spec).await?;
            RpcReply::ProcessStarted { pid }
        }
        RpcRequest::ListProcesses { sandbox } => {
            agent.runtime_of(&sandbox)?;
            RpcReply::Processes(procs.list(&sandbox))
        }
        RpcRequest::SignalProcess { sandbox, pid, signal } => {
            procs.signal(&agent.runtime_of(&sandbox)?, &sandbox, pid, signal).await?;
            RpcReply::Ok
        }
        RpcRequest::KillProcess { sandbox, pid } => {
            procs.kill(&agent.runtime_of(&sandbox)?, &sandbox, pid).await?;
            RpcReply::Ok
        }
        RpcRequest::FollowProcess { sandbox, pid, follow } => {
            agent.runtime_of(&sandbox)?;
            let f = procs.follow(&sandbox, pid, follow)?;
            super::output::stream_follow(agent.bus.clone(), &sandbox, follow, f);
            RpcReply::ExecStarted
        }
        RpcRequest::Unfollow { sandbox, follow } => {
            procs.unfollow(&sandbox, follow);
            RpcReply::Ok
        }
        other => return Err(super::misrouted(&other)),
    })
}
