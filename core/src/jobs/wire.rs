//! What travels between the coordinator and the agents about jobs: attempts, outcomes, reports
//! and their acknowledgements.

use serde::{Deserialize, Serialize};

use super::{JobId, JobSpec};
use crate::ids::{NodeId, TenantId};
use crate::model::ExitStatus;
use crate::store::LeaseId;

/// One attempt of a job, sent to the node that claimed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobWork {
    pub job: JobId,
    pub tenant: TenantId,
    pub attempt: u32,
    pub spec: JobSpec,
    /// The node registration the attempt was claimed under ([`super::JobRecord::lease`]); an
    /// agent registered under another lease does not run it.
    pub lease: LeaseId,
}

impl JobWork {
    /// The running attempt of `r`.
    pub fn of(r: &super::JobRecord) -> Self {
        Self { job: r.id.clone(), tenant: r.tenant.clone(), attempt: r.attempt, spec: r.spec.clone(), lease: r.lease }
    }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::jobs::JobCommand;
    use crate::model::RuntimeKind;

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
            lease: 7,
        };
        let bytes = crate::protocol::encode(&work);
        assert_eq!(crate::protocol::decode::<JobWork>(&bytes).unwrap(), work);
    }
}
