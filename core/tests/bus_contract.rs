//! The `Bus` contract: one suite, run against [`MemBus`] and against [`NatsBus`] on a real
//! nats-server (started per test by `corral-testkit`).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use corral_core::bus::mem::MemBus;
use corral_core::bus::nats::NatsBus;
use corral_core::bus::{Bus, BusError, Delivery, MAX_PAYLOAD};
use corral_core::ids::NodeId;
use corral_testkit::nats::NatsServer;
use futures::stream::{BoxStream, StreamExt};

/// Generous deadline for anything that should arrive (redelivery, reconnects).
const DEADLINE: Duration = Duration::from_secs(20);
const ACK_WAIT: Duration = Duration::from_secs(1);

/// A backend under test: hands out independent handles ("connections") to one bus.
trait Backend {
    async fn bus(&self) -> anyhow::Result<Box<dyn Bus>>;
}

struct Mem(MemBus);

impl Backend for Mem {
    async fn bus(&self) -> anyhow::Result<Box<dyn Bus>> {
        Ok(Box::new(self.0.clone()))
    }
}

struct Nats(NatsServer);

impl Backend for Nats {
    async fn bus(&self) -> anyhow::Result<Box<dyn Bus>> {
        Ok(Box::new(NatsBus::connect(&self.0.url()).await?))
    }
}

fn node(name: &str) -> NodeId {
    NodeId::parse(name).expect("valid node id")
}

async fn next<T>(stream: &mut BoxStream<'static, T>) -> anyhow::Result<T> {
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .context("nothing arrived before the deadline")?
        .context("stream ended")
}

async fn next_work(stream: &mut BoxStream<'static, Delivery>) -> anyhow::Result<(String, u64, Delivery)> {
    let d = next(stream).await?;
    Ok((String::from_utf8(d.payload.to_vec())?, d.delivery_count, d))
}

async fn pubsub_keeps_order_of_1000(b: &impl Backend) -> anyhow::Result<()> {
    let bus = b.bus().await?;
    let mut sub = bus.subscribe("corral.out.s1.1").await?;
    for i in 0u32..1000 {
        bus.publish("corral.out.s1.1", Bytes::copy_from_slice(&i.to_be_bytes())).await?;
    }
    for i in 0u32..1000 {
        ensure!(next(&mut sub).await?.as_ref() == i.to_be_bytes(), "message {i} out of order");
    }
    Ok(())
}

async fn subscription_sees_other_connection(b: &impl Backend) -> anyhow::Result<()> {
    let (subscriber, publisher) = (b.bus().await?, b.bus().await?);
    let mut sub = subscriber.subscribe("corral.events.t1").await?;
    let mut other = subscriber.subscribe("corral.events.t2").await?;
    publisher.publish("corral.events.t1", Bytes::from_static(b"hello")).await?;
    publisher.publish("corral.events.t2", Bytes::from_static(b"other")).await?;
    ensure!(next(&mut sub).await? == "hello");
    ensure!(next(&mut other).await? == "other", "subjects are kept apart");
    Ok(())
}

async fn request_reply_round_trip(b: &impl Backend) -> anyhow::Result<()> {
    let (server_bus, client_bus) = (b.bus().await?, b.bus().await?);
    let mut requests = server_bus.serve("corral.rpc.n1").await?;
    let server = async {
        for _ in 0..3 {
            let request = next(&mut requests).await?;
            let mut answer = request.payload.to_vec();
            answer.reverse();
            request.reply(answer.into()).await?;
        }
        anyhow::Ok(())
    };
    let client = async {
        for word in ["abc", "xyz", "corral"] {
            let reply = client_bus.request("corral.rpc.n1", Bytes::from(word), Duration::from_secs(5)).await?;
            ensure!(reply == word.chars().rev().collect::<String>(), "reply to {word}: {reply:?}");
        }
        anyhow::Ok(())
    };
    let (served, asked) = tokio::join!(server, client);
    match (served, asked) {
        (Ok(()), Ok(())) => Ok(()),
        (s, a) => bail!("server side: {s:?}; client side: {a:?}"),
    }
}

/// What a responder publishes after it received a request is seen by a subscription the requester
/// made (without a round trip) just before sending the request, every time.
async fn subscription_before_request_sees_what_it_causes(b: &impl Backend) -> anyhow::Result<()> {
    let (server_bus, client_bus) = (b.bus().await?, b.bus().await?);
    let mut requests = server_bus.serve("corral.rpc.n2").await?;
    const ROUNDS: u32 = 200;
    let server = async {
        for _ in 0..ROUNDS {
            let request = next(&mut requests).await?;
            let subject = String::from_utf8(request.payload.to_vec())?;
            server_bus.publish(&subject, Bytes::from_static(b"frame")).await?;
            request.reply(Bytes::from_static(b"started")).await?;
        }
        anyhow::Ok(())
    };
    let client = async {
        for i in 0..ROUNDS {
            let subject = format!("corral.out.s2.{i}");
            let mut frames = client_bus.subscribe_before_request(&subject).await?;
            let reply = client_bus.request("corral.rpc.n2", Bytes::from(subject), Duration::from_secs(5)).await?;
            ensure!(reply == "started", "reply {i}: {reply:?}");
            ensure!(next(&mut frames).await? == "frame", "frame of round {i}");
        }
        anyhow::Ok(())
    };
    let (served, asked) = tokio::join!(server, client);
    match (served, asked) {
        (Ok(()), Ok(())) => Ok(()),
        (s, a) => bail!("server side: {s:?}; client side: {a:?}"),
    }
}

async fn request_without_server_is_no_responders(b: &impl Backend) -> anyhow::Result<()> {
    let bus = b.bus().await?;
    match bus.request("corral.rpc.nobody", Bytes::new(), Duration::from_secs(5)).await {
        Err(BusError::NoResponders { subject }) => ensure!(subject == "corral.rpc.nobody"),
        other => bail!("expected NoResponders, got {other:?}"),
    }
    // A server that went away leaves no responder behind.
    drop(bus.serve("corral.rpc.gone").await?);
    let r = bus.request("corral.rpc.gone", Bytes::new(), Duration::from_secs(5)).await;
    ensure!(matches!(r, Err(BusError::NoResponders { .. })), "after the server dropped: {r:?}");
    Ok(())
}

async fn request_to_silent_server_times_out(b: &impl Backend) -> anyhow::Result<()> {
    let bus = b.bus().await?;
    let _silent = bus.serve("corral.rpc.silent").await?;
    let timeout = Duration::from_millis(300);
    let started = tokio::time::Instant::now();
    match bus.request("corral.rpc.silent", Bytes::new(), timeout).await {
        Err(BusError::Timeout { timeout: t, .. }) => ensure!(t == timeout && started.elapsed() >= timeout),
        other => bail!("expected Timeout, got {other:?}"),
    }
    Ok(())
}

async fn oversize_payload_is_too_large(b: &impl Backend) -> anyhow::Result<()> {
    let bus = b.bus().await?;
    let big = Bytes::from(vec![0u8; MAX_PAYLOAD + 1]);
    let n = node("n1");
    let results = [
        bus.publish("corral.out.big", big.clone()).await,
        bus.enqueue(&n, "big", big.clone()).await,
        bus.request("corral.rpc.big", big.clone(), Duration::from_secs(1)).await.map(drop),
    ];
    for r in results {
        ensure!(
            matches!(r, Err(BusError::TooLarge { size, limit }) if size == MAX_PAYLOAD + 1 && limit == MAX_PAYLOAD),
            "{r:?}"
        );
    }
    // A reply is held to the same limit.
    let mut requests = bus.serve("corral.rpc.n1").await?;
    let server = async {
        let request = next(&mut requests).await?;
        let refused = request.reply(big.clone()).await;
        ensure!(matches!(refused, Err(BusError::TooLarge { .. })), "oversize reply: {refused:?}");
        anyhow::Ok(())
    };
    let (served, _) = tokio::join!(server, bus.request("corral.rpc.n1", Bytes::new(), Duration::from_millis(500)));
    served
}

async fn work_enqueued_before_consume_is_fifo(b: &impl Backend) -> anyhow::Result<()> {
    let bus = b.bus().await?;
    let n = node("n1");
    for i in 0..20 {
        bus.enqueue(&n, &format!("job-{i}.1"), Bytes::from(format!("w{i}"))).await?;
    }
    let mut work = bus.consume(&n, ACK_WAIT).await?;
    for i in 0..20 {
        let (payload, count, d) = next_work(&mut work).await?;
        ensure!(payload == format!("w{i}") && count == 1, "item {i}: {payload} (delivery {count})");
        d.ack().await?;
    }
    // Items enqueued while consuming arrive too.
    bus.enqueue(&n, "late.1", Bytes::from("late")).await?;
    ensure!(next_work(&mut work).await?.0 == "late");
    Ok(())
}

async fn duplicate_msg_id_is_delivered_once(b: &impl Backend) -> anyhow::Result<()> {
    let bus = b.bus().await?;
    let n = node("n1");
    bus.enqueue(&n, "job-1.1", Bytes::from("first")).await?;
    bus.enqueue(&n, "job-1.1", Bytes::from("duplicate")).await?;
    bus.enqueue(&n, "job-2.1", Bytes::from("second")).await?;
    let mut work = bus.consume(&n, ACK_WAIT).await?;
    let (first, _, d) = next_work(&mut work).await?;
    d.ack().await?;
    let (second, _, d) = next_work(&mut work).await?;
    d.ack().await?;
    ensure!(first == "first" && second == "second", "got {first}, {second}");
    // Still a duplicate after the original was acked.
    bus.enqueue(&n, "job-1.1", Bytes::from("again")).await?;
    bus.enqueue(&n, "job-3.1", Bytes::from("third")).await?;
    ensure!(next_work(&mut work).await?.0 == "third");
    Ok(())
}

async fn unacked_work_is_redelivered(b: &impl Backend) -> anyhow::Result<()> {
    let bus = b.bus().await?;
    let n = node("n1");
    bus.enqueue(&n, "job-1.1", Bytes::from("w")).await?;
    let mut work = bus.consume(&n, ACK_WAIT).await?;
    let (payload, count, _unacked) = next_work(&mut work).await?;
    ensure!(payload == "w" && count == 1);
    let (payload, count, d) = next_work(&mut work).await?;
    ensure!(payload == "w" && count == 2, "redelivery: {payload} (delivery {count})");
    d.ack().await?;
    Ok(())
}

async fn acked_work_is_not_redelivered(b: &impl Backend) -> anyhow::Result<()> {
    let bus = b.bus().await?;
    let n = node("n1");
    bus.enqueue(&n, "job-1.1", Bytes::from("acked")).await?;
    let mut work = bus.consume(&n, ACK_WAIT).await?;
    next_work(&mut work).await?.2.ack().await?;
    // A negative check has to wait: well past the ack wait, nothing comes back.
    let again = tokio::time::timeout(ACK_WAIT * 2 + Duration::from_millis(500), work.next()).await;
    ensure!(again.is_err(), "an acked item came back");
    drop(work);
    bus.enqueue(&n, "job-2.1", Bytes::from("next")).await?;
    let mut work = bus.consume(&n, ACK_WAIT).await?;
    let (payload, count, _) = next_work(&mut work).await?;
    ensure!(payload == "next" && count == 1, "a new consumer got {payload} (delivery {count})");
    Ok(())
}

async fn dropped_consumer_gives_work_back(b: &impl Backend) -> anyhow::Result<()> {
    let bus = b.bus().await?;
    let n = node("n1");
    bus.enqueue(&n, "job-1.1", Bytes::from("w")).await?;
    let mut work = bus.consume(&n, ACK_WAIT).await?;
    let (_, _, unacked) = next_work(&mut work).await?;
    drop((unacked, work));
    let mut work = b.bus().await?.consume(&n, ACK_WAIT).await?;
    let (payload, count, d) = next_work(&mut work).await?;
    ensure!(payload == "w" && count == 2, "{payload} (delivery {count})");
    d.ack().await?;
    Ok(())
}

async fn node_queues_are_isolated(b: &impl Backend) -> anyhow::Result<()> {
    let bus = b.bus().await?;
    let (a, z) = (node("node-a"), node("node-b"));
    bus.enqueue(&a, "job-1.1", Bytes::from("for-a")).await?;
    bus.enqueue(&z, "job-2.1", Bytes::from("for-b")).await?;
    let mut work_a = bus.consume(&a, ACK_WAIT).await?;
    let mut work_b = bus.consume(&z, ACK_WAIT).await?;
    let (got_b, _, d) = next_work(&mut work_b).await?;
    d.ack().await?;
    let (got_a, _, d) = next_work(&mut work_a).await?;
    d.ack().await?;
    ensure!(got_a == "for-a" && got_b == "for-b", "a got {got_a}, b got {got_b}");
    bus.enqueue(&a, "job-3.1", Bytes::from("a-again")).await?;
    ensure!(next_work(&mut work_a).await?.0 == "a-again");
    let stray = tokio::time::timeout(Duration::from_millis(300), work_b.next()).await;
    ensure!(stray.is_err(), "node-b received node-a's work");
    Ok(())
}

macro_rules! bus_contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            bus_contract!(@tests $make;
                pubsub_keeps_order_of_1000,
                subscription_sees_other_connection,
                request_reply_round_trip,
                subscription_before_request_sees_what_it_causes,
                request_without_server_is_no_responders,
                request_to_silent_server_times_out,
                oversize_payload_is_too_large,
                work_enqueued_before_consume_is_fifo,
                duplicate_msg_id_is_delivered_once,
                unacked_work_is_redelivered,
                acked_work_is_not_redelivered,
                dropped_consumer_gives_work_back,
                node_queues_are_isolated,
            );
        }
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() -> anyhow::Result<()> {
                let backend = $make;
                super::$name(&backend).await
            }
        )*
    };
}

bus_contract!(mem, Mem(MemBus::new()));
bus_contract!(nats, Nats(NatsServer::start()?));

/// Work enqueued before and after a server restart all reaches a consumer that was open across it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_work_survives_server_restart() -> anyhow::Result<()> {
    let mut server = NatsServer::start()?;
    let bus = NatsBus::connect(&server.url()).await?;
    let n = node("n1");
    for i in 1..=3 {
        bus.enqueue(&n, &format!("job-{i}.1"), Bytes::from(format!("w{i}"))).await?;
    }
    let mut work = bus.consume(&n, ACK_WAIT).await?;
    let (first, _, d) = next_work(&mut work).await?;
    d.ack().await?;
    ensure!(first == "w1");

    let old_pid = server.pid();
    tokio::task::block_in_place(|| server.restart())?;
    ensure!(server.pid() != old_pid, "the server was not restarted");
    for i in 4..=6 {
        bus.enqueue(&n, &format!("job-{i}.1"), Bytes::from(format!("w{i}"))).await?;
    }

    let want: BTreeSet<String> = (2..=6).map(|i| format!("w{i}")).collect();
    let mut got = BTreeSet::new();
    while got != want {
        let (payload, _, d) = next_work(&mut work).await.with_context(|| format!("got only {got:?}"))?;
        // An unacked delivery from before the restart may come twice; acks may fail while reconnecting.
        let _ = d.ack().await;
        got.insert(payload);
    }
    Ok(())
}

/// With no server listening, `connect` fails quickly and names the url.
#[tokio::test]
async fn nats_connect_to_nothing_is_unavailable() -> anyhow::Result<()> {
    let url = format!("nats://127.0.0.1:{}", corral_testkit::free_port());
    let started = std::time::Instant::now();
    match NatsBus::connect(&url).await {
        Err(BusError::Unavailable(message)) => ensure!(message.contains(&url), "{message}"),
        Err(other) => bail!("expected Unavailable, got {other}"),
        Ok(_) => bail!("connected to nothing"),
    }
    ensure!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    Ok(())
}
