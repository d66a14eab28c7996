//! Coordinator memory with many sandbox records: etcd is seeded with RUNNING records on a node
//! kept alive on a lease, then a coordinator process starts, loads them and serves them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use corral_client::Client;
use corral_client::v1 as pb;
use corral_core::ids::{NodeId, SandboxId, TenantId};
use corral_core::keys::{NodeKey, SandboxKey};
use corral_core::model::{Capacity, NodeInfo, RuntimeKind, SandboxRecord, SandboxSpec};
use corral_core::state::SandboxState;
use corral_core::store::etcd::EtcdStore;
use corral_core::store::{self, StateStore, StoreError, Txn};
use corral_core::task::OwnedTask;
use corral_core::time::now_ms;
use corral_testkit::corral::{Proc, corral_binary};
use corral_testkit::etcd::EtcdServer;
use corral_testkit::nats::NatsServer;
use corral_testkit::{free_port, wait_for_port};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

const NODE: &str = "bench-node";
/// Puts per etcd transaction (etcd's default limit is 128 operations).
const BATCH: usize = 100;
const IN_FLIGHT: usize = 8;
const LEASE_TTL: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct CoordinatorMemory {
    pub records: usize,
    pub seed_secs: f64,
    /// Coordinator RSS with no records, for comparison.
    pub empty_rss_kib: u64,
    /// After loading the records, before any API call.
    pub loaded_rss_kib: u64,
    /// After listing every record through the API.
    pub listed_rss_kib: u64,
    pub hwm_kib: u64,
    pub list_secs: f64,
}

impl CoordinatorMemory {
    pub fn rss_mib(&self) -> f64 {
        self.listed_rss_kib.max(self.loaded_rss_kib) as f64 / 1024.0
    }

    pub fn to_json(&self) -> Value {
        let mib = |k: u64| k as f64 / 1024.0;
        json!({
            "records": self.records,
            "seed_seconds": self.seed_secs,
            "empty_rss_mib": mib(self.empty_rss_kib),
            "loaded_rss_mib": mib(self.loaded_rss_kib),
            "listed_rss_mib": mib(self.listed_rss_kib),
            "hwm_mib": mib(self.hwm_kib),
            "rss_mib": self.rss_mib(),
            "list_all_seconds": self.list_secs,
        })
    }
}

fn record(tenant: &TenantId, node: &NodeId, now: i64) -> SandboxRecord {
    let spec = SandboxSpec {
        id: SandboxId::random(),
        tenant: tenant.clone(),
        runtime: RuntimeKind::Bwrap,
        name: None,
        cpus: 1.0,
        memory_mb: 512,
        pids_limit: 1024,
        timeout_seconds: 300,
        internet_access: false,
        env: BTreeMap::new(),
        labels: BTreeMap::from([("bench".to_owned(), "records".to_owned())]),
        workdir: "/workspace".to_owned(),
        image: String::new(),
        disk_mb: 0,
        codebase: None,
    };
    SandboxRecord {
        v: SandboxRecord::VERSION,
        spec,
        state: SandboxState::Running,
        node: Some(node.clone()),
        created_at_ms: now,
        started_at_ms: now,
        ended_at_ms: 0,
        expires_at_ms: 0,
        termination_reason: String::new(),
        // No deadline key: the reconciler does not expire them during the measurement.
        deadline_lease: 0,
    }
}

/// Registers `bench-node` on a lease and keeps the lease alive until the task is dropped.
async fn register_node(store: Arc<EtcdStore>) -> anyhow::Result<OwnedTask> {
    let node = NodeId::parse(NODE)?;
    let info = NodeInfo {
        v: NodeInfo::VERSION,
        node_id: node.clone(),
        capacity: Capacity {
            cpus: 1_000_000.0,
            memory_mb: 1 << 40,
            sandboxes: 1_000_000,
            disk_mb: 0,
            max_sandbox_disk_mb: 0,
            pids: u64::MAX,
        },
        runtimes: vec![RuntimeKind::Bwrap],
        images: Vec::new(),
        languages: Vec::new(),
        labels: BTreeMap::new(),
        agent_version: "bench".to_owned(),
        registered_at_ms: now_ms(),
        lease: 0,
    };
    let lease = store.grant_lease(LEASE_TTL).await?;
    store.txn(Txn::new().put_with_lease(NodeKey(&node), store::encode(&info), lease)).await?;
    Ok(OwnedTask::spawn("bench.node_keepalive", async move {
        loop {
            tokio::time::sleep(LEASE_TTL / 5).await;
            match store.keep_alive(lease).await {
                Ok(()) => {}
                Err(e @ StoreError::LeaseNotFound(_)) => return Err(format!("{NODE} lost its lease: {e}")),
                Err(e) => eprintln!("[bench] keep-alive of the {NODE} lease failed: {e}"),
            }
        }
    }))
}

async fn seed(store: &EtcdStore, n: usize) -> anyhow::Result<()> {
    let (tenant, node, now) = (TenantId::default_tenant(), NodeId::parse(NODE)?, now_ms());
    let batches = (0..n).step_by(BATCH).map(|start| {
        let mut txn = Txn::new();
        for _ in start..(start + BATCH).min(n) {
            let r = record(&tenant, &node, now);
            let key = SandboxKey { tenant: &tenant, id: &r.spec.id }.to_string();
            txn = txn.when(&key, 0).put(key, store::encode(&r));
        }
        txn
    });
    futures::stream::iter(batches)
        .map(|txn| async move {
            let out = store.txn(txn).await?;
            ensure!(out.succeeded, "a seeding transaction failed its compares");
            anyhow::Ok(())
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await
}

fn start_coordinator(
    etcd: &EtcdServer,
    nats: &NatsServer,
    dir: &std::path::Path,
    tag: &str,
) -> anyhow::Result<(Proc, String)> {
    let port = free_port();
    let mut cmd = std::process::Command::new(corral_binary()?);
    cmd.args(["coordinator", "--listen", &format!("127.0.0.1:{port}"), "--etcd", &etcd.endpoint()]);
    cmd.args(["--nats", &nats.url()]);
    let mut p = Proc::spawn("coordinator", cmd, dir.join(format!("coordinator-{tag}.log")))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while wait_for_port(port, Duration::from_millis(100)).is_err() {
        if !p.is_running() {
            bail!("the coordinator exited during start-up; log:\n{}", p.log_tail(4000));
        }
        if Instant::now() > deadline {
            bail!("the coordinator did not listen on {port}; log:\n{}", p.log_tail(4000));
        }
    }
    // Another process may have taken the port first: then ours fails to bind and exits.
    std::thread::sleep(Duration::from_millis(200));
    if !p.is_running() {
        bail!("the coordinator exited after start-up; log:\n{}", p.log_tail(4000));
    }
    Ok((p, format!("http://127.0.0.1:{port}")))
}

/// VmRSS once it stopped moving (two samples 500 ms apart within 1 %), at most 10 s.
async fn settled_rss(p: &Proc) -> anyhow::Result<u64> {
    let mut last = p.memory_kib().context("reading coordinator memory")?.0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = p.memory_kib().context("reading coordinator memory")?.0;
        if now.abs_diff(last) * 100 <= last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

async fn count(c: &Client, states: Vec<i32>) -> anyhow::Result<usize> {
    let mut req = pb::ListSandboxesRequest { states, page_size: 1000, ..Default::default() };
    let mut n = 0;
    loop {
        let page = c.list(req.clone()).await?;
        n += page.sandboxes.len();
        if page.next_page_token.is_empty() {
            return Ok(n);
        }
        req.page_token = page.next_page_token;
    }
}

pub async fn measure(n: usize) -> anyhow::Result<CoordinatorMemory> {
    let dir = tempfile::Builder::new().prefix("corral-bench-records-").tempdir()?;
    eprintln!("[bench] records: starting etcd and nats-server");
    let etcd = EtcdServer::start()?;
    let nats = NatsServer::start()?;
    let store = Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await?);
    let keepalive = register_node(store.clone()).await?;

    eprintln!("[bench] records: coordinator RSS with no records");
    let (mut empty, endpoint) = start_coordinator(&etcd, &nats, dir.path(), "empty")?;
    ensure!(count(&Client::connect(&endpoint).await?, vec![]).await? == 0, "etcd was not empty");
    let empty_rss_kib = settled_rss(&empty).await?;
    empty.stop(Duration::from_secs(5));

    eprintln!("[bench] records: seeding {n} RUNNING sandbox records for {NODE}");
    let t = Instant::now();
    seed(&store, n).await?;
    let seed_secs = t.elapsed().as_secs_f64();

    eprintln!("[bench] records: coordinator RSS with {n} records");
    let (coordinator, endpoint) = start_coordinator(&etcd, &nats, dir.path(), "loaded")?;
    let client = Client::connect(&endpoint).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded_rss_kib = settled_rss(&coordinator).await?;
    let t = Instant::now();
    let listed = count(&client, vec![]).await?;
    let list_secs = t.elapsed().as_secs_f64();
    ensure!(listed == n, "the coordinator listed {listed} sandboxes, {n} were seeded");
    let listed_rss_kib = settled_rss(&coordinator).await?;
    let hwm_kib = coordinator.memory_kib().context("reading coordinator memory")?.1;
    let running = count(&client, vec![pb::SandboxState::Running as i32]).await?;
    drop(keepalive);
    ensure!(running == n, "only {running} of {n} records are still RUNNING (the reconciler ended some)");
    Ok(CoordinatorMemory { records: n, seed_secs, empty_rss_kib, loaded_rss_kib, listed_rss_kib, hwm_kib, list_secs })
}
