//! The jobs component: what the jobs code works with, and nothing else. Built once in `lib.rs`
//! next to the sandbox side's [`crate::sandboxes::Sandboxes`], shared as `Arc<Jobs>` by the leader's loops and the
//! `Jobs`/`Batches` API.

use std::sync::Arc;
use std::time::Duration;

use corral_core::store::{LeaseId, StateStore};

use super::JobTable;
use crate::cluster::ClusterView;
use crate::config::CoordinatorConfig;
use crate::deadlines::DeadlineLeases;
use crate::dispatch::Dispatcher;
use crate::error::ApiResult;
use crate::leader::Leadership;

/// The settings the jobs code reads (from `[coordinator]`).
#[derive(Debug, Clone, Copy)]
pub struct JobLimits {
    pub max_running_jobs_per_tenant: usize,
    pub max_queued_jobs_per_tenant: usize,
    pub batch_upload_timeout_seconds: u64,
}

impl JobLimits {
    pub fn of(config: &CoordinatorConfig) -> Self {
        Self {
            max_running_jobs_per_tenant: config.max_running_jobs_per_tenant,
            max_queued_jobs_per_tenant: config.max_queued_jobs_per_tenant,
            batch_upload_timeout_seconds: config.batch_upload_timeout_seconds,
        }
    }
}

pub struct Jobs {
    pub store: Arc<dyn StateStore>,
    /// The job index (fed by the cluster view's watch).
    pub table: JobTable,
    /// Nodes and their sandboxes, for placement.
    pub view: ClusterView,
    pub dispatch: Arc<Dispatcher>,
    /// Whether this coordinator leads (claims, commits and sweeps are the leader's).
    pub leadership: Leadership,
    /// The leases batch deadlines sit on.
    pub deadlines: Arc<DeadlineLeases>,
    pub limits: JobLimits,
}

impl Jobs {
    pub fn new(
        store: Arc<dyn StateStore>,
        table: JobTable,
        view: ClusterView,
        dispatch: Arc<Dispatcher>,
        leadership: Leadership,
        deadlines: Arc<DeadlineLeases>,
        limits: JobLimits,
    ) -> Self {
        Self { store, table, view, dispatch, leadership, deadlines, limits }
    }

    /// A lease for a deadline `after` from now; 0 for none (see [`DeadlineLeases::lease_after`]).
    pub async fn deadline_lease_after(&self, after: Duration) -> ApiResult<LeaseId> {
        self.deadlines.lease_after(after).await
    }

    /// See [`DeadlineLeases::forget_lost`].
    pub(crate) fn forget_lost_lease<T>(&self, result: ApiResult<T>) -> ApiResult<T> {
        self.deadlines.forget_lost(result)
    }
}
