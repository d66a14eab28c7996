//! `corral languages` and the `--language` form of `corral exec` / `corral run` (Exec.RunCode).

use std::io::{Read, Write};
use std::process::ExitCode;

use corral_client::Client;
use corral_client::v1 as pb;
use serde_json::json;

use super::connect;
use super::exec::{CommandOpts, exit_code, read_stdin};
use crate::output::Format;

/// A RunCode request from the command line: the words joined by spaces are the code, or `-`
/// reads it from standard input (then `--stdin` cannot also be used).
pub fn request(
    id: &str,
    language: &str,
    cmd: &CommandOpts,
    env: &[(String, String)],
) -> anyhow::Result<pb::RunCodeRequest> {
    let code = if cmd.command == ["-"] {
        anyhow::ensure!(!cmd.stdin, "the snippet comes from standard input (`-`), so --stdin cannot be used");
        let mut code = String::new();
        std::io::stdin().read_to_string(&mut code)?;
        code
    } else {
        cmd.command.join(" ")
    };
    Ok(pb::RunCodeRequest {
        sandbox_id: id.to_owned(),
        language: language.to_owned(),
        code,
        timeout_seconds: cmd.timeout.unwrap_or(0.0),
        env: env.iter().cloned().collect(),
        cwd: cmd.cwd.clone().unwrap_or_default(),
        stdin: read_stdin(cmd)?,
    })
}

/// Runs a snippet, prints its output (or one JSON object) and returns the exit code to use.
pub async fn run(client: &Client, req: pb::RunCodeRequest, out: Format) -> anyhow::Result<ExitCode> {
    let r = client.run_code(req).await?;
    let exit = pb::ExecExit {
        exit_code: r.exit_code,
        timed_out: r.timed_out,
        truncated: r.truncated,
        duration_ms: r.duration_ms,
        signal: r.signal,
        oom_killed: r.oom_killed,
    };
    if out == Format::Json {
        let v = json!({
            "stdout": String::from_utf8_lossy(&r.stdout),
            "stderr": String::from_utf8_lossy(&r.stderr),
            "exit_code": r.exit_code, "signal": r.signal, "timed_out": r.timed_out,
            "truncated": r.truncated, "duration_ms": r.duration_ms,
        });
        println!("{v}");
    } else {
        std::io::stdout().write_all(&r.stdout)?;
        std::io::stderr().write_all(&r.stderr)?;
        if r.timed_out {
            eprintln!("corral: code timed out after {} ms", r.duration_ms);
        } else if r.truncated {
            eprintln!("corral: output was truncated");
        }
    }
    Ok(exit_code(&exit))
}

fn runtime_name(r: i32) -> &'static str {
    match pb::Runtime::try_from(r) {
        Ok(pb::Runtime::Bwrap) => "bwrap",
        Ok(pb::Runtime::Docker) => "docker",
        _ => "unknown",
    }
}

/// `corral languages`: what the cluster can run.
pub async fn languages(endpoint: &str, out: Format) -> anyhow::Result<ExitCode> {
    let langs = connect(endpoint).await?.list_languages().await?;
    match out {
        Format::Json => {
            let items: Vec<_> = langs
                .iter()
                .map(|l| {
                    let runtimes: Vec<&str> = l.runtimes.iter().map(|r| runtime_name(*r)).collect();
                    json!({ "name": l.name, "aliases": l.aliases, "file_name": l.file_name,
                            "extensions": l.extensions, "runtimes": runtimes })
                })
                .collect();
            println!("{}", serde_json::Value::Array(items));
        }
        Format::Text => {
            println!("{:<12} {:<10} {:<13} ALIASES", "LANGUAGE", "FILE", "RUNTIMES");
            for l in &langs {
                let runtimes: Vec<&str> = l.runtimes.iter().map(|r| runtime_name(*r)).collect();
                println!("{:<12} {:<10} {:<13} {}", l.name, l.file_name, runtimes.join(","), l.aliases.join(", "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
