//! Corral's object storage: sandbox snapshots, file uploads and other large bytes live here,
//! not in etcd.
//!
//! - [`store`]: the [`BlobStore`] trait (put, streamed put, get, streamed get, head, delete,
//!   list, copy).
//! - [`object`]: [`ObjectBlobStore`], the one implementation, over `object_store`: in memory, in
//!   a local directory, or in an S3 bucket (AWS or any S3-protocol server).
//! - [`config`]: [`BlobConfig`] / [`S3Config`] and [`open`], which picks the backend at start-up.
//! - [`chunks`]: [`Chunks`], content addressing on top: blobs named by their BLAKE3 [`Digest`]
//!   ([`digest`]), deduplicated, and checked on every read.
//! - [`key`]: what a valid key is; [`error`]: [`BlobError`].
//!
//! One contract suite (`blob/tests/blob_contract.rs`) runs against memory, a directory and a
//! real S3-protocol server.

#![forbid(unsafe_code)]

pub mod chunks;
pub mod config;
pub mod digest;
pub mod error;
mod hashing;
pub mod key;
pub mod object;
pub mod store;

use std::sync::Arc;

pub use chunks::Chunks;
pub use config::{BlobConfig, S3Config};
pub use digest::Digest;
pub use error::BlobError;
pub use key::check_key;
pub use object::ObjectBlobStore;
pub use store::{BlobStore, PART_SIZE};

/// The blob store `config` names: a local directory (created if missing) or an S3 bucket.
/// Fails with [`BlobError::Invalid`] on a bad config; does not contact the store.
pub fn open(config: &BlobConfig) -> Result<Arc<dyn BlobStore>, BlobError> {
    Ok(match config {
        BlobConfig::Local { dir } => Arc::new(ObjectBlobStore::local(dir)?),
        BlobConfig::S3(s3) => Arc::new(ObjectBlobStore::s3(s3)?),
    })
}
