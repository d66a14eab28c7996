//! `corral.v1.Jobs` and `corral.v1.Batches`.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use corral_core::jobs::{BatchId, BatchRecord, JobId, JobLogs, JobRecord, JobState, MAX_BATCH_ITEMS};
use corral_core::keys::{BatchesPrefix, JobLogsKey, JobsPrefix};
use corral_core::store;
use corral_core::time::now_ms;
use corral_proto::v1 as pb;
use corral_proto::v1::batches_server::Batches;
use corral_proto::v1::jobs_server::Jobs;
use futures::Stream;
use tonic::{Request, Response, Status};

use super::job_convert::{self as jc, within};
use super::{convert, tenant};
use crate::error::{ApiError, ApiResult};
use crate::jobs::ops;
use crate::service::Core;

const DEFAULT_PAGE: i32 = 100;
const MAX_PAGE: i32 = 1000;
/// Most records a List reads to fill one page (filters may skip many).
const MAX_SCAN: usize = 10_000;
const DEFAULT_WAIT: f64 = 60.0;
const MAX_WAIT: f64 = 3600.0;
const DEFAULT_CONCURRENCY: u32 = 20;

fn job_id(raw: &str) -> ApiResult<JobId> {
    JobId::parse(raw).map_err(|e| ApiError::invalid_id("job_id", e))
}

fn batch_id(raw: &str) -> ApiResult<BatchId> {
    BatchId::parse(raw).map_err(|e| ApiError::invalid_id("batch_id", e))
}

fn page_size(raw: i32) -> ApiResult<usize> {
    match raw {
        0 => Ok(DEFAULT_PAGE as usize),
        1..=MAX_PAGE => Ok(raw as usize),
        _ => Err(ApiError::field("page_size", format!("{raw} is outside 1..={MAX_PAGE} (0 = {DEFAULT_PAGE})"))),
    }
}

/// A page token is the last key of the previous page, which must lie under `prefix`.
fn page_token<'a>(raw: &'a str, prefix: &str) -> ApiResult<Option<&'a str>> {
    if raw.is_empty() {
        return Ok(None);
    }
    if !raw.starts_with(prefix) || raw.len() > 512 {
        return Err(ApiError::field("page_token", "is not a token returned by this listing"));
    }
    Ok(Some(raw))
}

pub struct JobsApi(pub Arc<Core>);

#[tonic::async_trait]
impl Jobs for JobsApi {
    #[tracing::instrument(name = "api.Jobs.Submit", skip_all)]
    async fn submit(&self, req: Request<pb::SubmitJobRequest>) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let tenant = tenant(&req);
        let mut req = req.into_inner();
        let key = std::mem::take(&mut req.idempotency_key);
        let idem = jc::idempotency_key(&key)?;
        let hash = if idem.is_some() { jc::hash_of(&req) } else { String::new() };
        let retries = jc::retries("retries", req.retries)?;
        let raw = req.job.ok_or_else(|| ApiError::field("job", "is required"))?;
        let spec = jc::job_spec(raw, &self.0.config, &self.0.view.nodes()).map_err(|e| within("job.", e))?;
        let record = ops::new_job(JobId::random(), &tenant, spec, retries, hash);
        let done = ops::submit(&self.0, record, idem).await?;
        Ok(Response::new(pb::SubmitJobResponse { job_id: done.id, created: done.created }))
    }

    #[tracing::instrument(name = "api.Jobs.Get", skip_all)]
    async fn get(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::GetJobResponse>, Status> {
        let tenant = tenant(&req);
        let id = job_id(&req.get_ref().job_id)?;
        let (_, record) = ops::get(&self.0, &tenant, &id).await?;
        let position = self.0.view.jobs.queue_position(&tenant, &id);
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
        let record = ops::wait(&self.0, &tenant, &id, timeout).await?;
        let done = record.state.is_terminal();
        let position = self.0.view.jobs.queue_position(&tenant, &id);
        Ok(Response::new(pb::WaitJobResponse { job: Some(jc::job_to_pb(record, position, true)), done }))
    }

    #[tracing::instrument(name = "api.Jobs.Cancel", skip_all)]
    async fn cancel(&self, req: Request<pb::CancelJobRequest>) -> Result<Response<pb::CancelJobResponse>, Status> {
        let tenant = tenant(&req);
        let id = job_id(&req.get_ref().job_id)?;
        let record = ops::cancel(&self.0, &tenant, &id, "cancelled by client").await?;
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
        let prefix = match req.batch_id.as_str() {
            "" => JobsPrefix(Some(&tenant)).to_string(),
            raw => format!("{}{}", JobsPrefix(Some(&tenant)), JobId::item_prefix(&batch_id(raw)?)),
        };
        let mut after = page_token(&req.page_token, &prefix)?.map(str::to_owned);
        let (mut jobs, mut scanned) = (Vec::new(), 0);
        let next = loop {
            let page = self
                .0
                .store
                .range(&prefix, after.as_deref(), limit.min(MAX_SCAN - scanned).max(1))
                .await
                .map_err(ApiError::from)?;
            scanned += page.kvs.len();
            for kv in &page.kvs {
                after = Some(kv.key.clone());
                let record: JobRecord = store::decode(kv).map_err(ApiError::from)?;
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
        let (_, record) = ops::get(&self.0, &tenant, &id).await?;
        let Some(result) = record.result else {
            return Ok(Response::new(pb::JobLogsResponse::default()));
        };
        let (stdout, stderr) = if result.clipped {
            let kv =
                self.0.store.get(&JobLogsKey { tenant: &tenant, id: &id }.to_string()).await.map_err(ApiError::from)?;
            match kv {
                Some(kv) => {
                    let logs: JobLogs = store::decode(&kv).map_err(ApiError::from)?;
                    (logs.stdout, logs.stderr)
                }
                None => (result.stdout, result.stderr),
            }
        } else {
            (result.stdout, result.stderr)
        };
        Ok(Response::new(pb::JobLogsResponse { stdout, stderr, truncated: result.status.truncated }))
    }
}

pub struct BatchesApi(pub Arc<Core>);

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::BatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Batches for BatchesApi {
    #[tracing::instrument(name = "api.Batches.Submit", skip_all)]
    async fn submit(&self, req: Request<pb::SubmitBatchRequest>) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let tenant = tenant(&req);
        let mut req = req.into_inner();
        let key = std::mem::take(&mut req.idempotency_key);
        let idem = jc::idempotency_key(&key)?;
        let hash = if idem.is_some() { jc::hash_of(&req) } else { String::new() };
        if req.items.is_empty() || req.items.len() > MAX_BATCH_ITEMS {
            let why = format!("{} items; a batch has 1..={MAX_BATCH_ITEMS}", req.items.len());
            return Err(ApiError::field("items", why).into());
        }
        let max_concurrency = match req.max_concurrency {
            0 => DEFAULT_CONCURRENCY,
            n @ 1..=10_000 => n,
            n => {
                return Err(ApiError::field(
                    "max_concurrency",
                    format!("{n} is outside 1..=10000 (0 = {DEFAULT_CONCURRENCY})"),
                )
                .into());
            }
        };
        let retries = jc::retries("retries_per_item", req.retries_per_item)?;
        let now = now_ms();
        let deadline_at_ms = jc::batch_deadline_ms(req.deadline_seconds, now)?;
        let labels = convert::labels("labels", &req.labels)?;
        let nodes = self.0.view.nodes();
        let id = BatchId::random();
        let mut items = Vec::with_capacity(req.items.len());
        for (i, raw) in req.items.into_iter().enumerate() {
            let mut spec = jc::job_spec(raw, &self.0.config, &nodes).map_err(|e| within(&format!("items[{i}]."), e))?;
            ops::merge_labels(&labels, &mut spec.labels);
            let item = ops::new_job(JobId::item(&id, i as u32), &tenant, spec, retries, String::new());
            ops::check_record_size(&format!("items[{i}]"), &item)?;
            items.push(item);
        }
        let batch = BatchRecord {
            v: BatchRecord::VERSION,
            id,
            tenant: tenant.clone(),
            total: items.len() as u32,
            max_concurrency,
            retries_per_item: retries,
            deadline_at_ms,
            labels,
            created_at_ms: now,
            accepted: false,
            cancelled: None,
            body_hash: hash,
        };
        let done = ops::submit_batch(&self.0, batch, items, idem).await?;
        Ok(Response::new(pb::SubmitBatchResponse { batch_id: done.id, created: done.created }))
    }

    #[tracing::instrument(name = "api.Batches.Get", skip_all)]
    async fn get(&self, req: Request<pb::GetBatchRequest>) -> Result<Response<pb::GetBatchResponse>, Status> {
        let tenant = tenant(&req);
        let id = batch_id(&req.get_ref().batch_id)?;
        let (_, record) = ops::get_batch(&self.0, &tenant, &id).await?;
        let entry = self.0.view.jobs.batch(&id);
        Ok(Response::new(pb::GetBatchResponse { batch: Some(jc::batch_to_pb(record, entry.as_ref())) }))
    }

    type WatchStream = EventStream;

    #[tracing::instrument(name = "api.Batches.Watch", skip_all)]
    async fn watch(&self, req: Request<pb::WatchBatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let tenant = tenant(&req);
        let req = req.into_inner();
        let id = batch_id(&req.batch_id)?;
        let (_, record) = ops::get_batch(&self.0, &tenant, &id).await?;
        if req.from_seq > u64::from(record.total) {
            let why = format!("{} is past the batch's {} items", req.from_seq, record.total);
            return Err(ApiError::field("from_seq", why).into());
        }
        let stream = super::batch_watch::stream(self.0.clone(), tenant, id, req.from_seq);
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(name = "api.Batches.Cancel", skip_all)]
    async fn cancel(&self, req: Request<pb::CancelBatchRequest>) -> Result<Response<pb::CancelBatchResponse>, Status> {
        let tenant = tenant(&req);
        let id = batch_id(&req.get_ref().batch_id)?;
        let record = ops::cancel_batch(&self.0, &tenant, &id, "cancelled by client").await?;
        let entry = self.0.view.jobs.batch(&id);
        Ok(Response::new(pb::CancelBatchResponse { batch: Some(jc::batch_to_pb(record, entry.as_ref())) }))
    }

    #[tracing::instrument(name = "api.Batches.List", skip_all)]
    async fn list(&self, req: Request<pb::ListBatchesRequest>) -> Result<Response<pb::ListBatchesResponse>, Status> {
        let tenant = tenant(&req);
        let req = req.into_inner();
        let limit = page_size(req.page_size)?;
        let labels = convert::labels("labels", &req.labels)?;
        let prefix = BatchesPrefix(Some(&tenant)).to_string();
        let after = page_token(&req.page_token, &prefix)?;
        let page = self.0.store.range(&prefix, after, limit).await.map_err(ApiError::from)?;
        let mut batches = Vec::new();
        for kv in &page.kvs {
            let record: BatchRecord = store::decode(kv).map_err(ApiError::from)?;
            if labels.iter().all(|(k, v)| record.labels.get(k) == Some(v)) {
                let entry = self.0.view.jobs.batch(&record.id);
                batches.push(jc::batch_to_pb(record, entry.as_ref()));
            }
        }
        let next = if page.more { page.kvs.last().map(|kv| kv.key.clone()).unwrap_or_default() } else { String::new() };
        Ok(Response::new(pb::ListBatchesResponse { batches, next_page_token: next }))
    }
}
