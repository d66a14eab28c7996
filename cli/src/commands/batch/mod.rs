//! `corral batch run|get|watch|cancel|list`: fan-out batches of jobs.
//!
//! The library's `corral_cli::batch_items` checks one JSON Lines item and `batch_source` streams
//! the file (checked whole before anything is sent, then read again part by part while
//! uploading); `watch` follows results across reconnections, `progress` counts them and draws the
//! bar, `summary` prints the end, `run` ties them together.

mod progress;
mod run;
mod summary;
mod watch;

use std::process::ExitCode;

use clap::Subcommand;
use corral_cli::batch_source as source;
use corral_client::Client;
use corral_client::v1 as pb;
use serde_json::json;

use super::{collect_pages, connect, key_value};
use crate::commands::job::full_output;
use crate::output::jobs::{self as render, first_line, job_state_name};
use crate::output::{self, OutputArg};

#[derive(Debug, Subcommand)]
pub enum BatchCmd {
    /// Submit items.jsonl as one batch and follow it to the end; exits 0 only if every item
    /// COMPLETED.
    #[command(after_long_help = RUN_HELP)]
    Run(run::RunArgs),
    /// Show a batch: state, counts by state, concurrency.
    Get { id: String },
    /// Print a batch's results as items finish (from the first, or from --from); exits 0 only if
    /// every item COMPLETED.
    #[command(after_long_help = WATCH_EXAMPLES)]
    Watch {
        id: String,
        /// Skip the first N results (in finishing order), e.g. those seen before an interruption.
        #[arg(long, value_name = "N", default_value_t = 0)]
        from: u64,
    },
    /// Cancel every unfinished item of a batch; print the batch.
    Cancel { id: String },
    /// List batches.
    List {
        /// Only batches with this label, KEY=VALUE (repeatable).
        #[arg(long = "label", short = 'l', value_parser = key_value, value_name = "KEY=VALUE")]
        labels: Vec<(String, String)>,
        /// Show at most this many batches (0: all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

const RUN_HELP: &str = r#"Each line of the items file is one JSON object with exactly one of
  "argv": ["python3", "eval.py", "3"]      a command and its arguments
  "shell": "make -C /workspace test"       a command line for /bin/sh -c
  "language": "python", "code": "print(1)" a snippet (`corral languages` lists the languages)
and optionally "runtime" ("bwrap" or "docker"), "image", "env" (object), "timeout_seconds",
"cpus", "memory_mb", "internet_access" (bool), "stdin" (string), "labels" (object).
Blank lines are skipped. Every line is checked before anything is submitted: a bad line is
reported with its line number, field and problem (e.g. a NUL byte and where it is). The file is
never loaded whole: it is read once to check it and again to upload it in parts of 1,000 items
(a bar shows the upload), so a batch can hold up to the server's max_batch_items (default
1,000,000) items.

On a terminal a progress bar on stderr shows done/failed/running items, the rate and an ETA;
at the end come counts by state, wall time, rate and the failed items (index, line, state,
exit code, first line of stderr). With --output jsonl each finished item is printed to stdout
as it finishes, one JSON object per line: index, job_id, state, exit_code, stdout, stderr,
duration_ms (the summary then goes to stderr). A dropped connection is resumed where it left.

Examples:
  corral batch run items.jsonl --concurrency 50
  corral batch run items.jsonl --retries 2 --deadline 3600 --label suite=nightly
  corral batch run items.jsonl --output jsonl > results.jsonl
  seq 100 | jq -c '{argv: ["python3", "-c", "print(\(.) ** 2)"]}' | corral batch run -"#;

const WATCH_EXAMPLES: &str = "Examples:
  corral batch watch bat-0123…                  # one line per finished item
  corral batch watch bat-0123… --from 40 -o jsonl";

pub async fn run(endpoint: &str, out: OutputArg, cmd: BatchCmd) -> anyhow::Result<ExitCode> {
    // Connecting comes after checking the items: a bad file needs no server to be reported.
    let client = || connect(endpoint);
    let print = |b: &pb::Batch| match out {
        OutputArg::Text => render::print_batch(b),
        OutputArg::Json | OutputArg::Jsonl => println!("{}", render::batch_json(b)),
    };
    match cmd {
        BatchCmd::Run(args) => {
            let (items, req) = run::prepare(args)?;
            return run::run(&client().await?, out, items, req).await;
        }
        BatchCmd::Get { id } => print(&client().await?.get_batch(&id).await?),
        BatchCmd::Cancel { id } => print(&client().await?.cancel_batch(&id).await?),
        BatchCmd::Watch { id, from } => return follow(&client().await?, out, &id, from).await,
        BatchCmd::List { labels, limit } => list(&client().await?, out, labels, limit).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `batch watch`: one line (or JSON object) per finished item.
async fn follow(client: &Client, out: OutputArg, id: &str, from: u64) -> anyhow::Result<ExitCode> {
    let mut watcher = watch::Watcher::new(client.clone(), id, from);
    while let Some(ev) = watcher.next().await? {
        let job = ev.job.unwrap_or_default();
        match out {
            OutputArg::Text => {
                let (exit, ms) = match &job.result {
                    Some(r) => (r.exit_code.to_string(), format!("{}ms", r.duration_ms)),
                    None => ("-".into(), "-".into()),
                };
                let err = job.result.as_ref().map(|r| first_line(&r.stderr)).unwrap_or_default();
                let why = if err.is_empty() { job.reason.clone() } else { err };
                let state = job_state_name(job.state);
                let line = format!(
                    "{:>5}  {state:<9}  exit={exit:<4}  {ms:>8}  {}  {}",
                    ev.index,
                    job.id,
                    render::clip(&why, 80)
                );
                output::line(line.trim_end())?;
            }
            OutputArg::Json | OutputArg::Jsonl => {
                let (stdout, stderr) = full_output(client, &job).await?;
                output::line(render::item_json(&job, &stdout, &stderr))?;
            }
        }
    }
    let batch = client.get_batch(id).await?;
    let completed = batch.counts.unwrap_or_default().completed;
    Ok(if completed == batch.total { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn list(client: &Client, out: OutputArg, labels: Vec<(String, String)>, limit: usize) -> anyhow::Result<()> {
    let labels: std::collections::HashMap<_, _> = labels.into_iter().collect();
    let (batches, more) = collect_pages(limit, |page_size, page_token| {
        let req = pb::ListBatchesRequest { labels: labels.clone(), page_size, page_token };
        async move {
            let page = client.list_batches(req).await?;
            Ok((page.batches, page.next_page_token))
        }
    })
    .await?;
    match out {
        OutputArg::Text => {
            render::print_batch_table(&batches);
            if more {
                eprintln!("corral: more batches than --limit {limit}; raise it (0: all)");
            }
        }
        OutputArg::Json | OutputArg::Jsonl => {
            let items: Vec<_> = batches.iter().map(render::batch_json).collect();
            println!("{}", json!({ "batches": items, "more": more }));
        }
    }
    Ok(())
}
