//! The language registry over gRPC: `Languages.List` and `Exec.RunCode`.

use anyhow::{Context, ensure};
use corral_client::Client;
use corral_client::v1 as pb;
use tonic::Code;

use crate::expect_err;

fn code_request(id: &str, language: &str, code: &str) -> pb::RunCodeRequest {
    pb::RunCodeRequest {
        sandbox_id: id.to_owned(),
        language: language.to_owned(),
        code: code.to_owned(),
        ..Default::default()
    }
}

/// Languages.List reports what this machine's bubblewrap sandboxes run, with registry details.
pub async fn languages_list(c: &Client) -> anyhow::Result<()> {
    let langs = c.list_languages().await?;
    let names: Vec<&str> = langs.iter().map(|l| l.name.as_str()).collect();
    for want in ["python", "sh", "bash", "c"] {
        ensure!(names.contains(&want), "{want} missing from {names:?}");
    }
    let py = langs.iter().find(|l| l.name == "python").context("python")?;
    ensure!(py.aliases.iter().any(|a| a == "py"), "python aliases: {:?}", py.aliases);
    ensure!(py.file_name == "main.py" && py.extensions.contains(&"py".to_owned()), "{py:?}");
    ensure!(py.runtimes.contains(&(pb::Runtime::Bwrap as i32)), "python runtimes: {:?}", py.runtimes);
    Ok(())
}

/// RunCode runs python, sh and C (compiled, then run) with stdin, env and exit codes, and
/// cleans up its files.
pub async fn run_code(c: &Client) -> anyhow::Result<()> {
    let sb = c.create(Default::default()).await?;
    let id = sb.id.as_str();
    let mut py = code_request(id, "py", "import os, sys\nprint(os.environ['X'], sys.stdin.read())\nsys.exit(3)");
    py.env.insert("X".into(), "x1".into());
    py.stdin = b"from stdin".to_vec();
    let r = c.run_code(py).await?;
    ensure!(r.stdout == b"x1 from stdin\n" && r.exit_code == 3, "python: {r:?}");
    let r = c.run_code_in(id, "sh", "x=6; echo $((x * 7)); echo err >&2").await?;
    ensure!(r.stdout == b"42\n" && r.stderr == b"err\n" && r.exit_code == 0, "sh: {r:?}");
    let r = c.run_code_in(id, "bash", "a=(1 2 3); echo ${#a[@]}").await?;
    ensure!(r.stdout == b"3\n" && r.exit_code == 0, "bash: {r:?}");
    let prog = "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 6 * 7); return 5; }\n";
    let r = c.run_code_in(id, "c", prog).await?;
    ensure!(r.stdout == b"42\n" && r.exit_code == 5, "c: {r:?} {}", String::from_utf8_lossy(&r.stderr));
    let r = c.run_code_in(id, "c", "int main(void) { return undeclared; }").await?;
    ensure!(r.exit_code != 0 && String::from_utf8_lossy(&r.stderr).contains("undeclared"), "c error: {r:?}");
    let mut slow = code_request(id, "python", "import time; time.sleep(30)");
    slow.timeout_seconds = 0.5;
    let r = c.run_code(slow).await?;
    ensure!(r.timed_out, "python timeout: {r:?}");
    let left = c.list_files(id, "/tmp/corral-code").await?;
    ensure!(left.is_empty(), "snippet files left behind: {left:?}");
    c.destroy(id).await?;
    Ok(())
}

/// Unknown languages, oversize and empty code are INVALID_ARGUMENT naming the field.
pub async fn run_code_errors(c: &Client) -> anyhow::Result<()> {
    let sb = c.create(Default::default()).await?;
    let id = sb.id.as_str();
    let r = c.run_code_in(id, "cobol", "DISPLAY 'HI'").await;
    expect_err(r, Code::InvalidArgument, "language: unknown language \"cobol\"; available: python")?;
    let r = c.run_code_in(id, "COBOL", "x").await;
    expect_err(r, Code::InvalidArgument, "sh")?;
    let huge = "#".repeat(512 * 1024 + 1);
    expect_err(c.run_code_in(id, "python", &huge).await, Code::InvalidArgument, "code: ")?;
    expect_err(c.run_code_in(id, "python", "").await, Code::InvalidArgument, "code: is required")?;
    let r = c.run_code_in("sb-nope", "python", "print(1)").await;
    expect_err(r, Code::InvalidArgument, "sandbox_id")?;
    c.destroy(id).await?;
    expect_err(c.run_code_in(id, "python", "print(1)").await, Code::FailedPrecondition, "not RUNNING")?;
    Ok(())
}

/// Docker images are probed for their languages: `corral/python` runs python, `corral/base`
/// (no python) refuses it naming what the image has.
pub async fn docker_run_code(c: &Client) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let langs = c.list_languages().await?;
        let docker = pb::Runtime::Docker as i32;
        if langs.iter().any(|l| l.name == "python" && l.runtimes.contains(&docker)) {
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "no Docker image offers python: {langs:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let create = |image: &str| pb::CreateSandboxRequest {
        runtime: pb::Runtime::Docker as i32,
        image: image.to_owned(),
        ..Default::default()
    };
    let py = c.create(create("corral/python")).await?;
    // Another image (e.g. an intermediate one) may have been probed first: wait for this one's.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let r = loop {
        match c.run_code_in(&py.id, "python", "import os; print(os.getuid() * 2)").await {
            Err(e) if e.to_string().contains("available there: none") && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            r => break r?,
        }
    };
    ensure!(r.stdout == b"2000\n" && r.exit_code == 0, "docker python: {r:?}");
    let r = c.run_code_in(&py.id, "sh", "echo $((6 * 7))").await?;
    ensure!(r.stdout == b"42\n", "docker sh: {r:?}");
    c.destroy(&py.id).await?;
    let base = c.create(create("corral/base")).await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        // corral/base may be probed a little after corral/python.
        let r = c.run_code_in(&base.id, "python", "print(1)").await;
        match r {
            Err(e) if e.to_string().contains("available there: none") && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            r => {
                expect_err(r, Code::InvalidArgument, "python is not available to image corral/base:latest")?;
                break;
            }
        }
    }
    let r = c.run_code_in(&base.id, "python", "print(1)").await;
    expect_err(r, Code::InvalidArgument, "available there: bash, sh")?;
    c.destroy(&base.id).await?;
    Ok(())
}
