//! `corral.v1.Jobs` and `corral.v1.Batches` requests, validated against a fixed set of nodes.

use std::collections::BTreeMap;

use corral_coordinator::CoordinatorConfig;
use corral_coordinator::api::convert::MAX_CODE_BYTES;
use corral_coordinator::api::job_convert::{self as jc, MAX_RETRIES};
use corral_coordinator::error::ApiError;
use corral_coordinator::jobs::records;
use corral_core::ids::{NodeId, TenantId};
use corral_core::jobs::{JobCommand, JobId, JobSpec};
use corral_core::languages::{self, LanguageOffer};
use corral_core::model::{Capacity, Command, NodeInfo, RuntimeKind};
use corral_proto::v1 as pb;

use super::{limits, valid};

/// Batch items validated per input (the checks are per item; more only cost time).
const MAX_CHECKED_ITEMS: usize = 32;
const NOW_MS: i64 = 1_700_000_000_000;
const PYTHON_IMAGE: &str = "corral/python:latest";

/// A bubblewrap node with python and bash, a Docker node with two images (python in one), and
/// a node offering the benchmark runtime.
fn nodes() -> Vec<NodeInfo> {
    let offer = |language: &str, runtime, image: &str| LanguageOffer {
        language: language.into(),
        runtime,
        image: image.into(),
        program: format!("/usr/bin/{language}"),
    };
    let node = |id: &str, runtimes, images: &[&str], languages| NodeInfo {
        v: NodeInfo::VERSION,
        node_id: NodeId::parse(id).expect("a valid node id"),
        capacity: Capacity {
            cpus: 8.0,
            memory_mb: 16 * 1024,
            sandboxes: 64,
            disk_mb: 0,
            max_sandbox_disk_mb: 0,
            pids: u64::MAX,
        },
        runtimes,
        images: images.iter().map(|i| i.to_string()).collect(),
        languages,
        labels: BTreeMap::new(),
        agent_version: "fuzz".into(),
        registered_at_ms: 0,
        lease: 0,
    };
    vec![
        node(
            "bw",
            vec![RuntimeKind::Bwrap],
            &[],
            vec![offer("python", RuntimeKind::Bwrap, ""), offer("bash", RuntimeKind::Bwrap, "")],
        ),
        node(
            "dk",
            vec![RuntimeKind::Docker],
            &["corral/base:latest", PYTHON_IMAGE],
            vec![offer("python", RuntimeKind::Docker, PYTHON_IMAGE)],
        ),
        node("noop", vec![RuntimeKind::Noop], &[], Vec::new()),
    ]
}

pub fn submit(mut req: pb::SubmitJobRequest, cfg: &CoordinatorConfig) {
    let key = std::mem::take(&mut req.idempotency_key);
    idempotency_key(&key);
    jc::hash_of(&req);
    valid(jc::retries("retries", req.retries), |r| assert!(*r <= MAX_RETRIES));
    if let Some(raw) = req.job {
        job(raw, cfg, "job.");
    }
}

pub fn submit_batch(mut req: pb::SubmitBatchRequest, cfg: &CoordinatorConfig) {
    let key = std::mem::take(&mut req.idempotency_key);
    idempotency_key(&key);
    jc::hash_of(&req);
    valid(jc::retries("retries_per_item", req.retries_per_item), |r| assert!(*r <= MAX_RETRIES));
    valid(jc::batch_deadline_ms(req.deadline_seconds, NOW_MS), |at| {
        let latest = NOW_MS + 7 * 24 * 3600 * 1000;
        assert!(*at == 0 && req.deadline_seconds == 0.0 || (NOW_MS + 1..=latest).contains(at), "deadline {at}");
    });
    valid(corral_coordinator::api::convert::labels("labels", &req.labels), limits::labels);
    for (i, raw) in req.items.into_iter().take(MAX_CHECKED_ITEMS).enumerate() {
        job(raw, cfg, &format!("items[{i}]."));
    }
}

pub fn list(req: pb::ListJobsRequest) {
    for raw in &req.states {
        valid(jc::state_from_pb("states", *raw), |s| assert_eq!(jc::state_to_pb(*s) as i32, *raw));
    }
    valid(corral_coordinator::api::convert::labels("labels", &req.labels), limits::labels);
}

fn idempotency_key(raw: &str) {
    valid(jc::idempotency_key(raw), |k| {
        assert_eq!(k.unwrap_or_default(), raw);
        assert!(raw.len() <= 128 && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)));
    });
}

/// One job spec, as Submit (`prefix` "job.") and SubmitBatch (`items[i].`) validate it.
fn job(raw: pb::JobSpec, cfg: &CoordinatorConfig, prefix: &str) {
    let nodes = nodes();
    let timeout = raw.timeout_seconds;
    let result = jc::job_spec(raw, cfg, &nodes).map_err(|e| jc::within(prefix, e));
    if let Err(ApiError::InvalidField { field, .. }) = &result {
        assert!(field.starts_with(prefix), "{field} lacks the prefix {prefix}");
    }
    let Some(spec) = valid(result, |s| check_job(s, timeout, cfg, &nodes)) else { return };
    let record = records::new_job(JobId::random(), &TenantId::default_tenant(), spec.clone(), 0, String::new());
    let wire = jc::job_to_pb(record, 0, true).spec.expect("a job on the wire has its spec");
    let back = jc::job_spec(wire, cfg, &nodes).unwrap_or_else(|e| panic!("{spec:?} on the wire: {e}"));
    assert_eq!(back, spec, "a job spec changed on the wire");
}

fn check_job(s: &JobSpec, timeout: f64, cfg: &CoordinatorConfig, nodes: &[NodeInfo]) {
    let node = nodes.iter().find(|n| n.runtimes.contains(&s.runtime)).expect("a runtime no node offers");
    match s.runtime {
        RuntimeKind::Docker => assert!(node.images.contains(&s.image), "image {:?}", s.image),
        _ => assert!(s.image.is_empty(), "image {:?} for {}", s.image, s.runtime),
    }
    match &s.command {
        JobCommand::Argv(a) => limits::command(&Command::Argv(a.clone())),
        JobCommand::Shell(l) => limits::command(&Command::Shell(l.clone())),
        JobCommand::Code { language, code } => {
            assert_eq!(languages::resolve(language).map(|l| l.name), Some(language.as_str()), "not canonical");
            assert!(!code.is_empty() && code.len() <= MAX_CODE_BYTES && !code.contains('\0'), "code");
            let served = nodes
                .iter()
                .flat_map(|n| &n.languages)
                .any(|o| &o.language == language && o.serves(s.runtime, &s.image));
            assert!(served || s.runtime == RuntimeKind::Noop, "{language} accepted where no node runs it");
        }
    }
    assert!(s.cpus.is_finite() && s.cpus > 0.0 && s.cpus <= cfg.max_cpus, "cpus {}", s.cpus);
    assert!((16..=cfg.max_memory_mb).contains(&s.memory_mb), "memory {}", s.memory_mb);
    limits::timeout_ms(timeout, s.timeout_ms, cfg);
    limits::env(&s.env);
    limits::labels(&s.labels);
    limits::stdin(&s.stdin);
}
