//! Batches larger than one request, sent in parts (`Batches.Submit` with `total_items`, then
//! `Batches.Append`): completion, parts sent twice, interrupted and abandoned uploads, and the
//! exact errors for over-limit requests and bad bytes. The items run on the agent's `noop`
//! runtime (`CORRAL_AGENT__NOOP_RUNTIME=true`), so thousands of them cost little.

use std::time::{Duration, Instant};

use anyhow::ensure;
use corral_client::Client;
use corral_client::v1 as pb;
use prost::Message;
use tonic::Code;

use crate::expect_err;

/// Agent settings for these scenarios.
pub const NOOP_AGENT: [(&str, &str); 2] =
    [("CORRAL_AGENT__NOOP_RUNTIME", "true"), ("CORRAL_AGENT__MAX_SANDBOXES", "10000")];

/// What the coordinator says to a request holding too much.
const IN_PARTS: &str = "send the batch in parts: Batches.Submit with total_items and the first part, then \
                        Batches.Append for the rest (`corral batch run` and the SDKs do this)";

pub fn noop(tag: &str) -> pb::JobSpec {
    pb::JobSpec { runtime: pb::Runtime::Noop as i32, argv: vec!["noop".into(), tag.into()], ..Default::default() }
}

fn part(n: usize) -> Vec<pb::JobSpec> {
    vec![noop("x"); n]
}

async fn append(c: &Client, id: &str, first: u32, n: usize) -> corral_client::Result<pb::AppendBatchResponse> {
    let req = pb::AppendBatchRequest { batch_id: id.to_owned(), first_index: first, items: part(n) };
    Ok(c.batches.clone().append(req).await?.into_inner())
}

/// Waits until the batch is no longer RUNNING; returns it.
pub async fn wait_batch(c: &Client, id: &str, within: Duration) -> anyhow::Result<pb::Batch> {
    let deadline = Instant::now() + within;
    loop {
        let b = c.get_batch(id).await?;
        if b.state != pb::BatchState::Running as i32 {
            return Ok(b);
        }
        ensure!(Instant::now() < deadline, "batch still running after {within:?}: {b:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every item of the batch, in index order.
async fn items(c: &Client, id: &str) -> anyhow::Result<Vec<pb::Job>> {
    let (mut jobs, mut token) = (Vec::new(), String::new());
    loop {
        let req = pb::ListJobsRequest { batch_id: id.into(), page_size: 1000, page_token: token, ..Default::default() };
        let page = c.list_jobs(req).await?;
        jobs.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return Ok(jobs);
        }
        token = page.next_page_token;
    }
}

/// A batch of 2,500 items through `Client::submit_batch`: three parts, one batch, every item
/// run exactly once, ids in index order with seven digits.
pub async fn batch_in_parts(c: &Client) -> anyhow::Result<()> {
    let specs: Vec<pb::JobSpec> = (0..2500).map(|i| noop(&i.to_string())).collect();
    let mut seen = Vec::new();
    let options = pb::SubmitBatchRequest { max_concurrency: 500, ..Default::default() };
    let source = specs.into_iter().map(Ok::<_, std::io::Error>);
    let up = c.submit_batch_parts(options, 2500, source, |received, _| seen.push(received)).await?;
    ensure!(seen == [1000, 2000, 2500], "progress after each part: {seen:?}");
    let b = wait_batch(c, &up.batch_id, Duration::from_secs(120)).await?;
    let counts = b.counts.unwrap_or_default();
    ensure!(b.state == pb::BatchState::Completed as i32 && counts.completed == 2500, "{b:?}");
    ensure!((b.total, b.received) == (2500, 2500), "{b:?}");
    let jobs = items(c, &up.batch_id).await?;
    ensure!(jobs.len() == 2500, "{} items listed", jobs.len());
    for (i, j) in jobs.iter().enumerate() {
        ensure!(j.index == i as u32 && j.attempts == 1, "item {i}: {j:?}");
        ensure!(j.spec.as_ref().is_some_and(|s| s.argv[1] == i.to_string()), "item {i} holds another's spec: {j:?}");
    }
    ensure!(jobs[1234].id.ends_with("-0001234"), "{}", jobs[1234].id);
    Ok(())
}

/// Parts sent twice or overlapping are harmless; a gap or a part past the total is refused; the
/// batch runs only once the last part landed.
pub async fn repeated_parts(c: &Client) -> anyhow::Result<()> {
    let req =
        pb::SubmitBatchRequest { items: part(1000), total_items: 3000, max_concurrency: 500, ..Default::default() };
    let sub = c.batches.clone().submit(req).await?.into_inner();
    ensure!((sub.received, sub.accepted) == (1000, false), "{sub:?}");
    let id = sub.batch_id.as_str();
    let r = append(c, id, 1000, 1000).await?;
    ensure!((r.received, r.accepted) == (2000, false), "{r:?}");
    let again = append(c, id, 1000, 1000).await?;
    ensure!(again == r, "the same part again changes nothing: {again:?}");
    let overlap = append(c, id, 500, 1000).await?;
    ensure!(overlap == r, "an overlapping part changes nothing: {overlap:?}");
    let gap = format!(
        "first_index 2,500 would leave a gap: batch {id} has received 2,000 of 3,000 items; append from index 2,000"
    );
    expect_err(append(c, id, 2500, 10).await, Code::FailedPrecondition, &gap)?;
    let past = "items: 1,001 items from first_index 2,000 go past the batch's total of 3,000 (the last index is 2,999)";
    expect_err(append(c, id, 2000, 1001).await, Code::InvalidArgument, past)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = c.get_batch(id).await?;
    let counts = b.counts.unwrap_or_default();
    ensure!(b.state == pb::BatchState::Running as i32 && (b.total, b.received) == (3000, 2000), "{b:?}");
    ensure!(
        (counts.pending, counts.running, counts.completed) == (3000, 0, 0),
        "nothing runs before the last part: {b:?}"
    );
    let last = append(c, id, 2000, 1000).await?;
    ensure!((last.received, last.accepted) == (3000, true), "{last:?}");
    let late = append(c, id, 2000, 1000).await?;
    ensure!(late == last, "the last part again after acceptance is harmless: {late:?}");
    let b = wait_batch(c, id, Duration::from_secs(120)).await?;
    ensure!(b.counts.unwrap_or_default().completed == 3000, "{b:?}");
    let jobs = items(c, id).await?;
    ensure!(jobs.len() == 3000 && jobs.iter().all(|j| j.attempts == 1), "an item is missing or ran twice");
    Ok(())
}

/// A client that dies mid-upload: a Submit retried with the same idempotency key says how far
/// the upload got and the rest is appended; an upload nobody resumes is abandoned after the
/// coordinator's `batch_upload_timeout_seconds` (2 here): cancelled with what arrived, never run.
pub async fn interrupted_upload(c: &Client) -> anyhow::Result<()> {
    let req = pb::SubmitBatchRequest {
        items: part(1000),
        total_items: 2500,
        max_concurrency: 500,
        idempotency_key: "upload-resume-1".into(),
        ..Default::default()
    };
    let first = c.batches.clone().submit(req.clone()).await?.into_inner();
    append(c, &first.batch_id, 1000, 1000).await?;
    // The client dies here; its successor submits the same request again.
    let again = c.batches.clone().submit(req).await?.into_inner();
    ensure!(again.batch_id == first.batch_id && !again.created && again.received == 2000, "{again:?}");
    let last = append(c, &again.batch_id, again.received, 500).await?;
    ensure!(last.accepted, "{last:?}");
    let b = wait_batch(c, &again.batch_id, Duration::from_secs(120)).await?;
    ensure!(b.counts.unwrap_or_default().completed == 2500, "{b:?}");

    let req = pb::SubmitBatchRequest { items: part(1000), total_items: 5000, ..Default::default() };
    let lost = c.batches.clone().submit(req).await?.into_inner();
    let b = wait_batch(c, &lost.batch_id, Duration::from_secs(30)).await?;
    let reason = "upload abandoned: no part for 2 s after 1,000 of 5,000 items";
    ensure!(b.state == pb::BatchState::Cancelled as i32 && b.reason == reason, "{b:?}");
    ensure!(b.total == 1000, "the batch shrinks to what arrived: {b:?}");
    // Its items are cancelled right after the batch (by the same sweep, or the next).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = c.get_batch(&lost.batch_id).await?;
        let counts = b.counts.unwrap_or_default();
        if (counts.cancelled, counts.pending) == (1000, 0) {
            break;
        }
        ensure!(Instant::now() < deadline, "the items of an abandoned upload stay live: {b:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let jobs = items(c, &lost.batch_id).await?;
    ensure!(jobs.len() == 1000 && jobs.iter().all(|j| j.attempts == 0), "an item of an abandoned upload ran");
    let closed = format!("batch {} was cancelled ({reason}) and takes no more items", lost.batch_id);
    expect_err(append(c, &lost.batch_id, 1000, 10).await, Code::FailedPrecondition, &closed)?;
    Ok(())
}

/// Over-limit requests name the limit and the way out; bad bytes name the field and the byte;
/// the client cuts a batch of large items into parts instead of one oversized message.
pub async fn limits_and_bad_bytes(c: &Client) -> anyhow::Result<()> {
    let many = pb::SubmitBatchRequest { items: part(10_001), ..Default::default() };
    let msg = format!("10,001 items exceed max_items_per_request 10,000; {IN_PARTS}");
    expect_err(c.batches.clone().submit(many).await.map_err(Into::into), Code::ResourceExhausted, &msg)?;
    let huge = pb::SubmitBatchRequest { items: part(10), total_items: 1_200_000, ..Default::default() };
    let msg = "1,200,000 items exceed max_batch_items 1,000,000; split the work into several batches";
    expect_err(c.batches.clone().submit(huge).await.map_err(Into::into), Code::ResourceExhausted, msg)?;
    let wide = pb::JobSpec { shell: "x".repeat(250 * 1024), ..noop("") };
    let wide = pb::JobSpec { argv: Vec::new(), ..wide };
    let heavy = pb::SubmitBatchRequest { items: vec![wide.clone(); 40], ..Default::default() };
    let size = heavy.encoded_len();
    let msg = format!("the request is {} bytes and exceeds max_request_bytes 8,388,608; {IN_PARTS}", thousands(size));
    expect_err(c.batches.clone().submit(heavy).await.map_err(Into::into), Code::ResourceExhausted, &msg)?;
    // Through the client the same items go in parts of at most 4 MiB and run, 20 at a time: the
    // result commits of that many jobs this large are split to fit etcd's request limit.
    let req = pb::SubmitBatchRequest { items: vec![wide; 40], max_concurrency: 20, ..Default::default() };
    let id = c.submit_batch(req).await?;
    let b = wait_batch(c, &id, Duration::from_secs(60)).await?;
    ensure!(b.counts.unwrap_or_default().completed == 40, "{b:?}");

    let mut five = part(5);
    five[3].argv = vec!["hello\0world".into()];
    let nul = pb::SubmitBatchRequest { items: five, ..Default::default() };
    expect_err(c.submit_batch(nul).await, Code::InvalidArgument, "items[3].argv[0]: contains a NUL byte at byte 5")?;
    let mut more = part(1500);
    more[1200].env.insert("KEY".into(), "ab\0".into());
    let late = c.submit_batch(pb::SubmitBatchRequest { items: more, ..Default::default() }).await;
    let msg = "items[200].env[KEY]: contains a NUL byte at byte 2 (item 1,200 of the batch)";
    expect_err(late, Code::InvalidArgument, msg)?;
    Ok(())
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}
