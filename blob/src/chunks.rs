//! [`Chunks`]: content-addressed blobs on any [`BlobStore`], named by their BLAKE3 [`Digest`].
//!
//! A chunk lives at `{prefix}/{hex[0..2]}/{hex}`. Writes of unknown content stream to a temporary
//! key `{prefix}/tmp/{random}` while hashing, and are copied to their final key only once the
//! hash is known (and checked, for [`Chunks::put_expect`]), so a final key never holds content
//! that does not match its name. Reads check the hash too: bytes changed at rest are reported as
//! [`BlobError::Corrupt`], never returned as the chunk.
//!
//! A crash between the upload and the clean-up can leave a temporary key behind; they are listed
//! by nothing here and are safe to delete once older than any upload in flight.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use tokio::io::AsyncRead;

use crate::hashing::{HashingReader, Verified};
use crate::{BlobError, BlobStore, Digest};

/// Content-addressed chunks under one prefix of a [`BlobStore`].
#[derive(Clone)]
pub struct Chunks {
    store: Arc<dyn BlobStore>,
    /// Without a trailing `/`; empty puts chunks at the store's root.
    prefix: String,
}

impl std::fmt::Debug for Chunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunks").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl Chunks {
    /// Chunks under `prefix` (e.g. `chunks`) of `store`. A bad prefix shows as
    /// [`BlobError::Invalid`] on first use.
    pub fn new(store: Arc<dyn BlobStore>, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        let prefix = prefix.strip_suffix('/').map(str::to_owned).unwrap_or(prefix);
        Self { store, prefix }
    }

    /// The store the chunks live in.
    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    /// The key of chunk `d`: `{prefix}/{hex[0..2]}/{hex}`.
    pub fn key(&self, d: Digest) -> String {
        let hex = d.to_hex();
        self.under(&format!("{}/{hex}", &hex[..2]))
    }

    /// Stores `data` and returns its digest; skips the upload when the chunk exists (dedup).
    pub async fn put(&self, data: Bytes) -> Result<Digest, BlobError> {
        let digest = Digest::of(&data);
        let key = self.key(digest);
        if self.store.head(&key).await?.is_none() {
            self.store.put(&key, data).await?;
        }
        Ok(digest)
    }

    /// Streams `reader` into the store, hashing on the way, and returns its digest and length.
    /// Refuses with [`BlobError::TooLarge`] past `limit` bytes, keeping nothing.
    pub async fn put_stream(
        &self,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        limit: u64,
    ) -> Result<(Digest, u64), BlobError> {
        let (tmp, digest, len) = self.stage(reader, limit).await?;
        self.commit(&tmp, digest).await?;
        Ok((digest, len))
    }

    /// Like [`Chunks::put_stream`], but the content must hash to `expected`: otherwise refuses
    /// with [`BlobError::Corrupt`] and stores nothing under `expected`'s key. When `expected`
    /// is already stored, returns its size without reading `reader`.
    pub async fn put_expect(
        &self,
        expected: Digest,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        limit: u64,
    ) -> Result<u64, BlobError> {
        if let Some(size) = self.size(expected).await? {
            return Ok(size);
        }
        let (tmp, actual, len) = self.stage(reader, limit).await?;
        if actual != expected {
            self.discard(&tmp).await;
            return Err(BlobError::Corrupt { key: self.key(expected), expected, actual });
        }
        self.commit(&tmp, actual).await?;
        Ok(len)
    }

    /// The chunk's bytes, checked against `d` ([`BlobError::Corrupt`] if they differ).
    pub async fn get(&self, d: Digest) -> Result<Bytes, BlobError> {
        let key = self.key(d);
        let data = self.store.get(&key).await?;
        let actual = Digest::of(&data);
        if actual != d {
            return Err(BlobError::Corrupt { key, expected: d, actual });
        }
        Ok(data)
    }

    /// The chunk as a stream, checked at its end: when the bytes do not hash to `d`, the last
    /// item is `Err(Corrupt)` (so a consumer must not trust the data until the stream ends).
    pub async fn get_stream(&self, d: Digest) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
        let key = self.key(d);
        let inner = self.store.get_stream(&key).await?;
        Ok(Verified::new(inner, key, d).boxed())
    }

    /// True if chunk `d` is stored.
    pub async fn contains(&self, d: Digest) -> Result<bool, BlobError> {
        Ok(self.size(d).await?.is_some())
    }

    /// The stored size of chunk `d`, if it is stored.
    pub async fn size(&self, d: Digest) -> Result<Option<u64>, BlobError> {
        self.store.head(&self.key(d)).await
    }

    /// Deletes chunk `d` (Ok if it is not stored).
    pub async fn delete(&self, d: Digest) -> Result<(), BlobError> {
        self.store.delete(&self.key(d)).await
    }

    /// Every stored chunk with its size, by digest; temporary keys and keys that do not name a
    /// chunk are skipped.
    pub async fn list(&self) -> Result<Vec<(Digest, u64)>, BlobError> {
        let listed = self.store.list(&self.prefix).await?;
        let strip = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        let mut chunks: Vec<(Digest, u64)> = listed
            .into_iter()
            .filter_map(|(key, size)| {
                let rest = key.strip_prefix(&strip)?;
                let (fan, hex) = rest.split_once('/')?;
                let digest: Digest = hex.parse().ok().filter(|_| hex.starts_with(fan) && fan.len() == 2)?;
                Some((digest, size))
            })
            .collect();
        chunks.sort_unstable();
        Ok(chunks)
    }

    /// `rest` under the prefix.
    fn under(&self, rest: &str) -> String {
        if self.prefix.is_empty() { rest.to_owned() } else { format!("{}/{rest}", self.prefix) }
    }

    /// Uploads `reader` to a fresh temporary key, hashing and counting on the way. On failure the
    /// temporary key is gone.
    async fn stage(
        &self,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        limit: u64,
    ) -> Result<(String, Digest, u64), BlobError> {
        let tmp = self.under(&format!("tmp/{:032x}", rand::random::<u128>()));
        let mut hashing = HashingReader::new(reader, limit);
        match self.store.put_stream(&tmp, &mut hashing).await {
            Ok(_) => {
                let (digest, len) = hashing.finish();
                Ok((tmp, digest, len))
            }
            Err(e) => {
                self.discard(&tmp).await;
                if hashing.exceeded() {
                    return Err(BlobError::TooLarge { key: tmp, limit });
                }
                Err(e)
            }
        }
    }

    /// Moves a staged upload whose content hashes to `digest` to its final key (unless the
    /// chunk is already stored), then deletes the temporary key.
    async fn commit(&self, tmp: &str, digest: Digest) -> Result<(), BlobError> {
        let key = self.key(digest);
        let copied = match self.store.head(&key).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => self.store.copy(tmp, &key).await,
            Err(e) => Err(e),
        };
        self.discard(tmp).await;
        copied
    }

    /// Deletes a temporary key, best effort: a leftover one holds no chunk and is only garbage.
    async fn discard(&self, tmp: &str) {
        if let Err(e) = self.store.delete(tmp).await {
            tracing::warn!(key = tmp, error = %e, "deleting a temporary upload failed");
        }
    }
}
