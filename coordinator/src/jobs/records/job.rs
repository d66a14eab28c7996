//! Job records: the new PENDING record, and every change of a job's state, each through
//! [`JobState::check_transition`]: a claim (PENDING → RUNNING), an agent's report (RUNNING →
//! an end, or PENDING again to retry), an infrastructure failure (RUNNING → PENDING, or LOST)
//! and a cancel (any live state → CANCELLED).

use corral_core::ids::{NodeId, TenantId};
use corral_core::jobs::{
    INLINE_OUTPUT, InvalidJobTransition, JobId, JobLogs, JobOutcome, JobRecord, JobReport, JobResult, JobSpec, JobState,
};
use corral_core::keys::SemScope;
use corral_core::store::{self, LeaseId};
use corral_core::time::{now_ms, now_ms_after};

use crate::error::{ApiError, ApiResult};

/// Infrastructure failures of one job before it is LOST.
pub const MAX_INFRA_FAILURES: u32 = 5;

/// A job record to write over the revision it was made from (0: a new record), encoded once.
pub struct JobWrite {
    pub revision: i64,
    pub record: JobRecord,
    pub(super) bytes: Vec<u8>,
}

impl JobWrite {
    pub fn new(revision: i64, record: JobRecord) -> Self {
        let bytes = store::encode(&record);
        Self { revision, record, bytes }
    }

    /// Encoded bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }
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
        lease: 0,
    }
}

/// Bytes of a record once stored.
pub fn encoded_len(record: &JobRecord) -> usize {
    store::encode(record).len()
}

/// Refuses a job whose record would not fit in a store transaction.
pub fn check_record_size(field: &str, record: &JobRecord) -> ApiResult<()> {
    let size = encoded_len(record);
    if size > super::MAX_RECORD_BYTES {
        let why = format!(
            "the job is {size} bytes once stored (code, env, stdin, argv); at most {}",
            super::MAX_RECORD_BYTES
        );
        return Err(ApiError::field(field, why));
    }
    Ok(())
}

/// Who holds a RUNNING attempt's permits: the job and its attempt (`job-….3`).
pub fn permit_holder(r: &JobRecord) -> String {
    format!("{}.{}", r.id, r.attempt)
}

/// The semaphores a running attempt of `r` holds a permit of: its tenant's, and its batch's.
pub fn permit_scopes(r: &JobRecord) -> impl Iterator<Item = SemScope> {
    let batch = r.batch_item().map(|(b, _)| SemScope::Batch(b));
    std::iter::once(SemScope::Tenant(r.tenant.clone())).chain(batch)
}

/// The claim of a PENDING record read at `revision` for `node` (registered on `lease`): its next
/// attempt, RUNNING there, with its permits on that lease.
pub fn claim(
    revision: i64,
    record: &JobRecord,
    node: NodeId,
    lease: LeaseId,
    now: i64,
) -> Result<JobWrite, InvalidJobTransition> {
    let mut next = record.clone();
    next.state = record.state.check_transition(JobState::Running)?;
    next.attempt += 1;
    next.node = Some(node);
    // The submitting coordinator's clock may be ahead of this one.
    next.started_at_ms = now.max(record.created_at_ms);
    next.reason.clear();
    next.lease = lease;
    Ok(JobWrite::new(revision, next))
}

/// The record after `report` (which is for the running attempt) and the full logs to keep when
/// the output is longer than what the record holds.
pub fn report(
    record: &JobRecord,
    report: &JobReport,
    now: i64,
) -> Result<(JobRecord, Option<JobLogs>), InvalidJobTransition> {
    let mut next = record.clone();
    let mut logs = None;
    match &report.outcome {
        JobOutcome::Ran { status, stdout, stderr } => {
            let clipped = stdout.len() > INLINE_OUTPUT || stderr.len() > INLINE_OUTPUT;
            if clipped {
                logs = Some(JobLogs { attempt: report.attempt, stdout: stdout.clone(), stderr: stderr.clone() });
            }
            next.result = Some(JobResult {
                status: *status,
                stdout: stdout[..stdout.len().min(INLINE_OUTPUT)].to_vec(),
                stderr: stderr[..stderr.len().min(INLINE_OUTPUT)].to_vec(),
                clipped,
            });
            let ok = status.exit_code == 0 && status.signal == 0 && !status.timed_out;
            if ok {
                finish(&mut next, JobState::Completed, "", now)?;
            } else {
                next.failures += 1;
                let end = if status.timed_out { JobState::Timeout } else { JobState::Failed };
                if next.failures <= next.retries {
                    next.state = next.state.check_transition(JobState::Pending)?;
                    next.reason = format!("attempt {} ended {end}; retrying", report.attempt);
                } else {
                    finish(&mut next, end, "", now)?;
                }
            }
        }
        JobOutcome::Refused(why) => finish(&mut next, JobState::Failed, why, now)?,
        JobOutcome::Infra(why) => return Ok((infra_failure(record, why, now)?, None)),
    }
    Ok((next, logs))
}

/// The record after an attempt ended for reasons that are not the job's: back to PENDING, or
/// LOST once that happened [`MAX_INFRA_FAILURES`] times.
pub fn infra_failure(record: &JobRecord, why: &str, now: i64) -> Result<JobRecord, InvalidJobTransition> {
    let mut next = record.clone();
    next.infra_failures += 1;
    if next.infra_failures >= MAX_INFRA_FAILURES {
        let why = format!("{why} ({} infrastructure failures)", next.infra_failures);
        finish(&mut next, JobState::Lost, &why, now)?;
    } else {
        next.state = next.state.check_transition(JobState::Pending)?;
        next.reason = format!("attempt {}: {why}; retrying", record.attempt);
    }
    Ok(next)
}

/// The record of a live job cancelled for `why`.
pub fn cancel(record: &JobRecord, why: &str) -> Result<JobRecord, InvalidJobTransition> {
    let mut next = record.clone();
    next.state = record.state.check_transition(JobState::Cancelled)?;
    next.reason = why.to_owned();
    next.finished_at_ms = now_ms_after(record.started_at_ms.max(record.created_at_ms));
    Ok(next)
}

fn finish(r: &mut JobRecord, state: JobState, why: &str, now: i64) -> Result<(), InvalidJobTransition> {
    r.state = r.state.check_transition(state)?;
    r.reason = why.to_owned();
    r.finished_at_ms = now.max(r.started_at_ms).max(r.created_at_ms);
    Ok(())
}

#[cfg(test)]
mod tests {
    use corral_core::model::ExitStatus;

    use super::*;

    fn running(retries: u32) -> JobRecord {
        JobRecord { retries, ..crate::jobs::test_record(JobId::random(), JobState::Running) }
    }

    fn ran(record: &JobRecord, exit_code: i32, out: usize) -> JobReport {
        let status =
            ExitStatus { exit_code, signal: 0, timed_out: false, truncated: false, duration_ms: 3, oom_killed: false };
        JobReport {
            job: record.id.clone(),
            tenant: record.tenant.clone(),
            attempt: record.attempt,
            node: NodeId::parse("n1").unwrap(),
            outcome: JobOutcome::Ran { status, stdout: vec![b'x'; out], stderr: vec![] },
        }
    }

    #[test]
    fn user_failures_retry_then_fail() {
        let r = running(1);
        let (next, _) = report(&r, &ran(&r, 3, 1), 10).unwrap();
        assert_eq!((next.state, next.failures), (JobState::Pending, 1));
        let again = claim(1, &next, NodeId::parse("n1").unwrap(), 0, 10).unwrap().record;
        assert_eq!(again.attempt, 2);
        let (last, _) = report(&again, &ran(&again, 3, 1), 11).unwrap();
        assert_eq!((last.state, last.failures, last.finished_at_ms), (JobState::Failed, 2, 11));
    }

    #[test]
    fn infra_failures_do_not_count_against_retries() {
        let mut r = running(0);
        for _ in 1..MAX_INFRA_FAILURES {
            r = infra_failure(&r, "node gone", 5).unwrap();
            assert_eq!((r.state, r.failures), (JobState::Pending, 0));
            r = claim(1, &r, NodeId::parse("n1").unwrap(), 0, 5).unwrap().record;
        }
        assert_eq!(infra_failure(&r, "node gone", 5).unwrap().state, JobState::Lost);
    }

    #[test]
    fn long_output_goes_to_the_logs() {
        let r = running(0);
        let (next, logs) = report(&r, &ran(&r, 0, INLINE_OUTPUT + 1), 10).unwrap();
        let result = next.result.unwrap();
        assert!(result.clipped && result.stdout.len() == INLINE_OUTPUT);
        assert_eq!(logs.unwrap().stdout.len(), INLINE_OUTPUT + 1);
        assert_eq!(next.state, JobState::Completed);
    }

    #[test]
    fn changes_of_the_wrong_state_are_refused() {
        let node = || NodeId::parse("n1").unwrap();
        let running = running(0);
        assert!(claim(1, &running, node(), 0, 5).is_err(), "a running job is not claimed again");
        let pending = crate::jobs::test_record(JobId::random(), JobState::Pending);
        assert!(infra_failure(&pending, "x", 5).is_err(), "only a running attempt fails");
        assert!(report(&pending, &ran(&pending, 0, 1), 5).is_err(), "only a running attempt reports");
        let done = report(&running, &ran(&running, 0, 1), 5).unwrap().0;
        assert!(cancel(&done, "late").is_err(), "an ended job stays ended");
        assert_eq!(cancel(&pending, "client").unwrap().state, JobState::Cancelled);
    }
}
