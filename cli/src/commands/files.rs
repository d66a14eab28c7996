//! `corral files read|write|ls|rm`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::connect;
use crate::output::Format;

#[derive(Debug, Subcommand)]
pub enum FilesCmd {
    /// Print a file (or save it with --out).
    Read {
        id: String,
        path: String,
        /// Write to this local file instead of stdout.
        #[arg(long, short = 'O')]
        out: Option<PathBuf>,
    },
    /// Write a file from a local file or stdin (`-`), creating parent directories.
    Write {
        id: String,
        path: String,
        /// Local file to upload, or `-` for stdin.
        #[arg(default_value = "-")]
        from: String,
        /// Permission bits in octal, e.g. 755 [default: 644].
        #[arg(long, value_parser = parse_mode)]
        mode: Option<u32>,
    },
    /// List a directory [default: /workspace].
    Ls {
        id: String,
        #[arg(default_value = "/workspace")]
        path: String,
    },
    /// Remove a file or (with -r) a directory tree.
    Rm {
        id: String,
        path: String,
        #[arg(short, long)]
        recursive: bool,
    },
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode like 644"))
}

pub async fn run(endpoint: &str, out: Format, cmd: FilesCmd) -> anyhow::Result<ExitCode> {
    let client = connect(endpoint).await?;
    match cmd {
        FilesCmd::Read { id, path, out: file } => {
            let data = client.read_file(&id, &path).await?;
            match file {
                Some(f) => std::fs::write(&f, &data).map_err(|e| anyhow::anyhow!("writing {}: {e}", f.display()))?,
                None => std::io::stdout().lock().write_all(&data)?,
            }
        }
        FilesCmd::Write { id, path, from, mode } => {
            let data = if from == "-" {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf)?;
                buf
            } else {
                std::fs::read(&from).map_err(|e| anyhow::anyhow!("reading {from}: {e}"))?
            };
            let size = client.write_file(&id, &path, data, mode.unwrap_or(0)).await?;
            match out {
                Format::Json => println!("{}", serde_json::json!({ "path": path, "size": size })),
                Format::Text => eprintln!("wrote {size} bytes to {path}"),
            }
        }
        FilesCmd::Ls { id, path } => {
            let entries = client.list_files(&id, &path).await?;
            match out {
                Format::Json => {
                    let v: Vec<_> = entries
                        .iter()
                        .map(|e| {
                            serde_json::json!({ "name": e.name, "is_dir": e.is_dir, "is_symlink": e.is_symlink,
                            "size": e.size, "mode": format!("{:o}", e.mode), "mtime_ms": e.mtime_ms })
                        })
                        .collect();
                    println!("{}", serde_json::Value::Array(v));
                }
                Format::Text => {
                    for e in entries {
                        let kind = if e.is_dir {
                            'd'
                        } else if e.is_symlink {
                            'l'
                        } else {
                            '-'
                        };
                        println!("{kind}{:04o} {:>10}  {}", e.mode & 0o7777, e.size, e.name);
                    }
                }
            }
        }
        FilesCmd::Rm { id, path, recursive } => client.remove_file(&id, &path, recursive).await?,
    }
    Ok(ExitCode::SUCCESS)
}
