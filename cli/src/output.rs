//! Rendering API objects for people (`--output text`) or machines (`--output json`).

use corral_client::v1 as pb;
use serde_json::{Value, json};

pub mod codebases;
pub mod jobs;

pub use codebases::print_diff;

/// The `--output` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputArg {
    /// Lines and tables for people.
    Text,
    /// One JSON document.
    Json,
    /// One JSON object per line as results arrive (`batch run`, `batch watch`); elsewhere as json.
    Jsonl,
}

/// How a command renders its answer (`jsonl` is `Json` outside the batch commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl From<OutputArg> for Format {
    fn from(o: OutputArg) -> Self {
        match o {
            OutputArg::Text => Format::Text,
            OutputArg::Json | OutputArg::Jsonl => Format::Json,
        }
    }
}

/// Writes a chunk of a command's output to our stdout (`err` false) or stderr at once.
pub fn echo(err: bool, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if err {
        let mut e = std::io::stderr().lock();
        e.write_all(data)?;
        e.flush()
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(data)?;
        o.flush()
    }
}

/// Writes one line to stdout, returning an error (e.g. the reader of a pipe left) where
/// `println!` would panic: for commands that stream results.
pub fn line(s: impl std::fmt::Display) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    writeln!(o, "{s}")?;
    o.flush()
}

pub fn state_name(state: i32) -> String {
    pb::SandboxState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("SANDBOX_STATE_").to_owned())
        .unwrap_or_else(|_| format!("UNKNOWN({state})"))
}

pub(crate) fn ms_to_rfc3339(ms: i64) -> Value {
    if ms <= 0 {
        return Value::Null;
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    Value::String(humantime::format_rfc3339_millis(t).to_string())
}

pub fn sandbox_json(s: &pb::Sandbox) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "tenant": s.tenant,
        "runtime": pb::Runtime::try_from(s.runtime).map(|r| r.as_str_name()).unwrap_or("UNKNOWN"),
        "state": state_name(s.state),
        "image": s.image,
        "node_id": s.node_id,
        "cpus": s.cpus,
        "memory_mb": s.memory_mb,
        "disk_mb": s.disk_mb,
        "disk_usage": s.disk_usage.as_ref().map(|u| json!({
            "used_bytes": u.used_bytes,
            "total_bytes": u.total_bytes,
            "used_inodes": u.used_inodes,
            "total_inodes": u.total_inodes,
        })),
        "timeout_seconds": s.timeout_seconds,
        "internet_access": s.internet_access,
        "labels": s.labels,
        "workdir": s.workdir,
        "created_at": ms_to_rfc3339(s.created_at_ms),
        "started_at": ms_to_rfc3339(s.started_at_ms),
        "ended_at": ms_to_rfc3339(s.ended_at_ms),
        "expires_at": ms_to_rfc3339(s.expires_at_ms),
        "termination_reason": s.termination_reason,
        "codebase_id": s.codebase_id,
        "preset": s.preset,
        "codebase_path": s.codebase_path,
    })
}

/// A permission rule in the CLI's form, `PATTERN=PERMISSION:TYPE[:PRIORITY]`.
pub fn rule_text(r: &pb::PermissionRule) -> String {
    let permission = pb::Permission::try_from(r.permission).map(|p| p.as_str_name()).unwrap_or("PERMISSION_UNKNOWN");
    let kind = pb::PatternType::try_from(r.r#type).map(|p| p.as_str_name()).unwrap_or("PATTERN_TYPE_GLOB");
    let permission = permission.trim_start_matches("PERMISSION_").to_ascii_lowercase();
    let kind = kind.trim_start_matches("PATTERN_TYPE_").to_ascii_lowercase();
    let kind = if kind == "unspecified" { "glob".to_owned() } else { kind };
    match r.priority {
        0 => format!("{}={permission}:{kind}", r.pattern),
        p => format!("{}={permission}:{kind}:{p}", r.pattern),
    }
}

pub fn print_sandbox(format: Format, s: &pb::Sandbox) {
    match format {
        Format::Json => println!("{}", sandbox_json(s)),
        Format::Text => {
            println!("{}  {}  node={}  {}", s.id, state_name(s.state), s.node_id, s.name);
            if !s.termination_reason.is_empty() {
                println!("  reason: {}", s.termination_reason);
            }
            if let Some(line) = disk_line(s) {
                println!("  {line}");
            }
            if !s.codebase_id.is_empty() {
                let preset = if s.preset.is_empty() { "rules only" } else { s.preset.as_str() };
                println!(
                    "  codebase: {} at {} ({preset}, {} extra rules)",
                    s.codebase_id,
                    s.codebase_path,
                    s.permissions.len()
                );
            }
        }
    }
}

/// "disk: 1.5 MiB of 1020.0 MiB used, 14 of 100096 inodes" when Get reported the disk use.
pub fn disk_line(s: &pb::Sandbox) -> Option<String> {
    let u = s.disk_usage.as_ref()?;
    let mib = |b: i64| b as f64 / (1024.0 * 1024.0);
    Some(format!(
        "disk: {:.1} MiB of {:.1} MiB used, {} of {} inodes",
        mib(u.used_bytes),
        mib(u.total_bytes),
        u.used_inodes,
        u.total_inodes
    ))
}

pub fn print_table(list: &[pb::Sandbox]) {
    println!("{:<36}  {:<9}  {:<12}  {:<20}  LABELS", "ID", "STATE", "NODE", "NAME");
    for s in list {
        let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("{:<36}  {:<9}  {:<12}  {:<20}  {}", s.id, state_name(s.state), s.node_id, s.name, labels.join(","));
    }
}
