//! Node registration and heartbeat. The agent holds its NodeInfo on a lease and renews it; when
//! it cannot renew for most of a TTL it fences itself (kills its sandboxes) before the
//! coordinator can declare them LOST, then registers again. Each renewal also renews the node
//! watchdog ([`crate::watchdog`]), which kills the sandboxes of an agent too stalled to fence.

use std::sync::Arc;
use std::time::Duration;

use corral_core::keys::NodeKey;
use corral_core::model::NodeInfo;
use corral_core::store::{self, LeaseId, StoreError, Txn};
use tokio::time::Instant;

use crate::Agent;

/// Registers the node and keeps it registered until the task is dropped. The NodeInfo is
/// rewritten when what the node offers changes (e.g. an image was built).
pub async fn heartbeat(agent: Arc<Agent>) -> Result<(), StoreError> {
    let ttl = agent.config.lease_ttl();
    let period = agent.config.heartbeat();
    loop {
        let mut info = agent.node_info().await;
        let lease = match register(&agent, &mut info, ttl).await {
            Ok(lease) => lease,
            Err(e) => {
                tracing::warn!(error = %e, "could not register the node; retrying");
                tokio::time::sleep(period).await;
                continue;
            }
        };
        agent.set_lease(Some(lease));
        renew_watchdog(&agent);
        tracing::info!(node = %info.node_id, lease = format!("{lease:x}"), "node registered");
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(period).await;
            if agent.watchdog.as_ref().is_some_and(|w| w.may_have_fired()) {
                // Stopped past the watchdog's deadline (a SIGSTOP, a stuck host): the sandboxes
                // were killed and the coordinator may re-queue their work; start over cleanly.
                tracing::error!("the agent stalled past its watchdog deadline; fencing and registering again");
                agent.fence().await;
                let _ = agent.store.revoke_lease(lease).await;
                break;
            }
            // Bounded by the time left before the fence: a silent partition must not hold the
            // keep-alive (and with it the fence) past the lease's expiry.
            let left = ttl.saturating_sub(period).saturating_sub(last_ok.elapsed()).max(Duration::from_millis(100));
            let sent = std::time::Instant::now();
            let renewed = match tokio::time::timeout(left, agent.store.keep_alive(lease)).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Unavailable(format!("keep-alive got no answer within {left:?}"))),
            };
            match renewed {
                Ok(()) => {
                    last_ok = Instant::now();
                    agent.set_renewed(Some(sent));
                    renew_watchdog(&agent);
                    refresh(&agent, &mut info, lease).await;
                }
                Err(StoreError::LeaseNotFound(_)) => {
                    tracing::error!("node lease expired; fencing local sandboxes and registering again");
                    agent.fence().await;
                    break;
                }
                Err(e) if last_ok.elapsed() + period >= ttl => {
                    tracing::error!(error = %e, "state store unreachable for most of a lease TTL; fencing");
                    agent.fence().await;
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed; retrying"),
            }
        }
        agent.set_lease(None);
    }
}

/// Pushes the watchdog's deadline on: the lease was just renewed (its TTL is longer).
fn renew_watchdog(agent: &Agent) {
    if let Some(w) = &agent.watchdog {
        w.renew();
    }
}

/// Rewrites the node record if the runtimes' offer changed since `info` was written.
async fn refresh(agent: &Agent, info: &mut NodeInfo, lease: LeaseId) {
    let mut now = agent.node_info().await;
    now.registered_at_ms = info.registered_at_ms;
    now.lease = lease;
    if now == *info {
        return;
    }
    let txn = Txn::new().put_with_lease(NodeKey(&now.node_id), store::encode(&now), lease);
    match agent.store.txn(txn).await {
        Ok(_) => {
            tracing::info!(images = ?now.images, "node offer changed; record updated");
            *info = now;
        }
        Err(e) => tracing::warn!(error = %e, "could not update the node record"),
    }
}

async fn register(agent: &Agent, info: &mut NodeInfo, ttl: Duration) -> Result<LeaseId, StoreError> {
    let granted = std::time::Instant::now();
    let lease = agent.store.grant_lease(ttl).await?;
    info.lease = lease;
    let txn = Txn::new().put_with_lease(NodeKey(&info.node_id), store::encode(info), lease);
    agent.store.txn(txn).await?;
    // Counted from before the grant: the lease cannot have been renewed later than that.
    agent.set_renewed(Some(granted));
    Ok(lease)
}
