//! Rendering jobs and batches: JSON objects, one-line summaries and tables.

use corral_client::v1 as pb;
use serde_json::{Value, json};

use super::ms_to_rfc3339;

pub fn job_state(j: &pb::Job) -> pb::JobState {
    pb::JobState::try_from(j.state).unwrap_or(pb::JobState::Unspecified)
}

pub fn job_state_name(state: i32) -> String {
    pb::JobState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("JOB_STATE_").to_owned())
        .unwrap_or_else(|_| format!("UNKNOWN({state})"))
}

pub fn batch_state_name(state: i32) -> String {
    pb::BatchState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("BATCH_STATE_").to_owned())
        .unwrap_or_else(|_| format!("UNKNOWN({state})"))
}

fn runtime_name(r: i32) -> String {
    pb::Runtime::try_from(r)
        .map(|r| r.as_str_name().trim_start_matches("RUNTIME_").to_ascii_lowercase())
        .unwrap_or_else(|_| format!("unknown({r})"))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What a job runs, in a few words: the argv, the shell line, or the language and code size.
pub fn describe_command(spec: Option<&pb::JobSpec>) -> String {
    let Some(s) = spec else { return String::new() };
    if !s.argv.is_empty() {
        s.argv.join(" ")
    } else if !s.shell.is_empty() {
        format!("sh -c {:?}", s.shell)
    } else if !s.language.is_empty() {
        format!("{} ({} bytes of code)", s.language, s.code.len())
    } else {
        String::new()
    }
}

/// At most `max` characters of the first line of `s`, with `…` when cut.
pub fn clip(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() <= max && !s.trim_end().contains('\n') {
        return line.to_owned();
    }
    let mut out: String = line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The first non-blank line of a stream (lossily decoded), for failure summaries.
pub fn first_line(data: &[u8]) -> String {
    lossy(data).lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default().to_owned()
}

fn spec_json(s: &pb::JobSpec) -> Value {
    json!({
        "runtime": runtime_name(s.runtime),
        "image": s.image,
        "argv": s.argv,
        "shell": s.shell,
        "language": s.language,
        "code": s.code,
        "env": s.env,
        "timeout_seconds": s.timeout_seconds,
        "cpus": s.cpus,
        "memory_mb": s.memory_mb,
        "internet_access": s.internet_access,
        "stdin": lossy(&s.stdin),
        "labels": s.labels,
    })
}

fn result_json(r: &pb::JobResult) -> Value {
    json!({
        "stdout": lossy(&r.stdout),
        "stderr": lossy(&r.stderr),
        "exit_code": r.exit_code,
        "signal": r.signal,
        "truncated": r.truncated,
        "output_clipped": r.output_clipped,
        "oom_killed": r.oom_killed,
        "duration_ms": r.duration_ms,
    })
}

pub fn job_json(j: &pb::Job) -> Value {
    json!({
        "id": j.id,
        "state": job_state_name(j.state),
        "tenant": j.tenant,
        "batch_id": j.batch_id,
        "index": j.index,
        "attempts": j.attempts,
        "failures": j.failures,
        "retries": j.retries,
        "node_id": j.node_id,
        "reason": j.reason,
        "queue_position": j.queue_position,
        "created_at": ms_to_rfc3339(j.created_at_ms),
        "started_at": ms_to_rfc3339(j.started_at_ms),
        "finished_at": ms_to_rfc3339(j.finished_at_ms),
        "spec": j.spec.as_ref().map(spec_json),
        "result": j.result.as_ref().map(result_json),
    })
}

/// One finished batch item as a JSON Lines record (`batch run -o jsonl`, `batch watch`).
/// `stdout`/`stderr` are the given streams (the whole output when the result was clipped).
pub fn item_json(j: &pb::Job, stdout: &[u8], stderr: &[u8]) -> Value {
    json!({
        "index": j.index,
        "job_id": j.id,
        "state": job_state_name(j.state),
        "exit_code": j.result.as_ref().map(|r| r.exit_code),
        "stdout": lossy(stdout),
        "stderr": lossy(stderr),
        "duration_ms": j.result.as_ref().map(|r| r.duration_ms),
    })
}

/// `exit=… duration=…` (and signal, OOM) of a job's result; empty before it ran.
fn result_words(j: &pb::Job) -> String {
    let Some(r) = &j.result else { return String::new() };
    let mut words = format!("exit={} duration={}ms", r.exit_code, r.duration_ms);
    if r.signal > 0 {
        words.push_str(&format!(" signal={}", r.signal));
    }
    if r.oom_killed {
        words.push_str(" oom-killed");
    }
    words
}

/// A job for people: a summary line, then its details.
pub fn print_job(j: &pb::Job) {
    let mut head = format!("{}  {}", j.id, job_state_name(j.state));
    for part in [result_words(j), format!("attempts={}", j.attempts)] {
        if !part.is_empty() {
            head.push_str("  ");
            head.push_str(&part);
        }
    }
    if !j.node_id.is_empty() {
        head.push_str(&format!("  node={}", j.node_id));
    }
    println!("{head}");
    let command = describe_command(j.spec.as_ref());
    if !command.is_empty() {
        println!("  command: {command}");
    }
    if !j.batch_id.is_empty() {
        println!("  batch: {} item {}", j.batch_id, j.index);
    }
    if j.queue_position > 0 {
        println!("  queue position: {}", j.queue_position);
    }
    if !j.reason.is_empty() {
        println!("  reason: {}", j.reason);
    }
    if let Some(err) = j.result.as_ref().map(|r| first_line(&r.stderr)).filter(|l| !l.is_empty()) {
        println!("  stderr: {}", clip(&err, 100));
    }
}

pub fn print_job_table(jobs: &[pb::Job]) {
    let batch =
        |j: &pb::Job| if j.batch_id.is_empty() { "-".to_owned() } else { format!("{}:{}", j.batch_id, j.index) };
    let w = jobs.iter().map(|j| j.id.len()).max().unwrap_or(0).max(2);
    let bw = jobs.iter().map(|j| batch(j).len()).max().unwrap_or(0).max(5);
    println!("{:<w$}  {:<9}  {:>4}  {:>8}  {:<12}  {:<bw$}  COMMAND", "ID", "STATE", "EXIT", "MS", "NODE", "BATCH");
    for j in jobs {
        let exit = j.result.as_ref().map(|r| r.exit_code.to_string()).unwrap_or_default();
        let ms = j.result.as_ref().map(|r| r.duration_ms.to_string()).unwrap_or_default();
        let state = job_state_name(j.state);
        let cmd = clip(&describe_command(j.spec.as_ref()), 50);
        println!("{:<w$}  {state:<9}  {exit:>4}  {ms:>8}  {:<12}  {:<bw$}  {cmd}", j.id, j.node_id, batch(j));
    }
}

/// Items that have reached a terminal state.
pub fn finished(c: &pb::BatchCounts) -> u32 {
    c.completed + c.failed + c.timeout + c.cancelled + c.lost
}

fn counts_json(c: &pb::BatchCounts) -> Value {
    json!({
        "pending": c.pending, "running": c.running, "completed": c.completed, "failed": c.failed,
        "timeout": c.timeout, "cancelled": c.cancelled, "lost": c.lost,
    })
}

pub fn batch_json(b: &pb::Batch) -> Value {
    json!({
        "id": b.id,
        "state": batch_state_name(b.state),
        "tenant": b.tenant,
        "total": b.total,
        "counts": counts_json(&b.counts.unwrap_or_default()),
        "max_concurrency": b.max_concurrency,
        "retries_per_item": b.retries_per_item,
        "deadline_at": ms_to_rfc3339(b.deadline_at_ms),
        "labels": b.labels,
        "created_at": ms_to_rfc3339(b.created_at_ms),
        "finished_at": ms_to_rfc3339(b.finished_at_ms),
        "reason": b.reason,
    })
}

/// The non-zero counts, e.g. `completed=18 failed=1 running=1`.
pub fn counts_words(c: &pb::BatchCounts) -> String {
    let all = [
        ("completed", c.completed),
        ("failed", c.failed),
        ("timeout", c.timeout),
        ("cancelled", c.cancelled),
        ("lost", c.lost),
        ("running", c.running),
        ("pending", c.pending),
    ];
    let words: Vec<String> = all.iter().filter(|(_, n)| *n > 0).map(|(k, n)| format!("{k}={n}")).collect();
    words.join(" ")
}

pub fn print_batch(b: &pb::Batch) {
    let c = b.counts.unwrap_or_default();
    println!(
        "{}  {}  {}/{} finished  {}  concurrency={}",
        b.id,
        batch_state_name(b.state),
        finished(&c),
        b.total,
        counts_words(&c),
        b.max_concurrency
    );
    if !b.reason.is_empty() {
        println!("  reason: {}", b.reason);
    }
}

pub fn print_batch_table(batches: &[pb::Batch]) {
    let w = batches.iter().map(|b| b.id.len()).max().unwrap_or(0).max(2);
    println!(
        "{:<w$}  {:<9}  {:>6}  {:>6}  {:>6}  {:>7}  {:<24}  LABELS",
        "ID", "STATE", "TOTAL", "DONE", "OK", "RUNNING", "CREATED"
    );
    for b in batches {
        let c = b.counts.unwrap_or_default();
        let created = ms_to_rfc3339(b.created_at_ms);
        let mut labels: Vec<String> = b.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        println!(
            "{:<w$}  {:<9}  {:>6}  {:>6}  {:>6}  {:>7}  {:<24}  {}",
            b.id,
            batch_state_name(b.state),
            b.total,
            finished(&c),
            c.completed,
            c.running,
            created.as_str().unwrap_or("-"),
            labels.join(",")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_described_briefly() {
        let argv = pb::JobSpec { argv: vec!["python3".into(), "x.py".into()], ..Default::default() };
        assert_eq!(describe_command(Some(&argv)), "python3 x.py");
        let shell = pb::JobSpec { shell: "echo hi".into(), ..Default::default() };
        assert_eq!(describe_command(Some(&shell)), "sh -c \"echo hi\"");
        let code = pb::JobSpec { language: "python".into(), code: "print(1)".into(), ..Default::default() };
        assert_eq!(describe_command(Some(&code)), "python (8 bytes of code)");
        assert_eq!(describe_command(None), "");
    }

    #[test]
    fn clipping_keeps_the_first_line_within_the_width() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("0123456789abc", 5), "0123…");
        assert_eq!(clip("one\ntwo", 10), "one…");
        assert_eq!(clip("one\n", 10), "one");
        assert_eq!(
            first_line(b"\n  \nTraceback (most recent call last):\n  File"),
            "Traceback (most recent call last):"
        );
        assert_eq!(first_line(b""), "");
    }

    #[test]
    fn an_item_record_has_the_documented_fields() {
        let job = pb::Job {
            id: "j1".into(),
            index: 4,
            state: pb::JobState::Failed as i32,
            result: Some(pb::JobResult { exit_code: 3, duration_ms: 12, ..Default::default() }),
            ..Default::default()
        };
        let v = item_json(&job, b"out", b"\xffbad");
        assert_eq!(v["index"], 4);
        assert_eq!(v["job_id"], "j1");
        assert_eq!(v["state"], "FAILED");
        assert_eq!(v["exit_code"], 3);
        assert_eq!(v["stdout"], "out");
        assert_eq!(v["stderr"], "\u{fffd}bad");
        assert_eq!(v["duration_ms"], 12);
        let pending = item_json(&pb::Job { state: pb::JobState::Cancelled as i32, ..Default::default() }, b"", b"");
        assert!(pending["exit_code"].is_null() && pending["duration_ms"].is_null(), "{pending}");
    }

    #[test]
    fn states_and_counts_read_well() {
        assert_eq!(job_state_name(pb::JobState::Timeout as i32), "TIMEOUT");
        assert_eq!(batch_state_name(pb::BatchState::Cancelled as i32), "CANCELLED");
        assert_eq!(job_state_name(99), "UNKNOWN(99)");
        let c = pb::BatchCounts { completed: 18, failed: 1, running: 1, ..Default::default() };
        assert_eq!(counts_words(&c), "completed=18 failed=1 running=1");
        assert_eq!(finished(&c), 19);
    }
}
