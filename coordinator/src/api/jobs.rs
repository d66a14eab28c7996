//! `corral.v1.Jobs` and `corral.v1.Batches`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use corral_core::jobs::{BatchId, JobId, JobState};
use corral_proto::v1 as pb;
use corral_proto::v1::jobs_server::Jobs as JobsService;
use prost::Message;
use tonic::{Request, Response, Status};

use super::job_convert::{self as jc, within};
use super::{convert, tenant};
use crate::config::CoordinatorConfig;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{Jobs, records};

const DEFAULT_PAGE: i32 = 100;
const MAX_PAGE: i32 = 1000;
/// Most records a List reads to fill one page (filters may skip many).
const MAX_SCAN: usize = 10_000;
const DEFAULT_WAIT: f64 = 60.0;
const MAX_WAIT: f64 = 3600.0;

fn job_id(raw: &str) -> ApiResult<JobId> {
    JobId::parse(raw).map_err(|e| ApiError::invalid_id("job_id", e))
}

pub(super) fn batch_id(raw: &str) -> ApiResult<BatchId> {
    BatchId::parse(raw).map_err(|e| ApiError::invalid_id("batch_id", e))
}

pub(super) fn page_size(raw: i32) -> ApiResult<usize> {
    match raw {
        0 => Ok(DEFAULT_PAGE as usize),
        1..=MAX_PAGE => Ok(raw as usize),
        _ => Err(ApiError::field("page_size", format!("{raw} is outside 1..={MAX_PAGE} (0 = {DEFAULT_PAGE})"))),
    }
}

/// A page token is the last key of the previous page, which must lie under `prefix`.
pub(super) fn page_token<'a>(raw: &'a str, prefix: &str) -> ApiResult<Option<&'a str>> {
    if raw.is_empty() {
        return Ok(None);
    }
    if !raw.starts_with(prefix) || raw.len() > 512 {
        return Err(ApiError::field("page_token", "is not a token returned by this listing"));
    }
    Ok(Some(raw))
}

/// Refuses a request over `max_request_bytes` (the gRPC layer refuses those over twice that
/// before reading them), naming the limit and what to do instead.
pub(super) fn request_bytes(cfg: &CoordinatorConfig, size: usize, way_out: &str) -> ApiResult<()> {
    if size > cfg.max_request_bytes {
        return Err(ApiError::OverLimit(format!(
            "the request is {} bytes and exceeds max_request_bytes {}; {way_out}",
            crate::error::thousands(size as u64),
            crate::error::thousands(cfg.max_request_bytes as u64)
        )));
    }
    Ok(())
}

/// The `Jobs` service: the jobs component, and the settings that bound what a request may ask.
pub struct JobsApi {
    pub jobs: Arc<Jobs>,
    pub config: Arc<CoordinatorConfig>,
}

#[tonic::async_trait]
impl JobsService for JobsApi {
    #[tracing::instrument(name = "api.Jobs.Submit", skip_all)]
    async fn submit(&self, req: Request<pb::SubmitJobRequest>) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let tenant = tenant(&req);
        let way_out = "a job's code, stdin, argv and env must fit in one stored record (about 1.2 MB); pass larger inputs as files";
        request_bytes(&self.config, req.get_ref().encoded_len(), way_out)?;
        let mut req = req.into_inner();
        let key = std::mem::take(&mut req.idempotency_key);
        let idem = jc::idempotency_key(&key)?;
        let hash = if idem.is_some() { jc::hash_of(&req) } else { String::new() };
        let retries = jc::retries("retries", req.retries)?;
        let raw = req.job.ok_or_else(|| ApiError::field("job", "is required"))?;
        let spec = jc::job_spec(raw, &self.config, &self.jobs.view.nodes()).map_err(|e| within("job.", e))?;
        let record = records::new_job(JobId::random(), &tenant, spec, retries, hash);
        let done = self.jobs.submit(record, idem).await?;
        Ok(Response::new(pb::SubmitJobResponse { job_id: done.id, created: done.created }))
    }

    #[tracing::instrument(name = "api.Jobs.Get", skip_all)]
    async fn get(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::GetJobResponse>, Status> {
        let tenant = tenant(&req);
        let id = job_id(&req.get_ref().job_id)?;
        let (_, record) = self.jobs.get(&tenant, &id).await?;
        let position = self.jobs.table.queue_position(&tenant, &id);
        Ok(Response::new(pb::GetJobResponse { job: Some(jc::job_to_pb(record, position, true)) }))
    }

    #[tracing::instrument(name = "api.Jobs.Wait", skip_all)]
    async fn wait(&self, req: Request<pb::WaitJobRequest>) -> Result<Response<pb::WaitJobResponse>, Status> {
        let tenant = tenant(&req);
        let req = req.into_inner();
        let id = job_id(&req.job_id)?;
        let t = req.timeout_seconds;
        if !t.is_finite() || !(0.0..=MAX_WAIT).contains(&t) {
            return Err(ApiError::field(
                "timeout_seconds",
                format!("{t} is outside 0..={MAX_WAIT} (0 = {DEFAULT_WAIT})"),
            )
            .into());
        }
        let timeout = Duration::from_secs_f64(if t == 0.0 { DEFAULT_WAIT } else { t });
        let record = self.jobs.wait(&tenant, &id, timeout).await?;
        let done = record.state.is_terminal();
        let position = self.jobs.table.queue_position(&tenant, &id);
        Ok(Response::new(pb::WaitJobResponse { job: Some(jc::job_to_pb(record, position, true)), done }))
    }

    #[tracing::instrument(name = "api.Jobs.Cancel", skip_all)]
    async fn cancel(&self, req: Request<pb::CancelJobRequest>) -> Result<Response<pb::CancelJobResponse>, Status> {
        let tenant = tenant(&req);
        let id = job_id(&req.get_ref().job_id)?;
        let record = self.jobs.cancel(&tenant, &id, "cancelled by client").await?;
        Ok(Response::new(pb::CancelJobResponse { job: Some(jc::job_to_pb(record, 0, true)) }))
    }

    #[tracing::instrument(name = "api.Jobs.List", skip_all)]
    async fn list(&self, req: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let tenant = tenant(&req);
        let req = req.into_inner();
        let limit = page_size(req.page_size)?;
        let states: HashSet<JobState> =
            req.states.iter().map(|s| jc::state_from_pb("states", *s)).collect::<ApiResult<_>>()?;
        let labels = convert::labels("labels", &req.labels)?;
        let batch = match req.batch_id.as_str() {
            "" => None,
            raw => Some(batch_id(raw)?),
        };
        let prefix = records::jobs_prefix(&tenant, batch.as_ref());
        let mut after = page_token(&req.page_token, &prefix)?.map(str::to_owned);
        let (mut jobs, mut scanned) = (Vec::new(), 0);
        let next = loop {
            let page = self
                .jobs
                .store
                .range(&prefix, after.as_deref(), limit.min(MAX_SCAN - scanned).max(1))
                .await
                .map_err(ApiError::from)?;
            scanned += page.kvs.len();
            for kv in &page.kvs {
                after = Some(kv.key.clone());
                let record = records::decode_job(kv).map_err(ApiError::from)?;
                let labelled = labels.iter().all(|(k, v)| record.spec.labels.get(k) == Some(v));
                if (states.is_empty() || states.contains(&record.state)) && labelled {
                    jobs.push(jc::job_to_pb(record, 0, false));
                    if jobs.len() == limit {
                        break;
                    }
                }
            }
            if !page.more && jobs.len() < limit || after.is_none() {
                break String::new();
            }
            if jobs.len() == limit || scanned >= MAX_SCAN {
                break after.clone().unwrap_or_default();
            }
        };
        Ok(Response::new(pb::ListJobsResponse { jobs, next_page_token: next }))
    }

    #[tracing::instrument(name = "api.Jobs.Logs", skip_all)]
    async fn logs(&self, req: Request<pb::JobLogsRequest>) -> Result<Response<pb::JobLogsResponse>, Status> {
        let tenant = tenant(&req);
        let id = job_id(&req.get_ref().job_id)?;
        let (_, record) = self.jobs.get(&tenant, &id).await?;
        let Some(result) = record.result else {
            return Ok(Response::new(pb::JobLogsResponse::default()));
        };
        let (stdout, stderr) = if result.clipped {
            let logs = records::get_logs(self.jobs.store.as_ref(), &tenant, &id).await.map_err(ApiError::from)?;
            match logs {
                Some(logs) => (logs.stdout, logs.stderr),
                None => (result.stdout, result.stderr),
            }
        } else {
            (result.stdout, result.stderr)
        };
        Ok(Response::new(pb::JobLogsResponse { stdout, stderr, truncated: result.status.truncated }))
    }
}
