//! The leader's scheduling loop: plans which pending jobs go to which nodes ([`super::plan`])
//! and has them claimed and sent there ([`super::claim`]), and runs the sweeps
//! ([`super::sweep`]).
//!
//! A claim is a CAS on the job record (its revision as the index saw it) that bumps the attempt,
//! in a transaction that also requires the leader key at this leader's revision: a deposed leader
//! cannot claim anything, and two claims of one job cannot both succeed. Claims are
//! group-committed (up to [`super::records::CLAIMS_PER_TXN`] jobs per transaction, each with
//! its tenant and batch permits) and each node gets one work item per group, whose message id is
//! derived from the claim's revision.

use std::sync::Arc;
use std::time::Duration;

use corral_core::ids::NodeId;
use corral_core::jobs::JobId;
use futures::future::join_all;
use tokio::time::Instant;

use super::records::CLAIMS_PER_TXN;
use super::service::Jobs;

/// How often the leader sweeps.
const SWEEP: Duration = Duration::from_secs(1);

/// Runs until dropped; does work only while this coordinator leads.
pub async fn run(jobs: Arc<Jobs>) -> Result<(), String> {
    let mut last_sweep = Instant::now();
    loop {
        tokio::select! {
            _ = jobs.table.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let Some(fence) = jobs.leadership.fence() else { continue };
        while jobs.schedule_once(fence).await > 0 {}
        if last_sweep.elapsed() >= SWEEP {
            last_sweep = Instant::now();
            jobs.sweep(fence).await;
        }
    }
}

impl Jobs {
    /// Plans and claims one round; returns how many jobs were claimed.
    async fn schedule_once(&self, fence: i64) -> usize {
        let _one_planner = self.table.planning.lock().await;
        let plan = self.plan(&[]);
        if plan.is_empty() {
            return 0;
        }
        let mut claimed = 0;
        let groups: Vec<Vec<(JobId, NodeId)>> = plan.chunks(CLAIMS_PER_TXN).map(<[_]>::to_vec).collect();
        for (n, _) in join_all(groups.into_iter().map(|g| self.claim(fence, g, None))).await {
            claimed += n;
        }
        claimed
    }
}
