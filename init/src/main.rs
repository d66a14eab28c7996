//! The sandbox init binary: see [`corral_init::server`]. Diagnostics go to stderr, which the agent
//! captures to a log file next to the sandbox.

use std::process::ExitCode;

fn main() -> ExitCode {
    match corral_init::server::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral-init: {e}");
            ExitCode::FAILURE
        }
    }
}
