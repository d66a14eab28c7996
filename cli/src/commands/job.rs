//! `corral job submit|get|wait|cancel|list|logs`: one-shot jobs (a fresh sandbox, one command).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use corral_client::Client;
use corral_client::v1 as pb;
use serde_json::json;

use super::sandbox::RuntimeArg;
use super::{collect_pages, connect, key_value};
use crate::output::jobs::{self as render, job_state};
use crate::output::{self, Format};

/// Exit code of `job wait` when its --timeout passes before the job ends (sysexits' EX_TEMPFAIL:
/// try again later).
const STILL_RUNNING: u8 = 75;

#[derive(Debug, Subcommand)]
pub enum JobCmd {
    /// Submit a job and print its id (with --wait: its output, and exit with its exit code).
    #[command(after_long_help = SUBMIT_EXAMPLES)]
    Submit(SubmitArgs),
    /// Show a job: state, exit code, attempts, node, reason.
    Get { id: String },
    /// Wait until a job ends, print it, and exit with its exit code.
    #[command(after_long_help = WAIT_HELP)]
    Wait {
        id: String,
        /// Give up after this many seconds (exit 75 if the job is still going) [default: no limit].
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<f64>,
    },
    /// Cancel a pending or running job (a running command is killed); print it.
    Cancel { id: String },
    /// List jobs (following pages up to --limit) as a table.
    #[command(after_long_help = LIST_EXAMPLES)]
    List {
        /// Only jobs in these states (repeatable).
        #[arg(long = "state", value_enum, ignore_case = true, value_name = "STATE")]
        states: Vec<JobStateArg>,
        /// Only the items of this batch (in index order).
        #[arg(long, value_name = "BATCH_ID")]
        batch: Option<String>,
        /// Only jobs with this label, KEY=VALUE (repeatable).
        #[arg(long = "label", short = 'l', value_parser = key_value, value_name = "KEY=VALUE")]
        labels: Vec<(String, String)>,
        /// Show at most this many jobs (0: all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Print a job's whole output: its stdout to stdout and its stderr to stderr.
    Logs { id: String },
}

const SUBMIT_EXAMPLES: &str = "Examples:
  corral job submit -- python3 -c 'print(6*7)'            # prints the job id
  corral job submit --wait --shell 'make test' --timeout 600
  corral job submit --wait --code-file solution.py        # language from the extension
  corral job submit --language c --code 'int main(void) { return 3; }' --retries 2
  corral job submit --runtime docker --image corral/python --env SEED=1 -- python3 run.py
  corral job submit --idempotency-key eval-17 --label team=eval -- ./grade.sh

With --wait the job's output goes to stdout/stderr and corral exits with the job's exit code
(124 when it timed out, 128+N when signal N killed it, 1 when it was cancelled or lost).";

const WAIT_HELP: &str = "Exit code: the job's (124 when it timed out, 128+N when signal N killed it, 1 when it was
cancelled or lost before running), or 75 when --timeout passed first.

Example:
  id=$(corral job submit -- ./long-task.sh); corral job wait \"$id\" --timeout 3600";

const LIST_EXAMPLES: &str = "Examples:
  corral job list --state running --state pending
  corral job list --batch bat-0123… --state failed --limit 0
  corral -o json job list --label team=eval";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JobStateArg {
    Pending,
    Running,
    Completed,
    Failed,
    Timeout,
    Cancelled,
    Lost,
}

impl JobStateArg {
    fn wire(self) -> i32 {
        (match self {
            Self::Pending => pb::JobState::Pending,
            Self::Running => pb::JobState::Running,
            Self::Completed => pb::JobState::Completed,
            Self::Failed => pb::JobState::Failed,
            Self::Timeout => pb::JobState::Timeout,
            Self::Cancelled => pb::JobState::Cancelled,
            Self::Lost => pb::JobState::Lost,
        }) as i32
    }
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["command", "shell", "code", "code_file"])))]
pub struct SubmitArgs {
    /// Language of --code or --code-file (`corral languages` lists them).
    #[arg(long, value_name = "LANGUAGE")]
    pub language: Option<String>,
    /// Source code to run (needs --language).
    #[arg(long, value_name = "CODE")]
    pub code: Option<String>,
    /// A file of source code to run; the language comes from its extension unless --language
    /// is given (`-` reads standard input, which then needs --language).
    #[arg(long, value_name = "FILE")]
    pub code_file: Option<PathBuf>,
    /// A command line run with /bin/sh -c.
    #[arg(long, value_name = "COMMAND_LINE")]
    pub shell: Option<String>,
    /// Isolation [default: the server's, bwrap].
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeArg>,
    /// Image for --runtime docker (a local image of the nodes).
    #[arg(long)]
    pub image: Option<String>,
    /// Environment of the command, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_parser = key_value, value_name = "KEY=VALUE")]
    pub env: Vec<(String, String)>,
    /// Seconds before the command's whole process tree is killed (state TIMEOUT) [default: server's].
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// CPU cores reserved (fractions allowed) [default: server's].
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory limit in MiB [default: server's].
    #[arg(long, value_name = "MIB")]
    pub memory_mb: Option<i64>,
    /// Allow network access (off by default).
    #[arg(long)]
    pub internet: bool,
    /// Send this process's standard input to the command (read fully first).
    #[arg(long)]
    pub stdin: bool,
    /// Run a failed command (non-zero exit, timeout) again up to N times (0-10).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub retries: u32,
    /// A retried submit with the same key returns the same job instead of a new one.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Label, KEY=VALUE (repeatable).
    #[arg(long = "label", short = 'l', value_parser = key_value, value_name = "KEY=VALUE")]
    pub labels: Vec<(String, String)>,
    /// Wait for the job, print its output and exit with its exit code.
    #[arg(long)]
    pub wait: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl SubmitArgs {
    /// The job to submit: reads --code-file (or standard input) as needed.
    fn spec(&self) -> anyhow::Result<pb::JobSpec> {
        let mut spec = pb::JobSpec {
            runtime: match self.runtime {
                None => pb::Runtime::Unspecified as i32,
                Some(RuntimeArg::Bwrap) => pb::Runtime::Bwrap as i32,
                Some(RuntimeArg::Docker) => pb::Runtime::Docker as i32,
            },
            image: self.image.clone().unwrap_or_default(),
            argv: self.command.clone(),
            shell: self.shell.clone().unwrap_or_default(),
            env: self.env.iter().cloned().collect(),
            timeout_seconds: self.timeout.unwrap_or(0.0),
            cpus: self.cpus.unwrap_or(0.0),
            memory_mb: self.memory_mb.unwrap_or(0),
            internet_access: self.internet,
            labels: self.labels.iter().cloned().collect(),
            ..Default::default()
        };
        if let Some(code) = &self.code {
            spec.language = self.language.clone().ok_or_else(|| anyhow::anyhow!("--code needs --language"))?;
            spec.code = code.clone();
        } else if let Some(file) = &self.code_file {
            (spec.language, spec.code) = read_code_file(file, self.language.as_deref(), self.stdin)?;
        } else if self.language.is_some() {
            anyhow::bail!("--language goes with --code or --code-file");
        }
        if self.stdin {
            std::io::stdin().read_to_end(&mut spec.stdin)?;
        }
        Ok(spec)
    }
}

/// The language and code of `--code-file`: the language from `--language`, or else from the
/// file's extension.
fn read_code_file(file: &std::path::Path, language: Option<&str>, stdin: bool) -> anyhow::Result<(String, String)> {
    let from_stdin = file.as_os_str() == "-";
    let language = match language {
        Some(l) => l.to_owned(),
        None if from_stdin => anyhow::bail!("--code-file - (standard input) needs --language"),
        None => {
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let lang = corral_core::languages::detect(&name).ok_or_else(|| {
                anyhow::anyhow!("cannot tell the language of {} from its extension; give --language", file.display())
            })?;
            lang.name.to_owned()
        }
    };
    let code = if from_stdin {
        anyhow::ensure!(!stdin, "the code comes from standard input (`--code-file -`), so --stdin cannot be used");
        let mut code = String::new();
        std::io::stdin().read_to_string(&mut code)?;
        code
    } else {
        std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?
    };
    Ok((language, code))
}

/// The exit code of this process for a job that ended so: the command's, 124 on timeout,
/// 128+signal when killed, 1 when it ended without a result (cancelled, lost, never started).
pub fn exit_code(job: &pb::Job) -> u8 {
    if job_state(job) == pb::JobState::Timeout {
        return 124;
    }
    match &job.result {
        Some(r) if r.signal > 0 => (128 + r.signal).clamp(0, 255) as u8,
        Some(r) => r.exit_code.clamp(0, 255) as u8,
        None if job_state(job) == pb::JobState::Completed => 0,
        None => 1,
    }
}

pub async fn run(endpoint: &str, out: Format, cmd: JobCmd) -> anyhow::Result<ExitCode> {
    // Connecting comes after reading files and checking flags, which need no server.
    let client = || connect(endpoint);
    let print = |job: &pb::Job| match out {
        Format::Json => println!("{}", render::job_json(job)),
        Format::Text => render::print_job(job),
    };
    match cmd {
        JobCmd::Submit(args) => {
            let req = pb::SubmitJobRequest {
                job: Some(args.spec()?),
                idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
                retries: args.retries,
            };
            return submit(&client().await?, out, req, args.wait).await;
        }
        JobCmd::Get { id } => print(&client().await?.get_job(&id).await?),
        JobCmd::Cancel { id } => print(&client().await?.cancel_job(&id).await?),
        JobCmd::Wait { id, timeout } => {
            let within =
                timeout.map(Duration::try_from_secs_f64).transpose().map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
            let job = client().await?.wait_job_done(&id, within).await?;
            print(&job);
            if !corral_client::job_done(&job) {
                eprintln!(
                    "corral: job {id} is still {} (corral job wait {id} to keep waiting)",
                    render::job_state_name(job.state)
                );
                return Ok(ExitCode::from(STILL_RUNNING));
            }
            return Ok(ExitCode::from(exit_code(&job)));
        }
        JobCmd::List { states, batch, labels, limit } => {
            let req = pb::ListJobsRequest {
                states: states.into_iter().map(JobStateArg::wire).collect(),
                batch_id: batch.unwrap_or_default(),
                labels: labels.into_iter().collect(),
                page_size: 0,
                page_token: String::new(),
            };
            list(&client().await?, out, req, limit).await?;
        }
        JobCmd::Logs { id } => {
            let logs = client().await?.job_logs(&id).await?;
            match out {
                Format::Json => println!(
                    "{}",
                    json!({ "stdout": String::from_utf8_lossy(&logs.stdout),
                            "stderr": String::from_utf8_lossy(&logs.stderr), "truncated": logs.truncated })
                ),
                Format::Text => {
                    output::echo(false, &logs.stdout)?;
                    output::echo(true, &logs.stderr)?;
                    if logs.truncated {
                        eprintln!("corral: the output was cut at the server's output cap");
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn submit(client: &Client, out: Format, req: pb::SubmitJobRequest, wait: bool) -> anyhow::Result<ExitCode> {
    let id = client.submit_job(req).await?;
    if !wait {
        match out {
            Format::Json => println!("{}", json!({ "job_id": id })),
            Format::Text => println!("{id}"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let job = client.wait_job_done(&id, None).await?;
    let (stdout, stderr) = full_output(client, &job).await?;
    match out {
        Format::Json => {
            let mut v = render::job_json(&job);
            if job.result.is_some() {
                v["result"]["stdout"] = json!(String::from_utf8_lossy(&stdout));
                v["result"]["stderr"] = json!(String::from_utf8_lossy(&stderr));
            }
            println!("{v}");
        }
        Format::Text => {
            output::echo(false, &stdout)?;
            output::echo(true, &stderr)?;
            // A command that ran and exited non-zero says so with the exit code alone.
            let ran = job_state(&job) == pb::JobState::Failed && job.result.is_some();
            if job_state(&job) != pb::JobState::Completed && !ran {
                let why = if job.reason.is_empty() { String::new() } else { format!(": {}", job.reason) };
                eprintln!("corral: job {id} ended {}{why}", render::job_state_name(job.state));
            }
        }
    }
    Ok(ExitCode::from(exit_code(&job)))
}

/// A finished job's stdout and stderr: the result's, or the whole output from Logs when the
/// result holds only the first bytes.
pub async fn full_output(client: &Client, job: &pb::Job) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    match &job.result {
        Some(r) if r.output_clipped => {
            let logs = client.job_logs(&job.id).await?;
            Ok((logs.stdout, logs.stderr))
        }
        Some(r) => Ok((r.stdout.clone(), r.stderr.clone())),
        None => Ok((Vec::new(), Vec::new())),
    }
}

/// Prints jobs page after page until `limit` (0: no limit) or the last page.
async fn list(client: &Client, out: Format, req: pb::ListJobsRequest, limit: usize) -> anyhow::Result<()> {
    let (jobs, more) = collect_pages(limit, |page_size, page_token| {
        let req = pb::ListJobsRequest { page_size, page_token, ..req.clone() };
        async move {
            let page = client.list_jobs(req).await?;
            Ok((page.jobs, page.next_page_token))
        }
    })
    .await?;
    match out {
        Format::Json => {
            let items: Vec<_> = jobs.iter().map(render::job_json).collect();
            println!("{}", json!({ "jobs": items, "more": more }));
        }
        Format::Text => {
            render::print_job_table(&jobs);
            if more {
                eprintln!("corral: more jobs than --limit {limit}; raise it (0: all)");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: pb::JobState, result: Option<pb::JobResult>) -> pb::Job {
        pb::Job { state: state as i32, result, ..Default::default() }
    }

    #[test]
    fn exit_codes_follow_the_command() {
        let ran = |code, signal| Some(pb::JobResult { exit_code: code, signal, ..Default::default() });
        assert_eq!(exit_code(&job(pb::JobState::Completed, ran(0, 0))), 0);
        assert_eq!(exit_code(&job(pb::JobState::Failed, ran(3, 0))), 3);
        assert_eq!(exit_code(&job(pb::JobState::Failed, ran(-1, 9))), 137);
        assert_eq!(exit_code(&job(pb::JobState::Timeout, ran(-1, 9))), 124);
        assert_eq!(exit_code(&job(pb::JobState::Cancelled, None)), 1);
        assert_eq!(exit_code(&job(pb::JobState::Lost, None)), 1);
        assert_eq!(exit_code(&job(pb::JobState::Failed, ran(300, 0))), 255);
    }

    #[test]
    fn a_code_file_names_its_language_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        let py = dir.path().join("solution.py");
        std::fs::write(&py, "print(1)\n").unwrap();
        assert_eq!(read_code_file(&py, None, false).unwrap(), ("python".to_owned(), "print(1)\n".to_owned()));
        assert_eq!(read_code_file(&py, Some("python3"), false).unwrap().0, "python3");
        let odd = dir.path().join("notes.txt");
        std::fs::write(&odd, "x").unwrap();
        let e = read_code_file(&odd, None, false).unwrap_err().to_string();
        assert!(e.contains("notes.txt") && e.contains("--language"), "{e}");
        let e = read_code_file(std::path::Path::new("-"), None, false).unwrap_err().to_string();
        assert!(e.contains("needs --language"), "{e}");
    }

    #[test]
    fn submit_needs_exactly_one_command() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(subcommand)]
            cmd: JobCmd,
        }
        let parse = |args: &[&str]| T::try_parse_from(std::iter::once("t").chain(args.iter().copied()));
        assert!(parse(&["submit"]).is_err(), "no command");
        assert!(parse(&["submit", "--shell", "ls", "--", "ls"]).is_err(), "two commands");
        assert!(parse(&["submit", "--code", "x", "--code-file", "f.py"]).is_err(), "code twice");
        let Ok(T { cmd: JobCmd::Submit(args) }) = parse(&["submit", "--shell", "echo hi", "--retries", "2"]) else {
            panic!("a shell job parses");
        };
        let spec = args.spec().unwrap();
        assert_eq!((spec.shell.as_str(), args.retries), ("echo hi", 2));
        assert!(parse(&["submit", "--retries", "11", "--", "ls"]).is_err(), "retries are 0..=10");
        let Ok(T { cmd: JobCmd::Submit(args) }) = parse(&["submit", "--code", "print(1)"]) else {
            panic!("parses; the language is checked when the spec is built");
        };
        assert!(args.spec().unwrap_err().to_string().contains("--code needs --language"));
    }
}
