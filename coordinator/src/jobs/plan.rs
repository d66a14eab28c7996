//! Planning: which pending jobs go to which nodes now. A snapshot of the index (pending queues,
//! running counts) and of the nodes (capacity, sandboxes) goes to the pure placement
//! ([`super::place`]); claiming the plan is the caller's.

use std::collections::HashMap;

use corral_core::ids::NodeId;
use corral_core::jobs::{BatchId, JobId, JobState};

use super::place::{self, Caps, Slots, Want};
use super::service::Jobs;
use super::table::{Inner, PendingByBatch};
use crate::capacity::Resources;

impl Jobs {
    /// The pure placement over a snapshot of the index and the nodes, counting the RUNNING jobs
    /// in `finishing` (about to be committed as ended) as gone.
    pub(super) fn plan(&self, finishing: &[JobId]) -> Vec<(JobId, NodeId)> {
        let nodes = self.view.nodes();
        let sandboxes = self.view.sandbox_usage();
        let inner = self.table.lock();
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
            per_tenant: self.limits.max_running_jobs_per_tenant,
            running_by_tenant: running_by_tenant.clone(),
            per_batch: HashMap::new(),
            running_by_batch: running_by_batch.clone(),
        };
        let mut queues = Vec::with_capacity(inner.pending.len());
        for (tenant, by_batch) in &inner.pending {
            let room = self
                .limits
                .max_running_jobs_per_tenant
                .saturating_sub(running_by_tenant.get(tenant).copied().unwrap_or(0))
                .min(4 * total_free + 64);
            queues.push((tenant.clone(), tenant_queue(&inner, by_batch, &running_by_batch, &mut caps.per_batch, room)));
        }
        place::plan(&mut slots, &queues, &mut caps)
    }
}

/// Up to `room` of one tenant's pending jobs (`by_batch`) in queue order, at most as many of a
/// batch's as its cap leaves room for (`per_batch` gets the caps of the batches seen). One cursor
/// per batch with room, and one for jobs outside batches, merged in queue order: a batch at its
/// cap costs nothing however many items it has waiting.
fn tenant_queue(
    inner: &Inner,
    by_batch: &PendingByBatch,
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

    /// The caps count the permits: a running attempt holds its tenant's and its batch's until its
    /// record leaves RUNNING.
    #[test]
    fn caps_count_the_permits_of_running_attempts() {
        let table = JobTable::default();
        let b = batch(&table, 1, 2);
        let running = job(JobId::item(&b, 0), JobState::Running);
        table.apply_job(running.clone(), 3, 3);
        table.apply_job(job(JobId::item(&b, 1), JobState::Pending), 4, 4);
        let tenant = TenantId::default_tenant();
        let queued = |table: &JobTable| {
            let inner = table.lock();
            assert_eq!(inner.running_by_tenant.get(&tenant).copied(), inner.running_by_batch.get(&b).copied());
            let mut caps = HashMap::new();
            tenant_queue(&inner, &inner.pending[&tenant], &inner.running_by_batch, &mut caps, 10).len()
        };
        assert_eq!(table.lock().running_by_batch.get(&b), Some(&1));
        assert_eq!(queued(&table), 0, "the batch is at its cap of 1");
        let mut requeued = running.clone();
        requeued.state = JobState::Pending;
        table.apply_job(requeued, 6, 3);
        assert_eq!(table.lock().running_by_batch.get(&b), None);
        assert_eq!(queued(&table), 1, "the permit went back with the record: one may start again");
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
