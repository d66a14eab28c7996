//! The documented limits, checked on what validation returns (independently of how
//! `coordinator::api::convert` enforces them).

use std::collections::BTreeMap;

use corral_coordinator::CoordinatorConfig;
use corral_coordinator::api::convert::{
    MAX_ARGV, MAX_COMMAND_BYTES, MAX_ENV_ENTRIES, MAX_ENV_TOTAL, MAX_ENV_VALUE, MAX_LABEL_KEY, MAX_LABEL_VALUE,
    MAX_LABELS, MAX_PATH, MAX_STDIN,
};
use corral_coordinator::error::ApiError;
use corral_core::model::Command;

/// A refusal is INVALID_ARGUMENT naming the field.
pub fn refusal(e: &ApiError) {
    let ApiError::InvalidField { field, why } = e else { panic!("validation failed with {e:?}, not a field error") };
    assert!(!field.is_empty() && !why.is_empty(), "{e:?}");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
}

pub fn env(env: &BTreeMap<String, String>) {
    assert!(env.len() <= MAX_ENV_ENTRIES, "{} env entries", env.len());
    let mut total = 0;
    for (k, v) in env {
        let first = k.bytes().next().expect("an env name is never empty");
        assert!(!first.is_ascii_digit() && k.len() <= 256, "env name {k:?}");
        assert!(k.bytes().all(|b| b == b'_' || b.is_ascii_alphanumeric()), "env name {k:?}");
        assert!(v.len() <= MAX_ENV_VALUE && !v.contains('\0'), "env value of {k}");
        total += k.len() + v.len();
    }
    assert!(total <= MAX_ENV_TOTAL, "{total} env bytes");
}

pub fn labels(labels: &BTreeMap<String, String>) {
    assert!(labels.len() <= MAX_LABELS, "{} labels", labels.len());
    for (k, v) in labels {
        assert!((1..=MAX_LABEL_KEY).contains(&k.len()), "label key {k:?}");
        assert!(k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b)), "label key {k:?}");
        assert!(v.len() <= MAX_LABEL_VALUE && !v.contains('\0'), "label value of {k}");
    }
}

pub fn command(c: &Command) {
    match c {
        Command::Argv(argv) => {
            assert!(argv.first().is_some_and(|p| !p.is_empty()), "argv {argv:?}");
            let bytes: usize = argv.iter().map(|a| a.len() + 1).sum();
            assert!(argv.len() <= MAX_ARGV && bytes <= MAX_COMMAND_BYTES, "{} args, {bytes} bytes", argv.len());
            assert!(argv.iter().all(|a| !a.contains('\0')), "NUL in argv");
        }
        Command::Shell(line) => {
            assert!(!line.is_empty() && line.len() <= MAX_COMMAND_BYTES, "shell of {} bytes", line.len());
            assert!(!line.contains('\0'), "NUL in shell");
        }
    }
}

pub fn stdin(stdin: &[u8]) {
    assert!(stdin.len() <= MAX_STDIN, "{} bytes of stdin", stdin.len());
}

/// A working directory: `/workspace`, `/tmp` or beneath them, no `..`, in canonical form, and
/// one the init's path rules accept too.
pub fn dir(d: &str) {
    let under =
        ["/workspace", "/tmp"].iter().any(|r| d.strip_prefix(r).is_some_and(|t| t.is_empty() || t.starts_with('/')));
    assert!(under && d.len() <= MAX_PATH && !d.contains('\0'), "directory {d:?}");
    assert!(!d.split('/').any(|c| c == "..") && !d.ends_with('/'), "directory {d:?}");
    assert!(corral_init::files::resolve(d).is_ok(), "directory {d:?} is refused by the init's rules");
}

/// A command timeout in milliseconds: the least whole number not shorter than the requested
/// seconds (the configured default for 0), compared as `f64`, and within the configured maximum.
pub fn timeout_ms(requested: f64, ms: u64, cfg: &CoordinatorConfig) {
    let seconds = if requested == 0.0 { cfg.default_exec_timeout_seconds } else { requested };
    assert!(ms >= 1 && ms as f64 <= cfg.max_exec_timeout_seconds * 1000.0, "timeout of {ms} ms");
    let least = ms as f64 / 1000.0 >= seconds && (ms - 1) as f64 / 1000.0 < seconds;
    assert!(least, "{requested} s became {ms} ms");
}
