//! Every coordinator's in-memory index of jobs and batches, fed by the cluster view's watch of the
//! state store (and, on the leader, by its own writes at once). It answers what the API needs
//! fast (queue positions, batch counts, who waits for what) and what the scheduler needs (the
//! pending queues in FIFO order, running counts per tenant, batch and node). The records in the
//! store stay the truth: every write based on this index is a CAS on the revision seen here.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use corral_core::ids::{NodeId, TenantId};
use corral_core::jobs::{BatchId, BatchRecord, JobId, JobRecord, JobState};
use corral_core::store::{EventKind, KeyValue};
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;

use super::records::{self, Watched};
use crate::capacity::Resources;

/// What the index keeps of a job.
#[derive(Debug, Clone)]
pub struct JobEntry {
    pub tenant: TenantId,
    pub state: JobState,
    pub attempt: u32,
    pub node: Option<NodeId>,
    pub batch: Option<(BatchId, u32)>,
    /// mod_revision of the record this entry reflects.
    pub revision: i64,
    /// Queue order: the revision that created the record.
    pub seq: i64,
    /// The record while the job is live (the scheduler dispatches and CASes from it).
    pub record: Option<Arc<JobRecord>>,
    /// When the leader last sent the running attempt to its node.
    pub dispatched: Option<Instant>,
    pub finished_at_ms: i64,
    /// What the job reserves on its node while RUNNING.
    pub need: Resources,
}

/// What the index keeps of a batch.
#[derive(Debug, Clone)]
pub struct BatchEntry {
    pub record: Arc<BatchRecord>,
    pub revision: i64,
    /// Items per state, indexed like `JobState::ALL`.
    pub counts: [u32; 7],
    /// Finished items as (finishing revision, index, job), in finishing order.
    pub finished: Vec<(i64, u32, JobId)>,
    /// When the last item finished.
    pub finished_at_ms: i64,
    /// When this coordinator last saw the record change (its monotonic clock).
    pub changed: Instant,
}

impl BatchEntry {
    pub fn live(&self) -> u32 {
        self.counts[0] + self.counts[1]
    }

    /// Every item has a record and all of them ended.
    pub fn done(&self) -> bool {
        self.record.accepted && self.finished.len() as u32 >= self.record.total
    }
}

fn slot(state: JobState) -> usize {
    JobState::ALL.iter().position(|s| *s == state).unwrap_or(0)
}

/// A queue of PENDING jobs: (queue order, job).
pub type Queue = BTreeSet<(i64, JobId)>;
/// One tenant's PENDING jobs by batch (`None`: jobs outside batches).
pub type PendingByBatch = HashMap<Option<BatchId>, Queue>;

#[derive(Default)]
pub struct Inner {
    pub jobs: HashMap<JobId, JobEntry>,
    /// PENDING jobs per tenant by batch (`None`: jobs outside batches), each in queue order, so
    /// the scheduler can pass over a batch at its cap without walking its items.
    pub pending: HashMap<TenantId, PendingByBatch>,
    /// Permits of the tenant and batch semaphores held, per tenant and per batch: one per
    /// RUNNING attempt, since a record is written RUNNING in the same transaction as its
    /// permits and leaves RUNNING in the same one as their release (where an older leader wrote
    /// no permit, or a node's lease took the keys, the attempt still counts until its record
    /// moves: the count errs high, never low). The caps are counted here.
    pub running_by_tenant: HashMap<TenantId, usize>,
    pub running_by_batch: HashMap<BatchId, usize>,
    /// What the RUNNING jobs of each node reserve.
    pub running_by_node: HashMap<NodeId, Resources>,
    pub batches: HashMap<BatchId, BatchEntry>,
    /// Batches whose deadline key etcd deleted: their deadline passed (see `deadlines.rs`).
    pub deadlines_gone: HashSet<BatchId>,
}

/// The shared index. Cheap to clone.
#[derive(Clone)]
pub struct JobTable {
    inner: Arc<Mutex<Inner>>,
    /// Every job change (for Wait and WatchBatch).
    changes: broadcast::Sender<JobId>,
    /// Wakes the scheduler: something became pending, or a slot freed.
    pub wake: Arc<Notify>,
    /// Held while planning and claiming, so two planners never fill one free slot twice.
    pub planning: Arc<tokio::sync::Mutex<()>>,
}

impl Default for JobTable {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            changes: broadcast::channel(8192).0,
            wake: Arc::default(),
            planning: Arc::default(),
        }
    }
}

impl JobTable {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobId> {
        self.changes.subscribe()
    }

    /// Applies a job record at `revision` (ignored if the index already has a newer one).
    pub fn apply_job(&self, record: JobRecord, revision: i64, create_revision: i64) {
        let id = record.id.clone();
        let wake = {
            let mut inner = self.lock();
            match inner.apply_job(record, revision, create_revision) {
                Some(wake) => wake,
                None => return,
            }
        };
        let _ = self.changes.send(id);
        if wake {
            self.wake.notify_one();
        }
    }

    pub fn apply_batch(&self, record: BatchRecord, revision: i64) {
        let accepted = record.accepted;
        self.lock().apply_batch(record, revision);
        if accepted {
            self.wake.notify_one();
        }
    }

    /// Routes a watch event of the job table (other keys are ignored).
    pub fn apply_event(&self, kind: EventKind, rest: &str, kv: &KeyValue) {
        if kind == EventKind::Delete {
            // Records are never deleted by Corral; a manual delete leaves the index as it was.
            return;
        }
        match records::decode_watched(rest, kv) {
            None => {}
            Some(Ok(Watched::Job(record))) => {
                let create = if kv.create_revision > 0 { kv.create_revision } else { kv.mod_revision };
                self.apply_job(record, kv.mod_revision, create)
            }
            Some(Ok(Watched::Batch(record))) => self.apply_batch(record, kv.mod_revision),
            Some(Err(e)) => tracing::warn!(error = %e, "ignoring an unreadable job or batch record"),
        }
    }

    /// 1-based place of a PENDING job in its tenant's queue.
    pub fn queue_position(&self, tenant: &TenantId, id: &JobId) -> u64 {
        let inner = self.lock();
        let (Some(entry), Some(by_batch)) = (inner.jobs.get(id), inner.pending.get(tenant)) else { return 0 };
        if entry.state != JobState::Pending {
            return 0;
        }
        let ahead = (entry.seq, id.clone());
        by_batch.values().map(|q| q.range(..&ahead).count()).sum::<usize>() as u64 + 1
    }

    /// A batch's deadline key was deleted (its lease ran out).
    pub fn deadline_passed(&self, id: BatchId) {
        self.lock().deadlines_gone.insert(id);
    }

    /// After a full load: batches that have a deadline lease but no deadline key any more.
    pub fn deadlines_present(&self, present: &HashSet<&str>) {
        let mut inner = self.lock();
        let gone: Vec<BatchId> = inner
            .batches
            .values()
            .filter(|b| b.record.deadline_lease != 0 && !present.contains(b.record.id.as_str()))
            .map(|b| b.record.id.clone())
            .collect();
        inner.deadlines_gone.extend(gone);
    }

    pub fn batch(&self, id: &BatchId) -> Option<BatchEntry> {
        self.lock().batches.get(id).cloned()
    }

    pub fn job(&self, id: &JobId) -> Option<JobEntry> {
        self.lock().jobs.get(id).cloned()
    }

    /// What the RUNNING jobs of each node reserve.
    pub fn used_by_node(&self) -> HashMap<NodeId, Resources> {
        self.lock().running_by_node.clone()
    }

    /// Notes that the running attempt of `id` was sent to its node now.
    pub fn mark_dispatched(&self, id: &JobId) {
        if let Some(e) = self.lock().jobs.get_mut(id) {
            e.dispatched = Some(Instant::now());
        }
    }
}

/// The cluster view's watch feeds the index (the view knows it only by this trait).
impl crate::cluster::Follower for JobTable {
    fn prefixes(&self) -> Vec<String> {
        records::table_prefixes().into()
    }

    fn owns(&self, rest: &str) -> bool {
        records::is_table_key(rest)
    }

    fn apply(&self, kind: EventKind, rest: &str, kv: &KeyValue) {
        self.apply_event(kind, rest, kv);
    }

    fn deadline_deleted(&self, id: &str) {
        if let Ok(batch) = BatchId::parse(id) {
            self.deadline_passed(batch);
        }
    }

    fn deadlines_present(&self, present: &HashSet<&str>) {
        JobTable::deadlines_present(self, present);
    }

    fn used_by_node(&self) -> HashMap<NodeId, Resources> {
        JobTable::used_by_node(self)
    }
}

impl Inner {
    /// How many PENDING jobs `tenant` has.
    pub fn queued(&self, tenant: &TenantId) -> usize {
        self.pending.get(tenant).map_or(0, |by_batch| by_batch.values().map(BTreeSet::len).sum())
    }

    /// Returns `None` when the record is not newer than what the index has, else whether the
    /// scheduler should look again.
    fn apply_job(&mut self, record: JobRecord, revision: i64, create_revision: i64) -> Option<bool> {
        let id = record.id.clone();
        let old = self.jobs.get(&id);
        if old.is_some_and(|o| o.revision >= revision) {
            return None;
        }
        let old = old.cloned();
        let seq = old.as_ref().map_or(create_revision, |o| o.seq);
        if let Some(old) = &old {
            self.unaccount(&id, old);
        }
        let state = record.state;
        let entry = JobEntry {
            tenant: record.tenant.clone(),
            state,
            attempt: record.attempt,
            node: record.node.clone(),
            batch: record.batch_item(),
            revision,
            seq,
            finished_at_ms: record.finished_at_ms,
            need: Resources::of_job(&record.spec),
            dispatched: old.as_ref().filter(|o| o.attempt == record.attempt).and_then(|o| o.dispatched),
            record: (!state.is_terminal()).then(|| Arc::new(record)),
        };
        self.account(&id, &entry, revision);
        let wake = state == JobState::Pending || old.is_some_and(|o| o.state == JobState::Running);
        self.jobs.insert(id, entry);
        Some(wake)
    }

    fn account(&mut self, id: &JobId, e: &JobEntry, revision: i64) {
        match e.state {
            JobState::Pending => {
                let batch = e.batch.as_ref().map(|(b, _)| b.clone());
                let by_batch = self.pending.entry(e.tenant.clone()).or_default();
                by_batch.entry(batch).or_default().insert((e.seq, id.clone()));
            }
            JobState::Running => {
                *self.running_by_tenant.entry(e.tenant.clone()).or_default() += 1;
                if let Some((b, _)) = &e.batch {
                    *self.running_by_batch.entry(b.clone()).or_default() += 1;
                }
                if let Some(n) = &e.node {
                    self.running_by_node.entry(n.clone()).or_default().add(&e.need);
                }
            }
            _ => {}
        }
        if let Some((b, index)) = &e.batch {
            let entry = self.batches.entry(b.clone()).or_insert_with(|| placeholder(b, &e.tenant));
            entry.counts[slot(e.state)] += 1;
            if e.state.is_terminal() {
                entry.finished.push((revision, *index, id.clone()));
                entry.finished_at_ms = entry.finished_at_ms.max(e.finished_at_ms);
            }
        }
    }

    fn unaccount(&mut self, id: &JobId, e: &JobEntry) {
        fn dec<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, k: &K) {
            if let Some(n) = map.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(k);
                }
            }
        }
        match e.state {
            JobState::Pending => {
                let batch = e.batch.as_ref().map(|(b, _)| b.clone());
                if let Some(by_batch) = self.pending.get_mut(&e.tenant) {
                    if let Some(q) = by_batch.get_mut(&batch) {
                        q.remove(&(e.seq, id.clone()));
                        if q.is_empty() {
                            by_batch.remove(&batch);
                        }
                    }
                    if by_batch.is_empty() {
                        self.pending.remove(&e.tenant);
                    }
                }
            }
            JobState::Running => {
                dec(&mut self.running_by_tenant, &e.tenant);
                if let Some((b, _)) = &e.batch {
                    dec(&mut self.running_by_batch, b);
                }
                if let Some(n) = &e.node
                    && let Some(used) = self.running_by_node.get_mut(n)
                {
                    used.sub(&e.need);
                    if used.slots == 0 {
                        self.running_by_node.remove(n);
                    }
                }
            }
            _ => {}
        }
        if let Some((b, _)) = &e.batch
            && let Some(entry) = self.batches.get_mut(b)
        {
            let c = &mut entry.counts[slot(e.state)];
            *c = c.saturating_sub(1);
            if e.state.is_terminal() {
                entry.finished.retain(|(_, _, j)| j != id);
            }
        }
    }

    fn apply_batch(&mut self, record: BatchRecord, revision: i64) {
        let id = record.id.clone();
        match self.batches.get_mut(&id) {
            Some(e) if e.revision >= revision => {}
            Some(e) => {
                e.record = Arc::new(record);
                e.revision = revision;
                e.changed = Instant::now();
            }
            None => {
                self.batches.insert(
                    id,
                    BatchEntry {
                        record: Arc::new(record),
                        revision,
                        counts: [0; 7],
                        finished: Vec::new(),
                        finished_at_ms: 0,
                        changed: Instant::now(),
                    },
                );
            }
        }
    }
}

/// A batch whose items the index saw before its record (revision 0 until the record arrives).
fn placeholder(id: &BatchId, tenant: &TenantId) -> BatchEntry {
    BatchEntry {
        record: Arc::new(records::new_batch(id.clone(), tenant.clone(), 0, 0, String::new())),
        revision: 0,
        counts: [0; 7],
        finished: Vec::new(),
        finished_at_ms: 0,
        changed: Instant::now(),
    }
}
