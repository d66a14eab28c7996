//! Start-up recovery: sandboxes that survived an agent restart (Docker containers do; bubblewrap
//! sandboxes die with their agent) are taken back when their record is still live on this node,
//! and destroyed otherwise — before the agent takes any new work.

use std::collections::HashMap;

use corral_core::ids::SandboxId;
use corral_core::keys::SandboxesPrefix;
use corral_core::model::{SandboxRecord, SandboxSpec};
use corral_core::store::{self, StoreError};

use crate::Agent;

pub async fn recover(agent: &Agent) -> Result<(), StoreError> {
    let mut found = Vec::new();
    for rt in &agent.runtimes {
        for id in rt.list().await {
            found.push((rt.clone(), id));
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    let live = live_records(agent).await?;
    for (rt, id) in found {
        match live.get(&id).filter(|spec| spec.runtime == rt.kind()) {
            Some(spec) => {
                if let Err(why) = agent.slots.admit(id.as_str()).await {
                    // It runs already; the slots were lowered across the restart.
                    tracing::warn!(sandbox_id = %id, %why, "re-adopting a sandbox beyond the node's slots");
                }
                agent.specs().insert(id.clone(), spec.clone());
                match rt.adopt(spec).await {
                    Ok(()) => tracing::info!(sandbox_id = %id, runtime = %rt.kind(), "re-adopted sandbox"),
                    Err(e) => {
                        tracing::warn!(sandbox_id = %id, error = %e, "could not re-adopt; destroying");
                        agent.destroy(&id).await;
                    }
                }
            }
            None => {
                tracing::info!(sandbox_id = %id, runtime = %rt.kind(), "reaping a sandbox whose record ended");
                if let Err(e) = rt.destroy(&id).await {
                    tracing::warn!(sandbox_id = %id, error = %e, "reaping failed");
                }
            }
        }
    }
    Ok(())
}

/// Specs of the live sandboxes the records place on this node.
async fn live_records(agent: &Agent) -> Result<HashMap<SandboxId, SandboxSpec>, StoreError> {
    let prefix = SandboxesPrefix.to_string();
    let mut after: Option<String> = None;
    let mut live = HashMap::new();
    loop {
        let page = agent.store.range(&prefix, after.as_deref(), 1000).await?;
        for kv in &page.kvs {
            let record: SandboxRecord = store::decode(kv)?;
            if record.state.is_active() && record.node.as_ref() == Some(&agent.node) {
                live.insert(record.spec.id.clone(), record.spec);
            }
        }
        after = page.kvs.last().map(|kv| kv.key.clone());
        if !page.more {
            return Ok(live);
        }
    }
}
