//! The node's cap on running work, `agent.max_sandboxes` (the slots it advertises): a
//! [`LocalSemaphore`] of scope `node/{id}`. Each sandbox holds a permit from its create to its
//! destroy, and each job attempt while it runs; both wait for one in line (first come, first
//! served) when the node is full, a sandbox create at most [`SANDBOX_PATIENCE`]. The
//! coordinators place within the advertised slots, so the line only forms when placements raced
//! (two coordinators, a sandbox and a claim at once): the node then runs the extra work later
//! instead of more than it offers.

use std::time::Duration;

use corral_core::ids::NodeId;
use corral_core::keys::SemScope;
use corral_core::semaphore::{Holder, Line, LocalSemaphore, SemError, Semaphore};
use corral_core::store::LeaseId;

/// How long a sandbox create waits for a slot before it is refused.
pub const SANDBOX_PATIENCE: Duration = Duration::from_secs(5);

/// The permits of a node's running work.
pub struct NodeSlots {
    node: NodeId,
    sem: LocalSemaphore,
    scope: SemScope,
    limit: usize,
    /// The lease every holder's place is on: the agent's own life.
    lease: LeaseId,
}

/// A job attempt's permit, given back when dropped.
pub struct Slot<'a> {
    slots: &'a NodeSlots,
    holder: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.slots.sem.release_now(&self.slots.scope, &self.holder);
    }
}

impl NodeSlots {
    pub async fn new(node: &NodeId, limit: u32) -> Result<Self, SemError> {
        let sem = LocalSemaphore::new();
        // Ends with the agent's process, never before.
        let lease = sem.grant_lease(Duration::from_secs(100 * 365 * 24 * 3600)).await?;
        Ok(Self { node: node.clone(), sem, scope: SemScope::Node(node.clone()), limit: limit.max(1) as usize, lease })
    }

    /// Takes a permit for `holder` (a sandbox), waiting in line up to [`SANDBOX_PATIENCE`] (a
    /// destroy the coordinator sent just before may still be under way); `Err` says why not.
    /// Idempotent.
    pub async fn admit(&self, holder: &str) -> Result<(), String> {
        let holder = Holder::new(holder, self.lease);
        match tokio::time::timeout(SANDBOX_PATIENCE, self.sem.acquire(&self.scope, &holder, self.limit)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "node {} is full: its {} slots (agent.max_sandboxes) stayed taken for {} s by sandboxes and job attempts",
                self.node,
                self.limit,
                SANDBOX_PATIENCE.as_secs()
            )),
        }
    }

    /// Waits in line for a permit for `holder` (a job attempt); it is given back when the slot
    /// is dropped (and the place left if the wait is cancelled).
    pub async fn wait(&self, holder: &str) -> Result<Slot<'_>, SemError> {
        self.sem.acquire(&self.scope, &Holder::new(holder, self.lease), self.limit).await?;
        Ok(Slot { slots: self, holder: holder.to_owned() })
    }

    /// Gives `holder`'s permit back (nothing happens if it has none).
    pub fn release(&self, holder: &str) {
        self.sem.release_now(&self.scope, holder);
    }

    /// Who holds and who waits now.
    pub async fn line(&self) -> Line {
        self.sem.line(&self.scope, self.limit).await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sandboxes_are_refused_and_attempts_wait_when_full() {
        let slots = NodeSlots::new(&NodeId::parse("n1").unwrap(), 2).await.unwrap();
        slots.admit("sb-a").await.unwrap();
        slots.admit("sb-a").await.expect("admitting again is idempotent");
        let attempt = slots.wait("job-1.1").await.unwrap();
        let err = slots.admit("sb-b").await.expect_err("full");
        assert!(err.contains("node n1 is full") && err.contains("agent.max_sandboxes"), "{err}");
        assert_eq!(slots.line().await, Line { holding: 2, waiting: 0 }, "a refused sandbox leaves the line");
        let waiting = slots.wait("job-2.1");
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending(), "a second attempt waits");
        assert_eq!(slots.line().await, Line { holding: 2, waiting: 1 });
        drop(attempt);
        let second = waiting.await.unwrap();
        let admitting = slots.admit("sb-b");
        tokio::pin!(admitting);
        assert!(futures::poll!(admitting.as_mut()).is_pending(), "a sandbox waits a moment for a slot");
        slots.release("sb-a");
        admitting.await.expect("the slot freed meanwhile is taken");
        drop(second);
        assert_eq!(slots.line().await, Line { holding: 1, waiting: 0 });
    }
}
