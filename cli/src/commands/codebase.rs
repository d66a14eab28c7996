//! `corral codebase create|upload|ls|get|download|rm|presets`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use corral_client::v1 as pb;
use corral_client::{Progress, ScanOptions};

use super::{connect, key_value};
use crate::output::codebases::{print_codebase, print_codebases, print_files, size};
use crate::output::{Format, rule_text};

#[derive(Debug, Subcommand)]
pub enum CodebaseCmd {
    /// Create an empty codebase (then `corral codebase upload ID DIR`), or one holding DIR.
    Create {
        name: String,
        /// Upload this directory into it right away.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        #[arg(long)]
        owner: Option<String>,
        /// Label, KEY=VALUE (repeatable).
        #[arg(long = "label", short = 'l', value_parser = key_value, value_name = "KEY=VALUE")]
        labels: Vec<(String, String)>,
        #[command(flatten)]
        scan: ScanArgs,
    },
    /// Upload a directory: it becomes the codebase's whole tree (or, with --merge, adds to it).
    /// Contents the server already holds are not sent again.
    Upload {
        id: String,
        dir: PathBuf,
        /// Add and replace files, keeping the others.
        #[arg(long)]
        merge: bool,
        #[command(flatten)]
        scan: ScanArgs,
    },
    /// List codebases, or with an ID the files of one.
    Ls {
        id: Option<String>,
        /// Only files under this directory.
        #[arg(long, requires = "id")]
        prefix: Option<String>,
        #[arg(long)]
        page_token: Option<String>,
        /// Follow all pages.
        #[arg(long)]
        all: bool,
    },
    /// Show one codebase.
    Get { id: String },
    /// Download a file (its bytes) or a directory (a tar stream); the whole codebase without PATH.
    Download {
        id: String,
        path: Option<String>,
        /// Write here instead of to standard output.
        #[arg(long, short = 'O', value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Delete codebases; refused while live sandboxes use one, unless --force.
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(long)]
        force: bool,
    },
    /// List the permission presets and the rules each expands to.
    Presets,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ScanArgs {
    /// Also upload what .gitignore and the default ignore set (.git/, node_modules/,
    /// __pycache__/, .venv/) exclude.
    #[arg(long)]
    pub include_ignored: bool,
    /// Also upload secrets files (.env*, *.key, *.pem, credentials*, secrets/); the agent-safe
    /// preset then hides them.
    #[arg(long)]
    pub include_secrets: bool,
}

pub async fn run(endpoint: &str, out: Format, cmd: CodebaseCmd) -> anyhow::Result<ExitCode> {
    let client = connect(endpoint).await?;
    let mut api = client.codebases.clone();
    match cmd {
        CodebaseCmd::Create { name, from, owner, labels, scan } => {
            let req = pb::CreateCodebaseRequest {
                name,
                owner: owner.unwrap_or_default(),
                labels: labels.into_iter().collect(),
            };
            let cb = api.create(req).await?.into_inner().codebase.context("the server sent no codebase")?;
            match from {
                Some(dir) => upload(&client, out, &cb.id, &dir, false, &scan).await?,
                None => print_codebase(out, &cb),
            }
        }
        CodebaseCmd::Upload { id, dir, merge, scan } => upload(&client, out, &id, &dir, merge, &scan).await?,
        CodebaseCmd::Ls { id: None, page_token, all, .. } => {
            let mut req = pb::ListCodebasesRequest { page_token: page_token.unwrap_or_default(), ..Default::default() };
            let mut found = Vec::new();
            loop {
                let page = api.list(req.clone()).await?.into_inner();
                found.extend(page.codebases);
                if !all || page.next_page_token.is_empty() {
                    print_codebases(out, &found, &page.next_page_token);
                    break;
                }
                req.page_token = page.next_page_token;
            }
        }
        CodebaseCmd::Ls { id: Some(id), prefix, page_token, all } => {
            let mut req = pb::ListCodebaseFilesRequest {
                codebase_id: id,
                prefix: prefix.unwrap_or_default(),
                page_token: page_token.unwrap_or_default(),
                ..Default::default()
            };
            let mut found = Vec::new();
            loop {
                let page = api.list_files(req.clone()).await?.into_inner();
                found.extend(page.files);
                if !all || page.next_page_token.is_empty() {
                    print_files(out, &found, &page.next_page_token);
                    break;
                }
                req.page_token = page.next_page_token;
            }
        }
        CodebaseCmd::Get { id } => {
            let cb = api.get(pb::GetCodebaseRequest { id }).await?.into_inner().codebase;
            print_codebase(out, &cb.context("the server sent no codebase")?);
        }
        CodebaseCmd::Download { id, path, out: file } => {
            let mut sink: Box<dyn Write> = match &file {
                Some(f) => Box::new(std::fs::File::create(f).with_context(|| format!("creating {}", f.display()))?),
                None => Box::new(std::io::stdout().lock()),
            };
            client.download_codebase(&id, path.as_deref().unwrap_or_default(), |piece| sink.write_all(piece)).await?;
            sink.flush()?;
        }
        CodebaseCmd::Rm { ids, force } => {
            for id in ids {
                let cb = api.delete(pb::DeleteCodebaseRequest { id, force }).await?.into_inner().codebase;
                print_codebase(out, &cb.context("the server sent no codebase")?);
            }
        }
        CodebaseCmd::Presets => {
            let presets = api.list_presets(pb::ListPresetsRequest {}).await?.into_inner().presets;
            for p in presets {
                match out {
                    Format::Json => {
                        let rules: Vec<String> = p.rules.iter().map(rule_text).collect();
                        println!(
                            "{}",
                            serde_json::json!({ "name": p.name, "description": p.description, "rules": rules })
                        );
                    }
                    Format::Text => {
                        println!("{}: {}", p.name, p.description);
                        for r in &p.rules {
                            println!("    {}", rule_text(r));
                        }
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Scans `dir` and uploads it with a progress bar (on a terminal).
async fn upload(
    client: &corral_client::Client,
    out: Format,
    id: &str,
    dir: &std::path::Path,
    merge: bool,
    scan: &ScanArgs,
) -> anyhow::Result<()> {
    let options = ScanOptions { include_ignored: scan.include_ignored, include_secrets: scan.include_secrets };
    let dir = dir.to_path_buf();
    let files = tokio::task::spawn_blocking(move || corral_client::scan(&dir, &options)).await??;
    let total: u64 = files.iter().map(|f| f.size).sum();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let shown = bar.clone();
    let resp = client
        .upload_files(id, files, !merge, move |p: Progress| {
            shown.set_position(p.bytes_done);
            shown.set_message(format!("{}/{} files", p.files_done, p.files_total));
        })
        .await;
    bar.finish_and_clear();
    let resp = resp?;
    if let Some(cb) = &resp.codebase {
        print_codebase(out, cb);
    }
    if out == Format::Text {
        eprintln!(
            "sent {} files: {} of content, {} already stored",
            resp.files_received,
            size(resp.bytes_received),
            size(resp.bytes_deduplicated)
        );
    }
    Ok(())
}
