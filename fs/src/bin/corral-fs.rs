//! `corral-fs --fd N --source DIR`: serves the mounted FUSE connection N (inherited) as a view of
//! DIR through the permission rules read as JSON (a list of `PermissionRule`) from stdin.
//! Started by `corral_fs::ViewMount`; runs until the filesystem is unmounted.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use corral_core::permissions::{PermissionRule, Rules};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const USAGE: &str = "usage: corral-fs --fd N --source DIR [--verbose]

Serves the already-mounted /dev/fuse descriptor N (inherited) as a view of DIR through
permission rules, read from stdin as JSON: [{\"pattern\": \"src/**\", \"permission\": \"read\",
\"type\": \"glob\", \"priority\": 0}, ...]. Runs until the filesystem is unmounted.";

struct Args {
    fd: i32,
    source: PathBuf,
    verbose: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let (mut fd, mut source, mut verbose) = (None, None, false);
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(None),
            Some("--verbose") => verbose = true,
            Some("--fd") => {
                let v = args.next().ok_or("--fd needs a value")?;
                fd = Some(v.to_str().and_then(|s| s.parse().ok()).ok_or(format!("--fd {v:?}: not a number"))?);
            }
            Some("--source") => source = Some(PathBuf::from(args.next().ok_or("--source needs a value")?)),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    Ok(Some(Args { fd: fd.ok_or("--fd is required")?, source: source.ok_or("--source is required")?, verbose }))
}

fn run(args: Args) -> Result<(), String> {
    let mut json = Vec::new();
    std::io::stdin().read_to_end(&mut json).map_err(|e| format!("reading the rules from stdin: {e}"))?;
    let rules: Vec<PermissionRule> = serde_json::from_slice(&json).map_err(|e| format!("the rules: {e}"))?;
    let rules = Rules::compile(&rules).map_err(|e| e.to_string())?;
    let fd = corral_fs::inherited_fd(args.fd).map_err(|e| format!("--fd: {e}"))?;
    corral_fs::serve(fd, &args.source, rules).map_err(|e| format!("serving {}: {e}", args.source.display()))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("corral-fs: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let level = if args.verbose { LevelFilter::DEBUG } else { LevelFilter::WARN };
    // fuser logs a failed reply as an error; that only happens to requests the kernel dropped
    // (interrupted, or the connection ended at unmount).
    let filter = Targets::new().with_default(level).with_target("fuser::reply", LevelFilter::OFF);
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral-fs: {e}");
            ExitCode::FAILURE
        }
    }
}
