//! The semaphore contract, run against the in-process store and a real etcd (started per test by
//! `corral-testkit`): the cap holds under concurrent acquires, releases and expired leases free
//! permits, and acquiring is idempotent per holder.

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use corral_coordinator::semaphore::{self, Acquired};
use corral_core::ids::TenantId;
use corral_core::keys::SemScope;
use corral_core::store::StateStore;
use corral_core::store::etcd::EtcdStore;
use corral_core::store::mem::MemStore;
use corral_testkit::etcd::EtcdServer;

fn scope(name: &str) -> SemScope {
    SemScope::Tenant(TenantId::parse(name).expect("valid tenant"))
}

async fn cap_holds_and_release_frees(store: Arc<dyn StateStore>) -> anyhow::Result<()> {
    let s = scope("t-cap");
    let lease = store.grant_lease(Duration::from_secs(60)).await?;
    for holder in ["a", "b", "c"] {
        ensure!(semaphore::try_acquire(store.as_ref(), &s, holder, 3, lease).await? == Acquired::Granted, "{holder}");
    }
    ensure!(semaphore::try_acquire(store.as_ref(), &s, "a", 3, lease).await? == Acquired::Granted, "idempotent");
    let full = semaphore::try_acquire(store.as_ref(), &s, "d", 3, lease).await?;
    ensure!(full == Acquired::Full { held: 3 }, "a fourth holder waits: {full:?}");
    ensure!(semaphore::held(store.as_ref(), &s).await? == 3);
    semaphore::release(store.as_ref(), &s, "b").await?;
    semaphore::release(store.as_ref(), &s, "b").await?;
    ensure!(semaphore::try_acquire(store.as_ref(), &s, "d", 3, lease).await? == Acquired::Granted, "freed by release");
    ensure!(semaphore::held(store.as_ref(), &s).await? == 3);
    // Other scopes are independent.
    ensure!(semaphore::try_acquire(store.as_ref(), &scope("t-other"), "a", 1, lease).await? == Acquired::Granted);
    Ok(())
}

async fn concurrent_acquires_never_exceed_the_cap(store: Arc<dyn StateStore>) -> anyhow::Result<()> {
    let s = scope("t-race");
    let lease = store.grant_lease(Duration::from_secs(60)).await?;
    let attempts = (0..40).map(|i| {
        let (store, s) = (store.clone(), s.clone());
        async move { semaphore::try_acquire(store.as_ref(), &s, &format!("h{i}"), 7, lease).await }
    });
    let outcomes = futures::future::join_all(attempts).await;
    let granted = outcomes.iter().filter(|o| matches!(o, Ok(Acquired::Granted))).count();
    let errors: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    ensure!(errors.is_empty(), "errors: {errors:?}");
    ensure!(granted == 7, "granted {granted} of a cap of 7");
    ensure!(semaphore::held(store.as_ref(), &s).await? == 7);
    Ok(())
}

async fn an_expired_holder_frees_its_permit(store: Arc<dyn StateStore>) -> anyhow::Result<()> {
    let s = scope("t-lease");
    let short = store.grant_lease(Duration::from_secs(1)).await?;
    let long = store.grant_lease(Duration::from_secs(60)).await?;
    ensure!(semaphore::try_acquire(store.as_ref(), &s, "crashed", 1, short).await? == Acquired::Granted);
    ensure!(matches!(semaphore::try_acquire(store.as_ref(), &s, "next", 1, long).await?, Acquired::Full { .. }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if semaphore::try_acquire(store.as_ref(), &s, "next", 1, long).await? == Acquired::Granted {
            return Ok(());
        }
        ensure!(tokio::time::Instant::now() < deadline, "the expired holder's permit was never freed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

macro_rules! semaphore_contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cap_holds_and_release_frees() -> anyhow::Result<()> {
                let (store, _server) = $make;
                super::cap_holds_and_release_frees(store).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_acquires_never_exceed_the_cap() -> anyhow::Result<()> {
                let (store, _server) = $make;
                super::concurrent_acquires_never_exceed_the_cap(store).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_expired_holder_frees_its_permit() -> anyhow::Result<()> {
                let (store, _server) = $make;
                super::an_expired_holder_frees_its_permit(store).await
            }
        }
    };
}

semaphore_contract!(mem, (Arc::new(MemStore::new()) as Arc<dyn StateStore>, ()));
semaphore_contract!(etcd, {
    let server = EtcdServer::start()?;
    let store: Arc<dyn StateStore> = Arc::new(EtcdStore::connect(&[server.endpoint()]).await?);
    (store, server)
});
