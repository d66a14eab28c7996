//! The caps of running jobs are semaphores in the store: each running attempt holds a permit of
//! its tenant's and its batch's semaphore, on its node's lease, written with its claim and given
//! back with its result. A coordinator and an agent run in this process on the embedded store
//! and on a real etcd; the test reads the permits as the store has them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use corral_core::bus::Bus;
use corral_core::bus::mem::MemBus;
use corral_core::ids::{NodeId, TenantId};
use corral_core::jobs::BatchId;
use corral_core::keys::{NodeKey, SemLinePrefix, SemScope};
use corral_core::store::etcd::EtcdStore;
use corral_core::store::mem::MemStore;
use corral_core::store::{KeyValue, StateStore};
use corral_proto::v1 as pb;
use corral_testkit::etcd::EtcdServer;
use tokio::time::Instant;

async fn line(store: &dyn StateStore, scope: &SemScope) -> anyhow::Result<Vec<KeyValue>> {
    Ok(store.range(&SemLinePrefix(scope).to_string(), None, 0).await?.kvs)
}

/// A batch of `sleep` items at max_concurrency 2: never more than 2 batch permits, each on the
/// node's lease; none left once it finished. Then a batch whose node dies (its lease revoked):
/// its attempts' permits go with the lease, before any coordinator wrote anything.
async fn permits_follow_the_attempts(store: Arc<dyn StateStore>) -> anyhow::Result<()> {
    let bus: Arc<dyn Bus> = Arc::new(MemBus::new());
    let dir = tempfile::tempdir()?;
    let config = corral_agent::AgentConfig { state_dir: dir.path().join("state"), warm_pool: 0, ..Default::default() };
    let node = NodeId::parse("permits-1")?;
    let bwrap = corral_agent::runtime::bwrap::BwrapConfig::with_state_dir(&config.state_dir)?;
    let runtimes: Vec<Arc<dyn corral_agent::runtime::Runtime>> =
        vec![Arc::new(corral_agent::runtime::bwrap::BwrapRuntime::new(bwrap)?)];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = listener.local_addr()?.to_string();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let agent = corral_agent::run(config, node.clone(), runtimes, store.clone(), bus.clone(), stopped(stop_rx.clone()));
    let coordinator = corral_coordinator::run(
        corral_coordinator::CoordinatorConfig::default(),
        store.clone(),
        bus,
        Arc::new(corral_blob::ObjectBlobStore::memory()),
        listener,
        stopped(stop_rx),
    );
    let body = async {
        let client = corral_e2e::ready_client(&endpoint).await?;
        let tenant = SemScope::Tenant(TenantId::default_tenant());
        let item = |cmd: &str| pb::JobSpec {
            runtime: pb::Runtime::Bwrap as i32,
            shell: cmd.into(),
            timeout_seconds: 90.0,
            ..Default::default()
        };
        let req =
            pb::SubmitBatchRequest { items: vec![item("sleep 0.4"); 6], max_concurrency: 2, ..Default::default() };
        let id = client.submit_batch(req).await?;
        let scope = SemScope::Batch(BatchId::parse(&id)?);
        let (mut most, deadline) = (0, Instant::now() + Duration::from_secs(120));
        loop {
            let node_lease = store.get(&NodeKey(&node).to_string()).await?.context("node registered")?.lease;
            let held = line(store.as_ref(), &scope).await?;
            ensure!(held.len() <= 2, "{} batch permits under a cap of 2: {held:?}", held.len());
            ensure!(held.iter().all(|kv| kv.lease == node_lease), "permits on the node's lease {node_lease}: {held:?}");
            most = most.max(held.len());
            let b = client.get_batch(&id).await?;
            if b.state == pb::BatchState::Completed as i32 {
                ensure!(b.counts.unwrap_or_default().completed == 6, "{b:?}");
                break;
            }
            ensure!(Instant::now() < deadline, "batch {id} did not finish: {b:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ensure!(most >= 1, "attempts ran with permits");
        ensure!(line(store.as_ref(), &scope).await?.is_empty(), "no batch permit left");
        ensure!(line(store.as_ref(), &tenant).await?.is_empty(), "no tenant permit left");

        // The node dies: its lease ends, and its attempts' permits with it.
        let req = pb::SubmitBatchRequest { items: vec![item("sleep 60"); 3], max_concurrency: 2, ..Default::default() };
        let id = client.submit_batch(req).await?;
        let scope = SemScope::Batch(BatchId::parse(&id)?);
        let deadline = Instant::now() + Duration::from_secs(60);
        while line(store.as_ref(), &scope).await?.len() < 2 {
            ensure!(Instant::now() < deadline, "the attempts never held their permits");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let lease = line(store.as_ref(), &scope).await?[0].lease;
        store.revoke_lease(lease).await?;
        ensure!(line(store.as_ref(), &scope).await?.is_empty(), "the dead node's permits went with its lease");
        client.cancel_batch(&id).await?;
        Ok(())
    };
    let body = async {
        let result: anyhow::Result<()> = body.await;
        let _ = stop_tx.send(true);
        result
    };
    let (result, agent, coordinator) = tokio::join!(body, agent, coordinator);
    agent.context("agent")?;
    coordinator.context("coordinator")?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_follow_the_attempts_on_the_embedded_store() -> anyhow::Result<()> {
    permits_follow_the_attempts(Arc::new(MemStore::new())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_follow_the_attempts_on_etcd() -> anyhow::Result<()> {
    let etcd = EtcdServer::start()?;
    permits_follow_the_attempts(Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await?)).await
}
