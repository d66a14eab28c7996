//! Session requests: open, run a command (output streamed like an exec), close.

use std::sync::Arc;

use corral_core::protocol::{AgentError, RpcReply, RpcRequest};

use crate::Agent;
use crate::runtime::RuntimeError;
use crate::supervisor::SessionCommand;

pub async fn handle(agent: &Arc<Agent>, req: RpcRequest) -> Result<RpcReply, AgentError> {
    let sessions = &agent.supervisor.sessions;
    Ok(match req {
        RpcRequest::OpenSession { sandbox, cwd, env } => {
            let spec = agent.spec(&sandbox).ok_or_else(|| RuntimeError::SandboxNotFound(sandbox.clone()))?;
            RpcReply::SessionOpened { session: sessions.open(&spec, cwd, env)? }
        }
        RpcRequest::SessionExec { session, exec, command, timeout_ms, max_output_bytes } => {
            let sandbox = session.sandbox().clone();
            let rt = agent.runtime_of(&sandbox)?;
            let cmd = SessionCommand { command, timeout_ms, max_output_bytes };
            let events = sessions.exec(&rt, &session, exec, cmd).await?;
            super::output::stream_exec(agent.bus.clone(), &sandbox, exec, events);
            RpcReply::ExecStarted
        }
        RpcRequest::CloseSession { session } => {
            sessions.close(&session)?;
            RpcReply::Ok
        }
        other => return Err(super::misrouted(&other)),
    })
}
