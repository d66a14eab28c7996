//! Writing a started sandbox's RUNNING state off the create path.
//!
//! A sandbox's record is written `SCHEDULED` while its agent starts it. When the agent reports it
//! running, `create` answers the client at once and writes `RUNNING` in the background: the
//! agent's report is the fact, the write makes it durable, and one etcd round trip leaves the
//! critical path. Nothing can be read out of order because of that:
//!
//! - on this coordinator, every reader of the sandbox's record (`get`, `list`, `end`, pause)
//!   first waits for the write in flight ([`InFlight::settled`]), and `locate` sees the view
//!   already marked RUNNING;
//! - another coordinator sees `SCHEDULED` until its watch delivers `RUNNING`, and `locate` waits
//!   for that;
//! - if the write fails or this coordinator dies first, the record stays `SCHEDULED`: the
//!   reconciler re-publishes the create, the agent answers it idempotently (it already runs the
//!   sandbox) and the reply is applied like any other. A sandbox whose agent never confirms ends
//!   `FAILED`, as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_core::ids::SandboxId;
use tokio::sync::watch;

/// Longest a reader waits for a write in flight; past it, the reader goes on with what the store
/// has (the write is retried by the reconciler's path anyway).
const MAX_WAIT: Duration = Duration::from_secs(10);

type Writes = Arc<Mutex<HashMap<SandboxId, watch::Receiver<()>>>>;

/// RUNNING writes this coordinator has in flight, by sandbox.
#[derive(Default)]
pub struct InFlight {
    writes: Writes,
}

/// Held by the task writing a sandbox's confirmation; dropping it releases the waiters.
pub struct Writing {
    id: SandboxId,
    writes: Writes,
    _done: watch::Sender<()>,
}

impl Drop for Writing {
    fn drop(&mut self) {
        // Unlisted first, then `_done` drops and wakes whoever already waits.
        self.writes.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

impl InFlight {
    /// Marks a write for `id` as in flight until the returned guard is dropped.
    pub fn begin(&self, id: &SandboxId) -> Writing {
        let (done, rx) = watch::channel(());
        self.writes.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), rx);
        Writing { id: id.clone(), writes: self.writes.clone(), _done: done }
    }

    /// Waits until no write for `id` is in flight.
    pub async fn settled(&self, id: &SandboxId) {
        let rx = self.writes.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned();
        if let Some(rx) = rx {
            wait(rx).await;
        }
    }

    /// Waits until every write in flight now has landed.
    pub async fn all_settled(&self) {
        let all: Vec<_> = self.writes.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        futures::future::join_all(all.into_iter().map(wait)).await;
    }
}

async fn wait(mut rx: watch::Receiver<()>) {
    // Nothing is ever sent: `changed` returns once the sender is dropped.
    let _ = tokio::time::timeout(MAX_WAIT, rx.changed()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_wait_for_the_write_in_flight() {
        let in_flight = InFlight::default();
        let id = SandboxId::random();
        let writing = in_flight.begin(&id);
        let reader = async {
            in_flight.settled(&id).await;
            in_flight.all_settled().await;
        };
        tokio::pin!(reader);
        let early = tokio::time::timeout(Duration::from_millis(50), &mut reader).await;
        assert!(early.is_err(), "the reader must wait while the write is in flight");
        drop(writing);
        tokio::time::timeout(Duration::from_secs(5), reader).await.expect("released when the write ends");
        // Nothing in flight: no wait at all.
        tokio::time::timeout(Duration::from_millis(100), in_flight.settled(&id)).await.expect("immediate");
    }
}
