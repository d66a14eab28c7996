//! Garbage collection: every period, destroys local sandboxes whose record ended, so no sandbox
//! outlives its record by more than one period (even if a destroy message was lost). A sandbox
//! with no record at all is destroyed when two sweeps in a row find none: the coordinator writes
//! a new sandbox's record while the agent already starts it. A running job attempt's sandbox has
//! no record and is left to its attempt.

use std::collections::HashSet;
use std::sync::Arc;

use corral_core::ids::SandboxId;
use corral_core::keys::SandboxKey;
use corral_core::model::SandboxRecord;
use corral_core::store::{self, StoreError};

use crate::Agent;

pub async fn run(agent: Arc<Agent>) -> Result<(), StoreError> {
    let period = std::time::Duration::from_secs(agent.config.gc_interval_seconds.max(1));
    let mut unrecorded = HashSet::new();
    loop {
        tokio::time::sleep(period).await;
        if let Err(e) = sweep(&agent, &mut unrecorded).await {
            tracing::warn!(error = %e, "gc sweep failed; retrying next period");
        }
    }
}

async fn sweep(agent: &Agent, unrecorded: &mut HashSet<SandboxId>) -> Result<(), StoreError> {
    let mut still_unrecorded = HashSet::new();
    let mut local = Vec::new();
    for rt in &agent.runtimes {
        local.extend(rt.list().await);
    }
    for id in local {
        if agent.jobs.owns(&id) {
            continue;
        }
        let Some(spec) = agent.spec(&id) else {
            tracing::warn!(sandbox_id = %id, "gc: destroying a sandbox this agent has no spec for");
            agent.destroy(&id).await;
            continue;
        };
        let kv = agent.store.get(&SandboxKey { tenant: &spec.tenant, id: &id }.to_string()).await?;
        let live = match &kv {
            Some(kv) => store::decode::<SandboxRecord>(kv).map(|r| r.state.is_active()).unwrap_or(false),
            None if unrecorded.contains(&id) => false,
            None => {
                still_unrecorded.insert(id);
                continue;
            }
        };
        if !live {
            tracing::info!(sandbox_id = %id, "gc: record ended or vanished; destroying");
            agent.destroy(&id).await;
        }
    }
    *unrecorded = still_unrecorded;
    for rt in &agent.runtimes {
        rt.sweep().await;
    }
    Ok(())
}
