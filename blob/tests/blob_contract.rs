//! The `BlobStore` contract, and `Chunks` on top of it: one suite, run against
//! [`ObjectBlobStore`] in memory, in a local directory, and on a real S3-protocol server
//! (s3s-fs, started per test by `corral-testkit`). Plus what an S3 outage looks like.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use corral_blob::{BlobConfig, BlobError, BlobStore, Chunks, Digest, ObjectBlobStore, PART_SIZE};
use corral_testkit::s3::S3Server;
use futures::{StreamExt, TryStreamExt};

/// A store under test and whatever must live as long as it (a directory, a server).
struct Fixture {
    store: Arc<dyn BlobStore>,
    _keep: Option<Box<dyn Send + Sync>>,
}

fn memory() -> anyhow::Result<Fixture> {
    Ok(Fixture { store: Arc::new(ObjectBlobStore::memory()), _keep: None })
}

fn local() -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    // A directory that does not exist yet: the constructor makes it.
    let config = BlobConfig::Local { dir: dir.path().join("blobs") };
    Ok(Fixture { store: corral_blob::open(&config)?, _keep: Some(Box::new(dir)) })
}

fn s3() -> anyhow::Result<Fixture> {
    let server = S3Server::start()?;
    let config: BlobConfig = serde_json::from_str(&server.config_json())?;
    Ok(Fixture { store: corral_blob::open(&config)?, _keep: Some(Box::new(server)) })
}

/// `len` deterministic pseudo-random bytes (BLAKE3 in XOF mode, seeded).
fn data(seed: &str, len: usize) -> Bytes {
    let mut out = vec![0u8; len];
    blake3::Hasher::new().update(seed.as_bytes()).finalize_xof().fill(&mut out);
    Bytes::from(out)
}

fn is_not_found<T: std::fmt::Debug>(r: &Result<T, BlobError>, want: &str) -> bool {
    matches!(r, Err(BlobError::NotFound { key }) if key == want)
}

async fn put_get_head_delete(f: &Fixture) -> anyhow::Result<()> {
    let s = &f.store;
    s.put("a/b/c.txt", Bytes::from_static(b"hello")).await?;
    ensure!(s.get("a/b/c.txt").await? == "hello");
    ensure!(s.head("a/b/c.txt").await? == Some(5));
    s.put("a/b/c.txt", Bytes::from_static(b"hello, again")).await?;
    ensure!(s.get("a/b/c.txt").await? == "hello, again", "put replaces");
    ensure!(s.head("a/b/c.txt").await? == Some(12));
    s.put("empty", Bytes::new()).await?;
    ensure!(s.head("empty").await? == Some(0) && s.get("empty").await?.is_empty());
    s.delete("a/b/c.txt").await?;
    ensure!(s.head("a/b/c.txt").await?.is_none());
    s.delete("a/b/c.txt").await.context("deleting a missing key is ok")?;
    Ok(())
}

async fn missing_keys_are_not_found(f: &Fixture) -> anyhow::Result<()> {
    let s = &f.store;
    ensure!(s.head("no/such").await?.is_none());
    ensure!(is_not_found(&s.get("no/such").await, "no/such"));
    let stream = s.get_stream("no/such").await.map(|_| ());
    ensure!(is_not_found(&stream, "no/such"), "{stream:?}");
    let copy = s.copy("no/such", "elsewhere").await;
    ensure!(is_not_found(&copy, "no/such"), "{copy:?}");
    ensure!(s.head("elsewhere").await?.is_none());
    let msg = s.get("no/such").await.expect_err("missing").to_string();
    ensure!(msg == "blob no/such not found", "{msg}");
    ensure!(s.list("no").await?.is_empty());
    Ok(())
}

async fn bad_keys_are_invalid(f: &Fixture) -> anyhow::Result<()> {
    let s = &f.store;
    for key in ["", "/abs", "a//b", "a/", "../up", "a/../b", "sp ace", "q?x", "ü"] {
        let named =
            |r: Result<(), BlobError>| matches!(r, Err(BlobError::Invalid(m)) if m.contains(&format!("{key:?}")));
        ensure!(named(s.put(key, Bytes::from_static(b"x")).await), "put {key:?}");
        ensure!(named(s.get(key).await.map(drop)), "get {key:?}");
        ensure!(named(s.head(key).await.map(drop)), "head {key:?}");
        ensure!(named(s.delete(key).await), "delete {key:?}");
        ensure!(named(s.copy(key, "ok").await), "copy from {key:?}");
        ensure!(named(s.copy("ok", key).await), "copy to {key:?}");
        let mut src: &[u8] = b"x";
        ensure!(named(s.put_stream(key, &mut src).await.map(drop)), "put_stream {key:?}");
    }
    ensure!(matches!(s.list("../x").await, Err(BlobError::Invalid(_))));
    ensure!(s.list("").await?.is_empty(), "nothing was stored by the refused calls");
    Ok(())
}

async fn list_and_copy(f: &Fixture) -> anyhow::Result<()> {
    let s = &f.store;
    for (key, len) in [("l/x/1", 1), ("l/x/2", 2), ("l/y", 3), ("lz", 4)] {
        s.put(key, data(key, len)).await?;
    }
    let l = s.list("l").await?;
    ensure!(l == [("l/x/1".into(), 1), ("l/x/2".into(), 2), ("l/y".into(), 3)], "{l:?}");
    ensure!(s.list("l/x/").await?.len() == 2);
    ensure!(s.list("").await?.len() == 4);
    s.copy("l/y", "c/copy").await?;
    ensure!(s.get("c/copy").await? == data("l/y", 3));
    s.copy("l/x/2", "c/copy").await?;
    ensure!(s.get("c/copy").await? == data("l/x/2", 2), "copy replaces");
    ensure!(s.get("l/x/2").await? == data("l/x/2", 2), "the source stays");
    s.copy("l/y", "l/y").await.context("a copy onto itself changes nothing")?;
    ensure!(s.get("l/y").await? == data("l/y", 3));
    Ok(())
}

/// More keys than one S3 list page (1,000).
async fn list_spans_pages(f: &Fixture) -> anyhow::Result<()> {
    const N: usize = 1_100;
    let s = &f.store;
    futures::stream::iter(0..N)
        .map(|i| async move { s.put(&format!("many/{i:05}"), Bytes::from(vec![1u8; i % 7])).await })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await?;
    let listed = s.list("many").await?;
    ensure!(listed.len() == N, "listed {} of {N}", listed.len());
    let expected: Vec<(String, u64)> = (0..N).map(|i| (format!("many/{i:05}"), (i % 7) as u64)).collect();
    ensure!(listed == expected);
    Ok(())
}

async fn streams_round_trip(f: &Fixture) -> anyhow::Result<()> {
    let s = &f.store;
    // 20 MiB: three parts of a multipart upload, the last one short.
    let big = data("big", 20 * 1024 * 1024);
    let mut src: &[u8] = &big;
    ensure!(s.put_stream("big/one", &mut src).await? == big.len() as u64);
    ensure!(s.head("big/one").await? == Some(big.len() as u64));
    ensure!(s.get("big/one").await? == big);
    let streamed: Vec<Bytes> = s.get_stream("big/one").await?.try_collect().await?;
    ensure!(streamed.concat() == big, "get_stream gives the same bytes");
    // Exactly one part, then nothing; and the small and empty cases (one plain put).
    for len in [PART_SIZE, 1, 0] {
        let bytes = data("part", len);
        let mut src: &[u8] = &bytes;
        ensure!(s.put_stream("big/two", &mut src).await? == len as u64);
        ensure!(s.get("big/two").await? == bytes, "{len} bytes");
    }
    Ok(())
}

/// A source that gives `left` bytes, then fails.
struct Failing {
    left: usize,
}

impl tokio::io::AsyncRead for Failing {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.left == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other("the source broke")));
        }
        let n = self.left.min(buf.remaining());
        buf.put_slice(&vec![b'x'; n]);
        self.left -= n;
        std::task::Poll::Ready(Ok(()))
    }
}

/// A source failing in the first part (one plain request) or after two parts (a multipart
/// upload, aborted): `Unavailable` naming the source, and nothing stored.
async fn a_failing_source_keeps_nothing(f: &Fixture) -> anyhow::Result<()> {
    for left in [100, 2 * PART_SIZE + 100] {
        let r = f.store.put_stream("broken/blob", &mut Failing { left }).await;
        ensure!(
            matches!(&r, Err(BlobError::Unavailable { op: "read source", key, .. }) if key == "broken/blob"),
            "{r:?}"
        );
        ensure!(f.store.list("broken").await?.is_empty(), "nothing kept after {left} bytes");
        let chunks = Chunks::new(f.store.clone(), "broken");
        let r = chunks.put_stream(&mut Failing { left }, u64::MAX).await;
        ensure!(matches!(&r, Err(BlobError::Unavailable { .. })), "{r:?}");
        ensure!(f.store.list("broken").await?.is_empty(), "no chunk and no temporary after {left} bytes");
    }
    Ok(())
}

async fn chunks_dedup_and_list(f: &Fixture) -> anyhow::Result<()> {
    let chunks = Chunks::new(f.store.clone(), "chunks");
    let bytes = data("chunk", 1000);
    let d = chunks.put(bytes.clone()).await?;
    ensure!(d == Digest::of(&bytes));
    ensure!(chunks.put(bytes.clone()).await? == d, "same content, same digest");
    let mut src: &[u8] = &bytes;
    ensure!(chunks.put_stream(&mut src, 1 << 20).await? == (d, 1000));
    let hex = d.to_string();
    let raw = f.store.list("chunks").await?;
    ensure!(raw == [(format!("chunks/{}/{hex}", &hex[..2]), 1000)], "one object, no temporaries: {raw:?}");
    ensure!(chunks.key(d) == raw[0].0);
    ensure!(chunks.get(d).await? == bytes);
    let streamed: Vec<Bytes> = chunks.get_stream(d).await?.try_collect().await?;
    ensure!(streamed.concat() == bytes);
    ensure!(chunks.contains(d).await? && chunks.size(d).await? == Some(1000));
    // A second chunk, streamed in more than one part.
    let big = data("big chunk", PART_SIZE + 4096);
    let mut src: &[u8] = &big;
    let (big_d, big_len) = chunks.put_stream(&mut src, 64 << 20).await?;
    ensure!(big_d == Digest::of(&big) && big_len == big.len() as u64);
    ensure!(chunks.get(big_d).await? == big);
    let mut want = vec![(d, 1000), (big_d, big.len() as u64)];
    want.sort();
    ensure!(chunks.list().await? == want);
    chunks.delete(d).await?;
    ensure!(!chunks.contains(d).await? && chunks.size(d).await?.is_none());
    ensure!(is_not_found(&chunks.get(d).await, &chunks.key(d)));
    ensure!(chunks.list().await? == [(big_d, big.len() as u64)]);
    Ok(())
}

async fn put_expect_checks_the_digest(f: &Fixture) -> anyhow::Result<()> {
    let chunks = Chunks::new(f.store.clone(), "cas");
    let bytes = data("expected", 5000);
    let wrong = Digest::of(b"something else");
    let mut src: &[u8] = &bytes;
    match chunks.put_expect(wrong, &mut src, 1 << 20).await {
        Err(BlobError::Corrupt { key, expected, actual }) => {
            ensure!(key == chunks.key(wrong) && expected == wrong && actual == Digest::of(&bytes));
        }
        other => anyhow::bail!("a wrong digest is refused: {other:?}"),
    }
    ensure!(f.store.list("cas").await?.is_empty(), "nothing stored, no temporaries left");
    let right = Digest::of(&bytes);
    let mut src: &[u8] = &bytes;
    ensure!(chunks.put_expect(right, &mut src, 1 << 20).await? == 5000);
    ensure!(chunks.get(right).await? == bytes);
    let mut unread: &[u8] = b"not read: the chunk exists";
    ensure!(chunks.put_expect(right, &mut unread, 1 << 20).await? == 5000, "an existing chunk is not uploaded again");
    ensure!(unread.len() == 26, "the reader was left alone");
    ensure!(f.store.list("cas").await?.len() == 1);
    Ok(())
}

async fn corruption_is_detected(f: &Fixture) -> anyhow::Result<()> {
    let chunks = Chunks::new(f.store.clone(), "chunks");
    let d = chunks.put(data("good", 300)).await?;
    // Bytes changed at rest, behind the chunk store's back.
    let bad = data("bad", 300);
    f.store.put(&chunks.key(d), bad.clone()).await?;
    let err = chunks.get(d).await.expect_err("corrupt");
    ensure!(
        matches!(&err, BlobError::Corrupt { key, expected, actual } if *key == chunks.key(d) && *expected == d && *actual == Digest::of(&bad))
    );
    let msg = err.to_string();
    ensure!(msg.contains(&d.to_string()) && msg.contains(&Digest::of(&bad).to_string()), "{msg}");
    ensure!(msg.contains(&chunks.key(d)), "{msg}");
    let items: Vec<_> = chunks.get_stream(d).await?.collect().await;
    ensure!(matches!(items.last(), Some(Err(BlobError::Corrupt { .. }))), "the stream ends in Corrupt");
    ensure!(items[..items.len() - 1].iter().all(Result::is_ok));
    Ok(())
}

async fn too_large_keeps_nothing(f: &Fixture) -> anyhow::Result<()> {
    let chunks = Chunks::new(f.store.clone(), "big");
    for (len, limit) in [(11, 10), (PART_SIZE + 10, PART_SIZE as u64 + 9)] {
        let bytes = data("large", len);
        let mut src: &[u8] = &bytes;
        let r = chunks.put_stream(&mut src, limit).await;
        ensure!(matches!(&r, Err(BlobError::TooLarge { limit: l, .. }) if *l == limit), "{len} > {limit}: {r:?}");
        let mut src: &[u8] = &bytes;
        let r = chunks.put_expect(Digest::of(&bytes), &mut src, limit).await;
        ensure!(matches!(&r, Err(BlobError::TooLarge { .. })), "{r:?}");
        ensure!(f.store.list("big").await?.is_empty(), "nothing kept of {len} bytes");
    }
    let exact = data("exact", 10);
    let mut src: &[u8] = &exact;
    ensure!(chunks.put_stream(&mut src, 10).await?.1 == 10, "the limit itself is allowed");
    Ok(())
}

macro_rules! blob_contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            blob_contract!(@tests $make;
                put_get_head_delete,
                missing_keys_are_not_found,
                bad_keys_are_invalid,
                list_and_copy,
                list_spans_pages,
                streams_round_trip,
                a_failing_source_keeps_nothing,
                chunks_dedup_and_list,
                put_expect_checks_the_digest,
                corruption_is_detected,
                too_large_keeps_nothing,
            );
        }
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> anyhow::Result<()> {
                let fixture = $make?;
                super::$name(&fixture).await
            }
        )*
    };
}

blob_contract!(memory, memory());
blob_contract!(local, local());
blob_contract!(s3, s3());

/// An S3 outage: requests fail with `Unavailable` after bounded retries (no hang), and work
/// again once the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_is_unavailable_then_recovers() -> anyhow::Result<()> {
    let mut server = S3Server::start()?;
    let config: BlobConfig = serde_json::from_str(&server.config_json())?;
    let store = corral_blob::open(&config)?;
    store.put("before", Bytes::from_static(b"1")).await?;
    server.stop();
    let started = Instant::now();
    let put = tokio::time::timeout(Duration::from_secs(120), store.put("during", Bytes::from_static(b"2")))
        .await
        .context("put during an outage must not hang")?;
    ensure!(matches!(&put, Err(BlobError::Unavailable { op: "put", key, .. }) if key == "during"), "{put:?}");
    let msg = put.expect_err("unavailable").to_string();
    ensure!(msg.contains("put") && msg.contains("during"), "{msg}");
    let get = tokio::time::timeout(Duration::from_secs(120), store.get("before")).await?;
    ensure!(matches!(get, Err(BlobError::Unavailable { op: "get", .. })), "{get:?}");
    eprintln!("an outage surfaced after {:?}", started.elapsed());
    server.restart()?;
    store.put("after", Bytes::from_static(b"3")).await?;
    ensure!(store.get("before").await? == "1", "data survives the restart");
    Ok(())
}
