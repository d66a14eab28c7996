//! Starting the servers: `corral dev` (everything in one process on the embedded backends),
//! `corral coordinator` and `corral agent` (on etcd and NATS).

use std::sync::Arc;

use anyhow::Context;
use corral_agent::codebases::{Cache, Layers};
use corral_agent::config::{DiskQuotaMode, DockerMode};
use corral_agent::runtime::Runtime;
use corral_agent::runtime::bwrap::corral_fs_path;
use corral_agent::runtime::bwrap::{BwrapConfig, BwrapRuntime};
use corral_agent::runtime::disk::Disks;
use corral_agent::runtime::docker::{DockerConfig, DockerRuntime};
use corral_blob::{BlobStore, Chunks};
use corral_core::bus::Bus;
use corral_core::bus::mem::MemBus;
use corral_core::bus::nats::NatsBus;
use corral_core::ids::NodeId;
use corral_core::store::StateStore;
use corral_core::store::etcd::EtcdStore;
use corral_core::store::mem::MemStore;
use tokio::net::TcpListener;

use crate::config::{BusBackend, Config, StoreBackend, default_node_id};

async fn store(config: &Config) -> anyhow::Result<Arc<dyn StateStore>> {
    Ok(match config.store.backend {
        StoreBackend::Memory => Arc::new(MemStore::new()),
        StoreBackend::Etcd => Arc::new(EtcdStore::connect(&config.store.endpoints).await?),
    })
}

async fn bus(config: &Config) -> anyhow::Result<Arc<dyn Bus>> {
    Ok(match config.bus.backend {
        BusBackend::Memory => Arc::new(MemBus::new()),
        BusBackend::Nats => Arc::new(NatsBus::connect(&config.bus.url).await?),
    })
}

/// The object store of codebases (`blob.*`).
fn blobs(config: &Config) -> anyhow::Result<Arc<dyn BlobStore>> {
    let c = config.blob.store_config(&config.agent.state_dir)?;
    corral_blob::open(&c).context("opening the object store (blob.*)")
}

/// Codebases on this node: its cache over the object store and the `corral-fs` binary. `None`
/// (with a warning) when the node cannot serve them: no `/dev/fuse` or no `corral-fs`.
fn layers(config: &Config) -> anyhow::Result<Option<Arc<Layers>>> {
    let a = &config.agent;
    let exe = if a.fs_path.as_os_str().is_empty() { corral_fs_path().ok() } else { Some(a.fs_path.clone()) };
    let Some(exe) = exe.filter(|_| std::path::Path::new("/dev/fuse").exists()) else {
        tracing::warn!("no /dev/fuse or no corral-fs binary: this node offers no codebases");
        return Ok(None);
    };
    let chunks = Chunks::new(blobs(config)?, "content");
    let cache = Cache::open(a.state_dir.join("codebases"), chunks, a.codebase_cache_mb << 20)
        .with_context(|| format!("opening the codebase cache in {}", a.state_dir.join("codebases").display()))?;
    Ok(Some(Arc::new(Layers::new(cache, exe))))
}

/// The node's runtimes: bubblewrap, plus Docker unless `agent.docker` is off (with `auto`, only
/// when the engine answers).
async fn runtimes(config: &Config, node: &NodeId) -> anyhow::Result<Vec<Arc<dyn Runtime>>> {
    let disks = disks(config)?;
    std::fs::create_dir_all(&config.agent.state_dir)
        .with_context(|| format!("creating agent.state_dir {}", config.agent.state_dir.display()))?;
    let layers = layers(config)?;
    let mut runtimes = vec![bwrap(config, &disks, layers.clone())?];
    if let Some(docker) = docker(config, node, &disks, layers).await? {
        runtimes.push(docker);
    }
    Ok(runtimes)
}

/// Sandboxes' storage: kernel-enforced quotas unless `agent.disk_quota` is off (with `auto`,
/// only when loop devices and `mkfs.ext4` are usable).
fn disks(config: &Config) -> anyhow::Result<Disks> {
    let a = &config.agent;
    let settings = a.disk_settings();
    if a.disk_quota == DiskQuotaMode::Off {
        return Ok(Disks::off(settings));
    }
    std::fs::create_dir_all(&a.state_dir)
        .with_context(|| format!("creating agent.state_dir {}", a.state_dir.display()))?;
    match Disks::on(settings, &a.state_dir) {
        Ok(disks) => Ok(disks),
        Err(e) if a.disk_quota == DiskQuotaMode::Auto => {
            tracing::warn!(error = %e, "agent.disk_quota = \"auto\": sandboxes' disks have no quota on this node");
            Ok(Disks::off(settings))
        }
        Err(e) => Err(anyhow::Error::new(e).context("agent.disk_quota = \"on\"")),
    }
}

async fn docker(
    config: &Config,
    node: &NodeId,
    disks: &Disks,
    layers: Option<Arc<Layers>>,
) -> anyhow::Result<Option<Arc<dyn Runtime>>> {
    let a = &config.agent;
    if a.docker == DockerMode::Off {
        return Ok(None);
    }
    let mut dc = DockerConfig::new(node.clone(), a.state_dir.clone()).context("configuring the Docker runtime")?;
    if !a.init_path.as_os_str().is_empty() {
        dc.init_path = a.init_path.clone();
    }
    if !a.docker_socket.as_os_str().is_empty() {
        dc.socket = Some(a.docker_socket.clone());
    }
    dc.disk = disks.clone();
    dc.layers = layers;
    match DockerRuntime::connect(dc).await {
        Ok(rt) => Ok(Some(Arc::new(rt))),
        Err(e) if a.docker == DockerMode::Auto => {
            tracing::warn!(error = %e, "agent.docker = \"auto\": no Docker runtime on this node");
            Ok(None)
        }
        Err(e) => Err(anyhow::Error::new(e).context("agent.docker = \"on\": starting the Docker runtime")),
    }
}

fn bwrap(config: &Config, disks: &Disks, layers: Option<Arc<Layers>>) -> anyhow::Result<Arc<dyn Runtime>> {
    let a = &config.agent;
    let mut bw = BwrapConfig::with_state_dir(a.state_dir.clone()).context("configuring the bubblewrap runtime")?;
    if !a.bwrap_path.as_os_str().is_empty() {
        bw.bwrap_path = a.bwrap_path.clone();
    }
    if !a.init_path.as_os_str().is_empty() {
        bw.init_path = a.init_path.clone();
    }
    bw.warm_pool = a.warm_pool;
    bw.disk = disks.clone();
    bw.layers = layers;
    let rt = BwrapRuntime::new(bw).context("starting the bubblewrap runtime")?;
    Ok(Arc::new(rt))
}

fn node_id(config: &Config) -> anyhow::Result<NodeId> {
    let raw = if config.agent.node_id.is_empty() { default_node_id() } else { config.agent.node_id.clone() };
    NodeId::parse(&raw).map_err(|e| anyhow::anyhow!("agent.node_id: {e}"))
}

async fn listener(config: &Config) -> anyhow::Result<TcpListener> {
    let addr = config.coordinator.listen;
    TcpListener::bind(addr).await.with_context(|| format!("coordinator.listen: cannot listen on {addr}"))
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

/// Coordinator and one agent in one process, on the embedded store and bus.
pub async fn dev(config: Config) -> anyhow::Result<()> {
    let store: Arc<dyn StateStore> = Arc::new(MemStore::new());
    let bus: Arc<dyn Bus> = Arc::new(MemBus::new());
    let node = node_id(&config)?;
    let runtimes = runtimes(&config, &node).await?;
    let listener = listener(&config).await?;
    let addr = listener.local_addr()?;
    eprintln!("corral dev: serving on http://{addr} (node {node}, sandboxes in {})", config.agent.state_dir.display());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let agent =
        corral_agent::run(config.agent.clone(), node, runtimes, store.clone(), bus.clone(), stopped(stop_rx.clone()));
    let blobs = blobs(&config)?;
    let coordinator =
        corral_coordinator::run(config.coordinator.clone(), store, bus, blobs, listener, stopped(stop_rx));
    tokio::pin!(agent, coordinator);
    // Whichever ends first (a signal, or a failure of either half) stops the other half too.
    let (a, c) = tokio::select! {
        a = &mut agent => { let _ = stop_tx.send(true); (a, coordinator.await) }
        c = &mut coordinator => { let _ = stop_tx.send(true); (agent.await, c) }
        _ = shutdown_signal() => { let _ = stop_tx.send(true); tokio::join!(agent, coordinator) }
    };
    c.context("coordinator")?;
    a.context("agent")?;
    Ok(())
}

pub async fn coordinator(config: Config) -> anyhow::Result<()> {
    let store = store(&config).await?;
    let bus = bus(&config).await?;
    let listener = listener(&config).await?;
    eprintln!("corral coordinator: serving on http://{}", listener.local_addr()?);
    let blobs = blobs(&config)?;
    corral_coordinator::run(config.coordinator.clone(), store, bus, blobs, listener, shutdown_signal()).await?;
    Ok(())
}

pub async fn agent(config: Config) -> anyhow::Result<()> {
    let node = node_id(&config)?;
    let runtimes = runtimes(&config, &node).await?;
    let store = store(&config).await?;
    let bus = bus(&config).await?;
    tracing::info!(node = %node, "agent starting");
    corral_agent::run(config.agent.clone(), node, runtimes, store, bus, shutdown_signal()).await?;
    Ok(())
}
