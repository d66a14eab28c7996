//! Downloads from a codebase: one file's bytes, or a directory as a tar stream (ustar headers,
//! GNU long names past 100 bytes), produced as the client reads and never held whole in memory.

use std::sync::Arc;

use bytes::Bytes;
use corral_blob::{Chunks, Digest};
use corral_core::codebase::{Entry, EntryKind, Manifest};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};

/// One message of a download.
#[derive(Debug)]
pub enum Piece {
    /// First: "file" with its size, or "tar" with -1.
    Header {
        format: &'static str,
        size: i64,
    },
    Data(Bytes),
}

const BLOCK: usize = 512;

/// Starts a download of `path` ("" = everything) and returns its pieces as they are produced.
pub fn start(chunks: Chunks, manifest: Arc<Manifest>, path: String) -> ApiResult<mpsc::Receiver<ApiResult<Piece>>> {
    let file = manifest.entries.get(&path).filter(|e| e.kind == EntryKind::File).cloned();
    let under = if path.is_empty() { String::new() } else { format!("{path}/") };
    if file.is_none() && !path.is_empty() && !manifest.entries.keys().any(|p| p.starts_with(&under)) {
        return Err(ApiError::NotFound(format!("path {path:?} in the codebase")));
    }
    let (tx, rx) = mpsc::channel(8);
    corral_core::task::spawn_detached("codebase.download", async move {
        let result = match file {
            Some(entry) => send_file(&chunks, &tx, &entry).await,
            None => send_tar(&chunks, &tx, &manifest, &under).await,
        };
        if let Err(e) = result {
            let _ = tx.send(Err(e)).await;
        }
    });
    Ok(rx)
}

type Tx = mpsc::Sender<ApiResult<Piece>>;

/// Sends a piece; `Err` when the client went away (the download just stops).
async fn send(tx: &Tx, piece: Piece) -> ApiResult<()> {
    tx.send(Ok(piece)).await.map_err(|_| ApiError::Internal("download receiver gone".into()))
}

async fn send_file(chunks: &Chunks, tx: &Tx, entry: &Entry) -> ApiResult<()> {
    send(tx, Piece::Header { format: "file", size: entry.size as i64 }).await?;
    send_content(chunks, tx, entry).await
}

async fn send_content(chunks: &Chunks, tx: &Tx, entry: &Entry) -> ApiResult<()> {
    let digest: Digest = entry
        .digest
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|_| ApiError::Internal("a manifest file has a malformed digest".into()))?;
    let mut stream = chunks.get_stream(digest).await?;
    while let Some(piece) = stream.next().await {
        send(tx, Piece::Data(piece?)).await?;
    }
    Ok(())
}

async fn send_tar(chunks: &Chunks, tx: &Tx, manifest: &Manifest, under: &str) -> ApiResult<()> {
    send(tx, Piece::Header { format: "tar", size: -1 }).await?;
    for (path, entry) in manifest.entries.range(under.to_owned()..) {
        let Some(rel) = path.strip_prefix(under) else { break };
        for block in headers(rel, entry) {
            send(tx, Piece::Data(block)).await?;
        }
        if entry.kind == EntryKind::File {
            send_content(chunks, tx, entry).await?;
            let pad = (BLOCK - (entry.size as usize % BLOCK)) % BLOCK;
            if pad > 0 {
                send(tx, Piece::Data(Bytes::from(vec![0u8; pad]))).await?;
            }
        }
    }
    send(tx, Piece::Data(Bytes::from(vec![0u8; 2 * BLOCK]))).await
}

/// The header blocks of one entry: a GNU long-name entry first when the path does not fit.
fn headers(path: &str, entry: &Entry) -> Vec<Bytes> {
    let mut out = Vec::new();
    let name = if entry.kind == EntryKind::Dir { format!("{path}/") } else { path.to_owned() };
    let link = entry.target.clone().unwrap_or_default();
    if name.len() > 100 {
        out.extend(long_name(b'L', &name));
    }
    if link.len() > 100 {
        out.extend(long_name(b'K', &link));
    }
    let (kind, size) = match entry.kind {
        EntryKind::File => (b'0', entry.size),
        EntryKind::Dir => (b'5', 0),
        EntryKind::Symlink => (b'2', 0),
    };
    out.push(header(&name, kind, entry.mode, size, &link));
    out
}

fn long_name(kind: u8, name: &str) -> Vec<Bytes> {
    let mut data = name.as_bytes().to_vec();
    data.push(0);
    let mut blocks = vec![header("././@LongLink", kind, 0o644, data.len() as u64, "")];
    data.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
    blocks.push(Bytes::from(data));
    blocks
}

/// One 512-byte ustar header (GNU magic), names cut to their fields' widths.
fn header(name: &str, kind: u8, mode: u32, size: u64, link: &str) -> Bytes {
    let mut h = [0u8; BLOCK];
    let put = |h: &mut [u8; BLOCK], at: usize, width: usize, bytes: &[u8]| {
        let n = bytes.len().min(width);
        h[at..at + n].copy_from_slice(&bytes[..n]);
    };
    let octal = |h: &mut [u8; BLOCK], at: usize, width: usize, v: u64| {
        let s = format!("{v:0w$o}", w = width - 1);
        put(h, at, width - 1, s.as_bytes());
    };
    put(&mut h, 0, 100, name.as_bytes());
    octal(&mut h, 100, 8, u64::from(mode & 0o777));
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, size);
    octal(&mut h, 136, 12, 0);
    h[156] = kind;
    put(&mut h, 157, 100, link.as_bytes());
    put(&mut h, 257, 8, b"ustar  \0");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    put(&mut h, 148, 8, s.as_bytes());
    Bytes::copy_from_slice(&h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_carry_checksums_and_long_names() {
        let e = Entry { kind: EntryKind::File, mode: 0o644, size: 5, digest: None, target: None };
        let short = headers("a/b.txt", &e);
        assert_eq!(short.len(), 1);
        let h = &short[0];
        let stored = std::str::from_utf8(&h[148..154]).unwrap();
        let mut copy = h.to_vec();
        copy[148..156].fill(b' ');
        let sum: u32 = copy.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(u32::from_str_radix(stored, 8).unwrap(), sum);
        assert_eq!(&h[124..135], b"00000000005");
        let long = headers(&"d/".repeat(80), &e);
        assert_eq!(long.len(), 3, "long-name header, its data, the entry");
        assert_eq!(long[0][156], b'L');
    }
}
