//! The `StateStore` contract: one suite, run against [`MemStore`] and against [`EtcdStore`] on a
//! real etcd (started per test by `corral-testkit`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use corral_core::store::etcd::EtcdStore;
use corral_core::store::mem::MemStore;
use corral_core::store::{EventKind, StateStore, StoreError, StoreResult, Txn, WatchEvent};
use corral_testkit::etcd::EtcdServer;
use futures::stream::{BoxStream, StreamExt};

/// Generous deadline for anything that should happen (lease expiry, watch delivery).
const DEADLINE: Duration = Duration::from_secs(15);
/// The shortest lease etcd honours is about 2 s.
const TTL: Duration = Duration::from_secs(2);

type Watch = BoxStream<'static, StoreResult<WatchEvent>>;

/// A backend under test: hands out independent handles ("connections") to one store.
trait Backend {
    async fn store(&self) -> anyhow::Result<Arc<dyn StateStore>>;
}

struct Mem(MemStore);

impl Backend for Mem {
    async fn store(&self) -> anyhow::Result<Arc<dyn StateStore>> {
        Ok(Arc::new(self.0.clone()))
    }
}

struct Etcd(EtcdServer);

impl Backend for Etcd {
    async fn store(&self) -> anyhow::Result<Arc<dyn StateStore>> {
        Ok(Arc::new(EtcdStore::connect(&[self.0.endpoint()]).await?))
    }
}

async fn put(s: &dyn StateStore, key: &str, value: &str) -> anyhow::Result<i64> {
    let out = s.txn(Txn::new().put(key, value.as_bytes().to_vec())).await?;
    ensure!(out.succeeded, "unconditional put of {key} failed");
    Ok(out.revision)
}

async fn value(s: &dyn StateStore, key: &str) -> anyhow::Result<Option<String>> {
    Ok(s.get(key).await?.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

async fn next(watch: &mut Watch) -> anyhow::Result<(EventKind, String, String, i64)> {
    let event = tokio::time::timeout(DEADLINE, watch.next())
        .await
        .context("no watch event before the deadline")?
        .context("watch stream ended")??;
    Ok((event.kind, event.key, String::from_utf8_lossy(&event.value).into_owned(), event.mod_revision))
}

/// Polls `check` until it is true, failing after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await? {
        ensure!(tokio::time::Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn get_missing_then_put_then_get(b: &impl Backend) -> anyhow::Result<()> {
    let s = b.store().await?;
    ensure!(s.get("k").await?.is_none());
    let rev = put(&*s, "k", "v1").await?;
    let kv = s.get("k").await?.context("k after put")?;
    ensure!(kv.key == "k" && kv.value == b"v1" && kv.lease == 0, "{kv:?}");
    ensure!(kv.mod_revision == rev && kv.create_revision == rev, "{kv:?} written at {rev}");
    Ok(())
}

async fn create_if_absent_succeeds_once(b: &impl Backend) -> anyhow::Result<()> {
    let s = b.store().await?;
    let first = s.txn(Txn::new().when("lock", 0).put("lock", b"a".to_vec())).await?;
    ensure!(first.succeeded);
    let second = s.txn(Txn::new().when("lock", 0).put("lock", b"b".to_vec())).await?;
    ensure!(!second.succeeded, "second create-if-absent must fail");
    ensure!(second.revision == first.revision, "a failed txn does not bump the revision");
    ensure!(value(&*s, "lock").await? == Some("a".into()));
    Ok(())
}

async fn stale_cas_writes_nothing(b: &impl Backend) -> anyhow::Result<()> {
    let s = b.store().await?;
    let stale = put(&*s, "x", "1").await?;
    let fresh = put(&*s, "x", "2").await?;
    put(&*s, "y", "old").await?;
    let txn = Txn::new().when("x", stale).put("x", b"3".to_vec()).put("z", b"new".to_vec()).delete("y");
    ensure!(!s.txn(txn).await?.succeeded, "CAS on a stale mod_revision must fail");
    ensure!(value(&*s, "x").await? == Some("2".into()));
    ensure!(s.get("z").await?.is_none() && value(&*s, "y").await? == Some("old".into()), "partial write");
    // Several compares: all must hold.
    let txn = Txn::new().when("x", fresh).when("z", 1).put("x", b"4".to_vec());
    ensure!(!s.txn(txn).await?.succeeded, "one failing compare fails the txn");
    let txn = Txn::new().when("x", fresh).when("z", 0).put("x", b"4".to_vec()).put("z", b"z".to_vec());
    ensure!(s.txn(txn).await?.succeeded);
    ensure!(value(&*s, "x").await? == Some("4".into()) && value(&*s, "z").await? == Some("z".into()));
    Ok(())
}

async fn delete_removes_key(b: &impl Backend) -> anyhow::Result<()> {
    let s = b.store().await?;
    let rev = put(&*s, "d", "v").await?;
    let out = s.txn(Txn::new().when("d", rev).delete("d")).await?;
    ensure!(out.succeeded && out.revision > rev);
    ensure!(s.get("d").await?.is_none());
    let again = put(&*s, "d", "w").await?;
    let kv = s.get("d").await?.context("d recreated")?;
    ensure!(kv.create_revision == again, "a recreated key has a new create_revision");
    Ok(())
}

async fn range_isolates_prefixes_in_key_order(b: &impl Backend) -> anyhow::Result<()> {
    let s = b.store().await?;
    for key in ["a/c", "ab/1", "a/a", "a", "b/1", "a/b"] {
        put(&*s, key, key).await?;
    }
    let page = s.range("a/", None, 0).await?;
    let keys: Vec<&str> = page.kvs.iter().map(|kv| kv.key.as_str()).collect();
    ensure!(keys == ["a/a", "a/b", "a/c"], "got {keys:?}");
    ensure!(!page.more);
    ensure!(page.kvs.iter().all(|kv| kv.value == kv.key.as_bytes()));
    let rev = put(&*s, "zz", "z").await?;
    ensure!(s.range("a/", None, 0).await?.revision == rev, "range reports the current revision");
    ensure!(s.range("nothing/", None, 0).await?.kvs.is_empty());
    ensure!(s.range("", None, 0).await?.kvs.len() == 7, "the empty prefix lists everything");
    Ok(())
}

async fn range_paginates(b: &impl Backend) -> anyhow::Result<()> {
    let s = b.store().await?;
    for i in 0..7 {
        put(&*s, &format!("p/{i:02}"), "v").await?;
    }
    put(&*s, "p0", "outside").await?;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.range("p/", after.as_deref(), 3).await?;
        ensure!(page.kvs.len() <= 3);
        seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        after = page.kvs.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
        ensure!(page.kvs.len() == 3, "a page with more after it is full");
    }
    let want: Vec<String> = (0..7).map(|i| format!("p/{i:02}")).collect();
    ensure!(seen == want, "pages gave {seen:?}");
    // Exactly `limit` keys left: no more.
    ensure!(!s.range("p/", Some("p/03"), 3).await?.more);
    ensure!(s.range("p/", Some("p/06"), 3).await?.kvs.is_empty());
    ensure!(s.range("p/", Some("a"), 1).await?.kvs[0].key == "p/00", "start_after before the prefix");
    Ok(())
}

async fn a_txn_writing_one_key_twice_is_refused(b: &impl Backend) -> anyhow::Result<()> {
    let s = b.store().await?;
    let r = s.txn(Txn::new().put("d/a", b"1".to_vec()).put("d/a", b"2".to_vec())).await;
    ensure!(matches!(r, Err(StoreError::InvalidTxn(_))), "{r:?}");
    ensure!(s.get("d/a").await?.is_none(), "nothing was written");
    Ok(())
}

async fn one_txn_shares_one_new_revision(b: &impl Backend) -> anyhow::Result<()> {
    let s = b.store().await?;
    let r1 = put(&*s, "r/a", "1").await?;
    let out = s.txn(Txn::new().put("r/a", b"2".to_vec()).put("r/b", b"1".to_vec())).await?;
    ensure!(out.succeeded && out.revision > r1);
    let (a, bb) = (s.get("r/a").await?.context("r/a")?, s.get("r/b").await?.context("r/b")?);
    ensure!(a.mod_revision == out.revision && bb.mod_revision == out.revision, "{a:?} {bb:?}");
    ensure!(a.create_revision == r1 && bb.create_revision == out.revision, "create_revision is kept");
    let r3 = put(&*s, "r/c", "1").await?;
    ensure!(r3 > out.revision, "revisions only grow");
    Ok(())
}

async fn lease_expiry_deletes_key_and_watch_sees_it(b: &impl Backend) -> anyhow::Result<()> {
    let s = b.store().await?;
    let lease = s.grant_lease(TTL).await?;
    let out = s.txn(Txn::new().put_with_lease("node/1", b"up".to_vec(), lease)).await?;
    ensure!(s.get("node/1").await?.context("node/1")?.lease == lease);
    let mut watch = s.watch("node/", out.revision + 1).await?;
    let (kind, key, _, rev) = next(&mut watch).await?;
    ensure!(kind == EventKind::Delete && key == "node/1" && rev > out.revision, "{kind:?} {key} at {rev}");
    ensure!(s.get("node/1").await?.is_none());
    eventually("keep_alive after expiry fails", || async {
        Ok(matches!(s.keep_alive(lease).await, Err(StoreError::LeaseNotFound(id)) if id == lease))
    })
    .await
}

async fn keep_alive_holds_key_past_ttl(b: &impl Backend) -> anyhow::Result<()> {
    let s = b.store().await?;
    let lease = s.grant_lease(TTL).await?;
    s.txn(Txn::new().put_with_lease("held", b"v".to_vec(), lease)).await?;
    let until = tokio::time::Instant::now() + TTL * 2;
    while tokio::time::Instant::now() < until {
        s.keep_alive(lease).await?;
        tokio::time::sleep(TTL / 4).await;
    }
    ensure!(s.get("held").await?.is_some(), "a kept-alive lease must hold its key past its TTL");
    eventually("key expires once keep-alives stop", || async { Ok(s.get("held").await?.is_none()) }).await
}

async fn revoke_deletes_keys_and_ends_lease(b: &impl Backend) -> anyhow::Result<()> {
    let s = b.store().await?;
    let lease = s.grant_lease(Duration::from_secs(60)).await?;
    let txn = Txn::new().put_with_lease("sem/a", b"1".to_vec(), lease).put_with_lease("sem/b", b"1".to_vec(), lease);
    let out = s.txn(txn).await?;
    put(&*s, "sem/c", "no lease").await?;
    let mut watch = s.watch("sem/", out.revision + 2).await?;
    s.revoke_lease(lease).await?;
    ensure!(s.get("sem/a").await?.is_none() && s.get("sem/b").await?.is_none());
    ensure!(s.get("sem/c").await?.is_some(), "keys without the lease stay");
    let (k1, k2) = (next(&mut watch).await?, next(&mut watch).await?);
    ensure!(k1.0 == EventKind::Delete && k2.0 == EventKind::Delete && k1.3 == k2.3, "{k1:?} {k2:?}");
    let mut deleted = [k1.1, k2.1];
    deleted.sort();
    ensure!(deleted == ["sem/a", "sem/b"]);
    match s.keep_alive(lease).await {
        Err(StoreError::LeaseNotFound(id)) => ensure!(id == lease),
        other => bail!("keep_alive on a revoked lease: expected LeaseNotFound, got {other:?}"),
    }
    let put_on_revoked = s.txn(Txn::new().put_with_lease("sem/d", b"1".to_vec(), lease)).await;
    ensure!(matches!(put_on_revoked, Err(StoreError::LeaseNotFound(_))), "got {put_on_revoked:?}");
    ensure!(s.get("sem/d").await?.is_none());
    Ok(())
}

async fn watch_from_now_sees_changes_in_order(b: &impl Backend) -> anyhow::Result<()> {
    let s = b.store().await?;
    put(&*s, "w/before", "x").await?;
    let mut watch = s.watch("w/", 0).await?;
    let writer = b.store().await?;
    let r1 = put(&*writer, "w/1", "a").await?;
    put(&*writer, "other/1", "ignored").await?;
    let r2 = put(&*writer, "w/1", "b").await?;
    let r3 = writer.txn(Txn::new().delete("w/1")).await?.revision;
    ensure!(next(&mut watch).await? == (EventKind::Put, "w/1".into(), "a".into(), r1));
    ensure!(next(&mut watch).await? == (EventKind::Put, "w/1".into(), "b".into(), r2));
    ensure!(next(&mut watch).await? == (EventKind::Delete, "w/1".into(), String::new(), r3));
    Ok(())
}

async fn watch_from_old_revision_replays_then_continues(b: &impl Backend) -> anyhow::Result<()> {
    let s = b.store().await?;
    let r1 = put(&*s, "h/1", "a").await?;
    let r2 = put(&*s, "h/2", "b").await?;
    put(&*s, "hx", "not in prefix").await?;
    let r3 = s.txn(Txn::new().delete("h/1")).await?.revision;
    let mut watch = s.watch("h/", r1).await?;
    let r4 = put(&*s, "h/3", "c").await?;
    ensure!(next(&mut watch).await? == (EventKind::Put, "h/1".into(), "a".into(), r1));
    ensure!(next(&mut watch).await? == (EventKind::Put, "h/2".into(), "b".into(), r2));
    ensure!(next(&mut watch).await? == (EventKind::Delete, "h/1".into(), String::new(), r3));
    ensure!(next(&mut watch).await? == (EventKind::Put, "h/3".into(), "c".into(), r4), "live after replay");
    let mut from_middle = s.watch("h/", r2 + 1).await?;
    ensure!(next(&mut from_middle).await?.3 == r3, "replay starts at the asked revision");
    Ok(())
}

async fn concurrent_cas_increments_lose_nothing(b: &impl Backend) -> anyhow::Result<()> {
    let mut handles = Vec::new();
    for _ in 0..5 {
        handles.push(b.store().await?);
    }
    let increments = (0..50).map(|i| {
        let s = Arc::clone(&handles[i % handles.len()]);
        async move {
            for _attempt in 0..1000 {
                let current = s.get("counter").await?;
                let (rev, n) = match &current {
                    Some(kv) => (kv.mod_revision, std::str::from_utf8(&kv.value)?.parse::<u32>()?),
                    None => (0, 0),
                };
                // Let the other writers interleave between the read and the CAS.
                tokio::task::yield_now().await;
                let txn = Txn::new().when("counter", rev).put("counter", (n + 1).to_string().into_bytes());
                if s.txn(txn).await?.succeeded {
                    return anyhow::Ok(());
                }
            }
            bail!("increment {i} never won its CAS")
        }
    });
    futures::future::try_join_all(increments).await?;
    ensure!(value(&*handles[0], "counter").await? == Some("50".into()));
    Ok(())
}

macro_rules! store_contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            store_contract!(@tests $make;
                get_missing_then_put_then_get,
                create_if_absent_succeeds_once,
                stale_cas_writes_nothing,
                delete_removes_key,
                range_isolates_prefixes_in_key_order,
                range_paginates,
                one_txn_shares_one_new_revision,
                a_txn_writing_one_key_twice_is_refused,
                lease_expiry_deletes_key_and_watch_sees_it,
                keep_alive_holds_key_past_ttl,
                revoke_deletes_keys_and_ends_lease,
                watch_from_now_sees_changes_in_order,
                watch_from_old_revision_replays_then_continues,
                concurrent_cas_increments_lose_nothing,
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

store_contract!(mem, Mem(MemStore::new()));
store_contract!(etcd, Etcd(EtcdServer::start()?));

/// A watch from a compacted revision fails with `Compacted`, from `watch` or as its first item.
#[tokio::test]
async fn etcd_watch_from_compacted_revision_fails() -> anyhow::Result<()> {
    let server = EtcdServer::start()?;
    let s = EtcdStore::connect(&[server.endpoint()]).await?;
    let first = put(&s, "c/1", "a").await?;
    let last = put(&s, "c/1", "b").await?;
    let mut client = etcd_client::Client::connect([server.endpoint()], None).await?;
    client.compact(last, None).await?;
    let outcome: StoreResult<()> = match s.watch("c/", first).await {
        Err(e) => Err(e),
        Ok(mut watch) => match tokio::time::timeout(DEADLINE, watch.next()).await? {
            Some(Err(e)) => Err(e),
            other => bail!("expected Compacted, got {other:?}"),
        },
    };
    ensure!(matches!(outcome, Err(StoreError::Compacted(rev)) if rev == first), "got {outcome:?}");
    Ok(())
}

#[tokio::test]
async fn etcd_connect_to_nothing_is_unavailable() -> anyhow::Result<()> {
    let endpoint = format!("http://127.0.0.1:{}", corral_testkit::free_port());
    let started = std::time::Instant::now();
    match EtcdStore::connect(std::slice::from_ref(&endpoint)).await {
        Err(StoreError::Unavailable(why)) => ensure!(why.contains(&endpoint), "error names the endpoint: {why}"),
        other => bail!("expected Unavailable, got {other:?}"),
    }
    ensure!(started.elapsed() < Duration::from_secs(10), "connect gave up after {:?}", started.elapsed());
    Ok(())
}

/// Data and a connected client both survive an etcd restart.
#[tokio::test]
async fn etcd_store_works_across_server_restart() -> anyhow::Result<()> {
    let mut server = EtcdServer::start()?;
    let s = EtcdStore::connect(&[server.endpoint()]).await?;
    put(&s, "keep", "me").await?;
    let old_pid = server.pid();
    server.restart()?;
    ensure!(server.pid() != old_pid, "etcd was not restarted");
    eventually("the old client reads after the restart", || async {
        Ok(matches!(value(&s, "keep").await, Ok(Some(v)) if v == "me"))
    })
    .await?;
    put(&s, "after", "restart").await?;
    Ok(())
}
