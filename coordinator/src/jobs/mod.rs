//! Jobs and fan-out batches (see docs/ARCHITECTURE.md "Jobs and batches").
//!
//! - [`records`]: the job table in the store: keys, encoding, and every state change of a job or
//!   a batch (through `check_transition`); the only writer of job and batch records;
//! - [`table`]: every coordinator's index of jobs and batches, fed by the store's watch;
//! - [`place`]: pure placement of pending jobs on node slots (fair between tenants, capped per
//!   tenant and per batch), property-tested;
//! - [`service`]: [`Jobs`], the component the jobs code and the jobs API work with;
//! - [`plan`]: the placement over a snapshot of the index and the nodes;
//! - [`claim`]: claims (fenced CAS, group-committed, or folded into a commit) and dispatch;
//! - [`commit`]: the leader commits agents' reports, rejecting stale attempts;
//! - [`ops`]: submit (idempotent), get, wait, cancel, for jobs and batches;
//! - [`upload`]: batches sent in parts (create, append, accept, abandon);
//! - [`sweep`]: the leader's sweeps for lost nodes, lost work items, batch deadlines and
//!   abandoned uploads;
//! - [`schedule`]: the leader's loop: planning rounds and sweeps.
//!
//! Layers: each module uses (imports, or calls methods of `Jobs` defined in) only modules above
//! it in this list, so there is no cycle:
//!
//! | module | uses (within `jobs`) |
//! |---|---|
//! | `records` | — |
//! | `place` | — |
//! | `table` | `records` |
//! | `service` | `table` |
//! | `plan` | `place`, `service`, `table` |
//! | `claim` | `plan`, `records`, `service`, `table` |
//! | `commit` | `claim`, `records`, `service`, `table` |
//! | `ops` | `records`, `service`, `table` |
//! | `upload` | `ops`, `records`, `service`, `table` |
//! | `sweep` | `claim`, `ops`, `records`, `service`, `table`, `upload` |
//! | `schedule` | `claim`, `plan`, `records`, `service`, `sweep`, `table` |
//!
//! The API side (`crate::api::{jobs, batches, batch_watch}`) uses `service`, `ops`, `upload`,
//! `records` and `table`.

pub mod claim;
pub mod commit;
pub mod ops;
pub mod place;
pub mod plan;
pub mod records;
pub mod schedule;
pub mod service;
pub mod sweep;
pub mod table;
pub mod upload;

pub use service::{JobLimits, Jobs};
pub use table::JobTable;

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
        lease: 0,
    }
}
