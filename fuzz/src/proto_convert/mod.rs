//! The coordinator's request validation (`api::convert`, `api::job_convert`) on prost messages
//! decoded from arbitrary bytes.
//!
//! Input: one byte choosing the request type, then the message's protobuf encoding. Each field
//! goes through the validator its handler calls. Invariants:
//!
//! - validation never panics, and a refusal is always INVALID_ARGUMENT naming a field;
//! - what it accepts honours the documented limits ([`limits`]), ids and names print as given;
//! - a created sandbox and a submitted job written back to the wire (`sandbox_to_pb`,
//!   `job_to_pb`) validate again to the same spec.

mod jobs;
mod limits;

use corral_coordinator::CoordinatorConfig;
use corral_coordinator::api::convert as cv;
use corral_coordinator::error::ApiResult;
use corral_core::ids::TenantId;
use corral_core::model::{RuntimeKind, SandboxRecord};
use corral_core::state::SandboxState;
use corral_proto::v1 as pb;
use prost::Message;

/// Number of request types; the first input byte modulo this picks one.
pub const KINDS: u8 = 12;

pub fn run(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else { return };
    let cfg = CoordinatorConfig::default();
    match kind % KINDS {
        0 => decoded(bytes, |r| create(r, &cfg)),
        1 => decoded(bytes, |r| jobs::submit(r, &cfg)),
        2 => decoded(bytes, |r| jobs::submit_batch(r, &cfg)),
        3 => decoded(bytes, |r| exec(r, &cfg)),
        4 => decoded(bytes, |r| run_code(r, &cfg)),
        5 => decoded(bytes, start_process),
        6 => decoded(bytes, signal),
        7 => decoded(bytes, |r| set_timeout(r, &cfg)),
        8 => decoded(bytes, list_sandboxes),
        9 => decoded(bytes, jobs::list),
        10 => decoded(bytes, |r: pb::GetSandboxByNameRequest| name(&r.name)),
        _ => decoded(bytes, session),
    }
}

fn decoded<M: Message + Default>(bytes: &[u8], check: impl FnOnce(M)) {
    if let Ok(msg) = M::decode(bytes) {
        check(msg);
    }
}

/// Runs a validator: a refusal must name a field; an acceptance goes to `accepted`.
fn valid<T>(result: ApiResult<T>, accepted: impl FnOnce(&T)) -> Option<T> {
    match result {
        Ok(v) => {
            accepted(&v);
            Some(v)
        }
        Err(e) => {
            limits::refusal(&e);
            None
        }
    }
}

fn create(req: pb::CreateSandboxRequest, cfg: &CoordinatorConfig) {
    let tenant = TenantId::default_tenant();
    let (raw_name, raw_runtime) = (req.name.clone(), req.runtime);
    let Some(spec) = valid(cv::create_spec(req, tenant.clone(), cfg), |_| {}) else { return };
    assert!(spec.cpus.is_finite() && spec.cpus > 0.0 && spec.cpus <= cfg.max_cpus, "cpus {}", spec.cpus);
    assert!((16..=cfg.max_memory_mb).contains(&spec.memory_mb), "memory {}", spec.memory_mb);
    assert!((1..=cfg.max_timeout_seconds).contains(&spec.timeout_seconds), "timeout {}", spec.timeout_seconds);
    assert_eq!(spec.pids_limit, cfg.pids_limit);
    assert_eq!(spec.name.as_ref().map(ToString::to_string).unwrap_or_default(), raw_name, "name");
    assert_eq!(spec.runtime == RuntimeKind::Docker, raw_runtime == pb::Runtime::Docker as i32, "runtime");
    match spec.runtime {
        RuntimeKind::Docker => assert_eq!(cv::image(RuntimeKind::Docker, &spec.image).ok().as_ref(), Some(&spec.image)),
        _ => assert!(spec.image.is_empty(), "a bubblewrap sandbox with image {:?}", spec.image),
    }
    limits::env(&spec.env);
    limits::labels(&spec.labels);
    limits::dir(&spec.workdir);

    let record = SandboxRecord {
        v: SandboxRecord::VERSION,
        spec: spec.clone(),
        state: SandboxState::Running,
        node: None,
        created_at_ms: 0,
        started_at_ms: 0,
        ended_at_ms: 0,
        expires_at_ms: 0,
        termination_reason: String::new(),
        deadline_lease: 0,
    };
    let wire = cv::sandbox_to_pb(record);
    let again = pb::CreateSandboxRequest {
        runtime: wire.runtime,
        cpus: wire.cpus,
        memory_mb: wire.memory_mb,
        timeout_seconds: wire.timeout_seconds,
        internet_access: wire.internet_access,
        env: spec.env.clone().into_iter().collect(),
        labels: wire.labels,
        name: wire.name,
        workdir: wire.workdir,
        image: wire.image,
        disk_mb: wire.disk_mb,
        ..Default::default()
    };
    let mut back = cv::create_spec(again, tenant, cfg).unwrap_or_else(|e| panic!("{spec:?} on the wire: {e}"));
    back.id = spec.id.clone();
    assert_eq!(back, spec, "a sandbox spec changed on the wire");
}

fn exec(req: pb::ExecRequest, cfg: &CoordinatorConfig) {
    sandbox_id(&req.sandbox_id);
    valid(cv::command(req.argv, req.shell), limits::command);
    valid(cv::env("env", &req.env), limits::env);
    valid(cv::stdin(req.stdin), |s| limits::stdin(s));
    valid(cv::exec_timeout_ms(req.timeout_seconds, cfg), |ms| limits::timeout_ms(req.timeout_seconds, *ms, cfg));
    cwd(&req.cwd);
}

fn run_code(req: pb::RunCodeRequest, cfg: &CoordinatorConfig) {
    sandbox_id(&req.sandbox_id);
    valid(cv::code(&req.code), |()| assert!(!req.code.is_empty() && !req.code.contains('\0')));
    if let Some(lang) = corral_core::languages::resolve(&req.language) {
        assert_eq!(corral_core::languages::resolve(lang.name).map(|l| l.name), Some(lang.name), "canonical name");
    }
    valid(cv::env("env", &req.env), limits::env);
    valid(cv::stdin(req.stdin), |s| limits::stdin(s));
    valid(cv::exec_timeout_ms(req.timeout_seconds, cfg), |ms| limits::timeout_ms(req.timeout_seconds, *ms, cfg));
    cwd(&req.cwd);
}

fn start_process(req: pb::StartProcessRequest) {
    sandbox_id(&req.sandbox_id);
    valid(cv::command(req.argv, req.shell), limits::command);
    valid(cv::env("env", &req.env), limits::env);
    cwd(&req.cwd);
}

fn signal(req: pb::SendSignalRequest) {
    sandbox_id(&req.sandbox_id);
    valid(cv::pid(req.pid), |p| assert!(*p >= 1));
    valid(cv::signal(req.signal), |s| assert!((1..=31).contains(s) || (34..=64).contains(s), "signal {s}"));
}

fn set_timeout(req: pb::SetSandboxTimeoutRequest, cfg: &CoordinatorConfig) {
    sandbox_id(&req.id);
    valid(cv::set_timeout_seconds(req.timeout_seconds, cfg), |t| assert!((1..=cfg.max_timeout_seconds).contains(t)));
}

fn list_sandboxes(req: pb::ListSandboxesRequest) {
    for raw in &req.states {
        valid(cv::state_from_pb("states", *raw), |s| assert_eq!(cv::state_to_pb(*s) as i32, *raw));
    }
    valid(cv::labels("labels", &req.labels), limits::labels);
    if !req.page_token.is_empty() {
        sandbox_id(&req.page_token);
    }
}

fn session(req: pb::SessionExecRequest) {
    let raw = &req.session_id;
    valid(cv::session_id("session_id", raw), |s| assert_eq!(&s.to_string(), raw, "session id"));
    valid(cv::command(Vec::new(), req.command), limits::command);
}

fn sandbox_id(raw: &str) {
    valid(cv::sandbox_id("sandbox_id", raw), |id| assert_eq!(id.as_str(), raw, "sandbox id"));
}

fn name(raw: &str) {
    valid(cv::sandbox_name("name", raw), |n| {
        assert_eq!(n.as_str(), raw, "name");
        assert!((1..=63).contains(&raw.len()) && raw.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric()));
    });
}

fn cwd(raw: &str) {
    if !raw.is_empty() {
        valid(cv::sandbox_dir("cwd", raw), |d| limits::dir(d));
    }
}
