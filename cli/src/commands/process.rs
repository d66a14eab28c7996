//! `corral process start|list|signal|kill|logs`: background processes of a sandbox.

use std::process::ExitCode;

use clap::Subcommand;
use corral_client::v1 as pb;
use corral_client::v1::exec_event::Event;
use futures::StreamExt;
use serde_json::json;

use super::{connect, key_value};
use crate::output::{self, Format};

#[derive(Debug, Subcommand)]
pub enum ProcessCmd {
    /// Start a background process (no timeout) and print its pid.
    Start {
        /// Sandbox id.
        id: String,
        /// Working directory inside the sandbox.
        #[arg(long)]
        cwd: Option<String>,
        /// Extra environment, KEY=VALUE (repeatable).
        #[arg(long = "env", short = 'e', value_parser = key_value, value_name = "KEY=VALUE")]
        env: Vec<(String, String)>,
        /// Run the words through /bin/sh -c instead of executing them directly.
        #[arg(long)]
        shell: bool,
        /// The command and its arguments (after `--`).
        #[arg(required = true, last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// List a sandbox's background processes.
    List { id: String },
    /// Send a signal (a number, or a name like TERM) to a process's process group.
    Signal { id: String, pid: u32, signal: String },
    /// SIGKILL a process and everything it started.
    Kill { id: String, pid: u32 },
    /// Print a process's buffered output, then follow it until it exits; exits with its code.
    Logs { id: String, pid: u32 },
}

/// A signal number from `15`, `TERM` or `SIGTERM`.
fn parse_signal(s: &str) -> anyhow::Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let names = [
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("KILL", 9),
        ("USR1", 10),
        ("USR2", 12),
        ("TERM", 15),
        ("CONT", 18),
        ("STOP", 19),
    ];
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    names.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).ok_or_else(|| {
        anyhow::anyhow!("signal {s:?}: give a number or one of HUP, INT, QUIT, KILL, USR1, USR2, TERM, CONT, STOP")
    })
}

pub async fn run(endpoint: &str, out: Format, cmd: ProcessCmd) -> anyhow::Result<ExitCode> {
    let client = connect(endpoint).await?;
    match cmd {
        ProcessCmd::Start { id, cwd, env, shell, command } => {
            let (argv, shell) = if shell { (Vec::new(), command.join(" ")) } else { (command, String::new()) };
            let req = pb::StartProcessRequest {
                sandbox_id: id,
                argv,
                shell,
                env: env.into_iter().collect(),
                cwd: cwd.unwrap_or_default(),
            };
            let pid = client.start_process(req).await?;
            match out {
                Format::Json => println!("{}", json!({ "pid": pid })),
                Format::Text => println!("{pid}"),
            }
        }
        ProcessCmd::List { id } => print_list(out, &client.list_processes(&id).await?),
        ProcessCmd::Signal { id, pid, signal } => client.send_signal(&id, pid, parse_signal(&signal)?).await?,
        ProcessCmd::Kill { id, pid } => client.kill_process(&id, pid).await?,
        ProcessCmd::Logs { id, pid } => return logs(&client, &id, pid).await,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_list(out: Format, list: &[pb::ProcessInfo]) {
    let exited = |p: &pb::ProcessInfo| p.status == pb::ProcessStatus::Exited as i32;
    match out {
        Format::Json => {
            let items: Vec<_> = list
                .iter()
                .map(|p| {
                    json!({
                        "pid": p.pid, "command": p.command,
                        "status": if exited(p) { "exited" } else { "running" },
                        "exit_code": p.exit.as_ref().map(|x| x.exit_code),
                        "signal": p.exit.as_ref().map(|x| x.signal),
                    })
                })
                .collect();
            println!("{}", json!({ "processes": items }));
        }
        Format::Text => {
            println!("{:>5}  {:<8}  {:>4}  COMMAND", "PID", "STATUS", "EXIT");
            for p in list {
                let code = p.exit.as_ref().map(|x| x.exit_code.to_string()).unwrap_or_default();
                let status = if exited(p) { "exited" } else { "running" };
                println!("{:>5}  {:<8}  {:>4}  {}", p.pid, status, code, p.command);
            }
        }
    }
}

async fn logs(client: &corral_client::Client, id: &str, pid: u32) -> anyhow::Result<ExitCode> {
    let mut events = Box::pin(client.follow_output(id, pid).await?);
    while let Some(ev) = events.next().await {
        match ev? {
            Event::Stdout(d) => output::echo(false, &d)?,
            Event::Stderr(d) => output::echo(true, &d)?,
            Event::DroppedBytes(n) => eprintln!("corral: {n} bytes of earlier output were dropped"),
            Event::Exit(x) => return Ok(super::exec::exit_code(&x)),
        }
    }
    anyhow::bail!("the output stream ended without an exit status")
}

#[cfg(test)]
mod tests {
    use super::parse_signal;

    #[test]
    fn signals_parse_by_number_and_name() {
        assert_eq!(parse_signal("15").unwrap(), 15);
        assert_eq!(parse_signal("term").unwrap(), 15);
        assert_eq!(parse_signal("SIGKILL").unwrap(), 9);
        assert!(parse_signal("NOPE").is_err());
    }
}
