//! Records kept in the state store and the domain types shared by coordinator and agents.
//! Records are versioned JSON (`v` field) so they can evolve.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codebase::CodebaseMount;
use crate::ids::{NodeId, SandboxId, SandboxName, TenantId};
use crate::languages::LanguageOffer;
use crate::state::SandboxState;

/// Which isolation technology runs a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Bwrap,
    Docker,
    /// Benchmark-only (jobs only): completes a job at once without starting anything, so the
    /// orchestration is what gets timed. Agents offer it only when configured to.
    Noop,
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bwrap => "bwrap",
            Self::Docker => "docker",
            Self::Noop => "noop",
        })
    }
}

/// Everything needed to start a sandbox; fixed at creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub id: SandboxId,
    pub tenant: TenantId,
    pub runtime: RuntimeKind,
    pub name: Option<SandboxName>,
    pub cpus: f64,
    pub memory_mb: u64,
    /// Maximum number of processes inside the sandbox.
    pub pids_limit: u32,
    pub timeout_seconds: u64,
    pub internet_access: bool,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Default working directory inside the sandbox (absolute).
    pub workdir: String,
    /// The image of a Docker sandbox (a local image of the node); empty for bubblewrap.
    #[serde(default)]
    pub image: String,
    /// Disk quota (MiB) of `/workspace` and `/tmp` together; 0 = the node's default (records
    /// written before quotas existed decode as 0).
    #[serde(default)]
    pub disk_mb: u64,
    /// A codebase shown inside the sandbox through path rules, with the sandbox's own layer.
    /// (Never skipped when empty: the bus encoding, postcard, is not self-describing.)
    #[serde(default)]
    pub codebase: Option<Box<CodebaseMount>>,
}

/// Space and inodes a sandbox uses on its disk (`statfs` of its file system).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiskUsage {
    pub used_bytes: u64,
    pub total_bytes: u64,
    pub used_inodes: u64,
    pub total_inodes: u64,
}

/// `sandboxes/{tenant}/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub v: u32,
    pub spec: SandboxSpec,
    pub state: SandboxState,
    pub node: Option<NodeId>,
    pub created_at_ms: i64,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    /// When the sandbox is expected to expire, for display (the writer's clock). The deadline
    /// itself is the lease of its `deadlines/` key.
    pub expires_at_ms: i64,
    pub termination_reason: String,
    /// The lease holding the sandbox's deadline key; 0 while it has none (no timeout, or not yet
    /// running). Written with the key in one transaction, so a live record with a lease and no
    /// key has expired.
    #[serde(default)]
    pub deadline_lease: i64,
}

impl SandboxRecord {
    pub const VERSION: u32 = 1;
}

/// What a node can hold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    pub cpus: f64,
    pub memory_mb: u64,
    /// Maximum number of sandboxes and jobs at once.
    pub sandboxes: u32,
    /// Disk (MiB) the node offers to sandboxes' quotas; 0 = not counted (older agents, quotas off).
    #[serde(default)]
    pub disk_mb: u64,
    /// Largest disk (MiB) one sandbox may ask for on this node; 0 = no limit (older agents).
    #[serde(default)]
    pub max_sandbox_disk_mb: u64,
    /// Process ids the node promises to sandboxes and jobs (the sum of their pids limits);
    /// records written before it existed decode as unlimited.
    #[serde(default = "unlimited")]
    pub pids: u64,
}

fn unlimited() -> u64 {
    u64::MAX
}

/// `nodes/{node_id}`, written by the agent on its lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub v: u32,
    pub node_id: NodeId,
    pub capacity: Capacity,
    pub runtimes: Vec<RuntimeKind>,
    /// Local images the node's Docker runtime can start (`repository:tag`).
    #[serde(default)]
    pub images: Vec<String>,
    /// The `run_code` languages each runtime of the node can run (records written before
    /// languages existed decode with none).
    #[serde(default)]
    pub languages: Vec<LanguageOffer>,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    pub registered_at_ms: i64,
    /// The store lease this record is on (the agent sets it when it writes the record): the
    /// node's running job attempts hold their tenant and batch permits on it, so they go when
    /// the node does. 0 in records written before permits existed.
    #[serde(default)]
    pub lease: crate::store::LeaseId,
}

impl NodeInfo {
    pub const VERSION: u32 = 1;
}

/// What an exec runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A program and its arguments, run without a shell.
    Argv(Vec<String>),
    /// A command line for `/bin/sh -c`.
    Shell(String),
}

/// One command execution inside a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub command: Command,
    /// Environment layered over the sandbox's env (which is layered over PATH/HOME/LANG).
    pub env: BTreeMap<String, String>,
    /// Absolute working directory inside the sandbox.
    pub cwd: String,
    pub timeout_ms: u64,
    #[serde(with = "serde_bytes")]
    pub stdin: Vec<u8>,
    /// Output beyond this many bytes per stream is dropped and the exit marked truncated.
    pub max_output_bytes: u64,
    /// Give the command a side channel (its fd 3), reported apart from its output; sessions use
    /// it to carry the shell's state back.
    #[serde(default)]
    pub side_channel: bool,
}

/// How an exec ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, or -1 when killed by a signal.
    pub exit_code: i32,
    /// Signal that ended the process, 0 if none.
    pub signal: i32,
    pub timed_out: bool,
    pub truncated: bool,
    pub duration_ms: u64,
    /// The sandbox hit its memory limit while the command ran.
    #[serde(default)]
    pub oom_killed: bool,
}

/// A background process of a sandbox, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Unique within the sandbox for its whole life (numbers are never reused).
    pub pid: u32,
    /// The command line, for display (argv joined with spaces, or the shell string).
    pub command: String,
    /// `None` while the process runs.
    pub exit: Option<ExitStatus>,
    pub started_at_ms: i64,
    /// 0 while running.
    pub ended_at_ms: i64,
}

/// One directory entry returned by the files API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub is_dir: bool,
    pub is_symlink: bool,
    pub size: u64,
    pub mode: u32,
    pub mtime_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_records_without_languages_still_decode() {
        let old = r#"{"v":1,"node_id":"n1","capacity":{"cpus":2.0,"memory_mb":1024,"sandboxes":8},
            "runtimes":["bwrap"],"labels":{},"agent_version":"0.1.0","registered_at_ms":1}"#;
        let info: NodeInfo = serde_json::from_str(old).expect("an old record decodes");
        assert!(info.languages.is_empty() && info.images.is_empty());
    }
}
