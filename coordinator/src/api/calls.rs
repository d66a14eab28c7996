//! What the calls that act inside a running sandbox share (Exec, RunCode, background processes,
//! Sessions, Files): finding the sandbox's node, the bus to its agent, the nodes' offers, and the
//! request limits.

use std::sync::Arc;

use corral_core::ids::{NodeId, SandboxId, TenantId};

use crate::cluster::ClusterView;
use crate::config::CoordinatorConfig;
use crate::dispatch::Dispatcher;
use crate::error::ApiResult;
use crate::sandboxes::Sandboxes;

#[derive(Clone)]
pub struct SandboxCalls {
    pub sandboxes: Arc<Sandboxes>,
    pub dispatch: Arc<Dispatcher>,
    /// The registered nodes (RunCode reads the languages they offer).
    pub view: ClusterView,
    pub config: Arc<CoordinatorConfig>,
}

impl SandboxCalls {
    /// The node of a RUNNING sandbox of `tenant` (see [`Sandboxes::locate`]).
    pub async fn locate(&self, tenant: &TenantId, id: &SandboxId) -> ApiResult<NodeId> {
        self.sandboxes.locate(tenant, id).await
    }
}
