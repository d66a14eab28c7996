//! `corral batch run`: check items.jsonl, upload it as one batch in parts (streaming the file,
//! with a progress bar), follow the results (live progress bar, or JSON Lines), then summarise.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use corral_client::Client;
use corral_client::v1 as pb;

use super::progress::{Progress, Tally};
use super::source::{self, Items};
use super::summary::Summary;
use super::watch::Watcher;
use crate::commands::job::full_output;
use crate::commands::key_value;
use crate::output::jobs::{batch_state_name, finished, item_json};
use crate::output::{self, OutputArg};

/// How often the bar asks the server how many items are running.
const POLL: Duration = Duration::from_secs(1);

/// Exit code when Ctrl-C stops the watching (the batch itself goes on).
const INTERRUPTED: u8 = 130;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The items: one JSON object per line (`-` reads standard input).
    #[arg(value_name = "ITEMS.JSONL")]
    pub file: PathBuf,
    /// At most this many items run at once (1-10000).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Run each failed item (non-zero exit, timeout) again up to N times (0-10).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub retries: u32,
    /// Cancel the items still unfinished this many seconds after submission.
    #[arg(long, value_name = "SECONDS")]
    pub deadline: Option<f64>,
    /// Label of the batch, KEY=VALUE (repeatable).
    #[arg(long = "label", short = 'l', value_parser = key_value, value_name = "KEY=VALUE")]
    pub labels: Vec<(String, String)>,
    /// A retried run with the same key follows the same batch instead of submitting a new one.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

/// Checks every item (reading the file once, line by line); the items and the batch's options.
pub fn prepare(args: RunArgs) -> anyhow::Result<(Items, pb::SubmitBatchRequest)> {
    let items = source::scan(&args.file)?;
    let req = pb::SubmitBatchRequest {
        max_concurrency: args.concurrency,
        retries_per_item: args.retries,
        deadline_seconds: args.deadline.unwrap_or(0.0),
        labels: args.labels.into_iter().collect(),
        idempotency_key: args.idempotency_key.unwrap_or_default(),
        ..Default::default()
    };
    Ok((items, req))
}

/// Submits the batch, follows it to the end, prints the summary; exits 0 only if every item
/// COMPLETED.
pub async fn run(
    client: &Client,
    out: OutputArg,
    items: Items,
    req: pb::SubmitBatchRequest,
) -> anyhow::Result<ExitCode> {
    let total = items.total();
    let concurrency = req.max_concurrency;
    let show = out != OutputArg::Jsonl && std::io::stderr().is_terminal();
    let started = Instant::now();
    let batch_id = upload(client, &items, req, show).await?;
    let progress = Progress::new(total, show);
    progress.println(&format!("batch {batch_id}: {total} items, at most {concurrency} at once"));

    let mut tally = Tally::new(total);
    let mut watcher = Watcher::new(client.clone(), &batch_id, 0);
    let mut poll = tokio::time::interval(POLL);
    // One listener for the whole run, so a Ctrl-C pressed while an event is handled is not lost.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            ev = watcher.next() => {
                let Some(ev) = ev? else { break };
                let job = ev.job.unwrap_or_default();
                tally.record(&job);
                if out == OutputArg::Jsonl {
                    let (stdout, stderr) = full_output(client, &job).await?;
                    output::line(item_json(&job, &stdout, &stderr))?;
                }
                progress.update(&tally, started.elapsed());
            }
            _ = poll.tick(), if progress.shown() => {
                // Only the bar shows running items; a failed poll just skips an update.
                if let Ok(b) = client.get_batch(&batch_id).await {
                    tally.observe(&b.counts.unwrap_or_default());
                }
                progress.update(&tally, started.elapsed());
            }
            _ = &mut ctrl_c => {
                progress.clear();
                eprintln!(
                    "corral: stopped watching; batch {batch_id} goes on (`corral batch watch {batch_id} --from {}` \
                     resumes, `corral batch cancel {batch_id}` stops it)",
                    tally.finished()
                );
                return Ok(ExitCode::from(INTERRUPTED));
            }
        }
    }
    let wall = started.elapsed();
    progress.clear();
    finish(client, out, &batch_id, tally, wall, &items.lines).await
}

/// Uploads the items in parts, reading the file again as it goes (a bar shows the parts sent).
async fn upload(client: &Client, items: &Items, req: pb::SubmitBatchRequest, show: bool) -> anyhow::Result<String> {
    let total = items.total();
    let bar = Progress::upload(total, show && total as usize > corral_client::PART_ITEMS);
    let uploaded = client.submit_batch_parts(req, total, items.specs()?, |received, _| bar.uploaded(received)).await;
    bar.clear();
    Ok(uploaded?.batch_id)
}

/// Prints the summary (stdout, or stderr under JSON Lines) and picks the exit code.
async fn finish(
    client: &Client,
    out: OutputArg,
    batch_id: &str,
    mut tally: Tally,
    wall: Duration,
    lines: &[usize],
) -> anyhow::Result<ExitCode> {
    let batch = client.get_batch(batch_id).await?;
    // The watch saw every result unless the batch ended early (cancelled, deadline): then the
    // server's counts cover the items never reported.
    let counts = if tally.finished() == tally.total { tally.counts } else { batch.counts.unwrap_or_default() };
    tally.failures.sort_by_key(|f| f.index);
    let summary = Summary {
        batch_id,
        state: batch_state_name(batch.state),
        total: tally.total,
        counts,
        wall,
        failures: &tally.failures,
        lines,
    };
    match out {
        OutputArg::Text => print!("{}", summary.text()),
        OutputArg::Json => println!("{}", summary.json()),
        OutputArg::Jsonl => eprint!("{}", summary.text()),
    }
    if !batch.reason.is_empty() && finished(&counts) < tally.total {
        eprintln!("corral: batch {batch_id} ended early: {}", batch.reason);
    }
    let ok = counts.completed == tally.total;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
