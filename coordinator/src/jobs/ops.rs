//! Job and batch operations in domain terms, served by every coordinator: submit (with
//! idempotency keys), read, wait, cancel.

use std::time::Duration;

use corral_core::ids::{NodeId, TenantId};
use corral_core::jobs::{BatchId, BatchRecord, JobId, JobRecord, JobState};
use corral_core::protocol::RpcRequest;
use corral_core::time::now_ms;
use futures::future::join_all;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::records::{self, GROUP, Writes};
use super::service::Jobs;
use crate::error::thousands;
use crate::error::{ApiError, ApiResult};

/// What a Submit returns.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub id: String,
    /// False when an earlier Submit with the same idempotency key created it.
    pub created: bool,
}

/// Stable 64-bit FNV-1a hash of a request body (for idempotency-key conflicts).
pub fn body_hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Jobs {
    /// Refuses a submit that would push the tenant's queue over the configured limit.
    pub(super) fn check_queue(&self, tenant: &TenantId, adding: usize) -> ApiResult<()> {
        let queued = self.table.lock().queued(tenant);
        let limit = self.limits.max_queued_jobs_per_tenant;
        if queued + adding > limit {
            return Err(ApiError::NoCapacity(format!(
                "tenant {tenant} has {} jobs queued; adding {} would exceed the limit of {} \
                 (max_queued_jobs_per_tenant): wait for queued jobs to run, or submit fewer",
                thousands(queued as u64),
                thousands(adding as u64),
                thousands(limit as u64)
            )));
        }
        Ok(())
    }

    /// What an idempotency key already maps to: `Ok(Some(id))` for the same body, a conflict
    /// error for a different one.
    pub(super) async fn idem_lookup(&self, tenant: &TenantId, key: &str, hash: &str) -> ApiResult<Option<String>> {
        let Some(idem) = records::get_idem(self.store.as_ref(), tenant, key).await? else { return Ok(None) };
        if idem.body_hash != hash {
            return Err(ApiError::FailedPrecondition(format!(
                "idempotency_key {key:?} was used for a different request (it created {})",
                idem.id
            )));
        }
        Ok(Some(idem.id))
    }

    /// Writes a new job durably (and its idempotency key, in the same transaction).
    pub async fn submit(&self, record: JobRecord, idem: Option<&str>) -> ApiResult<Submitted> {
        records::check_record_size("job", &record)?;
        let tenant = record.tenant.clone();
        if let Some(key) = idem
            && let Some(id) = self.idem_lookup(&tenant, key, &record.body_hash).await?
        {
            return Ok(Submitted { id, created: false });
        }
        self.check_queue(&tenant, 1)?;
        let write = records::JobWrite::new(0, record);
        let mut txn = Writes::new().job(&write);
        let record = write.record;
        if let Some(key) = idem {
            txn = txn.idem(&tenant, key, record.id.to_string(), record.body_hash.clone());
        }
        let out = txn.run(self.store.as_ref()).await?;
        if !out.succeeded {
            // Only a concurrent submit with the same key can make this fail (ids are random).
            let key = idem.unwrap_or_default();
            return match self.idem_lookup(&tenant, key, &record.body_hash).await? {
                Some(id) => Ok(Submitted { id, created: false }),
                None => Err(ApiError::Conflict(format!("job {}", record.id))),
            };
        }
        let id = record.id.to_string();
        self.table.apply_job(record, out.revision, out.revision);
        Ok(Submitted { id, created: true })
    }

    /// Reads a job record and the revision it was read at.
    pub async fn get(&self, tenant: &TenantId, id: &JobId) -> ApiResult<(i64, JobRecord)> {
        let found = records::get_job(self.store.as_ref(), tenant, id).await?;
        found.ok_or_else(|| ApiError::NotFound(format!("job {id}")))
    }

    /// Waits until the job is terminal or `timeout` passes; returns the record as it is then.
    pub async fn wait(&self, tenant: &TenantId, id: &JobId, timeout: Duration) -> ApiResult<JobRecord> {
        let mut changes = self.table.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            let (_, record) = self.get(tenant, id).await?;
            if record.state.is_terminal() {
                return Ok(record);
            }
            // Wait for a change of this job that the index shows as terminal (or the deadline).
            loop {
                match tokio::time::timeout_at(deadline, changes.recv()).await {
                    Err(_) => return Ok(self.get(tenant, id).await?.1),
                    Ok(Ok(changed)) if &changed == id => {
                        if self.table.job(id).is_some_and(|e| e.state.is_terminal()) {
                            break;
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(RecvError::Lagged(_))) => break,
                    Ok(Err(RecvError::Closed)) => return Err(ApiError::Internal("job index stopped".into())),
                }
            }
        }
    }

    /// Ends a live job as CANCELLED and kills its running attempt; an ended job is returned as is.
    pub async fn cancel(&self, tenant: &TenantId, id: &JobId, why: &str) -> ApiResult<JobRecord> {
        for _ in 0..16 {
            let (revision, record) = self.get(tenant, id).await?;
            if record.state.is_terminal() {
                return Ok(record);
            }
            let next = records::cancel(&record, why).map_err(|e| ApiError::Internal(e.to_string()))?;
            let out = Writes::new().put_job(revision, &next).run(self.store.as_ref()).await?;
            if !out.succeeded {
                continue;
            }
            self.table.apply_job(next.clone(), out.revision, 0);
            if let (JobState::Running, Some(node)) = (record.state, &record.node) {
                self.kill_attempt(node, id, record.attempt).await;
            }
            return Ok(next);
        }
        Err(ApiError::Conflict(format!("job {id}")))
    }

    async fn kill_attempt(&self, node: &NodeId, id: &JobId, attempt: u32) {
        let req = RpcRequest::CancelJob { job: id.clone(), attempt };
        if let Err(e) = self.dispatch.rpc(node, &req).await {
            // The attempt's result will be rejected; its sandbox ends with the node's GC or fencing.
            tracing::warn!(job = %id, %node, error = %e, "could not reach the node to kill a cancelled job");
        }
    }

    /// Reads a batch record and the revision it was read at.
    pub async fn get_batch(&self, tenant: &TenantId, id: &BatchId) -> ApiResult<(i64, BatchRecord)> {
        let found = records::get_batch(self.store.as_ref(), tenant, id).await?;
        found.ok_or_else(|| ApiError::NotFound(format!("batch {id}")))
    }

    /// Marks a batch cancelled and cancels its live items.
    pub async fn cancel_batch(&self, tenant: &TenantId, id: &BatchId, why: &str) -> ApiResult<BatchRecord> {
        let record = loop {
            let (revision, mut record) = self.get_batch(tenant, id).await?;
            let done = self.table.batch(id).is_some_and(|e| e.done());
            if record.cancelled.is_some() || done {
                break record;
            }
            records::close_batch(&mut record, why, now_ms()).map_err(|e| ApiError::Internal(e.to_string()))?;
            let out = Writes::new().put_batch(revision, &record).run(self.store.as_ref()).await?;
            if out.succeeded {
                self.table.apply_batch(record.clone(), out.revision);
                break record;
            }
        };
        if let Some(c) = &record.cancelled {
            self.cancel_items(tenant, id, &c.reason).await;
        }
        Ok(record)
    }

    /// Cancels every live item of a cancelled batch.
    pub(super) async fn cancel_items(&self, tenant: &TenantId, batch: &BatchId, why: &str) {
        let live: Vec<JobId> = {
            let inner = self.table.lock();
            inner
                .jobs
                .iter()
                .filter(|(_, e)| !e.state.is_terminal() && e.batch.as_ref().is_some_and(|(b, _)| b == batch))
                .map(|(id, _)| id.clone())
                .collect()
        };
        for chunk in live.chunks(GROUP) {
            let cancels = chunk.iter().map(|id| self.cancel(tenant, id, why));
            for r in join_all(cancels).await {
                if let Err(e) = r {
                    tracing::warn!(error = %e, %batch, "could not cancel a batch item; the sweep retries");
                }
            }
        }
    }
}
