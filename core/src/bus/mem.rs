//! [`MemBus`]: the embedded [`Bus`] used by `corral dev`, where coordinator and agent share one
//! process. Subjects match exactly (no wildcards). Everything lives behind one mutex held only for
//! map updates (never across an await); waiting uses tokio channels and [`Notify`], so a round trip
//! costs a few microseconds and no background task is needed: ack-wait expiry is checked by the
//! consumer stream itself, which sleeps until the earliest in-flight deadline.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::{Acker, Bus, BusError, BusResult, Delivery, Replier, Request, check_size};
use crate::ids::NodeId;

/// How long a work item's `msg_id` is remembered for deduplication.
const DEDUP_WINDOW: Duration = Duration::from_secs(120);

/// The in-process bus. Clones are handles to the same bus (like two connections to one server);
/// all state is dropped with the last handle.
#[derive(Clone, Default)]
pub struct MemBus {
    inner: Arc<Inner>,
}

impl MemBus {
    pub fn new() -> Self {
        Self::default()
    }
}

#[derive(Default)]
struct Inner {
    next_id: AtomicU64,
    state: Mutex<State>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock; if one ever did, the maps are still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

#[derive(Default)]
struct State {
    subscribers: HashMap<String, Vec<(u64, mpsc::UnboundedSender<Bytes>)>>,
    servers: HashMap<String, Servers>,
    queues: HashMap<String, Queue>,
}

#[derive(Default)]
struct Servers {
    next: usize,
    list: Vec<(u64, mpsc::UnboundedSender<Request>)>,
}

/// One node's work queue. Items are keyed by enqueue sequence so redelivered items keep FIFO order.
#[derive(Default)]
struct Queue {
    next_seq: u64,
    ready: BTreeMap<u64, Item>,
    in_flight: HashMap<u64, InFlight>,
    dedup: HashMap<String, Instant>,
    dedup_order: VecDeque<(Instant, String)>,
    notify: Arc<Notify>,
}

struct Item {
    payload: Bytes,
    /// Deliveries so far.
    delivered: u64,
}

struct InFlight {
    item: Item,
    deadline: Instant,
    consumer: u64,
}

impl Queue {
    /// Records `msg_id`; false if it was seen within the deduplication window.
    fn remember(&mut self, msg_id: &str, now: Instant) -> bool {
        while let Some((at, _)) = self.dedup_order.front() {
            if now.duration_since(*at) < DEDUP_WINDOW {
                break;
            }
            if let Some((at, id)) = self.dedup_order.pop_front()
                && self.dedup.get(&id) == Some(&at)
            {
                self.dedup.remove(&id);
            }
        }
        if self.dedup.contains_key(msg_id) {
            return false;
        }
        self.dedup.insert(msg_id.to_owned(), now);
        self.dedup_order.push_back((now, msg_id.to_owned()));
        true
    }

    /// Moves in-flight items matching `expired` back to the ready set.
    fn requeue(&mut self, expired: impl Fn(&InFlight) -> bool) -> bool {
        let seqs: Vec<u64> = self.in_flight.iter().filter(|(_, f)| expired(f)).map(|(s, _)| *s).collect();
        for seq in &seqs {
            if let Some(f) = self.in_flight.remove(seq) {
                self.ready.insert(*seq, f.item);
            }
        }
        !seqs.is_empty()
    }

    /// Takes the oldest ready item for `consumer`, or returns the earliest in-flight deadline.
    fn take(&mut self, consumer: u64, ack_wait: Duration, now: Instant) -> Result<(u64, Bytes, u64), Option<Instant>> {
        self.requeue(|f| f.deadline <= now);
        let Some((seq, mut item)) = self.ready.pop_first() else {
            return Err(self.in_flight.values().map(|f| f.deadline).min());
        };
        item.delivered += 1;
        let payload = item.payload.clone();
        let delivery_count = item.delivered;
        self.in_flight.insert(seq, InFlight { item, deadline: now + ack_wait, consumer });
        Ok((seq, payload, delivery_count))
    }
}

/// A receiver stream that runs `guard`'s cleanup when dropped.
struct Guarded<T, G> {
    rx: mpsc::UnboundedReceiver<T>,
    _guard: G,
}

impl<T, G: Unpin> Stream for Guarded<T, G> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.rx.poll_recv(cx)
    }
}

/// Removes a subscriber or server registration when its stream is dropped.
struct Unregister {
    inner: Arc<Inner>,
    subject: String,
    id: u64,
    server: bool,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        if self.server {
            if let Some(s) = state.servers.get_mut(&self.subject) {
                s.list.retain(|(id, _)| *id != self.id);
                if s.list.is_empty() {
                    state.servers.remove(&self.subject);
                }
            }
        } else if let Some(subs) = state.subscribers.get_mut(&self.subject) {
            subs.retain(|(id, _)| *id != self.id);
            if subs.is_empty() {
                state.subscribers.remove(&self.subject);
            }
        }
    }
}

/// Gives a dropped consumer's unacked items back to the queue.
struct ConsumerGuard {
    inner: Arc<Inner>,
    node: String,
    id: u64,
}

impl Drop for ConsumerGuard {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        if let Some(q) = state.queues.get_mut(&self.node)
            && q.requeue(|f| f.consumer == self.id)
        {
            q.notify.notify_waiters();
        }
    }
}

struct MemAcker {
    inner: Arc<Inner>,
    node: String,
    seq: u64,
}

#[async_trait]
impl Acker for MemAcker {
    async fn ack(self: Box<Self>) -> BusResult<()> {
        let mut state = self.inner.lock();
        if let Some(q) = state.queues.get_mut(&self.node)
            && q.in_flight.remove(&self.seq).is_none()
        {
            // Expired and waiting for redelivery: the work was done, so it is gone all the same.
            q.ready.remove(&self.seq);
        }
        Ok(())
    }
}

struct MemReplier(oneshot::Sender<Bytes>);

#[async_trait]
impl Replier for MemReplier {
    async fn reply(self: Box<Self>, payload: Bytes) -> BusResult<()> {
        check_size(&payload)?;
        // A requester that gave up is not an error, as with NATS.
        let _ = self.0.send(payload);
        Ok(())
    }
}

struct ConsumerState {
    inner: Arc<Inner>,
    node: String,
    id: u64,
    ack_wait: Duration,
    notify: Arc<Notify>,
    _guard: ConsumerGuard,
}

impl ConsumerState {
    async fn next(self) -> Option<(Delivery, Self)> {
        loop {
            let notify = self.notify.clone();
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let taken = {
                let mut state = self.inner.lock();
                let queue = state.queues.entry(self.node.clone()).or_default();
                queue.take(self.id, self.ack_wait, Instant::now())
            };
            match taken {
                Ok((seq, payload, delivery_count)) => {
                    let acker = Box::new(MemAcker { inner: self.inner.clone(), node: self.node.clone(), seq });
                    return Some((Delivery { payload, delivery_count, acker }, self));
                }
                Err(Some(deadline)) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(deadline) => {}
                    }
                }
                Err(None) => notified.await,
            }
        }
    }
}

#[async_trait]
impl Bus for MemBus {
    async fn enqueue(&self, node: &NodeId, msg_id: &str, payload: Bytes) -> BusResult<()> {
        check_size(&payload)?;
        let mut state = self.inner.lock();
        let queue = state.queues.entry(node.to_string()).or_default();
        if queue.remember(msg_id, Instant::now()) {
            let seq = queue.next_seq;
            queue.next_seq += 1;
            queue.ready.insert(seq, Item { payload, delivered: 0 });
            queue.notify.notify_waiters();
        }
        Ok(())
    }

    async fn consume(&self, node: &NodeId, ack_wait: Duration) -> BusResult<BoxStream<'static, Delivery>> {
        let node = node.to_string();
        let notify = self.inner.lock().queues.entry(node.clone()).or_default().notify.clone();
        let id = self.inner.id();
        let guard = ConsumerGuard { inner: self.inner.clone(), node: node.clone(), id };
        let state = ConsumerState { inner: self.inner.clone(), node, id, ack_wait, notify, _guard: guard };
        Ok(Box::pin(futures::stream::unfold(state, ConsumerState::next)))
    }

    async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> BusResult<Bytes> {
        check_size(&payload)?;
        let (tx, rx) = oneshot::channel();
        let mut request = Request { payload, replier: Box::new(MemReplier(tx)) };
        {
            let mut state = self.inner.lock();
            let no_responders = || BusError::NoResponders { subject: subject.to_owned() };
            let servers = state.servers.get_mut(subject).ok_or_else(no_responders)?;
            loop {
                if servers.list.is_empty() {
                    return Err(no_responders());
                }
                let i = servers.next % servers.list.len();
                servers.next = servers.next.wrapping_add(1);
                match servers.list[i].1.send(request) {
                    Ok(()) => break,
                    Err(mpsc::error::SendError(r)) => {
                        request = r;
                        servers.list.remove(i);
                    }
                }
            }
        }
        // A server that drops the request without replying looks like a silent one: wait it out.
        let reply = async {
            match rx.await {
                Ok(payload) => payload,
                Err(_) => futures::future::pending().await,
            }
        };
        tokio::time::timeout(timeout, reply)
            .await
            .map_err(|_| BusError::Timeout { subject: subject.to_owned(), timeout })
    }

    async fn serve(&self, subject: &str) -> BusResult<BoxStream<'static, Request>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.inner.id();
        self.inner.lock().servers.entry(subject.to_owned()).or_default().list.push((id, tx));
        let guard = Unregister { inner: self.inner.clone(), subject: subject.to_owned(), id, server: true };
        Ok(Box::pin(Guarded { rx, _guard: guard }))
    }

    async fn publish(&self, subject: &str, payload: Bytes) -> BusResult<()> {
        check_size(&payload)?;
        let mut state = self.inner.lock();
        if let Some(subs) = state.subscribers.get_mut(subject) {
            subs.retain(|(_, tx)| tx.send(payload.clone()).is_ok());
        }
        Ok(())
    }

    async fn subscribe(&self, subject: &str) -> BusResult<BoxStream<'static, Bytes>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.inner.id();
        self.inner.lock().subscribers.entry(subject.to_owned()).or_default().push((id, tx));
        let guard = Unregister { inner: self.inner.clone(), subject: subject.to_owned(), id, server: false };
        Ok(Box::pin(Guarded { rx, _guard: guard }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// Answers one request on `server` with `name`.
    async fn answer(server: &mut BoxStream<'static, Request>, name: &'static str) -> BusResult<()> {
        match server.next().await {
            Some(request) => request.reply(Bytes::from(name)).await,
            None => Err(BusError::Unavailable("server stream ended".into())),
        }
    }

    #[tokio::test]
    async fn requests_rotate_between_servers() -> BusResult<()> {
        let bus = MemBus::new();
        let mut one = bus.serve("s").await?;
        let mut two = bus.serve("s").await?;
        let ask = || bus.request("s", Bytes::new(), Duration::from_secs(1));
        for expected in ["one", "two", "one"] {
            let server = if expected == "one" { &mut one } else { &mut two };
            let (reply, served) = tokio::join!(ask(), answer(server, expected));
            served?;
            assert_eq!(reply?, expected);
        }
        Ok(())
    }

    #[tokio::test]
    async fn dropped_streams_unregister() -> BusResult<()> {
        let bus = MemBus::new();
        let sub = bus.subscribe("out").await?;
        let server = bus.serve("rpc").await?;
        assert_eq!(bus.inner.lock().subscribers.len(), 1);
        drop((sub, server));
        let state = bus.inner.lock();
        assert!(state.subscribers.is_empty() && state.servers.is_empty());
        Ok(())
    }

    #[test]
    fn dedup_window_expires() {
        let mut queue = Queue::default();
        let start = Instant::now();
        assert!(queue.remember("a", start));
        assert!(!queue.remember("a", start + DEDUP_WINDOW - Duration::from_secs(1)));
        assert!(queue.remember("a", start + DEDUP_WINDOW));
        assert_eq!(queue.dedup.len(), 1);
    }
}
