//! The semaphore on the state store: a place in line is the key `sem/{scope}/{holder}` on the
//! holder's store lease, ranked by its create revision (the store's order of arrival).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use super::{Acquired, Holder, Line, MAX_LINE, SemError, SemResult, Semaphore, check_holder, check_limit};
use crate::keys::{SemEntryKey, SemLinePrefix, SemScope};
use crate::store::{EventKind, KeyValue, LeaseId, StateStore, Txn};

/// Keys read per range request while reading a line.
const PAGE: usize = 1000;

/// A [`Semaphore`] on a [`StateStore`] (etcd, or the embedded store).
#[derive(Clone)]
pub struct StoreSemaphore {
    store: Arc<dyn StateStore>,
}

impl StoreSemaphore {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self { store }
    }

    /// Puts the holder's place at the end of the line unless it has one; whether it was new.
    async fn join(&self, scope: &SemScope, holder: &Holder) -> SemResult<bool> {
        let key = SemEntryKey { scope, holder: &holder.name };
        let txn = Txn::new().when(&key, 0).put_with_lease(&key, holder.name.as_bytes().to_vec(), holder.lease);
        Ok(self.store.txn(txn).await?.succeeded)
    }

    /// The whole line of `scope` and the revision it was (last) read at. Read in pages, so not one
    /// snapshot; it can only over-count what is ahead of a holder (places ahead of one never
    /// join later, they only leave), never under-count.
    async fn read_line(&self, scope: &SemScope) -> SemResult<(Vec<KeyValue>, i64)> {
        let prefix = SemLinePrefix(scope).to_string();
        let (mut kvs, mut start): (Vec<KeyValue>, Option<String>) = (Vec::new(), None);
        loop {
            let page = self.store.range(&prefix, start.as_deref(), PAGE).await?;
            start = page.kvs.last().map(|kv| kv.key.clone());
            kvs.extend(page.kvs);
            if !page.more || start.is_none() {
                return Ok((kvs, page.revision));
            }
        }
    }

    /// How many places are ahead of `name`'s (`None`: it has none), the line's length and the
    /// revision read at.
    async fn rank(&self, scope: &SemScope, name: &str) -> SemResult<(Option<usize>, usize, i64)> {
        let key = SemEntryKey { scope, holder: name }.to_string();
        let (line, revision) = self.read_line(scope).await?;
        let mine = line.iter().find(|kv| kv.key == key).map(|kv| kv.create_revision);
        let ahead = mine.map(|c| line.iter().filter(|kv| kv.create_revision < c).count());
        Ok((ahead, line.len(), revision))
    }

    async fn leave(&self, scope: &SemScope, name: &str) -> SemResult<()> {
        self.store.txn(Txn::new().delete(SemEntryKey { scope, holder: name })).await?;
        Ok(())
    }

    /// Waits until a place leaves the line of `scope` after `revision` (or the watch ends).
    async fn wait_for_a_leave(&self, scope: &SemScope, revision: i64) -> SemResult<()> {
        let mut events = self.store.watch(&SemLinePrefix(scope).to_string(), revision + 1).await?;
        while let Some(event) = events.next().await {
            if event?.kind == EventKind::Delete {
                return Ok(());
            }
        }
        // The watch ended (the store went away a moment): read the line again, not too eagerly.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(())
    }
}

/// Leaves the line when dropped while armed: a waiter that gave up (cancelled, failed) keeps no
/// place that would hold up those behind it.
struct LeaveOnDrop {
    sem: StoreSemaphore,
    scope: SemScope,
    name: String,
    armed: bool,
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (sem, scope, name) = (self.sem.clone(), self.scope.clone(), std::mem::take(&mut self.name));
        crate::task::spawn_detached("semaphore.leave", async move {
            if let Err(e) = sem.leave(&scope, &name).await {
                tracing::warn!(%scope, holder = %name, error = %e, "a waiter that gave up could not leave the line; its lease will");
            }
        });
    }
}

#[async_trait]
impl Semaphore for StoreSemaphore {
    async fn try_acquire(&self, scope: &SemScope, holder: &Holder, limit: usize) -> SemResult<Acquired> {
        check_holder(scope, &holder.name)?;
        check_limit(scope, limit)?;
        let joined = self.join(scope, holder).await?;
        let (ahead, _, _) = self.rank(scope, &holder.name).await?;
        match ahead {
            None => Err(SemError::LeaseGone { scope: scope.to_string(), lease: holder.lease }),
            Some(ahead) if ahead < limit => Ok(Acquired::Granted),
            Some(ahead) => {
                // A place that was already there belongs to a waiting `acquire`: it stays.
                if joined {
                    self.leave(scope, &holder.name).await?;
                }
                Ok(Acquired::Full { ahead })
            }
        }
    }

    async fn acquire(&self, scope: &SemScope, holder: &Holder, limit: usize) -> SemResult<()> {
        check_holder(scope, &holder.name)?;
        check_limit(scope, limit)?;
        let joined = self.join(scope, holder).await?;
        let mut guard =
            LeaveOnDrop { sem: self.clone(), scope: scope.clone(), name: holder.name.clone(), armed: joined };
        loop {
            let (ahead, len, revision) = self.rank(scope, &holder.name).await?;
            let Some(ahead) = ahead else {
                guard.armed = false;
                return Err(SemError::LeaseGone { scope: scope.to_string(), lease: holder.lease });
            };
            if ahead < limit {
                guard.armed = false;
                return Ok(());
            }
            if joined && len > MAX_LINE {
                return Err(SemError::LineFull { scope: scope.to_string() });
            }
            self.wait_for_a_leave(scope, revision).await?;
        }
    }

    async fn release(&self, scope: &SemScope, holder: &str) -> SemResult<()> {
        check_holder(scope, holder)?;
        self.leave(scope, holder).await
    }

    async fn line(&self, scope: &SemScope, limit: usize) -> SemResult<Line> {
        let (line, _) = self.read_line(scope).await?;
        Ok(Line::of(line.len(), limit))
    }

    async fn end_lease(&self, lease: LeaseId) -> SemResult<()> {
        Ok(self.store.revoke_lease(lease).await?)
    }

    async fn grant_lease(&self, ttl: Duration) -> SemResult<LeaseId> {
        Ok(self.store.grant_lease(ttl).await?)
    }
}

/// Permits written inside a caller's own transaction, for a single writer (the leading
/// coordinator, fenced by its leader key) that counts the line itself and writes a place only
/// where there is room: such places are all among
/// the first `limit`, so they hold permits, and the permit lands or not with the rest of the
/// transaction (a claim and its permits, a result and their release).
impl StoreSemaphore {
    /// Adds `holder`'s place in `scope`, on `lease`, to `txn`.
    pub fn grant_in(txn: Txn, scope: &SemScope, holder: &str, lease: LeaseId) -> Txn {
        txn.put_with_lease(SemEntryKey { scope, holder }, holder.as_bytes().to_vec(), lease)
    }

    /// Adds the removal of `holder`'s place in `scope` to `txn` (nothing if it has none).
    pub fn release_in(txn: Txn, scope: &SemScope, holder: &str) -> Txn {
        txn.delete(SemEntryKey { scope, holder })
    }
}
