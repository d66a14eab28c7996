//! The tonic services: one file per service, thin — validate (in `convert`), call `Core` (sandboxes) or
//! `Jobs` (jobs and batches), convert back.

pub mod batch_watch;
pub mod batches;
pub mod code;
pub mod convert;
pub mod exec;
pub mod files;
pub mod job_convert;
pub mod jobs;
pub mod processes;
pub mod sandboxes;
pub mod sessions;

use corral_core::ids::TenantId;

/// The tenant a request acts for. Every request belongs to `default` until authentication
/// (API keys / HMAC) lands; this is the one place that will read it from the credentials.
pub fn tenant<T>(_req: &tonic::Request<T>) -> TenantId {
    TenantId::default_tenant()
}
