//! The leader's scheduling loop: claims pending jobs for nodes and sends them there, and sweeps
//! for jobs whose node died, whose work item may have been lost, and batches past their
//! deadline.
//!
//! A claim is a CAS on the job record (its revision as the index saw it) that bumps the attempt,
//! in a transaction that also requires the leader key at this leader's revision: a deposed leader
//! cannot claim anything, and two claims of one job cannot both succeed. Claims are
//! group-committed (up to [`GROUP`] jobs per transaction) and each node gets one work item per
//! group, whose message id is derived from the claim's revision.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use corral_core::ids::NodeId;
use corral_core::jobs::{BatchId, JobId, JobLogs, JobRecord, JobState, JobWork};
use corral_core::keys::{JobKey, JobLogsKey, LeaderKey};
use corral_core::protocol::Work;
use corral_core::store::{self, StoreError, Txn};
use corral_core::time::now_ms;
use futures::future::join_all;
use tokio::time::Instant;

use super::place::{self, Caps, Slots, Want};
use crate::service::Core;

/// Jobs per claim transaction (etcd allows 128 operations per transaction by default).
pub const GROUP: usize = 100;
/// A running attempt with no result this long after it was sent is sent again (the agent
/// ignores a duplicate of an attempt it runs, and re-sends the report of one it finished).
pub const REDISPATCH: Duration = Duration::from_secs(10);
/// How often the leader sweeps.
const SWEEP: Duration = Duration::from_secs(1);
/// Infrastructure failures of one job before it is LOST.
pub const MAX_INFRA_FAILURES: u32 = 5;

/// Runs until dropped; does work only while this coordinator leads.
pub async fn run(core: Arc<Core>) -> Result<(), String> {
    let table = core.view.jobs.clone();
    let mut last_sweep = Instant::now();
    loop {
        tokio::select! {
            _ = table.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let Some(fence) = core.leadership.fence() else { continue };
        while schedule_once(&core, fence).await > 0 {}
        if last_sweep.elapsed() >= SWEEP {
            last_sweep = Instant::now();
            sweep(&core, fence).await;
        }
    }
}

/// Plans and claims one round; returns how many jobs were claimed.
async fn schedule_once(core: &Arc<Core>, fence: i64) -> usize {
    let _one_planner = core.view.jobs.planning.lock().await;
    let plan = plan(core, &[]);
    if plan.is_empty() {
        return 0;
    }
    let mut claimed = 0;
    let groups: Vec<Vec<(JobId, NodeId)>> = plan.chunks(GROUP).map(<[_]>::to_vec).collect();
    for (n, _) in join_all(groups.into_iter().map(|g| claim(core, fence, g, None))).await {
        claimed += n;
    }
    claimed
}

/// Like one scheduling round, right after `node` reported results: returns the work claimed for
/// `node` (for the caller to hand over in its reply) and sends other nodes theirs.
pub async fn schedule_for(core: &Arc<Core>, fence: i64, node: &NodeId) -> Vec<JobWork> {
    let _one_planner = core.view.jobs.planning.lock().await;
    let plan = plan(core, &[]);
    claim_groups(core, fence, plan, node).await
}

/// Claims `plan` in groups; the work claimed for `node`.
async fn claim_groups(core: &Arc<Core>, fence: i64, plan: Vec<(JobId, NodeId)>, node: &NodeId) -> Vec<JobWork> {
    let groups: Vec<Vec<(JobId, NodeId)>> = plan.chunks(GROUP).map(<[_]>::to_vec).collect();
    join_all(groups.into_iter().map(|g| claim(core, fence, g, Some(node))))
        .await
        .into_iter()
        .flat_map(|(_, w)| w)
        .collect()
}

/// Most operations of either kind (conditions, writes) in a commit with its claims folded in:
/// below etcd's default limit of 128 per transaction.
const FUSED_OPS: usize = 120;

/// Commits `writes` (job records leaving RUNNING, each with a CAS on the revision the index
/// saw, and their full logs) and claims the next jobs for the slots they free, in one
/// transaction that also requires this leader's fence: the reply to a report then costs one
/// round trip to the store instead of two. `None` when that transaction failed (nothing was
/// written: a record moved, or the leadership did); otherwise the work claimed for `node`, the
/// other nodes' work being sent to them. Jobs beyond what fits in the transaction are claimed
/// in their own transactions, as a scheduling round would.
pub async fn commit_and_claim(
    core: &Arc<Core>,
    fence: i64,
    node: &NodeId,
    writes: &[(i64, JobRecord, Option<JobLogs>)],
) -> Result<Option<Vec<JobWork>>, StoreError> {
    let _one_planner = core.view.jobs.planning.lock().await;
    let finishing: Vec<JobId> = writes.iter().map(|(_, r, _)| r.id.clone()).collect();
    let mut plan = plan(core, &finishing);
    let mut txn = Txn::new().when(&LeaderKey, fence);
    let (mut conditions, mut puts, mut bytes) = (1 + writes.len(), 0, 0);
    for (revision, r, logs) in writes {
        let key = JobKey { tenant: &r.tenant, id: &r.id };
        let record = store::encode(r);
        bytes += record.len();
        txn = txn.when(&key, *revision).put(&key, record);
        puts += 1;
        if let Some(logs) = logs {
            let logs = store::encode(logs);
            bytes += logs.len();
            txn = txn.put(JobLogsKey { tenant: &r.tenant, id: &r.id }, logs);
            puts += 1;
        }
    }
    let room = FUSED_OPS.saturating_sub(conditions.max(puts));
    let later = plan.split_off(plan.len().min(room));
    let mut claims = prepare_claims(core, plan, now_ms());
    let mut over = Vec::new();
    while let Some(last) = claims.last()
        && bytes + claims.iter().map(|(_, _, b)| b.len()).sum::<usize>() > super::TXN_BYTES
    {
        over.push((last.1.id.clone(), last.1.node.clone().expect("a claim names its node")));
        claims.pop();
    }
    for (revision, r, record) in &claims {
        let key = JobKey { tenant: &r.tenant, id: &r.id };
        txn = txn.when(&key, *revision).put(&key, record.clone());
        conditions += 1;
    }
    debug_assert!(conditions <= FUSED_OPS + 1);
    let out = core.store.txn(txn).await?;
    if !out.succeeded {
        return Ok(None);
    }
    for (_, r, _) in writes {
        core.view.jobs.apply_job(r.clone(), out.revision, 0);
    }
    let won = claims.into_iter().map(|(_, r, _)| (out.revision, r)).collect();
    let mut kept = deliver(core, won, Some(node)).await;
    over.reverse();
    over.extend(later);
    if !over.is_empty() {
        kept.extend(claim_groups(core, fence, over, node).await);
    }
    Ok(Some(kept))
}

/// The pure placement over a snapshot of the index and the nodes, counting the RUNNING jobs in
/// `finishing` (about to be committed as ended) as gone.
fn plan(core: &Core, finishing: &[JobId]) -> Vec<(JobId, NodeId)> {
    let nodes = core.view.nodes();
    let sandboxes = core.view.sandbox_counts();
    let inner = core.view.jobs.lock();
    let (mut freed_node, mut freed_tenant, mut freed_batch) = (HashMap::new(), HashMap::new(), HashMap::new());
    for id in finishing {
        let Some(e) = inner.jobs.get(id).filter(|e| e.state == JobState::Running) else { continue };
        if let Some(node) = &e.node {
            *freed_node.entry(node.clone()).or_insert(0usize) += 1;
        }
        *freed_tenant.entry(e.tenant.clone()).or_insert(0usize) += 1;
        if let Some((b, _)) = &e.batch {
            *freed_batch.entry(b.clone()).or_insert(0usize) += 1;
        }
    }
    let less = |n: usize, freed: Option<&usize>| n.saturating_sub(freed.copied().unwrap_or(0));
    let running_by_tenant: HashMap<_, _> =
        inner.running_by_tenant.iter().map(|(t, n)| (t.clone(), less(*n, freed_tenant.get(t)))).collect();
    let running_by_batch: HashMap<_, _> =
        inner.running_by_batch.iter().map(|(b, n)| (b.clone(), less(*n, freed_batch.get(b)))).collect();
    let mut slots: Vec<Slots> = nodes
        .iter()
        .map(|n| {
            let used = sandboxes.get(&n.node_id).copied().unwrap_or(0)
                + less(inner.running_by_node.get(&n.node_id).copied().unwrap_or(0), freed_node.get(&n.node_id));
            Slots {
                node: n.node_id.clone(),
                free: (n.capacity.sandboxes as usize).saturating_sub(used),
                runtimes: n.runtimes.clone(),
                images: n.images.clone(),
                languages: n.languages.clone(),
            }
        })
        .collect();
    let total_free: usize = slots.iter().map(|s| s.free).sum();
    if total_free == 0 || inner.pending.is_empty() {
        return Vec::new();
    }
    let mut caps = Caps {
        per_tenant: core.config.max_running_jobs_per_tenant,
        running_by_tenant: running_by_tenant.clone(),
        per_batch: HashMap::new(),
        running_by_batch: running_by_batch.clone(),
    };
    let mut queues = Vec::with_capacity(inner.pending_by_batch.len());
    for (tenant, by_batch) in &inner.pending_by_batch {
        let room = core
            .config
            .max_running_jobs_per_tenant
            .saturating_sub(running_by_tenant.get(tenant).copied().unwrap_or(0))
            .min(4 * total_free + 64);
        queues.push((tenant.clone(), tenant_queue(&inner, by_batch, &running_by_batch, &mut caps.per_batch, room)));
    }
    place::plan(&mut slots, &queues, &mut caps)
}

/// Up to `room` of one tenant's pending jobs (`by_batch`) in queue order, at most as many of a
/// batch's as its cap leaves room for (`per_batch` gets the caps of the batches seen). One cursor
/// per batch with room, and one for jobs outside batches, merged in queue order: a batch at its
/// cap costs nothing however many items it has waiting.
fn tenant_queue(
    inner: &super::table::Inner,
    by_batch: &super::table::PendingByBatch,
    running_by_batch: &HashMap<BatchId, usize>,
    per_batch: &mut HashMap<BatchId, usize>,
    mut room: usize,
) -> Vec<Want> {
    use std::cmp::Reverse;
    let mut cursors = Vec::with_capacity(by_batch.len());
    for (batch, pending) in by_batch {
        let left = match batch {
            None => usize::MAX,
            Some(b) => {
                let Some(entry) = inner.batches.get(b).filter(|e| e.record.accepted && e.record.cancelled.is_none())
                else {
                    continue;
                };
                let cap = entry.record.max_concurrency as usize;
                per_batch.insert(b.clone(), cap);
                cap.saturating_sub(running_by_batch.get(b).copied().unwrap_or(0))
            }
        };
        if left > 0 {
            cursors.push((batch, pending.iter(), left));
        }
    }
    let mut heads = std::collections::BinaryHeap::with_capacity(cursors.len());
    for (i, (_, pending, _)) in cursors.iter_mut().enumerate() {
        if let Some((seq, id)) = pending.next() {
            heads.push(Reverse((*seq, id, i)));
        }
    }
    let mut queue = Vec::new();
    while room > 0
        && let Some(Reverse((_, id, i))) = heads.pop()
    {
        let (batch, pending, left) = &mut cursors[i];
        if let Some(record) = inner.jobs.get(id).and_then(|e| e.record.clone()) {
            room -= 1;
            *left -= 1;
            let language = match &record.spec.command {
                corral_core::jobs::JobCommand::Code { language, .. } => Some(language.clone()),
                _ => None,
            };
            queue.push(Want {
                id: id.clone(),
                batch: (*batch).clone(),
                runtime: record.spec.runtime,
                image: record.spec.image.clone(),
                language,
            });
        }
        if *left > 0
            && let Some((seq, id)) = pending.next()
        {
            heads.push(Reverse((*seq, id, i)));
        }
    }
    queue
}

/// Claims one group in one transaction (one by one if it fails), then sends each node its jobs,
/// except `keep`'s, which are returned (marked dispatched) for the caller to deliver.
async fn claim(
    core: &Arc<Core>,
    fence: i64,
    group: Vec<(JobId, NodeId)>,
    keep: Option<&NodeId>,
) -> (usize, Vec<JobWork>) {
    let claims = prepare_claims(core, group, now_ms());
    if claims.is_empty() {
        return (0, Vec::new());
    }
    let mut won: Vec<(i64, JobRecord)> = Vec::new();
    for run in super::split(claims, GROUP, super::TXN_BYTES, |(_, _, bytes)| bytes.len()) {
        let mut txn = Txn::new().when(&LeaderKey, fence);
        for (revision, r, bytes) in &run {
            let key = JobKey { tenant: &r.tenant, id: &r.id };
            txn = txn.when(&key, *revision).put(&key, bytes.clone());
        }
        match core.store.txn(txn).await {
            Ok(out) if out.succeeded => won.extend(run.into_iter().map(|(_, r, _)| (out.revision, r))),
            Ok(_) => won.extend(claim_one_by_one(core, fence, run).await),
            Err(e) => tracing::warn!(error = %e, "claiming jobs failed; they stay pending"),
        }
    }
    let n = won.len();
    (n, deliver(core, won, keep).await)
}

/// A claim to write: the revision claimed from, the new record and its encoding (each record
/// is encoded once).
type Claim = (i64, JobRecord, Vec<u8>);

/// The claims of `group`'s jobs that the index still has PENDING.
fn prepare_claims(core: &Core, group: Vec<(JobId, NodeId)>, now: i64) -> Vec<Claim> {
    let mut claims = Vec::with_capacity(group.len());
    let inner = core.view.jobs.lock();
    for (id, node) in group {
        let Some(entry) = inner.jobs.get(&id) else { continue };
        let Some(record) = entry.record.as_ref().filter(|r| r.state == JobState::Pending) else { continue };
        let mut next = (**record).clone();
        next.state = JobState::Running;
        next.attempt += 1;
        next.node = Some(node);
        next.started_at_ms = now;
        next.reason.clear();
        let bytes = store::encode(&next);
        claims.push((entry.revision, next, bytes));
    }
    claims
}

/// Applies won claims to the index and sends each node its jobs, except `keep`'s, which are
/// returned (marked dispatched) for the caller to deliver.
async fn deliver(core: &Core, won: Vec<(i64, JobRecord)>, keep: Option<&NodeId>) -> Vec<JobWork> {
    let table = &core.view.jobs;
    let mut by_node: HashMap<NodeId, (i64, Vec<JobWork>)> = HashMap::new();
    for (revision, r) in won {
        let node = r.node.clone().expect("a claim names its node");
        let work = JobWork { job: r.id.clone(), tenant: r.tenant.clone(), attempt: r.attempt, spec: r.spec.clone() };
        table.apply_job(r, revision, 0);
        let slot = by_node.entry(node).or_insert((revision, Vec::new()));
        slot.1.push(work);
    }
    let mut kept = Vec::new();
    for (node, (revision, jobs)) in by_node {
        // What rides on a reply must fit in one message with room to spare.
        if keep == Some(&node) && encoded_size(&jobs) <= WORK_BYTES {
            jobs.iter().for_each(|w| table.mark_dispatched(&w.job));
            kept = jobs;
            continue;
        }
        send_jobs(core, &node, jobs, &format!("claim.{revision}")).await;
    }
    kept
}

/// Most bytes of jobs in one work item (the bus carries at most 1 MiB per message).
const WORK_BYTES: usize = 512 * 1024;

fn encoded_size(jobs: &[JobWork]) -> usize {
    jobs.iter().map(|w| corral_core::protocol::encode(w).len()).sum()
}

/// Sends `jobs` to `node` in work items of at most [`WORK_BYTES`] (a single job may be larger:
/// its code and stdin are bounded below the bus limit), each with a message id derived from
/// `tag` and its first job; marks the sent ones dispatched.
async fn send_jobs(core: &Core, node: &NodeId, jobs: Vec<JobWork>, tag: &str) {
    let mut chunk: Vec<JobWork> = Vec::new();
    let mut bytes = 0;
    let mut chunks = Vec::new();
    for w in jobs {
        let size = corral_core::protocol::encode(&w).len();
        if !chunk.is_empty() && bytes + size > WORK_BYTES {
            chunks.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += size;
        chunk.push(w);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    for jobs in chunks {
        let ids: Vec<JobId> = jobs.iter().map(|w| w.job.clone()).collect();
        let msg_id = format!("{tag}.{node}.{}", ids[0]);
        match core.dispatch.send_work(node, |_| Work::RunJobs { jobs }, &msg_id).await {
            Ok(()) => ids.iter().for_each(|id| core.view.jobs.mark_dispatched(id)),
            Err(e) => tracing::warn!(%node, error = %e, "could not send jobs; the sweep sends them again"),
        }
    }
}

/// Claims each job in its own transaction after a group claim failed (some record changed, or
/// this coordinator is no longer the leader).
async fn claim_one_by_one(core: &Core, fence: i64, claims: Vec<Claim>) -> Vec<(i64, JobRecord)> {
    let tries = claims.into_iter().map(|(revision, r, bytes)| async move {
        let key = JobKey { tenant: &r.tenant, id: &r.id };
        let txn = Txn::new().when(&LeaderKey, fence).when(&key, revision).put(&key, bytes);
        match core.store.txn(txn).await {
            Ok(out) if out.succeeded => Some((out.revision, r)),
            _ => None,
        }
    });
    join_all(tries).await.into_iter().flatten().collect()
}

/// Re-queues jobs of vanished nodes, re-sends attempts that got no result, enforces batch
/// deadlines and finishes interrupted batch cancels.
async fn sweep(core: &Arc<Core>, fence: i64) {
    let nodes: std::collections::HashSet<NodeId> = core.view.nodes().into_iter().map(|n| n.node_id).collect();
    let (mut orphaned, mut resend) = (Vec::new(), Vec::new());
    {
        let inner = core.view.jobs.lock();
        for (id, e) in &inner.jobs {
            let (JobState::Running, Some(record), Some(node)) = (e.state, &e.record, &e.node) else { continue };
            if !nodes.contains(node) {
                orphaned.push((e.revision, record.clone()));
            } else if e.dispatched.is_none_or(|at| at.elapsed() >= REDISPATCH) {
                resend.push((id.clone(), record.clone()));
            }
        }
    }
    for (revision, record) in orphaned {
        let why =
            format!("node {} left the cluster while the job ran", record.node.as_ref().map_or("?", |n| n.as_str()));
        let next = super::commit::infra_failure(&record, &why, now_ms());
        let key = JobKey { tenant: &record.tenant, id: &record.id };
        let txn = Txn::new().when(&LeaderKey, fence).when(&key, revision).put(&key, store::encode(&next));
        match core.store.txn(txn).await {
            Ok(out) if out.succeeded => {
                tracing::warn!(job = %record.id, state = %next.state, "{why}");
                core.view.jobs.apply_job(next, out.revision, 0);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not re-queue a job of a lost node"),
        }
    }
    // Grouped per node: a long batch re-sends its running attempts every REDISPATCH.
    let mut by_node: HashMap<NodeId, Vec<JobWork>> = HashMap::new();
    for (id, record) in resend {
        let Some(node) = record.node.clone() else { continue };
        let work =
            JobWork { job: id, tenant: record.tenant.clone(), attempt: record.attempt, spec: record.spec.clone() };
        by_node.entry(node).or_default().push(work);
    }
    let tag = format!("again.{}", now_ms());
    for (node, jobs) in by_node {
        send_jobs(core, &node, jobs, &tag).await;
    }
    super::ops::sweep_batches(core).await;
}

#[cfg(test)]
mod tests {
    use corral_core::ids::TenantId;
    use corral_core::jobs::BatchRecord;

    use super::*;
    use crate::jobs::JobTable;

    fn job(id: JobId, state: JobState) -> JobRecord {
        crate::jobs::test_record(id, state)
    }

    fn batch(table: &JobTable, cap: u32, total: u32) -> BatchId {
        let id = BatchId::random();
        let record = BatchRecord {
            v: BatchRecord::VERSION,
            id: id.clone(),
            tenant: TenantId::default_tenant(),
            total,
            max_concurrency: cap,
            retries_per_item: 0,
            deadline_at_ms: 0,
            labels: Default::default(),
            created_at_ms: 1,
            accepted: true,
            cancelled: None,
            body_hash: String::new(),
        };
        table.apply_batch(record, 1);
        id
    }

    #[test]
    fn a_tenant_queue_passes_over_full_batches_in_queue_order() {
        let table = JobTable::default();
        let (full, open) = (batch(&table, 1, 4), batch(&table, 2, 3));
        let (loose1, loose2) = (JobId::random(), JobId::random());
        // Queue order (create revisions): loose1, full#0, open#0, full#1, open#1, loose2, open#2.
        let order = [
            (loose1.clone(), 2),
            (JobId::item(&full, 0), 3),
            (JobId::item(&open, 0), 4),
            (JobId::item(&full, 1), 5),
            (JobId::item(&open, 1), 6),
            (loose2.clone(), 7),
            (JobId::item(&open, 2), 8),
        ];
        for (id, rev) in &order {
            table.apply_job(job(id.clone(), JobState::Pending), *rev, *rev);
        }
        // `full` is at its cap of 1.
        table.apply_job(job(JobId::item(&full, 3), JobState::Running), 9, 9);
        let inner = table.lock();
        let tenant = TenantId::default_tenant();
        let by_batch = &inner.pending_by_batch[&tenant];
        let ids = |room| {
            let mut caps = HashMap::new();
            let queue = tenant_queue(&inner, by_batch, &inner.running_by_batch, &mut caps, room);
            assert_eq!(caps.get(&full), Some(&1));
            queue.into_iter().map(|w| w.id).collect::<Vec<_>>()
        };
        let open0 = JobId::item(&open, 0);
        let open1 = JobId::item(&open, 1);
        assert_eq!(ids(10), vec![loose1.clone(), open0.clone(), open1, loose2]);
        assert_eq!(ids(2), vec![loose1, open0]);
        assert!(ids(0).is_empty());
    }
}
