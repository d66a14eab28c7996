//! File requests: reads, listings, removals, and chunked uploads staged in memory and applied
//! atomically on the last chunk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_core::ids::SandboxId;
use corral_core::protocol::{AgentError, AgentErrorKind, CHUNK_BYTES, RpcReply, RpcRequest};
use tokio::time::Instant;

use crate::Agent;

/// Largest file accepted through chunked uploads, and most bytes staged at once.
pub const MAX_UPLOAD_BYTES: u64 = 1024 * 1024 * 1024;
pub const MAX_STAGED_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// An upload with no chunk for this long is dropped.
const UPLOAD_IDLE: Duration = Duration::from_secs(300);

struct Upload {
    path: String,
    data: Vec<u8>,
    touched: Instant,
}

#[derive(Default)]
pub struct Uploads(Mutex<HashMap<(SandboxId, u64), Upload>>);

/// Handles a file request.
pub async fn handle(agent: &Arc<Agent>, uploads: &Uploads, req: RpcRequest) -> Result<RpcReply, AgentError> {
    Ok(match req {
        RpcRequest::ReadFile { sandbox, path, offset, len } => {
            let len = len.min(CHUNK_BYTES as u32);
            let c = agent.runtime_of(&sandbox)?.read_file(&sandbox, &path, offset, len).await?;
            RpcReply::FileChunk { data: c.data, size: c.size, mode: c.mode }
        }
        RpcRequest::WriteFile { sandbox, path, upload, offset, data, mode, last } => {
            match uploads.add(&sandbox, upload, &path, offset, data, last)? {
                None => RpcReply::Ok,
                Some(bytes) => {
                    let size = agent.runtime_of(&sandbox)?.write_file(&sandbox, &path, &bytes, mode).await?;
                    RpcReply::Written { size }
                }
            }
        }
        RpcRequest::ListFiles { sandbox, path } => {
            RpcReply::Entries(agent.runtime_of(&sandbox)?.list_files(&sandbox, &path).await?)
        }
        RpcRequest::RemoveFile { sandbox, path, recursive } => {
            agent.runtime_of(&sandbox)?.remove_file(&sandbox, &path, recursive).await?;
            RpcReply::Ok
        }
        other => return Err(super::misrouted(&other)),
    })
}

impl Uploads {
    /// Adds a chunk; returns the whole file when `last`.
    pub fn add(
        &self,
        sandbox: &SandboxId,
        upload: u64,
        path: &str,
        offset: u64,
        data: Vec<u8>,
        last: bool,
    ) -> Result<Option<Vec<u8>>, AgentError> {
        let invalid = |why: String| AgentError::new(AgentErrorKind::InvalidArgument, why);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, u| u.touched.elapsed() < UPLOAD_IDLE);
        let key = (sandbox.clone(), upload);
        if offset == 0 && !map.contains_key(&key) {
            if last {
                return Ok(Some(data));
            }
            let staged: u64 = map.values().map(|u| u.data.len() as u64).sum();
            if staged + data.len() as u64 > MAX_STAGED_BYTES {
                return Err(AgentError::new(
                    AgentErrorKind::ResourceExhausted,
                    "too many uploads in progress on this node",
                ));
            }
            map.insert(key.clone(), Upload { path: path.to_owned(), data: Vec::new(), touched: Instant::now() });
        }
        let Some(u) = map.get_mut(&key) else {
            return Err(invalid(format!("upload {upload:x} to {path:?} is unknown or expired")));
        };
        if u.path != path || u.data.len() as u64 != offset {
            map.remove(&key);
            return Err(invalid(format!("upload {upload:x}: chunk at offset {offset} out of order; start again")));
        }
        if offset + data.len() as u64 > MAX_UPLOAD_BYTES {
            map.remove(&key);
            return Err(invalid(format!("upload to {path:?} exceeds {MAX_UPLOAD_BYTES} bytes")));
        }
        u.data.extend_from_slice(&data);
        u.touched = Instant::now();
        if last {
            return Ok(map.remove(&key).map(|u| u.data));
        }
        Ok(None)
    }
}
