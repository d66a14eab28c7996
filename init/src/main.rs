//! The sandbox init binary: see [`corral_init::server`]; with `--watchdog SOCKET`, the node
//! watchdog ([`corral_init::watchdog`]). Diagnostics go to stderr, which the agent
//! captures to a log file next to the sandbox.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let result = match args.get(1).and_then(|a| a.to_str()) {
        Some("--watchdog") => match args.get(2) {
            Some(socket) => corral_init::watchdog::run(std::path::Path::new(socket)).map_err(|e| e.to_string()),
            None => Err("usage: corral-init --watchdog SOCKET".to_owned()),
        },
        _ => corral_init::server::run().map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral-init: {e}");
            ExitCode::FAILURE
        }
    }
}
