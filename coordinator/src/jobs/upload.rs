//! Batch uploads. A batch is created with its declared total and its first part; the following
//! parts are appended in index order (idempotent by index: a part sent again is harmless); it is
//! accepted (its items become schedulable) when the last part lands. The request path holds one
//! part at a time, never the whole batch.
//!
//! An upload that stops is resumable: a retried Submit with the same idempotency key answers how
//! many items arrived, and Append goes on from there. After `batch_upload_timeout_seconds`
//! without a part the leader's sweep abandons it: the batch is cancelled with the items that
//! arrived (which never ran), so its queue room is freed.

use std::collections::BTreeMap;

use corral_core::ids::TenantId;
use corral_core::jobs::{BatchId, BatchRecord, Cancelled, JobRecord, JobSpec};
use corral_core::store::StateStore;
use corral_core::time::now_ms;
use futures::future::join_all;

use super::ops::Submitted;
use super::records::{self, GROUP, JobWrite, TXN_BYTES, Writes};
use super::service::Jobs;
use crate::error::thousands;
use crate::error::{ApiError, ApiResult};

/// How far an upload got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Items stored: indexes `0..received`.
    pub received: u32,
    /// Every item is stored; the batch runs.
    pub accepted: bool,
}

impl Progress {
    fn of(batch: &BatchRecord) -> Self {
        Self { received: batch.received(), accepted: batch.accepted }
    }
}

/// The item records of a part starting at `first` (ids, retries and labels from the batch);
/// refuses any item too large to store, naming it by its place in the request (`items[i]`).
pub fn item_records(batch: &BatchRecord, first: u32, specs: Vec<JobSpec>) -> ApiResult<Vec<JobRecord>> {
    let mut records = Vec::with_capacity(specs.len());
    for (i, mut spec) in specs.into_iter().enumerate() {
        merge_labels(&batch.labels, &mut spec.labels);
        let id = batch.item_id(first + i as u32);
        let record = records::new_job(id, &batch.tenant, spec, batch.retries_per_item, String::new());
        records::check_record_size(&format!("items[{i}]"), &record)?;
        records.push(record);
    }
    Ok(records)
}

/// Labels of a batch merged under an item's own.
fn merge_labels(batch: &BTreeMap<String, String>, item: &mut BTreeMap<String, String>) {
    for (k, v) in batch {
        item.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

impl Jobs {
    /// Creates `batch` (not accepted) with its idempotency key and stores its first part. When
    /// the key already made a batch, that one is returned; its first part is stored again where
    /// missing, so a retried Submit finishes an interrupted one.
    pub async fn create_batch(
        &self,
        batch: BatchRecord,
        first: Vec<JobRecord>,
        idem: Option<&str>,
    ) -> ApiResult<(Submitted, Progress)> {
        let tenant = batch.tenant.clone();
        if let Some(key) = idem
            && let Some(id) = self.idem_lookup(&tenant, key, &batch.body_hash).await?
        {
            let existing = BatchId::parse(&id).map_err(|e| ApiError::Internal(e.to_string()))?;
            let (revision, record) = self.get_batch(&tenant, &existing).await?;
            if let Some(c) = &record.cancelled {
                return Err(closed(&record, c));
            }
            let first: Vec<JobRecord> = first
                .into_iter()
                .enumerate()
                .map(|(i, mut r)| {
                    r.id = record.item_id(i as u32);
                    r
                })
                .collect();
            let progress = self.store_part(record, revision, 0, first).await?;
            return Ok((Submitted { id, created: false }, progress));
        }
        self.check_queue(&tenant, batch.total as usize)?;
        let mut txn = Writes::new().create_batch(&batch);
        if let Some(key) = idem {
            txn = txn.idem(&tenant, key, batch.id.to_string(), batch.body_hash.clone());
        }
        let out = self.forget_lost_lease(txn.run(self.store.as_ref()).await.map_err(ApiError::from))?;
        if !out.succeeded {
            return Err(ApiError::Conflict("batch submit with this idempotency_key".into()));
        }
        let id = batch.id.to_string();
        let progress = self.store_part(batch, out.revision, 0, first).await?;
        Ok((Submitted { id, created: true }, progress))
    }
}

/// Checks that a part of `count` items from `first` may be appended to `batch`.
pub fn check_append(batch: &BatchRecord, first: u32, count: usize) -> ApiResult<()> {
    if let Some(c) = &batch.cancelled {
        return Err(closed(batch, c));
    }
    let end = u64::from(first) + count as u64;
    if end > u64::from(batch.total) {
        return Err(ApiError::field(
            "items",
            format!(
                "{} items from first_index {} go past the batch's total of {} (the last index is {})",
                thousands(count as u64),
                thousands(first.into()),
                thousands(batch.total.into()),
                thousands(u64::from(batch.total.saturating_sub(1)))
            ),
        ));
    }
    let received = batch.received();
    if first > received {
        return Err(ApiError::FailedPrecondition(format!(
            "first_index {} would leave a gap: batch {} has received {} of {} items; append from index {}",
            thousands(first.into()),
            batch.id,
            thousands(received.into()),
            thousands(batch.total.into()),
            thousands(received.into())
        )));
    }
    Ok(())
}

fn closed(batch: &BatchRecord, c: &Cancelled) -> ApiError {
    ApiError::FailedPrecondition(format!(
        "batch {} was cancelled ({}) and takes no more items; submit it again with a new idempotency_key",
        batch.id, c.reason
    ))
}

impl Jobs {
    /// Appends a part to a batch being uploaded (after [`check_append`]).
    pub async fn append(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        first: u32,
        specs: Vec<JobSpec>,
    ) -> ApiResult<Progress> {
        let (revision, batch) = self.get_batch(tenant, id).await?;
        check_append(&batch, first, specs.len())?;
        let items = item_records(&batch, first, specs)?;
        self.store_part(batch, revision, first, items).await
    }

    /// Stores the items of a part that are not stored yet, then advances the batch's `received`
    /// (accepting it when the last part landed) with a compare-and-swap on its revision.
    async fn store_part(
        &self,
        mut batch: BatchRecord,
        mut revision: i64,
        first: u32,
        items: Vec<JobRecord>,
    ) -> ApiResult<Progress> {
        let end = first + items.len() as u32;
        let skip = batch.received().saturating_sub(first) as usize;
        let fresh: Vec<JobWrite> = items.into_iter().skip(skip).map(|r| JobWrite::new(0, r)).collect();
        let runs = records::split(fresh, GROUP, TXN_BYTES, JobWrite::size);
        for result in join_all(runs.iter().map(|run| put_absent(self.store.as_ref(), run))).await {
            result?;
        }
        drop(runs);
        for _ in 0..32 {
            if let Some(c) = &batch.cancelled {
                return Err(closed(&batch, c));
            }
            if batch.received() >= end {
                return Ok(Progress::of(&batch));
            }
            records::receive_part(&mut batch, end, now_ms()).map_err(|e| ApiError::Internal(e.to_string()))?;
            let out = Writes::new().put_batch(revision, &batch).run(self.store.as_ref()).await?;
            if out.succeeded {
                let progress = Progress::of(&batch);
                self.table.apply_batch(batch, out.revision);
                return Ok(progress);
            }
            (revision, batch) = self.get_batch(&batch.tenant.clone(), &batch.id.clone()).await?;
        }
        Err(ApiError::Conflict(format!("batch {}", batch.id)))
    }

    /// Leader sweep: abandons uploads with no part for `timeout_ms`: cancels the batch (its
    /// total becomes what arrived, none of which ran) and its items.
    pub(super) async fn sweep_abandoned(&self, timeout_ms: i64) {
        // How long since a part arrived is measured on this coordinator's clock (from when its
        // index saw the record change), never by comparing times written by other coordinators.
        let timeout = std::time::Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0));
        let stale: Vec<(TenantId, BatchId, i64)> = {
            let inner = self.table.lock();
            inner
                .batches
                .values()
                .filter(|b| b.revision > 0 && !b.record.accepted && b.record.cancelled.is_none())
                .filter(|b| b.changed.elapsed() >= timeout)
                .map(|b| (b.record.tenant.clone(), b.record.id.clone(), b.revision))
                .collect()
        };
        for (tenant, id, revision) in stale {
            if let Err(e) = self.abandon(&tenant, &id, revision, timeout_ms).await {
                tracing::warn!(batch = %id, error = %e, "could not abandon a stalled batch upload; the sweep retries");
            }
        }
    }

    async fn abandon(&self, tenant: &TenantId, id: &BatchId, seen: i64, timeout_ms: i64) -> ApiResult<()> {
        let (revision, mut batch) = self.get_batch(tenant, id).await?;
        // A part that arrived since the index saw the record postpones it.
        if batch.accepted || batch.cancelled.is_some() || revision != seen {
            return Ok(());
        }
        let reason = format!(
            "upload abandoned: no part for {} s after {} of {} items",
            timeout_ms / 1000,
            thousands(batch.received().into()),
            thousands(batch.total.into())
        );
        records::close_batch(&mut batch, &reason, now_ms()).map_err(|e| ApiError::Internal(e.to_string()))?;
        let out = Writes::new().put_batch(revision, &batch).run(self.store.as_ref()).await?;
        if out.succeeded {
            tracing::info!(batch = %id, %reason, "batch upload abandoned");
            self.table.apply_batch(batch, out.revision);
            self.cancel_items(tenant, id, &reason).await;
        }
        Ok(())
    }
}

/// Writes records that do not exist yet (all in one transaction when none exists).
async fn put_absent(store: &dyn StateStore, items: &[JobWrite]) -> ApiResult<()> {
    let txn = items.iter().fold(Writes::new(), Writes::job);
    if txn.run(store).await?.succeeded {
        return Ok(());
    }
    for w in items {
        Writes::new().job(w).run(store).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(total: u32, received: u32) -> BatchRecord {
        BatchRecord {
            v: BatchRecord::VERSION,
            id: BatchId::random(),
            tenant: TenantId::default_tenant(),
            total,
            max_concurrency: 1,
            retries_per_item: 0,
            deadline_at_ms: 0,
            deadline_lease: 0,
            labels: BTreeMap::new(),
            created_at_ms: 1,
            accepted: received == total,
            received: Some(received),
            updated_at_ms: 1,
            index_digits: corral_core::jobs::INDEX_DIGITS,
            cancelled: None,
            body_hash: String::new(),
        }
    }

    #[test]
    fn parts_must_follow_on_and_stay_within_the_total() {
        let b = batch(2500, 1000);
        assert!(check_append(&b, 1000, 1000).is_ok(), "the next part");
        assert!(check_append(&b, 0, 1000).is_ok(), "a part sent again");
        assert!(check_append(&b, 500, 1000).is_ok(), "an overlapping part");
        let gap = check_append(&b, 2000, 500).unwrap_err();
        assert_eq!(gap.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            gap.to_string(),
            format!(
                "first_index 2,000 would leave a gap: batch {} has received 1,000 of 2,500 items; append from index 1,000",
                b.id
            )
        );
        let past = check_append(&b, 2000, 501).unwrap_err();
        assert_eq!(past.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            past.to_string(),
            "items: 501 items from first_index 2,000 go past the batch's total of 2,500 (the last index is 2,499)"
        );
    }

    #[test]
    fn a_closed_upload_takes_no_more_parts_and_shrinks_to_what_arrived() {
        let mut b = batch(3000, 1000);
        records::close_batch(&mut b, "cancelled by client", now_ms()).unwrap();
        assert_eq!((b.total, b.received()), (1000, 1000));
        let e = check_append(&b, 1000, 10).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.to_string().contains("was cancelled (cancelled by client)"), "{e}");
        let mut done = batch(10, 10);
        records::close_batch(&mut done, "x", now_ms()).unwrap();
        assert_eq!(done.total, 10, "an accepted batch keeps its total");
    }

    #[test]
    fn items_take_the_batch_labels_retries_and_ids() {
        let mut b = batch(10, 0);
        b.retries_per_item = 2;
        b.labels.insert("suite".into(), "nightly".into());
        let spec = crate::jobs::test_record(b.item_id(0), corral_core::jobs::JobState::Pending).spec;
        let mut own = spec.clone();
        own.labels.insert("suite".into(), "mine".into());
        let records = item_records(&b, 4, vec![spec, own]).unwrap();
        assert_eq!(records[0].id, b.item_id(4));
        assert_eq!(records[1].batch_item(), Some((b.id.clone(), 5)));
        assert_eq!(records[0].retries, 2);
        assert_eq!(records[0].spec.labels["suite"], "nightly");
        assert_eq!(records[1].spec.labels["suite"], "mine", "an item's own label wins");
    }
}
