//! The warm pool: started, never-used sandboxes of the default shape, kept ready for creates
//! without internet access, and the background task (one spawn at a time) that refills it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_core::task::OwnedTask;
use tokio::sync::Notify;

use super::BwrapConfig;
use super::sandbox::Warm;
use crate::runtime::cgroup::{Cgroups, Limits};

/// Started sandboxes waiting to be bound to a spec, shared with the refill task.
pub(super) struct Pool {
    size: usize,
    config: BwrapConfig,
    owner: Option<(u32, u32)>,
    cgroups: Cgroups,
    state: Mutex<PoolState>,
    /// Wakes the refill task after a take.
    wake: Notify,
}

#[derive(Default)]
pub(super) struct PoolState {
    pub(super) ready: VecDeque<Warm>,
    /// Set at shutdown/drop: nothing is added any more.
    closed: bool,
    pub(super) next_slot: u64,
}

impl Pool {
    /// Starts keeping `size` sandboxes ready; the returned task refills the pool until dropped.
    pub(super) fn start(
        size: usize,
        config: BwrapConfig,
        owner: Option<(u32, u32)>,
        cgroups: Cgroups,
    ) -> (Arc<Self>, OwnedTask) {
        let pool = Arc::new(Pool { size, config, owner, cgroups, state: Mutex::default(), wake: Notify::new() });
        let task = OwnedTask::spawn("bwrap.warm_pool", pool.clone().refill());
        (pool, task)
    }

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a live pooled sandbox, if any, and wakes the refill.
    pub(super) fn take(&self) -> Option<Warm> {
        let mut st = self.state();
        let mut taken = None;
        while let Some(mut w) = st.ready.pop_front() {
            if w.is_alive() {
                taken = Some(w);
                break;
            }
            tracing::warn!("a pooled sandbox died while waiting; discarding it");
            // Dropping tears it down; it is dead already, so this is quick.
            drop(w);
        }
        drop(st);
        self.wake.notify_one();
        taken
    }

    /// Stops adding sandboxes and hands back those waiting (to be torn down by the caller).
    pub(super) fn close(&self) -> Vec<Warm> {
        let mut st = self.state();
        st.closed = true;
        st.ready.drain(..).collect()
    }

    /// Keeps `size` sandboxes ready, starting one at a time; backs off after failures.
    async fn refill(self: Arc<Self>) -> Result<(), std::convert::Infallible> {
        let mut failures = 0u32;
        loop {
            let name = {
                let mut st = self.state();
                if st.closed {
                    return Ok(());
                }
                (st.ready.len() < self.size).then(|| {
                    st.next_slot += 1;
                    format!("{POOL_PREFIX}{}", st.next_slot)
                })
            };
            let Some(name) = name else {
                self.wake.notified().await;
                continue;
            };
            let limits = Limits::default();
            let quota = match self.config.disk.quota(0, 0) {
                Ok(q) => q,
                Err(e) => {
                    tracing::warn!(error = %e, "warm pool: the default disk is refused; no pool");
                    return Ok(());
                }
            };
            match Warm::start(&self.config, self.owner, &self.cgroups, &name, &limits, &quota, Default::default()).await
            {
                Ok(warm) => {
                    failures = 0;
                    let mut st = self.state();
                    if st.closed {
                        drop(st);
                        drop(warm);
                        return Ok(());
                    }
                    st.ready.push_back(warm);
                }
                Err(why) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(slot = %name, %why, "warm pool: a sandbox failed to start");
                    let backoff = Duration::from_millis(100u64 << failures.min(8));
                    tokio::time::sleep(backoff.min(Duration::from_secs(30))).await;
                }
            }
        }
    }
}

/// Directory and cgroup names of pool slots (sandbox ids start with `sb-`, so never collide).
pub(super) const POOL_PREFIX: &str = "pool-";
