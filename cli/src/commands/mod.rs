//! Command-line interface: argument definitions and dispatch.

mod batch;
mod code;
mod codebase;
mod demo;
mod exec;
mod files;
mod job;
mod process;
mod sandbox;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::config::{self, BusBackend, Config, StoreBackend};
use crate::output::{Format, OutputArg};
use crate::{servers, telemetry};

/// Corral runs untrusted code in isolated sandboxes on a fleet of machines.
///
/// Start everything locally with `corral dev`, then use the client commands against it.
#[derive(Debug, Parser)]
#[command(name = "corral", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file (TOML); layered over the defaults, under CORRAL_* variables and flags.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (after all layers) as JSON and exit.
    #[arg(long, global = true)]
    pub dump_config: bool,
    /// Coordinator endpoint for client commands [default: http://127.0.0.1:50051; env: CORRAL_ENDPOINT].
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Output format of client commands.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "text")]
    pub output: OutputArg,
    /// Log filter for servers, e.g. `debug` or `corral_agent=debug,info`.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a coordinator and one agent in this process on embedded backends (no etcd, NATS or Docker).
    Dev {
        /// gRPC listen address [default: 127.0.0.1:50051].
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Directory for sandbox files [default: a corral-dev directory under the system temp dir].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Run a coordinator (state in etcd, work over NATS).
    Coordinator {
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// etcd endpoints, comma-separated.
        #[arg(long, value_name = "URLS", value_delimiter = ',')]
        etcd: Option<Vec<String>>,
        /// NATS server URL.
        #[arg(long, value_name = "URL")]
        nats: Option<String>,
    },
    /// Run an agent for this node (registers in etcd, takes work from NATS).
    Agent {
        /// This node's id [default: the host name].
        #[arg(long, value_name = "ID")]
        node_id: Option<String>,
        #[arg(long, value_name = "URLS", value_delimiter = ',')]
        etcd: Option<Vec<String>>,
        #[arg(long, value_name = "URL")]
        nats: Option<String>,
        /// Directory for sandbox files [default: /var/lib/corral].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Most sandboxes this node runs at once.
        #[arg(long, value_name = "N")]
        max_sandboxes: Option<u32>,
    },
    /// Create, inspect and destroy sandboxes.
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCmd),
    /// Run a command in a sandbox, streaming its output; exits with the command's exit code.
    Exec(exec::ExecArgs),
    /// Create a sandbox, run one command in it, destroy it; exits with the command's exit code.
    Run(exec::RunArgs),
    /// List the languages `--language` (Exec.RunCode) accepts, with the runtimes offering each.
    Languages,
    /// Start, list, signal, kill and follow background processes of a sandbox.
    #[command(subcommand)]
    Process(process::ProcessCmd),
    /// Read, write, list and remove files in a sandbox.
    #[command(subcommand)]
    Files(files::FilesCmd),
    /// Submit one-shot jobs (a fresh sandbox, one command) and follow them.
    #[command(subcommand)]
    Job(job::JobCmd),
    /// Run many jobs as one batch (items.jsonl) with a concurrency cap, and follow it.
    #[command(subcommand)]
    Batch(batch::BatchCmd),
    /// Upload projects once and share them copy-on-write across sandboxes, each through its
    /// own path rules (`corral sandbox create --codebase ID --preset agent-safe`).
    #[command(subcommand)]
    Codebase(codebase::CodebaseCmd),
    /// A short tour against a running server: several sandboxes at once, code in each, cleanup.
    Demo(demo::DemoArgs),
}

fn flags(cli: &Cli) -> serde_json::Value {
    let mut f = json!({});
    if let Some(e) = &cli.endpoint {
        f["client"] = json!({ "endpoint": e });
    }
    if let Some(l) = &cli.log {
        f["telemetry"] = json!({ "log": l });
    }
    let mut set = |section: &str, key: &str, v: serde_json::Value| {
        if f.get(section).is_none() {
            f[section] = json!({});
        }
        f[section][key] = v;
    };
    match &cli.command {
        Command::Dev { listen, state_dir } => {
            listen.iter().for_each(|l| set("coordinator", "listen", json!(l)));
            state_dir.iter().for_each(|d| set("agent", "state_dir", json!(d)));
        }
        Command::Coordinator { listen, etcd, nats } => {
            listen.iter().for_each(|l| set("coordinator", "listen", json!(l)));
            etcd.iter().for_each(|e| set("store", "endpoints", json!(e)));
            nats.iter().for_each(|n| set("bus", "url", json!(n)));
        }
        Command::Agent { node_id, etcd, nats, state_dir, max_sandboxes } => {
            node_id.iter().for_each(|n| set("agent", "node_id", json!(n)));
            etcd.iter().for_each(|e| set("store", "endpoints", json!(e)));
            nats.iter().for_each(|n| set("bus", "url", json!(n)));
            state_dir.iter().for_each(|d| set("agent", "state_dir", json!(d)));
            max_sandboxes.iter().for_each(|m| set("agent", "max_sandboxes", json!(m)));
        }
        _ => {}
    }
    f
}

/// Defaults that depend on the command: dev mode uses the embedded backends and a temp dir.
fn defaults(command: &Command) -> Config {
    let mut c = Config::default();
    if let Command::Dev { .. } = command {
        c.store.backend = StoreBackend::Memory;
        c.bus.backend = BusBackend::Memory;
        c.agent.state_dir = std::env::temp_dir().join("corral-dev");
        c.agent.node_id = "dev".into();
    }
    c
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = config::load(defaults(&cli.command), cli.config.as_deref(), flags(&cli))?;
    if cli.dump_config {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(ExitCode::SUCCESS);
    }
    let endpoint = config.client.endpoint.clone();
    let out = Format::from(cli.output);
    match cli.command {
        Command::Dev { .. } => serve(config, "corral-dev", servers::dev).await,
        Command::Coordinator { .. } => serve(config, "corral-coordinator", servers::coordinator).await,
        Command::Agent { .. } => serve(config, "corral-agent", servers::agent).await,
        Command::Sandbox(cmd) => sandbox::run(&endpoint, out, cmd).await,
        Command::Exec(args) => exec::exec(&endpoint, out, args).await,
        Command::Run(args) => exec::run(&endpoint, out, args).await,
        Command::Files(cmd) => files::run(&endpoint, out, cmd).await,
        Command::Process(cmd) => process::run(&endpoint, out, cmd).await,
        Command::Languages => code::languages(&endpoint, out).await,
        Command::Job(cmd) => job::run(&endpoint, out, cmd).await,
        Command::Batch(cmd) => batch::run(&endpoint, cli.output, cmd).await,
        Command::Codebase(cmd) => codebase::run(&endpoint, out, cmd).await,
        Command::Demo(args) => demo::run(&endpoint, args).await,
    }
}

async fn serve<F, Fut>(config: Config, service: &'static str, f: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let _guard = telemetry::init(&config.telemetry, service)?;
    f(config).await?;
    Ok(ExitCode::SUCCESS)
}

/// Parses `KEY=VALUE`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

pub async fn connect(endpoint: &str) -> anyhow::Result<corral_client::Client> {
    Ok(corral_client::Client::connect(endpoint).await?)
}

/// Follows page tokens until `limit` items (0: no limit) or the last page. `fetch(page_size,
/// page_token)` returns one page and the next token; the answer says whether items were left.
pub async fn collect_pages<T, F, Fut>(limit: usize, mut fetch: F) -> anyhow::Result<(Vec<T>, bool)>
where
    F: FnMut(i32, String) -> Fut,
    Fut: std::future::Future<Output = corral_client::Result<(Vec<T>, String)>>,
{
    const MAX_PAGE: usize = 1000;
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let want = if limit == 0 { MAX_PAGE } else { (limit - items.len()).min(MAX_PAGE) };
        let (page, next) = fetch(want as i32, token).await?;
        items.extend(page);
        if limit != 0 && items.len() >= limit {
            let more = items.len() > limit || !next.is_empty();
            items.truncate(limit);
            return Ok((items, more));
        }
        if next.is_empty() {
            return Ok((items, false));
        }
        token = next;
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Pages of `size` items (at most the asked page size) out of 0..total.
    async fn page(total: usize, size: usize, asked: i32, token: String) -> corral_client::Result<(Vec<usize>, String)> {
        let start: usize = token.parse().unwrap_or(0);
        let end = (start + size.min(asked as usize)).min(total);
        let next = if end < total { end.to_string() } else { String::new() };
        Ok(((start..end).collect(), next))
    }

    #[tokio::test]
    async fn pages_are_followed_up_to_the_limit() {
        let (all, more) = super::collect_pages(0, |n, t| page(25, 10, n, t)).await.unwrap();
        assert_eq!((all.len(), more), (25, false));
        assert_eq!(all, (0..25).collect::<Vec<_>>());
        let (some, more) = super::collect_pages(12, |n, t| page(25, 10, n, t)).await.unwrap();
        assert_eq!((some, more), ((0..12).collect::<Vec<_>>(), true));
        let (exact, more) = super::collect_pages(25, |n, t| page(25, 10, n, t)).await.unwrap();
        assert_eq!((exact.len(), more), (25, false));
    }

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
