//! The `corral` binary itself: help, the layered configuration, and exit codes of `exec`/`run`.

use std::process::Command;

use anyhow::ensure;
use corral_e2e::*;
use corral_testkit::corral::corral_binary;

fn corral(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(corral_binary()?).args(args).env_remove("CORRAL_ENDPOINT").output()?)
}

#[test]
fn help_lists_the_commands() -> anyhow::Result<()> {
    let out = corral(&["--help"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in "dev coordinator agent sandbox exec run files process languages job batch codebase demo".split(' ') {
        ensure!(text.contains(cmd), "--help does not mention {cmd}: {text}");
    }
    ensure!(out.status.success());
    Ok(())
}

#[test]
fn dump_config_shows_every_layer() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("corral.toml");
    std::fs::write(&file, "[agent]\nmax_sandboxes = 7\nnode_id = \"from-file\"\n[coordinator]\ndefault_cpus = 2.0\n")?;
    let out = Command::new(corral_binary()?)
        .args(["--config", file.to_str().unwrap_or_default(), "agent", "--node-id", "from-flag", "--dump-config"])
        .env("CORRAL_COORDINATOR__DEFAULT_CPUS", "3.0")
        .env("CORRAL_STORE__ENDPOINTS", "[http://10.0.0.1:2379]")
        .output()?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["agent"]["max_sandboxes"] == 7, "file layer: {v}");
    ensure!(v["agent"]["node_id"] == "from-flag", "flag beats file: {v}");
    ensure!(v["coordinator"]["default_cpus"] == 3.0, "env beats file: {v}");
    ensure!(v["store"]["endpoints"][0] == "http://10.0.0.1:2379", "env list: {v}");

    let bad = Command::new(corral_binary()?)
        .args(["--dump-config", "dev"])
        .env("CORRAL_AGENT__HEARTBEAT_SECONDS", "99")
        .output()?;
    ensure!(!bad.status.success(), "an invalid setting must be refused");
    ensure!(
        String::from_utf8_lossy(&bad.stderr).contains("heartbeat_seconds"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_and_exec_exit_with_the_command_status() -> anyhow::Result<()> {
    let server = DevServer::start()?;
    let client = ready_client(&server.endpoint).await?;
    let ep = server.endpoint.clone();
    let run = tokio::task::spawn_blocking(move || {
        corral(&["--endpoint", &ep, "run", "--", "sh", "-c", "echo out; echo err >&2; exit 7"])
    })
    .await??;
    ensure!(run.status.code() == Some(7), "run exit status {:?}", run.status);
    ensure!(run.stdout == b"out\n" && run.stderr == b"err\n", "{run:?}");

    let s = client.create(Default::default()).await?;
    let (ep, id) = (server.endpoint.clone(), s.id.clone());
    let exec = tokio::task::spawn_blocking(move || {
        corral(&["--endpoint", &ep, "exec", &id, "--timeout", "0.3", "--", "sleep", "5"])
    })
    .await??;
    ensure!(exec.status.code() == Some(124), "a timed-out command exits 124, got {:?}", exec.status);
    let (ep, id) = (server.endpoint.clone(), s.id.clone());
    let json = tokio::task::spawn_blocking(move || corral(&["--endpoint", &ep, "-o", "json", "sandbox", "get", &id]))
        .await??;
    let v: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    ensure!(v["state"] == "RUNNING" && v["id"] == s.id.as_str(), "{v}");
    let listed = client.list(Default::default()).await?;
    ensure!(
        listed.sandboxes.iter().all(|x| x.id == s.id || state(x) != corral_client::v1::SandboxState::Running),
        "run left a sandbox running"
    );
    Ok(())
}

/// `corral languages` (table and JSON) and the `--language` form of `exec` and `run`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn languages_and_run_code_commands() -> anyhow::Result<()> {
    let server = DevServer::start()?;
    let client = ready_client(&server.endpoint).await?;
    let ep = server.endpoint.clone();
    let table = tokio::task::spawn_blocking(move || corral(&["--endpoint", &ep, "languages"])).await??;
    let text = String::from_utf8_lossy(&table.stdout);
    ensure!(table.status.success() && text.contains("python") && text.contains("main.py"), "{table:?}");
    let ep = server.endpoint.clone();
    let json = tokio::task::spawn_blocking(move || corral(&["--endpoint", &ep, "-o", "json", "languages"])).await??;
    let v: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    let sh = v.as_array().and_then(|a| a.iter().find(|l| l["name"] == "sh")).cloned().unwrap_or_default();
    ensure!(sh["runtimes"][0] == "bwrap" && sh["file_name"] == "main.sh", "{v}");

    let s = client.create(Default::default()).await?;
    let (ep, id) = (server.endpoint.clone(), s.id.clone());
    let exec = tokio::task::spawn_blocking(move || {
        corral(&["--endpoint", &ep, "exec", "--language", "py", &id, "--", "print(6 * 7); exit(4)"])
    })
    .await??;
    ensure!(exec.status.code() == Some(4) && exec.stdout == b"42\n", "{exec:?}");
    let ep = server.endpoint.clone();
    let run = tokio::task::spawn_blocking(move || {
        corral(&["--endpoint", &ep, "-o", "json", "run", "--language", "sh", "--", "echo", "hi"])
    })
    .await??;
    let v: serde_json::Value = serde_json::from_slice(&run.stdout)?;
    ensure!(run.status.success() && v["stdout"] == "hi\n" && v["exit_code"] == 0, "{run:?}");
    client.destroy(&s.id).await?;
    Ok(())
}

/// `corral process start|list|signal|logs` and `corral sandbox set-timeout` against corral dev.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_commands_and_set_timeout() -> anyhow::Result<()> {
    let server = DevServer::start()?;
    let client = ready_client(&server.endpoint).await?;
    let s = client.create(Default::default()).await?;
    let cli = |args: Vec<String>| {
        let mut full = vec!["--endpoint".to_owned(), server.endpoint.clone()];
        full.extend(args);
        tokio::task::spawn_blocking(move || corral(&full.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let words = |w: &[&str]| w.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let script = "trap 'echo stopping; exit 4' TERM; echo started; while :; do sleep 0.05; done";
    let start = cli(words(&["process", "start", &s.id, "--shell", "--", script])).await??;
    ensure!(start.status.success(), "{start:?}");
    let pid = String::from_utf8_lossy(&start.stdout).trim().to_owned();
    ensure!(pid == "1", "first pid: {pid:?}");
    let list = cli(words(&["process", "list", &s.id])).await??;
    let text = String::from_utf8_lossy(&list.stdout);
    ensure!(text.contains("running") && text.contains("trap"), "{text}");
    // Let the trap be installed before the signal arrives.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let sig = cli(words(&["process", "signal", &s.id, &pid, "TERM"])).await??;
    ensure!(sig.status.success(), "{sig:?}");
    let logs = cli(words(&["process", "logs", &s.id, &pid])).await??;
    ensure!(logs.status.code() == Some(4), "logs exits with the process's code: {logs:?}");
    ensure!(logs.stdout == b"started\nstopping\n", "{:?}", String::from_utf8_lossy(&logs.stdout));
    let bad = cli(words(&["process", "signal", &s.id, &pid, "NOPE"])).await??;
    ensure!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("NOPE"), "{bad:?}");
    let json = cli(words(&["-o", "json", "sandbox", "set-timeout", &s.id, "900"])).await??;
    let v: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    ensure!(v["timeout_seconds"] == 900, "{v}");
    client.destroy(&s.id).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() -> anyhow::Result<()> {
    let server = DevServer::start()?;
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint.clone())?.connect().await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let req = tonic_health::pb::HealthCheckRequest { service: "corral.v1.Sandboxes".into() };
    let status = health.check(req).await?.into_inner().status;
    ensure!(status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "status {status}");
    let mut reflection = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);
    let ask = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = reflection.server_reflection_info(futures::stream::iter([ask])).await?.into_inner();
    let first = answers.message().await?.ok_or_else(|| anyhow::anyhow!("no reflection answer"))?;
    let listed = format!("{first:?}");
    for svc in ["corral.v1.Sandboxes", "corral.v1.Exec", "corral.v1.Files"] {
        ensure!(listed.contains(svc), "reflection does not list {svc}: {listed}");
    }
    Ok(())
}

/// `corral codebase create --from DIR`, `ls`, `download`, `presets`, `sandbox create --codebase
/// --preset --rule`, `sandbox diff` and `codebase rm` (refused while in use).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codebase_commands() -> anyhow::Result<()> {
    let server = DevServer::start()?;
    let _client = ready_client(&server.endpoint).await?;
    let repo = tempfile::tempdir()?;
    corral_e2e::codebases::fixture_repo(repo.path())?;
    let ep = server.endpoint.clone();
    let cli = move |args: Vec<String>| {
        let ep = ep.clone();
        tokio::task::spawn_blocking(move || {
            let mut all = vec!["--endpoint".to_owned(), ep];
            all.extend(args);
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            corral(&refs)
        })
    };
    let args = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
    let mut create = args("-o json codebase create repo --from");
    create.push(repo.path().display().to_string());
    let out = cli(create).await??;
    ensure!(out.status.success(), "{out:?}");
    let cb: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let id = cb["id"].as_str().unwrap_or_default().to_owned();
    ensure!(id.starts_with("cb-") && cb["file_count"].as_i64() > Some(3), "{cb}");

    let ls = cli(args(&format!("codebase ls {id}"))).await??;
    let text = String::from_utf8_lossy(&ls.stdout);
    ensure!(text.contains("src/main.py") && !text.contains(".env"), "{text}");
    let got = cli(args(&format!("codebase download {id} src/main.py"))).await??;
    ensure!(got.stdout == b"print('hello')\n", "{got:?}");
    let presets = cli(args("codebase presets")).await??;
    ensure!(String::from_utf8_lossy(&presets.stdout).contains("agent-safe:"), "{presets:?}");

    let sb = cli(args(&format!("-o json sandbox create --codebase {id} --preset agent-safe --rule docs/**=write")))
        .await??;
    ensure!(sb.status.success(), "{sb:?}");
    let sb: serde_json::Value = serde_json::from_slice(&sb.stdout)?;
    let sid = sb["id"].as_str().unwrap_or_default().to_owned();
    ensure!(sb["codebase_id"] == id.as_str() && sb["preset"] == "agent-safe", "{sb}");
    let w =
        cli(vec!["exec".into(), sid.clone(), "--".into(), "sh".into(), "-c".into(), "echo x >> docs/guide.md".into()])
            .await??;
    ensure!(w.status.success(), "{w:?}");
    let diff = cli(args(&format!("sandbox diff {sid}"))).await??;
    ensure!(String::from_utf8_lossy(&diff.stdout).contains("M  docs/guide.md"), "{diff:?}");
    let bad = cli(args(&format!("sandbox create --codebase {id} --rule docs/**=writ"))).await??;
    ensure!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("permission \"writ\""), "{bad:?}");

    let rm = cli(args(&format!("codebase rm {id}"))).await??;
    ensure!(!rm.status.success() && String::from_utf8_lossy(&rm.stderr).contains("used by 1"), "{rm:?}");
    cli(args(&format!("sandbox destroy {sid}"))).await??;
    let rm = cli(args(&format!("codebase rm {id}"))).await??;
    ensure!(rm.status.success(), "{rm:?}");
    Ok(())
}
