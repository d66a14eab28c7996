//! The reply to an agent's report costs one store transaction: the commit of the results and the
//! claim of the next jobs go together. A coordinator and an agent run in this process on a store
//! that counts transactions (the embedded store, and a real etcd), with the agent's `noop`
//! runtime, so every transaction is the orchestration's own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use async_trait::async_trait;
use bytes::Bytes;
use corral_core::bus::mem::MemBus;
use corral_core::bus::{Bus, BusResult, Delivery, Request};
use corral_core::ids::NodeId;
use corral_core::store::etcd::EtcdStore;
use corral_core::store::mem::MemStore;
use corral_core::store::{KeyValue, LeaseId, RangePage, StateStore, StoreResult, Txn, TxnOutcome, WatchEvent};
use corral_core::subjects::JOB_RESULTS_SUBJECT;
use corral_proto::v1 as pb;
use futures::stream::BoxStream;

/// A store that counts transactions that wrote something (each taking `delay` longer).
struct Counting {
    inner: Arc<dyn StateStore>,
    writes: AtomicU64,
    delay: Duration,
}

#[async_trait]
impl StateStore for Counting {
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        self.inner.get(key).await
    }
    async fn range(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> StoreResult<RangePage> {
        self.inner.range(prefix, start_after, limit).await
    }
    async fn txn(&self, txn: Txn) -> StoreResult<TxnOutcome> {
        tokio::time::sleep(self.delay).await;
        let out = self.inner.txn(txn).await?;
        if out.succeeded {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(out)
    }
    async fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> StoreResult<()> {
        self.inner.revoke_lease(lease).await
    }
    async fn watch(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> StoreResult<BoxStream<'static, StoreResult<WatchEvent>>> {
        self.inner.watch(prefix, from_revision).await
    }
}

/// A bus that counts the requests sent to the job results subject.
struct CountingBus {
    inner: MemBus,
    reports: AtomicU64,
}

#[async_trait]
impl Bus for CountingBus {
    async fn enqueue(&self, node: &NodeId, msg_id: &str, payload: Bytes) -> BusResult<()> {
        self.inner.enqueue(node, msg_id, payload).await
    }
    async fn consume(&self, node: &NodeId, ack_wait: Duration) -> BusResult<BoxStream<'static, Delivery>> {
        self.inner.consume(node, ack_wait).await
    }
    async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> BusResult<Bytes> {
        if subject == JOB_RESULTS_SUBJECT {
            self.reports.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.request(subject, payload, timeout).await
    }
    async fn serve(&self, subject: &str) -> BusResult<BoxStream<'static, Request>> {
        self.inner.serve(subject).await
    }
    async fn publish(&self, subject: &str, payload: Bytes) -> BusResult<()> {
        self.inner.publish(subject, payload).await
    }
    async fn subscribe(&self, subject: &str) -> BusResult<BoxStream<'static, Bytes>> {
        self.inner.subscribe(subject).await
    }
}

/// Items in the batch, run one at a time.
const ITEMS: u64 = 40;

/// What one batch run counted: store transactions that wrote, and report requests.
struct Counts {
    writes: u64,
    report_requests: u64,
}

/// Runs a batch of `ITEMS` noop jobs at `max_concurrency` 1 and returns how many transactions
/// wrote while it ran.
async fn writes_for_one_batch(inner: Arc<dyn StateStore>) -> anyhow::Result<u64> {
    let spec = pb::JobSpec { runtime: pb::Runtime::Noop as i32, argv: vec!["noop".into()], ..Default::default() };
    let items = vec![spec; ITEMS as usize];
    Ok(run_batch(inner, Duration::ZERO, items, 1).await?.writes)
}

/// Runs `items` as one batch at `max_concurrency` on a coordinator and an agent in this process,
/// over `inner` with every write `delay` slower; what was counted while it ran.
async fn run_batch(
    inner: Arc<dyn StateStore>,
    delay: Duration,
    items: Vec<pb::JobSpec>,
    max_concurrency: u32,
) -> anyhow::Result<Counts> {
    let store = Arc::new(Counting { inner, writes: AtomicU64::new(0), delay });
    let counting_bus = Arc::new(CountingBus { inner: MemBus::new(), reports: AtomicU64::new(0) });
    let bus: Arc<dyn Bus> = counting_bus.clone();
    let dir = tempfile::tempdir()?;
    let agent_config = corral_agent::AgentConfig {
        state_dir: dir.path().join("state"),
        noop_runtime: true,
        warm_pool: 0,
        ..Default::default()
    };
    let node = NodeId::parse("commits-1").context("node id")?;
    let bwrap = corral_agent::runtime::bwrap::BwrapConfig::with_state_dir(&agent_config.state_dir)?;
    let runtimes: Vec<Arc<dyn corral_agent::runtime::Runtime>> =
        vec![Arc::new(corral_agent::runtime::bwrap::BwrapRuntime::new(bwrap)?)];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = listener.local_addr()?.to_string();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let shared: Arc<dyn StateStore> = store.clone();
    let agent = corral_agent::run(agent_config, node, runtimes, shared.clone(), bus.clone(), stopped(stop_rx.clone()));
    let coordinator = corral_coordinator::run(
        corral_coordinator::CoordinatorConfig::default(),
        shared,
        bus,
        Arc::new(corral_blob::ObjectBlobStore::memory()),
        listener,
        stopped(stop_rx),
    );
    let body = async {
        let client = corral_e2e::ready_client(&endpoint).await?;
        // Ready means a sandbox was created on the node: it is registered.
        let before = (store.writes.load(Ordering::Relaxed), counting_bus.reports.load(Ordering::Relaxed));
        let total = items.len() as u32;
        let req = pb::SubmitBatchRequest { items, max_concurrency, ..Default::default() };
        let id = client.submit_batch(req).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let b = client.get_batch(&id).await?;
            if b.state == pb::BatchState::Completed as i32 {
                let counts = b.counts.unwrap_or_default();
                ensure!(counts.completed == total, "batch ended with {counts:?}");
                break;
            }
            ensure!(tokio::time::Instant::now() < deadline, "batch {id} did not finish: {b:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Counts {
            writes: store.writes.load(Ordering::Relaxed) - before.0,
            report_requests: counting_bus.reports.load(Ordering::Relaxed) - before.1,
        })
    };
    // The body, then the servers' shutdown, all on this task.
    let body = async {
        let result = body.await;
        let _ = stop_tx.send(true);
        result
    };
    let (result, agent, coordinator) = tokio::join!(body, agent, coordinator);
    agent.context("agent")?;
    coordinator.context("coordinator")?;
    result
}

/// Per item, one claim and one commit done separately would be 2 × ITEMS transactions; folded,
/// each report's reply is one (the first claim and the batch's own records come on top).
fn check(writes: u64) -> anyhow::Result<()> {
    eprintln!("{writes} store transactions for {ITEMS} items");
    ensure!(writes >= ITEMS, "{writes} transactions cannot have committed {ITEMS} results");
    ensure!(
        writes <= ITEMS + 12,
        "{writes} transactions for {ITEMS} items run one at a time: commits and claims are not folded together"
    );
    Ok(())
}

#[tokio::test]
async fn a_report_reply_is_one_transaction_on_the_embedded_store() -> anyhow::Result<()> {
    check(writes_for_one_batch(Arc::new(MemStore::new())).await?)
}

#[tokio::test]
async fn a_report_reply_is_one_transaction_on_etcd() -> anyhow::Result<()> {
    let etcd = corral_testkit::etcd::EtcdServer::start()?;
    let store = EtcdStore::connect(&[etcd.endpoint()]).await?;
    check(writes_for_one_batch(Arc::new(store)).await?)
}

/// Reports that arrive while the leader commits others wait for it and are then committed
/// together: with every store write 30 ms slow and jobs ending at staggered times, fewer
/// transactions commit the batch than the agent sent report requests (one commit per request
/// waiting its turn would be at least one transaction per request).
#[tokio::test]
async fn reports_waiting_for_a_commit_are_committed_together() -> anyhow::Result<()> {
    let items: Vec<pb::JobSpec> = (0..24)
        .map(|i| pb::JobSpec { argv: vec!["sleep".into(), format!("0.0{}", i % 7)], ..Default::default() })
        .collect();
    let counts = run_batch(Arc::new(MemStore::new()), Duration::from_millis(30), items, 8).await?;
    eprintln!("{} store transactions for {} report requests", counts.writes, counts.report_requests);
    ensure!(counts.report_requests >= 4, "only {} report requests: jobs did not end apart", counts.report_requests);
    ensure!(
        counts.writes < counts.report_requests,
        "{} transactions for {} report requests: waiting reports are not committed together",
        counts.writes,
        counts.report_requests
    );
    Ok(())
}
