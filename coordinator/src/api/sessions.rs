//! `corral.v1.Sessions`: Open, Exec and Close. The session's state lives on the sandbox's agent;
//! a session id names its sandbox, so requests route like any other sandbox call.

use corral_core::protocol::{RpcReply, RpcRequest};
use corral_proto::v1 as pb;
use corral_proto::v1::sessions_server::Sessions;
use tonic::{Request, Response, Status};

use super::calls::SandboxCalls;
use super::stream::{GRACE, collect};
use super::{convert, tenant};
use crate::dispatch::Patience;
use crate::error::{ApiError, ApiResult};

pub struct SessionsApi(pub SandboxCalls);

impl SessionsApi {
    async fn open(&self, req: Request<pb::OpenSessionRequest>) -> ApiResult<pb::OpenSessionResponse> {
        let tenant = tenant(&req);
        let req = req.into_inner();
        let id = convert::sandbox_id("sandbox_id", &req.sandbox_id)?;
        let cwd = if req.cwd.is_empty() { String::new() } else { convert::sandbox_dir("cwd", &req.cwd)? };
        let env = convert::env("env", &req.env)?;
        let node = self.0.locate(&tenant, &id).await?;
        match self.0.dispatch.rpc(&node, &RpcRequest::OpenSession { sandbox: id, cwd, env }).await? {
            RpcReply::SessionOpened { session } => Ok(pb::OpenSessionResponse { session_id: session.to_string() }),
            other => Err(ApiError::Internal(format!("unexpected agent reply to OpenSession: {other:?}"))),
        }
    }

    async fn exec(&self, req: Request<pb::SessionExecRequest>) -> ApiResult<pb::ExecResponse> {
        let tenant = tenant(&req);
        let req = req.into_inner();
        let session = convert::session_id("session_id", &req.session_id)?;
        let command = match convert::command(Vec::new(), req.command)? {
            corral_core::model::Command::Shell(s) => s,
            corral_core::model::Command::Argv(_) => return Err(ApiError::Internal("command became argv".into())),
        };
        let cfg = &self.0.config;
        let timeout_ms = convert::exec_timeout_ms(req.timeout_seconds, cfg)?;
        let sandbox = session.sandbox().clone();
        let node = self.0.locate(&tenant, &sandbox).await?;
        let max_output_bytes = cfg.max_output_bytes;
        let make = move |exec| RpcRequest::SessionExec { session, exec, command, timeout_ms, max_output_bytes };
        let patience = Patience::Total(std::time::Duration::from_millis(timeout_ms) + GRACE);
        let stream = self.0.dispatch.open_stream(&node, &sandbox, make, patience).await?;
        collect(stream, cfg.max_output_bytes as usize).await
    }

    async fn close(&self, req: Request<pb::CloseSessionRequest>) -> ApiResult<pb::CloseSessionResponse> {
        let tenant = tenant(&req);
        let session = convert::session_id("session_id", &req.get_ref().session_id)?;
        let node = self.0.locate(&tenant, session.sandbox()).await?;
        self.0.dispatch.rpc(&node, &RpcRequest::CloseSession { session }).await?;
        Ok(pb::CloseSessionResponse {})
    }
}

#[tonic::async_trait]
impl Sessions for SessionsApi {
    #[tracing::instrument(name = "api.Sessions.Open", skip_all)]
    async fn open(&self, req: Request<pb::OpenSessionRequest>) -> Result<Response<pb::OpenSessionResponse>, Status> {
        Ok(Response::new(SessionsApi::open(self, req).await?))
    }

    #[tracing::instrument(name = "api.Sessions.Exec", skip_all)]
    async fn exec(&self, req: Request<pb::SessionExecRequest>) -> Result<Response<pb::ExecResponse>, Status> {
        Ok(Response::new(SessionsApi::exec(self, req).await?))
    }

    #[tracing::instrument(name = "api.Sessions.Close", skip_all)]
    async fn close(&self, req: Request<pb::CloseSessionRequest>) -> Result<Response<pb::CloseSessionResponse>, Status> {
        Ok(Response::new(SessionsApi::close(self, req).await?))
    }
}
