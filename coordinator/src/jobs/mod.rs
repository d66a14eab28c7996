//! Jobs and fan-out batches (see docs/ARCHITECTURE.md "Jobs and batches").
//!
//! - [`table`]: every coordinator's index of jobs and batches, fed by the store's watch;
//! - [`place`]: pure placement of pending jobs on node slots (fair between tenants, capped per
//!   tenant and per batch), property-tested;
//! - [`schedule`]: the leader's loop: planning rounds, and the sweeps for lost nodes, lost work
//!   items and batch deadlines;
//! - [`claim`]: claims (fenced CAS, group-committed, or folded into a commit) and dispatch;
//! - [`commit`]: the leader commits agents' reports, rejecting stale attempts;
//! - [`ops`]: submit (idempotent), get, wait, cancel, for jobs and batches;
//! - [`upload`]: batches sent in parts (create, append, accept, abandon).

pub mod claim;
pub mod commit;
pub mod ops;
pub mod place;
pub mod schedule;
pub mod table;
pub mod upload;

pub use table::JobTable;

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

/// A job record for unit tests: `true` on bubblewrap, in `state` (RUNNING: attempt 1 on node
/// `n1`).
#[cfg(test)]
pub(crate) fn test_record(
    id: corral_core::jobs::JobId,
    state: corral_core::jobs::JobState,
) -> corral_core::jobs::JobRecord {
    use corral_core::jobs::{JobCommand, JobRecord, JobSpec, JobState};
    let running = state == JobState::Running;
    JobRecord {
        v: 1,
        id,
        tenant: corral_core::ids::TenantId::default_tenant(),
        spec: JobSpec {
            runtime: corral_core::model::RuntimeKind::Bwrap,
            image: String::new(),
            command: JobCommand::Shell("true".into()),
            env: Default::default(),
            timeout_ms: 1000,
            cpus: 1.0,
            memory_mb: 64,
            internet_access: false,
            stdin: vec![],
            labels: Default::default(),
        },
        state,
        attempt: u32::from(running),
        node: running.then(|| corral_core::ids::NodeId::parse("n1").expect("a valid node id")),
        retries: 0,
        failures: 0,
        infra_failures: 0,
        result: None,
        reason: String::new(),
        created_at_ms: 1,
        started_at_ms: if running { 2 } else { 0 },
        finished_at_ms: 0,
        body_hash: String::new(),
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
