//! Validation and wire conversion for `corral.v1.Jobs` and `corral.v1.Batches`.

use corral_core::jobs::{BatchRecord, JobCommand, JobRecord, JobSpec, JobState};
use corral_core::languages;
use corral_core::model::{Command, NodeInfo, RuntimeKind};
use corral_proto::v1 as pb;
use prost::Message;

use super::convert;
use crate::config::CoordinatorConfig;
use crate::error::{ApiError, ApiResult};
use crate::jobs::table::BatchEntry;

/// Most retries of a failed command.
pub const MAX_RETRIES: u32 = 10;
/// Longest idempotency key.
const MAX_IDEM_KEY: usize = 128;
/// Longest batch deadline.
const MAX_DEADLINE_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

/// Puts `prefix` in front of the field an error names (`items[3].` + `argv`).
pub fn within(prefix: &str, e: ApiError) -> ApiError {
    match e {
        ApiError::InvalidField { field, why } => ApiError::InvalidField { field: format!("{prefix}{field}"), why },
        other => other,
    }
}

pub fn idempotency_key(raw: &str) -> ApiResult<Option<&str>> {
    if raw.is_empty() {
        return Ok(None);
    }
    let ok = raw.len() <= MAX_IDEM_KEY && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if !ok {
        return Err(ApiError::field(
            "idempotency_key",
            format!("must be 1..={MAX_IDEM_KEY} characters of [A-Za-z0-9-_.:]"),
        ));
    }
    Ok(Some(raw))
}

pub fn retries(field: &str, raw: u32) -> ApiResult<u32> {
    if raw > MAX_RETRIES {
        return Err(ApiError::field(field, format!("{raw} is more than the limit of {MAX_RETRIES}")));
    }
    Ok(raw)
}

fn runtime(raw: i32) -> ApiResult<RuntimeKind> {
    match pb::Runtime::try_from(raw) {
        Ok(pb::Runtime::Noop) => Ok(RuntimeKind::Noop),
        _ => convert::runtime(raw),
    }
}

/// Validates a job spec against the limits and what the registered nodes offer.
pub fn job_spec(raw: pb::JobSpec, cfg: &CoordinatorConfig, nodes: &[NodeInfo]) -> ApiResult<JobSpec> {
    let runtime = runtime(raw.runtime)?;
    let image = if runtime == RuntimeKind::Noop {
        if !raw.image.is_empty() {
            return Err(ApiError::field("image", "RUNTIME_NOOP jobs have no image"));
        }
        String::new()
    } else {
        convert::image(runtime, &raw.image)?
    };
    offered(runtime, &image, nodes)?;
    let command = match (raw.argv.is_empty() && raw.shell.is_empty(), raw.code.is_empty()) {
        (true, false) => {
            convert::code(&raw.code)?;
            let Some(lang) = languages::resolve(&raw.language) else {
                return Err(unknown_language(&raw.language, nodes));
            };
            let offered =
                nodes.iter().flat_map(|n| &n.languages).any(|o| o.language == lang.name && o.serves(runtime, &image));
            if !offered && runtime != RuntimeKind::Noop {
                let what = if image.is_empty() { format!("{runtime} sandboxes") } else { format!("image {image}") };
                return Err(ApiError::field(
                    "language",
                    format!("{} is not available to {what} on any node; available: {}", lang.name, available(nodes)),
                ));
            }
            JobCommand::Code { language: lang.name.to_owned(), code: raw.code }
        }
        (false, false) => {
            return Err(ApiError::field("code", "set either code (with language) or argv/shell, not both"));
        }
        (_, true) => {
            if !raw.language.is_empty() {
                return Err(ApiError::field("language", "is only used with code"));
            }
            match convert::command(raw.argv, raw.shell)? {
                Command::Argv(a) => JobCommand::Argv(a),
                Command::Shell(s) => JobCommand::Shell(s),
            }
        }
    };
    let cpus = if raw.cpus == 0.0 { cfg.default_cpus } else { raw.cpus };
    if !(cpus.is_finite() && cpus > 0.0 && cpus <= cfg.max_cpus) {
        return Err(ApiError::field("cpus", format!("{} is outside (0, {}]", raw.cpus, cfg.max_cpus)));
    }
    let memory_mb = if raw.memory_mb == 0 { cfg.default_memory_mb } else { raw.memory_mb.max(0) as u64 };
    if raw.memory_mb < 0 || !(16..=cfg.max_memory_mb).contains(&memory_mb) {
        return Err(ApiError::field("memory_mb", format!("{} is outside 16..={}", raw.memory_mb, cfg.max_memory_mb)));
    }
    Ok(JobSpec {
        runtime,
        image,
        command,
        env: convert::env("env", &raw.env)?,
        timeout_ms: convert::exec_timeout_ms(raw.timeout_seconds, cfg)?,
        cpus,
        memory_mb,
        internet_access: raw.internet_access,
        stdin: convert::stdin(raw.stdin)?,
        labels: convert::labels("labels", &raw.labels)?,
    })
}

/// A job waits in the queue for a free slot, never for a runtime or image that no node has.
fn offered(runtime: RuntimeKind, image: &str, nodes: &[NodeInfo]) -> ApiResult<()> {
    let with_runtime: Vec<&NodeInfo> = nodes.iter().filter(|n| n.runtimes.contains(&runtime)).collect();
    if with_runtime.is_empty() {
        let mut offered: Vec<String> = nodes.iter().flat_map(|n| &n.runtimes).map(|r| r.to_string()).collect();
        offered.sort();
        offered.dedup();
        let list = if offered.is_empty() { "none (no node is registered)".to_owned() } else { offered.join(", ") };
        return Err(ApiError::field("runtime", format!("no registered node runs {runtime}; runtimes offered: {list}")));
    }
    if runtime == RuntimeKind::Docker && !with_runtime.iter().any(|n| n.images.iter().any(|i| i == image)) {
        let mut images: Vec<&str> = with_runtime.iter().flat_map(|n| &n.images).map(String::as_str).collect();
        images.sort_unstable();
        images.dedup();
        return Err(ApiError::field("image", format!("no node has the image {image}; images: {}", images.join(", "))));
    }
    Ok(())
}

fn available(nodes: &[NodeInfo]) -> String {
    let names: Vec<&str> = languages::LANGUAGES
        .iter()
        .filter(|l| nodes.iter().flat_map(|n| &n.languages).any(|o| o.language == l.name))
        .map(|l| l.name)
        .collect();
    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
}

fn unknown_language(raw: &str, nodes: &[NodeInfo]) -> ApiError {
    ApiError::field("language", format!("unknown language {raw:.64?}; available: {}", available(nodes)))
}

/// The idempotency hash of a request (its encoding with the key left out).
pub fn hash_of<M: Message>(msg: &M) -> String {
    crate::jobs::ops::body_hash(&msg.encode_to_vec())
}

pub fn batch_deadline_ms(raw: f64, now_ms: i64) -> ApiResult<i64> {
    if !raw.is_finite() || !(0.0..=MAX_DEADLINE_SECONDS).contains(&raw) {
        return Err(ApiError::field(
            "deadline_seconds",
            format!("{raw} is outside 0..={MAX_DEADLINE_SECONDS} (0 = none)"),
        ));
    }
    Ok(if raw == 0.0 { 0 } else { now_ms + convert::ceil_ms(raw) as i64 })
}

pub fn state_to_pb(s: JobState) -> pb::JobState {
    match s {
        JobState::Pending => pb::JobState::Pending,
        JobState::Running => pb::JobState::Running,
        JobState::Completed => pb::JobState::Completed,
        JobState::Failed => pb::JobState::Failed,
        JobState::Timeout => pb::JobState::Timeout,
        JobState::Cancelled => pb::JobState::Cancelled,
        JobState::Lost => pb::JobState::Lost,
    }
}

pub fn state_from_pb(field: &str, raw: i32) -> ApiResult<JobState> {
    let p = pb::JobState::try_from(raw).map_err(|_| ApiError::field(field, format!("unknown job state {raw}")))?;
    JobState::ALL
        .into_iter()
        .find(|s| state_to_pb(*s) == p)
        .ok_or_else(|| ApiError::field(field, "JOB_STATE_UNSPECIFIED is not a state"))
}

fn spec_to_pb(s: JobSpec) -> pb::JobSpec {
    let (argv, shell, language, code) = match s.command {
        JobCommand::Argv(a) => (a, String::new(), String::new(), String::new()),
        JobCommand::Shell(l) => (Vec::new(), l, String::new(), String::new()),
        JobCommand::Code { language, code } => (Vec::new(), String::new(), language, code),
    };
    pb::JobSpec {
        runtime: match s.runtime {
            RuntimeKind::Noop => pb::Runtime::Noop,
            other => convert::runtime_to_pb(other),
        } as i32,
        image: s.image,
        argv,
        shell,
        language,
        code,
        env: s.env.into_iter().collect(),
        timeout_seconds: s.timeout_ms as f64 / 1000.0,
        cpus: s.cpus,
        memory_mb: s.memory_mb as i64,
        internet_access: s.internet_access,
        stdin: s.stdin,
        labels: s.labels.into_iter().collect(),
    }
}

/// A job on the wire; `with_output` false leaves stdout/stderr out (listings).
pub fn job_to_pb(r: JobRecord, queue_position: u64, with_output: bool) -> pb::Job {
    let (batch_id, index) = r.batch_item().map(|(b, i)| (b.to_string(), i)).unwrap_or_default();
    pb::Job {
        id: r.id.to_string(),
        state: state_to_pb(r.state) as i32,
        batch_id,
        index,
        spec: Some(spec_to_pb(r.spec)),
        attempts: r.attempt,
        node_id: r.node.map(|n| n.to_string()).unwrap_or_default(),
        result: r.result.map(|res| pb::JobResult {
            stdout: if with_output { res.stdout } else { Vec::new() },
            stderr: if with_output { res.stderr } else { Vec::new() },
            exit_code: res.status.exit_code,
            signal: res.status.signal,
            truncated: res.status.truncated,
            output_clipped: res.clipped,
            oom_killed: res.status.oom_killed,
            duration_ms: res.status.duration_ms as i64,
        }),
        reason: r.reason,
        created_at_ms: r.created_at_ms,
        started_at_ms: r.started_at_ms,
        finished_at_ms: r.finished_at_ms,
        queue_position,
        failures: r.failures,
        retries: r.retries,
        tenant: r.tenant.to_string(),
    }
}

/// A batch on the wire, with counts and state from the index.
pub fn batch_to_pb(r: BatchRecord, entry: Option<&BatchEntry>) -> pb::Batch {
    let c = entry.map_or([0; 7], |e| e.counts);
    let done = entry.is_some_and(|e| e.done());
    let (state, finished_at_ms, reason) = match (&r.cancelled, done) {
        // Cancelled wins: its items ended because of the cancel (a batch that had finished is
        // never marked cancelled).
        (Some(c), _) => (pb::BatchState::Cancelled, c.at_ms.max(r.created_at_ms), c.reason.clone()),
        (None, true) => {
            (pb::BatchState::Completed, entry.map_or(0, |e| e.finished_at_ms.max(r.created_at_ms)), String::new())
        }
        (None, false) => (pb::BatchState::Running, 0, String::new()),
    };
    // Items not written yet (an interrupted submit being finished) count as pending.
    let seen: u32 = c.iter().sum();
    let received = r.received();
    pb::Batch {
        received,
        id: r.id.to_string(),
        state: state as i32,
        total: r.total,
        counts: Some(pb::BatchCounts {
            pending: c[0] + r.total.saturating_sub(seen),
            running: c[1],
            completed: c[2],
            failed: c[3],
            timeout: c[4],
            cancelled: c[5],
            lost: c[6],
        }),
        max_concurrency: r.max_concurrency,
        retries_per_item: r.retries_per_item,
        deadline_at_ms: r.deadline_at_ms,
        labels: r.labels.into_iter().collect(),
        created_at_ms: r.created_at_ms,
        finished_at_ms,
        tenant: r.tenant.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bytes_are_named_by_field_and_place() {
        let argv = vec!["echo".to_owned(), "hello\0world".to_owned()];
        let e = within("items[3].", convert::command(argv, String::new()).unwrap_err());
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(e.to_string(), "items[3].argv[1]: contains a NUL byte at byte 5");
        let e = convert::command(Vec::new(), "ls\0".to_owned()).unwrap_err();
        assert_eq!(e.to_string(), "shell: contains a NUL byte at byte 2");
        assert_eq!(convert::code("\0").unwrap_err().to_string(), "code: contains a NUL byte at byte 0");
        let env = [("A".to_owned(), "x\0".to_owned())].into_iter().collect();
        assert_eq!(convert::env("env", &env).unwrap_err().to_string(), "env[A]: contains a NUL byte at byte 1");
        let long = "x".repeat(convert::MAX_CODE_BYTES + 1);
        assert_eq!(convert::code(&long).unwrap_err().to_string(), "code: is 524289 bytes; at most 524288");
    }
}
