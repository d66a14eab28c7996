//! The `corral job` and `corral batch` commands against `corral dev`: output, JSON, exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, ensure};
use corral_e2e::*;
use corral_testkit::corral::corral_binary;
use serde_json::Value;

/// `corral --endpoint EP ARGS…` off the async runtime, with `input` on its standard input.
async fn corral(ep: &str, args: &[&str], input: &str) -> anyhow::Result<Output> {
    let mut full = vec!["--endpoint".to_owned(), ep.to_owned()];
    full.extend(args.iter().map(|a| a.to_string()));
    let input = input.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(corral_binary()?)
            .args(&full)
            .env_remove("CORRAL_ENDPOINT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().context("stdin")?.write_all(input.as_bytes())?;
        Ok(child.wait_with_output()?)
    })
    .await?
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(out: &Output) -> anyhow::Result<Value> {
    serde_json::from_slice(&out.stdout).with_context(|| format!("not JSON: {out:?}"))
}

fn tag() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    format!("t{nanos:x}")
}

/// `job submit` (argv, --shell, --code-file, --wait), `wait`, `get`, `logs`, `cancel`, `list`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_commands() -> anyhow::Result<()> {
    let server = DevServer::start()?;
    ready_client(&server.endpoint).await?;
    let ep = server.endpoint.as_str();
    let label = format!("suite={}", tag());

    let run = corral(ep, &["job", "submit", "--wait", "--", "sh", "-c", "echo out; echo err >&2; exit 3"], "").await?;
    ensure!(run.status.code() == Some(3), "submit --wait exits with the job's code: {run:?}");
    ensure!(run.stdout == b"out\n" && text(&run.stderr).starts_with("err\n"), "{run:?}");

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("answer.py");
    std::fs::write(&file, "print(6 * 7)\n")?;
    let code = corral(ep, &["job", "submit", "--wait", "--code-file", file.to_str().unwrap_or_default()], "").await?;
    ensure!(code.status.success() && code.stdout == b"42\n", "language from the extension: {code:?}");
    let odd = corral(ep, &["job", "submit", "--code-file", "/tmp/notes.txt"], "").await?;
    ensure!(!odd.status.success() && text(&odd.stderr).contains("--language"), "{odd:?}");

    let sub = corral(ep, &["job", "submit", "-l", &label, "--shell", "echo listed; echo warn >&2"], "").await?;
    ensure!(sub.status.success(), "{sub:?}");
    let done_id = text(&sub.stdout).trim().to_owned();
    ensure!(!done_id.is_empty() && !done_id.contains(char::is_whitespace), "submit prints the id: {sub:?}");
    let wait = corral(ep, &["job", "wait", &done_id, "--timeout", "60"], "").await?;
    ensure!(wait.status.success() && text(&wait.stdout).contains("COMPLETED"), "{wait:?}");
    let got = json(&corral(ep, &["-o", "json", "job", "get", &done_id], "").await?)?;
    ensure!(got["id"] == done_id.as_str() && got["state"] == "COMPLETED", "{got}");
    ensure!(got["result"]["stdout"] == "listed\n" && got["result"]["exit_code"] == 0, "{got}");
    let logs = corral(ep, &["job", "logs", &done_id], "").await?;
    ensure!(logs.status.success() && logs.stdout == b"listed\n" && logs.stderr == b"warn\n", "{logs:?}");

    let sleeper = corral(ep, &["job", "submit", "-l", &label, "--", "sleep", "30"], "").await?;
    let sleep_id = text(&sleeper.stdout).trim().to_owned();
    let short = corral(ep, &["job", "wait", &sleep_id, "--timeout", "0.5"], "").await?;
    ensure!(short.status.code() == Some(75), "a wait that times out exits 75: {short:?}");
    let cancel = corral(ep, &["job", "cancel", &sleep_id], "").await?;
    ensure!(cancel.status.success() && text(&cancel.stdout).contains("CANCELLED"), "{cancel:?}");
    let waited = corral(ep, &["job", "wait", &sleep_id], "").await?;
    ensure!(!waited.status.success() && waited.status.code() != Some(75), "a cancelled job fails: {waited:?}");

    let table = corral(ep, &["job", "list", "-l", &label], "").await?;
    let t = text(&table.stdout);
    ensure!(table.status.success() && t.starts_with("ID") && t.contains(&done_id) && t.contains(&sleep_id), "{t}");
    let only = json(&corral(ep, &["-o", "json", "job", "list", "-l", &label, "--state", "completed"], "").await?)?;
    let ids: Vec<&str> = only["jobs"].as_array().into_iter().flatten().filter_map(|j| j["id"].as_str()).collect();
    ensure!(ids == [done_id.as_str()], "state filter: {only}");
    let limited = json(&corral(ep, &["-o", "json", "job", "list", "-l", &label, "--limit", "1"], "").await?)?;
    ensure!(limited["jobs"].as_array().map(Vec::len) == Some(1) && limited["more"] == true, "{limited}");
    Ok(())
}

/// 20 items, one failing: `--output jsonl` prints each result, the summary goes to stderr and
/// the exit code is 1; then `batch list|get|watch` and `job list --batch` on that batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_run_jsonl_and_follow_up_commands() -> anyhow::Result<()> {
    let server = DevServer::start()?;
    ready_client(&server.endpoint).await?;
    let ep = server.endpoint.as_str();
    let label = format!("suite={}", tag());
    let items: Vec<String> = (0..20)
        .map(|i| match i {
            7 => r#"{"shell": "echo bad >&2; exit 3"}"#.to_owned(),
            3 => r#"{"argv": ["sh", "-c", "echo item-3"]}"#.to_owned(),
            5 => r#"{"language": "python", "code": "print('item-5')"}"#.to_owned(),
            i => format!(r#"{{"shell": "echo item-$N", "env": {{"N": "{i}"}}}}"#),
        })
        .collect();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("items.jsonl");
    std::fs::write(&file, items.join("\n") + "\n")?;
    let path = file.to_str().unwrap_or_default();

    let run = corral(ep, &["batch", "run", path, "--concurrency", "5", "-l", &label, "--output", "jsonl"], "").await?;
    ensure!(run.status.code() == Some(1), "one failed item makes the exit code 1: {run:?}");
    let lines: Vec<Value> = text(&run.stdout).lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    ensure!(lines.len() == 20, "one line per item: {}", text(&run.stdout));
    let mut indexes: Vec<u64> = lines.iter().filter_map(|l| l["index"].as_u64()).collect();
    indexes.sort();
    ensure!(indexes == (0..20).collect::<Vec<u64>>(), "every index once: {indexes:?}");
    for l in &lines {
        let i = l["index"].as_u64().unwrap_or(99);
        ensure!(l["job_id"].as_str().is_some_and(|s| !s.is_empty()) && l["duration_ms"].is_u64(), "{l}");
        if i == 7 {
            ensure!(l["state"] == "FAILED" && l["exit_code"] == 3 && l["stderr"] == "bad\n", "{l}");
        } else {
            ensure!(l["state"] == "COMPLETED" && l["exit_code"] == 0 && l["stdout"] == format!("item-{i}\n"), "{l}");
        }
    }
    let summary = text(&run.stderr);
    ensure!(summary.contains("COMPLETED      19") && summary.contains("FAILED          1"), "{summary}");

    let listed = json(&corral(ep, &["-o", "json", "batch", "list", "-l", &label], "").await?)?;
    let batch_id = listed["batches"][0]["id"].as_str().context("the batch is listed")?.to_owned();
    ensure!(listed["batches"].as_array().map(Vec::len) == Some(1), "{listed}");
    let got = json(&corral(ep, &["-o", "json", "batch", "get", &batch_id], "").await?)?;
    ensure!(got["state"] == "COMPLETED" && got["total"] == 20, "{got}");
    ensure!(got["counts"]["completed"] == 19 && got["counts"]["failed"] == 1, "{got}");
    let table = corral(ep, &["batch", "list", "-l", &label], "").await?;
    ensure!(text(&table.stdout).contains(&batch_id), "{table:?}");

    let watch = corral(ep, &["-o", "jsonl", "batch", "watch", &batch_id, "--from", "15"], "").await?;
    ensure!(watch.status.code() == Some(1), "not every item completed: {watch:?}");
    ensure!(text(&watch.stdout).lines().count() == 5, "results 15..20: {}", text(&watch.stdout));
    let failed =
        json(&corral(ep, &["-o", "json", "job", "list", "--batch", &batch_id, "--state", "failed"], "").await?)?;
    ensure!(failed["jobs"].as_array().map(Vec::len) == Some(1) && failed["jobs"][0]["index"] == 7, "{failed}");
    Ok(())
}

/// The text summary and exit codes, items from standard input, bad files, and `batch cancel`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_run_summary_bad_items_and_cancel() -> anyhow::Result<()> {
    let server = DevServer::start()?;
    let client = ready_client(&server.endpoint).await?;
    let ep = server.endpoint.as_str();

    let mixed = "{\"shell\": \"true\"}\n{\"shell\": \"echo nope >&2; exit 2\"}\n\n{\"argv\": [\"true\"]}\n";
    let run = corral(ep, &["batch", "run", "-", "--concurrency", "2"], mixed).await?;
    let out = text(&run.stdout);
    ensure!(run.status.code() == Some(1), "{run:?}");
    ensure!(
        out.contains("3/3 items") && out.contains("COMPLETED       2") && out.contains("FAILED          1"),
        "{out}"
    );
    ensure!(out.contains("failed items (1):") && out.contains("      1      2  FAILED        2  nope"), "{out}");
    let ok =
        corral(ep, &["-o", "json", "batch", "run", "-"], "{\"shell\": \"true\"}\n{\"argv\": [\"true\"]}\n").await?;
    let v = json(&ok)?;
    ensure!(ok.status.success() && v["counts"]["completed"] == 2 && v["state"] == "COMPLETED", "{ok:?}");

    let before = client.list_batches(Default::default()).await?.batches.len();
    let bad = "{\"shell\": \"true\"}\n{\"shell\": \"true\"}\n{\"argv\": \"true\"}\n";
    let refused = corral(ep, &["batch", "run", "-"], bad).await?;
    let err = text(&refused.stderr);
    ensure!(!refused.status.success() && err.contains("line 3") && err.contains("\"argv\""), "{refused:?}");
    let after = client.list_batches(Default::default()).await?.batches.len();
    ensure!(before == after, "a bad file submits nothing ({before} batches before, {after} after)");

    let sleepers = corral_client::v1::SubmitBatchRequest {
        items: vec![corral_client::v1::JobSpec { argv: vec!["sleep".into(), "30".into()], ..Default::default() }; 3],
        max_concurrency: 1,
        ..Default::default()
    };
    let id = client.submit_batch(sleepers).await?;
    let cancel = corral(ep, &["batch", "cancel", &id], "").await?;
    ensure!(cancel.status.success() && text(&cancel.stdout).contains("CANCELLED"), "{cancel:?}");
    let watch = corral(ep, &["batch", "watch", &id], "").await?;
    ensure!(watch.status.code() == Some(1) && text(&watch.stdout).contains("CANCELLED"), "{watch:?}");
    Ok(())
}

/// A file over one request is uploaded in parts while being streamed; bad bytes are named by
/// line, field and byte; a batch over the server's max_batch_items is refused before the rest is
/// sent, with the limit and the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_run_uploads_big_files_in_parts_and_names_bad_bytes() -> anyhow::Result<()> {
    let server = DevServer::start_with_env(&[("CORRAL_COORDINATOR__MAX_BATCH_ITEMS", "1500")])?;
    let client = ready_client(&server.endpoint).await?;
    let ep = server.endpoint.as_str();

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("items.jsonl");
    std::fs::write(&file, "{\"argv\": [\"true\"]}\n".repeat(1001))?;
    let path = file.to_str().unwrap_or_default();
    let run = corral(ep, &["-o", "json", "batch", "run", path, "--concurrency", "50"], "").await?;
    let v = json(&run)?;
    ensure!(run.status.success() && v["counts"]["completed"] == 1001, "{run:?}");
    let id = v["batch_id"].as_str().unwrap_or_default().to_owned();
    let b = client.get_batch(&id).await?;
    ensure!((b.total, b.received) == (1001, 1001), "{b:?}");

    let nul = "{\"argv\": [\"true\"]}\n{\"argv\": [\"hello\\u0000\"]}\n";
    let refused = corral(ep, &["batch", "run", "-"], nul).await?;
    let err = text(&refused.stderr);
    ensure!(
        !refused.status.success() && err.contains("line 2: field \"argv\": element 0 contains a NUL byte at byte 5"),
        "{refused:?}"
    );

    let before = client.list_batches(Default::default()).await?.batches.len();
    std::fs::write(&file, "{\"argv\": [\"true\"]}\n".repeat(2000))?;
    let over = corral(ep, &["batch", "run", path], "").await?;
    let err = text(&over.stderr);
    let msg = "RESOURCE_EXHAUSTED: 2,000 items exceed max_batch_items 1,500; split the work into several batches";
    ensure!(!over.status.success() && err.contains(msg), "{over:?}");
    let after = client.list_batches(Default::default()).await?.batches.len();
    ensure!(before == after, "an over-limit batch creates nothing ({before} batches before, {after} after)");
    Ok(())
}
