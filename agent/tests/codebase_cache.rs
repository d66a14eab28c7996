//! The node's codebase cache: one verified copy per codebase version shared by its users,
//! identical files stored once across versions, eviction of unused trees only, corrupt content
//! refused.

use std::sync::Arc;

use bytes::Bytes;
use corral_agent::codebases::Cache;
use corral_blob::{BlobStore, Chunks, ObjectBlobStore};
use corral_core::codebase::{Entry, EntryKind, Manifest};

async fn manifest(chunks: &Chunks, files: &[(&str, &[u8])]) -> anyhow::Result<String> {
    let mut m = Manifest { v: 1, ..Default::default() };
    for (path, body) in files {
        let d = chunks.put(Bytes::copy_from_slice(body)).await?;
        let e = Entry {
            kind: EntryKind::File,
            mode: 0o644,
            size: body.len() as u64,
            digest: Some(d.to_string()),
            target: None,
        };
        m.entries.insert((*path).to_owned(), e);
    }
    Ok(chunks.put(Bytes::from(m.encode())).await?.to_string())
}

type Setup = (tempfile::TempDir, Arc<dyn BlobStore>, Chunks, Arc<Cache>);

fn setup(cap: u64) -> anyhow::Result<Setup> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::memory());
    let chunks = Chunks::new(store.clone(), "content");
    let cache = Cache::open(dir.path().join("cache"), chunks.clone(), cap)?;
    Ok((dir, store, chunks, cache))
}

#[tokio::test]
async fn users_share_one_copy_and_identical_files_are_stored_once() -> anyhow::Result<()> {
    let (dir, _store, chunks, cache) = setup(1 << 30)?;
    let big = vec![7u8; 100_000];
    let v1 = manifest(&chunks, &[("a.txt", b"one"), ("big.bin", &big)]).await?;
    let v2 = manifest(&chunks, &[("b.txt", b"two"), ("same/big.bin", &big)]).await?;
    let mut leases = Vec::new();
    for _ in 0..10 {
        leases.push(cache.acquire(&v1).await?);
    }
    leases.push(cache.acquire(&v2).await?);
    assert!(leases[..10].iter().all(|l| l.path == leases[0].path), "one tree per version");
    assert_eq!(std::fs::read(leases[0].path.join("a.txt"))?, b"one");
    assert_eq!(std::fs::read(leases[10].path.join("same/big.bin"))?, big);
    // The big file is one object on disk, linked from both trees.
    let objects: Vec<_> = std::fs::read_dir(dir.path().join("cache/objects"))?.collect();
    assert_eq!(objects.len(), 3, "a, b and big (once): {objects:?}");
    Ok(())
}

#[tokio::test]
async fn eviction_takes_only_unused_trees() -> anyhow::Result<()> {
    let (_dir, _store, chunks, cache) = setup(150_000)?;
    let v1 = manifest(&chunks, &[("x", &vec![1u8; 100_000])]).await?;
    let v2 = manifest(&chunks, &[("y", &vec![2u8; 100_000])]).await?;
    let held = cache.acquire(&v1).await?;
    // Over the cap, but v1 is in use: nothing may go.
    let second = cache.acquire(&v2).await?;
    assert!(held.path.join("x").exists() && second.path.join("y").exists());
    drop(second);
    // v2 is now unused: the next acquire evicts it, never v1.
    let v3 = manifest(&chunks, &[("z", b"small")]).await?;
    let third = cache.acquire(&v3).await?;
    assert!(held.path.join("x").exists(), "a used tree was evicted");
    assert!(!cache_has(&cache, &v2), "the unused tree stayed past the cap");
    drop(third);
    Ok(())
}

fn cache_has(cache: &Cache, digest: &str) -> bool {
    cache.trees().contains(&digest.to_owned())
}

#[tokio::test]
async fn corrupt_content_is_refused_and_leaves_nothing() -> anyhow::Result<()> {
    let (dir, store, chunks, cache) = setup(1 << 30)?;
    let v = manifest(&chunks, &[("f", b"good content")]).await?;
    let d = corral_blob::Digest::of(b"good content");
    store.put(&chunks.key(d), Bytes::from_static(b"evil content")).await?;
    let err = match cache.acquire(&v).await {
        Ok(_) => anyhow::bail!("corrupt content was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&d.to_string()), "{err}");
    let trees: Vec<_> = std::fs::read_dir(dir.path().join("cache/trees"))?.collect();
    assert!(trees.is_empty(), "a failed fetch left {trees:?}");
    Ok(())
}
