//! What the leader's reconciler sweep (see [`crate::reconciler`]) does to sandboxes: sandboxes of
//! vanished nodes become LOST, old records get deadline keys, sandboxes whose deadline key etcd
//! deleted end EXPIRED, and creates stuck in SCHEDULED are re-published and then fail.

use std::time::Duration;

use corral_core::keys::DeadlineKey;
use corral_core::model::SandboxRecord;
use corral_core::protocol::Work;
use corral_core::state::SandboxState;
use corral_core::time::now_ms;

use super::Sandboxes;
use crate::records;

impl Sandboxes {
    /// One sweep, in order: lost nodes, old deadlines, expiries, stuck creates.
    pub async fn sweep(&self) {
        self.end_orphans().await;
        self.adopt_old_deadlines().await;
        self.expire_due().await;
        self.retry_stuck_creates().await;
    }

    /// Ends LOST every live sandbox whose node stopped heartbeating.
    async fn end_orphans(&self) {
        for (tenant, id, node) in self.view.orphans() {
            let reason = format!("node {node} stopped heartbeating (its lease expired)");
            match self.end(&tenant, &id, SandboxState::Lost, &reason).await {
                Ok(_) => tracing::warn!(sandbox_id = %id, node = %node, "sandbox lost with its node"),
                Err(e) => tracing::warn!(sandbox_id = %id, error = %e, "could not mark sandbox lost"),
            }
        }
    }

    /// Gives a deadline key to every running sandbox whose record predates deadline keys, for
    /// the time its old `expires_at_ms` left (read once on this clock; at least a second).
    async fn adopt_old_deadlines(&self) {
        for record in self.view.without_deadline() {
            let (tenant, id) = (&record.spec.tenant, &record.spec.id);
            let left = match record.expires_at_ms {
                0 => Duration::from_secs(record.spec.timeout_seconds),
                at => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
            };
            let lease = match self.deadlines.lease_after(left.max(Duration::from_secs(1))).await {
                Ok(lease) => lease,
                Err(e) => {
                    tracing::warn!(sandbox_id = %id, error = %e, "could not give an old record a deadline");
                    continue;
                }
            };
            let updated = records::update(&self.store, tenant, id, None, |r| {
                let old = !r.state.is_terminal() && r.deadline_lease == 0 && r.spec.timeout_seconds > 0;
                if old {
                    r.deadline_lease = lease;
                }
                Ok(old)
            });
            match self.deadlines.forget_lost(updated.await) {
                Ok(Some(v)) => {
                    tracing::info!(sandbox_id = %id, "an old record got its deadline key");
                    self.view.apply_record(&v.record, v.revision);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(sandbox_id = %id, error = %e, "could not give an old record a deadline"),
            }
        }
    }

    /// Ends `EXPIRED` every live sandbox whose deadline key etcd has deleted.
    async fn expire_due(&self) {
        for (tenant, id, lease) in self.view.past_deadline() {
            // The view may lag: the store decides whether the key is really gone.
            match self.store.get(&DeadlineKey { tenant: &tenant, id: id.as_str() }.to_string()).await {
                Ok(None) => {}
                Ok(Some(_)) => continue,
                Err(e) => {
                    tracing::warn!(sandbox_id = %id, error = %e, "could not check a deadline");
                    continue;
                }
            }
            // A SetTimeout that landed meanwhile moved the deadline to another lease.
            let due = |r: &SandboxRecord| r.deadline_lease == lease;
            match self.end_if(&tenant, &id, SandboxState::Expired, "its timeout was reached", due).await {
                Ok(r) if r.state != SandboxState::Expired => tracing::debug!(sandbox_id = %id, "expiry postponed"),
                Ok(_) => tracing::info!(sandbox_id = %id, "sandbox expired"),
                Err(e) => tracing::warn!(sandbox_id = %id, error = %e, "could not expire sandbox"),
            }
        }
    }

    /// Re-publishes creates SCHEDULED for longer than a create timeout; fails those stuck for
    /// two.
    async fn retry_stuck_creates(&self) {
        // Ages on this coordinator's own clock: a record's times come from whichever coordinator
        // wrote them, and may be skewed.
        let timeout = self.create_timeout;
        for (record, age) in self.view.stuck_scheduled(timeout) {
            let (tenant, id) = (&record.spec.tenant, &record.spec.id);
            let Some(node) = &record.node else { continue };
            if age > 2 * timeout {
                let reason = format!("node {node} never confirmed the start");
                if let Err(e) = self.end(tenant, id, SandboxState::Failed, &reason).await {
                    tracing::warn!(sandbox_id = %id, error = %e, "could not fail a stuck sandbox");
                }
                continue;
            }
            // Its create may have been confirmed to a client whose coordinator then could not
            // record it: ask the agent again (idempotent; one message id, so repeats within the
            // queue's deduplication window are dropped). The reply arrives as an unclaimed one,
            // which the reconciler applies.
            let work = |reply_to| Work::Create { spec: record.spec.clone(), reply_to };
            if let Err(e) = self.dispatch.send_work(node, work, &format!("{id}.create.again")).await {
                tracing::warn!(sandbox_id = %id, error = %e, "could not re-publish a stuck create");
            }
        }
    }
}
