//! One-shot sandboxes (jobs): bwrap runs the command itself as the sandbox's only program, with
//! the same isolation as a long-lived sandbox (namespaces, read-only system, private `/workspace`
//! and `/tmp`, cgroups joined before bwrap runs, no inherited environment) but no init, no
//! control protocol and no warm-pool slot: what a job needs and nothing more, so a job costs little
//! more than the bare `bwrap` spawn it is.
//!
//! `/workspace` and `/tmp` are tmpfs mounts that bwrap makes inside the sandbox's own mount
//! namespace (each at most half the job's memory, and charged to its memory cgroup): nothing is
//! created on or removed from the host's filesystem per job (creating and removing a job's
//! directories on ext4 had been a third of the agent's CPU per job), and nothing outlives the
//! sandbox even if the agent dies. A code job's source reaches the sandbox through a memory file
//! that bwrap copies in.
//!
//! The command is pid 1 of the sandbox's pid namespace and bwrap dies with the agent, so killing
//! bwrap ends everything in the sandbox; the cgroups are emptied as well, then kept for the next
//! one-shot with the same limits ([`Cgroups::lease`]).

use std::sync::Arc;
use std::time::Instant;

use corral_core::model::{Command, ExecSpec, ExitStatus, SandboxSpec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::args::Scratch;
use super::sandbox::limits_of;
use super::{BwrapConfig, args, spawn};
use crate::runtime::cgroup::{Cgroups, Leased};
use crate::runtime::seccomp;
use crate::runtime::{OneShot, RuntimeError, RuntimeResult};

/// Smallest size of a one-shot's `/workspace` and `/tmp`.
const MIN_SCRATCH: u64 = 16 << 20;

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
    let start_failed = |why: String| RuntimeError::StartFailed { sandbox: spec.id.clone(), why };
    let mut placed = Vec::with_capacity(files.len());
    let mut fds = Vec::with_capacity(files.len());
    for (path, data) in files {
        let parents = parents_of(path).map_err(|why| start_failed(format!("file {path}: {why}")))?;
        fds.push(seccomp::memory_file(data).map_err(|e| start_failed(format!("file {path}: {e}")))?);
        placed.push((path.clone(), parents));
    }
    fds.extend(seccomp::program_fds().map_err(|e| start_failed(format!("syscall filter: {e}")))?);
    // Handed back (emptied, for the next one-shot with the same limits) however the run ends.
    let cgroup = cgroups.lease(&limits_of(spec)).map_err(|e| start_failed(e.to_string()))?;
    let scratch =
        Scratch::Tmpfs { bytes: (spec.memory_mb.saturating_mul(1 << 20) / 2).max(MIN_SCRATCH), files: &placed };
    let argv = match exec.command {
        Command::Argv(argv) => argv,
        Command::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line],
    };
    let mut env = spec.env.clone();
    env.extend(exec.env);
    let cwd = if exec.cwd.is_empty() { spec.workdir.as_str() } else { exec.cwd.as_str() };
    let join = cgroup.as_ref().map(Leased::join_files).transpose();
    let started = Instant::now();
    let mut child = spawn::spawn(spawn::Spawn {
        program: &config.bwrap_path,
        args: args::oneshot_args(config, spec.internet_access, &scratch, cwd, &env, &argv),
        stdin: if exec.stdin.is_empty() { spawn::Stdio::Null } else { spawn::Stdio::Piped },
        stdout: spawn::Stdio::Piped,
        stderr: spawn::Stdio::Piped,
        join: join.map_err(|e| start_failed(e.to_string()))?.unwrap_or_default(),
        owner,
        fds,
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
            if let Some(cg) = &cgroup {
                cg.cgroup().kill_all();
            }
            (Vec::new(), Vec::new(), false, -1, libc::SIGKILL)
        }
    };
    let oom_killed = cgroup.as_ref().is_some_and(Leased::oom_killed);
    let status = ExitStatus {
        exit_code: code,
        signal,
        timed_out,
        truncated,
        duration_ms: started.elapsed().as_millis() as u64,
        oom_killed,
    };
    drop(cgroup);
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
    // Small: most jobs print a line or nothing, and the buffer is zeroed for every run.
    let (mut kept, mut cut, mut buf) = (Vec::new(), false, vec![0u8; 8 * 1024]);
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

/// The directories to create for a file placed at `path` (under `/tmp` or `/workspace`, as a
/// plain relative path below them), outermost first.
fn parents_of(path: &str) -> Result<Vec<String>, &'static str> {
    let (area, rest) = match path.strip_prefix("/tmp/").map(|r| ("/tmp", r)) {
        Some(x) => x,
        None => {
            path.strip_prefix("/workspace/").map(|r| ("/workspace", r)).ok_or("only files under /tmp or /workspace")?
        }
    };
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.iter().any(|c| c.is_empty() || *c == "." || *c == "..") {
        return Err("not a plain relative path");
    }
    let mut made = area.to_owned();
    Ok(parts[..parts.len() - 1]
        .iter()
        .map(|part| {
            made = format!("{made}/{part}");
            made.clone()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::parents_of;

    #[test]
    fn files_go_under_tmp_or_workspace_with_their_parents() {
        assert_eq!(parents_of("/tmp/corral-job/main.py").unwrap(), ["/tmp/corral-job"]);
        assert_eq!(parents_of("/workspace/a/b/c.txt").unwrap(), ["/workspace/a", "/workspace/a/b"]);
        assert!(parents_of("/workspace/top.txt").unwrap().is_empty());
        for bad in ["/etc/passwd", "/tmp/../etc/x", "/tmp//x", "/tmp/a/./b", "/tmp/", "relative", "/workspace"] {
            assert!(parents_of(bad).is_err(), "{bad} accepted");
        }
    }
}
