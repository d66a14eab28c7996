//! The `Bus` trait: how the coordinator and agents talk. Three patterns, as in the design:
//!
//! - a durable **work queue per node** (NATS JetStream, stream `CORRAL_WORK`) for lifecycle operations,
//!   with message-id deduplication and redelivery of unacknowledged work;
//! - **request/reply** (core NATS) for interactive operations (exec start, file operations);
//! - **pub/sub** (core NATS) for output streams.
//!
//! [`nats::NatsBus`] uses a real nats-server; [`mem::MemBus`] is the embedded implementation used by
//! `corral dev`. Both pass the same contract suite (`core/tests/bus_contract.rs`). The bus only wakes
//! agents up: the state store decides, so a lost message costs a retry, never a wrong state.

pub mod mem;
pub mod nats;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::ids::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("message bus unavailable: {0}")]
    Unavailable(String),
    /// Nobody is serving the subject (no agent listening).
    #[error("no responder on {subject}")]
    NoResponders { subject: String },
    #[error("request on {subject} timed out after {timeout:?}")]
    Timeout { subject: String, timeout: Duration },
    #[error("message of {size} bytes exceeds the bus limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

pub type BusResult<T> = Result<T, BusError>;

/// Largest payload any bus implementation must carry (NATS' default max_payload is 1 MiB;
/// large transfers are chunked to at most 512 KiB of data per message).
pub const MAX_PAYLOAD: usize = 1024 * 1024;

/// Acknowledges one delivery of a work item.
#[async_trait]
pub trait Acker: Send + 'static {
    async fn ack(self: Box<Self>) -> BusResult<()>;
}

/// One delivery of a work item. Unacknowledged deliveries are redelivered after the ack wait.
pub struct Delivery {
    pub payload: Bytes,
    /// How many times this item has been delivered (1 on first delivery).
    pub delivery_count: u64,
    pub acker: Box<dyn Acker>,
}

impl Delivery {
    pub async fn ack(self) -> BusResult<()> {
        self.acker.ack().await
    }
}

/// Sends the reply to one request.
#[async_trait]
pub trait Replier: Send + 'static {
    async fn reply(self: Box<Self>, payload: Bytes) -> BusResult<()>;
}

/// One request received on a served subject.
pub struct Request {
    pub payload: Bytes,
    pub replier: Box<dyn Replier>,
}

impl Request {
    pub async fn reply(self, payload: Bytes) -> BusResult<()> {
        self.replier.reply(payload).await
    }
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Durably enqueues `payload` on `node`'s work queue. A second enqueue with the same `msg_id`
    /// within the deduplication window (at least 2 minutes) is dropped.
    async fn enqueue(&self, node: &NodeId, msg_id: &str, payload: Bytes) -> BusResult<()>;

    /// Consumes `node`'s work queue. Items are delivered at least once; an item not acked within
    /// the ack wait is delivered again (with a higher `delivery_count`). Only one consumer per node
    /// is expected; items enqueued before the consumer starts are kept and delivered.
    async fn consume(&self, node: &NodeId, ack_wait: Duration) -> BusResult<BoxStream<'static, Delivery>>;

    /// Sends a request and waits for the single reply.
    async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> BusResult<Bytes>;

    /// Receives requests sent to `subject`.
    async fn serve(&self, subject: &str) -> BusResult<BoxStream<'static, Request>>;

    /// Publishes a message to all current subscribers of `subject` (none: dropped).
    /// Messages from one publisher to one subject arrive in order.
    async fn publish(&self, subject: &str, payload: Bytes) -> BusResult<()>;

    /// Subscribes to `subject`. The subscription is active when this returns: anything published
    /// afterwards (on any connection) is received.
    async fn subscribe(&self, subject: &str) -> BusResult<BoxStream<'static, Bytes>>;

    /// Subscribes to `subject` for messages caused by a request this bus sends next: anything
    /// published (on any connection) after its publisher received a message that this bus sent
    /// after this call is received. Unlike [`Bus::subscribe`] this needs no round trip to the
    /// server: the subscription travels ahead of the later request on the same connection (on NATS
    /// this holds for one server and for a cluster of routed servers).
    async fn subscribe_before_request(&self, subject: &str) -> BusResult<BoxStream<'static, Bytes>> {
        self.subscribe(subject).await
    }
}

/// Refuses payloads over [`MAX_PAYLOAD`]; both implementations call it so they behave alike.
pub fn check_size(payload: &Bytes) -> BusResult<()> {
    if payload.len() > MAX_PAYLOAD {
        return Err(BusError::TooLarge { size: payload.len(), limit: MAX_PAYLOAD });
    }
    Ok(())
}
