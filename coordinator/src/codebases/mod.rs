//! The codebase component: records in the state store ([`records`]), file contents and file
//! lists in object storage, content-addressed so identical files across codebases (and across
//! uploads of one codebase) are stored once.
//!
//! An upload ([`upload`]) stores each file's content under its digest as it arrives; only when
//! the whole stream was valid does it write a new manifest blob and swap the record to it (one
//! compare-and-swap). A failed or interrupted upload changes nothing visible, and running it
//! again sends only the contents still missing ([`Codebases::missing`]).

pub mod download;
pub mod records;
pub mod upload;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use corral_blob::{Chunks, Digest};
use corral_core::codebase::{CodebaseRecord, EntryKind, Manifest};
use corral_core::ids::{CodebaseId, SandboxId, TenantId};
use corral_core::store::StateStore;
use corral_core::time::now_ms;
use futures::Stream;

use crate::cluster::ClusterView;
use crate::error::{ApiError, ApiResult, thousands};
pub use upload::CodebaseLimits;
use upload::UploadItem;

/// Manifests kept decoded in memory (they are immutable: named by digest).
const MANIFEST_CACHE: usize = 32;
/// Attempts to merge an upload into a record that other uploads change at the same time.
const MERGE_ATTEMPTS: usize = 8;

/// What an upload did.
#[derive(Debug)]
pub struct UploadOutcome {
    pub record: CodebaseRecord,
    pub files_received: u64,
    pub bytes_received: u64,
    pub bytes_deduplicated: u64,
}

pub struct Codebases {
    store: Arc<dyn StateStore>,
    chunks: Chunks,
    view: ClusterView,
    limits: CodebaseLimits,
    manifests: Mutex<HashMap<String, Arc<Manifest>>>,
}

impl Codebases {
    pub fn new(store: Arc<dyn StateStore>, chunks: Chunks, view: ClusterView, limits: CodebaseLimits) -> Self {
        Self { store, chunks, view, limits, manifests: Mutex::default() }
    }

    pub fn chunks(&self) -> &Chunks {
        &self.chunks
    }

    pub async fn create(
        &self,
        tenant: &TenantId,
        name: String,
        owner: String,
        labels: BTreeMap<String, String>,
    ) -> ApiResult<CodebaseRecord> {
        let now = now_ms();
        let record = CodebaseRecord {
            v: records::VERSION,
            id: CodebaseId::random(),
            tenant: tenant.clone(),
            name,
            owner,
            labels,
            manifest: None,
            file_count: 0,
            size_bytes: 0,
            created_at_ms: now,
            updated_at_ms: now,
        };
        records::create(self.store.as_ref(), &record).await?;
        Ok(record)
    }

    pub async fn get(&self, tenant: &TenantId, id: &CodebaseId) -> ApiResult<CodebaseRecord> {
        Ok(records::get(self.store.as_ref(), tenant, id).await?.record)
    }

    /// Live sandboxes created on `id`.
    pub fn users(&self, id: &CodebaseId) -> Vec<SandboxId> {
        self.view.using_codebase(id)
    }

    /// One page of a tenant's codebases carrying all `labels`, and the id to continue after.
    pub async fn list(
        &self,
        tenant: &TenantId,
        labels: &BTreeMap<String, String>,
        after: Option<CodebaseId>,
        page_size: usize,
    ) -> ApiResult<(Vec<CodebaseRecord>, Option<CodebaseId>)> {
        let mut out = Vec::new();
        let mut after = after;
        loop {
            let (batch, more) = records::page(self.store.as_ref(), tenant, after.as_ref(), page_size).await?;
            let n = batch.len();
            for (i, r) in batch.into_iter().enumerate() {
                after = Some(r.id.clone());
                if labels.iter().all(|(k, v)| r.labels.get(k) == Some(v)) {
                    out.push(r);
                    if out.len() == page_size {
                        let rest = more || i + 1 < n;
                        return Ok((out, after.filter(|_| rest)));
                    }
                }
            }
            if !more {
                return Ok((out, None));
            }
        }
    }

    /// The digests among `digests` whose content the store lacks.
    pub async fn missing(&self, digests: &[Digest]) -> ApiResult<Vec<Digest>> {
        let checks =
            digests.iter().map(|d| async move { self.chunks.contains(*d).await.map(|has| (!has).then_some(*d)) });
        let found = futures::future::try_join_all(checks).await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Receives an upload stream (after its start message) and merges it into codebase `id`.
    pub async fn upload<S>(
        &self,
        tenant: &TenantId,
        id: &CodebaseId,
        replace: bool,
        input: S,
    ) -> ApiResult<UploadOutcome>
    where
        S: Stream<Item = ApiResult<UploadItem>> + Unpin + Send,
    {
        // Refuse an unknown codebase before reading any content.
        records::get(self.store.as_ref(), tenant, id).await?;
        let got = upload::receive(&self.chunks, &self.limits, input).await?;
        for _ in 0..MERGE_ATTEMPTS {
            let current = records::get(self.store.as_ref(), tenant, id).await?;
            let mut manifest = match (&current.record.manifest, replace) {
                (Some(d), false) => (*self.manifest(d).await?).clone(),
                _ => Manifest { v: 1, ..Default::default() },
            };
            manifest.entries.extend(got.entries.iter().map(|(p, e)| (p.clone(), e.clone())));
            self.check(&manifest)?;
            let (files, bytes) = manifest.totals();
            let digest = self.chunks.put(Bytes::from(manifest.encode())).await?;
            let mut record = current.record.clone();
            record.manifest = Some(digest.to_string());
            record.file_count = files;
            record.size_bytes = bytes;
            record.updated_at_ms = now_ms().max(record.created_at_ms);
            if records::replace(self.store.as_ref(), &record, current.revision).await?.is_some() {
                return Ok(UploadOutcome {
                    record,
                    files_received: got.entries.len() as u64,
                    bytes_received: got.bytes_received,
                    bytes_deduplicated: got.bytes_deduplicated,
                });
            }
        }
        Err(ApiError::Conflict(format!("codebase {id}")))
    }

    /// Limits and shape of a merged manifest: no entry below a file or symlink.
    fn check(&self, m: &Manifest) -> ApiResult<()> {
        let (files, bytes) = m.totals();
        let limits = &self.limits;
        if files > limits.max_files {
            return Err(ApiError::OverLimit(format!(
                "the codebase would hold {} files, over coordinator.codebase_max_files = {}",
                thousands(files),
                thousands(limits.max_files)
            )));
        }
        if bytes > limits.max_total_bytes {
            return Err(ApiError::OverLimit(format!(
                "the codebase would hold {} bytes, over coordinator.codebase_max_mb ({} bytes)",
                thousands(bytes),
                thousands(limits.max_total_bytes)
            )));
        }
        for path in m.entries.keys() {
            let mut at = path.as_str();
            while let Some((parent, _)) = at.rsplit_once('/') {
                if let Some(e) = m.entries.get(parent)
                    && e.kind != EntryKind::Dir
                {
                    return Err(ApiError::field(
                        "file.path",
                        format!("{path:?} lies under {parent:?}, which is not a directory"),
                    ));
                }
                at = parent;
            }
        }
        Ok(())
    }

    /// The manifest named `digest` (hex), from the cache or the store.
    pub async fn manifest(&self, digest: &str) -> ApiResult<Arc<Manifest>> {
        if let Some(m) = self.lock().get(digest) {
            return Ok(m.clone());
        }
        let d: Digest =
            digest.parse().map_err(|_| ApiError::Internal(format!("manifest digest {digest:?} is malformed")))?;
        let bytes = self.chunks.get(d).await?;
        let m = Arc::new(Manifest::decode(&bytes).map_err(ApiError::Internal)?);
        let mut cache = self.lock();
        if cache.len() >= MANIFEST_CACHE {
            cache.clear();
        }
        cache.insert(digest.to_owned(), m.clone());
        Ok(m)
    }

    /// A codebase's manifest (empty before its first upload).
    pub async fn manifest_of(&self, record: &CodebaseRecord) -> ApiResult<Arc<Manifest>> {
        match &record.manifest {
            Some(d) => self.manifest(d).await,
            None => Ok(Arc::new(Manifest { v: 1, ..Default::default() })),
        }
    }

    /// Deletes codebase `id`; refused while live sandboxes use it unless `force` (they keep
    /// working: their nodes hold the files, and contents are never deleted under them).
    pub async fn delete(&self, tenant: &TenantId, id: &CodebaseId, force: bool) -> ApiResult<CodebaseRecord> {
        for _ in 0..MERGE_ATTEMPTS {
            let current = records::get(self.store.as_ref(), tenant, id).await?;
            let users = self.live_users(tenant, id).await?;
            if !users.is_empty() && !force {
                let shown: Vec<String> = users.iter().take(5).map(|s| s.to_string()).collect();
                return Err(ApiError::FailedPrecondition(format!(
                    "codebase {id} is used by {} live sandbox(es) ({}{}); destroy them first or delete with force",
                    users.len(),
                    shown.join(", "),
                    if users.len() > 5 { ", …" } else { "" }
                )));
            }
            if records::delete(self.store.as_ref(), tenant, id, current.revision).await? {
                return Ok(current.record);
            }
        }
        Err(ApiError::Conflict(format!("codebase {id}")))
    }

    /// Live sandboxes on `id`: the cluster view's, confirmed against their records (the view
    /// may not have seen an end that was just written).
    async fn live_users(&self, tenant: &TenantId, id: &CodebaseId) -> ApiResult<Vec<SandboxId>> {
        let mut live = Vec::new();
        for sb in self.users(id) {
            match crate::records::get(self.store.as_ref(), tenant, &sb).await {
                Ok(v) if !v.record.state.is_terminal() => live.push(sb),
                Ok(_) | Err(ApiError::SandboxNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(live)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Manifest>>> {
        self.manifests.lock().unwrap_or_else(|p| p.into_inner())
    }
}
