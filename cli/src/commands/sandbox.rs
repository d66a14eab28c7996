//! `corral sandbox create|list|get|pause|resume|set-timeout|destroy`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use corral_client::v1 as pb;

use super::{connect, key_value};
use crate::output::{self, Format};

/// Options for creating a sandbox (shared by `sandbox create` and `run`).
#[derive(Debug, Clone, Args)]
pub struct CreateOpts {
    /// Isolation: bubblewrap (host system read-only) or a Docker container.
    #[arg(long, value_enum, default_value = "bwrap")]
    pub runtime: RuntimeArg,
    /// Image for --runtime docker (a local image of the node) [default: corral/base].
    #[arg(long, alias = "template")]
    pub image: Option<String>,
    /// CPU cores (fractions allowed) [default: server's, 1].
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory limit in MiB [default: server's, 512].
    #[arg(long, value_name = "MIB")]
    pub memory_mb: Option<i64>,
    /// Disk quota in MiB of /workspace and /tmp together (inodes in proportion); writes past it
    /// fail with "No space left on device" [default: server's, 1024].
    #[arg(long, value_name = "MIB")]
    pub disk_mb: Option<i64>,
    /// Lifetime in seconds, after which the sandbox is destroyed as EXPIRED [default: server's, 300].
    #[arg(long = "ttl", value_name = "SECONDS")]
    pub ttl_seconds: Option<i64>,
    /// Allow network access (off by default: only loopback inside the sandbox).
    #[arg(long)]
    pub internet: bool,
    /// Environment for every command, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_parser = key_value, value_name = "KEY=VALUE")]
    pub env: Vec<(String, String)>,
    /// Label, KEY=VALUE (repeatable).
    #[arg(long = "label", short = 'l', value_parser = key_value, value_name = "KEY=VALUE")]
    pub labels: Vec<(String, String)>,
    /// Unique name (lowercase letters, digits, '-', '_').
    #[arg(long)]
    pub name: Option<String>,
    /// Default working directory (under /workspace or /tmp).
    #[arg(long)]
    pub workdir: Option<String>,
    /// A codebase (`corral codebase create`) to show in the sandbox, copy-on-write: its writes
    /// land in the sandbox's own layer (`corral sandbox diff`).
    #[arg(long, value_name = "ID")]
    pub codebase: Option<String>,
    /// Permission preset for the codebase: view-only, read-only, agent-safe, development,
    /// full-access [default: read-only, or none when --rule is given].
    #[arg(long, requires = "codebase")]
    pub preset: Option<String>,
    /// Path rule added after the preset's: PATTERN=PERMISSION[:TYPE[:PRIORITY]], e.g.
    /// 'docs/**=write' or 'src=read:directory' (permissions none|view|read|write; types
    /// glob|directory|file) (repeatable).
    #[arg(long = "rule", value_name = "RULE", requires = "codebase", value_parser = rule)]
    pub rules: Vec<pb::PermissionRule>,
    /// Where the codebase appears [default: /workspace].
    #[arg(long, value_name = "PATH", requires = "codebase")]
    pub codebase_path: Option<String>,
}

/// Parses a `--rule` (the CLI form of a permission rule).
fn rule(s: &str) -> Result<pb::PermissionRule, String> {
    let (pattern, rest) =
        s.rsplit_once('=').ok_or_else(|| format!("{s:?} is not PATTERN=PERMISSION[:TYPE[:PRIORITY]]"))?;
    let mut parts = rest.split(':');
    let permission = match parts.next().unwrap_or_default() {
        "none" => pb::Permission::None,
        "view" => pb::Permission::View,
        "read" => pb::Permission::Read,
        "write" => pb::Permission::Write,
        other => return Err(format!("{s:?}: permission {other:?} is not none, view, read or write")),
    };
    let kind = match parts.next().unwrap_or("glob") {
        "glob" => pb::PatternType::Glob,
        "directory" | "dir" => pb::PatternType::Directory,
        "file" => pb::PatternType::File,
        other => return Err(format!("{s:?}: type {other:?} is not glob, directory or file")),
    };
    let priority = match parts.next() {
        None => 0,
        Some(p) => p.parse().map_err(|_| format!("{s:?}: priority {p:?} is not an integer"))?,
    };
    if parts.next().is_some() {
        return Err(format!("{s:?} has too many ':' parts"));
    }
    Ok(pb::PermissionRule { pattern: pattern.to_owned(), permission: permission as i32, r#type: kind as i32, priority })
}

impl CreateOpts {
    pub fn request(&self) -> pb::CreateSandboxRequest {
        pb::CreateSandboxRequest {
            runtime: match self.runtime {
                RuntimeArg::Bwrap => pb::Runtime::Bwrap as i32,
                RuntimeArg::Docker => pb::Runtime::Docker as i32,
            },
            image: self.image.clone().unwrap_or_default(),
            cpus: self.cpus.unwrap_or(0.0),
            memory_mb: self.memory_mb.unwrap_or(0),
            disk_mb: self.disk_mb.unwrap_or(0),
            timeout_seconds: self.ttl_seconds.unwrap_or(0),
            internet_access: self.internet,
            env: self.env.iter().cloned().collect(),
            labels: self.labels.iter().cloned().collect(),
            name: self.name.clone().unwrap_or_default(),
            workdir: self.workdir.clone().unwrap_or_default(),
            codebase_id: self.codebase.clone().unwrap_or_default(),
            preset: self.preset.clone().unwrap_or_default(),
            permissions: self.rules.clone(),
            codebase_path: self.codebase_path.clone().unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeArg {
    Bwrap,
    Docker,
}

#[derive(Debug, Subcommand)]
pub enum SandboxCmd {
    /// Create a sandbox and print it once it is RUNNING.
    Create(Box<CreateOpts>),
    /// List sandboxes (newest records first are not guaranteed; ordered by id).
    List {
        /// Only these states (repeatable), e.g. RUNNING, STOPPED, LOST.
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
        /// Only sandboxes with this label, KEY=VALUE (repeatable).
        #[arg(long = "label", short = 'l', value_parser = key_value, value_name = "KEY=VALUE")]
        labels: Vec<(String, String)>,
        /// Page size (1-1000).
        #[arg(long, default_value_t = 100)]
        page_size: i32,
        /// Continue from a previous page's token.
        #[arg(long)]
        page_token: Option<String>,
        /// Follow all pages.
        #[arg(long)]
        all: bool,
    },
    /// Show one sandbox, by id or by --name.
    Get {
        #[arg(required_unless_present = "name")]
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        name: Option<String>,
    },
    /// Freeze every process of running sandboxes.
    Pause {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Thaw paused sandboxes.
    Resume {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Reset a sandbox's lifetime: it now expires SECONDS from now.
    SetTimeout { id: String, seconds: i64 },
    /// Destroy sandboxes (idempotent).
    Destroy {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// What a sandbox created with --codebase changed in it: added (A), modified (M) and
    /// deleted (D) paths. Read changed files with `corral files read`.
    Diff { id: String },
}

fn parse_state(s: &str) -> anyhow::Result<i32> {
    let name = format!("SANDBOX_STATE_{}", s.to_ascii_uppercase());
    pb::SandboxState::from_str_name(&name).map(|v| v as i32).ok_or_else(|| {
        anyhow::anyhow!("--state {s:?}: not a state (PENDING, SCHEDULED, RUNNING, STOPPED, FAILED, LOST, EXPIRED, ...)")
    })
}

pub async fn run(endpoint: &str, out: Format, cmd: SandboxCmd) -> anyhow::Result<ExitCode> {
    let client = connect(endpoint).await?;
    match cmd {
        SandboxCmd::Create(opts) => output::print_sandbox(out, &client.create(opts.request()).await?),
        SandboxCmd::Get { id, name } => {
            let s = match (id, name) {
                (_, Some(name)) => client.get_by_name(&name).await?,
                (Some(id), None) => client.get(&id).await?,
                (None, None) => anyhow::bail!("give a sandbox id or --name"),
            };
            output::print_sandbox(out, &s);
        }
        SandboxCmd::Pause { ids } => {
            for id in ids {
                output::print_sandbox(out, &client.pause(&id).await?);
            }
        }
        SandboxCmd::Resume { ids } => {
            for id in ids {
                output::print_sandbox(out, &client.resume(&id).await?);
            }
        }
        SandboxCmd::SetTimeout { id, seconds } => output::print_sandbox(out, &client.set_timeout(&id, seconds).await?),
        SandboxCmd::Destroy { ids } => {
            for id in ids {
                output::print_sandbox(out, &client.destroy(&id).await?);
            }
        }
        SandboxCmd::Diff { id } => {
            let d = client.sandboxes.clone().diff(pb::DiffSandboxRequest { id }).await?.into_inner();
            output::print_diff(out, &d);
        }
        SandboxCmd::List { states, labels, page_size, page_token, all } => {
            list(&client, out, states, labels, page_size, page_token, all).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints one page of sandboxes (or every page with `all`).
async fn list(
    client: &corral_client::Client,
    out: Format,
    states: Vec<String>,
    labels: Vec<(String, String)>,
    page_size: i32,
    page_token: Option<String>,
    all: bool,
) -> anyhow::Result<()> {
    let states = states.iter().map(|s| parse_state(s)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut req = pb::ListSandboxesRequest {
        states,
        labels: labels.into_iter().collect(),
        page_size,
        page_token: page_token.unwrap_or_default(),
    };
    let mut found = Vec::new();
    loop {
        let page = client.list(req.clone()).await?;
        found.extend(page.sandboxes);
        if !all || page.next_page_token.is_empty() {
            match out {
                Format::Json => {
                    let items: Vec<_> = found.iter().map(output::sandbox_json).collect();
                    println!("{}", serde_json::json!({ "sandboxes": items, "next_page_token": page.next_page_token }));
                }
                Format::Text => {
                    output::print_table(&found);
                    if !page.next_page_token.is_empty() {
                        eprintln!("more: --page-token {}", page.next_page_token);
                    }
                }
            }
            break;
        }
        req.page_token = page.next_page_token;
    }
    Ok(())
}
