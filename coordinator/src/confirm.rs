//! Writing a started sandbox's RUNNING state off the create path.
//!
//! A sandbox's record is written `SCHEDULED` while its agent starts it. When the agent reports it
//! running, `create` answers the client at once and writes `RUNNING` in the background, after a
//! short delay ([`DEFER`]): the agent's report is the fact, the write makes it durable, and one
//! etcd round trip leaves the critical path. A sandbox that ends within the delay (a one-command
//! sandbox) is written once, from `SCHEDULED` straight to its end, which records the start time.
//! Nothing can be read out of order because of that:
//!
//! - on this coordinator, every reader of the sandbox's record (`get`, `list`, pause, timeout)
//!   first starts the deferred write and waits for it ([`InFlight::settled`]), an end takes a
//!   write that has not started over ([`InFlight::take_deferred`]) or waits for one that has, and
//!   `locate` sees the view already marked RUNNING;
//! - another coordinator sees `SCHEDULED` until its watch delivers `RUNNING` (or the end), and
//!   `locate` waits for that;
//! - if the write fails or this coordinator dies first, the record stays `SCHEDULED`: the
//!   reconciler re-publishes the create, the agent answers it idempotently (it already runs the
//!   sandbox) and the reply is applied like any other. A sandbox whose agent never confirms ends
//!   `FAILED`, as before.
//!
//! Layering: this module only keeps the books ([`InFlight`]) and depends on nothing of the
//! coordinator; the sandbox component ([`crate::sandboxes`]) owns an `InFlight`, makes the
//! deferred write (`confirm_running`) and consults it on every read and end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_core::ids::SandboxId;
use tokio::sync::{Notify, watch};

/// Longest a reader waits for a write in flight; past it, the reader goes on with what the store
/// has (the write is retried by the reconciler's path anyway).
const MAX_WAIT: Duration = Duration::from_secs(10);

/// How long the RUNNING write waits before it starts: a sandbox that ends sooner (a create, a
/// command, a destroy) goes from SCHEDULED straight to its end, one store write instead of two.
/// A reader of the record on this coordinator starts the write at once; another coordinator sees
/// SCHEDULED this much longer (its `locate` waits for RUNNING).
pub const DEFER: Duration = Duration::from_millis(25);

/// One RUNNING confirmation: deferred, then being written.
struct Entry {
    /// Changes (closes) when the write ended or was skipped.
    done: watch::Receiver<()>,
    /// Starts a deferred write now.
    flush: Arc<Notify>,
    writing: bool,
    started_at_ms: i64,
}

type Writes = Arc<Mutex<HashMap<SandboxId, Entry>>>;

/// RUNNING writes this coordinator has deferred or in flight, by sandbox.
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
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxId, Entry>> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a (deferred) write for `id` until the returned guard is dropped; the notify starts
    /// it early.
    pub fn begin(&self, id: &SandboxId, started_at_ms: i64) -> (Writing, Arc<Notify>) {
        let (done, rx) = watch::channel(());
        let flush = Arc::new(Notify::new());
        let entry = Entry { done: rx, flush: flush.clone(), writing: false, started_at_ms };
        self.lock().insert(id.clone(), entry);
        (Writing { id: id.clone(), writes: self.writes.clone(), _done: done }, flush)
    }

    /// The deferred write for `id` starts now; false if it was taken over by the sandbox's end.
    pub fn start_writing(&self, id: &SandboxId) -> bool {
        self.lock().get_mut(id).map(|e| e.writing = true).is_some()
    }

    /// Takes over a write for `id` that has not started: the caller's own write (the sandbox's
    /// end) replaces it. Returns the start time the skipped write would have recorded.
    pub fn take_deferred(&self, id: &SandboxId) -> Option<i64> {
        let mut writes = self.lock();
        let started_at_ms = writes.get(id).filter(|e| !e.writing)?.started_at_ms;
        let entry = writes.remove(id)?;
        // Its task wakes, finds nothing to write and releases whoever waits.
        entry.flush.notify_one();
        Some(started_at_ms)
    }

    /// Waits until no write for `id` is deferred or in flight (starting a deferred one now).
    pub async fn settled(&self, id: &SandboxId) {
        let rx = self.lock().get(id).map(|e| {
            e.flush.notify_one();
            e.done.clone()
        });
        if let Some(rx) = rx {
            wait(rx).await;
        }
    }

    /// Waits until every write deferred or in flight now has landed.
    pub async fn all_settled(&self) {
        let all: Vec<_> = self
            .lock()
            .values()
            .map(|e| {
                e.flush.notify_one();
                e.done.clone()
            })
            .collect();
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
        let (writing, _flush) = in_flight.begin(&id, 1);
        assert!(in_flight.start_writing(&id));
        let reader = async {
            in_flight.settled(&id).await;
            in_flight.all_settled().await;
        };
        tokio::pin!(reader);
        let early = tokio::time::timeout(Duration::from_millis(50), &mut reader).await;
        assert!(early.is_err(), "the reader must wait while the write is in flight");
        // A write in flight cannot be taken over: the end waits for it instead.
        assert_eq!(in_flight.take_deferred(&id), None);
        drop(writing);
        tokio::time::timeout(Duration::from_secs(5), reader).await.expect("released when the write ends");
        // Nothing in flight: no wait at all.
        tokio::time::timeout(Duration::from_millis(100), in_flight.settled(&id)).await.expect("immediate");
    }

    #[tokio::test]
    async fn a_reader_starts_a_deferred_write_at_once() {
        let in_flight = InFlight::default();
        let id = SandboxId::random();
        let (writing, flush) = in_flight.begin(&id, 1);
        let reader = in_flight.settled(&id);
        tokio::pin!(reader);
        assert!(tokio::time::timeout(Duration::from_millis(20), &mut reader).await.is_err());
        // The reader asked for the write: the task is woken without waiting out DEFER.
        tokio::time::timeout(Duration::from_secs(5), flush.notified()).await.expect("flushed");
        assert!(in_flight.start_writing(&id));
        drop(writing);
        tokio::time::timeout(Duration::from_secs(5), reader).await.expect("released when the write ends");
    }

    #[tokio::test]
    async fn an_end_takes_over_a_deferred_write() {
        let in_flight = InFlight::default();
        let id = SandboxId::random();
        let (writing, flush) = in_flight.begin(&id, 42);
        assert_eq!(in_flight.take_deferred(&id), Some(42));
        assert_eq!(in_flight.take_deferred(&id), None, "taken once");
        // The task is woken, finds the write gone and writes nothing.
        tokio::time::timeout(Duration::from_secs(5), flush.notified()).await.expect("woken");
        assert!(!in_flight.start_writing(&id));
        drop(writing);
        tokio::time::timeout(Duration::from_millis(100), in_flight.settled(&id)).await.expect("immediate");
    }
}
