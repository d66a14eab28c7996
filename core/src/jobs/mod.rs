//! Jobs and batches: ids, states, the records kept in the state store, and what travels between
//! the coordinator and the agents about them.
//!
//! A job is one command in a fresh one-shot sandbox. Its record is the single source of truth:
//! the scheduler claims it with a compare-and-swap that bumps `attempt`, the agent runs that
//! attempt, and its result is committed only by a compare-and-swap that still finds the same
//! attempt RUNNING, so a stale agent's result can never land.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod ids;
mod state;
mod wire;

pub use ids::{BatchId, INDEX_DIGITS, JobId, LEGACY_INDEX_DIGITS, MAX_BATCH_ITEMS};
pub use state::{BatchState, InvalidBatchTransition, InvalidJobTransition, JobState};
pub use wire::{JobAcks, JobOutcome, JobReport, JobReports, JobWork, Verdict};

use crate::ids::{NodeId, TenantId};
use crate::model::{ExitStatus, RuntimeKind};
use crate::store::LeaseId;

/// What a job runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobCommand {
    Argv(Vec<String>),
    Shell(String),
    /// Source in a language of the registry (canonical name), run by the node's program for it.
    Code {
        language: String,
        code: String,
    },
}

/// Everything a job needs to run; fixed at submission. (It also travels to agents in postcard,
/// which cannot skip fields: no `skip_serializing_if` here.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub runtime: RuntimeKind,
    #[serde(default)]
    pub image: String,
    pub command: JobCommand,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub timeout_ms: u64,
    pub cpus: f64,
    pub memory_mb: u64,
    #[serde(default)]
    pub internet_access: bool,
    #[serde(default, with = "b64")]
    pub stdin: Vec<u8>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// How the last attempt's command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    pub status: ExitStatus,
    /// The first [`INLINE_OUTPUT`] bytes of each stream; the rest (up to the cap) is in the
    /// job's logs record when `clipped`.
    #[serde(default, with = "b64")]
    pub stdout: Vec<u8>,
    #[serde(default, with = "b64")]
    pub stderr: Vec<u8>,
    #[serde(default)]
    pub clipped: bool,
}

/// How much output a job record carries inline.
pub const INLINE_OUTPUT: usize = 4 * 1024;

/// `jobs/{tenant}/{job_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub v: u32,
    pub id: JobId,
    pub tenant: TenantId,
    pub spec: JobSpec,
    pub state: JobState,
    /// Claims so far; the running attempt's number while RUNNING.
    pub attempt: u32,
    pub node: Option<NodeId>,
    /// How often a failed command may run again.
    pub retries: u32,
    /// Failed runs of the command so far (counted against `retries`).
    pub failures: u32,
    /// Attempts ended by the infrastructure (node lost, sandbox could not start): not counted.
    pub infra_failures: u32,
    pub result: Option<JobResult>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub created_at_ms: i64,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    /// Hash of the submitted body when submitted with an idempotency key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body_hash: String,
    /// The registration of `node` (its store lease) the running attempt was claimed under: the
    /// attempt's permits are on that lease, and the node runs the attempt only under it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease: LeaseId,
}

impl JobRecord {
    pub const VERSION: u32 = 1;

    pub fn batch_item(&self) -> Option<(BatchId, u32)> {
        self.id.batch_item()
    }
}

/// `batches/{tenant}/{batch_id}`. Counts and state are derived from the items' records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub v: u32,
    pub id: BatchId,
    pub tenant: TenantId,
    pub total: u32,
    pub max_concurrency: u32,
    pub retries_per_item: u32,
    /// When the deadline is expected to pass, for display (the submitting coordinator's clock);
    /// 0 = none. The deadline itself is the lease of the batch's `deadlines/` key.
    pub deadline_at_ms: i64,
    /// The lease holding the batch's deadline key (written with the record); 0 = no deadline
    /// key (no deadline, or a record from before deadline keys: then `deadline_at_ms` decides).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deadline_lease: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub created_at_ms: i64,
    /// False until every item record is written; the scheduler ignores the items until then.
    pub accepted: bool,
    /// Items written so far: indexes `0..received` all have records (parts arrive in order).
    /// Absent in records of batches written in one request (then `accepted` says all arrived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<u32>,
    /// When the last part arrived (Unix ms); an unaccepted batch whose last part is older than
    /// the upload timeout is abandoned.
    #[serde(default)]
    pub updated_at_ms: i64,
    /// Digits of the index in its items' ids ([`LEGACY_INDEX_DIGITS`] when absent).
    #[serde(default = "legacy_digits")]
    pub index_digits: u8,
    /// Set when the batch was cancelled (by the client or its deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<Cancelled>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body_hash: String,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn legacy_digits() -> u8 {
    LEGACY_INDEX_DIGITS
}

impl BatchRecord {
    pub const VERSION: u32 = 1;

    /// How many leading items have records.
    pub fn received(&self) -> u32 {
        match self.received {
            Some(n) => n,
            None if self.accepted => self.total,
            None => 0,
        }
    }

    /// The stage of the record (see [`BatchState`]).
    pub fn state(&self) -> BatchState {
        match (&self.cancelled, self.accepted) {
            (Some(_), _) => BatchState::Cancelled,
            (None, true) => BatchState::Accepted,
            (None, false) => BatchState::Uploading,
        }
    }

    /// The id of item `index` of this batch.
    pub fn item_id(&self, index: u32) -> JobId {
        JobId::item_with(&self.id, index, self.index_digits)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancelled {
    pub reason: String,
    pub at_ms: i64,
}

/// `idem/{tenant}/{key}`: which object an idempotency key created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdemRecord {
    /// A job or batch id.
    pub id: String,
    pub body_hash: String,
}

/// `joblogs/{tenant}/{job_id}`: the whole (capped) output of a job whose record holds only the
/// first bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLogs {
    pub attempt: u32,
    #[serde(with = "b64")]
    pub stdout: Vec<u8>,
    #[serde(with = "b64")]
    pub stderr: Vec<u8>,
}

/// Bytes as base64 in JSON records (instead of an array of numbers).
mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_base64_in_records() {
        let r = JobResult {
            status: ExitStatus {
                exit_code: 0,
                signal: 0,
                timed_out: false,
                truncated: false,
                duration_ms: 1,
                oom_killed: false,
            },
            stdout: b"hi\n".to_vec(),
            stderr: vec![],
            clipped: false,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"aGkK\""), "{json}");
        assert_eq!(serde_json::from_str::<JobResult>(&json).unwrap(), r);
    }
}
