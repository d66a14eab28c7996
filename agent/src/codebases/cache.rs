//! The node's codebase cache: each codebase version (named by its manifest's digest) fetched once,
//! verified, and kept as a tree under `{dir}/trees/{digest}` that every sandbox on it shares
//! read-only (as its overlay's lower layer). Files are hard links into `{dir}/objects/`, one per
//! content and mode, so identical files across codebases and versions take one copy on the node.
//!
//! A tree appears by an atomic rename once complete, so a crash mid-fetch leaves only a `tmp-*`
//! directory (removed at start). Trees past the size cap go least recently used first, and only
//! while no sandbox uses them.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use corral_blob::{Chunks, Digest};
use corral_core::codebase::{EntryKind, Manifest};
use futures::StreamExt;
use tokio::sync::OnceCell;

/// One cached tree.
struct Tree {
    /// Set once the tree is complete; shared by concurrent first users.
    ready: Arc<OnceCell<u64>>,
    users: usize,
    last_used: Instant,
}

pub struct Cache {
    dir: PathBuf,
    chunks: Chunks,
    max_bytes: u64,
    trees: Mutex<HashMap<String, Tree>>,
}

/// A sandbox's use of a tree; the tree cannot be evicted while a lease holds it.
pub struct Lease {
    cache: Arc<Cache>,
    digest: String,
    pub path: PathBuf,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut trees = self.cache.lock();
        if let Some(t) = trees.get_mut(&self.digest) {
            t.users = t.users.saturating_sub(1);
            t.last_used = Instant::now();
        }
    }
}

fn io_context(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Cache {
    /// Opens the cache in `dir`, adopting complete trees a previous run left and removing
    /// incomplete ones.
    pub fn open(dir: PathBuf, chunks: Chunks, max_bytes: u64) -> io::Result<Arc<Self>> {
        for sub in ["trees", "objects"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io_context(dir.join(sub).display()))?;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let mut trees = HashMap::new();
        for entry in std::fs::read_dir(dir.join("trees"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("tmp-") {
                let _ = std::fs::remove_dir_all(entry.path());
            } else if name.parse::<Digest>().is_ok() {
                let ready = Arc::new(OnceCell::new());
                let _ = ready.set(tree_bytes(&entry.path()));
                trees.insert(name, Tree { ready, users: 0, last_used: Instant::now() });
            }
        }
        Ok(Arc::new(Self { dir, chunks, max_bytes, trees: Mutex::new(trees) }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tree>> {
        self.trees.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tree of manifest `digest` (an empty digest: the empty tree), fetched if needed.
    pub async fn acquire(self: &Arc<Self>, digest: &str) -> io::Result<Lease> {
        let digest = if digest.is_empty() { "empty".to_owned() } else { digest.to_owned() };
        let ready = {
            let mut trees = self.lock();
            let t = trees.entry(digest.clone()).or_insert_with(|| Tree {
                ready: Arc::new(OnceCell::new()),
                users: 0,
                last_used: Instant::now(),
            });
            t.users += 1;
            t.ready.clone()
        };
        let lease = Lease { cache: self.clone(), digest: digest.clone(), path: self.dir.join("trees").join(&digest) };
        ready.get_or_try_init(|| self.fetch(&digest)).await?;
        self.evict();
        Ok(lease)
    }

    /// Downloads and verifies a manifest and its files into a new tree; returns its bytes.
    async fn fetch(&self, digest: &str) -> io::Result<u64> {
        let manifest = if digest == "empty" {
            Manifest::default()
        } else {
            let d: Digest =
                digest.parse().map_err(|_| io::Error::other(format!("malformed manifest digest {digest:?}")))?;
            let bytes = self.chunks.get(d).await.map_err(io::Error::other)?;
            Manifest::decode(&bytes).map_err(io::Error::other)?
        };
        let tmp = self.dir.join("trees").join(format!("tmp-{:016x}", rand::random::<u64>()));
        std::fs::create_dir(&tmp)?;
        let result = self.fill(&tmp, &manifest).await;
        let done = result.and_then(|bytes| {
            std::fs::rename(&tmp, self.dir.join("trees").join(digest))?;
            Ok(bytes)
        });
        if done.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        done
    }

    async fn fill(&self, root: &Path, manifest: &Manifest) -> io::Result<u64> {
        let mut bytes = 0;
        for (path, entry) in &manifest.entries {
            let at = root.join(path);
            if let Some(parent) = at.parent() {
                std::fs::create_dir_all(parent)?;
            }
            match entry.kind {
                EntryKind::Dir => {
                    std::fs::create_dir_all(&at)?;
                    std::fs::set_permissions(&at, std::fs::Permissions::from_mode(entry.mode & 0o777 | 0o500))?;
                }
                EntryKind::Symlink => symlink(entry.target.as_deref().unwrap_or_default(), &at)?,
                EntryKind::File => {
                    let d: Digest = entry
                        .digest
                        .as_deref()
                        .unwrap_or_default()
                        .parse()
                        .map_err(|_| io::Error::other(format!("manifest file {path:?} has a malformed digest")))?;
                    let object = self.object(d, entry.mode & 0o777).await?;
                    std::fs::hard_link(&object, &at).map_err(io_context(format!("linking {path:?}")))?;
                    bytes += entry.size;
                }
            }
        }
        Ok(bytes)
    }

    /// The node's one copy of content `d` with `mode`, fetched and verified when missing.
    async fn object(&self, d: Digest, mode: u32) -> io::Result<PathBuf> {
        let path = self.dir.join("objects").join(format!("{d}-{mode:o}"));
        if path.exists() {
            return Ok(path);
        }
        let tmp = path.with_extension(format!("tmp{:08x}", rand::random::<u32>()));
        let written = async {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            // Streamed, and verified by the stream's end: a corrupt content never gets its name.
            let mut pieces = self.chunks.get_stream(d).await.map_err(io::Error::other)?;
            while let Some(piece) = pieces.next().await {
                f.write_all(&piece.map_err(io::Error::other)?)?;
            }
            f.sync_data()?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = written.await {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(path)
    }

    /// The manifest digests of the complete trees.
    pub fn trees(&self) -> Vec<String> {
        self.lock().iter().filter(|(_, t)| t.ready.get().is_some()).map(|(d, _)| d.clone()).collect()
    }

    /// Bytes of all complete trees.
    pub fn bytes(&self) -> u64 {
        self.lock().values().filter_map(|t| t.ready.get().copied()).sum()
    }

    /// Removes unused trees, least recently used first, while the cache is over its cap; then
    /// objects no tree links any more.
    fn evict(&self) {
        let victims: Vec<String> = {
            let mut trees = self.lock();
            let mut total: u64 = trees.values().filter_map(|t| t.ready.get().copied()).sum();
            let mut idle: Vec<(Instant, String, u64)> = trees
                .iter()
                .filter(|(_, t)| t.users == 0)
                .filter_map(|(d, t)| t.ready.get().map(|b| (t.last_used, d.clone(), *b)))
                .collect();
            idle.sort();
            let mut out = Vec::new();
            for (_, d, b) in idle {
                if total <= self.max_bytes {
                    break;
                }
                trees.remove(&d);
                total -= b;
                out.push(d);
            }
            out
        };
        if victims.is_empty() {
            return;
        }
        for d in &victims {
            let _ = std::fs::remove_dir_all(self.dir.join("trees").join(d));
        }
        self.drop_unlinked_objects();
    }

    fn drop_unlinked_objects(&self) {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = std::fs::read_dir(self.dir.join("objects")) else { return };
        for entry in entries.flatten() {
            if entry.metadata().is_ok_and(|m| m.nlink() == 1) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Bytes of the regular files under `dir` (counted once per content, as hard links are).
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}
