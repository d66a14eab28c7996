//! Jobs and batches: ids, states, the records kept in the state store, and what travels between
//! the coordinator and the agents about them.
//!
//! A job is one command in a fresh one-shot sandbox. Its record is the single source of truth:
//! the scheduler claims it with a compare-and-swap that bumps `attempt`, the agent runs that
//! attempt, and its result is committed only by a compare-and-swap that still finds the same
//! attempt RUNNING, so a stale agent's result can never land.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{InvalidId, NodeId, TenantId};
use crate::model::{ExitStatus, RuntimeKind};

fn random_hex128() -> String {
    let v: u128 = rand::random();
    format!("{v:032x}")
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Digits of the index in the item ids of batches written before batches could be sent in parts
/// (at most 10,000 items); their records carry no `index_digits`.
pub const LEGACY_INDEX_DIGITS: u8 = 5;
/// Digits of the index in the item ids of new batches.
pub const INDEX_DIGITS: u8 = 7;
/// Largest number of items any batch can hold (item ids carry the index in [`INDEX_DIGITS`]
/// digits); the configured limit is at most this.
pub const MAX_BATCH_ITEMS: usize = 10_000_000;

/// A job: `job-` and 32 hex digits; a batch item: the batch's hex, `-`, and its index in a fixed
/// number of digits per batch (7, or 5 in batches written by older versions), so a batch's items
/// are adjacent keys in index order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    pub const PREFIX: &'static str = "job-";

    pub fn random() -> Self {
        Self(format!("{}{}", Self::PREFIX, random_hex128()))
    }

    /// The id of item `index` of a new batch.
    pub fn item(batch: &BatchId, index: u32) -> Self {
        Self::item_with(batch, index, INDEX_DIGITS)
    }

    /// The id of item `index` of `batch`, whose ids carry `digits` digits (its record's
    /// `index_digits`).
    pub fn item_with(batch: &BatchId, index: u32, digits: u8) -> Self {
        let width = usize::from(digits);
        Self(format!("{}{}-{index:0width$}", Self::PREFIX, batch.hex()))
    }

    /// The common start of every item id of `batch`.
    pub fn item_prefix(batch: &BatchId) -> String {
        format!("{}{}-", Self::PREFIX, batch.hex())
    }

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let err = |why| InvalidId { kind: "job id", value: s.chars().take(80).collect(), why };
        let rest = s.strip_prefix(Self::PREFIX).ok_or_else(|| err("must start with \"job-\""))?;
        let ok = match rest.split_once('-') {
            None => is_hex32(rest),
            Some((hex, index)) => {
                let width = [LEGACY_INDEX_DIGITS, INDEX_DIGITS].map(usize::from);
                is_hex32(hex) && width.contains(&index.len()) && index.bytes().all(|b| b.is_ascii_digit())
            }
        };
        if !ok {
            return Err(err(
                "must be \"job-\" and 32 lowercase hex digits (and \"-\" and 7 or 5 digits for a batch item)",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The batch and index of a batch item.
    pub fn batch_item(&self) -> Option<(BatchId, u32)> {
        let (hex, index) = self.0.strip_prefix(Self::PREFIX)?.split_once('-')?;
        Some((BatchId(format!("{}{hex}", BatchId::PREFIX)), index.parse().ok()?))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A batch: `bat-` and 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BatchId(String);

impl BatchId {
    pub const PREFIX: &'static str = "bat-";

    pub fn random() -> Self {
        Self(format!("{}{}", Self::PREFIX, random_hex128()))
    }

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let err = |why| InvalidId { kind: "batch id", value: s.chars().take(80).collect(), why };
        match s.strip_prefix(Self::PREFIX) {
            Some(hex) if is_hex32(hex) => Ok(Self(s.to_owned())),
            _ => Err(err("must be \"bat-\" followed by 32 lowercase hex digits")),
        }
    }

    fn hex(&self) -> &str {
        &self.0[Self::PREFIX.len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The job lifecycle (the Unsandbox vocabulary). Every change goes through
/// [`JobState::check_transition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Pending,
    Running,
    Completed,
    Failed,
    Timeout,
    Cancelled,
    Lost,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("job cannot go from {from} to {to}")]
pub struct InvalidJobTransition {
    pub from: JobState,
    pub to: JobState,
}

impl JobState {
    pub const ALL: [JobState; 7] =
        [Self::Pending, Self::Running, Self::Completed, Self::Failed, Self::Timeout, Self::Cancelled, Self::Lost];

    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }

    /// A queued job is claimed (PENDING → RUNNING) or cancelled; a running attempt ends (any
    /// terminal state) or its job goes back to the queue (RUNNING → PENDING: a retry, or an
    /// infrastructure failure). An ended job never changes again.
    pub fn check_transition(self, to: JobState) -> Result<JobState, InvalidJobTransition> {
        use JobState::*;
        let ok = matches!((self, to), (Pending, Running | Cancelled) | (Running, Pending))
            || (self == Running && to.is_terminal());
        if ok { Ok(to) } else { Err(InvalidJobTransition { from: self, to }) }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Timeout => "TIMEOUT",
            Self::Cancelled => "CANCELLED",
            Self::Lost => "LOST",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// The stage of a batch's record: its items are being uploaded, all arrived (the batch runs), or
/// it was cancelled. Derived from `accepted` and `cancelled` (the wire state, RUNNING /
/// COMPLETED / CANCELLED, also counts the items). Every change of a batch record goes through
/// [`BatchState::check_transition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchState {
    Uploading,
    Accepted,
    Cancelled,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("batch cannot go from {from:?} to {to:?}")]
pub struct InvalidBatchTransition {
    pub from: BatchState,
    pub to: BatchState,
}

impl BatchState {
    pub const ALL: [BatchState; 3] = [Self::Uploading, Self::Accepted, Self::Cancelled];

    /// A part lands (UPLOADING → UPLOADING), the last one lands (→ ACCEPTED), or a live batch
    /// is cancelled; a cancelled batch never changes again.
    pub fn check_transition(self, to: BatchState) -> Result<BatchState, InvalidBatchTransition> {
        use BatchState::*;
        let ok = matches!((self, to), (Uploading, Uploading | Accepted | Cancelled) | (Accepted, Cancelled));
        if ok { Ok(to) } else { Err(InvalidBatchTransition { from: self, to }) }
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

/// One attempt of a job, sent to the node that claimed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobWork {
    pub job: JobId,
    pub tenant: TenantId,
    pub attempt: u32,
    pub spec: JobSpec,
}

/// How an attempt ended on the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobOutcome {
    /// The command ran and ended (possibly by timeout or signal).
    Ran {
        status: ExitStatus,
        #[serde(with = "serde_bytes")]
        stdout: Vec<u8>,
        #[serde(with = "serde_bytes")]
        stderr: Vec<u8>,
    },
    /// The job cannot run as specified (e.g. its language is not available): FAILED, no retry.
    Refused(String),
    /// Not the job's fault (the sandbox could not start, the node is fencing itself): retried
    /// without counting against the job's retries.
    Infra(String),
}

/// An agent's report of one attempt, sent to `corral.jobs.results` until acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    pub job: JobId,
    pub tenant: TenantId,
    pub attempt: u32,
    pub node: NodeId,
    pub outcome: JobOutcome,
}

/// What the coordinator did with a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// The result is committed (or was already).
    Committed,
    /// The attempt is no longer the job's running attempt: the result was rejected.
    Stale,
}

/// `corral.jobs.results` request and reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReports(pub Vec<JobReport>);

/// The verdicts, and new attempts claimed for the reporting node with the slots its results
/// freed (handed over in the reply instead of through the work queue, saving a hop per job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobAcks {
    pub verdicts: Vec<(JobId, u32, Verdict)>,
    pub work: Vec<JobWork>,
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
    use super::JobState::*;
    use super::*;

    #[test]
    fn ids_round_trip_and_items_sort_by_index() {
        let batch = BatchId::random();
        let a = JobId::item(&batch, 2);
        let b = JobId::item(&batch, 10);
        assert!(a < b, "{a} sorts before {b}");
        assert_eq!(JobId::parse(a.as_str()).unwrap(), a);
        assert_eq!(a.batch_item(), Some((batch.clone(), 2)));
        assert!(a.as_str().starts_with(&JobId::item_prefix(&batch)));
        assert_eq!(JobId::random().batch_item(), None);
        assert!(JobId::parse("job-xyz").is_err());
        assert!(JobId::parse(&format!("{a}0")).is_err());
        assert!(BatchId::parse(batch.as_str()).is_ok());
        assert_eq!(JobId::item(&batch, 999_999).batch_item(), Some((batch.clone(), 999_999)));
        assert!(JobId::item(&batch, 99_999) < JobId::item(&batch, 1_000_000));
    }

    #[test]
    fn batches_of_older_versions_keep_their_five_digit_ids() {
        let batch = BatchId::random();
        let old = format!("{}{}-00042", JobId::PREFIX, &batch.as_str()[BatchId::PREFIX.len()..]);
        let id = JobId::parse(&old).expect("a five-digit item id still parses");
        assert_eq!(id.batch_item(), Some((batch.clone(), 42)));
        // An old record (no index_digits, received or updated_at_ms) reads with the old width.
        let json = format!(
            r#"{{"v":1,"id":"{batch}","tenant":"default","total":3,"max_concurrency":2,"retries_per_item":0,
            "deadline_at_ms":0,"created_at_ms":1,"accepted":true}}"#
        );
        let record: BatchRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(record.item_id(42), id);
        assert_eq!(record.received(), 3);
        assert!(JobId::parse(&format!("{old}0")).is_err(), "six digits are neither width");
    }

    #[test]
    fn transitions() {
        assert!(Pending.check_transition(Running).is_ok());
        assert!(Running.check_transition(Pending).is_ok());
        assert!(Pending.check_transition(Cancelled).is_ok());
        assert!(Running.check_transition(Completed).is_ok());
        for from in [Completed, Failed, Timeout, Cancelled, Lost] {
            for to in JobState::ALL {
                assert!(from.check_transition(to).is_err(), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn every_job_transition_is_listed() {
        // Claim, cancel of a queued job, retry or requeue, and any end of a running attempt.
        let allowed = [
            (Pending, Running),
            (Pending, Cancelled),
            (Running, Pending),
            (Running, Completed),
            (Running, Failed),
            (Running, Timeout),
            (Running, Cancelled),
            (Running, Lost),
        ];
        for from in JobState::ALL {
            for to in JobState::ALL {
                let ok = allowed.contains(&(from, to));
                assert_eq!(from.check_transition(to).is_ok(), ok, "{from} -> {to}");
            }
        }
        assert_eq!(Running.check_transition(Running), Err(InvalidJobTransition { from: Running, to: Running }));
        assert!(Pending.check_transition(Pending).is_err(), "no write leaves a queued job queued");
        assert!(Pending.check_transition(Completed).is_err(), "only a running attempt ends a job");
    }

    #[test]
    fn every_batch_transition_is_listed() {
        use BatchState as B;
        let allowed = [
            (B::Uploading, B::Uploading),
            (B::Uploading, B::Accepted),
            (B::Uploading, B::Cancelled),
            (B::Accepted, B::Cancelled),
        ];
        for from in BatchState::ALL {
            for to in BatchState::ALL {
                let ok = allowed.contains(&(from, to));
                assert_eq!(from.check_transition(to).is_ok(), ok, "{from:?} -> {to:?}");
            }
        }
        let mut r: BatchRecord = serde_json::from_str(&format!(
            r#"{{"v":1,"id":"{}","tenant":"default","total":3,"max_concurrency":2,"retries_per_item":0,
            "deadline_at_ms":0,"created_at_ms":1,"accepted":false,"received":1}}"#,
            BatchId::random()
        ))
        .unwrap();
        assert_eq!(r.state(), B::Uploading);
        r.accepted = true;
        assert_eq!(r.state(), B::Accepted);
        r.cancelled = Some(super::Cancelled { reason: "x".into(), at_ms: 2 });
        assert_eq!(r.state(), B::Cancelled);
    }

    #[test]
    fn work_round_trips_through_the_bus_encoding() {
        let work = JobWork {
            job: JobId::random(),
            tenant: crate::ids::TenantId::default_tenant(),
            attempt: 2,
            spec: JobSpec {
                runtime: RuntimeKind::Bwrap,
                image: String::new(),
                command: JobCommand::Code { language: "python".into(), code: "print(1)".into() },
                env: BTreeMap::new(),
                timeout_ms: 5,
                cpus: 1.0,
                memory_mb: 64,
                internet_access: false,
                stdin: vec![],
                labels: BTreeMap::new(),
            },
        };
        let bytes = crate::protocol::encode(&work);
        assert_eq!(crate::protocol::decode::<JobWork>(&bytes).unwrap(), work);
    }

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
