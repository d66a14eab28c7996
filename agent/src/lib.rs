//! The Corral agent: one per node. Registers the node on a lease, runs sandboxes through a
//! [`runtime::Runtime`], and serves the coordinator over the bus.
//!
//! - [`runtime`]: the `Runtime` trait, the bubblewrap and Docker implementations;
//! - [`node`]: registration, heartbeat and self-fencing;
//! - [`work`]: the node's lifecycle work queue (create/destroy, job attempts);
//! - [`jobs`]: job attempts in one-shot sandboxes and the reports of their outcomes;
//! - [`rpc`]: interactive requests (exec, files, processes, sessions) and output streaming;
//! - [`supervisor`]: background processes and shell sessions, on top of any runtime;
//! - [`languages`]: the `run_code` languages each runtime can run, found at start-up;
//! - [`gc`]: reaps local sandboxes whose record ended; [`adopt`]: takes back sandboxes that
//!   survived an agent restart; [`watchdog`]: the node watchdog that kills the sandboxes of an
//!   agent that stopped renewing it; [`slots`]: the node's cap on running work (a semaphore);
//!   [`config`].

pub mod adopt;
pub mod codebases;
pub mod config;
pub mod gc;
pub mod jobs;
pub mod languages;
pub mod node;
pub mod rpc;
pub mod runtime;
pub mod slots;
pub mod supervisor;
pub mod watchdog;
pub mod work;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use corral_core::bus::Bus;
use corral_core::ids::{NodeId, SandboxId};
use corral_core::languages::LanguageOffer;
use corral_core::model::{Capacity, NodeInfo, RuntimeKind, SandboxSpec};
use corral_core::store::{LeaseId, StateStore};
use corral_core::task::OwnedTask;
use corral_core::time::now_ms;

pub use config::AgentConfig;
use runtime::{Runtime, RuntimeError};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("could not start serving: {0}")]
    Bus(#[from] corral_core::bus::BusError),
    #[error("state store: {0}")]
    Store(#[from] corral_core::store::StoreError),
    #[error("agent task {0} stopped unexpectedly")]
    TaskEnded(&'static str),
}

/// State shared by the agent's tasks.
pub struct Agent {
    pub node: NodeId,
    pub config: AgentConfig,
    /// One runtime per kind this node offers.
    pub runtimes: Vec<Arc<dyn Runtime>>,
    pub store: Arc<dyn StateStore>,
    pub bus: Arc<dyn Bus>,
    /// Background processes and sessions of the local sandboxes.
    pub supervisor: supervisor::Supervisor,
    /// Job attempts running (or recently finished) here.
    pub jobs: jobs::Jobs,
    /// Permits of the node's running work: one per sandbox, one per running job attempt.
    pub slots: slots::NodeSlots,
    /// Specs of the sandboxes this agent runs (for defaults such as the workdir, and for GC).
    sandboxes: Mutex<HashMap<SandboxId, SandboxSpec>>,
    /// What [`languages::detect`] found at start-up, plus what probing Docker images found.
    languages: Mutex<Vec<LanguageOffer>>,
    lease: Mutex<Option<LeaseId>>,
    /// When the node lease was last granted or renewed (None once fenced).
    renewed: Mutex<Option<std::time::Instant>>,
    /// The node watchdog, when enabled and the runtimes name their cgroups.
    pub watchdog: Option<watchdog::Watchdog>,
    /// Disk (MiB) offered to sandbox quotas, fixed at start-up.
    disk_offered_mb: u64,
}

impl Agent {
    fn specs(&self) -> MutexGuard<'_, HashMap<SandboxId, SandboxSpec>> {
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn spec(&self, id: &SandboxId) -> Option<SandboxSpec> {
        self.specs().get(id).cloned()
    }

    /// The runtime of a given kind, if this node offers it.
    pub fn runtime(&self, kind: RuntimeKind) -> Option<&Arc<dyn Runtime>> {
        self.runtimes.iter().find(|r| r.kind() == kind)
    }

    /// The runtime running sandbox `id`.
    pub fn runtime_of(&self, id: &SandboxId) -> Result<Arc<dyn Runtime>, RuntimeError> {
        let kind = self.spec(id).map(|s| s.runtime).ok_or_else(|| RuntimeError::SandboxNotFound(id.clone()))?;
        self.runtime(kind).cloned().ok_or_else(|| RuntimeError::SandboxNotFound(id.clone()))
    }

    /// Adds offers found after start-up (Docker image probes); the next heartbeat publishes them.
    pub fn add_languages(&self, offers: Vec<LanguageOffer>) {
        self.languages.lock().unwrap_or_else(|p| p.into_inner()).extend(offers);
    }

    fn set_lease(&self, lease: Option<LeaseId>) {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = lease;
    }

    fn lease(&self) -> Option<LeaseId> {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that the node lease was just granted or renewed (`None`: it is gone).
    fn set_renewed(&self, at: Option<std::time::Instant>) {
        *self.renewed.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    /// True while the lease was renewed recently enough that it cannot expire before the next
    /// heartbeat: the same bound after which the agent fences itself.
    pub fn lease_is_fresh(&self) -> bool {
        let renewed = *self.renewed.lock().unwrap_or_else(|p| p.into_inner());
        renewed.is_some_and(|t| t.elapsed() + self.config.heartbeat() < self.config.lease_ttl())
    }

    /// Destroys a sandbox and forgets it. A sandbox of unknown kind is destroyed in every runtime
    /// (destroy is idempotent).
    pub async fn destroy(&self, id: &SandboxId) {
        let targets = match self.runtime_of(id) {
            Ok(rt) => vec![rt],
            Err(_) => self.runtimes.clone(),
        };
        for rt in targets {
            if let Err(e) = rt.destroy(id).await {
                tracing::warn!(sandbox_id = %id, runtime = %rt.kind(), error = %e, "destroy failed");
            }
        }
        self.specs().remove(id);
        self.supervisor.forget(id);
        self.slots.release(id.as_str());
    }

    /// Kills every local sandbox: the node lost its lease, so the coordinator will (or did)
    /// declare them LOST and nothing may keep running under a stale claim.
    pub async fn fence(&self) {
        self.set_renewed(None);
        self.jobs.fence_all();
        for rt in &self.runtimes {
            let ids = rt.list().await;
            tracing::warn!(count = ids.len(), runtime = %rt.kind(), "fencing: destroying local sandboxes");
            for id in ids {
                if let Err(e) = rt.destroy(&id).await {
                    tracing::warn!(sandbox_id = %id, error = %e, "destroy failed while fencing");
                }
                self.specs().remove(&id);
                self.supervisor.forget(&id);
                self.slots.release(id.as_str());
            }
            // A destroy interrupted half-way (the work task aborted at shutdown) may have removed
            // a container but not yet its storage.
            rt.sweep().await;
        }
    }

    async fn node_info(&self) -> NodeInfo {
        let (host_cpus, host_mem) = config::host_capacity();
        let mut images = Vec::new();
        for rt in &self.runtimes {
            images.extend(rt.images().await);
        }
        images.sort();
        images.dedup();
        let c = &self.config;
        let quotas = self.runtimes.iter().any(|r| r.disk_quotas());
        NodeInfo {
            v: NodeInfo::VERSION,
            node_id: self.node.clone(),
            capacity: Capacity {
                cpus: if c.cpus > 0.0 { c.cpus } else { host_cpus },
                memory_mb: ((if c.memory_mb > 0 { c.memory_mb } else { host_mem }) as f64 * c.memory_overcommit) as u64,
                sandboxes: c.max_sandboxes,
                disk_mb: if quotas { self.disk_offered_mb } else { 0 },
                max_sandbox_disk_mb: if quotas { c.max_sandbox_disk_mb } else { 0 },
                pids: ((if c.max_pids > 0 { c.max_pids } else { config::host_pids() }) as f64 * c.pids_overcommit)
                    as u64,
            },
            runtimes: self
                .runtimes
                .iter()
                .map(|r| r.kind())
                .chain(c.noop_runtime.then_some(RuntimeKind::Noop))
                .collect(),
            images,
            languages: self.languages.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            labels: c.labels.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            registered_at_ms: now_ms(),
            lease: 0,
        }
    }
}

/// Runs the agent until `shutdown` completes (or one of its tasks fails), then deregisters and
/// destroys its sandboxes.
pub async fn run(
    config: AgentConfig,
    node: NodeId,
    runtimes: Vec<Arc<dyn Runtime>>,
    store: Arc<dyn StateStore>,
    bus: Arc<dyn Bus>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    config.validate().map_err(AgentError::Config)?;
    if runtimes.is_empty() {
        return Err(AgentError::Config("the agent needs at least one runtime".into()));
    }
    let kinds: Vec<RuntimeKind> = runtimes.iter().map(|r| r.kind()).collect();
    let watchdog = start_watchdog(&config, &runtimes)?;
    let (jobs, reports) = jobs::Jobs::new();
    let slots =
        slots::NodeSlots::new(&node, config.max_sandboxes).await.map_err(|e| AgentError::Config(e.to_string()))?;
    let agent = Arc::new(Agent {
        languages: Mutex::new(languages::detect(&kinds)),
        disk_offered_mb: config.disk_offered_mb(),
        node,
        config,
        runtimes,
        store,
        bus,
        supervisor: supervisor::Supervisor::default(),
        jobs,
        slots,
        sandboxes: Mutex::default(),
        lease: Mutex::default(),
        renewed: Mutex::default(),
        watchdog,
    });
    adopt::recover(&agent).await?;
    // Serve before registering, so the node is ready when the coordinator first sees it. Every
    // long-lived task is supervised: restarted with backoff when it fails or ends (a broken
    // subscription, a store outage), except the report sender, which owns the report queue and
    // cannot be rebuilt: its end stops the agent, which fences and exits (its supervisor, e.g.
    // the DaemonSet, starts a fresh one).
    let requests = agent.bus.serve(&rpc::subject(&agent.node)).await?;
    let mut first = Some(requests);
    let rpc_task = supervise(&agent, "agent.rpc", move |agent| {
        let ready = first.take();
        async move {
            let requests = match ready {
                Some(r) => r,
                None => agent.bus.serve(&rpc::subject(&agent.node)).await.map_err(|e| e.to_string())?,
            };
            rpc::serve(agent, requests).await
        }
    });
    let work_task = supervise(&agent, "agent.work", work::consume);
    let heartbeat_task = supervise(&agent, "agent.heartbeat", node::heartbeat);
    let gc_task = supervise(&agent, "agent.gc", gc::run);
    let probe_task = supervise(&agent, "agent.languages", languages::probe_docker);
    let report_task = OwnedTask::spawn("agent.job_reports", jobs::report(agent.clone(), reports));
    let _restartable = [rpc_task, work_task, heartbeat_task, gc_task, probe_task];
    let tasks = [report_task];

    tokio::pin!(shutdown);
    let failed = loop {
        tokio::select! {
            _ = &mut shutdown => break None,
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {
                if let Some(t) = tasks.iter().find(|t| t.is_finished()) {
                    break Some(t.name());
                }
            }
        }
    };
    drop(tasks);
    if let Some(lease) = agent.lease()
        && let Err(e) = agent.store.revoke_lease(lease).await
    {
        tracing::warn!(error = %e, "could not revoke the node lease; it will expire");
    }
    agent.fence().await;
    if let Some(w) = &agent.watchdog {
        w.stop();
    }
    match failed {
        Some(name) => Err(AgentError::TaskEnded(name)),
        None => Ok(()),
    }
}

/// Starts (or joins) the node watchdog over the runtimes' sandbox cgroups.
fn start_watchdog(
    config: &AgentConfig,
    runtimes: &[Arc<dyn Runtime>],
) -> Result<Option<watchdog::Watchdog>, AgentError> {
    let dirs: Vec<std::path::PathBuf> = runtimes.iter().flat_map(|r| r.process_cgroups()).collect();
    if !config.watchdog {
        return Ok(None);
    }
    if dirs.is_empty() {
        tracing::warn!("no sandbox cgroups: the node watchdog cannot guard this node's sandboxes");
        return Ok(None);
    }
    let init = if config.init_path.as_os_str().is_empty() {
        runtime::bwrap::corral_init_path().map_err(|e| AgentError::Config(e.to_string()))?
    } else {
        config.init_path.clone()
    };
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|e| AgentError::Config(format!("state dir {}: {e}", config.state_dir.display())))?;
    let dog = watchdog::Watchdog::start(&config.state_dir, &init, dirs, config.watchdog())
        .map_err(|e| AgentError::Config(format!("could not start the node watchdog ({}): {e}", init.display())))?;
    Ok(Some(dog))
}

/// Runs `make(agent)` as the supervised task `name` (see [`corral_core::task::supervise`]).
fn supervise<M, F, E>(agent: &Arc<Agent>, name: &'static str, mut make: M) -> OwnedTask
where
    M: FnMut(Arc<Agent>) -> F + Send + 'static,
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let agent = agent.clone();
    corral_core::task::supervise(name, move || make(agent.clone()))
}
