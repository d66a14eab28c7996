//! `corral.v1.Batches`: Submit (the whole batch, or its first part), Append (the next parts),
//! Get, Watch, Cancel, List. Limits on one request (`max_items_per_request`,
//! `max_request_bytes`) and on a batch (`max_batch_items`) are checked before anything is
//! decoded into records or written; an over-limit is RESOURCE_EXHAUSTED naming the limit and
//! the way out.

use std::pin::Pin;
use std::sync::Arc;

use corral_core::ids::TenantId;
use corral_core::jobs::{BatchId, BatchRecord, JobSpec};
use corral_core::time::now_ms;
use corral_proto::v1 as pb;
use corral_proto::v1::batches_server::Batches;
use futures::Stream;
use prost::Message;
use tonic::{Request, Response, Status};

use super::job_convert::{self as jc, within};
use super::jobs::{batch_id, page_size, page_token, request_bytes};
use super::{convert, tenant};
use crate::config::CoordinatorConfig;
use crate::error::thousands;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{Jobs, records, upload};

const DEFAULT_CONCURRENCY: u32 = 20;
const MAX_CONCURRENCY: u32 = 10_000;

/// What to do about a request holding too much.
const IN_PARTS: &str = "send the batch in parts: Batches.Submit with total_items and the first part, then \
                        Batches.Append for the rest (`corral batch run` and the SDKs do this)";

/// Checks the size of one request: its bytes and its item count.
fn check_request(cfg: &CoordinatorConfig, bytes: usize, items: usize) -> ApiResult<()> {
    request_bytes(cfg, bytes, IN_PARTS)?;
    if items == 0 {
        return Err(ApiError::field("items", "at least one item is required"));
    }
    if items > cfg.max_items_per_request {
        return Err(ApiError::OverLimit(format!(
            "{} items exceed max_items_per_request {}; {IN_PARTS}",
            thousands(items as u64),
            thousands(cfg.max_items_per_request as u64)
        )));
    }
    Ok(())
}

/// The batch's declared size: `total_items`, or the items of a batch sent in one request.
fn total(cfg: &CoordinatorConfig, total_items: u32, items: usize) -> ApiResult<u32> {
    let total = if total_items == 0 { items as u64 } else { u64::from(total_items) };
    if total > cfg.max_batch_items as u64 {
        return Err(ApiError::OverLimit(format!(
            "{} items exceed max_batch_items {}; split the work into several batches",
            thousands(total),
            thousands(cfg.max_batch_items as u64)
        )));
    }
    if items as u64 > total {
        let why = format!("{} items are more than total_items {}", thousands(items as u64), thousands(total));
        return Err(ApiError::field("items", why));
    }
    Ok(total as u32)
}

/// Validates every item of a part starting at batch index `first` before anything is written;
/// errors name `items[i].field` and, in a later part, the item's index in the batch.
fn specs(api: &BatchesApi, first: u32, raw: Vec<pb::JobSpec>) -> ApiResult<Vec<JobSpec>> {
    let nodes = api.jobs.view.nodes();
    let named = |i: usize, e: ApiError| match within(&format!("items[{i}]."), e) {
        ApiError::InvalidField { field, why } if first > 0 => {
            let index = thousands(u64::from(first) + i as u64);
            ApiError::InvalidField { field, why: format!("{why} (item {index} of the batch)") }
        }
        other => other,
    };
    raw.into_iter()
        .enumerate()
        .map(|(i, item)| jc::job_spec(item, &api.config, &nodes).map_err(|e| named(i, e)))
        .collect()
}

fn max_concurrency(raw: u32) -> ApiResult<u32> {
    match raw {
        0 => Ok(DEFAULT_CONCURRENCY),
        n @ 1..=MAX_CONCURRENCY => Ok(n),
        n => Err(ApiError::field(
            "max_concurrency",
            format!("{n} is outside 1..={MAX_CONCURRENCY} (0 = {DEFAULT_CONCURRENCY})"),
        )),
    }
}

/// The new batch's record (not accepted, nothing received) from a checked request.
fn new_batch(tenant: TenantId, req: &pb::SubmitBatchRequest, total: u32, body_hash: String) -> ApiResult<BatchRecord> {
    let now = now_ms();
    let mut batch = records::new_batch(BatchId::random(), tenant, total, now, body_hash);
    batch.max_concurrency = max_concurrency(req.max_concurrency)?;
    batch.retries_per_item = jc::retries("retries_per_item", req.retries_per_item)?;
    batch.deadline_at_ms = jc::batch_deadline_ms(req.deadline_seconds, now)?;
    batch.labels = convert::labels("labels", &req.labels)?;
    Ok(batch)
}

/// The `Batches` service: the jobs component, and the settings that bound what a request may ask.
pub struct BatchesApi {
    pub jobs: Arc<Jobs>,
    pub config: Arc<CoordinatorConfig>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::BatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Batches for BatchesApi {
    #[tracing::instrument(name = "api.Batches.Submit", skip_all)]
    async fn submit(&self, req: Request<pb::SubmitBatchRequest>) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let cfg = &self.config;
        check_request(cfg, req.get_ref().encoded_len(), req.get_ref().items.len())?;
        let tenant = tenant(&req);
        let mut req = req.into_inner();
        let key = std::mem::take(&mut req.idempotency_key);
        let idem = jc::idempotency_key(&key)?;
        let hash = if idem.is_some() { jc::hash_of(&req) } else { String::new() };
        let total = total(cfg, req.total_items, req.items.len())?;
        let mut batch = new_batch(tenant, &req, total, hash)?;
        if batch.deadline_at_ms > 0 {
            let after = std::time::Duration::from_secs_f64(req.deadline_seconds);
            batch.deadline_lease = self.jobs.deadline_lease_after(after).await?;
        }
        let items = specs(self, 0, std::mem::take(&mut req.items))?;
        let first = upload::item_records(&batch, 0, items)?;
        let (done, progress) = self.jobs.create_batch(batch, first, idem).await?;
        Ok(Response::new(pb::SubmitBatchResponse {
            batch_id: done.id,
            created: done.created,
            received: progress.received,
            accepted: progress.accepted,
        }))
    }

    #[tracing::instrument(name = "api.Batches.Append", skip_all, fields(batch_id))]
    async fn append(&self, req: Request<pb::AppendBatchRequest>) -> Result<Response<pb::AppendBatchResponse>, Status> {
        check_request(&self.config, req.get_ref().encoded_len(), req.get_ref().items.len())?;
        let tenant = tenant(&req);
        let req = req.into_inner();
        let id = batch_id(&req.batch_id)?;
        tracing::Span::current().record("batch_id", id.as_str());
        let items = specs(self, req.first_index, req.items)?;
        let progress = self.jobs.append(&tenant, &id, req.first_index, items).await?;
        Ok(Response::new(pb::AppendBatchResponse { received: progress.received, accepted: progress.accepted }))
    }

    #[tracing::instrument(name = "api.Batches.Get", skip_all)]
    async fn get(&self, req: Request<pb::GetBatchRequest>) -> Result<Response<pb::GetBatchResponse>, Status> {
        let tenant = tenant(&req);
        let id = batch_id(&req.get_ref().batch_id)?;
        let (_, record) = self.jobs.get_batch(&tenant, &id).await?;
        let entry = self.jobs.table.batch(&id);
        Ok(Response::new(pb::GetBatchResponse { batch: Some(jc::batch_to_pb(record, entry.as_ref())) }))
    }

    type WatchStream = EventStream;

    #[tracing::instrument(name = "api.Batches.Watch", skip_all)]
    async fn watch(&self, req: Request<pb::WatchBatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let tenant = tenant(&req);
        let req = req.into_inner();
        let id = batch_id(&req.batch_id)?;
        let (_, record) = self.jobs.get_batch(&tenant, &id).await?;
        if req.from_seq > u64::from(record.total) {
            let why = format!("{} is past the batch's {} items", req.from_seq, record.total);
            return Err(ApiError::field("from_seq", why).into());
        }
        let stream = super::batch_watch::stream(self.jobs.clone(), tenant, id, req.from_seq);
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(name = "api.Batches.Cancel", skip_all)]
    async fn cancel(&self, req: Request<pb::CancelBatchRequest>) -> Result<Response<pb::CancelBatchResponse>, Status> {
        let tenant = tenant(&req);
        let id = batch_id(&req.get_ref().batch_id)?;
        let record = self.jobs.cancel_batch(&tenant, &id, "cancelled by client").await?;
        let entry = self.jobs.table.batch(&id);
        Ok(Response::new(pb::CancelBatchResponse { batch: Some(jc::batch_to_pb(record, entry.as_ref())) }))
    }

    #[tracing::instrument(name = "api.Batches.List", skip_all)]
    async fn list(&self, req: Request<pb::ListBatchesRequest>) -> Result<Response<pb::ListBatchesResponse>, Status> {
        let tenant = tenant(&req);
        let req = req.into_inner();
        let limit = page_size(req.page_size)?;
        let labels = convert::labels("labels", &req.labels)?;
        let prefix = records::batches_prefix(&tenant);
        let after = page_token(&req.page_token, &prefix)?;
        let page = self.jobs.store.range(&prefix, after, limit).await.map_err(ApiError::from)?;
        let mut batches = Vec::new();
        for kv in &page.kvs {
            let record = records::decode_batch(kv).map_err(ApiError::from)?;
            if labels.iter().all(|(k, v)| record.labels.get(k) == Some(v)) {
                let entry = self.jobs.table.batch(&record.id);
                batches.push(jc::batch_to_pb(record, entry.as_ref()));
            }
        }
        let next = if page.more { page.kvs.last().map(|kv| kv.key.clone()).unwrap_or_default() } else { String::new() };
        Ok(Response::new(pb::ListBatchesResponse { batches, next_page_token: next }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_limit_requests_name_the_limit_and_the_way_out() {
        let cfg = CoordinatorConfig::default();
        let e = check_request(&cfg, 1000, 1_200_000).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert_eq!(e.to_string(), format!("1,200,000 items exceed max_items_per_request 10,000; {IN_PARTS}"));
        let e = check_request(&cfg, 9 * 1024 * 1024, 10).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            e.to_string(),
            format!("the request is 9,437,184 bytes and exceeds max_request_bytes 8,388,608; {IN_PARTS}")
        );
        assert_eq!(check_request(&cfg, 10, 0).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert!(check_request(&cfg, 8 * 1024 * 1024, 10_000).is_ok());
    }

    #[test]
    fn a_batch_total_is_bounded_and_covers_its_first_part() {
        let cfg = CoordinatorConfig::default();
        assert_eq!(total(&cfg, 0, 7).unwrap(), 7, "no total_items: the request is the batch");
        assert_eq!(total(&cfg, 1_000_000, 1000).unwrap(), 1_000_000);
        let e = total(&cfg, 1_200_000, 1000).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            e.to_string(),
            "1,200,000 items exceed max_batch_items 1,000,000; split the work into several batches"
        );
        let e = total(&cfg, 5, 6).unwrap_err();
        assert_eq!(e.to_string(), "items: 6 items are more than total_items 5");
    }
}
