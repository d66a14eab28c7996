//! Background loops that keep records honest: sandboxes of vanished nodes become LOST, sandboxes
//! whose deadline key etcd deleted are destroyed as EXPIRED (see `deadlines.rs`), creates stuck in SCHEDULED are re-published
//! (after one create timeout) and then fail (after two), and agent replies nobody waited for are
//! applied.
//!
//! The sweeps run on the elected leader only (`leader.rs`); every write is a CAS through
//! `records::update`, so a deposed leader sweeping once more cannot corrupt a record.

use std::sync::Arc;
use std::time::Duration;

use corral_core::protocol::{Work, WorkReply};
use corral_core::state::SandboxState;
use tokio::sync::mpsc;

use crate::service::Core;

/// How often the loops look for work.
pub const TICK: Duration = Duration::from_millis(500);

pub async fn run(core: Arc<Core>, mut unclaimed: mpsc::UnboundedReceiver<WorkReply>) -> Result<(), String> {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            reply = unclaimed.recv() => {
                let Some(reply) = reply else { return Err("reply inbox closed".into()) };
                if let Err(e) = core.apply_reply(reply, None, 0).await {
                    tracing::warn!(error = %e, "could not apply an agent reply");
                }
            }
            // Only the leader sweeps; every coordinator applies the replies addressed to it.
            _ = tick.tick() => if core.leadership.is_leader() { sweep(&core).await },
        }
    }
}

async fn sweep(core: &Core) {
    for (tenant, id, node) in core.view.orphans() {
        let reason = format!("node {node} stopped heartbeating (its lease expired)");
        match core.end(&tenant, &id, SandboxState::Lost, &reason).await {
            Ok(_) => tracing::warn!(sandbox_id = %id, node = %node, "sandbox lost with its node"),
            Err(e) => tracing::warn!(sandbox_id = %id, error = %e, "could not mark sandbox lost"),
        }
    }
    core.adopt_old_deadlines().await;
    core.expire_due().await;
    // Ages on this coordinator's own clock: a record's times come from whichever coordinator
    // wrote them, and may be skewed.
    let timeout = core.config.create_timeout();
    for (record, age) in core.view.stuck_scheduled(timeout) {
        let (tenant, id) = (&record.spec.tenant, &record.spec.id);
        let Some(node) = &record.node else { continue };
        if age > 2 * timeout {
            let reason = format!("node {node} never confirmed the start");
            if let Err(e) = core.end(tenant, id, SandboxState::Failed, &reason).await {
                tracing::warn!(sandbox_id = %id, error = %e, "could not fail a stuck sandbox");
            }
            continue;
        }
        // Its create may have been confirmed to a client whose coordinator then could not record
        // it: ask the agent again (idempotent; one message id, so repeats within the queue's
        // deduplication window are dropped). The reply arrives as an unclaimed one, applied above.
        let work = |reply_to| Work::Create { spec: record.spec.clone(), reply_to };
        if let Err(e) = core.dispatch.send_work(node, work, &format!("{id}.create.again")).await {
            tracing::warn!(sandbox_id = %id, error = %e, "could not re-publish a stuck create");
        }
    }
}
