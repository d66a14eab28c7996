//! `corral.v1.Files`: whole-file read/write (moved over the bus in ≤ 512 KiB chunks), list, remove.

use corral_core::ids::{NodeId, SandboxId};
use corral_core::protocol::{CHUNK_BYTES, RpcReply, RpcRequest};
use corral_proto::v1 as pb;
use corral_proto::v1::files_server::Files;
use tonic::{Request, Response, Status};

use super::calls::SandboxCalls;
use super::{convert, tenant};
use crate::error::{ApiError, ApiResult};

pub struct FilesApi(pub SandboxCalls);

/// Checks a file path's shape; the agent resolves it inside the sandbox and refuses escapes.
fn path(raw: &str) -> ApiResult<String> {
    if raw.is_empty() {
        return Err(ApiError::field("path", "is required"));
    }
    convert::at_most("path", raw, convert::MAX_PATH)?;
    convert::no_nul("path", raw)?;
    if raw.split('/').any(|c| c == "..") {
        return Err(ApiError::field("path", format!("{raw:?} must not contain '..'")));
    }
    Ok(raw.to_owned())
}

impl FilesApi {
    async fn target<T>(&self, req: &Request<T>, raw_id: &str) -> ApiResult<(NodeId, SandboxId)> {
        let id = convert::sandbox_id("sandbox_id", raw_id)?;
        let node = self.0.locate(&tenant(req), &id).await?;
        Ok((node, id))
    }

    fn unexpected(reply: RpcReply) -> ApiError {
        ApiError::Internal(format!("unexpected agent reply: {reply:?}"))
    }
}

#[tonic::async_trait]
impl Files for FilesApi {
    #[tracing::instrument(name = "api.Files.Read", skip_all)]
    async fn read(&self, req: Request<pb::ReadFileRequest>) -> Result<Response<pb::ReadFileResponse>, Status> {
        let (node, id) = self.target(&req, &req.get_ref().sandbox_id).await?;
        let path = path(&req.get_ref().path)?;
        let limit = self.0.config.max_file_bytes;
        let mut data = Vec::new();
        loop {
            let ask = RpcRequest::ReadFile {
                sandbox: id.clone(),
                path: path.clone(),
                offset: data.len() as u64,
                len: CHUNK_BYTES as u32,
            };
            let (chunk, size, mode) = match self.0.dispatch.rpc(&node, &ask).await? {
                RpcReply::FileChunk { data, size, mode } => (data, size, mode),
                other => return Err(Self::unexpected(other).into()),
            };
            if size > limit {
                let why = format!("{path:?} is {size} bytes, over the {limit} byte read limit");
                return Err(ApiError::FailedPrecondition(why).into());
            }
            let ended = chunk.is_empty();
            data.extend_from_slice(&chunk);
            if ended || data.len() as u64 >= size {
                return Ok(Response::new(pb::ReadFileResponse { data, mode }));
            }
            if data.len() as u64 > limit {
                return Err(
                    ApiError::FailedPrecondition(format!("{path:?} grew past the {limit} byte read limit")).into()
                );
            }
        }
    }

    #[tracing::instrument(name = "api.Files.Write", skip_all)]
    async fn write(&self, req: Request<pb::WriteFileRequest>) -> Result<Response<pb::WriteFileResponse>, Status> {
        let (node, id) = self.target(&req, &req.get_ref().sandbox_id).await?;
        let req = req.into_inner();
        let path = path(&req.path)?;
        let limit = self.0.config.max_file_bytes;
        if req.data.len() as u64 > limit {
            return Err(ApiError::field(
                "data",
                format!("{} bytes exceed the {limit} byte file limit", req.data.len()),
            )
            .into());
        }
        if req.mode > 0o7777 {
            return Err(
                ApiError::field("mode", format!("{:o} is not a permission mode (max 7777 octal)", req.mode)).into()
            );
        }
        let mode = if req.mode == 0 { 0o644 } else { req.mode };
        let upload = rand::random::<u64>();
        let mut chunks: Vec<&[u8]> = req.data.chunks(CHUNK_BYTES).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let (count, mut offset, mut size) = (chunks.len(), 0u64, 0u64);
        for (i, chunk) in chunks.into_iter().enumerate() {
            let last = i + 1 == count;
            let ask = RpcRequest::WriteFile {
                sandbox: id.clone(),
                path: path.clone(),
                upload,
                offset,
                data: chunk.to_vec(),
                mode,
                last,
            };
            match self.0.dispatch.rpc(&node, &ask).await? {
                RpcReply::Ok => {}
                RpcReply::Written { size: s } => size = s,
                other => return Err(Self::unexpected(other).into()),
            }
            offset += chunk.len() as u64;
        }
        Ok(Response::new(pb::WriteFileResponse { size: size as i64 }))
    }

    #[tracing::instrument(name = "api.Files.List", skip_all)]
    async fn list(&self, req: Request<pb::ListFilesRequest>) -> Result<Response<pb::ListFilesResponse>, Status> {
        let (node, id) = self.target(&req, &req.get_ref().sandbox_id).await?;
        let raw = &req.get_ref().path;
        let path = if raw.is_empty() { "/workspace".to_owned() } else { path(raw)? };
        let entries = match self.0.dispatch.rpc(&node, &RpcRequest::ListFiles { sandbox: id, path }).await? {
            RpcReply::Entries(e) => e,
            other => return Err(Self::unexpected(other).into()),
        };
        let entries = entries
            .into_iter()
            .map(|e| pb::FileEntry {
                name: e.name,
                is_dir: e.is_dir,
                size: e.size as i64,
                mode: e.mode,
                mtime_ms: e.mtime_ms,
                is_symlink: e.is_symlink,
            })
            .collect();
        Ok(Response::new(pb::ListFilesResponse { entries }))
    }

    #[tracing::instrument(name = "api.Files.Remove", skip_all)]
    async fn remove(&self, req: Request<pb::RemoveFileRequest>) -> Result<Response<pb::RemoveFileResponse>, Status> {
        let (node, id) = self.target(&req, &req.get_ref().sandbox_id).await?;
        let path = path(&req.get_ref().path)?;
        let recursive = req.get_ref().recursive;
        match self.0.dispatch.rpc(&node, &RpcRequest::RemoveFile { sandbox: id, path, recursive }).await? {
            RpcReply::Ok => Ok(Response::new(pb::RemoveFileResponse {})),
            other => Err(Self::unexpected(other).into()),
        }
    }
}
