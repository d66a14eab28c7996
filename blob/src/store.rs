//! The [`BlobStore`] trait: keyed byte objects, in Corral's terms.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tokio::io::AsyncRead;

use crate::BlobError;

/// Size of one part of a multipart upload in [`BlobStore::put_stream`] (S3 wants ≥ 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// A store of immutable-by-convention byte objects under string keys (see [`crate::check_key`]
/// for what a key may be). Implementations: [`crate::ObjectBlobStore`] on memory, a local
/// directory or S3; all pass `blob/tests/blob_contract.rs`.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores `data` under `key` in one request, replacing what was there. Readers see the old
    /// or the new object, never a part.
    async fn put(&self, key: &str, data: Bytes) -> Result<(), BlobError>;

    /// Streams `reader` to `key` (multipart upload for large data, never fully buffered; parts of
    /// [`PART_SIZE`]). Returns bytes written. On error nothing new is visible under `key`.
    async fn put_stream(&self, key: &str, reader: &mut (dyn AsyncRead + Send + Unpin)) -> Result<u64, BlobError>;

    /// The whole object under `key`.
    async fn get(&self, key: &str) -> Result<Bytes, BlobError>;

    /// The object under `key` as a stream of chunks; a missing key fails before the stream.
    async fn get_stream(&self, key: &str) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError>;

    /// Size if present.
    async fn head(&self, key: &str) -> Result<Option<u64>, BlobError>;

    /// Deleting a missing key is Ok.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;

    /// Keys under a prefix with sizes (all pages), sorted by key. The prefix is empty (all keys)
    /// or whole segments: `a/b` covers `a/b/c`, not `a/bc`.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, BlobError>;

    /// Copies `from` to `to` (server-side where the backend can), replacing `to`.
    async fn copy(&self, from: &str, to: &str) -> Result<(), BlobError>;
}
