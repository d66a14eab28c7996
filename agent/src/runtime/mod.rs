//! The `Runtime` trait: how an agent runs sandboxes. One implementation per isolation technology
//! (`bwrap`, `docker`), one conformance suite for all of them (`agent/tests/runtime_conformance.rs`).
//! Both run `corral-init` inside each sandbox and share the code that talks to it: [`conn`] (the
//! framed control stream), [`client`] (execs) and [`files`] (the files API's path rules).

pub mod bwrap;
pub mod cgroup;
pub mod client;
pub mod conn;
pub mod disk;
pub mod docker;
pub mod files;
pub mod seccomp;

use async_trait::async_trait;
use corral_core::ids::{ExecId, SandboxId};
use corral_core::model::{DiskUsage, ExecSpec, ExitStatus, FileEntry, RuntimeKind, SandboxSpec};
use corral_core::protocol::{AgentError, AgentErrorKind};
use tokio::sync::mpsc;

/// Output and completion of one exec, in order. The last event is always `Exit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// What the command wrote to its side channel (only with `ExecSpec::side_channel`).
    Side(Vec<u8>),
    Exit(ExitStatus),
}

/// A started exec. Dropping the receiver does not kill the process; use `Runtime::kill_exec`.
#[derive(Debug)]
pub struct ExecHandle {
    pub events: mpsc::Receiver<ExecEvent>,
}

/// How a one-shot run ended, with its (capped) output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneShot {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A piece of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChunk {
    pub data: Vec<u8>,
    /// Total file size.
    pub size: u64,
    pub mode: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("sandbox {0} not found on this node")]
    SandboxNotFound(SandboxId),
    #[error("exec {exec} not found in sandbox {sandbox}")]
    ExecNotFound { sandbox: SandboxId, exec: ExecId },
    #[error("process {pid} not found in sandbox {sandbox}")]
    ProcessNotFound { sandbox: SandboxId, pid: u32 },
    #[error("session {0} not found (closed, or its sandbox was destroyed)")]
    SessionNotFound(String),
    /// The operation conflicts with the current state of a process or session.
    #[error("{0}")]
    Conflict(String),
    #[error("path {path:?}: {why}")]
    InvalidPath { path: String, why: String },
    #[error("path {path:?} not found")]
    PathNotFound { path: String },
    #[error("path {path:?}: {why}")]
    PathRefused { path: String, why: String },
    /// The operation conflicts with the path's current state (e.g. removing a non-empty directory).
    #[error("path {path:?}: {why}")]
    PathConflict { path: String, why: String },
    #[error("{what}: {why}")]
    Invalid { what: &'static str, why: String },
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("sandbox {sandbox} failed to start: {why}")]
    StartFailed { sandbox: SandboxId, why: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }
}

impl From<RuntimeError> for AgentError {
    fn from(e: RuntimeError) -> Self {
        let kind = match &e {
            RuntimeError::SandboxNotFound(_)
            | RuntimeError::ExecNotFound { .. }
            | RuntimeError::ProcessNotFound { .. }
            | RuntimeError::SessionNotFound(_)
            | RuntimeError::PathNotFound { .. } => AgentErrorKind::NotFound,
            RuntimeError::InvalidPath { .. } | RuntimeError::Invalid { .. } => AgentErrorKind::InvalidArgument,
            RuntimeError::PathRefused { .. } => AgentErrorKind::PermissionDenied,
            RuntimeError::ResourceExhausted(_) => AgentErrorKind::ResourceExhausted,
            RuntimeError::StartFailed { .. } | RuntimeError::PathConflict { .. } | RuntimeError::Conflict(_) => {
                AgentErrorKind::FailedPrecondition
            }
            RuntimeError::Io { .. } => AgentErrorKind::Internal,
        };
        AgentError::new(kind, e.to_string())
    }
}

pub type RuntimeResult<T> = Result<T, RuntimeError>;

/// Runs sandboxes on this node. Paths given to file operations are sandbox paths (absolute, e.g.
/// `/workspace/a.txt`); implementations must refuse anything that resolves outside the sandbox's
/// writable areas, including through symlinks and `..`.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    fn kind(&self) -> RuntimeKind;

    /// Starts the sandbox and returns once it can run commands. Idempotent for an existing id.
    async fn create(&self, spec: &SandboxSpec) -> RuntimeResult<()>;

    /// Starts a command in the sandbox's shared namespaces; returns once it is running.
    async fn exec(&self, sandbox: &SandboxId, exec: ExecId, spec: ExecSpec) -> RuntimeResult<ExecHandle>;

    /// Kills the whole process tree of a running exec (its Exit event reports the signal).
    async fn kill_exec(&self, sandbox: &SandboxId, exec: ExecId) -> RuntimeResult<()>;

    /// Sends `signal` to a running exec's process group.
    async fn signal_exec(&self, sandbox: &SandboxId, exec: ExecId, signal: i32) -> RuntimeResult<()>;

    async fn read_file(&self, sandbox: &SandboxId, path: &str, offset: u64, len: u32) -> RuntimeResult<FileChunk>;

    /// Writes a whole file atomically (temp file + rename), creating missing parent directories.
    /// Returns the size written.
    async fn write_file(&self, sandbox: &SandboxId, path: &str, data: &[u8], mode: u32) -> RuntimeResult<u64>;

    async fn list_files(&self, sandbox: &SandboxId, path: &str) -> RuntimeResult<Vec<FileEntry>>;

    async fn remove_file(&self, sandbox: &SandboxId, path: &str, recursive: bool) -> RuntimeResult<()>;

    /// Whether this runtime's sandboxes have kernel-enforced disk quotas.
    fn disk_quotas(&self) -> bool {
        false
    }

    /// Space and inodes the sandbox uses on its disk; `None` when this node does not enforce
    /// disk quotas (its storage is then not a file system of its own).
    async fn disk_usage(&self, sandbox: &SandboxId) -> RuntimeResult<Option<DiskUsage>> {
        let _ = sandbox;
        Ok(None)
    }

    /// Whether the sandbox's codebase view failed (its permission file system died).
    fn codebase_failed(&self, sandbox: &SandboxId) -> bool {
        let _ = sandbox;
        false
    }

    /// What a sandbox created on a codebase changed in it (and whether there was more than
    /// listed). Refused for a sandbox without a codebase.
    async fn diff(&self, sandbox: &SandboxId) -> RuntimeResult<(Vec<corral_core::codebase::Change>, bool)> {
        Err(RuntimeError::Conflict(format!("sandbox {sandbox} has no codebase")))
    }

    /// Removes what sandboxes no longer running left behind (storage of a container removed
    /// behind the agent's back); called by the agent's GC every period.
    async fn sweep(&self) {}

    /// Kills everything in the sandbox and removes its files and cgroups. Idempotent.
    async fn destroy(&self, sandbox: &SandboxId) -> RuntimeResult<()>;

    /// Sandboxes currently running on this node (after an agent restart: those that survived it).
    async fn list(&self) -> Vec<SandboxId>;

    /// Freezes every process of the sandbox; idempotent.
    async fn pause(&self, sandbox: &SandboxId) -> RuntimeResult<()>;

    /// Thaws a paused sandbox; idempotent.
    async fn resume(&self, sandbox: &SandboxId) -> RuntimeResult<()>;

    /// Images this runtime can start (`repository:tag`); empty for runtimes without images.
    async fn images(&self) -> Vec<String>;

    /// Cgroup directories under which every process of this runtime's sandboxes lives (for the
    /// node watchdog, [`crate::watchdog`]); empty when the runtime cannot name them.
    fn process_cgroups(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }

    /// Takes back a sandbox found by `list` after an agent restart, so it can be used again.
    async fn adopt(&self, spec: &SandboxSpec) -> RuntimeResult<()>;

    /// Runs one command in a fresh sandbox of `spec`, with `files` written first, and removes
    /// the sandbox (jobs). `kill` ends it early (reported as killed by SIGKILL). The default
    /// creates, execs and destroys; a runtime may do it more cheaply. The sandbox is not listed
    /// by `list` while it runs.
    async fn run_once(
        &self,
        spec: &SandboxSpec,
        files: &[(String, Vec<u8>)],
        exec: ExecSpec,
        kill: std::sync::Arc<tokio::sync::Notify>,
    ) -> RuntimeResult<OneShot> {
        self.create(spec).await?;
        let result = async {
            for (path, data) in files {
                self.write_file(&spec.id, path, data, 0o644).await?;
            }
            let cap = exec.max_output_bytes as usize;
            let mut handle = self.exec(&spec.id, ExecId::random(), exec).await?;
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            loop {
                let event = tokio::select! {
                    e = handle.events.recv() => e,
                    _ = kill.notified() => {
                        self.destroy(&spec.id).await?;
                        None
                    }
                };
                match event {
                    Some(ExecEvent::Stdout(d)) => {
                        stdout.extend_from_slice(&d[..d.len().min(cap.saturating_sub(stdout.len()))])
                    }
                    Some(ExecEvent::Stderr(d)) => {
                        stderr.extend_from_slice(&d[..d.len().min(cap.saturating_sub(stderr.len()))])
                    }
                    Some(ExecEvent::Side(_)) => {}
                    Some(ExecEvent::Exit(status)) => return Ok(OneShot { status, stdout, stderr }),
                    None => {
                        let status = ExitStatus {
                            exit_code: -1,
                            signal: libc::SIGKILL,
                            timed_out: false,
                            truncated: false,
                            duration_ms: 0,
                            oom_killed: false,
                        };
                        return Ok(OneShot { status, stdout, stderr });
                    }
                }
            }
        }
        .await;
        self.destroy(&spec.id).await?;
        result
    }
}
