//! The tonic services: one file per service, thin — validate (in `convert`), call the component
//! behind it, convert back.
//!
//! Layering, bottom up (no module uses one above it):
//! - `convert`, `job_convert`: validation and wire conversion, on domain types only;
//! - `stream`: command output to the client (collected or forwarded), used by `exec`, `code`,
//!   `processes` and `sessions`; `calls`: what the calls inside a sandbox share;
//! - `code`, `processes`: parts of Exec, called by `exec`;
//! - the services: `sandboxes` (on [`crate::sandboxes::Sandboxes`]), `exec`, `sessions`, `files`
//!   (on [`calls::SandboxCalls`]), `code::LanguagesApi` (on the cluster view), and `jobs`,
//!   `batches`, `batch_watch` (on [`crate::jobs::Jobs`]).

pub mod batch_watch;
pub mod batches;
pub mod calls;
pub mod code;
pub mod codebase_convert;
pub mod codebases;
pub mod convert;
pub mod exec;
pub mod files;
pub mod job_convert;
pub mod jobs;
pub mod processes;
pub mod sandboxes;
pub mod sessions;
pub mod stream;

use corral_core::ids::TenantId;

/// The tenant a request acts for. Every request belongs to `default` until authentication
/// (API keys / HMAC) lands; this is the one place that will read it from the credentials.
pub fn tenant<T>(_req: &tonic::Request<T>) -> TenantId {
    TenantId::default_tenant()
}
