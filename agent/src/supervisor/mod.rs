//! What the agent keeps about a sandbox's processes beyond one exec, on top of any
//! [`crate::runtime::Runtime`] (so both runtimes behave the same):
//!
//! - [`processes`]: background processes with pids, buffered output ([`ring`]), signals, followers;
//! - [`sessions`]: shell sessions whose `cd` and `export` persist between commands.

pub mod processes;
pub mod ring;
pub mod sessions;

use corral_core::ids::SandboxId;

pub use processes::{Follow, ProcOutput, Processes};
pub use sessions::{SessionCommand, Sessions};

/// The background processes and sessions of every sandbox on this node.
#[derive(Default)]
pub struct Supervisor {
    pub processes: Processes,
    pub sessions: Sessions,
}

impl Supervisor {
    /// Forgets everything about a destroyed sandbox.
    pub fn forget(&self, sandbox: &SandboxId) {
        self.processes.forget(sandbox);
        self.sessions.forget(sandbox);
    }
}
