//! Receiving an upload: a stream of file headers and data, each file's content stored under its
//! digest as it arrives (so an interrupted upload, run again, sends only what is missing), and
//! nothing else changed until the whole stream is valid. The caller then merges the entries into
//! the codebase's manifest.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use corral_blob::{Chunks, Digest};
use corral_core::codebase::{Entry, EntryKind};
use corral_core::ids::CodebaseId;
use futures::{Stream, StreamExt};

use crate::error::{ApiError, ApiResult, thousands};

/// Files up to this size are gathered in memory and stored in one write; larger ones stream.
const GATHER_BYTES: u64 = 4 << 20;

/// Size limits of codebases (the `coordinator.codebase_*` settings).
#[derive(Debug, Clone, Copy)]
pub struct CodebaseLimits {
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
    pub max_files: u64,
}

/// One message of an upload stream, checked field by field at the edge.
#[derive(Debug)]
pub enum UploadItem {
    Start { id: CodebaseId, replace: bool },
    File(FileHeader),
    Data(Bytes),
}

#[derive(Debug, Clone)]
pub struct FileHeader {
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub size: u64,
    pub digest: Option<Digest>,
    pub by_reference: bool,
    pub target: Option<String>,
}

/// What an upload delivered, before it is merged.
#[derive(Debug, Default)]
pub struct Received {
    pub entries: BTreeMap<String, Entry>,
    pub bytes_received: u64,
    pub bytes_deduplicated: u64,
    /// Sum of the declared sizes of the files so far.
    pub declared_bytes: u64,
}

/// Reads the stream after its `Start` to the end, storing each file's content. One upload may
/// carry no more than a whole codebase may hold (checked as it goes, so an oversized stream
/// stores no more than the limits allow before it is refused).
pub async fn receive<S>(chunks: &Chunks, limits: &CodebaseLimits, mut input: S) -> ApiResult<Received>
where
    S: Stream<Item = ApiResult<UploadItem>> + Unpin + Send,
{
    let mut got = Received::default();
    loop {
        let item = match input.next().await {
            Some(item) => item?,
            None => return Ok(got),
        };
        let header = match item {
            UploadItem::File(h) => h,
            UploadItem::Data(_) => return Err(ApiError::field("data", "data message without a file header before it")),
            UploadItem::Start { .. } => return Err(ApiError::field("start", "a second start message")),
        };
        if got.entries.contains_key(&header.path) {
            return Err(ApiError::field("file.path", format!("{:?} appears twice in this upload", header.path)));
        }
        if got.entries.len() as u64 >= limits.max_files {
            return Err(ApiError::OverLimit(format!(
                "the upload carries more than {} entries, coordinator.codebase_max_files",
                thousands(limits.max_files)
            )));
        }
        got.declared_bytes += header.size;
        if got.declared_bytes > limits.max_total_bytes {
            return Err(ApiError::OverLimit(format!(
                "the upload carries more than {} bytes, coordinator.codebase_max_mb",
                thousands(limits.max_total_bytes)
            )));
        }
        let digest = match header.kind {
            EntryKind::File => Some(store_file(chunks, limits.max_file_bytes, &header, &mut input, &mut got).await?),
            _ => None,
        };
        let entry = Entry {
            kind: header.kind,
            mode: header.mode,
            size: if header.kind == EntryKind::File { header.size } else { 0 },
            digest: digest.map(|d| d.to_string()),
            target: header.target.clone(),
        };
        got.entries.insert(header.path, entry);
    }
}

/// Stores one file's content (or checks a reference), returning its digest.
async fn store_file<S>(
    chunks: &Chunks,
    max_file_bytes: u64,
    h: &FileHeader,
    input: &mut S,
    got: &mut Received,
) -> ApiResult<Digest>
where
    S: Stream<Item = ApiResult<UploadItem>> + Unpin + Send,
{
    let path = &h.path;
    if h.size > max_file_bytes {
        return Err(ApiError::OverLimit(format!(
            "file {path:?} is {} bytes, over the largest file a codebase takes ({} bytes, \
             coordinator.codebase_max_file_mb)",
            thousands(h.size),
            thousands(max_file_bytes)
        )));
    }
    if h.by_reference {
        let d =
            h.digest.ok_or_else(|| ApiError::field("file.digest", format!("{path:?}: by_reference needs a digest")))?;
        return match chunks.size(d).await? {
            Some(n) if n == h.size => {
                got.bytes_deduplicated += n;
                Ok(d)
            }
            Some(n) => Err(ApiError::field(
                "file.size",
                format!("{path:?}: declared {} bytes, but content {d} holds {}", h.size, n),
            )),
            None => {
                Err(ApiError::FailedPrecondition(format!("file {path:?}: content {d} is not stored; send its bytes")))
            }
        };
    }
    if h.size <= GATHER_BYTES {
        let mut buf = BytesMut::with_capacity(h.size as usize);
        take_data(input, path, h.size, |piece| {
            buf.extend_from_slice(&piece);
            async { Ok(()) }
        })
        .await?;
        let bytes = buf.freeze();
        let d = Digest::of(&bytes);
        check_digest(path, h.digest, d)?;
        got.bytes_received += h.size;
        if chunks.contains(d).await? {
            got.bytes_deduplicated += h.size;
        } else {
            chunks.put(bytes).await?;
        }
        return Ok(d);
    }
    // Large: stream it through a bounded channel into the store while reading the input.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let mut reader = tokio_util::io::StreamReader::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let feed = async {
        let next = take_data(input, path, h.size, |piece| {
            let tx = tx.clone();
            async move { tx.send(Ok(piece)).await.map_err(|_| ApiError::Internal("the store stopped reading".into())) }
        })
        .await;
        if next.is_err() {
            let _ = tx.send(Err(std::io::Error::other("upload aborted"))).await;
        }
        drop(tx);
        next
    };
    let store = async {
        match h.digest {
            Some(d) => chunks.put_expect(d, &mut reader, max_file_bytes).await.map(|_| d),
            None => chunks.put_stream(&mut reader, max_file_bytes).await.map(|(d, _)| d),
        }
    };
    let (next, stored) = tokio::join!(feed, store);
    next?;
    let d = stored?;
    got.bytes_received += h.size;
    Ok(d)
}

fn check_digest(path: &str, declared: Option<Digest>, actual: Digest) -> ApiResult<()> {
    match declared {
        Some(d) if d != actual => Err(ApiError::field(
            "file.digest",
            format!("{path:?}: the bytes sent hash to {actual}, not the declared {d}"),
        )),
        _ => Ok(()),
    }
}

/// Consumes `Data` items totalling exactly `size` bytes, handing each to `sink`.
async fn take_data<S, F, Fut>(input: &mut S, path: &str, size: u64, mut sink: F) -> ApiResult<()>
where
    S: Stream<Item = ApiResult<UploadItem>> + Unpin + Send,
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = ApiResult<()>>,
{
    let mut left = size;
    while left > 0 {
        match input.next().await {
            Some(Ok(UploadItem::Data(piece))) => {
                if piece.len() as u64 > left {
                    return Err(ApiError::field(
                        "data",
                        format!("{path:?}: more data than its declared size of {size} bytes"),
                    ));
                }
                left -= piece.len() as u64;
                sink(piece).await?;
            }
            Some(Ok(_)) | None => {
                return Err(ApiError::field(
                    "data",
                    format!("{path:?}: {size} bytes declared, {} received", size - left),
                ));
            }
            Some(Err(e)) => return Err(e),
        }
    }
    Ok(())
}
