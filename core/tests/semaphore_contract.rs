//! The `Semaphore` contract: one suite, run against [`LocalSemaphore`] and against
//! [`StoreSemaphore`] on the embedded store and on a real etcd (started per test by
//! `corral-testkit`). Each test takes several handles, as separate processes would.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use corral_core::ids::{NodeId, TenantId};
use corral_core::jobs::BatchId;
use corral_core::keys::SemScope;
use corral_core::semaphore::{Acquired, Holder, Line, LocalSemaphore, SemError, Semaphore, StoreSemaphore};
use corral_core::store::etcd::EtcdStore;
use corral_core::store::mem::MemStore;
use corral_core::store::{StateStore, Txn};
use corral_testkit::etcd::EtcdServer;
use tokio::sync::mpsc;

/// Generous deadline for anything that should happen (lease expiry, a wake-up).
const DEADLINE: Duration = Duration::from_secs(15);
/// The shortest lease etcd honours is about 2 s.
const SHORT: Duration = Duration::from_secs(2);
const LONG: Duration = Duration::from_secs(120);

/// A backend under test: hands out independent handles to one semaphore.
trait Backend {
    async fn sem(&self) -> anyhow::Result<Arc<dyn Semaphore>>;
}

struct Local(LocalSemaphore);

impl Backend for Local {
    async fn sem(&self) -> anyhow::Result<Arc<dyn Semaphore>> {
        Ok(Arc::new(self.0.clone()))
    }
}

struct Mem(MemStore);

impl Backend for Mem {
    async fn sem(&self) -> anyhow::Result<Arc<dyn Semaphore>> {
        Ok(Arc::new(StoreSemaphore::new(Arc::new(self.0.clone()))))
    }
}

struct Etcd(EtcdServer);

impl Backend for Etcd {
    async fn sem(&self) -> anyhow::Result<Arc<dyn Semaphore>> {
        Ok(Arc::new(StoreSemaphore::new(Arc::new(EtcdStore::connect(&[self.0.endpoint()]).await?))))
    }
}

fn tenant(name: &str) -> SemScope {
    SemScope::Tenant(TenantId::parse(name).expect("valid tenant"))
}

async fn holder(sem: &dyn Semaphore, name: &str) -> anyhow::Result<Holder> {
    Ok(Holder::new(name, sem.grant_lease(LONG).await?))
}

/// Waits (bounded) until the line of `scope` under `limit` is `want`.
async fn line_becomes(sem: &dyn Semaphore, scope: &SemScope, limit: usize, want: Line) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let line = sem.line(scope, limit).await?;
        if line == want {
            return Ok(());
        }
        ensure!(tokio::time::Instant::now() < deadline, "line {line:?}, waited for {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cap_holds_and_release_frees(b: &impl Backend) -> anyhow::Result<()> {
    let (sem, other) = (b.sem().await?, b.sem().await?);
    let s = tenant("t-cap");
    for name in ["a", "b", "c"] {
        let h = holder(&*sem, name).await?;
        ensure!(sem.try_acquire(&s, &h, 3).await? == Acquired::Granted, "{name}");
    }
    let a = Holder::new("a", sem.grant_lease(LONG).await?);
    ensure!(other.try_acquire(&s, &a, 3).await? == Acquired::Granted, "a holder asking again is granted again");
    let d = holder(&*other, "d").await?;
    let full = other.try_acquire(&s, &d, 3).await?;
    ensure!(full == Acquired::Full { ahead: 3 }, "a fourth holder is refused: {full:?}");
    ensure!(sem.line(&s, 3).await? == Line { holding: 3, waiting: 0 }, "a refused try leaves nothing in line");
    other.release(&s, "b").await?;
    other.release(&s, "b").await?;
    ensure!(sem.try_acquire(&s, &d, 3).await? == Acquired::Granted, "freed by the release");
    ensure!(sem.line(&s, 3).await? == Line { holding: 3, waiting: 0 });
    let n1 = SemScope::Node(NodeId::parse("n1").expect("valid node"));
    ensure!(sem.try_acquire(&n1, &d, 1).await? == Acquired::Granted, "other scopes are independent");
    ensure!(sem.try_acquire(&tenant("t-other"), &d, 1).await? == Acquired::Granted);
    Ok(())
}

async fn concurrent_acquires_never_exceed_the_cap(b: &impl Backend) -> anyhow::Result<()> {
    let s = tenant("t-race");
    let mut tries = Vec::new();
    for i in 0..40 {
        let sem = b.sem().await?;
        let h = holder(&*sem, &format!("h{i}")).await?;
        let s = s.clone();
        tries.push(async move { sem.try_acquire(&s, &h, 7).await });
    }
    let outcomes = futures::future::join_all(tries).await;
    let granted = outcomes.iter().filter(|o| matches!(o, Ok(Acquired::Granted))).count();
    let errors: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    ensure!(errors.is_empty(), "errors: {errors:?}");
    ensure!(granted == 7, "granted {granted} of a cap of 7");
    ensure!(b.sem().await?.line(&s, 7).await? == Line { holding: 7, waiting: 0 });
    Ok(())
}

/// Waiters get permits in the order they joined the line, and a newcomer's try does not
/// overtake them.
async fn waiters_are_served_first_come_first_served(b: &impl Backend) -> anyhow::Result<()> {
    let sem = b.sem().await?;
    let s = tenant("t-fifo");
    let first = holder(&*sem, "first").await?;
    ensure!(sem.try_acquire(&s, &first, 1).await? == Acquired::Granted);
    let (granted_tx, mut granted) = mpsc::unbounded_channel();
    for (i, name) in ["w1", "w2", "w3"].into_iter().enumerate() {
        let handle = b.sem().await?;
        let h = holder(&*handle, name).await?;
        let (scope, tx) = (s.clone(), granted_tx.clone());
        corral_core::task::spawn_detached("test.waiter", async move {
            let outcome = handle.acquire(&scope, &h, 1).await;
            let _ = tx.send((h.name.clone(), outcome.is_ok()));
        });
        // Each joins before the next, so the order of arrival is known.
        line_becomes(&*sem, &s, 1, Line { holding: 1, waiting: i + 1 }).await?;
    }
    ensure!(granted.try_recv().is_err(), "nobody is granted while the first holds");
    sem.release(&s, "first").await?;
    let newcomer = holder(&*sem, "newcomer").await?;
    let refused = sem.try_acquire(&s, &newcomer, 1).await?;
    ensure!(matches!(refused, Acquired::Full { .. }), "a newcomer does not overtake waiters: {refused:?}");
    for want in ["w1", "w2", "w3"] {
        let (name, ok) = tokio::time::timeout(DEADLINE, granted.recv()).await?.context("a waiter is granted")?;
        ensure!(name == want && ok, "{name} (ok: {ok}) granted where {want} was next");
        tokio::time::sleep(Duration::from_millis(100)).await;
        ensure!(granted.try_recv().is_err(), "only one holds at a time after {want}");
        sem.release(&s, want).await?;
    }
    ensure!(sem.line(&s, 1).await? == Line::default(), "the line is empty");
    Ok(())
}

/// A holder that dies (its lease ends unrenewed) gives its permit to the next in line.
async fn a_dead_holders_permit_goes_to_the_next_waiter(b: &impl Backend) -> anyhow::Result<()> {
    let (sem, other) = (b.sem().await?, b.sem().await?);
    let s = tenant("t-dead");
    let crashed = Holder::new("crashed", sem.grant_lease(SHORT).await?);
    ensure!(sem.try_acquire(&s, &crashed, 1).await? == Acquired::Granted);
    let next = holder(&*other, "next").await?;
    tokio::time::timeout(DEADLINE, other.acquire(&s, &next, 1)).await.context("the dead holder's permit frees")??;
    // An explicitly ended lease frees at once, and whatever it held in any scope.
    let ended = holder(&*sem, "ended").await?;
    let n1 = SemScope::Node(NodeId::parse("n1").expect("valid node"));
    ensure!(sem.try_acquire(&n1, &ended, 1).await? == Acquired::Granted);
    other.end_lease(next.lease).await?;
    sem.end_lease(ended.lease).await?;
    ensure!(sem.line(&s, 1).await? == Line::default());
    ensure!(sem.line(&n1, 1).await? == Line::default());
    let late = Holder::new("late", ended.lease);
    ensure!(sem.acquire(&s, &late, 1).await.is_err(), "no place on an ended lease");
    ensure!(sem.line(&s, 1).await? == Line::default(), "and nothing of it stays in line");
    Ok(())
}

/// A waiter that gives up (its call cancelled) leaves the line, and no permit is leaked.
async fn a_cancelled_waiter_leaves_the_line(b: &impl Backend) -> anyhow::Result<()> {
    let sem = b.sem().await?;
    let s = tenant("t-cancel");
    let a = holder(&*sem, "a").await?;
    ensure!(sem.try_acquire(&s, &a, 1).await? == Acquired::Granted);
    let quitter = holder(&*sem, "quitter").await?;
    let gave_up = tokio::time::timeout(Duration::from_millis(300), sem.acquire(&s, &quitter, 1)).await;
    ensure!(gave_up.is_err(), "the waiter waited");
    line_becomes(&*sem, &s, 1, Line { holding: 1, waiting: 0 }).await?;
    sem.release(&s, "a").await?;
    let c = holder(&*sem, "c").await?;
    ensure!(sem.try_acquire(&s, &c, 1).await? == Acquired::Granted, "the quitter holds nothing");
    Ok(())
}

async fn bad_input_is_refused(b: &impl Backend) -> anyhow::Result<()> {
    let sem = b.sem().await?;
    let s = tenant("t-bad");
    let lease = sem.grant_lease(LONG).await?;
    for name in ["", "a/b", "tab\t", &"x".repeat(201)] {
        let err = sem.try_acquire(&s, &Holder::new(name, lease), 1).await;
        ensure!(matches!(err, Err(SemError::Invalid { .. })), "holder {name:?}: {err:?}");
    }
    let err = sem.try_acquire(&s, &Holder::new("ok", lease), 0).await;
    ensure!(matches!(&err, Err(SemError::Invalid { why, .. }) if why.contains("limit")), "{err:?}");
    ensure!(sem.line(&s, 1).await? == Line::default(), "nothing was written");
    Ok(())
}

/// Permits staged in a caller's transactions (the leader's claims) share the line with those
/// taken through the trait, and die with their lease.
async fn staged_permits_share_the_line(store: Arc<dyn StateStore>) -> anyhow::Result<()> {
    let sem = StoreSemaphore::new(store.clone());
    let s = SemScope::Batch(BatchId::random());
    let node_lease = store.grant_lease(LONG).await?;
    let mut txn = Txn::new();
    for holder in ["job-a.1", "job-b.1"] {
        txn = StoreSemaphore::grant_in(txn, &s, holder, node_lease);
    }
    ensure!(store.txn(txn).await?.succeeded);
    let x = holder(&sem, "x").await?;
    ensure!(sem.try_acquire(&s, &x, 2).await? == Acquired::Full { ahead: 2 }, "staged permits are held");
    let (granted_tx, mut granted) = mpsc::unbounded_channel();
    let (waiter, scope) = (sem.clone(), s.clone());
    corral_core::task::spawn_detached("test.waiter", async move {
        let _ = granted_tx.send(waiter.acquire(&scope, &x, 2).await.is_ok());
    });
    line_becomes(&sem, &s, 2, Line { holding: 2, waiting: 1 }).await?;
    ensure!(store.txn(StoreSemaphore::release_in(Txn::new(), &s, "job-a.1")).await?.succeeded);
    let ok = tokio::time::timeout(DEADLINE, granted.recv()).await?.context("the waiter is told")?;
    ensure!(ok, "a staged release lets the waiter in");
    // The node dies: its staged permit goes with its lease.
    store.revoke_lease(node_lease).await?;
    line_becomes(&sem, &s, 2, Line { holding: 1, waiting: 0 }).await?;
    let refused = store.txn(StoreSemaphore::grant_in(Txn::new(), &s, "job-c.1", node_lease)).await;
    ensure!(refused.is_err(), "no permit on an ended lease: {refused:?}");
    ensure!(sem.line(&s, 2).await? == Line { holding: 1, waiting: 0 });
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_staged_permits_share_the_line() -> anyhow::Result<()> {
    staged_permits_share_the_line(Arc::new(MemStore::new())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_staged_permits_share_the_line() -> anyhow::Result<()> {
    let etcd = EtcdServer::start()?;
    staged_permits_share_the_line(Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await?)).await
}

macro_rules! semaphore_contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            semaphore_contract!(@tests $make;
                cap_holds_and_release_frees,
                concurrent_acquires_never_exceed_the_cap,
                waiters_are_served_first_come_first_served,
                a_dead_holders_permit_goes_to_the_next_waiter,
                a_cancelled_waiter_leaves_the_line,
                bad_input_is_refused,
            );
        }
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> anyhow::Result<()> {
                let backend = $make;
                super::$name(&backend).await
            }
        )*
    };
}

semaphore_contract!(local, Local(LocalSemaphore::new()));
semaphore_contract!(mem, Mem(MemStore::new()));
semaphore_contract!(etcd, Etcd(EtcdServer::start()?));
