//! `corral-init`: the tiny process that runs as pid 1 inside every bubblewrap sandbox and starts
//! commands for the agent, so that all execs of a sandbox share its namespaces.
//!
//! - [`protocol`]: the framed postcard messages the agent and the init exchange over the init's
//!   stdin/stdout (used by both sides).
//! - [`files`]: sandbox path resolution and `openat2`-confined file operations (used by the agent
//!   on the host for bubblewrap and by the init inside Docker containers).
//! - [`server`]: the init's single-threaded `poll(2)` loop (std and libc only, no async runtime).
//! - [`watchdog`]: the same binary's other role (`corral-init --watchdog SOCKET`): the node
//!   watchdog that kills every sandbox process when the agent stops renewing it.

pub mod files;
pub mod protocol;
pub mod server;
pub mod watchdog;
