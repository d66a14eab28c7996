//! Messages between the coordinator and agents, encoded with postcard (compact, schema in code).
//!
//! - [`Work`] travels on a node's JetStream work queue; the agent answers with a [`WorkReply`]
//!   published on the `reply_to` subject named in the work item.
//! - [`RpcRequest`] / [`RpcReply`] travel as core NATS request/reply on `corral.rpc.{node}`.
//! - [`OutputFrame`]s of one exec (or one follower of a background process) are published on
//!   `corral.out.{sandbox}.{exec}`, numbered from 0, ending with exactly one `Exit` (or `Failed`)
//!   frame.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::ids::{ExecId, NodeId, SandboxId, SessionId};
use crate::jobs::{JobId, JobWork};
use crate::model::{ExecSpec, ExitStatus, FileEntry, ProcessInfo, SandboxSpec};

/// Largest data chunk carried in one message (file transfer, output).
pub const CHUNK_BYTES: usize = 512 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("malformed bus message: {0}")]
pub struct DecodeError(String);

pub fn encode<T: Serialize>(msg: &T) -> bytes::Bytes {
    bytes::Bytes::from(postcard::to_stdvec(msg).expect("protocol messages always serialise"))
}

pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<T, DecodeError> {
    postcard::from_bytes(buf).map_err(|e| DecodeError(e.to_string()))
}

/// A lifecycle operation for one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Work {
    /// Start the sandbox (idempotent: an existing sandbox with this id is reported as created).
    Create { spec: SandboxSpec, reply_to: String },
    /// Destroy the sandbox (idempotent: a missing sandbox is reported as destroyed).
    Destroy { sandbox: SandboxId, reply_to: String },
    /// Run these job attempts (idempotent per job and attempt). Results go to
    /// `corral.jobs.results` as `JobReports`, not to a reply subject.
    RunJobs { jobs: Vec<JobWork> },
}

/// The outcome of a [`Work`] item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkReply {
    Created { sandbox: SandboxId, node: NodeId },
    CreateFailed { sandbox: SandboxId, node: NodeId, error: AgentError },
    Destroyed { sandbox: SandboxId, node: NodeId },
}

/// Interactive operations on a sandbox hosted by the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RpcRequest {
    /// Start a command; its output goes to `corral.out.{sandbox}.{exec}`, which the caller must
    /// already be subscribed to. Replied with `ExecStarted` once the process runs.
    Exec {
        sandbox: SandboxId,
        exec: ExecId,
        spec: ExecSpec,
    },
    /// Kill a running exec's process tree.
    KillExec {
        sandbox: SandboxId,
        exec: ExecId,
    },
    /// Read up to `len` bytes (≤ CHUNK_BYTES) at `offset`. Replied with `FileChunk`.
    ReadFile {
        sandbox: SandboxId,
        path: String,
        offset: u64,
        len: u32,
    },
    /// Part of a file upload. Chunks of one `upload` arrive in order with increasing offsets; the
    /// file appears (atomically, with `mode`) only when the chunk with `last` is applied.
    WriteFile {
        sandbox: SandboxId,
        path: String,
        upload: u64,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        mode: u32,
        last: bool,
    },
    ListFiles {
        sandbox: SandboxId,
        path: String,
    },
    RemoveFile {
        sandbox: SandboxId,
        path: String,
        recursive: bool,
    },
    /// Freeze every process of the sandbox.
    Pause {
        sandbox: SandboxId,
    },
    /// Thaw a paused sandbox.
    Resume {
        sandbox: SandboxId,
    },
    /// Start a background process (no timeout, output kept in a bounded buffer). Replied with
    /// `ProcessStarted`.
    StartProcess {
        sandbox: SandboxId,
        spec: ExecSpec,
    },
    /// Replied with `Processes`.
    ListProcesses {
        sandbox: SandboxId,
    },
    SignalProcess {
        sandbox: SandboxId,
        pid: u32,
        signal: i32,
    },
    /// SIGKILL a background process's whole tree (a no-op once it exited).
    KillProcess {
        sandbox: SandboxId,
        pid: u32,
    },
    /// Stream a background process's buffered output, then its live output and its exit, to
    /// `corral.out.{sandbox}.{follow}` (the caller subscribes first). Replied with `ExecStarted`.
    FollowProcess {
        sandbox: SandboxId,
        pid: u32,
        follow: ExecId,
    },
    /// Stop a `FollowProcess` stream whose reader went away.
    Unfollow {
        sandbox: SandboxId,
        follow: ExecId,
    },
    /// Open a shell session (`cwd` empty = the sandbox's workdir). Replied with `SessionOpened`.
    OpenSession {
        sandbox: SandboxId,
        cwd: String,
        env: BTreeMap<String, String>,
    },
    /// Run a shell command line in a session; its output goes to `corral.out.{sandbox}.{exec}`
    /// like `Exec`. Replied with `ExecStarted`.
    SessionExec {
        session: SessionId,
        exec: ExecId,
        command: String,
        timeout_ms: u64,
        max_output_bytes: u64,
    },
    CloseSession {
        session: SessionId,
    },
    /// Kill the attempt's command if it still runs here (the job was cancelled).
    CancelJob {
        job: JobId,
        attempt: u32,
    },
    /// Liveness and identity check.
    Ping,
    /// What a sandbox on a codebase changed in it. Replied with `Changes`.
    Diff {
        sandbox: SandboxId,
    },
    /// The node's view of a live sandbox (disk use, health of its codebase view). Replied with
    /// `Status`.
    Status {
        sandbox: SandboxId,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RpcReply {
    Ok,
    ExecStarted,
    FileChunk {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Total size of the file.
        size: u64,
        mode: u32,
    },
    Written {
        size: u64,
    },
    Entries(Vec<FileEntry>),
    ProcessStarted {
        pid: u32,
    },
    Processes(Vec<ProcessInfo>),
    SessionOpened {
        session: SessionId,
    },
    Pong {
        node: NodeId,
    },
    Error(AgentError),
    Changes {
        changes: Vec<crate::codebase::Change>,
        /// More changes than listed.
        truncated: bool,
    },
    Status {
        /// `None` when the node enforces no disk quotas.
        disk: Option<crate::model::DiskUsage>,
        /// The sandbox's codebase view failed (its file system server died): every operation
        /// on the codebase answers EIO.
        codebase_failed: bool,
    },
}

/// One frame of an exec's output stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OutputFrame {
    Stdout {
        seq: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    Stderr {
        seq: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    Exit {
        seq: u64,
        status: ExitStatus,
    },
    /// The exec could not finish (e.g. the sandbox was destroyed under it).
    Failed {
        seq: u64,
        error: AgentError,
    },
    /// Followed processes only: this many bytes of earlier output were dropped from the
    /// process's buffer before the follower got them.
    Dropped {
        seq: u64,
        bytes: u64,
    },
    /// Followed processes only: sent while the process is quiet, so readers can tell a silent
    /// process from a dead agent.
    Alive {
        seq: u64,
    },
}

impl OutputFrame {
    pub fn seq(&self) -> u64 {
        match self {
            Self::Stdout { seq, .. }
            | Self::Stderr { seq, .. }
            | Self::Exit { seq, .. }
            | Self::Failed { seq, .. }
            | Self::Dropped { seq, .. }
            | Self::Alive { seq } => *seq,
        }
    }
}

/// What went wrong on the agent, classified so the coordinator can choose the gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentErrorKind {
    NotFound,
    InvalidArgument,
    PermissionDenied,
    FailedPrecondition,
    ResourceExhausted,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    pub kind: AgentErrorKind,
    pub message: String,
}

impl AgentError {
    pub fn new(kind: AgentErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Command;

    #[test]
    fn rpc_round_trip() {
        let req = RpcRequest::Exec {
            sandbox: SandboxId::random(),
            exec: ExecId(7),
            spec: ExecSpec {
                command: Command::Argv(vec!["true".into()]),
                env: Default::default(),
                cwd: "/workspace".into(),
                timeout_ms: 1000,
                stdin: b"in".to_vec(),
                max_output_bytes: 10,
                side_channel: false,
            },
        };
        let back: RpcRequest = decode(&encode(&req)).unwrap();
        assert_eq!(back, req);
        assert!(decode::<RpcRequest>(b"\xff\xff\xff").is_err());
    }
}
