//! `corral.v1.Exec`: unary Run (collected, capped output) and RunStream (ordered events), plus
//! RunCode (in [`super::code`]) and the background process calls, which live in
//! [`super::processes`]. Output handling is shared with those in [`super::stream`].

use corral_core::ids::{NodeId, SandboxId};
use corral_core::model::ExecSpec;
use corral_core::protocol::RpcRequest;
use corral_proto::v1 as pb;
use corral_proto::v1::exec_server::Exec;
use tonic::{Request, Response, Status};

use super::calls::SandboxCalls;
use super::stream::{EventStream, GRACE, collect, forward};
use super::{code, convert, processes, tenant};
use crate::dispatch::ExecStream;
use crate::error::ApiResult;

pub struct ExecApi(pub SandboxCalls);

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
        Ok(Response::new(forward(self.0.dispatch.clone(), node, stream, kill)))
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
