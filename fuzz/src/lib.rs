//! Fuzz targets for the surfaces where Corral reads untrusted bytes. Each target is a plain
//! `run(data: &[u8])` that panics when an invariant breaks, so the AFL++ harnesses (`src/bin/`,
//! built with `--features afl` by `scripts/fuzz.sh`) and the corpus replay test
//! (`tests/corpus.rs`, part of the normal test suite) run exactly the same checks.
//!
//! - [`init_protocol`]: the agent ⇄ init frame decoder (`corral_init::protocol`).
//! - [`sandbox_paths`]: sandbox path resolution and the `openat2`-confined file operations
//!   (`corral_init::files`), on a scratch directory with symlinks pointing out of it.
//! - [`batch_items`]: `corral batch run`'s JSON Lines items (`corral_cli::batch_items`).
//! - [`proto_convert`]: the coordinator's request validation (`api::convert`, `api::job_convert`)
//!   on prost messages decoded from the input.
//! - [`permission_rules`]: the path-permission engine (`corral_core::permissions`) against simple
//!   models, and the codebase path checks (`corral_core::codebase`).
//! - [`seeds`]: the seed corpus, made from the inputs of those modules' own tests.

pub mod batch_items;
pub mod init_protocol;
pub mod permission_rules;
pub mod proto_convert;
pub mod sandbox_paths;
pub mod seeds;

/// A target: panics when an invariant breaks on `data`.
pub type Target = fn(data: &[u8]);

/// Every target by the name of its corpus directory (`fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("init_protocol", init_protocol::run),
    ("sandbox_paths", sandbox_paths::run),
    ("batch_items", batch_items::run),
    ("proto_convert", proto_convert::run),
    ("permission_rules", permission_rules::run),
];
