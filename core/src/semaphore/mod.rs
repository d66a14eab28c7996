//! Counting semaphores with a fair line: the caps on running work per tenant, per batch and per
//! node.
//!
//! A semaphore of scope `s` and limit `n` is a line of holders, in arrival order. The first `n` in
//! line hold a permit; the others wait. A holder's place is on a *lease* (its life): when the lease
//! ends (revoked, or expired because the process that kept it alive died) the place goes with it,
//! and whoever waited next moves up. So a permit is never leaked by a holder that dies, and the
//! line is first come, first served: a newcomer never overtakes a waiter.
//!
//! Why this keeps the cap: places only ever leave the line or join at its end, so a holder's rank
//! (how many are ahead of it) never grows. Once a holder saw itself among the first `n`, it stays
//! there; at most `n` places can be among the first `n`.
//!
//! Two implementations, one contract suite (`core/tests/semaphore_contract.rs`):
//! - [`StoreSemaphore`]: on the state store (etcd in a cluster, the embedded store in `corral
//!   dev`): a place is the key `sem/{scope}/{holder}` on a store lease, its rank given by the key's
//!   create revision;
//! - [`LocalSemaphore`]: in one process, with leases of its own.
//!
//! A single writer that must take permits atomically with its own records (the leading
//! coordinator claiming jobs) stages them in its transactions instead
//! ([`StoreSemaphore::grant_in`], [`StoreSemaphore::release_in`]), counting the lines it writes
//! itself.

mod local;
mod store;

use std::time::Duration;

use async_trait::async_trait;

pub use local::LocalSemaphore;
pub use store::StoreSemaphore;

use crate::keys::SemScope;
use crate::store::{LeaseId, StoreError};

/// Longest line a semaphore keeps (holders and waiters): past it, joining is refused.
pub const MAX_LINE: usize = 10_000;
/// Longest holder name, in bytes.
pub const MAX_HOLDER_BYTES: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum SemError {
    #[error("semaphore {scope}: its line is full ({MAX_LINE} holders and waiters)")]
    LineFull { scope: String },
    #[error("semaphore {scope}: {why}")]
    Invalid { scope: String, why: String },
    #[error("semaphore {scope}: no lease {lease} (it ended)")]
    LeaseGone { scope: String, lease: LeaseId },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type SemResult<T> = Result<T, SemError>;

/// The outcome of [`Semaphore::try_acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// The holder has a permit (now, or had one already).
    Granted,
    /// All permits are taken or others wait ahead: `ahead` places were before the holder's.
    /// Nothing of the holder stays in line.
    Full { ahead: usize },
}

/// Who asks for a permit and what keeps its place: the permit lasts until it is released or the
/// lease ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub name: String,
    pub lease: LeaseId,
}

impl Holder {
    pub fn new(name: impl Into<String>, lease: LeaseId) -> Self {
        Self { name: name.into(), lease }
    }
}

/// How many hold permits and how many wait in a semaphore's line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Line {
    pub holding: usize,
    pub waiting: usize,
}

impl Line {
    /// A line of `len` places under `limit` permits.
    pub fn of(len: usize, limit: usize) -> Self {
        let holding = len.min(limit);
        Self { holding, waiting: len - holding }
    }
}

#[async_trait]
pub trait Semaphore: Send + Sync + 'static {
    /// Takes a permit of `scope` for `holder` if one of `limit` is free and nobody waits ahead;
    /// otherwise leaves nothing behind. Idempotent: a holder with a permit is granted again.
    async fn try_acquire(&self, scope: &SemScope, holder: &Holder, limit: usize) -> SemResult<Acquired>;

    /// Joins the line and waits for a permit, first come first served (a holder already in line
    /// keeps its place). Cancel-safe: dropping the future before it returns leaves the line.
    async fn acquire(&self, scope: &SemScope, holder: &Holder, limit: usize) -> SemResult<()>;

    /// Gives `holder`'s permit back, or leaves the line (nothing happens if it is in neither).
    async fn release(&self, scope: &SemScope, holder: &str) -> SemResult<()>;

    /// Holders and waiters of `scope` under `limit` permits.
    async fn line(&self, scope: &SemScope, limit: usize) -> SemResult<Line>;

    /// Ends a lease: every permit and place on it goes (what the death of its holder does).
    async fn end_lease(&self, lease: LeaseId) -> SemResult<()>;

    /// A lease that ends by itself `ttl` after its last renewal (here: never renewed).
    async fn grant_lease(&self, ttl: Duration) -> SemResult<LeaseId>;
}

fn check_holder(scope: &SemScope, holder: &str) -> SemResult<()> {
    let bad = |why: &str| Err(SemError::Invalid { scope: scope.to_string(), why: format!("holder {holder:?}: {why}") });
    if holder.is_empty() {
        return bad("empty");
    }
    if holder.len() > MAX_HOLDER_BYTES {
        return bad(&format!("longer than {MAX_HOLDER_BYTES} bytes"));
    }
    if holder.contains('/') || holder.chars().any(char::is_control) {
        return bad("contains '/' or a control character");
    }
    Ok(())
}

fn check_limit(scope: &SemScope, limit: usize) -> SemResult<()> {
    if limit == 0 {
        return Err(SemError::Invalid { scope: scope.to_string(), why: "a limit of 0 grants nothing".into() });
    }
    Ok(())
}
