//! `corral.v1.CodebaseService`.

use std::pin::Pin;
use std::sync::Arc;

use corral_core::permissions::Preset;
use corral_proto::v1 as pb;
use corral_proto::v1::codebase_service_server::CodebaseService;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::codebase_convert as cc;
use super::{convert, tenant};
use crate::codebases::Codebases;
use crate::codebases::download::{self, Piece};
use crate::codebases::upload::UploadItem;
use crate::error::ApiError;

pub struct CodebasesApi(pub Arc<Codebases>);

const DEFAULT_PAGE: i32 = 100;
const MAX_PAGE: i32 = 1000;
const DEFAULT_FILES_PAGE: i32 = 1000;
const MAX_FILES_PAGE: i32 = 10_000;

fn page_size(field: &str, raw: i32, default: i32, max: i32) -> Result<usize, ApiError> {
    match raw {
        0 => Ok(default as usize),
        n if (1..=max).contains(&n) => Ok(n as usize),
        n => Err(ApiError::field(field, format!("{n} is outside 1..={max} (0 = {default})"))),
    }
}

type DownloadStream = Pin<Box<dyn Stream<Item = Result<pb::DownloadChunk, Status>> + Send>>;

#[tonic::async_trait]
impl CodebaseService for CodebasesApi {
    #[tracing::instrument(name = "api.Codebases.Create", skip_all)]
    async fn create(
        &self,
        req: Request<pb::CreateCodebaseRequest>,
    ) -> Result<Response<pb::CreateCodebaseResponse>, Status> {
        let tenant = tenant(&req);
        let req = req.into_inner();
        let name = cc::name("name", &req.name, true)?;
        let owner = cc::name("owner", &req.owner, false)?;
        let labels = convert::labels("labels", &req.labels)?;
        let record = self.0.create(&tenant, name, owner, labels).await?;
        Ok(Response::new(pb::CreateCodebaseResponse { codebase: Some(cc::codebase_to_pb(record, 0)) }))
    }

    #[tracing::instrument(name = "api.Codebases.Get", skip_all)]
    async fn get(&self, req: Request<pb::GetCodebaseRequest>) -> Result<Response<pb::GetCodebaseResponse>, Status> {
        let tenant = tenant(&req);
        let id = cc::codebase_id("id", &req.get_ref().id)?;
        let record = self.0.get(&tenant, &id).await?;
        let users = self.0.users(&id).len();
        Ok(Response::new(pb::GetCodebaseResponse { codebase: Some(cc::codebase_to_pb(record, users)) }))
    }

    #[tracing::instrument(name = "api.Codebases.List", skip_all)]
    async fn list(
        &self,
        req: Request<pb::ListCodebasesRequest>,
    ) -> Result<Response<pb::ListCodebasesResponse>, Status> {
        let tenant = tenant(&req);
        let req = req.into_inner();
        let size = page_size("page_size", req.page_size, DEFAULT_PAGE, MAX_PAGE)?;
        let labels = convert::labels("labels", &req.labels)?;
        let after =
            if req.page_token.is_empty() { None } else { Some(cc::codebase_id("page_token", &req.page_token)?) };
        let (records, next) = self.0.list(&tenant, &labels, after, size).await?;
        Ok(Response::new(pb::ListCodebasesResponse {
            codebases: records.into_iter().map(|r| cc::codebase_to_pb(r, 0)).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    #[tracing::instrument(name = "api.Codebases.MissingContent", skip_all)]
    async fn missing_content(
        &self,
        req: Request<pb::MissingContentRequest>,
    ) -> Result<Response<pb::MissingContentResponse>, Status> {
        let tenant = tenant(&req);
        let req = req.into_inner();
        let id = cc::codebase_id("codebase_id", &req.codebase_id)?;
        if req.digests.len() > cc::MAX_DIGESTS {
            return Err(ApiError::field(
                "digests",
                format!("{} digests; at most {} per call", req.digests.len(), cc::MAX_DIGESTS),
            )
            .into());
        }
        let digests = req
            .digests
            .iter()
            .enumerate()
            .map(|(i, d)| cc::digest(&format!("digests[{i}]"), d))
            .collect::<Result<Vec<_>, _>>()?;
        self.0.get(&tenant, &id).await?;
        let missing = self.0.missing(&digests).await?;
        Ok(Response::new(pb::MissingContentResponse { digests: missing.iter().map(|d| d.to_string()).collect() }))
    }

    #[tracing::instrument(name = "api.Codebases.Upload", skip_all)]
    async fn upload(&self, req: Request<Streaming<pb::UploadRequest>>) -> Result<Response<pb::UploadResponse>, Status> {
        let tenant = tenant(&req);
        let mut input = req.into_inner();
        let first = input.next().await.ok_or_else(|| ApiError::field("start", "the upload stream is empty"))??;
        let (id, replace) = match cc::upload_item(first, 0)? {
            UploadItem::Start { id, replace } => (id, replace),
            _ => return Err(ApiError::field("start", "the first upload message must be start").into()),
        };
        let mut headers = 0usize;
        let items = input.map(move |m| {
            let m = m.map_err(|s| ApiError::field("stream", format!("the upload stream broke: {}", s.message())))?;
            let item = cc::upload_item(m, headers)?;
            if matches!(item, UploadItem::File(_)) {
                headers += 1;
            }
            Ok(item)
        });
        let out = self.0.upload(&tenant, &id, replace, Box::pin(items)).await?;
        let users = self.0.users(&id).len();
        Ok(Response::new(pb::UploadResponse {
            codebase: Some(cc::codebase_to_pb(out.record, users)),
            files_received: out.files_received as i64,
            bytes_received: out.bytes_received as i64,
            bytes_deduplicated: out.bytes_deduplicated as i64,
        }))
    }

    #[tracing::instrument(name = "api.Codebases.ListFiles", skip_all)]
    async fn list_files(
        &self,
        req: Request<pb::ListCodebaseFilesRequest>,
    ) -> Result<Response<pb::ListCodebaseFilesResponse>, Status> {
        let tenant = tenant(&req);
        let req = req.into_inner();
        let id = cc::codebase_id("codebase_id", &req.codebase_id)?;
        let size = page_size("page_size", req.page_size, DEFAULT_FILES_PAGE, MAX_FILES_PAGE)?;
        let prefix = req.prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            corral_core::codebase::check_path(prefix).map_err(|e| ApiError::field("prefix", e))?;
        }
        let under = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
        let record = self.0.get(&tenant, &id).await?;
        let manifest = self.0.manifest_of(&record).await?;
        let start = if req.page_token.is_empty() { under.clone() } else { req.page_token.clone() };
        let mut files = Vec::new();
        let mut next = String::new();
        let range =
            manifest.entries.range::<String, _>((std::ops::Bound::Included(&start), std::ops::Bound::Unbounded));
        for (path, entry) in range {
            if !path.starts_with(&under) {
                break;
            }
            if path == &req.page_token {
                continue;
            }
            if files.len() == size {
                next = files.last().map(|f: &pb::CodebaseFile| f.path.clone()).unwrap_or_default();
                break;
            }
            files.push(cc::file_to_pb(path, entry));
        }
        Ok(Response::new(pb::ListCodebaseFilesResponse { files, next_page_token: next }))
    }

    type DownloadStream = DownloadStream;

    #[tracing::instrument(name = "api.Codebases.Download", skip_all)]
    async fn download(&self, req: Request<pb::DownloadCodebaseRequest>) -> Result<Response<DownloadStream>, Status> {
        let tenant = tenant(&req);
        let req = req.into_inner();
        let id = cc::codebase_id("codebase_id", &req.codebase_id)?;
        let path = req.path.trim_end_matches('/').to_owned();
        if !path.is_empty() {
            corral_core::codebase::check_path(&path).map_err(|e| ApiError::field("path", e))?;
        }
        let record = self.0.get(&tenant, &id).await?;
        let manifest = self.0.manifest_of(&record).await?;
        let rx = download::start(self.0.chunks().clone(), manifest, path)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|piece| {
            use pb::download_chunk::Item;
            let item = match piece.map_err(Status::from)? {
                Piece::Header { format, size } => Item::Header(pb::DownloadHeader { format: format.into(), size }),
                Piece::Data(b) => Item::Data(b.to_vec()),
            };
            Ok(pb::DownloadChunk { item: Some(item) })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(name = "api.Codebases.Delete", skip_all)]
    async fn delete(
        &self,
        req: Request<pb::DeleteCodebaseRequest>,
    ) -> Result<Response<pb::DeleteCodebaseResponse>, Status> {
        let tenant = tenant(&req);
        let id = cc::codebase_id("id", &req.get_ref().id)?;
        let record = self.0.delete(&tenant, &id, req.get_ref().force).await?;
        Ok(Response::new(pb::DeleteCodebaseResponse { codebase: Some(cc::codebase_to_pb(record, 0)) }))
    }

    async fn list_presets(
        &self,
        _req: Request<pb::ListPresetsRequest>,
    ) -> Result<Response<pb::ListPresetsResponse>, Status> {
        let presets = Preset::all()
            .into_iter()
            .map(|p| pb::Preset {
                name: p.name().to_owned(),
                description: p.description().to_owned(),
                rules: p.rules().iter().map(cc::rule_to_pb).collect(),
            })
            .collect();
        Ok(Response::new(pb::ListPresetsResponse { presets }))
    }
}
