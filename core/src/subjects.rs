//! Typed NATS subjects; `Display` renders the wire subject.

use std::fmt;

use crate::ids::{ExecId, NodeId, SandboxId};

/// JetStream stream holding per-node lifecycle work.
pub const WORK_STREAM: &str = "CORRAL_WORK";
/// Subjects captured by [`WORK_STREAM`].
pub const WORK_STREAM_SUBJECTS: &str = "corral.work.>";

/// Where agents report job results (request/reply, served by the leader coordinator).
pub const JOB_RESULTS_SUBJECT: &str = "corral.jobs.results";

/// `corral.work.{node_id}`: lifecycle operations for one node (JetStream work queue).
pub struct WorkSubject<'a>(pub &'a NodeId);

/// `corral.rpc.{node_id}`: interactive request/reply operations (exec start, files).
pub struct RpcSubject<'a>(pub &'a NodeId);

/// `corral.out.{sandbox_id}.{exec_id}`: output chunks of one exec, then its exit frame.
pub struct OutputSubject<'a> {
    pub sandbox: &'a SandboxId,
    pub exec: ExecId,
}

/// `corral.reply.{token}`: where an agent reports the outcome of a work item.
pub struct ReplySubject<'a>(pub &'a str);

impl fmt::Display for WorkSubject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corral.work.{}", self.0)
    }
}

impl fmt::Display for RpcSubject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corral.rpc.{}", self.0)
    }
}

impl fmt::Display for OutputSubject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corral.out.{}.{}", self.sandbox, self.exec)
    }
}

impl fmt::Display for ReplySubject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corral.reply.{}", self.0)
    }
}
