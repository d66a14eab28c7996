//! Coordinator settings (filled by the layered loader in the `corral` binary).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Smallest disk quota (MiB): the file system needs room for its own metadata (the agents' minimum).
pub const MIN_DISK_MB: u64 = 8;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Sandbox lifetime when a request sets none.
    pub default_timeout_seconds: u64,
    /// Longest lifetime a request may ask for.
    pub max_timeout_seconds: u64,
    /// CPU cores given to a sandbox when a request sets none.
    pub default_cpus: f64,
    /// Memory (MiB) given to a sandbox when a request sets none.
    pub default_memory_mb: u64,
    pub max_cpus: f64,
    pub max_memory_mb: u64,
    /// Disk quota (MiB) of a sandbox when a request sets none (keep it equal to the agents'
    /// `sandbox_disk_mb`, the size their warm pools prepare).
    pub default_disk_mb: u64,
    /// Largest disk quota a request may ask for (a node may allow less: its
    /// `max_sandbox_disk_mb`, which placement respects).
    pub max_disk_mb: u64,
    /// Process limit inside each sandbox.
    pub pids_limit: u32,
    /// Command timeout when an exec sets none.
    pub default_exec_timeout_seconds: f64,
    pub max_exec_timeout_seconds: f64,
    /// Output kept per stream by unary `Exec.Run`; more is dropped and flagged `truncated`.
    pub max_output_bytes: u64,
    /// How long Create waits for the agent to report the sandbox ready.
    pub create_timeout_seconds: u64,
    /// Largest file accepted by `Files.Write` / returned by `Files.Read`.
    pub max_file_bytes: u64,
    /// TTL of the leader lease: a standby coordinator takes over the reconciler within about this
    /// long after the leader dies.
    pub leader_lease_seconds: u64,
    /// Most jobs of one tenant running at once; more wait in the tenant's queue.
    pub max_running_jobs_per_tenant: usize,
    /// Most jobs of one tenant waiting to run; a submit beyond is RESOURCE_EXHAUSTED.
    pub max_queued_jobs_per_tenant: usize,
    /// Most items in one batch (sent in parts of at most `max_items_per_request`).
    pub max_batch_items: usize,
    /// Most batch items in one request (`Batches.Submit` or `Batches.Append`).
    pub max_items_per_request: usize,
    /// Largest `Jobs`/`Batches` request; one up to twice this size is refused with a message
    /// naming this setting, a larger one by the gRPC layer before it is read.
    pub max_request_bytes: usize,
    /// An unaccepted batch with no new part for this long is abandoned (cancelled, never run).
    pub batch_upload_timeout_seconds: u64,
    /// Largest file (MiB) a codebase takes.
    pub codebase_max_file_mb: u64,
    /// Largest codebase (MiB, the sum of its files).
    pub codebase_max_mb: u64,
    /// Most files in one codebase.
    pub codebase_max_files: u64,
}

/// The part size the Corral clients send: servers must accept at least this.
pub const CLIENT_PART_ITEMS: usize = 1000;
pub const CLIENT_PART_BYTES: usize = 4 * 1024 * 1024;

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 50051).into(),
            default_timeout_seconds: 300,
            max_timeout_seconds: 7 * 24 * 3600,
            default_cpus: 1.0,
            default_memory_mb: 512,
            max_cpus: 64.0,
            max_memory_mb: 256 * 1024,
            default_disk_mb: 1024,
            max_disk_mb: 16 * 1024,
            pids_limit: 1024,
            default_exec_timeout_seconds: 300.0,
            max_exec_timeout_seconds: 24.0 * 3600.0,
            max_output_bytes: 16 * 1024 * 1024,
            create_timeout_seconds: 30,
            max_file_bytes: 64 * 1024 * 1024,
            leader_lease_seconds: 10,
            max_running_jobs_per_tenant: 1000,
            max_queued_jobs_per_tenant: 100_000,
            max_batch_items: 1_000_000,
            max_items_per_request: 10_000,
            max_request_bytes: 8 * 1024 * 1024,
            batch_upload_timeout_seconds: 600,
            codebase_max_file_mb: 100,
            codebase_max_mb: 1024,
            codebase_max_files: 100_000,
        }
    }
}

impl CoordinatorConfig {
    /// Checks the settings together; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.default_timeout_seconds == 0 || self.default_timeout_seconds > self.max_timeout_seconds {
            return Err("coordinator.default_timeout_seconds must be in 1..=max_timeout_seconds".into());
        }
        if !(self.default_cpus > 0.0 && self.default_cpus <= self.max_cpus) {
            return Err("coordinator.default_cpus must be in (0, max_cpus]".into());
        }
        if self.default_disk_mb < MIN_DISK_MB || self.default_disk_mb > self.max_disk_mb {
            return Err(format!("coordinator.default_disk_mb must be in {MIN_DISK_MB}..=max_disk_mb"));
        }
        if self.default_memory_mb == 0 || self.default_memory_mb > self.max_memory_mb {
            return Err("coordinator.default_memory_mb must be in 1..=max_memory_mb".into());
        }
        if self.pids_limit < 8 {
            return Err("coordinator.pids_limit must be at least 8".into());
        }
        if !(self.default_exec_timeout_seconds > 0.0
            && self.default_exec_timeout_seconds <= self.max_exec_timeout_seconds)
        {
            return Err("coordinator.default_exec_timeout_seconds must be in (0, max_exec_timeout_seconds]".into());
        }
        if self.max_output_bytes == 0 || self.max_output_bytes > 256 * 1024 * 1024 {
            return Err("coordinator.max_output_bytes must be in 1..=268435456".into());
        }
        if self.max_file_bytes == 0 || self.max_file_bytes > 1024 * 1024 * 1024 {
            return Err("coordinator.max_file_bytes must be in 1..=1073741824".into());
        }
        if !(2..=300).contains(&self.leader_lease_seconds) {
            return Err("coordinator.leader_lease_seconds must be in 2..=300".into());
        }
        if self.max_running_jobs_per_tenant == 0 {
            return Err("coordinator.max_running_jobs_per_tenant must be at least 1".into());
        }
        if !(1..=10_000_000).contains(&self.max_queued_jobs_per_tenant) {
            return Err("coordinator.max_queued_jobs_per_tenant must be in 1..=10000000".into());
        }
        self.validate_batches()
    }

    fn validate_batches(&self) -> Result<(), String> {
        let most = corral_core::jobs::MAX_BATCH_ITEMS;
        if !(1..=most).contains(&self.max_batch_items) {
            return Err(format!("coordinator.max_batch_items must be in 1..={most}"));
        }
        if !(CLIENT_PART_ITEMS..=1_000_000).contains(&self.max_items_per_request) {
            return Err(format!(
                "coordinator.max_items_per_request must be in {CLIENT_PART_ITEMS}..=1000000 (clients send parts of \
                 {CLIENT_PART_ITEMS})"
            ));
        }
        if !(CLIENT_PART_BYTES..=256 * 1024 * 1024).contains(&self.max_request_bytes) {
            return Err(format!(
                "coordinator.max_request_bytes must be in {CLIENT_PART_BYTES}..=268435456 (clients send parts of up \
                 to {CLIENT_PART_BYTES} bytes)"
            ));
        }
        if !(1..=7 * 24 * 3600).contains(&self.batch_upload_timeout_seconds) {
            return Err("coordinator.batch_upload_timeout_seconds must be in 1..=604800".into());
        }
        if !(1..=16 * 1024).contains(&self.codebase_max_file_mb) || self.codebase_max_file_mb > self.codebase_max_mb {
            return Err("coordinator.codebase_max_file_mb must be in 1..=16384 and at most codebase_max_mb".into());
        }
        if !(1..=1024 * 1024).contains(&self.codebase_max_mb) {
            return Err("coordinator.codebase_max_mb must be in 1..=1048576".into());
        }
        if !(1..=10_000_000).contains(&self.codebase_max_files) {
            return Err("coordinator.codebase_max_files must be in 1..=10000000".into());
        }
        Ok(())
    }

    pub fn leader_lease(&self) -> Duration {
        Duration::from_secs(self.leader_lease_seconds)
    }

    pub fn codebase_limits(&self) -> crate::codebases::CodebaseLimits {
        crate::codebases::CodebaseLimits {
            max_file_bytes: self.codebase_max_file_mb << 20,
            max_total_bytes: self.codebase_max_mb << 20,
            max_files: self.codebase_max_files,
        }
    }

    pub fn create_timeout(&self) -> Duration {
        Duration::from_secs(self.create_timeout_seconds)
    }
}
