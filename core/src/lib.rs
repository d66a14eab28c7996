//! Corral's shared vocabulary.
//!
//! - [`ids`]: typed identities (`SandboxId`, `NodeId`, `TenantId`, `ExecId`).
//! - [`state`]: the sandbox lifecycle enum and its single transition check.
//! - [`keys`] and [`subjects`]: typed etcd keys and NATS subjects; their `Display` is the wire string.
//! - [`languages`]: the `run_code` language registry (name, aliases, file name, command).
//! - [`permissions`]: path permission rules (patterns, presets, evaluation) for a sandbox's view of a codebase.
//! - [`model`]: records stored in the state store (sandbox, node).
//! - [`protocol`]: messages between coordinator and agents on the bus.
//! - [`store`]: the `StateStore` trait with an etcd and an in-process implementation.
//! - [`bus`]: the `Bus` trait with a NATS (JetStream + core) and an in-process implementation.
//! - [`semaphore`]: the `Semaphore` trait (fair line, permits on leases) on the state store and in-process.
//! - [`codebase`]: codebase records, manifests (file lists) and the path checks every upload passes.
//! - [`task`]: named, owned background tasks.

pub mod bus;
pub mod codebase;
pub mod ids;
pub mod jobs;
pub mod keys;
pub mod languages;
pub mod model;
pub mod permissions;
pub mod protocol;
pub mod semaphore;
pub mod state;
pub mod store;
pub mod subjects;
pub mod task;
pub mod time;
