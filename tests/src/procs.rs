//! Background processes and shell sessions over gRPC.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use corral_client::Client;
use corral_client::v1 as pb;
use corral_client::v1::exec_event::Event;
use futures::StreamExt;
use tonic::Code;

use crate::expect_err;

/// What a follower saw: stdout, stderr, dropped byte count, and the exit.
#[derive(Debug, Default)]
struct Followed {
    stdout: String,
    stderr: String,
    dropped: u64,
    exit: Option<pb::ExecExit>,
}

/// Follows a process until stdout contains `until` (or it exits when `until` is None).
async fn follow_until(c: &Client, id: &str, pid: u32, until: Option<&str>) -> anyhow::Result<Followed> {
    let mut stream = Box::pin(c.follow_output(id, pid).await?);
    let mut seen = Followed::default();
    let read = async {
        while let Some(ev) = stream.next().await {
            match ev? {
                Event::Stdout(d) => seen.stdout.push_str(&String::from_utf8_lossy(&d)),
                Event::Stderr(d) => seen.stderr.push_str(&String::from_utf8_lossy(&d)),
                Event::DroppedBytes(n) => seen.dropped += n,
                Event::Exit(x) => {
                    seen.exit = Some(x);
                    ensure!(stream.next().await.is_none(), "events after the exit");
                    return Ok(());
                }
            }
            if until.is_some_and(|u| seen.stdout.contains(u)) {
                return Ok(());
            }
        }
        bail!("the follow stream ended without an exit event")
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.context("follow timed out")??;
    Ok(seen)
}

fn process(list: &[pb::ProcessInfo], pid: u32) -> anyhow::Result<&pb::ProcessInfo> {
    list.iter().find(|p| p.pid == pid).with_context(|| format!("pid {pid} not listed in {list:?}"))
}

/// Start a background process, follow its output (buffered, then live), signal it, and see it
/// listed as exited with the code its trap chose; a second follower after the exit gets the
/// buffered output and the same exit; kill stops another; processes outlive the exec timeout.
pub async fn background_processes(c: &Client) -> anyhow::Result<()> {
    let s = c.create(Default::default()).await?;
    let script = "trap 'echo got-term; exit 3' TERM; echo early; echo warn >&2; echo ready; \
                  while :; do sleep 0.05; done";
    let pid = c.start_process_shell(&s.id, script).await?;
    ensure!(pid >= 1, "pid {pid}");
    let seen = follow_until(c, &s.id, pid, Some("ready")).await?;
    ensure!(seen.stdout.starts_with("early\n") && seen.exit.is_none(), "{seen:?}");
    let listed = c.list_processes(&s.id).await?;
    let p = process(&listed, pid)?;
    ensure!(p.status == pb::ProcessStatus::Running as i32 && p.command == script && p.exit.is_none(), "{p:?}");

    let mut live = Box::pin(c.follow_output(&s.id, pid).await?);
    c.send_signal(&s.id, pid, libc_sigterm()).await?;
    let (mut out, mut exit) = (String::new(), None);
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(20), live.next()).await? {
        match ev? {
            Event::Stdout(d) => out.push_str(&String::from_utf8_lossy(&d)),
            Event::Exit(x) => exit = Some(x),
            Event::Stderr(_) | Event::DroppedBytes(_) => {}
        }
    }
    let exit = exit.context("live follower got no exit")?;
    ensure!(out.contains("got-term") && exit.exit_code == 3, "{out:?} {exit:?}");
    let listed = c.list_processes(&s.id).await?;
    let p = process(&listed, pid)?;
    ensure!(p.status == pb::ProcessStatus::Exited as i32, "{p:?}");
    ensure!(p.exit.as_ref().is_some_and(|x| x.exit_code == 3) && p.ended_at_ms >= p.started_at_ms, "{p:?}");
    let after = follow_until(c, &s.id, pid, None).await?;
    // (the shell may add a "Terminated" line for the sleep the signal also hit)
    ensure!(after.stdout == "early\nready\ngot-term\n" && after.stderr.starts_with("warn\n"), "{after:?}");
    ensure!(after.exit.is_some_and(|x| x.exit_code == 3), "{after:?}");
    expect_err(c.send_signal(&s.id, pid, libc_sigterm()).await, Code::FailedPrecondition, "exited")?;

    let sleeper = c.start_process(pb::StartProcessRequest {
        sandbox_id: s.id.clone(),
        argv: vec!["sleep".into(), "600".into()],
        cwd: "/tmp".into(),
        ..Default::default()
    });
    let sleeper = sleeper.await?;
    ensure!(sleeper > pid, "pids are never reused: {sleeper} after {pid}");
    let short = pb::ExecRequest { timeout_seconds: 0.3, ..crate::shell(&s.id, "sleep 5") };
    ensure!(c.run(short).await?.timed_out, "the exec timeout still applies to execs");
    let listed = c.list_processes(&s.id).await?;
    ensure!(process(&listed, sleeper)?.status == pb::ProcessStatus::Running as i32, "the exec timeout hit a process");
    c.kill_process(&s.id, sleeper).await?;
    let killed = follow_until(c, &s.id, sleeper, None).await?;
    ensure!(killed.exit.is_some_and(|x| x.signal == 9), "{killed:?}");
    c.kill_process(&s.id, sleeper).await?;
    c.destroy(&s.id).await?;
    Ok(())
}

fn libc_sigterm() -> i32 {
    15
}

/// `cd` and `export` persist within a session; two sessions of one sandbox do not see each
/// other's state and run at the same time; closing frees the session.
pub async fn sessions(c: &Client) -> anyhow::Result<()> {
    let s = c.create(Default::default()).await?;
    let open = |cwd: &str| pb::OpenSessionRequest {
        sandbox_id: s.id.clone(),
        cwd: cwd.to_owned(),
        env: [("START".to_owned(), "one".to_owned())].into(),
    };
    let a = c.open_session(open("")).await?;
    let b = c.open_session(open("/tmp")).await?;
    ensure!(a != b && a.starts_with("ss-"), "{a} {b}");
    ensure!(c.session_exec(&a, "mkdir -p /workspace/sub && cd /workspace/sub && export FOO=bar").await?.exit_code == 0);
    let pwd = c.session_exec(&a, "pwd; echo $FOO $START").await?;
    ensure!(pwd.stdout == b"/workspace/sub\nbar one\n", "{:?}", String::from_utf8_lossy(&pwd.stdout));
    let other = c.session_exec(&b, "pwd; echo ${FOO:-unset}").await?;
    ensure!(other.stdout == b"/tmp\nunset\n", "{:?}", String::from_utf8_lossy(&other.stdout));
    let code = c.session_exec(&a, "unset START; cd ..; false").await?;
    ensure!(code.exit_code == 1, "{code:?}");
    let state = c.session_exec(&a, "pwd; echo ${START:-gone}; exit 7").await?;
    ensure!(state.stdout == b"/workspace\ngone\n" && state.exit_code == 7, "{state:?}");

    let (slow_a, slow_b) = tokio::join!(c.session_exec(&a, "sleep 1; echo a"), c.session_exec(&b, "sleep 1; echo b"));
    ensure!(slow_a?.stdout == b"a\n" && slow_b?.stdout == b"b\n", "concurrent sessions");
    let plain = c.run_shell(&s.id, "pwd; echo ${FOO:-unset}").await?;
    ensure!(plain.stdout == b"/workspace\nunset\n", "sessions leak into plain execs: {plain:?}");

    c.close_session(&a).await?;
    expect_err(c.session_exec(&a, "true").await, Code::NotFound, "session")?;
    expect_err(c.close_session(&a).await, Code::NotFound, "session")?;
    ensure!(c.session_exec(&b, "true").await?.exit_code == 0, "closing one session closed another");
    c.destroy(&s.id).await?;
    expect_err(c.session_exec(&b, "true").await, Code::FailedPrecondition, "STOPPED")?;
    Ok(())
}

/// Unknown pids and sessions are NOT_FOUND; bad signals, pids and ids are INVALID_ARGUMENT
/// naming the field; the per-sandbox limits answer with the limit.
pub async fn process_and_session_errors(c: &Client) -> anyhow::Result<()> {
    let s = c.create(Default::default()).await?;
    expect_err(c.send_signal(&s.id, 4242, 15).await, Code::NotFound, "process 4242")?;
    expect_err(c.kill_process(&s.id, 4242).await, Code::NotFound, "process 4242")?;
    expect_err(c.follow_output(&s.id, 4242).await.map(|_| ()), Code::NotFound, "process 4242")?;
    let pid = c.start_process_shell(&s.id, "sleep 600").await?;
    expect_err(c.send_signal(&s.id, pid, 0).await, Code::InvalidArgument, "signal")?;
    expect_err(c.send_signal(&s.id, pid, 99).await, Code::InvalidArgument, "signal")?;
    expect_err(c.send_signal(&s.id, 0, 15).await, Code::InvalidArgument, "pid")?;
    let empty = pb::StartProcessRequest { sandbox_id: s.id.clone(), ..Default::default() };
    expect_err(c.start_process(empty).await, Code::InvalidArgument, "argv")?;
    let bad_cwd = pb::StartProcessRequest {
        cwd: "/etc".into(),
        shell: "true".into(),
        sandbox_id: s.id.clone(),
        ..Default::default()
    };
    expect_err(c.start_process(bad_cwd).await, Code::InvalidArgument, "cwd")?;
    let missing = format!("sb-{:032x}", 9);
    expect_err(c.list_processes(&missing).await, Code::NotFound, "not found")?;

    let unknown = format!("ss-{}-{:016x}", s.id.trim_start_matches("sb-"), 5);
    expect_err(c.session_exec(&unknown, "true").await, Code::NotFound, "session")?;
    expect_err(c.session_exec("ss-nope", "true").await, Code::InvalidArgument, "session_id")?;
    let open = pb::OpenSessionRequest { sandbox_id: s.id.clone(), cwd: "/etc".into(), ..Default::default() };
    expect_err(c.open_session(open).await, Code::InvalidArgument, "cwd")?;
    let sess = c.open_session(pb::OpenSessionRequest { sandbox_id: s.id.clone(), ..Default::default() }).await?;
    expect_err(c.session_exec(&sess, "").await, Code::InvalidArgument, "command")?;

    for _ in 1..16 {
        c.open_session(pb::OpenSessionRequest { sandbox_id: s.id.clone(), ..Default::default() }).await?;
    }
    let over = c.open_session(pb::OpenSessionRequest { sandbox_id: s.id.clone(), ..Default::default() }).await;
    expect_err(over, Code::ResourceExhausted, "16 open sessions")?;
    for _ in 1..32 {
        c.start_process_shell(&s.id, "sleep 600").await?;
    }
    expect_err(c.start_process_shell(&s.id, "sleep 600").await, Code::ResourceExhausted, "32 background processes")?;
    c.kill_process(&s.id, pid).await?;
    follow_until(c, &s.id, pid, None).await?;
    c.start_process_shell(&s.id, "true").await.context("an exited process makes room")?;
    c.destroy(&s.id).await?;
    Ok(())
}
