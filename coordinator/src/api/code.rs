//! `Exec.RunCode` and `corral.v1.Languages`: snippets in a language of the registry
//! (`corral_core::languages`), run with the program the sandbox's node published for it.

use corral_core::ids::{NodeId, SandboxId, TenantId};
use corral_core::languages::{self, LANGUAGES, Language, LanguageOffer};
use corral_core::model::{ExecSpec, NodeInfo, RuntimeKind};
use corral_core::protocol::{RpcReply, RpcRequest};
use corral_proto::v1 as pb;
use corral_proto::v1::languages_server::Languages;
use tonic::{Request, Response, Status};

use super::calls::SandboxCalls;
use super::stream::{GRACE, collect};
use super::{convert, tenant};
use crate::cluster::ClusterView;
use crate::error::{ApiError, ApiResult};

/// Where snippets are written inside the sandbox: `{CODE_DIR}/{random hex}/{file name}`.
const CODE_DIR: &str = "/tmp/corral-code";

/// Runs one snippet: validate, write the file, exec the language's command, remove the file.
pub async fn run_code(core: &SandboxCalls, req: Request<pb::RunCodeRequest>) -> ApiResult<pb::ExecResponse> {
    let tenant = tenant(&req);
    let req = req.into_inner();
    let id = convert::sandbox_id("sandbox_id", &req.sandbox_id)?;
    let lang = languages::resolve(&req.language).ok_or_else(|| unknown(&req.language, &core.view.nodes()))?;
    convert::code(&req.code)?;
    let env = convert::env("env", &req.env)?;
    let stdin = convert::stdin(req.stdin)?;
    let timeout_ms = convert::exec_timeout_ms(req.timeout_seconds, &core.config)?;
    let cwd = if req.cwd.is_empty() { String::new() } else { convert::sandbox_dir("cwd", &req.cwd)? };
    let node = core.locate(&tenant, &id).await?;
    let program = program(core, &tenant, &id, &node, lang).await?;

    let dir = format!("{CODE_DIR}/{:016x}", rand::random::<u64>());
    let write = RpcRequest::WriteFile {
        sandbox: id.clone(),
        path: format!("{dir}/{}", lang.file_name),
        upload: rand::random(),
        offset: 0,
        data: req.code.into_bytes(),
        mode: 0o644,
        last: true,
    };
    match core.dispatch.rpc(&node, &write).await? {
        RpcReply::Ok | RpcReply::Written { .. } => {}
        other => return Err(ApiError::Internal(format!("unexpected reply to a code upload: {other:?}"))),
    }
    let spec = ExecSpec {
        command: lang.command(&program, &dir),
        env,
        cwd,
        timeout_ms,
        stdin,
        max_output_bytes: core.config.max_output_bytes,
        side_channel: false,
    };
    let result = match core.dispatch.exec(&node, &id, spec, GRACE).await {
        Ok(stream) => collect(stream, core.config.max_output_bytes as usize).await,
        Err(e) => Err(e),
    };
    let remove = RpcRequest::RemoveFile { sandbox: id, path: dir, recursive: true };
    if let Err(e) = core.dispatch.rpc(&node, &remove).await {
        tracing::debug!(error = %e, "could not remove a snippet's directory");
    }
    result
}

/// The program that runs `lang` for the sandbox's runtime on its node, or INVALID_ARGUMENT
/// listing what that node's runtime can run.
async fn program(
    core: &SandboxCalls,
    tenant: &TenantId,
    id: &SandboxId,
    node: &NodeId,
    lang: &Language,
) -> ApiResult<String> {
    let (runtime, image) = match core.view.sandbox(id).and_then(|p| p.record) {
        Some(record) => (record.spec.runtime, record.spec.image.clone()),
        None => {
            let record = core.sandboxes.get(tenant, id).await?;
            (record.spec.runtime, record.spec.image)
        }
    };
    let offers: Vec<LanguageOffer> = core
        .view
        .nodes()
        .into_iter()
        .filter(|n| &n.node_id == node)
        .flat_map(|n| n.languages)
        .filter(|o| o.serves(runtime, &image))
        .collect();
    if let Some(offer) = offers.iter().find(|o| o.language == lang.name) {
        return Ok(offer.program.clone());
    }
    let names: Vec<&str> = offers.iter().map(|o| o.language.as_str()).collect();
    let what = if image.is_empty() { format!("{runtime} sandboxes") } else { format!("image {image}") };
    let why =
        format!("{} is not available to {what} on node {node}; available there: {}", lang.name, list_or_none(&names));
    Err(ApiError::field("language", why))
}

/// INVALID_ARGUMENT for a name the registry does not know, listing what the cluster runs.
fn unknown(raw: &str, nodes: &[NodeInfo]) -> ApiError {
    let names: Vec<&str> = available(nodes).iter().map(|(l, _)| l.name).collect();
    ApiError::field("language", format!("unknown language {raw:.64?}; available: {}", list_or_none(&names)))
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
}

/// Every language some node offers, in registry order, with the runtimes offering it.
fn available(nodes: &[NodeInfo]) -> Vec<(&'static Language, Vec<RuntimeKind>)> {
    LANGUAGES
        .iter()
        .filter_map(|lang| {
            let mut runtimes: Vec<RuntimeKind> = nodes
                .iter()
                .flat_map(|n| &n.languages)
                .filter(|o| o.language == lang.name)
                .map(|o| o.runtime)
                .collect();
            runtimes.sort_by_key(|r| *r as u8);
            runtimes.dedup();
            (!runtimes.is_empty()).then_some((lang, runtimes))
        })
        .collect()
}

pub struct LanguagesApi(pub ClusterView);

#[tonic::async_trait]
impl Languages for LanguagesApi {
    #[tracing::instrument(name = "api.Languages.List", skip_all)]
    async fn list(
        &self,
        _req: Request<pb::ListLanguagesRequest>,
    ) -> Result<Response<pb::ListLanguagesResponse>, Status> {
        let languages = available(&self.0.nodes())
            .into_iter()
            .map(|(lang, runtimes)| pb::Language {
                name: lang.name.to_owned(),
                aliases: lang.aliases.iter().map(|a| (*a).to_owned()).collect(),
                file_name: lang.file_name.to_owned(),
                extensions: lang.extensions.iter().map(|e| (*e).to_owned()).collect(),
                runtimes: runtimes.into_iter().map(|r| convert::runtime_to_pb(r) as i32).collect(),
            })
            .collect();
        Ok(Response::new(pb::ListLanguagesResponse { languages }))
    }
}
