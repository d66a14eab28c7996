//! The job table in the store: the one module that builds job and batch keys (from
//! `corral_core::keys`), encodes and decodes `JobRecord`/`BatchRecord`, and changes their states
//! ([`job`]: claim, commit, retry, infrastructure failure, cancel; [`batch`]: a part landing,
//! acceptance, cancel). Each change goes through `JobState::check_transition` or
//! `BatchState::check_transition`. The modules above work with records and revisions; every
//! write they make is a [`Writes`] transaction built here.

pub mod batch;
pub mod job;

use corral_core::ids::TenantId;
use corral_core::jobs::{BatchId, BatchRecord, IdemRecord, JobId, JobLogs, JobRecord, JobState};
use corral_core::keys::{BatchKey, BatchesPrefix, DeadlineKey, IdemKey, JobKey, JobLogsKey, JobsPrefix, LeaderKey};
use corral_core::semaphore::StoreSemaphore;
use corral_core::store::{self, KeyValue, StateStore, StoreResult, Txn, TxnOutcome};

pub use batch::{close_batch, new_batch, receive_part};
pub use job::{
    JobWrite, MAX_INFRA_FAILURES, cancel, check_record_size, claim, encoded_len, infra_failure, new_job, permit_holder,
    permit_scopes, report,
};

/// Records per transaction where each is one operation (new jobs).
pub const GROUP: usize = 100;
/// Operations one transaction carries at most (etcd refuses more than 128 by default), besides
/// its leader fence.
pub const MAX_TXN_OPS: usize = 120;
/// Operations a claim takes: its record and a permit of its tenant and of its batch.
pub const CLAIM_OPS: usize = 3;
/// Claims per transaction.
pub const CLAIMS_PER_TXN: usize = MAX_TXN_OPS / CLAIM_OPS;
/// Operations a committed report takes: its record, its full logs, and giving back its tenant
/// and batch permits.
pub const COMMIT_OPS: usize = 4;
/// Reports committed per transaction.
pub const COMMITS_PER_TXN: usize = MAX_TXN_OPS / COMMIT_OPS;
/// Bytes of records per transaction at most (etcd refuses requests over 1.5 MiB by default).
pub const TXN_BYTES: usize = 1024 * 1024;
/// Largest encoded job record accepted (one must fit in a transaction with room to spare).
pub const MAX_RECORD_BYTES: usize = 1200 * 1024;

/// Splits `items` into runs of at most `count` items and about `bytes` bytes (an item larger
/// than `bytes` goes alone), keeping their order.
pub fn split<T>(items: Vec<T>, count: usize, bytes: usize, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut run: Vec<T> = Vec::new();
    let mut run_bytes = 0;
    for item in items {
        let n = size(&item);
        if !run.is_empty() && (run.len() == count || run_bytes + n > bytes) {
            out.push(std::mem::take(&mut run));
            run_bytes = 0;
        }
        run_bytes += n;
        run.push(item);
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

/// Writes to the job table in one transaction, each guarded by the revision it replaces (0: the
/// key must not exist yet), with its operations and bytes counted (etcd bounds both).
#[derive(Default)]
pub struct Writes {
    txn: Txn,
    conditions: usize,
    puts: usize,
    bytes: usize,
}

impl Writes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes that happen only while the leader key is at `fence` (this leader's term).
    pub fn fenced(fence: i64) -> Self {
        Self { txn: Txn::new().when(&LeaderKey, fence), conditions: 1, ..Self::default() }
    }

    fn put(mut self, key: impl ToString, revision: Option<i64>, value: Vec<u8>) -> Self {
        let key = key.to_string();
        if let Some(revision) = revision {
            self.txn = self.txn.when(&key, revision);
            self.conditions += 1;
        }
        self.bytes += value.len();
        self.puts += 1;
        self.txn = self.txn.put(key, value);
        self
    }

    /// An already encoded job record over the revision it was made from, with its permits.
    pub fn job(self, w: &JobWrite) -> Self {
        let key = JobKey { tenant: &w.record.tenant, id: &w.record.id };
        self.put(key, Some(w.revision), w.bytes.clone()).permits(&w.record)
    }

    /// A job record over `revision` (not a claim), with the release of its permits.
    pub fn put_job(self, revision: i64, r: &JobRecord) -> Self {
        debug_assert!(r.state != JobState::Running, "a claim is written with its node's lease (`job`)");
        self.put(JobKey { tenant: &r.tenant, id: &r.id }, Some(revision), store::encode(r)).permits(r)
    }

    /// The semaphore side of writing `r`: a RUNNING attempt takes its tenant and batch permits
    /// (on the node registration it was claimed under, `r.lease`), a record that leaves RUNNING
    /// gives them back. The permits land
    /// or not with the record; the leader counts the lines before it claims (see `plan`).
    fn permits(mut self, r: &JobRecord) -> Self {
        if r.state != JobState::Running && r.attempt == 0 {
            return self;
        }
        let holder = job::permit_holder(r);
        for scope in job::permit_scopes(r) {
            self.txn = if r.state == JobState::Running {
                StoreSemaphore::grant_in(self.txn, &scope, &holder, r.lease)
            } else {
                StoreSemaphore::release_in(self.txn, &scope, &holder)
            };
            self.puts += 1;
        }
        self
    }

    /// The full logs of `r`'s attempt (unguarded: they go with the record's CAS).
    pub fn logs(self, r: &JobRecord, logs: &JobLogs) -> Self {
        self.put(JobLogsKey { tenant: &r.tenant, id: &r.id }, None, store::encode(logs))
    }

    /// A new idempotency key of `tenant` naming the job or batch `id`.
    pub fn idem(self, tenant: &TenantId, key: &str, id: String, body_hash: String) -> Self {
        let record = IdemRecord { id, body_hash };
        self.put(IdemKey { tenant, key }, Some(0), store::encode(&record))
    }

    /// A new batch record, with its deadline key on the batch's deadline lease if it has one.
    pub fn create_batch(mut self, b: &BatchRecord) -> Self {
        self = self.put(BatchKey { tenant: &b.tenant, id: &b.id }, Some(0), store::encode(b));
        if b.deadline_lease != 0 {
            let deadline = DeadlineKey { tenant: &b.tenant, id: b.id.as_str() };
            self.txn = self.txn.put_with_lease(&deadline, b.id.as_str().as_bytes().to_vec(), b.deadline_lease);
            self.puts += 1;
        }
        self
    }

    /// A batch record over `revision`.
    pub fn put_batch(self, revision: i64, b: &BatchRecord) -> Self {
        self.put(BatchKey { tenant: &b.tenant, id: &b.id }, Some(revision), store::encode(b))
    }

    /// Conditions or writes, whichever are more.
    pub fn ops(&self) -> usize {
        self.conditions.max(self.puts)
    }

    pub fn conditions(&self) -> usize {
        self.conditions
    }

    /// Bytes of the values written.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub async fn run(self, store: &dyn StateStore) -> StoreResult<TxnOutcome> {
        // The embedded store has no limit; etcd refuses the whole transaction.
        debug_assert!(self.ops() <= MAX_TXN_OPS + 1, "{} operations in one transaction", self.ops());
        store.txn(self.txn).await
    }
}

/// A job record and the revision it was read at.
pub async fn get_job(store: &dyn StateStore, tenant: &TenantId, id: &JobId) -> StoreResult<Option<(i64, JobRecord)>> {
    let Some(kv) = store.get(&JobKey { tenant, id }.to_string()).await? else { return Ok(None) };
    Ok(Some((kv.mod_revision, store::decode(&kv)?)))
}

/// A batch record and the revision it was read at.
pub async fn get_batch(
    store: &dyn StateStore,
    tenant: &TenantId,
    id: &BatchId,
) -> StoreResult<Option<(i64, BatchRecord)>> {
    let Some(kv) = store.get(&BatchKey { tenant, id }.to_string()).await? else { return Ok(None) };
    Ok(Some((kv.mod_revision, store::decode(&kv)?)))
}

/// The full logs of a job whose output was clipped in its record.
pub async fn get_logs(store: &dyn StateStore, tenant: &TenantId, id: &JobId) -> StoreResult<Option<JobLogs>> {
    let Some(kv) = store.get(&JobLogsKey { tenant, id }.to_string()).await? else { return Ok(None) };
    Ok(Some(store::decode(&kv)?))
}

/// What an idempotency key of `tenant` created, if it was used.
pub async fn get_idem(store: &dyn StateStore, tenant: &TenantId, key: &str) -> StoreResult<Option<IdemRecord>> {
    let Some(kv) = store.get(&IdemKey { tenant, key }.to_string()).await? else { return Ok(None) };
    Ok(Some(store::decode(&kv)?))
}

/// The prefix of a tenant's job records, or of one batch's items.
pub fn jobs_prefix(tenant: &TenantId, batch: Option<&BatchId>) -> String {
    match batch {
        None => JobsPrefix(Some(tenant)).to_string(),
        Some(b) => format!("{}{}", JobsPrefix(Some(tenant)), JobId::item_prefix(b)),
    }
}

/// The prefixes of every batch record and every job record, in the order a full load reads them.
pub fn table_prefixes() -> [String; 2] {
    [BatchesPrefix(None).to_string(), JobsPrefix(None).to_string()]
}

/// Whether a key under the root (`rest`: the key without it) is a job or batch record.
pub fn is_table_key(rest: &str) -> bool {
    rest.starts_with("jobs/") || rest.starts_with("batches/")
}

/// The prefix of a tenant's batch records.
pub fn batches_prefix(tenant: &TenantId) -> String {
    BatchesPrefix(Some(tenant)).to_string()
}

pub fn decode_job(kv: &KeyValue) -> StoreResult<JobRecord> {
    store::decode(kv)
}

pub fn decode_batch(kv: &KeyValue) -> StoreResult<BatchRecord> {
    store::decode(kv)
}

/// A record of the job table seen by the cluster watch.
#[allow(clippy::large_enum_variant)] // Short-lived: moved into the index at once.
pub enum Watched {
    Job(JobRecord),
    Batch(BatchRecord),
}

/// Decodes a watched key under the root (`rest`: the key without it); `None` for keys outside
/// the job table.
pub fn decode_watched(rest: &str, kv: &KeyValue) -> Option<StoreResult<Watched>> {
    if rest.starts_with("jobs/") {
        Some(decode_job(kv).map(Watched::Job))
    } else if rest.starts_with("batches/") {
        Some(decode_batch(kv).map(Watched::Batch))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn split_bounds_count_and_bytes_and_keeps_order() {
        let runs = super::split((1..=10).collect(), 3, 10, |n: &usize| *n);
        assert_eq!(runs, vec![vec![1, 2, 3], vec![4, 5], vec![6], vec![7], vec![8], vec![9], vec![10]]);
        assert_eq!(super::split(vec![50usize], 3, 10, |n| *n), vec![vec![50]]);
    }
}
