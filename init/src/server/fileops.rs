//! File requests served inside the sandbox (Docker), confined to `/workspace` and `/tmp` by
//! [`crate::files`]. The init runs as the sandbox user, so what it creates is the user's already.

use std::io;

use crate::files::{self, Area, Target, WritePiece};
use crate::protocol::{self, Event, FileFailure, FileOp, FileReply, MAX_FILE_PIECE};

/// Runs one file operation and returns its answer (always small enough for one frame).
pub fn handle(id: u64, op: FileOp) -> Event {
    let result = run(op).map_err(|e| failure(&e));
    let event = Event::File { id, result };
    match protocol::encode(&event) {
        Ok(_) => event,
        Err(e) => Event::File {
            id,
            result: Err(FileFailure { errno: libc::E2BIG, not_regular: false, message: e.to_string() }),
        },
    }
}

fn target(path: &str) -> io::Result<Target> {
    let p = files::resolve(path).map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?;
    let root = match p.area {
        Area::Workspace => "/workspace",
        Area::Tmp => "/tmp",
    };
    Ok(Target { root: root.into(), parts: p.parts, owner: None })
}

fn run(op: FileOp) -> io::Result<FileReply> {
    match op {
        FileOp::Read { path, offset, len } => {
            let len = len.min(MAX_FILE_PIECE as u32);
            files::read(&target(&path)?, offset, len).map(FileReply::Read)
        }
        FileOp::Write { path, data, offset, last, mode, token } => {
            let piece = WritePiece { data: &data, offset, last, mode, token };
            files::write(&target(&path)?, &piece).map(FileReply::Written)
        }
        FileOp::List { path } => files::list(&target(&path)?).map(FileReply::List),
        FileOp::Remove { path, recursive } => files::remove(&target(&path)?, recursive).map(|()| FileReply::Removed),
    }
}

fn failure(e: &io::Error) -> FileFailure {
    let not_regular = e.get_ref().is_some_and(|i| i.is::<files::NotRegular>());
    FileFailure { errno: e.raw_os_error().unwrap_or(0), not_regular, message: e.to_string() }
}
