//! The node's lifecycle work queue: create and destroy sandboxes, report each outcome to the
//! `reply_to` subject, then acknowledge. Deliveries are at least once; both operations are
//! idempotent, and a sandbox destroyed here is never re-created by a late duplicate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_core::bus::{BusError, Delivery};
use corral_core::ids::SandboxId;
use corral_core::protocol::{self, AgentError, AgentErrorKind, Work, WorkReply};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::Agent;

/// How long an item may stay unacknowledged before the queue redelivers it.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// How long a destroyed id is remembered, refusing late creates of it.
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

pub async fn consume(agent: Arc<Agent>) -> Result<(), BusError> {
    let mut deliveries = agent.bus.consume(&agent.node, ACK_WAIT).await?;
    let permits = Arc::new(Semaphore::new(agent.config.max_concurrent_work));
    let tombstones: Arc<Mutex<HashMap<SandboxId, Instant>>> = Arc::default();
    let mut running = tokio::task::JoinSet::new();
    while let Some(delivery) = deliveries.next().await {
        while running.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        let (agent, tombstones) = (agent.clone(), tombstones.clone());
        let span = tracing::info_span!("agent.work");
        running.spawn(tracing::Instrument::instrument(
            async move {
                handle(&agent, &tombstones, delivery).await;
                drop(permit);
            },
            span,
        ));
    }
    Err(BusError::Unavailable("work queue consumer ended".into()))
}

async fn handle(agent: &Arc<Agent>, tombstones: &Mutex<HashMap<SandboxId, Instant>>, delivery: Delivery) {
    let work: Work = match protocol::decode(&delivery.payload) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "dropping malformed work item");
            ack(delivery).await;
            return;
        }
    };
    let (reply_to, reply) = match work {
        Work::Create { spec, reply_to } => {
            let id = spec.id.clone();
            let buried = {
                let mut t = tombstones.lock().unwrap_or_else(|p| p.into_inner());
                t.retain(|_, at| at.elapsed() < TOMBSTONE_TTL);
                t.contains_key(&id)
            };
            let outcome = if buried {
                Err(AgentError::new(AgentErrorKind::FailedPrecondition, format!("sandbox {id} was already destroyed")))
            } else {
                create(agent, spec).await
            };
            let reply = match outcome {
                Ok(()) => WorkReply::Created { sandbox: id, node: agent.node.clone() },
                Err(error) => WorkReply::CreateFailed { sandbox: id, node: agent.node.clone(), error },
            };
            (reply_to, reply)
        }
        Work::Destroy { sandbox, reply_to } => {
            tombstones.lock().unwrap_or_else(|p| p.into_inner()).insert(sandbox.clone(), Instant::now());
            agent.destroy(&sandbox).await;
            (reply_to, WorkReply::Destroyed { sandbox, node: agent.node.clone() })
        }
        Work::RunJobs { jobs } => {
            // Each attempt runs in its own task and reports on its own; the item is done once
            // they are registered.
            crate::jobs::start(agent, jobs);
            ack(delivery).await;
            return;
        }
    };
    if let Err(e) = agent.bus.publish(&reply_to, protocol::encode(&reply)).await {
        tracing::warn!(error = %e, "could not report a work outcome; the coordinator will reconcile");
    }
    ack(delivery).await;
}

async fn create(agent: &Agent, spec: corral_core::model::SandboxSpec) -> Result<(), AgentError> {
    let Some(runtime) = agent.runtime(spec.runtime).cloned() else {
        let offered: Vec<String> = agent.runtimes.iter().map(|r| r.kind().to_string()).collect();
        let why = format!("node {} runs {}, not {}", agent.node, offered.join(", "), spec.runtime);
        return Err(AgentError::new(AgentErrorKind::FailedPrecondition, why));
    };
    let id = spec.id.clone();
    agent.slots.admit(id.as_str()).await.map_err(|why| AgentError::new(AgentErrorKind::ResourceExhausted, why))?;
    agent.specs().insert(id.clone(), spec.clone());
    if let Err(e) = runtime.create(&spec).await {
        tracing::warn!(sandbox_id = %id, error = %e, "create failed");
        agent.destroy(&id).await;
        return Err(e.into());
    }
    tracing::debug!(sandbox_id = %id, "sandbox running");
    Ok(())
}

async fn ack(delivery: Delivery) {
    if let Err(e) = delivery.ack().await {
        tracing::warn!(error = %e, "ack failed; the item will be redelivered and handled idempotently");
    }
}
