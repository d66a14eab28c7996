//! Job and batch operations in domain terms, served by every coordinator: submit (with
//! idempotency keys), read, wait, cancel, and the batch sweeps the leader runs.

use std::sync::Arc;
use std::time::Duration;

use corral_core::ids::TenantId;
use corral_core::jobs::{BatchId, BatchRecord, Cancelled, IdemRecord, JobId, JobRecord, JobSpec, JobState};
use corral_core::keys::{BatchKey, IdemKey, JobKey};
use corral_core::protocol::RpcRequest;
use corral_core::store::{self, KeyValue, StateStore, Txn};
use corral_core::time::{now_ms, now_ms_after};
use futures::future::join_all;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::schedule::GROUP;
use crate::api::job_convert::thousands;
use crate::error::{ApiError, ApiResult};
use crate::service::Core;

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

/// A new PENDING job record.
pub fn new_job(id: JobId, tenant: &TenantId, spec: JobSpec, retries: u32, body_hash: String) -> JobRecord {
    JobRecord {
        v: JobRecord::VERSION,
        id,
        tenant: tenant.clone(),
        spec,
        state: JobState::Pending,
        attempt: 0,
        node: None,
        retries,
        failures: 0,
        infra_failures: 0,
        result: None,
        reason: String::new(),
        created_at_ms: now_ms(),
        started_at_ms: 0,
        finished_at_ms: 0,
        body_hash,
    }
}

/// Refuses a submit that would push the tenant's queue over the configured limit.
pub(crate) fn check_queue(core: &Core, tenant: &TenantId, adding: usize) -> ApiResult<()> {
    let queued = core.view.jobs.lock().queued(tenant);
    if queued + adding > core.config.max_queued_jobs_per_tenant {
        return Err(ApiError::NoCapacity(format!(
            "tenant {tenant} has {} jobs queued; adding {} would exceed the limit of {} \
             (max_queued_jobs_per_tenant): wait for queued jobs to run, or submit fewer",
            thousands(queued as u64),
            thousands(adding as u64),
            thousands(core.config.max_queued_jobs_per_tenant as u64)
        )));
    }
    Ok(())
}

/// What an idempotency key already maps to: `Ok(Some(id))` for the same body, a conflict
/// error for a different one.
pub(crate) async fn idem_lookup(
    store: &dyn StateStore,
    tenant: &TenantId,
    key: &str,
    hash: &str,
) -> ApiResult<Option<String>> {
    let Some(kv) = store.get(&IdemKey { tenant, key }.to_string()).await? else { return Ok(None) };
    let idem: IdemRecord = store::decode(&kv)?;
    if idem.body_hash != hash {
        return Err(ApiError::FailedPrecondition(format!(
            "idempotency_key {key:?} was used for a different request (it created {})",
            idem.id
        )));
    }
    Ok(Some(idem.id))
}

/// Refuses a job whose record would not fit in a store transaction.
pub fn check_record_size(field: &str, record: &JobRecord) -> ApiResult<()> {
    let size = store::encode(record).len();
    if size > super::MAX_RECORD_BYTES {
        let why = format!(
            "the job is {size} bytes once stored (code, env, stdin, argv); at most {}",
            super::MAX_RECORD_BYTES
        );
        return Err(ApiError::field(field, why));
    }
    Ok(())
}

/// Writes a new job durably (and its idempotency key, in the same transaction).
pub async fn submit(core: &Core, record: JobRecord, idem: Option<&str>) -> ApiResult<Submitted> {
    check_record_size("job", &record)?;
    let tenant = record.tenant.clone();
    if let Some(key) = idem
        && let Some(id) = idem_lookup(core.store.as_ref(), &tenant, key, &record.body_hash).await?
    {
        return Ok(Submitted { id, created: false });
    }
    check_queue(core, &tenant, 1)?;
    let job_key = JobKey { tenant: &tenant, id: &record.id };
    let mut txn = Txn::new().when(&job_key, 0).put(&job_key, store::encode(&record));
    if let Some(key) = idem {
        let idem_record = IdemRecord { id: record.id.to_string(), body_hash: record.body_hash.clone() };
        let k = IdemKey { tenant: &tenant, key };
        txn = txn.when(&k, 0).put(&k, store::encode(&idem_record));
    }
    let out = core.store.txn(txn).await?;
    if !out.succeeded {
        // Only a concurrent submit with the same key can make this fail (ids are random).
        let key = idem.unwrap_or_default();
        return match idem_lookup(core.store.as_ref(), &tenant, key, &record.body_hash).await? {
            Some(id) => Ok(Submitted { id, created: false }),
            None => Err(ApiError::Conflict(format!("job {}", record.id))),
        };
    }
    core.view.jobs.apply_job(record.clone(), out.revision, out.revision);
    Ok(Submitted { id: record.id.to_string(), created: true })
}

/// Reads a job record.
pub async fn get(core: &Core, tenant: &TenantId, id: &JobId) -> ApiResult<(KeyValue, JobRecord)> {
    let kv = core.store.get(&JobKey { tenant, id }.to_string()).await?;
    let kv = kv.ok_or_else(|| ApiError::NotFound(format!("job {id}")))?;
    let record = store::decode(&kv)?;
    Ok((kv, record))
}

/// Waits until the job is terminal or `timeout` passes; returns the record as it is then.
pub async fn wait(core: &Core, tenant: &TenantId, id: &JobId, timeout: Duration) -> ApiResult<JobRecord> {
    let mut changes = core.view.jobs.subscribe();
    let deadline = Instant::now() + timeout;
    loop {
        let (_, record) = get(core, tenant, id).await?;
        if record.state.is_terminal() {
            return Ok(record);
        }
        // Wait for a change of this job that the index shows as terminal (or for the deadline).
        loop {
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Err(_) => return Ok(get(core, tenant, id).await?.1),
                Ok(Ok(changed)) if &changed == id => {
                    if core.view.jobs.job(id).is_some_and(|e| e.state.is_terminal()) {
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
pub async fn cancel(core: &Core, tenant: &TenantId, id: &JobId, why: &str) -> ApiResult<JobRecord> {
    for _ in 0..16 {
        let (kv, record) = get(core, tenant, id).await?;
        if record.state.is_terminal() {
            return Ok(record);
        }
        let mut next = record.clone();
        next.state =
            record.state.check_transition(JobState::Cancelled).map_err(|e| ApiError::Internal(e.to_string()))?;
        next.reason = why.to_owned();
        next.finished_at_ms = now_ms_after(record.started_at_ms.max(record.created_at_ms));
        let key = JobKey { tenant, id };
        let out = core.store.txn(Txn::new().when(&key, kv.mod_revision).put(&key, store::encode(&next))).await?;
        if !out.succeeded {
            continue;
        }
        core.view.jobs.apply_job(next.clone(), out.revision, 0);
        if let (JobState::Running, Some(node)) = (record.state, &record.node) {
            kill_attempt(core, node, id, record.attempt).await;
        }
        return Ok(next);
    }
    Err(ApiError::Conflict(format!("job {id}")))
}

async fn kill_attempt(core: &Core, node: &corral_core::ids::NodeId, id: &JobId, attempt: u32) {
    let req = RpcRequest::CancelJob { job: id.clone(), attempt };
    if let Err(e) = core.dispatch.rpc(node, &req).await {
        // The attempt's result will be rejected; its sandbox ends with the node's GC or fencing.
        tracing::warn!(job = %id, %node, error = %e, "could not reach the node to kill a cancelled job");
    }
}

/// Reads a batch record.
pub async fn get_batch(core: &Core, tenant: &TenantId, id: &BatchId) -> ApiResult<(KeyValue, BatchRecord)> {
    let kv = core.store.get(&BatchKey { tenant, id }.to_string()).await?;
    let kv = kv.ok_or_else(|| ApiError::NotFound(format!("batch {id}")))?;
    let record = store::decode(&kv)?;
    Ok((kv, record))
}

/// Marks a batch cancelled and cancels its live items.
pub async fn cancel_batch(core: &Core, tenant: &TenantId, id: &BatchId, why: &str) -> ApiResult<BatchRecord> {
    let record = loop {
        let (kv, mut record) = get_batch(core, tenant, id).await?;
        let done = core.view.jobs.batch(id).is_some_and(|e| e.done());
        if record.cancelled.is_some() || done {
            break record;
        }
        super::upload::close(&mut record, why);
        let key = BatchKey { tenant, id };
        let out = core.store.txn(Txn::new().when(&key, kv.mod_revision).put(&key, store::encode(&record))).await?;
        if out.succeeded {
            core.view.jobs.apply_batch(record.clone(), out.revision);
            break record;
        }
    };
    if let Some(c) = &record.cancelled {
        cancel_items(core, tenant, id, &c.reason).await;
    }
    Ok(record)
}

/// Cancels every live item of a cancelled batch.
pub(crate) async fn cancel_items(core: &Core, tenant: &TenantId, batch: &BatchId, why: &str) {
    let live: Vec<JobId> = {
        let inner = core.view.jobs.lock();
        inner
            .jobs
            .iter()
            .filter(|(_, e)| !e.state.is_terminal() && e.batch.as_ref().is_some_and(|(b, _)| b == batch))
            .map(|(id, _)| id.clone())
            .collect()
    };
    for chunk in live.chunks(GROUP) {
        let cancels = chunk.iter().map(|id| cancel(core, tenant, id, why));
        for r in join_all(cancels).await {
            if let Err(e) = r {
                tracing::warn!(error = %e, %batch, "could not cancel a batch item; the sweep retries");
            }
        }
    }
}

/// Leader sweep: cancels batches past their deadline and finishes cancels that were interrupted.
pub async fn sweep_batches(core: &Arc<Core>) {
    let now = now_ms();
    let (overdue, unfinished): (Vec<_>, Vec<_>) = {
        let inner = core.view.jobs.lock();
        let overdue = inner
            .batches
            .values()
            .filter(|b| {
                // etcd's lease timer decides; records from before deadline keys use the time.
                let r = &b.record;
                let passed = match r.deadline_lease {
                    0 => r.deadline_at_ms > 0 && r.deadline_at_ms <= now,
                    _ => inner.deadlines_gone.contains(&r.id),
                };
                r.cancelled.is_none() && passed
            })
            .filter(|b| !b.done())
            .map(|b| (b.record.tenant.clone(), b.record.id.clone()))
            .collect();
        let unfinished = inner
            .batches
            .values()
            .filter(|b| b.record.cancelled.is_some() && b.live() > 0)
            .map(|b| {
                (
                    b.record.tenant.clone(),
                    b.record.id.clone(),
                    b.record.cancelled.clone().unwrap_or_else(|| Cancelled { reason: String::new(), at_ms: 0 }).reason,
                )
            })
            .collect();
        (overdue, unfinished)
    };
    for (tenant, id) in overdue {
        if let Err(e) = cancel_batch(core, &tenant, &id, "the batch's deadline passed").await {
            tracing::warn!(batch = %id, error = %e, "could not cancel a batch past its deadline");
        }
    }
    for (tenant, id, why) in unfinished {
        cancel_items(core, &tenant, &id, &why).await;
    }
    let upload_timeout = core.config.batch_upload_timeout_seconds.saturating_mul(1000);
    super::upload::sweep_abandoned(core, i64::try_from(upload_timeout).unwrap_or(i64::MAX)).await;
}
