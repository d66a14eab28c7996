//! `corral.v1.Sandboxes`.

use std::sync::Arc;
use std::time::Duration;

use corral_core::model::{DiskUsage, SandboxRecord};
use corral_core::protocol::{RpcReply, RpcRequest};

use corral_core::state::SandboxState;
use corral_proto::v1 as pb;
use corral_proto::v1::sandboxes_server::Sandboxes;
use tonic::{Request, Response, Status};

use super::{convert, tenant};
use crate::error::ApiError;
use crate::service::{Core, ListFilter};

pub struct SandboxesApi(pub Arc<Core>);

const DEFAULT_PAGE: i32 = 100;
/// How long Get waits for a node's disk figures before answering without them.
const USAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// The disk use of a live sandbox, asked from its node; `None` when it has ended, its node
/// enforces no quotas, or the node does not answer in time (Get still answers).
async fn disk_usage(core: &Core, record: &SandboxRecord) -> Option<DiskUsage> {
    if !matches!(record.state, SandboxState::Running | SandboxState::Paused) {
        return None;
    }
    let node = record.node.as_ref()?;
    let req = RpcRequest::DiskUsage { sandbox: record.spec.id.clone() };
    match tokio::time::timeout(USAGE_TIMEOUT, core.dispatch.rpc(node, &req)).await {
        Ok(Ok(RpcReply::DiskUsage(usage))) => usage,
        Ok(Ok(other)) => {
            tracing::warn!(sandbox_id = %record.spec.id, reply = ?other, "unexpected reply to a disk usage request");
            None
        }
        Ok(Err(e)) => {
            tracing::debug!(sandbox_id = %record.spec.id, error = %e, "no disk usage from the node");
            None
        }
        Err(_) => None,
    }
}
const MAX_PAGE: i32 = 1000;

#[tonic::async_trait]
impl Sandboxes for SandboxesApi {
    #[tracing::instrument(name = "api.Sandboxes.Create", skip_all)]
    async fn create(
        &self,
        req: Request<pb::CreateSandboxRequest>,
    ) -> Result<Response<pb::CreateSandboxResponse>, Status> {
        let tenant = tenant(&req);
        let spec = convert::create_spec(req.into_inner(), tenant, &self.0.config)?;
        let record = self.0.create(spec).await?;
        Ok(Response::new(pb::CreateSandboxResponse { sandbox: Some(convert::sandbox_to_pb(record)) }))
    }

    #[tracing::instrument(name = "api.Sandboxes.Get", skip_all)]
    async fn get(&self, req: Request<pb::GetSandboxRequest>) -> Result<Response<pb::GetSandboxResponse>, Status> {
        let tenant = tenant(&req);
        let id = convert::sandbox_id("id", &req.get_ref().id)?;
        let record = self.0.get(&tenant, &id).await?;
        let usage = disk_usage(&self.0, &record).await;
        let mut sandbox = convert::sandbox_to_pb(record);
        sandbox.disk_usage = usage.map(convert::disk_usage_to_pb);
        Ok(Response::new(pb::GetSandboxResponse { sandbox: Some(sandbox) }))
    }

    #[tracing::instrument(name = "api.Sandboxes.GetByName", skip_all)]
    async fn get_by_name(
        &self,
        req: Request<pb::GetSandboxByNameRequest>,
    ) -> Result<Response<pb::GetSandboxResponse>, Status> {
        let tenant = tenant(&req);
        let name = convert::sandbox_name("name", &req.get_ref().name)?;
        let record = self.0.get_by_name(&tenant, &name).await?;
        Ok(Response::new(pb::GetSandboxResponse { sandbox: Some(convert::sandbox_to_pb(record)) }))
    }

    #[tracing::instrument(name = "api.Sandboxes.List", skip_all)]
    async fn list(
        &self,
        req: Request<pb::ListSandboxesRequest>,
    ) -> Result<Response<pb::ListSandboxesResponse>, Status> {
        let tenant = tenant(&req);
        let req = req.into_inner();
        if req.page_size < 0 || req.page_size > MAX_PAGE {
            return Err(ApiError::field(
                "page_size",
                format!("{} is outside 0..={MAX_PAGE} (0 = {DEFAULT_PAGE})", req.page_size),
            )
            .into());
        }
        let page_size = if req.page_size == 0 { DEFAULT_PAGE } else { req.page_size } as usize;
        let after =
            if req.page_token.is_empty() { None } else { Some(convert::sandbox_id("page_token", &req.page_token)?) };
        let states = req
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| convert::state_from_pb(&format!("states[{i}]"), *s))
            .collect::<Result<Vec<SandboxState>, _>>()?;
        let labels = convert::labels("labels", &req.labels)?.into_iter().collect();
        let filter = ListFilter { states, labels };
        let (records, next) = self.0.list(&tenant, &filter, page_size, after).await?;
        Ok(Response::new(pb::ListSandboxesResponse {
            sandboxes: records.into_iter().map(convert::sandbox_to_pb).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    #[tracing::instrument(name = "api.Sandboxes.Destroy", skip_all)]
    async fn destroy(
        &self,
        req: Request<pb::DestroySandboxRequest>,
    ) -> Result<Response<pb::DestroySandboxResponse>, Status> {
        let tenant = tenant(&req);
        let id = convert::sandbox_id("id", &req.get_ref().id)?;
        let record = self.0.end(&tenant, &id, SandboxState::Stopped, "destroyed by client").await?;
        Ok(Response::new(pb::DestroySandboxResponse { sandbox: Some(convert::sandbox_to_pb(record)) }))
    }

    #[tracing::instrument(name = "api.Sandboxes.Pause", skip_all)]
    async fn pause(&self, req: Request<pb::PauseSandboxRequest>) -> Result<Response<pb::PauseSandboxResponse>, Status> {
        let tenant = tenant(&req);
        let id = convert::sandbox_id("id", &req.get_ref().id)?;
        let record = self.0.set_paused(&tenant, &id, true).await?;
        Ok(Response::new(pb::PauseSandboxResponse { sandbox: Some(convert::sandbox_to_pb(record)) }))
    }

    #[tracing::instrument(name = "api.Sandboxes.Resume", skip_all)]
    async fn resume(
        &self,
        req: Request<pb::ResumeSandboxRequest>,
    ) -> Result<Response<pb::ResumeSandboxResponse>, Status> {
        let tenant = tenant(&req);
        let id = convert::sandbox_id("id", &req.get_ref().id)?;
        let record = self.0.set_paused(&tenant, &id, false).await?;
        Ok(Response::new(pb::ResumeSandboxResponse { sandbox: Some(convert::sandbox_to_pb(record)) }))
    }

    #[tracing::instrument(name = "api.Sandboxes.SetTimeout", skip_all)]
    async fn set_timeout(
        &self,
        req: Request<pb::SetSandboxTimeoutRequest>,
    ) -> Result<Response<pb::SetSandboxTimeoutResponse>, Status> {
        let tenant = tenant(&req);
        let id = convert::sandbox_id("id", &req.get_ref().id)?;
        let seconds = convert::set_timeout_seconds(req.get_ref().timeout_seconds, &self.0.config)?;
        let record = self.0.set_timeout(&tenant, &id, seconds).await?;
        Ok(Response::new(pb::SetSandboxTimeoutResponse { sandbox: Some(convert::sandbox_to_pb(record)) }))
    }
}
