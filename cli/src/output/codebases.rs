//! Output of the codebase commands and of `sandbox diff`.

use corral_client::v1 as pb;
use serde_json::{Value, json};

use super::{Format, ms_to_rfc3339};

pub fn codebase_json(c: &pb::Codebase) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "tenant": c.tenant,
        "owner": c.owner,
        "labels": c.labels,
        "file_count": c.file_count,
        "size_bytes": c.size_bytes,
        "digest": c.digest,
        "sandboxes": c.sandboxes,
        "created_at": ms_to_rfc3339(c.created_at_ms),
        "updated_at": ms_to_rfc3339(c.updated_at_ms),
    })
}

pub fn print_codebase(format: Format, c: &pb::Codebase) {
    match format {
        Format::Json => println!("{}", codebase_json(c)),
        Format::Text => {
            println!("{}  {}  {} files, {}", c.id, c.name, c.file_count, size(c.size_bytes));
            if c.sandboxes > 0 {
                println!("  used by {} live sandbox(es)", c.sandboxes);
            }
        }
    }
}

pub fn print_codebases(format: Format, list: &[pb::Codebase], next: &str) {
    match format {
        Format::Json => {
            let items: Vec<Value> = list.iter().map(codebase_json).collect();
            println!("{}", json!({ "codebases": items, "next_page_token": next }));
        }
        Format::Text => {
            println!("{:<35}  {:<24}  {:>8}  {:>10}", "ID", "NAME", "FILES", "SIZE");
            for c in list {
                println!("{:<35}  {:<24}  {:>8}  {:>10}", c.id, c.name, c.file_count, size(c.size_bytes));
            }
            if !next.is_empty() {
                eprintln!("more: --page-token {next}");
            }
        }
    }
}

fn kind_name(kind: i32) -> &'static str {
    match pb::FileKind::try_from(kind) {
        Ok(pb::FileKind::Directory) => "dir",
        Ok(pb::FileKind::Symlink) => "symlink",
        _ => "file",
    }
}

pub fn print_files(format: Format, files: &[pb::CodebaseFile], next: &str) {
    match format {
        Format::Json => {
            let items: Vec<Value> = files
                .iter()
                .map(|f| {
                    json!({ "path": f.path, "kind": kind_name(f.kind), "mode": format!("{:o}", f.mode),
                            "size": f.size, "digest": f.digest, "link_target": f.link_target })
                })
                .collect();
            println!("{}", json!({ "files": items, "next_page_token": next }));
        }
        Format::Text => {
            for f in files {
                let link = if f.link_target.is_empty() { String::new() } else { format!(" -> {}", f.link_target) };
                println!("{:>4o}  {:<7}  {:>10}  {}{link}", f.mode, kind_name(f.kind), f.size, f.path);
            }
            if !next.is_empty() {
                eprintln!("more: --page-token {next}");
            }
        }
    }
}

pub fn print_diff(format: Format, d: &pb::DiffSandboxResponse) {
    let mark = |k: i32| match pb::ChangeKind::try_from(k) {
        Ok(pb::ChangeKind::Added) => "A",
        Ok(pb::ChangeKind::Modified) => "M",
        Ok(pb::ChangeKind::Deleted) => "D",
        _ => "?",
    };
    match format {
        Format::Json => {
            let items: Vec<Value> = d
                .changes
                .iter()
                .map(|c| json!({ "path": c.path, "change": mark(c.kind), "kind": kind_name(c.file_kind), "size": c.size }))
                .collect();
            println!("{}", json!({ "changes": items, "truncated": d.truncated }));
        }
        Format::Text => {
            for c in &d.changes {
                let slash = if c.file_kind == pb::FileKind::Directory as i32 { "/" } else { "" };
                println!("{}  {}{slash}", mark(c.kind), c.path);
            }
            if d.truncated {
                eprintln!("(more changes than listed)");
            }
        }
    }
}

/// Bytes for people: "1.5 MiB".
pub fn size(bytes: i64) -> String {
    let b = bytes as f64;
    match bytes {
        n if n < 1024 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", b / 1024.0),
        n if n < 1 << 30 => format!("{:.1} MiB", b / (1024.0 * 1024.0)),
        _ => format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0)),
    }
}
