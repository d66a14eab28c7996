//! Job and batch scenarios, run against `corral dev` and against a cluster.
//!
//! The [`Witness`] is the external observer the reliability promises are checked with: a TCP
//! server on the host's loopback that every witnessed job connects to (jobs run with
//! `internet_access`, so they share the host's network). Each job reports its item and the time it
//! started, and the time it ends just before it exits (bash's `$EPOCHREALTIME`, the host's
//! clock); a job killed before that ends when its connection closes. From these intervals, which
//! lie inside the real executions, the witness computes how many jobs ran at once and whether an
//! item ran twice at the same time, whatever Corral reports and however late the witness itself
//! gets to read its sockets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use corral_client::{Client, v1 as pb};
use futures::StreamExt;
use tokio::io::AsyncBufReadExt;
use tonic::Code;

use crate::expect_err;

/// One execution seen by the witness: the item, and when it started and ended (seconds since
/// the epoch; `end` is `None` while it runs).
#[derive(Debug, Clone)]
pub struct Execution {
    pub item: String,
    pub start: f64,
    pub end: Option<f64>,
}

#[derive(Default)]
struct Seen {
    /// Connections open now.
    open: usize,
    executions: Vec<Execution>,
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Parses `"{word} {epoch seconds}"`.
fn stamped(line: &str) -> Option<(&str, f64)> {
    let (word, ts) = line.trim().split_once(' ')?;
    Some((word, ts.parse().ok()?))
}

/// Counts concurrently running witnessed jobs from outside the sandboxes.
#[derive(Clone)]
pub struct Witness {
    pub port: u16,
    seen: Arc<Mutex<Seen>>,
    _accept: Arc<corral_core::task::OwnedTask>,
}

impl Witness {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let s = seen.clone();
        let accept = corral_core::task::OwnedTask::spawn("witness.accept", async move {
            while let Ok((sock, _)) = listener.accept().await {
                let s = s.clone();
                // Ends when the job's connection closes.
                corral_core::task::spawn_detached("witness.connection", async move {
                    s.lock().unwrap().open += 1;
                    let mut lines = tokio::io::BufReader::new(sock).lines();
                    let first = lines.next_line().await.ok().flatten().unwrap_or_default();
                    let (item, start) = stamped(&first).map_or((first.clone(), now_secs()), |(i, t)| (i.to_owned(), t));
                    let slot = {
                        let mut g = s.lock().unwrap();
                        g.executions.push(Execution { item, start, end: None });
                        g.executions.len() - 1
                    };
                    let mut end = None;
                    while let Ok(Some(line)) = lines.next_line().await {
                        if let Some(("end", t)) = stamped(&line) {
                            end = Some(t);
                        }
                    }
                    let mut g = s.lock().unwrap();
                    g.open -= 1;
                    g.executions[slot].end = Some(end.unwrap_or_else(now_secs));
                });
            }
            Ok::<(), std::io::Error>(())
        });
        Ok(Self { port, seen, _accept: Arc::new(accept) })
    }

    /// A job that reports `item` to the witness, then runs `then` (a bash command line) and
    /// exits with its status.
    pub fn job(&self, item: &str, then: &str) -> pb::JobSpec {
        let line = format!(
            "exec 3<>/dev/tcp/127.0.0.1/{} && echo \"{item} $EPOCHREALTIME\" >&3 && {{ {then}; }}; s=$?; \
             echo \"end $EPOCHREALTIME\" >&3; exit $s",
            self.port
        );
        pb::JobSpec {
            argv: vec!["bash".into(), "-c".into(), line],
            internet_access: true,
            timeout_seconds: 120.0,
            ..Default::default()
        }
    }

    /// The most executions that overlapped in time.
    pub fn max_concurrent(&self) -> usize {
        let mut events: Vec<(f64, i32)> = Vec::new();
        for e in self.executions() {
            events.push((e.start, 1));
            events.push((e.end.unwrap_or(f64::INFINITY), -1));
        }
        // At equal times an end comes before a start: touching is not overlapping.
        events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let (mut now, mut most) = (0i32, 0i32);
        for (_, d) in events {
            now += d;
            most = most.max(now);
        }
        most as usize
    }

    pub fn executions(&self) -> Vec<Execution> {
        self.seen.lock().unwrap().executions.clone()
    }

    /// Connections open now (a witnessed job that started and has not exited).
    pub fn open(&self) -> usize {
        self.seen.lock().unwrap().open
    }

    /// Items that ran twice at overlapping times (they must not).
    pub fn overlapping(&self) -> Vec<String> {
        let mut by_item: HashMap<String, Vec<Execution>> = HashMap::new();
        for e in self.executions() {
            by_item.entry(e.item.clone()).or_default().push(e);
        }
        let mut bad = Vec::new();
        for (item, mut runs) in by_item {
            runs.sort_by(|a, b| a.start.total_cmp(&b.start));
            for pair in runs.windows(2) {
                if pair[0].end.is_none_or(|end| end > pair[1].start) {
                    bad.push(item.clone());
                }
            }
        }
        bad
    }
}

pub fn shell_job(line: &str) -> pb::JobSpec {
    pb::JobSpec { shell: line.to_owned(), ..Default::default() }
}

pub fn state_of(j: &pb::Job) -> pb::JobState {
    pb::JobState::try_from(j.state).unwrap_or(pb::JobState::Unspecified)
}

/// Waits (server-side, in rounds) until the job ends.
pub async fn wait_done(c: &Client, id: &str, within: Duration) -> anyhow::Result<pb::Job> {
    let deadline = Instant::now() + within;
    loop {
        let job = c.wait_job(id, 5.0).await?;
        if is_terminal(&job) {
            return Ok(job);
        }
        anyhow::ensure!(Instant::now() < deadline, "job {id} still {:?} after {within:?}", state_of(&job));
    }
}

pub fn is_terminal(j: &pb::Job) -> bool {
    !matches!(state_of(j), pb::JobState::Pending | pb::JobState::Running | pb::JobState::Unspecified)
}

async fn submit(c: &Client, job: pb::JobSpec) -> anyhow::Result<String> {
    Ok(c.submit_job(pb::SubmitJobRequest { job: Some(job), ..Default::default() }).await?)
}

/// Submit → Wait → Get → Logs for commands and code; failures, retries and timeouts.
pub async fn job_basics(c: &Client) -> anyhow::Result<()> {
    let id = submit(c, shell_job("echo hi; echo err >&2")).await?;
    let job = wait_done(c, &id, Duration::from_secs(60)).await?;
    anyhow::ensure!(state_of(&job) == pb::JobState::Completed, "{job:?}");
    let result = job.result.clone().unwrap_or_default();
    anyhow::ensure!(result.stdout == b"hi\n" && result.stderr == b"err\n", "{result:?}");
    anyhow::ensure!(job.attempts == 1 && !job.node_id.is_empty() && job.finished_at_ms >= job.started_at_ms);
    let again = c.get_job(&id).await?;
    anyhow::ensure!(again.result == job.result && state_of(&again) == pb::JobState::Completed);

    let code = pb::JobSpec { language: "python".into(), code: "print(6 * 7)".into(), ..Default::default() };
    let job = wait_done(c, &submit(c, code).await?, Duration::from_secs(60)).await?;
    anyhow::ensure!(job.result.as_ref().is_some_and(|r| r.stdout == b"42\n"), "{job:?}");

    // A failing command is retried as asked, then FAILED; each run counts.
    let req = pb::SubmitJobRequest { job: Some(shell_job("exit 3")), retries: 1, ..Default::default() };
    let job = wait_done(c, &c.submit_job(req).await?, Duration::from_secs(60)).await?;
    anyhow::ensure!(state_of(&job) == pb::JobState::Failed, "{job:?}");
    anyhow::ensure!(job.attempts == 2 && job.failures == 2, "{job:?}");
    anyhow::ensure!(job.result.as_ref().is_some_and(|r| r.exit_code == 3));

    let slow = pb::JobSpec { timeout_seconds: 0.5, ..shell_job("sleep 30") };
    let job = wait_done(c, &submit(c, slow).await?, Duration::from_secs(60)).await?;
    anyhow::ensure!(state_of(&job) == pb::JobState::Timeout, "{job:?}");

    // Output past what the record holds is in the logs.
    let job =
        wait_done(c, &submit(c, shell_job("head -c 100000 /dev/zero | tr '\\0' x")).await?, Duration::from_secs(60))
            .await?;
    let result = job.result.clone().unwrap_or_default();
    anyhow::ensure!(result.output_clipped && result.stdout.len() < 100_000, "{}", result.stdout.len());
    let logs = c.job_logs(&job.id).await?;
    anyhow::ensure!(logs.stdout.len() == 100_000 && logs.stdout.iter().all(|b| *b == b'x'));
    Ok(())
}

/// Idempotency keys, cancel of a running job (its process dies), and bad input.
pub async fn job_control(c: &Client) -> anyhow::Result<()> {
    let req = |line: &str| pb::SubmitJobRequest {
        job: Some(shell_job(line)),
        idempotency_key: "retry-me-1".into(),
        ..Default::default()
    };
    let first = c.jobs.clone().submit(req("echo once")).await?.into_inner();
    let second = c.jobs.clone().submit(req("echo once")).await?.into_inner();
    anyhow::ensure!(first.created && !second.created && first.job_id == second.job_id, "{first:?} {second:?}");
    expect_err(c.submit_job(req("echo other")).await, Code::FailedPrecondition, "idempotency_key")?;

    let witness = Witness::start().await?;
    let id = submit(c, witness.job("cancel-me", "sleep 60")).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while witness.open() == 0 {
        anyhow::ensure!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let job = c.cancel_job(&id).await?;
    anyhow::ensure!(state_of(&job) == pb::JobState::Cancelled && job.reason.contains("cancelled"), "{job:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while witness.open() > 0 {
        anyhow::ensure!(Instant::now() < deadline, "the cancelled job's process still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Cancelling an ended job changes nothing.
    anyhow::ensure!(state_of(&c.cancel_job(&id).await?) == pb::JobState::Cancelled);

    let bad = |job: pb::JobSpec| pb::SubmitJobRequest { job: Some(job), ..Default::default() };
    expect_err(c.submit_job(bad(pb::JobSpec::default())).await, Code::InvalidArgument, "job.argv")?;
    let cobol = pb::JobSpec { language: "cobol".into(), code: "x".into(), ..Default::default() };
    expect_err(c.submit_job(bad(cobol)).await, Code::InvalidArgument, "available: python")?;
    // A job never waits for an image no node has.
    let ghost = pb::JobSpec { runtime: pb::Runtime::Docker as i32, image: "corral/none".into(), ..shell_job("true") };
    expect_err(c.submit_job(bad(ghost)).await, Code::InvalidArgument, "job.image: no node has the image corral/none")?;
    let noop = pb::JobSpec { runtime: pb::Runtime::Noop as i32, ..shell_job("true") };
    expect_err(c.submit_job(bad(noop)).await, Code::InvalidArgument, "job.runtime: no registered node runs noop")?;
    expect_err(c.get_job("job-0123456789abcdef0123456789abcdef").await, Code::NotFound, "not found")?;
    expect_err(c.get_job("nope").await, Code::InvalidArgument, "job_id")?;
    let items = vec![shell_job("true"), pb::JobSpec::default()];
    let batch = pb::SubmitBatchRequest { items, ..Default::default() };
    expect_err(c.submit_batch(batch).await, Code::InvalidArgument, "items[1].argv")?;
    // Over one request's item limit: refused unless sent in parts (as Client::submit_batch does).
    let huge = pb::SubmitBatchRequest { items: vec![shell_job("true"); 10_001], ..Default::default() };
    let sent = c.batches.clone().submit(huge).await.map_err(corral_client::ClientError::from);
    expect_err(
        sent,
        Code::ResourceExhausted,
        "10,001 items exceed max_items_per_request 10,000; send the batch in parts",
    )?;
    Ok(())
}

/// Runs a batch of witnessed items, checks the cap and that each item ran once, and checks
/// Watch (with a resume), Get and List.
pub async fn batch_run(c: &Client, items: usize, concurrency: u32, sleep: &str) -> anyhow::Result<Witness> {
    let witness = Witness::start().await?;
    let specs: Vec<pb::JobSpec> =
        (0..items).map(|i| witness.job(&format!("i{i}"), &format!("sleep {sleep}; echo {i}"))).collect();
    let req = pb::SubmitBatchRequest { items: specs, max_concurrency: concurrency, ..Default::default() };
    let batch = c.submit_batch(req).await?;
    let events = collect_watch(c, &batch, 0, items).await?;
    check_events(&events, items)?;
    anyhow::ensure!(witness.max_concurrent() <= concurrency as usize, "{} ran at once", witness.max_concurrent());
    if sleep != "0" && concurrency > 1 {
        anyhow::ensure!(witness.max_concurrent() >= 2, "the witness saw only {} at once", witness.max_concurrent());
    }
    let runs = witness.executions();
    anyhow::ensure!(runs.len() == items, "{} executions for {items} items", runs.len());
    let info = c.get_batch(&batch).await?;
    let counts = info.counts.unwrap_or_default();
    anyhow::ensure!(info.state == pb::BatchState::Completed as i32 && counts.completed as usize == items, "{info:?}");
    // A client that saw the first half resumes from there.
    let rest = collect_watch(c, &batch, (items / 2) as u64, items - items / 2).await?;
    anyhow::ensure!(rest.iter().map(|e| e.seq).eq((items / 2) as u64..items as u64));
    anyhow::ensure!(rest.iter().zip(&events[items / 2..]).all(|(a, b)| a.index == b.index), "resume order differs");
    let listed =
        c.list_jobs(pb::ListJobsRequest { batch_id: batch.clone(), page_size: 1000, ..Default::default() }).await?;
    anyhow::ensure!(listed.jobs.iter().map(|j| j.index as usize).eq(0..items), "list is not in index order");
    // Pages of 7, filtered to COMPLETED, cover the batch once, in order.
    let (mut seen, mut token) = (0, String::new());
    loop {
        let states = vec![pb::JobState::Completed as i32];
        let req = pb::ListJobsRequest {
            batch_id: batch.clone(),
            states,
            page_size: 7,
            page_token: token,
            ..Default::default()
        };
        let page = c.list_jobs(req).await?;
        anyhow::ensure!(
            page.jobs.iter().map(|j| j.index as usize).eq(seen..seen + page.jobs.len()),
            "page out of order"
        );
        anyhow::ensure!(
            page.jobs.len() <= 7 && page.jobs.iter().all(|j| j.result.as_ref().is_none_or(|r| r.stdout.is_empty()))
        );
        seen += page.jobs.len();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    anyhow::ensure!(seen == items, "pages covered {seen} of {items}");
    let states = vec![pb::JobState::Pending as i32];
    let none = c.list_jobs(pb::ListJobsRequest { batch_id: batch.clone(), states, ..Default::default() }).await?;
    anyhow::ensure!(none.jobs.is_empty(), "{} pending after completion", none.jobs.len());
    Ok(witness)
}

pub async fn collect_watch(c: &Client, batch: &str, from: u64, expect: usize) -> anyhow::Result<Vec<pb::BatchEvent>> {
    let mut stream = c.watch_batch(batch, from).await?;
    let mut events = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(240), stream.next()).await? {
        events.push(ev?);
    }
    anyhow::ensure!(events.len() == expect, "watch gave {} events, expected {expect}", events.len());
    Ok(events)
}

/// Every index once, seq numbered from 0, every item COMPLETED with its own output.
pub fn check_events(events: &[pb::BatchEvent], items: usize) -> anyhow::Result<()> {
    let mut indices: Vec<u32> = events.iter().map(|e| e.index).collect();
    indices.sort_unstable();
    anyhow::ensure!(indices.iter().map(|i| *i as usize).eq(0..items), "indices are not each item once");
    anyhow::ensure!(events.iter().map(|e| e.seq).eq(0..items as u64), "seq is not 0..n");
    for e in events {
        let job = e.job.clone().unwrap_or_default();
        let out = job.result.clone().unwrap_or_default().stdout;
        anyhow::ensure!(state_of(&job) == pb::JobState::Completed, "item {}: {job:?}", e.index);
        anyhow::ensure!(
            out == format!("{}\n", e.index).into_bytes(),
            "item {} printed {:?}",
            e.index,
            String::from_utf8_lossy(&out)
        );
    }
    Ok(())
}

/// 100 parallel submits against a tenant cap (set on the server): never more running at once.
pub async fn quota_race(c: &Client, cap: usize) -> anyhow::Result<()> {
    let witness = Witness::start().await?;
    let submits = (0..100).map(|i| {
        let (c, job) = (c.clone(), witness.job(&format!("q{i}"), "sleep 0.2"));
        async move { c.submit_job(pb::SubmitJobRequest { job: Some(job), ..Default::default() }).await }
    });
    let ids: Vec<String> = futures::future::join_all(submits).await.into_iter().collect::<Result<_, _>>()?;
    for id in &ids {
        let job = wait_done(c, id, Duration::from_secs(240)).await?;
        anyhow::ensure!(state_of(&job) == pb::JobState::Completed, "{job:?}");
    }
    anyhow::ensure!(witness.max_concurrent() <= cap, "{} ran at once with a cap of {cap}", witness.max_concurrent());
    // The witness does see concurrency (the check above is not vacuous).
    anyhow::ensure!(witness.max_concurrent() >= 2, "the witness saw {} at once", witness.max_concurrent());
    anyhow::ensure!(witness.executions().len() == 100);
    Ok(())
}

/// Cancelling a batch ends its pending and running items.
pub async fn batch_cancel(c: &Client) -> anyhow::Result<()> {
    let items = vec![shell_job("sleep 60"); 6];
    let batch = c.submit_batch(pb::SubmitBatchRequest { items, max_concurrency: 2, ..Default::default() }).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info = c.cancel_batch(&batch).await?;
    anyhow::ensure!(info.state == pb::BatchState::Cancelled as i32, "{info:?}");
    let events = collect_watch(c, &batch, 0, 6).await?;
    for e in &events {
        let state = state_of(e.job.as_ref().unwrap());
        anyhow::ensure!(state == pb::JobState::Cancelled, "item {} ended {state:?}", e.index);
    }
    Ok(())
}

/// A job's sandbox is as isolated as a long-lived one: no capabilities, no new privileges, no
/// host secrets, processes, environment or network, a read-only system, and its memory limit.
pub async fn job_isolation(c: &Client) -> anyhow::Result<()> {
    let witness = Witness::start().await?;
    let probe = format!(
        "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; \
         cat /etc/shadow 2>/dev/null && echo SHADOW-READABLE; \
         echo procs=$(ls -d /proc/[0-9]* | wc -l); \
         env | cut -d= -f1 | sort | tr '\\n' ' '; echo; \
         touch /usr/x 2>/dev/null && echo USR-WRITABLE; \
         (exec 3<>/dev/tcp/127.0.0.1/{}) 2>/dev/null && echo NET-REACHABLE; \
         echo whoami=$(id -u)",
        witness.port
    );
    let spec = pb::JobSpec {
        argv: vec!["bash".into(), "-c".into(), probe],
        env: [("ONLY_MINE".to_owned(), "1".to_owned())].into(),
        ..Default::default()
    };
    let job = wait_done(
        c,
        &c.submit_job(pb::SubmitJobRequest { job: Some(spec), ..Default::default() }).await?,
        Duration::from_secs(60),
    )
    .await?;
    let out = String::from_utf8_lossy(&job.result.clone().unwrap_or_default().stdout).into_owned();
    anyhow::ensure!(out.contains("CapEff:\t0000000000000000") && out.contains("NoNewPrivs:\t1"), "{out}");
    for bad in ["SHADOW-READABLE", "USR-WRITABLE", "NET-REACHABLE"] {
        anyhow::ensure!(!out.contains(bad), "{bad}: {out}");
    }
    let procs: usize =
        out.split("procs=").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(99);
    anyhow::ensure!(procs <= 4, "the job sees {procs} processes: {out}");
    let env_line = out.lines().find(|l| l.contains("ONLY_MINE")).unwrap_or_default();
    for name in env_line.split_whitespace() {
        anyhow::ensure!(
            ["HOME", "LANG", "ONLY_MINE", "PATH", "PWD", "SHLVL", "_", "OLDPWD"].contains(&name),
            "host variable {name} leaked: {env_line}"
        );
    }
    anyhow::ensure!(witness.executions().is_empty(), "the job reached the host's loopback");
    anyhow::ensure!(out.contains("whoami=1000"), "{out}");

    let hog = pb::JobSpec {
        memory_mb: 64,
        timeout_seconds: 30.0,
        ..shell_job("python3 -c 'x = bytearray(512 * 1024 * 1024)'")
    };
    let job = wait_done(
        c,
        &c.submit_job(pb::SubmitJobRequest { job: Some(hog), ..Default::default() }).await?,
        Duration::from_secs(60),
    )
    .await?;
    let result = job.result.clone().unwrap_or_default();
    anyhow::ensure!(state_of(&job) == pb::JobState::Failed && result.oom_killed, "{job:?}");
    Ok(())
}

/// A job on the Docker runtime (a container created, run and removed through the runtime's
/// general path), including code in the image's python.
pub async fn docker_job(c: &Client) -> anyhow::Result<()> {
    let spec = pb::JobSpec {
        runtime: pb::Runtime::Docker as i32,
        ..shell_job("echo in-docker; cat /etc/os-release | head -1")
    };
    let job = wait_done(
        c,
        &c.submit_job(pb::SubmitJobRequest { job: Some(spec), ..Default::default() }).await?,
        Duration::from_secs(120),
    )
    .await?;
    let out = String::from_utf8_lossy(&job.result.clone().unwrap_or_default().stdout).into_owned();
    anyhow::ensure!(state_of(&job) == pb::JobState::Completed && out.starts_with("in-docker\n"), "{job:?}");
    Ok(())
}

/// A SubmitBatch abandoned by its client part-way (the server drops the call when the client
/// goes away) is finished by a retry with the same idempotency key: same batch, every item
/// exactly once. Needs the noop runtime.
pub async fn interrupted_batch_submit(c: &Client) -> anyhow::Result<()> {
    let noop = pb::JobSpec { runtime: pb::Runtime::Noop as i32, ..shell_job("noop") };
    let req = pb::SubmitBatchRequest {
        items: vec![noop; 5000],
        max_concurrency: 5000,
        idempotency_key: "big-batch-1".into(),
        ..Default::default()
    };
    let mut first = c.batches.clone();
    let mut call = tonic::Request::new(req.clone());
    call.set_timeout(Duration::from_millis(3));
    let interrupted = first.submit(call).await.is_err();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = c.batches.clone().submit(req.clone()).await?.into_inner();
    let once_more = c.batches.clone().submit(req).await?.into_inner();
    // Usually the abandoned call wrote the batch record and some items, and the retry finishes
    // it (created = false); if it was dropped before writing anything, the retry creates it.
    eprintln!("first call abandoned: {interrupted}; the retry created the batch: {}", again.created);
    anyhow::ensure!(again.batch_id == once_more.batch_id && !once_more.created, "{again:?} {once_more:?}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let b = c.get_batch(&again.batch_id).await?;
        let counts = b.counts.unwrap_or_default();
        if b.state == pb::BatchState::Completed as i32 {
            anyhow::ensure!(
                b.total == 5000 && counts.completed == 5000,
                "{b:?} (first call interrupted: {interrupted})"
            );
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "batch stuck: {b:?} (first call interrupted: {interrupted})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed =
        c.list_jobs(pb::ListJobsRequest { batch_id: again.batch_id, page_size: 1000, ..Default::default() }).await?;
    anyhow::ensure!(listed.jobs.iter().all(|j| j.attempts == 1), "an item ran twice");
    Ok(())
}

/// Jobs near the size limits: items with 400 KiB of code each and a job with 256 KiB of output
/// on each stream still go through submit, claim, dispatch and commit (which split their
/// transactions and messages to stay under the store's and the bus's request limits).
pub async fn big_jobs(c: &Client) -> anyhow::Result<()> {
    let filler = format!("# {}\n", "x".repeat(400 * 1024));
    let items: Vec<pb::JobSpec> = (0..8)
        .map(|i| pb::JobSpec { language: "python".into(), code: format!("{filler}print({i})"), ..Default::default() })
        .collect();
    let batch = c.submit_batch(pb::SubmitBatchRequest { items, max_concurrency: 8, ..Default::default() }).await?;
    let events = collect_watch(c, &batch, 0, 8).await?;
    check_events(&events, 8)?;
    let loud = shell_job("head -c 300000 /dev/zero | tr '\\0' o; head -c 300000 /dev/zero | tr '\\0' e >&2");
    let job = wait_done(
        c,
        &c.submit_job(pb::SubmitJobRequest { job: Some(loud), ..Default::default() }).await?,
        Duration::from_secs(60),
    )
    .await?;
    let logs = c.job_logs(&job.id).await?;
    anyhow::ensure!(state_of(&job) == pb::JobState::Completed && logs.truncated, "{job:?}");
    anyhow::ensure!(
        logs.stdout.len() == 256 * 1024 && logs.stderr.len() == 256 * 1024,
        "{} / {}",
        logs.stdout.len(),
        logs.stderr.len()
    );
    let too_big = pb::JobSpec { language: "python".into(), code: "\u{1}".repeat(400 * 1024), ..Default::default() };
    expect_err(
        c.submit_job(pb::SubmitJobRequest { job: Some(too_big), ..Default::default() }).await,
        Code::InvalidArgument,
        "once stored",
    )?;
    Ok(())
}
