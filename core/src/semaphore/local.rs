//! The semaphore in one process: each scope's line is a list in arrival order, and leases are
//! deadlines this semaphore keeps itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Acquired, Holder, Line, MAX_LINE, SemError, SemResult, Semaphore, check_holder, check_limit};
use crate::keys::SemScope;
use crate::store::LeaseId;

/// An in-process [`Semaphore`]: the twin of [`super::StoreSemaphore`] for one process.
#[derive(Clone, Default)]
pub struct LocalSemaphore {
    state: Arc<Mutex<State>>,
    /// Woken whenever a place leaves a line.
    left: Arc<Notify>,
}

#[derive(Default)]
struct State {
    next_lease: LeaseId,
    /// Live leases and when each ends.
    leases: HashMap<LeaseId, Instant>,
    /// Each scope's line, in arrival order: (holder, lease).
    lines: HashMap<SemScope, Vec<(String, LeaseId)>>,
}

impl State {
    /// Ends the leases past their time; whether any place left a line.
    fn expire(&mut self, now: Instant) -> bool {
        let ended: Vec<LeaseId> = self.leases.iter().filter(|(_, end)| **end <= now).map(|(l, _)| *l).collect();
        ended.iter().any(|lease| self.end(*lease))
    }

    /// Ends `lease`; whether any place left a line.
    fn end(&mut self, lease: LeaseId) -> bool {
        self.leases.remove(&lease);
        let mut left = false;
        self.lines.retain(|_, line| {
            let before = line.len();
            line.retain(|(_, l)| *l != lease);
            left |= line.len() != before;
            !line.is_empty()
        });
        left
    }

    fn rank(&self, scope: &SemScope, name: &str) -> Option<usize> {
        self.lines.get(scope)?.iter().position(|(h, _)| h == name)
    }

    /// Puts `holder` at the end of the line unless it is in it; whether it was new.
    fn join(&mut self, scope: &SemScope, holder: &Holder) -> SemResult<bool> {
        if !self.leases.contains_key(&holder.lease) {
            return Err(SemError::LeaseGone { scope: scope.to_string(), lease: holder.lease });
        }
        if self.rank(scope, &holder.name).is_some() {
            return Ok(false);
        }
        let line = self.lines.entry(scope.clone()).or_default();
        if line.len() >= MAX_LINE {
            return Err(SemError::LineFull { scope: scope.to_string() });
        }
        line.push((holder.name.clone(), holder.lease));
        Ok(true)
    }

    fn leave(&mut self, scope: &SemScope, name: &str) -> bool {
        let Some(line) = self.lines.get_mut(scope) else { return false };
        let before = line.len();
        line.retain(|(h, _)| h != name);
        let left = line.len() != before;
        if line.is_empty() {
            self.lines.remove(scope);
        }
        left
    }

    fn next_end(&self) -> Option<Instant> {
        self.leases.values().min().copied()
    }
}

impl LocalSemaphore {
    pub fn new() -> Self {
        Self::default()
    }

    /// [`Semaphore::release`], at once (for owners that release from `Drop`).
    pub fn release_now(&self, scope: &SemScope, holder: &str) {
        if self.lock().leave(scope, holder) {
            self.left.notify_waiters();
        }
    }

    /// The state, with ended leases gone (waking waiters if places left).
    fn lock(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.expire(Instant::now()) {
            self.left.notify_waiters();
        }
        state
    }
}

/// Leaves the line when dropped while armed (a waiter that gave up).
struct LeaveOnDrop<'a> {
    sem: &'a LocalSemaphore,
    scope: &'a SemScope,
    name: &'a str,
    armed: bool,
}

impl Drop for LeaveOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed && self.sem.lock().leave(self.scope, self.name) {
            self.sem.left.notify_waiters();
        }
    }
}

#[async_trait]
impl Semaphore for LocalSemaphore {
    async fn try_acquire(&self, scope: &SemScope, holder: &Holder, limit: usize) -> SemResult<Acquired> {
        check_holder(scope, &holder.name)?;
        check_limit(scope, limit)?;
        let mut state = self.lock();
        let joined = state.join(scope, holder)?;
        let ahead = state.rank(scope, &holder.name).expect("just joined");
        if ahead < limit {
            return Ok(Acquired::Granted);
        }
        if joined {
            state.leave(scope, &holder.name);
        }
        Ok(Acquired::Full { ahead })
    }

    async fn acquire(&self, scope: &SemScope, holder: &Holder, limit: usize) -> SemResult<()> {
        check_holder(scope, &holder.name)?;
        check_limit(scope, limit)?;
        let joined = self.lock().join(scope, holder)?;
        let mut guard = LeaveOnDrop { sem: self, scope, name: &holder.name, armed: joined };
        loop {
            // Registered before the check, so a leave between the check and the wait is not missed.
            let left = self.left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            let next_end = {
                let state = self.lock();
                match state.rank(scope, &holder.name) {
                    None => {
                        guard.armed = false;
                        return Err(SemError::LeaseGone { scope: scope.to_string(), lease: holder.lease });
                    }
                    Some(ahead) if ahead < limit => {
                        guard.armed = false;
                        return Ok(());
                    }
                    Some(_) => state.next_end(),
                }
            };
            match next_end {
                Some(end) => {
                    let _ = tokio::time::timeout_at(end, left).await;
                }
                None => left.await,
            }
        }
    }

    async fn release(&self, scope: &SemScope, holder: &str) -> SemResult<()> {
        check_holder(scope, holder)?;
        self.release_now(scope, holder);
        Ok(())
    }

    async fn line(&self, scope: &SemScope, limit: usize) -> SemResult<Line> {
        Ok(Line::of(self.lock().lines.get(scope).map_or(0, Vec::len), limit))
    }

    async fn end_lease(&self, lease: LeaseId) -> SemResult<()> {
        if self.lock().end(lease) {
            self.left.notify_waiters();
        }
        Ok(())
    }

    async fn grant_lease(&self, ttl: Duration) -> SemResult<LeaseId> {
        let mut state = self.lock();
        state.next_lease += 1;
        let lease = state.next_lease;
        state.leases.insert(lease, Instant::now() + ttl);
        Ok(lease)
    }
}
