//! `corral exec` and `corral run`: stream a command's output and exit with its code. With
//! `--language`, the words are a snippet for `Exec.RunCode` instead (see [`super::code`]).

use std::io::Read;
use std::process::ExitCode;

use clap::Args;
use corral_client::Client;
use corral_client::v1 as pb;
use corral_client::v1::exec_event::Event;
use futures::StreamExt;

use super::sandbox::CreateOpts;
use super::{code, connect, key_value};
use crate::output::{self, Format};

#[derive(Debug, Clone, Args)]
pub struct CommandOpts {
    /// Seconds before the command's whole process tree is killed [default: server's, 300].
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// Working directory inside the sandbox.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Send this process's standard input to the command (read fully first, ≤ 256 KiB).
    #[arg(long)]
    pub stdin: bool,
    /// Run the words through /bin/sh -c instead of executing them directly.
    #[arg(long, conflicts_with = "language")]
    pub shell: bool,
    /// The words (joined by spaces) are a snippet in this language, run with Exec.RunCode
    /// (`corral languages` lists them; `-` reads the snippet from standard input).
    #[arg(long, value_name = "LANGUAGE")]
    pub language: Option<String>,
    /// The command and its arguments (after `--`).
    #[arg(required = true, last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Sandbox id.
    pub id: String,
    /// Extra environment for this command, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_parser = key_value, value_name = "KEY=VALUE")]
    pub env: Vec<(String, String)>,
    #[command(flatten)]
    pub cmd: CommandOpts,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateOpts,
    #[command(flatten)]
    pub cmd: CommandOpts,
}

/// This process's standard input, when `--stdin` asks for it.
pub fn read_stdin(cmd: &CommandOpts) -> anyhow::Result<Vec<u8>> {
    let mut stdin = Vec::new();
    if cmd.stdin {
        std::io::stdin().read_to_end(&mut stdin)?;
    }
    Ok(stdin)
}

/// The exit code of this process for a command that ended so: the command's, 128+signal when
/// it was killed, 124 on timeout.
pub fn exit_code(x: &pb::ExecExit) -> ExitCode {
    let code = if x.timed_out {
        124
    } else if x.signal > 0 {
        128 + x.signal
    } else {
        x.exit_code
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn request(id: &str, cmd: &CommandOpts, env: &[(String, String)]) -> anyhow::Result<pb::ExecRequest> {
    let stdin = read_stdin(cmd)?;
    let (argv, shell) =
        if cmd.shell { (Vec::new(), cmd.command.join(" ")) } else { (cmd.command.clone(), String::new()) };
    Ok(pb::ExecRequest {
        sandbox_id: id.to_owned(),
        argv,
        shell,
        env: env.iter().cloned().collect(),
        cwd: cmd.cwd.clone().unwrap_or_default(),
        timeout_seconds: cmd.timeout.unwrap_or(0.0),
        stdin,
    })
}

/// Streams the command's output to our stdout/stderr (or collects it for JSON) and returns the
/// process exit code to use: the command's, 128+signal when killed, 124 on timeout.
async fn stream(client: &Client, req: pb::ExecRequest, out: Format) -> anyhow::Result<ExitCode> {
    let mut events = Box::pin(client.run_stream(req).await?);
    let (mut collected_out, mut collected_err) = (Vec::new(), Vec::new());
    while let Some(ev) = events.next().await {
        match ev? {
            Event::Stdout(d) if out == Format::Json => collected_out.extend(d),
            Event::Stderr(d) if out == Format::Json => collected_err.extend(d),
            Event::Stdout(d) => output::echo(false, &d)?,
            Event::Stderr(d) => output::echo(true, &d)?,
            // Only FollowOutput reports dropped bytes.
            Event::DroppedBytes(_) => {}
            Event::Exit(x) => {
                if out == Format::Json {
                    let v = serde_json::json!({
                        "stdout": String::from_utf8_lossy(&collected_out),
                        "stderr": String::from_utf8_lossy(&collected_err),
                        "exit_code": x.exit_code, "signal": x.signal, "timed_out": x.timed_out,
                        "truncated": x.truncated, "duration_ms": x.duration_ms,
                    });
                    println!("{v}");
                } else if x.timed_out {
                    eprintln!("corral: command timed out after {} ms", x.duration_ms);
                } else if x.truncated {
                    eprintln!("corral: output was truncated");
                }
                return Ok(exit_code(&x));
            }
        }
    }
    anyhow::bail!("the output stream ended without an exit status")
}

pub async fn exec(endpoint: &str, out: Format, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let client = connect(endpoint).await?;
    if let Some(language) = &args.cmd.language {
        return code::run(&client, code::request(&args.id, language, &args.cmd, &args.env)?, out).await;
    }
    stream(&client, request(&args.id, &args.cmd, &args.env)?, out).await
}

pub async fn run(endpoint: &str, out: Format, args: RunArgs) -> anyhow::Result<ExitCode> {
    let client = connect(endpoint).await?;
    let sandbox = client.create(args.create.request()).await?;
    // The sandbox's environment (--env) applies to the command.
    let result = match &args.cmd.language {
        Some(language) => match code::request(&sandbox.id, language, &args.cmd, &[]) {
            Ok(req) => code::run(&client, req, out).await,
            Err(e) => Err(e),
        },
        None => match request(&sandbox.id, &args.cmd, &[]) {
            Ok(req) => stream(&client, req, out).await,
            Err(e) => Err(e),
        },
    };
    let destroyed = client.destroy(&sandbox.id).await;
    let code = result?;
    destroyed?;
    Ok(code)
}
