//! [`BlobError`] and the one place that maps `object_store` errors to it.

use crate::Digest;

/// The boxed cause of [`BlobError::Unavailable`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong storing or reading a blob.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No blob under `key`.
    #[error("blob {key} not found")]
    NotFound { key: String },
    /// The bytes under `key` do not hash to the digest that names them.
    #[error("blob {key} is corrupt: expected blake3 {expected}, found {actual}")]
    Corrupt { key: String, expected: Digest, actual: Digest },
    /// The content is longer than the caller's limit; nothing was kept.
    #[error("blob {key} is larger than the limit of {limit} bytes")]
    TooLarge { key: String, limit: u64 },
    /// The store failed or could not be reached (after its bounded retries), or the source being
    /// uploaded failed to read. Callers may retry later.
    #[error("blob store unavailable: {op} {key}: {source}")]
    Unavailable {
        op: &'static str,
        key: String,
        #[source]
        source: BoxError,
    },
    /// A bad key, digest or configuration: a bug or a mistake in the caller's input.
    #[error("invalid blob request: {0}")]
    Invalid(String),
}

impl BlobError {
    /// Maps an `object_store` error of operation `op` on `key`.
    pub(crate) fn from_store(op: &'static str, key: &str, err: object_store::Error) -> Self {
        match err {
            object_store::Error::NotFound { .. } => BlobError::NotFound { key: key.to_owned() },
            object_store::Error::InvalidPath { source } => BlobError::Invalid(format!("key {key:?}: {source}")),
            other => BlobError::Unavailable { op, key: key.to_owned(), source: Box::new(other) },
        }
    }

    /// An I/O error reading the caller's source while uploading to `key`.
    pub(crate) fn source_read(key: &str, err: std::io::Error) -> Self {
        BlobError::Unavailable { op: "read source", key: key.to_owned(), source: Box::new(err) }
    }
}
