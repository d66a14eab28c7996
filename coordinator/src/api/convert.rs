//! Wire ↔ domain conversions. Every request field is validated here, and errors name the field.

use std::collections::BTreeMap;

use corral_core::ids::{SandboxId, SandboxName, SessionId, TenantId};
use corral_core::model::{Command, ExitStatus, ProcessInfo, RuntimeKind, SandboxRecord, SandboxSpec};
use corral_core::state::SandboxState;
use corral_proto::v1 as pb;

use crate::config::CoordinatorConfig;
use crate::error::{ApiError, ApiResult};

pub const MAX_ENV_ENTRIES: usize = 256;
pub const MAX_ENV_VALUE: usize = 32 * 1024;
pub const MAX_ENV_TOTAL: usize = 256 * 1024;
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_KEY: usize = 63;
pub const MAX_LABEL_VALUE: usize = 256;
pub const MAX_PATH: usize = 4096;
pub const MAX_ARGV: usize = 4096;
pub const MAX_COMMAND_BYTES: usize = 256 * 1024;
pub const MAX_STDIN: usize = 256 * 1024;
/// A RunCode snippet: one bus chunk, so the file is written in one round trip.
pub const MAX_CODE_BYTES: usize = 512 * 1024;
pub const MIN_MEMORY_MB: i64 = 16;

/// Refuses a NUL byte (no argv, environment, path or source file can carry one), saying where.
pub fn no_nul(field: &str, raw: &str) -> ApiResult<()> {
    match raw.bytes().position(|b| b == 0) {
        Some(at) => Err(ApiError::field(field, format!("contains a NUL byte at byte {at}"))),
        None => Ok(()),
    }
}

/// Refuses a string longer than `max` bytes, saying how long it is.
pub fn at_most(field: &str, raw: &str, max: usize) -> ApiResult<()> {
    if raw.len() > max {
        return Err(ApiError::field(field, format!("is {} bytes; at most {max}", raw.len())));
    }
    Ok(())
}

pub fn sandbox_id(field: &str, raw: &str) -> ApiResult<SandboxId> {
    if raw.is_empty() {
        return Err(ApiError::field(field, "is required"));
    }
    SandboxId::parse(raw).map_err(|e| ApiError::invalid_id(field, e))
}

pub fn session_id(field: &str, raw: &str) -> ApiResult<SessionId> {
    if raw.is_empty() {
        return Err(ApiError::field(field, "is required"));
    }
    SessionId::parse(raw).map_err(|e| ApiError::invalid_id(field, e))
}

/// A background process number: assigned from 1, so 0 means "not set".
pub fn pid(raw: u32) -> ApiResult<u32> {
    if raw == 0 {
        return Err(ApiError::field("pid", "is required (process numbers start at 1)"));
    }
    Ok(raw)
}

/// A Linux signal number: 1-31 or the real-time signals 34-64 (32 and 33 belong to libc).
pub fn signal(raw: i32) -> ApiResult<i32> {
    if !(1..=31).contains(&raw) && !(34..=64).contains(&raw) {
        return Err(ApiError::field("signal", format!("{raw} is not a signal number (1-31 or 34-64)")));
    }
    Ok(raw)
}

/// A command's timeout in milliseconds: `0..=max` seconds, 0 meaning the configured default.
pub fn exec_timeout_ms(t: f64, cfg: &CoordinatorConfig) -> ApiResult<u64> {
    if !t.is_finite() || t < 0.0 || t > cfg.max_exec_timeout_seconds {
        let why = format!(
            "{t} is outside 0..={} (0 = default {})",
            cfg.max_exec_timeout_seconds, cfg.default_exec_timeout_seconds
        );
        return Err(ApiError::field("timeout_seconds", why));
    }
    let timeout = if t == 0.0 { cfg.default_exec_timeout_seconds } else { t };
    Ok(ceil_ms(timeout))
}

/// Whole milliseconds, rounded up: the least `ms` with `ms / 1000 ≥ seconds` in `f64`, so a
/// decimal such as 2.007 s (2007.0000000000002 once multiplied by 1000) is 2007 ms, not 2008,
/// and a timeout shown on the wire as `ms / 1000` converts back to the same `ms`.
pub fn ceil_ms(seconds: f64) -> u64 {
    let ms = (seconds * 1000.0).ceil();
    let ms = if ms / 1000.0 < seconds {
        ms + 1.0
    } else if ms >= 1.0 && (ms - 1.0) / 1000.0 >= seconds {
        ms - 1.0
    } else {
        ms
    };
    ms as u64
}

pub fn sandbox_name(field: &str, raw: &str) -> ApiResult<SandboxName> {
    SandboxName::parse(raw).map_err(|e| ApiError::invalid_id(field, e))
}

/// Validates environment variables (names like POSIX, bounded sizes, no NUL).
pub fn env(field: &str, env: &std::collections::HashMap<String, String>) -> ApiResult<BTreeMap<String, String>> {
    if env.len() > MAX_ENV_ENTRIES {
        return Err(ApiError::field(field, format!("{} entries exceed the limit of {MAX_ENV_ENTRIES}", env.len())));
    }
    let mut total = 0;
    for (k, v) in env {
        let valid_name = !k.is_empty()
            && k.len() <= 256
            && !k.as_bytes()[0].is_ascii_digit()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            return Err(ApiError::field(
                format!("{field}[{k:.64}]"),
                "names must match [A-Za-z_][A-Za-z0-9_]* (≤ 256)",
            ));
        }
        at_most(&format!("{field}[{k}]"), v, MAX_ENV_VALUE)?;
        no_nul(&format!("{field}[{k}]"), v)?;
        total += k.len() + v.len();
    }
    if total > MAX_ENV_TOTAL {
        return Err(ApiError::field(field, format!("{total} bytes in total exceed the limit of {MAX_ENV_TOTAL}")));
    }
    Ok(env.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

pub fn labels(field: &str, labels: &std::collections::HashMap<String, String>) -> ApiResult<BTreeMap<String, String>> {
    if labels.len() > MAX_LABELS {
        return Err(ApiError::field(field, format!("{} labels exceed the limit of {MAX_LABELS}", labels.len())));
    }
    for (k, v) in labels {
        let ok_key = !k.is_empty()
            && k.len() <= MAX_LABEL_KEY
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
        if !ok_key {
            return Err(ApiError::field(format!("{field}[{k:.64}]"), "keys must be 1-63 chars of [A-Za-z0-9-_./]"));
        }
        at_most(&format!("{field}[{k}]"), v, MAX_LABEL_VALUE)?;
        no_nul(&format!("{field}[{k}]"), v)?;
    }
    Ok(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// A directory inside the sandbox: absolute, under /workspace or /tmp, no `..`.
pub fn sandbox_dir(field: &str, raw: &str) -> ApiResult<String> {
    at_most(field, raw, MAX_PATH)?;
    no_nul(field, raw)?;
    let under_root = ["/workspace", "/tmp"].iter().any(|root| raw == *root || raw.starts_with(&format!("{root}/")));
    if !under_root {
        return Err(ApiError::field(field, format!("{raw:?} must be /workspace, /tmp or a directory below them")));
    }
    if raw.split('/').any(|c| c == "..") {
        return Err(ApiError::field(field, format!("{raw:?} must not contain '..'")));
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

pub fn runtime(raw: i32) -> ApiResult<RuntimeKind> {
    match pb::Runtime::try_from(raw) {
        Ok(pb::Runtime::Unspecified | pb::Runtime::Bwrap) => Ok(RuntimeKind::Bwrap),
        Ok(pb::Runtime::Docker) => Ok(RuntimeKind::Docker),
        Ok(pb::Runtime::Noop) => Err(ApiError::field("runtime", "RUNTIME_NOOP runs jobs only (for benchmarks)")),
        Err(_) => {
            Err(ApiError::field("runtime", format!("unknown runtime {raw}; supported: RUNTIME_BWRAP, RUNTIME_DOCKER")))
        }
    }
}

/// The image Docker sandboxes use when a request names none.
pub const DEFAULT_IMAGE: &str = "corral/base:latest";
/// Longest image reference, counting the `:latest` added to one without a tag.
pub const MAX_IMAGE: usize = 255;

/// A local image reference, normalised to `repository:tag` (`latest` when no tag is given).
pub fn image(runtime: RuntimeKind, raw: &str) -> ApiResult<String> {
    if runtime == RuntimeKind::Bwrap {
        if !raw.is_empty() {
            return Err(ApiError::field("image", "only RUNTIME_DOCKER sandboxes have an image"));
        }
        return Ok(String::new());
    }
    if raw.is_empty() {
        return Ok(DEFAULT_IMAGE.to_owned());
    }
    let ok = raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:@".contains(&b))
        && raw.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    let last = raw.rsplit('/').next().unwrap_or(raw);
    let image = if last.contains(':') || raw.contains('@') { raw.to_owned() } else { format!("{raw}:latest") };
    // The limit applies to the normalised reference, so what this returns passes it again.
    if !ok || image.len() > MAX_IMAGE {
        return Err(ApiError::field(
            "image",
            format!(
                "{raw:.80?} is not an image reference like corral/python:latest (≤ {MAX_IMAGE} bytes with its tag)"
            ),
        ));
    }
    Ok(image)
}

pub fn create_spec(req: pb::CreateSandboxRequest, tenant: TenantId, cfg: &CoordinatorConfig) -> ApiResult<SandboxSpec> {
    let runtime = runtime(req.runtime)?;
    let image = image(runtime, &req.image)?;
    if !req.cpus.is_finite() || req.cpus < 0.0 || req.cpus > cfg.max_cpus {
        return Err(ApiError::field(
            "cpus",
            format!("{} is outside 0..={} (0 = default {})", req.cpus, cfg.max_cpus, cfg.default_cpus),
        ));
    }
    let max_mem = cfg.max_memory_mb as i64;
    if req.memory_mb < 0 || (req.memory_mb != 0 && req.memory_mb < MIN_MEMORY_MB) || req.memory_mb > max_mem {
        return Err(ApiError::field(
            "memory_mb",
            format!("{} is outside {MIN_MEMORY_MB}..={max_mem} (0 = default {})", req.memory_mb, cfg.default_memory_mb),
        ));
    }
    let (min_disk, max_disk) = (crate::config::MIN_DISK_MB as i64, cfg.max_disk_mb as i64);
    if req.disk_mb < 0 || (req.disk_mb != 0 && req.disk_mb < min_disk) || req.disk_mb > max_disk {
        return Err(ApiError::field(
            "disk_mb",
            format!("{} is outside {min_disk}..={max_disk} (0 = default {})", req.disk_mb, cfg.default_disk_mb),
        ));
    }
    let max_t = cfg.max_timeout_seconds as i64;
    if req.timeout_seconds < 0 || req.timeout_seconds > max_t {
        return Err(ApiError::field(
            "timeout_seconds",
            format!("{} is outside 0..={max_t} (0 = default {})", req.timeout_seconds, cfg.default_timeout_seconds),
        ));
    }
    let name = if req.name.is_empty() { None } else { Some(sandbox_name("name", &req.name)?) };
    let workdir = if req.workdir.is_empty() { "/workspace".to_owned() } else { sandbox_dir("workdir", &req.workdir)? };
    Ok(SandboxSpec {
        id: SandboxId::random(),
        tenant,
        runtime,
        name,
        cpus: if req.cpus == 0.0 { cfg.default_cpus } else { req.cpus },
        memory_mb: if req.memory_mb == 0 { cfg.default_memory_mb } else { req.memory_mb as u64 },
        pids_limit: cfg.pids_limit,
        timeout_seconds: if req.timeout_seconds == 0 {
            cfg.default_timeout_seconds
        } else {
            req.timeout_seconds as u64
        },
        internet_access: req.internet_access,
        env: env("env", &req.env)?,
        labels: labels("labels", &req.labels)?,
        workdir,
        image,
        disk_mb: if req.disk_mb == 0 { cfg.default_disk_mb } else { req.disk_mb as u64 },
        codebase: None,
    })
}

/// A new lifetime for SetTimeout: 1..=the maximum Create accepts (no "0 = default" here).
pub fn set_timeout_seconds(raw: i64, cfg: &CoordinatorConfig) -> ApiResult<u64> {
    let max_t = cfg.max_timeout_seconds as i64;
    if !(1..=max_t).contains(&raw) {
        return Err(ApiError::field("timeout_seconds", format!("{raw} is outside 1..={max_t}")));
    }
    Ok(raw as u64)
}

/// Exactly one of argv and shell, within size limits.
pub fn command(argv: Vec<String>, shell: String) -> ApiResult<Command> {
    match (argv.is_empty(), shell.is_empty()) {
        (true, true) => Err(ApiError::field("argv", "empty command: set argv or shell")),
        (false, false) => Err(ApiError::field("shell", "set either argv or shell, not both")),
        (true, false) => {
            at_most("shell", &shell, MAX_COMMAND_BYTES)?;
            no_nul("shell", &shell)?;
            Ok(Command::Shell(shell))
        }
        (false, true) => {
            if argv[0].is_empty() {
                return Err(ApiError::field("argv[0]", "the program must not be empty"));
            }
            let total: usize = argv.iter().map(|a| a.len() + 1).sum();
            if argv.len() > MAX_ARGV || total > MAX_COMMAND_BYTES {
                return Err(ApiError::field(
                    "argv",
                    format!("must be ≤ {MAX_ARGV} arguments and ≤ {MAX_COMMAND_BYTES} bytes"),
                ));
            }
            for (i, arg) in argv.iter().enumerate() {
                no_nul(&format!("argv[{i}]"), arg)?;
            }
            Ok(Command::Argv(argv))
        }
    }
}

/// Bytes for a command's standard input, within [`MAX_STDIN`].
pub fn stdin(raw: Vec<u8>) -> ApiResult<Vec<u8>> {
    if raw.len() > MAX_STDIN {
        let why = format!("{} bytes exceed the {MAX_STDIN} byte limit; write a file and redirect from it", raw.len());
        return Err(ApiError::field("stdin", why));
    }
    Ok(raw)
}

/// A RunCode snippet: not empty, at most [`MAX_CODE_BYTES`], no NUL.
pub fn code(raw: &str) -> ApiResult<()> {
    if raw.is_empty() {
        return Err(ApiError::field("code", "is required"));
    }
    at_most("code", raw, MAX_CODE_BYTES)?;
    no_nul("code", raw)
}

pub fn runtime_to_pb(r: RuntimeKind) -> pb::Runtime {
    match r {
        RuntimeKind::Bwrap => pb::Runtime::Bwrap,
        RuntimeKind::Docker => pb::Runtime::Docker,
        RuntimeKind::Noop => pb::Runtime::Noop,
    }
}

pub fn exit_to_pb(s: ExitStatus) -> pb::ExecExit {
    pb::ExecExit {
        exit_code: s.exit_code,
        timed_out: s.timed_out,
        truncated: s.truncated,
        duration_ms: s.duration_ms as i64,
        signal: s.signal,
        oom_killed: s.oom_killed,
    }
}

pub fn process_to_pb(p: ProcessInfo) -> pb::ProcessInfo {
    let status = if p.exit.is_some() { pb::ProcessStatus::Exited } else { pb::ProcessStatus::Running };
    pb::ProcessInfo {
        pid: p.pid,
        command: p.command,
        status: status as i32,
        exit: p.exit.map(exit_to_pb),
        started_at_ms: p.started_at_ms,
        ended_at_ms: p.ended_at_ms,
    }
}

pub fn state_to_pb(s: SandboxState) -> pb::SandboxState {
    use pb::SandboxState as P;
    match s {
        SandboxState::Pending => P::Pending,
        SandboxState::Scheduled => P::Scheduled,
        SandboxState::Starting => P::Starting,
        SandboxState::Running => P::Running,
        SandboxState::Paused => P::Paused,
        SandboxState::Snapshotting => P::Snapshotting,
        SandboxState::Stopped => P::Stopped,
        SandboxState::Failed => P::Failed,
        SandboxState::Lost => P::Lost,
        SandboxState::Expired => P::Expired,
    }
}

pub fn state_from_pb(field: &str, raw: i32) -> ApiResult<SandboxState> {
    let p = pb::SandboxState::try_from(raw).map_err(|_| ApiError::field(field, format!("unknown state {raw}")))?;
    SandboxState::ALL
        .into_iter()
        .find(|s| state_to_pb(*s) == p)
        .ok_or_else(|| ApiError::field(field, "SANDBOX_STATE_UNSPECIFIED is not a state"))
}

pub fn sandbox_to_pb(r: SandboxRecord) -> pb::Sandbox {
    let spec = r.spec;
    let cb = spec.codebase.as_ref();
    pb::Sandbox {
        codebase_id: cb.map(|c| c.id.to_string()).unwrap_or_default(),
        preset: cb.map(|c| c.preset.clone()).unwrap_or_default(),
        permissions: cb.map(|c| c.extra.iter().map(super::codebase_convert::rule_to_pb).collect()).unwrap_or_default(),
        codebase_path: cb.map(|c| c.path.clone()).unwrap_or_default(),
        codebase_error: String::new(),
        id: spec.id.to_string(),
        name: spec.name.map(|n| n.to_string()).unwrap_or_default(),
        tenant: spec.tenant.to_string(),
        runtime: runtime_to_pb(spec.runtime) as i32,
        image: spec.image,
        state: state_to_pb(r.state) as i32,
        node_id: r.node.map(|n| n.to_string()).unwrap_or_default(),
        cpus: spec.cpus,
        memory_mb: spec.memory_mb as i64,
        disk_mb: spec.disk_mb as i64,
        disk_usage: None,
        timeout_seconds: spec.timeout_seconds as i64,
        internet_access: spec.internet_access,
        labels: spec.labels.into_iter().collect(),
        workdir: spec.workdir,
        created_at_ms: r.created_at_ms,
        started_at_ms: r.started_at_ms,
        ended_at_ms: r.ended_at_ms,
        expires_at_ms: r.expires_at_ms,
        termination_reason: r.termination_reason,
    }
}

/// A sandbox's disk use, for the API.
pub fn disk_usage_to_pb(u: corral_core::model::DiskUsage) -> pb::DiskUsage {
    pb::DiskUsage {
        used_bytes: u.used_bytes as i64,
        total_bytes: u.total_bytes as i64,
        used_inodes: u.used_inodes as i64,
        total_inodes: u.total_inodes as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(disk_mb: i64) -> ApiResult<SandboxSpec> {
        let req = pb::CreateSandboxRequest { disk_mb, ..Default::default() };
        create_spec(req, TenantId::default_tenant(), &CoordinatorConfig::default())
    }

    #[test]
    fn disk_mb_defaults_and_is_bounded() {
        assert_eq!(create(0).unwrap().disk_mb, CoordinatorConfig::default().default_disk_mb);
        assert_eq!(create(64).unwrap().disk_mb, 64);
        for bad in [-1, 1, 16 * 1024 + 1] {
            let err = create(bad).expect_err("out of range");
            let status = tonic::Status::from(err);
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains("disk_mb"), "{}", status.message());
        }
    }

    #[test]
    fn timeouts_round_up_to_whole_milliseconds_without_float_noise() {
        let cfg = CoordinatorConfig::default();
        let cases = [(2.007, 2007), (2.0071, 2008), (0.0005, 1), (1e-9, 1), (2.5, 2500), (86_400.0, 86_400_000)];
        for (seconds, ms) in cases {
            assert_eq!(exec_timeout_ms(seconds, &cfg).unwrap(), ms, "{seconds} s");
        }
        assert_eq!(exec_timeout_ms(0.0, &cfg).unwrap(), 300_000, "0 = the default");
        // A job's timeout is shown as ms / 1000 and must convert back to the same ms (the fuzz
        // target proto_convert found 2.007 s stored as 2008 ms; fuzz/regressions/proto_convert).
        for ms in 1..200_000u64 {
            assert_eq!(ceil_ms(ms as f64 / 1000.0), ms);
        }
    }

    #[test]
    fn image_references_normalise_to_references_that_pass_again() {
        for raw in ["corral/python", "corral/python:3", "localhost:5000/x", "x@sha256:ab"] {
            let once = image(RuntimeKind::Docker, raw).unwrap();
            assert_eq!(image(RuntimeKind::Docker, &once).unwrap(), once, "{raw}");
        }
        // fuzz/regressions/proto_convert/long-untagged-image: 250 characters without a tag
        // used to become a 257-character reference that a second validation refused.
        assert!(image(RuntimeKind::Docker, &"a".repeat(250)).is_err());
        assert_eq!(image(RuntimeKind::Docker, &"a".repeat(248)).unwrap().len(), MAX_IMAGE);
        assert!(image(RuntimeKind::Docker, &"a".repeat(256)).is_err());
    }
}
