//! The coordinator's cluster view keeps following the store across an etcd restart: the
//! supervised follower reloads and watches again, so records written afterwards show up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use corral_coordinator::cluster::ClusterView;
use corral_core::ids::NodeId;
use corral_core::keys::NodeKey;
use corral_core::model::{Capacity, NodeInfo, RuntimeKind};
use corral_core::store::etcd::EtcdStore;
use corral_core::store::{self, StateStore, Txn};
use corral_core::task;
use corral_testkit::etcd::EtcdServer;

fn node(id: &str) -> anyhow::Result<NodeInfo> {
    Ok(NodeInfo {
        v: 1,
        node_id: NodeId::parse(id)?,
        capacity: Capacity {
            cpus: 2.0,
            memory_mb: 1024,
            sandboxes: 4,
            disk_mb: 0,
            max_sandbox_disk_mb: 0,
            pids: 1 << 20,
        },
        runtimes: vec![RuntimeKind::Bwrap],
        images: Vec::new(),
        languages: Vec::new(),
        labels: BTreeMap::new(),
        agent_version: "test".into(),
        registered_at_ms: 0,
        lease: 0,
    })
}

/// Writes the node record, retrying while etcd is still coming back.
async fn put_node(store: &dyn StateStore, info: &NodeInfo) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..100 {
        let txn = Txn::new().put(NodeKey(&info.node_id), store::encode(info));
        match store.txn(txn).await {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("could not write node {}: {last:?}", info.node_id)
}

async fn wait_for_node(view: &ClusterView, id: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        if view.nodes().iter().any(|n| n.node_id.as_str() == id) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("node {id} never appeared in the cluster view (has {:?})", view.nodes())
}

#[tokio::test]
async fn cluster_view_catches_up_after_etcd_restart() -> anyhow::Result<()> {
    let mut etcd = EtcdServer::start()?;
    let store: Arc<dyn StateStore> = Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await?);
    let view = ClusterView::default();
    let _follower = {
        let (view, store) = (view.clone(), store.clone());
        task::supervise("test.cluster_view", move || view.clone().follow(store.clone()))
    };

    put_node(store.as_ref(), &node("before-restart")?).await?;
    wait_for_node(&view, "before-restart").await.context("before the restart")?;

    etcd.restart()?;
    // Many changes, then compaction past all of them: a watch resumed from where the view was
    // would be refused as compacted, so the view must reload.
    for i in 0..50 {
        put_node(store.as_ref(), &node(&format!("churn-{i}"))?).await?;
    }
    let mut raw = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    let rev = raw.get("/", None).await?.header().map(|h| h.revision()).unwrap_or(0);
    raw.compact(rev, Some(etcd_client::CompactionOptions::new().with_physical())).await?;
    put_node(store.as_ref(), &node("after-restart")?).await?;
    wait_for_node(&view, "after-restart").await.context("after the restart")?;
    wait_for_node(&view, "before-restart").await.context("after the restart")?;
    wait_for_node(&view, "churn-49").await.context("after the compaction")?;
    Ok(())
}
