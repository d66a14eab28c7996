//! [`NatsBus`]: the [`Bus`] on a real nats-server. Work queues are one JetStream stream
//! ([`WORK_STREAM`], work-queue retention, file storage, 2-minute duplicate window) with one durable
//! pull consumer per node (`agent-{node}`); request/reply and pub/sub are core NATS.
//!
//! async-nats reconnects by itself (forever, backing off up to a second). On top of that,
//! `enqueue` retries a failed publish (safe: the message id deduplicates) and a consumer stream
//! reopens its pull subscription after an error, so work keeps flowing across a server restart.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use async_nats::{Client, ConnectOptions, Event, RequestErrorKind, Subject};
use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::{Acker, Bus, BusError, BusResult, Delivery, Replier, Request, check_size};
use crate::ids::NodeId;
use crate::subjects::{WORK_STREAM, WORK_STREAM_SUBJECTS, WorkSubject};

/// How long `connect` waits for the server before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// JetStream deduplication window for work-item message ids.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Pull request lifetime and idle heartbeat of a consumer stream: a silent server is noticed
/// (and the pull reopened) within a few seconds.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
const PULL_HEARTBEAT: Duration = Duration::from_secs(3);
/// Pause before reopening a consumer stream after an error.
const REOPEN_DELAY: Duration = Duration::from_millis(250);

/// A connection to nats-server, shared by all bus operations of one process.
#[derive(Clone)]
pub struct NatsBus {
    client: Client,
    js: jetstream::Context,
    work: stream::Stream,
}

impl NatsBus {
    /// Connects to `url` and makes sure the work stream exists (create-or-get, so concurrent
    /// coordinators and agents may all call it).
    pub async fn connect(url: &str) -> BusResult<Self> {
        let unavailable = |what: String| BusError::Unavailable(format!("connecting to nats at {url}: {what}"));
        let options = ConnectOptions::new()
            .name("corral")
            .connection_timeout(CONNECT_TIMEOUT)
            .reconnect_delay_callback(|attempt| Duration::from_millis(50 * attempt as u64).min(Duration::from_secs(1)))
            .event_callback(|event| async move { log_event(&event) });
        let client = tokio::time::timeout(CONNECT_TIMEOUT, options.connect(url))
            .await
            .map_err(|_| unavailable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| unavailable(e.to_string()))?;
        let js = jetstream::new(client.clone());
        let config = stream::Config {
            name: WORK_STREAM.to_owned(),
            subjects: vec![WORK_STREAM_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        let work = js
            .get_or_create_stream(config)
            .await
            .map_err(|e| unavailable(format!("creating stream {WORK_STREAM}: {e}")))?;
        Ok(Self { client, js, work })
    }

    async fn publish_work(&self, subject: &str, msg_id: &str, payload: &Bytes) -> Result<(), String> {
        let publish = PublishMessage::build().payload(payload.clone()).message_id(msg_id);
        let ack = self.js.send_publish(subject.to_owned(), publish).await.map_err(|e| e.to_string())?;
        ack.await.map(|_| ()).map_err(|e| e.to_string())
    }
}

fn log_event(event: &Event) {
    match event {
        Event::Connected => tracing::info!("nats connected"),
        Event::Disconnected => tracing::warn!("nats disconnected, reconnecting"),
        other => tracing::warn!(event = %other, "nats event"),
    }
}

struct NatsAcker(jetstream::message::Acker);

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(self: Box<Self>) -> BusResult<()> {
        // Double ack: the server confirms, so an acked item is known to be gone.
        self.0.double_ack().await.map_err(|e| BusError::Unavailable(format!("acking work item: {e}")))
    }
}

struct NatsReplier {
    client: Client,
    reply: Option<Subject>,
}

#[async_trait]
impl Replier for NatsReplier {
    async fn reply(self: Box<Self>, payload: Bytes) -> BusResult<()> {
        check_size(&payload)?;
        let Some(reply) = self.reply else {
            // Published rather than requested: nobody waits for an answer.
            return Ok(());
        };
        self.client.publish(reply, payload).await.map_err(|e| BusError::Unavailable(format!("sending reply: {e}")))
    }
}

/// State of one consumer stream: the durable consumer's configuration and the open pull, if any.
struct Consuming {
    work: stream::Stream,
    config: consumer::pull::Config,
    messages: Option<consumer::pull::Stream>,
}

impl Consuming {
    async fn open(&self) -> Result<consumer::pull::Stream, String> {
        // Create-or-update: idempotent for an identical config, and applies a changed ack wait.
        let consumer = self.work.create_consumer(self.config.clone()).await.map_err(|e| e.to_string())?;
        consumer.stream().expires(PULL_EXPIRES).heartbeat(PULL_HEARTBEAT).messages().await.map_err(|e| e.to_string())
    }

    async fn next(mut self) -> Option<(Delivery, Self)> {
        loop {
            let messages = match self.messages.as_mut() {
                Some(m) => m,
                None => match self.open().await {
                    Ok(m) => self.messages.insert(m),
                    Err(error) => {
                        tracing::warn!(%error, consumer = ?self.config.durable_name, "opening work consumer");
                        tokio::time::sleep(REOPEN_DELAY).await;
                        continue;
                    }
                },
            };
            match messages.next().await {
                Some(Ok(message)) => {
                    let delivery_count = message.info().ok().and_then(|i| u64::try_from(i.delivered).ok()).unwrap_or(1);
                    let (message, acker) = message.split();
                    let acker = Box::new(NatsAcker(acker));
                    return Some((Delivery { payload: message.payload, delivery_count, acker }, self));
                }
                Some(Err(error)) => {
                    // Unacked deliveries of the old pull come back after the ack wait.
                    tracing::warn!(%error, consumer = ?self.config.durable_name, "work consumer failed, reopening");
                    self.messages = None;
                    tokio::time::sleep(REOPEN_DELAY).await;
                }
                None => self.messages = None,
            }
        }
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn enqueue(&self, node: &NodeId, msg_id: &str, payload: Bytes) -> BusResult<()> {
        check_size(&payload)?;
        let subject = WorkSubject(node).to_string();
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(1))
            .with_max_times(5);
        (|| self.publish_work(&subject, msg_id, &payload))
            .retry(backoff)
            .notify(|error, after| tracing::warn!(%error, ?after, %subject, "enqueue failed, retrying"))
            .await
            .map_err(|e| BusError::Unavailable(format!("enqueueing on {subject}: {e}")))
    }

    async fn consume(&self, node: &NodeId, ack_wait: Duration) -> BusResult<BoxStream<'static, Delivery>> {
        let config = consumer::pull::Config {
            durable_name: Some(format!("agent-{node}")),
            filter_subject: WorkSubject(node).to_string(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        };
        let mut state = Consuming { work: self.work.clone(), config, messages: None };
        // Open once here so a broken server is reported to the caller instead of retried silently.
        let messages =
            state.open().await.map_err(|e| BusError::Unavailable(format!("consuming work of {node}: {e}")))?;
        state.messages = Some(messages);
        Ok(Box::pin(futures::stream::unfold(state, Consuming::next)))
    }

    async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> BusResult<Bytes> {
        check_size(&payload)?;
        let request = async_nats::Request::new().payload(payload).timeout(Some(timeout));
        match self.client.send_request(subject.to_owned(), request).await {
            Ok(message) => Ok(message.payload),
            Err(e) => Err(match e.kind() {
                RequestErrorKind::TimedOut => BusError::Timeout { subject: subject.to_owned(), timeout },
                RequestErrorKind::NoResponders => BusError::NoResponders { subject: subject.to_owned() },
                _ => BusError::Unavailable(format!("request on {subject}: {e}")),
            }),
        }
    }

    async fn serve(&self, subject: &str) -> BusResult<BoxStream<'static, Request>> {
        let subscriber = self.client.subscribe(subject.to_owned()).await.map_err(|e| sub_error(subject, e))?;
        self.sync(subject).await?;
        let client = self.client.clone();
        let requests = subscriber.map(move |message| Request {
            payload: message.payload,
            replier: Box::new(NatsReplier { client: client.clone(), reply: message.reply }),
        });
        Ok(Box::pin(requests))
    }

    async fn publish(&self, subject: &str, payload: Bytes) -> BusResult<()> {
        check_size(&payload)?;
        self.client
            .publish(subject.to_owned(), payload)
            .await
            .map_err(|e| BusError::Unavailable(format!("publishing on {subject}: {e}")))
    }

    async fn subscribe(&self, subject: &str) -> BusResult<BoxStream<'static, Bytes>> {
        let subscriber = self.client.subscribe(subject.to_owned()).await.map_err(|e| sub_error(subject, e))?;
        // Registered on the server before we return, so later publishes on any connection arrive.
        self.sync(subject).await?;
        Ok(Box::pin(subscriber.map(|message| message.payload)))
    }

    async fn subscribe_before_request(&self, subject: &str) -> BusResult<BoxStream<'static, Bytes>> {
        // The SUB is queued on this connection ahead of the request that follows it; the server
        // handles a connection's commands in order, so the interest exists before the request is
        // even delivered to the responder.
        let subscriber = self.client.subscribe(subject.to_owned()).await.map_err(|e| sub_error(subject, e))?;
        Ok(Box::pin(subscriber.map(|message| message.payload)))
    }
}

impl NatsBus {
    /// Waits until the server has processed everything this connection sent so far. `flush` only
    /// writes the buffer to the socket; a request to a subject nobody serves is answered (with "no
    /// responders") only after the server handled the earlier commands of this connection, in order.
    async fn sync(&self, subject: &str) -> BusResult<()> {
        let probe = format!("_CORRAL.sync.{:016x}", rand::random::<u64>());
        let request = async_nats::Request::new().payload(Bytes::new()).timeout(Some(SYNC_TIMEOUT));
        match self.client.send_request(probe, request).await {
            Err(e) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
            Ok(_) => Ok(()),
            Err(e) => Err(sub_error(subject, e)),
        }
    }
}

/// How long a subscription may take to be confirmed by the server.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

fn sub_error(subject: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("subscribing to {subject}: {e}"))
}
