//! `corral.v1.Sandboxes`.

use std::sync::Arc;

use corral_core::state::SandboxState;
use corral_proto::v1 as pb;
use corral_proto::v1::sandboxes_server::Sandboxes as SandboxesService;
use tonic::{Request, Response, Status};

use super::{codebase_convert, convert, tenant};
use crate::codebases::Codebases;
use crate::config::CoordinatorConfig;
use crate::error::ApiError;
use crate::sandboxes::{ListFilter, Sandboxes};

pub struct SandboxesApi {
    pub sandboxes: Arc<Sandboxes>,
    pub codebases: Arc<Codebases>,
    pub config: Arc<CoordinatorConfig>,
}

const DEFAULT_PAGE: i32 = 100;
const MAX_PAGE: i32 = 1000;

#[tonic::async_trait]
impl SandboxesService for SandboxesApi {
    #[tracing::instrument(name = "api.Sandboxes.Create", skip_all)]
    async fn create(
        &self,
        req: Request<pb::CreateSandboxRequest>,
    ) -> Result<Response<pb::CreateSandboxResponse>, Status> {
        let tenant = tenant(&req);
        let req = req.into_inner();
        let ask = codebase_convert::codebase_ask(&req)?;
        let mut spec = convert::create_spec(req, tenant, &self.config)?;
        if let Some(ask) = ask {
            // The sandbox sees the codebase as it is now; later uploads do not change it.
            let codebase = self.codebases.get(&spec.tenant, &ask.id).await?;
            spec.codebase = Some(Box::new(codebase_convert::mount(ask, codebase.manifest.unwrap_or_default())?));
        }
        let record = self.sandboxes.create(spec).await?;
        Ok(Response::new(pb::CreateSandboxResponse { sandbox: Some(convert::sandbox_to_pb(record)) }))
    }

    #[tracing::instrument(name = "api.Sandboxes.Get", skip_all)]
    async fn get(&self, req: Request<pb::GetSandboxRequest>) -> Result<Response<pb::GetSandboxResponse>, Status> {
        let tenant = tenant(&req);
        let id = convert::sandbox_id("id", &req.get_ref().id)?;
        let record = self.sandboxes.get(&tenant, &id).await?;
        let status = self.sandboxes.node_status(&record).await;
        let mut sandbox = convert::sandbox_to_pb(record);
        if let Some((disk, codebase_failed)) = status {
            sandbox.disk_usage = disk.map(convert::disk_usage_to_pb);
            if codebase_failed {
                sandbox.codebase_error =
                    "the codebase's permission file system failed: its files answer EIO; recreate the sandbox".into();
            }
        }
        Ok(Response::new(pb::GetSandboxResponse { sandbox: Some(sandbox) }))
    }

    #[tracing::instrument(name = "api.Sandboxes.GetByName", skip_all)]
    async fn get_by_name(
        &self,
        req: Request<pb::GetSandboxByNameRequest>,
    ) -> Result<Response<pb::GetSandboxResponse>, Status> {
        let tenant = tenant(&req);
        let name = convert::sandbox_name("name", &req.get_ref().name)?;
        let record = self.sandboxes.get_by_name(&tenant, &name).await?;
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
        let (records, next) = self.sandboxes.list(&tenant, &filter, page_size, after).await?;
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
        let record = self.sandboxes.end(&tenant, &id, SandboxState::Stopped, "destroyed by client").await?;
        Ok(Response::new(pb::DestroySandboxResponse { sandbox: Some(convert::sandbox_to_pb(record)) }))
    }

    #[tracing::instrument(name = "api.Sandboxes.Pause", skip_all)]
    async fn pause(&self, req: Request<pb::PauseSandboxRequest>) -> Result<Response<pb::PauseSandboxResponse>, Status> {
        let tenant = tenant(&req);
        let id = convert::sandbox_id("id", &req.get_ref().id)?;
        let record = self.sandboxes.set_paused(&tenant, &id, true).await?;
        Ok(Response::new(pb::PauseSandboxResponse { sandbox: Some(convert::sandbox_to_pb(record)) }))
    }

    #[tracing::instrument(name = "api.Sandboxes.Resume", skip_all)]
    async fn resume(
        &self,
        req: Request<pb::ResumeSandboxRequest>,
    ) -> Result<Response<pb::ResumeSandboxResponse>, Status> {
        let tenant = tenant(&req);
        let id = convert::sandbox_id("id", &req.get_ref().id)?;
        let record = self.sandboxes.set_paused(&tenant, &id, false).await?;
        Ok(Response::new(pb::ResumeSandboxResponse { sandbox: Some(convert::sandbox_to_pb(record)) }))
    }

    #[tracing::instrument(name = "api.Sandboxes.SetTimeout", skip_all)]
    async fn set_timeout(
        &self,
        req: Request<pb::SetSandboxTimeoutRequest>,
    ) -> Result<Response<pb::SetSandboxTimeoutResponse>, Status> {
        let tenant = tenant(&req);
        let id = convert::sandbox_id("id", &req.get_ref().id)?;
        let seconds = convert::set_timeout_seconds(req.get_ref().timeout_seconds, &self.config)?;
        let record = self.sandboxes.set_timeout(&tenant, &id, seconds).await?;
        Ok(Response::new(pb::SetSandboxTimeoutResponse { sandbox: Some(convert::sandbox_to_pb(record)) }))
    }

    #[tracing::instrument(name = "api.Sandboxes.Diff", skip_all)]
    async fn diff(&self, req: Request<pb::DiffSandboxRequest>) -> Result<Response<pb::DiffSandboxResponse>, Status> {
        let tenant = tenant(&req);
        let id = convert::sandbox_id("id", &req.get_ref().id)?;
        let (changes, truncated) = self.sandboxes.diff(&tenant, &id).await?;
        Ok(Response::new(pb::DiffSandboxResponse {
            changes: changes.iter().map(codebase_convert::change_to_pb).collect(),
            truncated,
        }))
    }
}
