//! One-shot sandboxes (jobs): bwrap runs the command itself as the sandbox's only program, with
//! the same isolation as a long-lived sandbox (namespaces, read-only system, private `/workspace`
//! and `/tmp`, cgroups joined before bwrap runs, no inherited environment) but no init, no
//! control protocol and no warm-pool slot: what a job needs and nothing more, so a job costs little
//! more than the bare `bwrap` spawn it is.
//!
//! The command is pid 1 of the sandbox's pid namespace and bwrap dies with the agent, so killing
//! bwrap ends everything in the sandbox; the cgroups are emptied as well, then kept for the next
//! one-shot with the same limits ([`Cgroups::lease`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use corral_core::model::{Command, ExecSpec, ExitStatus, SandboxSpec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::sandbox::{cleanup, limits_of, make_dirs};
use super::{BwrapConfig, args, spawn};
use crate::runtime::cgroup::{Cgroups, Leased};
use crate::runtime::{OneShot, RuntimeError, RuntimeResult};

/// Hands the cgroups back and removes the sandbox directory however the run ends.
struct Cleanup<'a> {
    dir: &'a Path,
    cgroup: Option<Leased>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        drop(self.cgroup.take());
        cleanup(self.dir, None);
    }
}

/// Runs `exec` in a fresh sandbox of `spec` with `files` (absolute paths under `/tmp` or
/// `/workspace`) in place, then removes the sandbox. `kill` ends the run early (reported as
/// killed by SIGKILL).
pub async fn run(
    config: &BwrapConfig,
    owner: Option<(u32, u32)>,
    cgroups: &Cgroups,
    spec: &SandboxSpec,
    files: &[(String, Vec<u8>)],
    exec: ExecSpec,
    kill: Arc<Notify>,
) -> RuntimeResult<OneShot> {
    let dir = config.state_dir.join("sandboxes").join(spec.id.as_str());
    let start_failed = |why: String| RuntimeError::StartFailed { sandbox: spec.id.clone(), why };
    let mut guard = Cleanup { dir: &dir, cgroup: None };
    make_dirs(&dir, owner).map_err(|e| start_failed(e.to_string()))?;
    guard.cgroup = cgroups.lease(&limits_of(spec)).map_err(|e| start_failed(e.to_string()))?;
    for (path, data) in files {
        place_file(&dir, owner, path, data).map_err(|e| start_failed(format!("writing {path}: {e}")))?;
    }
    let argv = match exec.command {
        Command::Argv(argv) => argv,
        Command::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line],
    };
    let mut env = spec.env.clone();
    env.extend(exec.env);
    let cwd = if exec.cwd.is_empty() { spec.workdir.as_str() } else { exec.cwd.as_str() };
    let join = guard.cgroup.as_ref().map(|c| c.cgroup().join_files()).transpose();
    let started = Instant::now();
    let mut child = spawn::spawn(spawn::Spawn {
        program: &config.bwrap_path,
        args: args::oneshot_args(config, spec.internet_access, &dir, cwd, &env, &argv),
        stdin: if exec.stdin.is_empty() { spawn::Stdio::Null } else { spawn::Stdio::Piped },
        stdout: spawn::Stdio::Piped,
        stderr: spawn::Stdio::Piped,
        join: join.map_err(|e| start_failed(e.to_string()))?.unwrap_or_default(),
        owner,
    })
    .map_err(|e| start_failed(format!("spawning bwrap: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let data = exec.stdin;
        corral_core::task::spawn_detached("bwrap.oneshot_stdin", async move {
            let _ = stdin.write_all(&data).await;
        });
    }
    let cap = exec.max_output_bytes as usize;
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let output = async { tokio::join!(read_capped(out, cap), read_capped(err, cap)) };
    let timeout = std::time::Duration::from_millis(exec.timeout_ms.max(1));
    // Boxed so that dropping it (on timeout or kill) gives `child` back.
    let mut run = Box::pin(async {
        let ((stdout, out_cut), (stderr, err_cut)) = output.await;
        let status = child.wait().await;
        (stdout, stderr, out_cut || err_cut, status)
    });
    let (ended, timed_out) = tokio::select! {
        r = &mut run => (Some(r), false),
        _ = tokio::time::sleep(timeout) => (None, true),
        _ = kill.notified() => (None, false),
    };
    let (stdout, stderr, truncated, code, signal) = match ended {
        Some((stdout, stderr, truncated, status)) => {
            let status = status.map_err(|e| RuntimeError::io("waiting for bwrap", e))?;
            let (code, signal) = decode_status(status);
            (stdout, stderr, truncated, code, signal)
        }
        None => {
            // Timed out or killed: bwrap's death ends the sandbox's pid namespace.
            drop(run);
            let _ = child.start_kill();
            let _ = child.wait().await;
            if let Some(cg) = &guard.cgroup {
                cg.cgroup().kill_all();
            }
            (Vec::new(), Vec::new(), false, -1, libc::SIGKILL)
        }
    };
    let oom_killed = guard.cgroup.as_ref().is_some_and(Leased::oom_killed);
    let status = ExitStatus {
        exit_code: code,
        signal,
        timed_out,
        truncated,
        duration_ms: started.elapsed().as_millis() as u64,
        oom_killed,
    };
    drop(guard);
    Ok(OneShot { status, stdout, stderr })
}

/// bwrap exits with its program's code, or 128 + the signal that ended it.
fn decode_status(status: std::process::ExitStatus) -> (i32, i32) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) if c > 128 && c <= 128 + 64 => (-1, c - 128),
        (Some(c), _) => (c, 0),
        (None, Some(s)) => (-1, s),
        (None, None) => (-1, 0),
    }
}

/// Reads a stream to its end, keeping at most `cap` bytes; true when more was dropped.
async fn read_capped(stream: Option<impl AsyncRead + Unpin>, cap: usize) -> (Vec<u8>, bool) {
    let Some(mut stream) = stream else { return (Vec::new(), false) };
    let (mut kept, mut cut, mut buf) = (Vec::new(), false, vec![0u8; 64 * 1024]);
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, cut),
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                cut |= n > room;
            }
        }
    }
}

/// Writes a file into the sandbox's `/tmp` or `/workspace` on the host side, owned by the
/// sandbox user.
fn place_file(dir: &Path, owner: Option<(u32, u32)>, path: &str, data: &[u8]) -> std::io::Result<()> {
    let (area, rest) = match path
        .strip_prefix("/tmp/")
        .map(|r| ("tmp", r))
        .or_else(|| path.strip_prefix("/workspace/").map(|r| ("workspace", r)))
    {
        Some(x) => x,
        None => return Err(std::io::Error::other("only files under /tmp or /workspace")),
    };
    if rest.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(std::io::Error::other("not a plain relative path"));
    }
    let target = dir.join(area).join(rest);
    let mut made = dir.join(area);
    let parts: Vec<&str> = rest.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        made = made.join(part);
        std::fs::create_dir_all(&made)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&made, Some(uid), Some(gid))?;
        }
    }
    std::fs::write(&target, data)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&target, Some(uid), Some(gid))?;
    }
    Ok(())
}
