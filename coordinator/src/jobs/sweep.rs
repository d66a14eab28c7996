//! The leader's sweeps, every second: jobs of vanished nodes go back to the queue, attempts
//! that got no result are sent again, batches past their deadline are cancelled, interrupted
//! cancels are finished and abandoned uploads closed.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use corral_core::ids::NodeId;
use corral_core::jobs::{Cancelled, JobState, JobWork};
use corral_core::time::now_ms;

use super::records::{self, Writes};
use super::service::Jobs;

/// A running attempt with no result this long after it was sent is sent again (the agent
/// ignores a duplicate of an attempt it runs, and re-sends the report of one it finished).
pub const REDISPATCH: Duration = Duration::from_secs(10);

impl Jobs {
    /// Re-queues jobs of vanished nodes, re-sends attempts that got no result, enforces batch
    /// deadlines and finishes interrupted batch cancels.
    pub(super) async fn sweep(&self, fence: i64) {
        let nodes: HashSet<NodeId> = self.view.nodes().into_iter().map(|n| n.node_id).collect();
        let (mut orphaned, mut resend) = (Vec::new(), Vec::new());
        {
            let inner = self.table.lock();
            for e in inner.jobs.values() {
                let (JobState::Running, Some(record), Some(node)) = (e.state, &e.record, &e.node) else { continue };
                if !nodes.contains(node) {
                    orphaned.push((e.revision, record.clone()));
                } else if e.dispatched.is_none_or(|at| at.elapsed() >= REDISPATCH) {
                    resend.push(record.clone());
                }
            }
        }
        for (revision, record) in orphaned {
            let why =
                format!("node {} left the cluster while the job ran", record.node.as_ref().map_or("?", |n| n.as_str()));
            let next = match records::infra_failure(&record, &why, now_ms()) {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(job = %record.id, error = %e, "not re-queueing a job of a lost node");
                    continue;
                }
            };
            match Writes::fenced(fence).put_job(revision, &next).run(self.store.as_ref()).await {
                Ok(out) if out.succeeded => {
                    tracing::warn!(job = %record.id, state = %next.state, "{why}");
                    self.table.apply_job(next, out.revision, 0);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not re-queue a job of a lost node"),
            }
        }
        // Grouped per node: a long batch re-sends its running attempts every REDISPATCH.
        let mut by_node: HashMap<NodeId, Vec<JobWork>> = HashMap::new();
        for record in resend {
            let Some(node) = record.node.clone() else { continue };
            let work = JobWork::of(&record);
            by_node.entry(node).or_default().push(work);
        }
        let tag = format!("again.{}", now_ms());
        for (node, jobs) in by_node {
            self.send_jobs(&node, jobs, &tag).await;
        }
        self.sweep_batches().await;
    }

    /// Cancels batches past their deadline, finishes cancels that were interrupted, and
    /// abandons stalled uploads.
    async fn sweep_batches(&self) {
        let now = now_ms();
        let (overdue, unfinished): (Vec<_>, Vec<_>) = {
            let inner = self.table.lock();
            let overdue = inner
                .batches
                .values()
                .filter(|b| {
                    // etcd's lease timer decides; records from before deadline keys use the time.
                    let r = &b.record;
                    let passed = match r.deadline_lease {
                        0 => r.deadline_at_ms > 0 && r.deadline_at_ms <= now,
                        _ => inner.deadlines_gone.contains(&r.id),
                    };
                    r.cancelled.is_none() && passed
                })
                .filter(|b| !b.done())
                .map(|b| (b.record.tenant.clone(), b.record.id.clone()))
                .collect();
            let unfinished = inner
                .batches
                .values()
                .filter(|b| b.record.cancelled.is_some() && b.live() > 0)
                .map(|b| {
                    let why =
                        b.record.cancelled.clone().unwrap_or_else(|| Cancelled { reason: String::new(), at_ms: 0 });
                    (b.record.tenant.clone(), b.record.id.clone(), why.reason)
                })
                .collect();
            (overdue, unfinished)
        };
        for (tenant, id) in overdue {
            if let Err(e) = self.cancel_batch(&tenant, &id, "the batch's deadline passed").await {
                tracing::warn!(batch = %id, error = %e, "could not cancel a batch past its deadline");
            }
        }
        for (tenant, id, why) in unfinished {
            self.cancel_items(&tenant, &id, &why).await;
        }
        let upload_timeout = self.limits.batch_upload_timeout_seconds.saturating_mul(1000);
        self.sweep_abandoned(i64::try_from(upload_timeout).unwrap_or(i64::MAX)).await;
    }
}
