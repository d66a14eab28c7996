//! Agent settings (filled by the layered loader in the `corral` binary).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// This node's id (lowercase letters, digits, '-', '_'); empty = derived from the host name.
    pub node_id: String,
    /// Where sandboxes' files live (`{state_dir}/sandboxes/{id}`).
    pub state_dir: PathBuf,
    /// CPU cores offered to sandboxes; 0 = all cores of the host.
    pub cpus: f64,
    /// Memory (MiB) offered to sandboxes; 0 = the host's total memory.
    pub memory_mb: u64,
    /// How many times `memory_mb` (or the host's memory) the node promises to sandboxes. Sandbox
    /// memory settings are ceilings that idle sandboxes do not use, so promising more than the
    /// host has lets many small sandboxes share a node; 1.0 never overcommits.
    pub memory_overcommit: f64,
    /// Most sandboxes and jobs this node runs at once.
    pub max_sandboxes: u32,
    /// Process ids offered to sandboxes and jobs; 0 = nine tenths of the host's (the smaller of
    /// `kernel.pid_max` and `kernel.threads-max`).
    pub max_pids: u64,
    /// How many times `max_pids` the node promises, summed over the pids limits of its sandboxes
    /// and jobs. Like memory, a pids limit is a ceiling few sandboxes reach; 1.0 never overcommits.
    pub pids_overcommit: f64,
    /// Labels published in this node's NodeInfo.
    pub labels: BTreeMap<String, String>,
    /// The node record's lease TTL; the node is considered gone this long after its last heartbeat.
    pub lease_ttl_seconds: u64,
    /// Heartbeat period (must be well under the TTL).
    pub heartbeat_seconds: u64,
    /// Run the node watchdog (`corral-init --watchdog`), which kills every sandbox process when
    /// the agent stops renewing it for [`AgentConfig::watchdog`] (an agent stopped past its lease).
    pub watchdog: bool,
    /// Period of the check that destroys local sandboxes whose record ended or vanished.
    pub gc_interval_seconds: u64,
    /// Most lifecycle operations (create/destroy) handled at once.
    pub max_concurrent_work: usize,
    /// Started, never-used bubblewrap sandboxes (default shape: no network) kept ready so a
    /// create takes one instead of spawning bwrap; 0 disables the pool.
    pub warm_pool: usize,
    /// Path of `bwrap`; empty = found on PATH.
    pub bwrap_path: PathBuf,
    /// Path of `corral-init`; empty = next to the running binary, then PATH.
    pub init_path: PathBuf,
    /// Whether the node offers the Docker runtime: `auto` (if the engine answers), `on`
    /// (required: the agent fails to start without it) or `off`.
    pub docker: DockerMode,
    /// The Docker engine's unix socket; empty = `/var/run/docker.sock`.
    pub docker_socket: PathBuf,
    /// Offer the benchmark-only `noop` runtime, which completes jobs without running anything
    /// (for measuring the orchestration alone). Never enable it in production.
    pub noop_runtime: bool,
    /// Most processes inside one job's sandbox.
    pub job_pids_limit: u32,
    /// Kernel-enforced disk quotas for sandboxes (a loop-mounted ext4 image each): `auto` (when
    /// the agent may attach loop devices and finds `mkfs.ext4`), `on` (required) or `off`.
    pub disk_quota: DiskQuotaMode,
    /// Disk (MiB) offered to sandboxes' quotas; 0 = nine tenths of the state directory's free
    /// space at start-up. Not counted when quotas are off.
    pub disk_mb: u64,
    /// How many times `disk_mb` the node promises, summed over its sandboxes' quotas. A quota is
    /// a ceiling on a sparse image that takes only what is written, so like memory it can be
    /// promised more than once; 1.0 never overcommits (every quota can be filled at once).
    pub disk_overcommit: f64,
    /// Disk (MiB) of a sandbox that asks for none, and of warm-pool sandboxes.
    pub sandbox_disk_mb: u64,
    /// Inodes of a sandbox disk of `sandbox_disk_mb`; other sizes get the same ratio.
    pub sandbox_inodes: u64,
    /// Largest disk (MiB) one sandbox may ask for on this node.
    pub max_sandbox_disk_mb: u64,
    /// Codebases kept on the node (MiB): trees no sandbox uses are evicted, least recently used
    /// first, past this.
    pub codebase_cache_mb: u64,
    /// Path of `corral-fs` (the permission file system of codebases); empty = next to the
    /// running binary, then PATH. Without it, or without `/dev/fuse`, the node offers no codebases.
    pub fs_path: PathBuf,
}

/// The `agent.disk_quota` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskQuotaMode {
    /// On when loop devices and `mkfs.ext4` are usable at start-up; otherwise off, with a warning.
    #[default]
    Auto,
    /// Required: the agent fails to start without them.
    On,
    Off,
}

/// The `agent.docker` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DockerMode {
    /// Use the engine when it answers a ping at start-up; otherwise run bubblewrap only.
    #[default]
    Auto,
    /// The engine is required.
    On,
    Off,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            state_dir: PathBuf::from("/var/lib/corral"),
            cpus: 0.0,
            memory_mb: 0,
            memory_overcommit: 4.0,
            max_sandboxes: 256,
            max_pids: 0,
            pids_overcommit: 8.0,
            labels: BTreeMap::new(),
            lease_ttl_seconds: 10,
            heartbeat_seconds: 3,
            watchdog: true,
            gc_interval_seconds: 30,
            max_concurrent_work: 64,
            warm_pool: 2,
            bwrap_path: PathBuf::new(),
            init_path: PathBuf::new(),
            docker: DockerMode::Auto,
            docker_socket: PathBuf::new(),
            noop_runtime: false,
            job_pids_limit: 1024,
            disk_quota: DiskQuotaMode::Auto,
            disk_mb: 0,
            disk_overcommit: 4.0,
            sandbox_disk_mb: 1024,
            sandbox_inodes: 100_000,
            max_sandbox_disk_mb: 16 * 1024,
            codebase_cache_mb: 10 * 1024,
            fs_path: PathBuf::new(),
        }
    }
}

impl AgentConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.codebase_cache_mb == 0 {
            return Err("agent.codebase_cache_mb must be at least 1".into());
        }
        if self.lease_ttl_seconds < 2 {
            return Err("agent.lease_ttl_seconds must be at least 2".into());
        }
        if self.heartbeat_seconds == 0 || self.heartbeat_seconds * 2 > self.lease_ttl_seconds {
            return Err("agent.heartbeat_seconds must be at least 1 and at most half of lease_ttl_seconds".into());
        }
        if self.max_sandboxes == 0 {
            return Err("agent.max_sandboxes must be at least 1".into());
        }
        if self.job_pids_limit < 8 {
            return Err("agent.job_pids_limit must be at least 8".into());
        }
        if self.max_concurrent_work == 0 {
            return Err("agent.max_concurrent_work must be at least 1".into());
        }
        if self.cpus < 0.0 || !self.cpus.is_finite() {
            return Err("agent.cpus must be 0 (all) or positive".into());
        }
        if !(self.memory_overcommit.is_finite() && (1.0..=64.0).contains(&self.memory_overcommit)) {
            return Err("agent.memory_overcommit must be between 1.0 and 64.0".into());
        }
        if !(self.disk_overcommit.is_finite() && (1.0..=64.0).contains(&self.disk_overcommit)) {
            return Err("agent.disk_overcommit must be between 1.0 and 64.0".into());
        }
        if !(self.pids_overcommit.is_finite() && (1.0..=64.0).contains(&self.pids_overcommit)) {
            return Err("agent.pids_overcommit must be between 1.0 and 64.0".into());
        }
        if self.max_pids != 0 && self.max_pids < 64 {
            return Err("agent.max_pids must be 0 (derived from the host) or at least 64".into());
        }
        let min_disk = crate::runtime::disk::MIN_DISK_MB;
        if self.sandbox_disk_mb < min_disk || self.sandbox_disk_mb > self.max_sandbox_disk_mb {
            return Err(format!("agent.sandbox_disk_mb must be in {min_disk}..=max_sandbox_disk_mb"));
        }
        if self.sandbox_inodes < 1024 {
            return Err("agent.sandbox_inodes must be at least 1024".into());
        }
        if self.disk_mb != 0 && self.disk_mb < self.sandbox_disk_mb {
            return Err("agent.disk_mb must be 0 (derived) or at least sandbox_disk_mb".into());
        }
        if self.state_dir.as_os_str().is_empty() {
            return Err("agent.state_dir must be set".into());
        }
        if !self.docker_socket.as_os_str().is_empty() && !self.docker_socket.is_absolute() {
            return Err("agent.docker_socket must be an absolute path (or empty for the default)".into());
        }
        if self.docker == DockerMode::Off && !self.docker_socket.as_os_str().is_empty() {
            return Err("agent.docker_socket is set but agent.docker is \"off\"".into());
        }
        Ok(())
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_seconds)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_seconds)
    }

    /// How long after its last renewal the node watchdog kills the sandboxes: the lease TTL less
    /// up to a second (less half the gap to the heartbeat when that is smaller), so the kill
    /// lands before the lease can expire, yet never between two healthy heartbeats.
    pub fn watchdog(&self) -> Duration {
        let margin = Duration::from_secs(1).min((self.lease_ttl() - self.heartbeat()) / 2);
        self.lease_ttl() - margin
    }
    /// The per-sandbox disk settings.
    pub fn disk_settings(&self) -> crate::runtime::disk::DiskSettings {
        crate::runtime::disk::DiskSettings {
            default_mb: self.sandbox_disk_mb,
            default_inodes: self.sandbox_inodes,
            max_mb: self.max_sandbox_disk_mb,
        }
    }

    /// Disk (MiB) promised to quotas: `disk_mb` (or nine tenths of the free space of the file
    /// system holding `state_dir` now) times `disk_overcommit`.
    pub fn disk_offered_mb(&self) -> u64 {
        let disk = if self.disk_mb > 0 { self.disk_mb } else { free_mb(&self.state_dir) / 10 * 9 };
        (disk as f64 * self.disk_overcommit) as u64
    }
}

/// Free space (MiB) for unprivileged users on the file system holding `path`; 0 if unknown.
#[allow(unsafe_code)] // statvfs(2)
fn free_mb(path: &std::path::Path) -> u64 {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return 0 };
    // SAFETY: statvfs is plain old data; zeroed is a valid value for it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    st.f_bavail * st.f_frsize / (1 << 20)
}

/// The host's core count and total memory (MiB), for capacities left at 0.
pub fn host_capacity() -> (f64, u64) {
    let cpus = std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0);
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("MemTotal:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(1024 * 1024);
    (cpus, mem_kb / 1024)
}

/// Nine tenths of the process ids the host allows (the rest is left to the host itself).
pub fn host_pids() -> u64 {
    let read = |p: &str| std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<u64>().ok());
    let limit = match (read("/proc/sys/kernel/pid_max"), read("/proc/sys/kernel/threads-max")) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => 32_768,
    };
    limit / 10 * 9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_settings_are_validated() {
        let ok = AgentConfig { docker_socket: "/run/docker.sock".into(), ..AgentConfig::default() };
        assert!(ok.validate().is_ok());
        let relative = AgentConfig { docker_socket: "docker.sock".into(), ..AgentConfig::default() };
        assert!(relative.validate().unwrap_err().contains("docker_socket"));
        let off = AgentConfig { docker: DockerMode::Off, ..ok };
        assert!(off.validate().unwrap_err().contains("agent.docker"));
        let mode: DockerMode = serde_json::from_str("\"on\"").unwrap();
        let quota: DiskQuotaMode = serde_json::from_str("\"off\"").unwrap();
        assert_eq!(quota, DiskQuotaMode::Off);
        assert_eq!(mode, DockerMode::On);
        assert!(serde_json::from_str::<DockerMode>("\"maybe\"").is_err());
    }
}

#[cfg(test)]
mod disk_tests {
    use super::*;

    #[test]
    fn disk_settings_are_validated() {
        assert!(AgentConfig::default().validate().is_ok());
        let big = AgentConfig { sandbox_disk_mb: 32 * 1024, ..AgentConfig::default() };
        assert!(big.validate().unwrap_err().contains("agent.sandbox_disk_mb"));
        let tiny = AgentConfig { sandbox_disk_mb: 1, ..AgentConfig::default() };
        assert!(tiny.validate().unwrap_err().contains("agent.sandbox_disk_mb"));
        let node = AgentConfig { disk_mb: 10, ..AgentConfig::default() };
        assert!(node.validate().unwrap_err().contains("agent.disk_mb"));
        let inodes = AgentConfig { sandbox_inodes: 10, ..AgentConfig::default() };
        assert!(inodes.validate().unwrap_err().contains("agent.sandbox_inodes"));
        let exact = AgentConfig { disk_mb: 5000, disk_overcommit: 1.0, ..AgentConfig::default() };
        assert_eq!(exact.disk_offered_mb(), 5000);
        assert_eq!(AgentConfig { disk_mb: 5000, ..AgentConfig::default() }.disk_offered_mb(), 20_000, "4x by default");
        let bad = AgentConfig { disk_overcommit: 0.5, ..AgentConfig::default() };
        assert!(bad.validate().unwrap_err().contains("agent.disk_overcommit"));
    }
}
