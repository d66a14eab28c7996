//! `Core`: the shared state the jobs and batches code takes. The sandbox side does not use it (it
//! has its own component, [`crate::sandboxes::Sandboxes`]); `Core` stays until the jobs code has
//! its own component too.
//!
//! Layering: `Core` only bundles lower modules (config, store, view, dispatch, leadership,
//! deadline leases) and none of them refers back to it.

use std::sync::Arc;
use std::time::Duration;

use corral_core::store::{LeaseId, StateStore};

use crate::cluster::ClusterView;
use crate::config::CoordinatorConfig;
use crate::deadlines::DeadlineLeases;
use crate::dispatch::Dispatcher;
use crate::error::ApiResult;
use crate::leader::Leadership;

/// Shared state of one coordinator, as the jobs code uses it.
pub struct Core {
    pub config: CoordinatorConfig,
    pub store: Arc<dyn StateStore>,
    pub view: ClusterView,
    pub dispatch: Arc<Dispatcher>,
    /// Whether this coordinator runs the reconciler now (see [`crate::leader`]).
    pub leadership: Leadership,
    /// The leases sandbox and batch deadlines sit on (see [`crate::deadlines`]).
    pub deadlines: Arc<DeadlineLeases>,
}

impl Core {
    /// A lease for a deadline `after` from now; 0 for none (see [`DeadlineLeases::lease_after`]).
    pub(crate) async fn deadline_lease_after(&self, after: Duration) -> ApiResult<LeaseId> {
        self.deadlines.lease_after(after).await
    }

    /// See [`DeadlineLeases::forget_lost`].
    pub(crate) fn forget_lost_lease<T>(&self, result: ApiResult<T>) -> ApiResult<T> {
        self.deadlines.forget_lost(result)
    }
}
