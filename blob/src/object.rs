//! [`ObjectBlobStore`]: [`BlobStore`] over any `object_store` backend (memory, a local
//! directory, S3).

use std::fmt;
use std::path::Path as FsPath;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::instrument;

use crate::key::{check_key, check_prefix};
use crate::{BlobError, BlobStore, PART_SIZE, S3Config};

/// Parts of a multipart upload in flight at once (so at most this many + 1 parts are in memory).
const PARTS_IN_FLIGHT: usize = 2;

/// [`BlobStore`] over an `object_store` backend.
#[derive(Clone)]
pub struct ObjectBlobStore {
    store: Arc<dyn ObjectStore>,
}

impl fmt::Debug for ObjectBlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectBlobStore({})", self.store)
    }
}

impl ObjectBlobStore {
    /// Over any `object_store` backend.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    /// In this process's memory: for tests and `corral dev`; gone with the process.
    pub fn memory() -> Self {
        Self::new(Arc::new(InMemory::new()))
    }

    /// In the directory `dir` (created if missing), one file per key, written with fsync so a
    /// stored blob survives a crash like it would on S3.
    pub fn local(dir: &FsPath) -> Result<Self, BlobError> {
        let bad = |e: &dyn fmt::Display| BlobError::Invalid(format!("blob directory {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(|e| bad(&e))?;
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(|e| bad(&e))?;
        Ok(Self::new(Arc::new(fs.with_automatic_cleanup(true).with_fsync(true))))
    }

    /// In an S3 bucket (AWS or any S3-protocol server), under `config.prefix`.
    pub fn s3(config: &S3Config) -> Result<Self, BlobError> {
        crate::config::build_s3(config).map(Self::new)
    }

    /// The backend, for what the trait does not cover.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    async fn put_multipart(
        &self,
        key: &str,
        path: &object_store::path::Path,
        first: Bytes,
        reader: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<u64, BlobError> {
        let store_err = |e| BlobError::from_store("put_stream", key, e);
        let upload = self.store.put_multipart(path).await.map_err(store_err)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut total = first.len() as u64;
        writer.put(first);
        loop {
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                abort(writer, key).await;
                return Err(store_err(e));
            }
            let part = match read_part(reader).await {
                Ok(part) => part,
                Err(e) => {
                    abort(writer, key).await;
                    return Err(BlobError::source_read(key, e));
                }
            };
            if part.is_empty() {
                break;
            }
            total += part.len() as u64;
            writer.put(part);
        }
        writer.finish().await.map_err(store_err)?;
        Ok(total)
    }
}

/// Aborts a multipart upload, so no parts are left behind (logged if that fails too).
async fn abort(writer: WriteMultipart, key: &str) {
    if let Err(e) = writer.abort().await {
        tracing::warn!(key, error = %e, "aborting a multipart upload failed; its parts may linger");
    }
}

/// Reads up to [`PART_SIZE`] bytes: fewer only at the end of `reader`.
async fn read_part(reader: &mut (dyn AsyncRead + Send + Unpin)) -> std::io::Result<Bytes> {
    let mut buf = vec![0u8; PART_SIZE];
    let mut filled = 0;
    while filled < PART_SIZE {
        let n = reader.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    #[instrument(level = "debug", skip(self, data), fields(len = data.len()))]
    async fn put(&self, key: &str, data: Bytes) -> Result<(), BlobError> {
        let path = check_key(key)?;
        self.store.put(&path, PutPayload::from(data)).await.map_err(|e| BlobError::from_store("put", key, e))?;
        Ok(())
    }

    #[instrument(level = "debug", skip(self, reader))]
    async fn put_stream(&self, key: &str, reader: &mut (dyn AsyncRead + Send + Unpin)) -> Result<u64, BlobError> {
        let path = check_key(key)?;
        let first = read_part(reader).await.map_err(|e| BlobError::source_read(key, e))?;
        if first.len() < PART_SIZE {
            // All of it fits in one part: one plain request.
            let len = first.len() as u64;
            self.store.put(&path, first.into()).await.map_err(|e| BlobError::from_store("put_stream", key, e))?;
            return Ok(len);
        }
        self.put_multipart(key, &path, first, reader).await
    }

    #[instrument(level = "debug", skip(self))]
    async fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        let path = check_key(key)?;
        let err = |e| BlobError::from_store("get", key, e);
        self.store.get(&path).await.map_err(err)?.bytes().await.map_err(err)
    }

    #[instrument(level = "debug", skip(self))]
    async fn get_stream(&self, key: &str) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
        let path = check_key(key)?;
        let result = self.store.get(&path).await.map_err(|e| BlobError::from_store("get_stream", key, e))?;
        let key = key.to_owned();
        Ok(result.into_stream().map_err(move |e| BlobError::from_store("get_stream", &key, e)).boxed())
    }

    #[instrument(level = "debug", skip(self))]
    async fn head(&self, key: &str) -> Result<Option<u64>, BlobError> {
        let path = check_key(key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(BlobError::from_store("head", key, e)),
        }
    }

    #[instrument(level = "debug", skip(self))]
    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = check_key(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(BlobError::from_store("delete", key, e)),
        }
    }

    #[instrument(level = "debug", skip(self))]
    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, BlobError> {
        let path = check_prefix(prefix)?;
        let mut listed: Vec<(String, u64)> = self
            .store
            .list(path.as_ref())
            .map_ok(|meta| (meta.location.to_string(), meta.size))
            .try_collect()
            .await
            .map_err(|e| BlobError::from_store("list", prefix, e))?;
        listed.sort_unstable();
        Ok(listed)
    }

    #[instrument(level = "debug", skip(self))]
    async fn copy(&self, from: &str, to: &str) -> Result<(), BlobError> {
        let (from_path, to_path) = (check_key(from)?, check_key(to)?);
        if from == to {
            // S3 refuses a copy onto itself; the outcome is the same everywhere: nothing changes.
            return match self.head(from).await? {
                Some(_) => Ok(()),
                None => Err(BlobError::NotFound { key: from.to_owned() }),
            };
        }
        self.store.copy(&from_path, &to_path).await.map_err(|e| BlobError::from_store("copy", from, e))
    }
}
