//! The leader's scheduling loop: plans which pending jobs go to which nodes and has them claimed
//! and sent there ([`super::claim`]), and sweeps for jobs whose node died, whose work item may
//! have been lost, and batches past their deadline.
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
use corral_core::jobs::{BatchId, JobId, JobState, JobWork};
use corral_core::keys::{JobKey, LeaderKey};
use corral_core::store::{self, Txn};
use corral_core::time::now_ms;
use futures::future::join_all;
use tokio::time::Instant;

use super::place::{self, Caps, Slots, Want};
use crate::capacity::Resources;
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
    for (n, _) in join_all(groups.into_iter().map(|g| super::claim::claim(core, fence, g, None))).await {
        claimed += n;
    }
    claimed
}

/// Like one scheduling round, right after `node` reported results: returns the work claimed for
/// `node` (for the caller to hand over in its reply) and sends other nodes theirs.
pub async fn schedule_for(core: &Arc<Core>, fence: i64, node: &NodeId) -> Vec<JobWork> {
    let _one_planner = core.view.jobs.planning.lock().await;
    let plan = plan(core, &[]);
    super::claim::claim_groups(core, fence, plan, node).await
}

/// The pure placement over a snapshot of the index and the nodes, counting the RUNNING jobs in
/// `finishing` (about to be committed as ended) as gone.
pub(super) fn plan(core: &Core, finishing: &[JobId]) -> Vec<(JobId, NodeId)> {
    let nodes = core.view.nodes();
    let sandboxes = core.view.sandbox_usage();
    let inner = core.view.jobs.lock();
    let mut freed_node: HashMap<NodeId, Resources> = HashMap::new();
    let (mut freed_tenant, mut freed_batch) = (HashMap::new(), HashMap::new());
    for id in finishing {
        let Some(e) = inner.jobs.get(id).filter(|e| e.state == JobState::Running) else { continue };
        if let Some(node) = &e.node {
            freed_node.entry(node.clone()).or_default().add(&e.need);
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
            let id = &n.node_id;
            let jobs = inner.running_by_node.get(id).copied().unwrap_or_default();
            let jobs = jobs.minus(&freed_node.get(id).copied().unwrap_or_default());
            Slots {
                node: id.clone(),
                capacity: Resources::of_node(&n.capacity),
                used: sandboxes.get(id).copied().unwrap_or_default().plus(&jobs),
                runtimes: n.runtimes.clone(),
                images: n.images.clone(),
                languages: n.languages.clone(),
            }
        })
        .collect();
    let total_free: usize = slots.iter().map(|s| s.free() as usize).sum();
    if total_free == 0 || inner.pending.is_empty() {
        return Vec::new();
    }
    let mut caps = Caps {
        per_tenant: core.config.max_running_jobs_per_tenant,
        running_by_tenant: running_by_tenant.clone(),
        per_batch: HashMap::new(),
        running_by_batch: running_by_batch.clone(),
    };
    let mut queues = Vec::with_capacity(inner.pending.len());
    for (tenant, by_batch) in &inner.pending {
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
                need: Resources::of_job(&record.spec),
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
        super::claim::send_jobs(core, &node, jobs, &tag).await;
    }
    super::ops::sweep_batches(core).await;
}

#[cfg(test)]
mod tests {
    use corral_core::ids::TenantId;
    use corral_core::jobs::{BatchRecord, JobRecord};

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
            deadline_lease: 0,
            labels: Default::default(),
            created_at_ms: 1,
            accepted: true,
            received: None,
            updated_at_ms: 0,
            index_digits: corral_core::jobs::INDEX_DIGITS,
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
        let by_batch = &inner.pending[&tenant];
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

    #[test]
    fn queue_positions_count_every_batch_of_the_tenant() {
        let table = JobTable::default();
        let (a, b) = (batch(&table, 1, 2), batch(&table, 1, 1));
        let loose = JobId::random();
        let order = [(JobId::item(&a, 0), 2), (loose.clone(), 3), (JobId::item(&b, 0), 4), (JobId::item(&a, 1), 5)];
        for (id, rev) in &order {
            table.apply_job(job(id.clone(), JobState::Pending), *rev, *rev);
        }
        let tenant = TenantId::default_tenant();
        let positions: Vec<u64> = order.iter().map(|(id, _)| table.queue_position(&tenant, id)).collect();
        assert_eq!(positions, vec![1, 2, 3, 4]);
        assert_eq!(table.lock().queued(&tenant), 4);
        table.apply_job(job(loose, JobState::Running), 6, 3);
        assert_eq!(table.queue_position(&tenant, &JobId::item(&a, 1)), 3);
        assert_eq!(table.lock().queued(&tenant), 3);
    }
}
