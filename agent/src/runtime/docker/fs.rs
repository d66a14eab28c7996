//! The files API of a Docker sandbox: every operation is done by the init inside the container
//! (as the sandbox user, confined to `/workspace` and `/tmp` by `openat2`), never through the
//! host's view of the container's filesystem. Paths are checked here first exactly as for
//! bubblewrap, so both runtimes refuse the same paths with the same errors. Reads and writes
//! larger than a frame travel in pieces; a write stays atomic (a temp file renamed at the end).

use std::io;
use std::time::Duration;

use corral_core::model::FileEntry;
use corral_init::protocol::{FileOp, FileReply, MAX_FILE_PIECE, Request};

use super::attach::Container;
use crate::runtime::files::{self, MAX_READ};
use crate::runtime::{FileChunk, RuntimeError, RuntimeResult};

/// How long one file request may take inside the sandbox.
const FILE_TIMEOUT: Duration = Duration::from_secs(60);

async fn request(c: &Container, path: &str, op: FileOp) -> RuntimeResult<FileReply> {
    c.client.check_running()?;
    let conn = &c.client.conn;
    let id = rand::random::<u64>();
    let reply = conn.register_file(id)?;
    if let Err(e) = conn.send(&Request::File { id, op }).await {
        conn.unregister_file(id);
        return Err(e);
    }
    match tokio::time::timeout(FILE_TIMEOUT, reply).await {
        Ok(Ok(Ok(reply))) => Ok(reply),
        Ok(Ok(Err(failure))) => Err(files::failure_error(path, failure)),
        Ok(Err(_)) => Err(RuntimeError::io("the sandbox is no longer running", io::ErrorKind::BrokenPipe.into())),
        Err(_) => {
            conn.unregister_file(id);
            Err(RuntimeError::io(format!("file operation on {path:?}"), io::ErrorKind::TimedOut.into()))
        }
    }
}

fn unexpected(path: &str, reply: FileReply) -> RuntimeError {
    RuntimeError::io(format!("file operation on {path:?}"), io::Error::other(format!("unexpected reply {reply:?}")))
}

pub async fn read(c: &Container, path: &str, offset: u64, len: u32) -> RuntimeResult<FileChunk> {
    files::check(path)?;
    let want = len.min(MAX_READ) as usize;
    let mut chunk = FileChunk { data: Vec::new(), size: 0, mode: 0 };
    loop {
        let piece = (want - chunk.data.len()).min(MAX_FILE_PIECE) as u32;
        let at = offset + chunk.data.len() as u64;
        let data = match request(c, path, FileOp::Read { path: path.to_owned(), offset: at, len: piece }).await? {
            FileReply::Read(d) => d,
            other => return Err(unexpected(path, other)),
        };
        let got = data.data.len();
        chunk.data.extend(data.data);
        (chunk.size, chunk.mode) = (data.size, data.mode);
        if got < piece as usize || chunk.data.len() >= want {
            return Ok(chunk);
        }
    }
}

pub async fn write(c: &Container, path: &str, data: &[u8], mode: u32) -> RuntimeResult<u64> {
    let (_, mode) = files::check_write(path, mode)?;
    let token = rand::random::<u64>();
    let pieces: Vec<&[u8]> = if data.is_empty() { vec![data] } else { data.chunks(MAX_FILE_PIECE).collect() };
    let (count, mut offset) = (pieces.len(), 0u64);
    for (i, piece) in pieces.into_iter().enumerate() {
        let op =
            FileOp::Write { path: path.to_owned(), data: piece.to_vec(), offset, last: i + 1 == count, mode, token };
        match request(c, path, op).await? {
            FileReply::Written(n) => offset = n,
            other => return Err(unexpected(path, other)),
        }
    }
    Ok(offset)
}

pub async fn list(c: &Container, path: &str) -> RuntimeResult<Vec<FileEntry>> {
    files::check(path)?;
    match request(c, path, FileOp::List { path: path.to_owned() }).await? {
        FileReply::List(entries) => Ok(entries.into_iter().map(files::entry).collect()),
        other => Err(unexpected(path, other)),
    }
}

pub async fn remove(c: &Container, path: &str, recursive: bool) -> RuntimeResult<()> {
    files::check_remove(path)?;
    match request(c, path, FileOp::Remove { path: path.to_owned(), recursive }).await? {
        FileReply::Removed => Ok(()),
        other => Err(unexpected(path, other)),
    }
}
