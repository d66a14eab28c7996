//! End-to-end scenarios over gRPC, written once and run against `corral dev` (`tests/dev.rs`)
//! and against a real cluster of separate processes (`tests/cluster.rs`).

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use corral_client::Client;
use corral_client::v1 as pb;
use corral_client::v1::exec_event::Event;
use futures::StreamExt;
use tonic::Code;

pub use corral_testkit::corral::{Cluster, DevServer};

pub mod codebases;
mod disk;
pub mod faults;
pub mod jobs;
pub mod uploads;

pub use codebases::{
    codebase_bad_rules, codebase_fs_crash, codebase_limits, codebase_one_copy, codebase_permission_matrix,
    codebase_sandbox, codebase_store,
};
pub use disk::disk_quota;

/// The tails of a cluster's logs (coordinator, then each agent), printed when a test fails.
pub fn cluster_logs(c: &Cluster) -> String {
    let mut s = format!("--- coordinator:\n{}", c.coordinator.log_tail(6000));
    for a in &c.agents {
        s += &format!("\n--- {}:\n{}", a.name, a.log_tail(4000));
    }
    s
}
mod lang;
mod procs;
pub use lang::{docker_run_code, languages_list, run_code, run_code_errors};
pub use procs::{background_processes, process_and_session_errors, sessions};

/// Runs `body` with a client of `cluster`, printing the cluster's logs if it fails.
pub async fn on<F, Fut>(cluster: Cluster, body: F) -> anyhow::Result<()>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let client = ready_client(&cluster.endpoint).await?;
    let result = body(client).await;
    if result.is_err() {
        eprintln!("{}", cluster_logs(&cluster));
    }
    result
}

/// Connects and waits until the server can place a sandbox (agents registered).
pub async fn ready_client(endpoint: &str) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let c = Client::connect(endpoint).await?;
            let s = c.create(Default::default()).await?;
            c.destroy(&s.id).await?;
            anyhow::Ok(c)
        };
        match attempt.await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => return Err(e.context("server never became ready")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn code_of(e: &corral_client::ClientError) -> Option<(Code, String)> {
    match e {
        corral_client::ClientError::Status(s) => Some((s.code(), s.message().to_owned())),
        _ => None,
    }
}

/// Asserts `r` failed with `code` and a message mentioning `needle`.
pub fn expect_err<T: std::fmt::Debug>(r: corral_client::Result<T>, code: Code, needle: &str) -> anyhow::Result<()> {
    match r {
        Ok(v) => bail!("expected {code:?} mentioning {needle:?}, got Ok({v:?})"),
        Err(e) => {
            let (got, msg) = code_of(&e).with_context(|| format!("not a gRPC status: {e}"))?;
            ensure!(got == code, "expected {code:?}, got {got:?}: {msg}");
            ensure!(msg.contains(needle), "message {msg:?} does not mention {needle:?}");
            Ok(())
        }
    }
}

pub fn state(s: &pb::Sandbox) -> pb::SandboxState {
    pb::SandboxState::try_from(s.state).unwrap_or(pb::SandboxState::Unspecified)
}

pub async fn wait_state(c: &Client, id: &str, want: pb::SandboxState, within: Duration) -> anyhow::Result<pb::Sandbox> {
    let deadline = Instant::now() + within;
    loop {
        let s = c.get(id).await?;
        if state(&s) == want {
            return Ok(s);
        }
        ensure!(Instant::now() < deadline, "sandbox {id} is {:?}, not {want:?}, after {within:?}", state(&s));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn shell(id: &str, cmd: &str) -> pb::ExecRequest {
    pb::ExecRequest { sandbox_id: id.to_owned(), shell: cmd.to_owned(), ..Default::default() }
}

/// Create, get, get by name, list with label filter and pagination, destroy.
pub async fn lifecycle(c: &Client) -> anyhow::Result<()> {
    let tag = format!("t{:x}", rand_u32());
    let mut ids = Vec::new();
    for i in 0..5 {
        let req = pb::CreateSandboxRequest {
            labels: [("suite".to_owned(), tag.clone())].into(),
            name: if i == 0 { format!("named-{tag}") } else { String::new() },
            ..Default::default()
        };
        let s = c.create(req).await?;
        ensure!(state(&s) == pb::SandboxState::Running, "created sandbox is {:?}", state(&s));
        ensure!(!s.node_id.is_empty() && s.started_at_ms > 0 && s.expires_at_ms > s.created_at_ms);
        ids.push(s.id);
    }
    ensure!(c.get(&ids[1]).await?.id == ids[1]);
    ensure!(c.get_by_name(&format!("named-{tag}")).await?.id == ids[0]);
    let dup = pb::CreateSandboxRequest { name: format!("named-{tag}"), ..Default::default() };
    expect_err(c.create(dup).await, Code::AlreadyExists, "named-")?;

    let mut seen = Vec::new();
    let mut req = pb::ListSandboxesRequest {
        labels: [("suite".to_owned(), tag.clone())].into(),
        page_size: 2,
        ..Default::default()
    };
    let mut pages = 0;
    loop {
        let page = c.list(req.clone()).await?;
        ensure!(page.sandboxes.len() <= 2, "page larger than page_size");
        seen.extend(page.sandboxes.into_iter().map(|s| s.id));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
    }
    let (mut a, mut b) = (seen.clone(), ids.clone());
    a.sort();
    b.sort();
    ensure!(a == b, "pagination returned {a:?}, created {b:?}");
    ensure!(pages >= 3, "5 items in pages of 2 took {pages} pages");

    for id in &ids {
        let s = c.destroy(id).await?;
        ensure!(state(&s) == pb::SandboxState::Stopped, "destroyed sandbox is {:?}", state(&s));
        ensure!(s.termination_reason.contains("destroyed"), "reason {:?}", s.termination_reason);
    }
    ensure!(state(&c.destroy(&ids[0]).await?) == pb::SandboxState::Stopped, "destroy is idempotent");
    expect_err(c.get_by_name(&format!("named-{tag}")).await, Code::NotFound, "named-")?;
    let running = pb::ListSandboxesRequest {
        labels: [("suite".to_owned(), tag)].into(),
        states: vec![pb::SandboxState::Running as i32],
        ..Default::default()
    };
    ensure!(c.list(running).await?.sandboxes.is_empty(), "destroyed sandboxes still listed as running");
    expect_err(c.run(shell(&ids[0], "true")).await, Code::FailedPrecondition, "STOPPED")?;
    Ok(())
}

/// argv and shell, env, cwd, stdin, exit codes, streaming order, timeouts.
pub async fn exec(c: &Client) -> anyhow::Result<()> {
    let req =
        pb::CreateSandboxRequest { env: [("FROM_SANDBOX".to_owned(), "s1".to_owned())].into(), ..Default::default() };
    let s = c.create(req).await?;
    let out = c.run_argv(&s.id, &["echo", "hello", "world"]).await?;
    ensure!(out.stdout == b"hello world\n" && out.exit_code == 0, "{out:?}");
    let out = c.run_shell(&s.id, "echo err >&2; exit 3").await?;
    ensure!(out.stderr == b"err\n" && out.exit_code == 3 && !out.timed_out, "{out:?}");
    let req = pb::ExecRequest {
        env: [("FROM_EXEC".to_owned(), "e1".to_owned())].into(),
        cwd: "/tmp".to_owned(),
        stdin: b"piped input".to_vec(),
        ..shell(&s.id, "echo $FROM_SANDBOX $FROM_EXEC $(pwd) $HOME; cat")
    };
    let out = c.run(req).await?;
    ensure!(out.stdout == b"s1 e1 /tmp /workspace\npiped input", "{:?}", String::from_utf8_lossy(&out.stdout));
    let env = c.run_argv(&s.id, &["env"]).await?;
    let env = String::from_utf8_lossy(&env.stdout);
    ensure!(
        !env.contains("CARGO") && !env.contains("CORRAL_") && !env.contains("PYENV"),
        "host environment leaked: {env}"
    );

    let mut stream =
        Box::pin(c.run_stream(shell(&s.id, "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done")).await?);
    let (mut so, mut se, mut exit) = (Vec::new(), Vec::new(), None);
    while let Some(ev) = stream.next().await {
        match ev? {
            Event::Stdout(d) => so.extend(d),
            Event::Stderr(d) => se.extend(d),
            Event::Exit(x) => exit = Some(x),
            Event::DroppedBytes(n) => bail!("RunStream never drops output, got dropped_bytes={n}"),
        }
    }
    ensure!(so == b"out1\nout2\nout3\nout4\nout5\n" && se == b"err1\nerr2\nerr3\nerr4\nerr5\n", "stream order");
    ensure!(exit.is_some_and(|x| x.exit_code == 0), "stream ends with an exit event");

    let t = Instant::now();
    let out = c.run(pb::ExecRequest { timeout_seconds: 0.5, ..shell(&s.id, "sleep 30 & sleep 30") }).await?;
    ensure!(out.timed_out && t.elapsed() < Duration::from_secs(10), "timeout: {out:?}");
    let ps = c.run_shell(&s.id, "ps -eo comm= 2>/dev/null || ls /proc | grep -c '^[0-9]'").await?;
    ensure!(!String::from_utf8_lossy(&ps.stdout).contains("sleep"), "timed-out tree left processes: {ps:?}");
    ensure!(c.run_argv(&s.id, &["true"]).await?.exit_code == 0, "sandbox usable after a timeout");
    c.destroy(&s.id).await?;
    Ok(())
}

/// A server started in the background by one exec answers a client in the next exec.
pub async fn background_server(c: &Client) -> anyhow::Result<()> {
    let s = c.create(Default::default()).await?;
    c.write_file(&s.id, "/workspace/index.html", b"corral-bg-ok".to_vec(), 0).await?;
    let start = c.run_shell(&s.id, "nohup python3 -m http.server 8765 --bind 127.0.0.1 >/tmp/http.log 2>&1 &").await?;
    ensure!(start.exit_code == 0, "{start:?}");
    let fetch = "import urllib.request,time\nfor i in range(100):\n  try:\n    print(urllib.request.urlopen('http://127.0.0.1:8765/index.html').read().decode()); break\n  except Exception: time.sleep(0.05)";
    let out = c.run_argv(&s.id, &["python3", "-c", fetch]).await?;
    ensure!(String::from_utf8_lossy(&out.stdout).contains("corral-bg-ok"), "background server unreachable: {out:?}");
    c.destroy(&s.id).await?;
    Ok(())
}

/// Write (with parents and mode), read, list, remove.
pub async fn files(c: &Client) -> anyhow::Result<()> {
    let s = c.create(Default::default()).await?;
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    ensure!(c.write_file(&s.id, "/workspace/a/b/big.bin", big.clone(), 0o600).await? == big.len() as i64);
    ensure!(c.read_file(&s.id, "/workspace/a/b/big.bin").await? == big, "3 MB round trip");
    c.write_file(&s.id, "notes.txt", b"relative".to_vec(), 0).await?;
    let cat = c.run_shell(&s.id, "cat /workspace/notes.txt; stat -c %a /workspace/a/b/big.bin").await?;
    ensure!(cat.stdout == b"relative600\n", "{:?}", String::from_utf8_lossy(&cat.stdout));
    let list = c.list_files(&s.id, "/workspace").await?;
    let a = list.iter().find(|e| e.name == "a").context("dir a listed")?;
    let n = list.iter().find(|e| e.name == "notes.txt").context("notes.txt listed")?;
    ensure!(a.is_dir && !n.is_dir && n.size == 8 && n.mtime_ms > 0, "{list:?}");
    expect_err(c.remove_file(&s.id, "/workspace/a", false).await, Code::FailedPrecondition, "not empty")?;
    ensure!(c.list_files(&s.id, "/workspace/a/b").await?.len() == 1, "a refused remove deleted something");
    c.remove_file(&s.id, "/workspace/a", true).await?;
    expect_err(c.read_file(&s.id, "/workspace/a/b/big.bin").await, Code::NotFound, "big.bin")?;
    c.destroy(&s.id).await?;
    Ok(())
}

/// Bad input gets a clear error naming the field and changes nothing.
pub async fn bad_input(c: &Client) -> anyhow::Result<()> {
    let before = c.list(Default::default()).await?.sandboxes.len();
    let bad = |f: fn(&mut pb::CreateSandboxRequest)| {
        let mut r = pb::CreateSandboxRequest::default();
        f(&mut r);
        r
    };
    expect_err(c.create(bad(|r| r.memory_mb = -1)).await, Code::InvalidArgument, "memory_mb")?;
    expect_err(c.create(bad(|r| r.cpus = -2.0)).await, Code::InvalidArgument, "cpus")?;
    expect_err(c.create(bad(|r| r.timeout_seconds = -5)).await, Code::InvalidArgument, "timeout_seconds")?;
    expect_err(c.create(bad(|r| r.workdir = "/etc".into())).await, Code::InvalidArgument, "workdir")?;
    expect_err(c.create(bad(|r| r.name = "Bad Name!".into())).await, Code::InvalidArgument, "name")?;
    expect_err(c.create(bad(|r| r.runtime = 99)).await, Code::InvalidArgument, "runtime")?;
    expect_err(c.create(bad(|r| _ = r.env.insert("1BAD".into(), "x".into()))).await, Code::InvalidArgument, "env")?;
    ensure!(c.list(Default::default()).await?.sandboxes.len() == before, "a refused create left a record");

    expect_err(c.get("sb-00000000000000000000000000000000").await, Code::NotFound, "not found")?;
    expect_err(c.get("nope").await, Code::InvalidArgument, "id")?;
    expect_err(c.run_argv("sb-00000000000000000000000000000000", &["true"]).await, Code::NotFound, "not found")?;
    expect_err(c.destroy("sb-00000000000000000000000000000000").await, Code::NotFound, "not found")?;

    let s = c.create(Default::default()).await?;
    let empty = pb::ExecRequest { sandbox_id: s.id.clone(), ..Default::default() };
    expect_err(c.run(empty).await, Code::InvalidArgument, "argv")?;
    expect_err(
        c.run(pb::ExecRequest { timeout_seconds: -1.0, ..shell(&s.id, "true") }).await,
        Code::InvalidArgument,
        "timeout_seconds",
    )?;
    expect_err(
        c.run(pb::ExecRequest { stdin: vec![0; 300_000], ..shell(&s.id, "true") }).await,
        Code::InvalidArgument,
        "stdin",
    )?;
    expect_err(
        c.run(pb::ExecRequest { cwd: "/etc".into(), ..shell(&s.id, "true") }).await,
        Code::InvalidArgument,
        "cwd",
    )?;
    expect_err(c.read_file(&s.id, "../etc/passwd").await, Code::InvalidArgument, "path")?;
    expect_err(c.read_file(&s.id, "/workspace/../../etc/passwd").await, Code::InvalidArgument, "path")?;
    let abs = c.read_file(&s.id, "/etc/passwd").await;
    ensure!(abs.is_err(), "absolute path outside the sandbox roots was served");
    expect_err(c.write_file(&s.id, "/etc/evil", b"x".to_vec(), 0).await, Code::InvalidArgument, "/etc/evil")?;
    expect_err(c.write_file(&s.id, "/workspace/x", b"x".to_vec(), 0o17777).await, Code::InvalidArgument, "mode")?;
    let oversize = vec![0u8; 65 * 1024 * 1024];
    expect_err(c.write_file(&s.id, "/workspace/huge", oversize, 0).await, Code::InvalidArgument, "data")?;

    let link = c
        .run_shell(&s.id, "ln -s /etc/shadow /workspace/evil && ln -s /etc /workspace/etc && mkfifo /workspace/fifo")
        .await?;
    ensure!(link.exit_code == 0, "{link:?}");
    expect_err(c.read_file(&s.id, "/workspace/evil").await, Code::PermissionDenied, "evil")?;
    expect_err(c.read_file(&s.id, "/workspace/etc/passwd").await, Code::PermissionDenied, "etc")?;
    expect_err(c.write_file(&s.id, "/workspace/etc/owned", b"x".to_vec(), 0).await, Code::PermissionDenied, "etc")?;
    ensure!(!std::path::Path::new("/etc/owned").exists(), "write escaped to the host");
    let fifo = tokio::time::timeout(Duration::from_secs(10), c.read_file(&s.id, "/workspace/fifo")).await;
    ensure!(matches!(fifo, Ok(Err(_))), "reading a FIFO must fail fast, got {fifo:?}");
    let ls = c.list_files(&s.id, "/workspace").await?;
    ensure!(!ls.iter().any(|e| e.name == "huge" || e.name == "x"), "a refused write left a file: {ls:?}");
    c.destroy(&s.id).await?;
    Ok(())
}

/// 200 MB of output comes back capped and flagged; the caller checks the agent's memory.
pub async fn huge_output(c: &Client) -> anyhow::Result<()> {
    let s = c.create(Default::default()).await?;
    let out = c.run(shell(&s.id, "head -c 200000000 /dev/zero; echo done >&2")).await?;
    ensure!(out.truncated, "200 MB output must be truncated");
    ensure!(out.stdout.len() <= 16 * 1024 * 1024 && !out.stdout.is_empty(), "kept {} bytes", out.stdout.len());
    ensure!(out.stderr == b"done\n" && out.exit_code == 0, "{:?} exit {}", out.stderr, out.exit_code);
    c.destroy(&s.id).await?;
    Ok(())
}

/// A sandbox past its TTL is destroyed and recorded EXPIRED.
pub async fn ttl_expiry(c: &Client) -> anyhow::Result<()> {
    let s = c.create(pb::CreateSandboxRequest { timeout_seconds: 1, ..Default::default() }).await?;
    let s = wait_state(c, &s.id, pb::SandboxState::Expired, Duration::from_secs(10)).await?;
    ensure!(s.ended_at_ms > 0 && s.termination_reason.contains("timeout"), "{s:?}");
    expect_err(c.run_argv(&s.id, &["true"]).await, Code::FailedPrecondition, "EXPIRED")?;
    Ok(())
}

/// SetTimeout extends a sandbox's lifetime past its original one, then a short one expires it;
/// bad values and ended sandboxes are refused.
pub async fn set_timeout(c: &Client) -> anyhow::Result<()> {
    let s = c.create(pb::CreateSandboxRequest { timeout_seconds: 2, ..Default::default() }).await?;
    let extended = c.set_timeout(&s.id, 600).await?;
    ensure!(extended.timeout_seconds == 600 && extended.expires_at_ms >= s.expires_at_ms + 590_000, "{extended:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(state(&c.get(&s.id).await?) == pb::SandboxState::Running, "the extension must outlive the first timeout");
    expect_err(c.set_timeout(&s.id, 0).await, Code::InvalidArgument, "timeout_seconds")?;
    expect_err(c.set_timeout(&s.id, 10_000_000).await, Code::InvalidArgument, "timeout_seconds")?;
    let missing = format!("sb-{:032x}", 7);
    expect_err(c.set_timeout(&missing, 60).await, Code::NotFound, "not found")?;
    c.set_timeout(&s.id, 1).await?;
    let s = wait_state(c, &s.id, pb::SandboxState::Expired, Duration::from_secs(10)).await?;
    ensure!(s.termination_reason.contains("timeout"), "{s:?}");
    expect_err(c.set_timeout(&s.id, 60).await, Code::FailedPrecondition, "EXPIRED")?;
    Ok(())
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.subsec_nanos() ^ std::process::id()
}

fn runtime_request(runtime: pb::Runtime, image: &str) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest { runtime: runtime as i32, image: image.to_owned(), ..Default::default() }
}

/// Pause freezes a sandbox (commands refused, a counter stops), Resume continues it.
pub async fn pause_resume(c: &Client, runtime: pb::Runtime) -> anyhow::Result<()> {
    let image = if runtime == pb::Runtime::Docker { "corral/base" } else { "" };
    let s = c.create(runtime_request(runtime, image)).await?;
    let start = "nohup sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/count; sleep 0.05; done' >/dev/null 2>&1 &";
    ensure!(c.run_shell(&s.id, start).await?.exit_code == 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused = c.pause(&s.id).await?;
    ensure!(state(&paused) == pb::SandboxState::Paused, "after pause: {:?}", state(&paused));
    ensure!(state(&c.pause(&s.id).await?) == pb::SandboxState::Paused, "pause is idempotent");
    expect_err(c.run_shell(&s.id, "true").await, Code::FailedPrecondition, "PAUSED")?;
    expect_err(c.read_file(&s.id, "/tmp/count").await, Code::FailedPrecondition, "PAUSED")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resumed = c.resume(&s.id).await?;
    ensure!(state(&resumed) == pb::SandboxState::Running, "after resume: {:?}", state(&resumed));
    let read = |o: pb::ExecResponse| String::from_utf8_lossy(&o.stdout).trim().parse::<u64>().unwrap_or(0);
    // The counter file is replaced atomically, so a read never sees it half written.
    let first = read(c.run_shell(&s.id, "cat /tmp/count").await?);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut second = first;
    while second <= first && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        second = read(c.run_shell(&s.id, "cat /tmp/count").await?);
    }
    ensure!(first > 0 && second > first, "the counter must advance after resume: {first} then {second}");
    ensure!(state(&c.resume(&s.id).await?) == pb::SandboxState::Running, "resume is idempotent");
    c.destroy(&s.id).await?;
    expect_err(c.pause(&s.id).await, Code::FailedPrecondition, "STOPPED")?;
    Ok(())
}

/// A Docker sandbox from a locally built image: exec, files, isolation; bad images are refused.
pub async fn docker_sandbox(c: &Client) -> anyhow::Result<()> {
    let s = c.create(runtime_request(pb::Runtime::Docker, "corral/python")).await?;
    ensure!(s.image == "corral/python:latest" && s.runtime == pb::Runtime::Docker as i32, "{s:?}");
    let out = c
        .run_argv(&s.id, &["python3", "-c", "import os; print(os.getuid(), sorted(os.listdir('/sys/class/net')))"])
        .await?;
    ensure!(
        out.stdout == b"1000 ['lo']\n",
        "{:?} {:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    c.write_file(&s.id, "/workspace/x/hello.txt", b"from the host".to_vec(), 0).await?;
    ensure!(c.run_shell(&s.id, "cat /workspace/x/hello.txt").await?.stdout == b"from the host");
    ensure!(c.read_file(&s.id, "/workspace/x/hello.txt").await? == b"from the host");
    let status =
        c.run_shell(&s.id, "grep -E 'CapEff|NoNewPrivs' /proc/self/status; touch /usr/x 2>&1 || echo ro").await?;
    let text = String::from_utf8_lossy(&status.stdout);
    ensure!(
        text.contains("CapEff:\t0000000000000000") && text.contains("NoNewPrivs:\t1") && text.contains("ro"),
        "{text}"
    );
    ensure!(c.run_shell(&s.id, "ln -s /etc/shadow /workspace/evil").await?.exit_code == 0);
    expect_err(c.read_file(&s.id, "/workspace/evil").await, Code::PermissionDenied, "evil")?;
    c.destroy(&s.id).await?;

    expect_err(
        c.create(runtime_request(pb::Runtime::Docker, "corral/nope")).await,
        Code::FailedPrecondition,
        "corral/nope:latest",
    )?;
    expect_err(
        c.create(runtime_request(pb::Runtime::Docker, "corral/nope")).await,
        Code::FailedPrecondition,
        "corral/base:latest",
    )?;
    expect_err(c.create(runtime_request(pb::Runtime::Bwrap, "corral/base")).await, Code::InvalidArgument, "image")?;
    expect_err(c.create(runtime_request(pb::Runtime::Docker, "Bad Image!")).await, Code::InvalidArgument, "image")?;
    Ok(())
}

/// A Create whose caller gives up (a 2 ms deadline on a sandbox that cannot come from the warm
/// pool) leaves nothing running: the server ends what it started, with the reason.
pub async fn abandoned_create(c: &Client) -> anyhow::Result<()> {
    let label = format!("abandon-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos());
    let labels: std::collections::HashMap<String, String> = [("test".to_owned(), label)].into();
    let mut cut_short = 0;
    for _ in 0..5 {
        let body = pb::CreateSandboxRequest { internet_access: true, labels: labels.clone(), ..Default::default() };
        let mut req = tonic::Request::new(body);
        req.set_timeout(Duration::from_millis(2));
        match c.sandboxes.clone().create(req).await {
            Err(_) => cut_short += 1,
            Ok(r) => {
                let id = r.into_inner().sandbox.map(|s| s.id).unwrap_or_default();
                c.destroy(&id).await?;
            }
        }
    }
    ensure!(cut_short > 0, "no create was cut short by a 2 ms deadline");
    let live = vec![pb::SandboxState::Scheduled as i32, pb::SandboxState::Running as i32];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = pb::ListSandboxesRequest { labels: labels.clone(), states: live.clone(), ..Default::default() };
        let left = c.list(req).await?.sandboxes;
        if left.is_empty() {
            break;
        }
        let ids: Vec<_> = left.iter().map(|s| (s.id.clone(), s.state)).collect();
        ensure!(Instant::now() < deadline, "sandboxes of abandoned creates still live: {ids:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = c.list(pb::ListSandboxesRequest { labels, ..Default::default() }).await?.sandboxes;
    let abandoned = all.iter().filter(|s| s.termination_reason.contains("abandoned")).count();
    ensure!(abandoned > 0, "no record says its create was abandoned: {all:?}");
    Ok(())
}
