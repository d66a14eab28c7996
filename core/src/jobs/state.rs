//! The job and batch lifecycles and their single transition checks.

use std::fmt;

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::JobState::*;
    use super::*;
    use crate::jobs::{BatchId, BatchRecord};

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
        r.cancelled = Some(crate::jobs::Cancelled { reason: "x".into(), at_ms: 2 });
        assert_eq!(r.state(), B::Cancelled);
    }
}
