//! Codebases on a node: every permission × pattern type from inside, a crashed permission file
//! system, and one copy of a codebase however many sandboxes use it.

use std::path::Path;

use anyhow::{Context, ensure};
use corral_client::Client;
use corral_client::v1 as pb;
use tonic::Code;

use super::{fixture_repo, new_codebase, upload_repo};
use crate::{expect_err, shell};

/// Killing a sandbox's permission file system (its `corral-fs` server) fails every further
/// operation on its codebase with EIO; the base is never exposed.
pub async fn codebase_fs_crash(c: &Client, runtime: pb::Runtime) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    fixture_repo(dir.path())?;
    let cb = new_codebase(c, "crash-test").await?;
    upload_repo(c, &cb.id, dir.path(), true).await?;
    let image = if runtime == pb::Runtime::Docker { "corral/base" } else { "" };
    let req = pb::CreateSandboxRequest {
        runtime: runtime as i32,
        image: image.into(),
        codebase_id: cb.id.clone(),
        preset: "agent-safe".into(),
        ..Default::default()
    };
    let sb = c.create(req).await?;
    let r = c.run(shell(&sb.id, "cat /workspace/README.md")).await?;
    ensure!(r.stdout == b"# demo\n", "before the crash: {:?}", String::from_utf8_lossy(&r.stdout));
    // The server's command line names the sandbox's merged tree.
    let found = std::process::Command::new("pgrep").args(["-f", &format!("{}/merged", sb.id)]).output()?;
    let pids: Vec<i32> =
        String::from_utf8_lossy(&found.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect();
    ensure!(pids.len() == 1, "expected one corral-fs server for {}, found {pids:?}", sb.id);
    // SAFETY: sending SIGKILL to a pid we just looked up has no memory-safety concern.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pids[0], libc::SIGKILL) };
    ensure!(rc == 0, "kill failed: {}", std::io::Error::last_os_error());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = pb::ExecRequest {
        cwd: "/tmp".into(),
        ..shell(&sb.id, "cat /workspace/README.md /workspace/.env; ls /workspace")
    };
    let r = c.run(after).await?;
    let (out, err) = (String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&r.stderr));
    ensure!(!out.contains("demo") && !out.contains("SECRET"), "content after the crash: {out}");
    ensure!(err.contains("Input/output error"), "after the crash: stdout {out:?}, stderr {err:?}");
    expect_err(
        c.sandboxes.clone().diff(pb::DiffSandboxRequest { id: sb.id.clone() }).await.map_err(Into::into),
        Code::FailedPrecondition,
        "failed",
    )?;
    let marked = c.get(&sb.id).await?;
    ensure!(marked.codebase_error.contains("EIO"), "Get does not mark it: {:?}", marked.codebase_error);
    c.destroy(&sb.id).await?;
    Ok(())
}

/// `n` sandboxes on one codebase on one node cost one copy of it on disk (`du` of the cache).
pub async fn codebase_one_copy(c: &Client, state_dir: &Path, n: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let big: Vec<u8> = (0..(8 << 20)).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(dir.path().join("data.bin"), &big)?;
    fixture_repo(dir.path())?;
    let cb = new_codebase(c, "one-copy").await?;
    let up = upload_repo(c, &cb.id, dir.path(), false).await?;
    let size = up.codebase.context("no codebase")?.size_bytes as u64;
    let mut ids = Vec::new();
    for _ in 0..n / 10 {
        let creates =
            (0..10).map(|_| c.create(pb::CreateSandboxRequest { codebase_id: cb.id.clone(), ..Default::default() }));
        for s in futures::future::try_join_all(creates).await? {
            ids.push(s.id);
        }
    }
    for id in &ids {
        let r = c.run(shell(id, "wc -c < /workspace/data.bin")).await?;
        ensure!(String::from_utf8_lossy(&r.stdout).trim() == (8 << 20).to_string(), "{id} sees {:?}", r.stdout);
    }
    let du = std::process::Command::new("du").args(["-sb"]).arg(state_dir.join("codebases")).output()?;
    let used: u64 = String::from_utf8_lossy(&du.stdout).split_whitespace().next().unwrap_or("0").parse()?;
    eprintln!("{n} sandboxes on a {size}-byte codebase: the node's cache holds {used} bytes");
    ensure!(
        used >= size && used < size + (1 << 20),
        "{n} sandboxes on a {size}-byte codebase: the cache holds {used} bytes"
    );
    for id in &ids {
        c.destroy(id).await?;
    }
    Ok(())
}

/// Every permission × pattern type, from inside a sandbox: a file rule, a directory rule and a
/// glob rule for each of none, view, read and write, with nothing else granted.
pub async fn codebase_permission_matrix(c: &Client, runtime: pb::Runtime) -> anyhow::Result<()> {
    let perms = [pb::Permission::None, pb::Permission::View, pb::Permission::Read, pb::Permission::Write];
    let name = |p: pb::Permission| p.as_str_name().trim_start_matches("PERMISSION_").to_ascii_lowercase();
    let dir = tempfile::tempdir()?;
    let mut rules = Vec::new();
    let mut cases = Vec::new();
    for p in perms {
        let n = name(p);
        for (kind, pattern, path) in [
            (pb::PatternType::File, format!("f/{n}.txt"), format!("f/{n}.txt")),
            (pb::PatternType::Directory, format!("d/{n}"), format!("d/{n}/x.txt")),
            (pb::PatternType::Glob, format!("g/{n}/*.txt"), format!("g/{n}/x.txt")),
        ] {
            let at = dir.path().join(&path);
            std::fs::create_dir_all(at.parent().context("parent")?)?;
            std::fs::write(&at, "base\n")?;
            rules.push(pb::PermissionRule { pattern, permission: p as i32, r#type: kind as i32, priority: 0 });
            cases.push((p, kind, path));
        }
    }
    let cb = new_codebase(c, "matrix").await?;
    upload_repo(c, &cb.id, dir.path(), false).await?;
    let image = if runtime == pb::Runtime::Docker { "corral/base" } else { "" };
    let req = pb::CreateSandboxRequest {
        runtime: runtime as i32,
        image: image.into(),
        codebase_id: cb.id.clone(),
        permissions: rules,
        ..Default::default()
    };
    let sb = c.create(req).await?;
    for (p, kind, path) in cases {
        let (parent, file) = path.rsplit_once('/').context("a path with a parent")?;
        let script = format!(
            "cd /workspace; ls {parent} 2>&1 | grep -qx '{file}' && echo listed; stat -c %s {path} >/dev/null 2>&1 && echo stat; \
             cat {path} 2>&1; echo more >> {path} 2>&1 && echo wrote"
        );
        let r = c.run(shell(&sb.id, &script)).await?;
        let out = String::from_utf8_lossy(&r.stdout).into_owned() + &String::from_utf8_lossy(&r.stderr);
        let has = |s: &str| out.contains(s);
        let ok = match p {
            pb::Permission::None => !has("listed") && !has("stat") && has("No such file") && !has("base"),
            pb::Permission::View => {
                has("listed") && has("stat") && has("Permission denied") && !has("base") && !has("wrote")
            }
            pb::Permission::Read => has("listed") && has("base") && !has("wrote") && has("Permission denied"),
            _ => has("listed") && has("base") && has("wrote"),
        };
        ensure!(ok, "{runtime:?} {} rule on {path} (permission {}): {out:?}", kind.as_str_name(), name(p));
    }
    c.destroy(&sb.id).await?;
    Ok(())
}
