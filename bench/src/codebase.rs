//! Codebases: file operations through the permission layer (overlay + FUSE) next to the same
//! tree on a sandbox's own disk, in two sandboxes of one `corral dev` in one run; uploading a
//! 10,000-file repository (and again, deduplicated); create-to-ready on a codebase.
//!
//! Each file workload is a Python loop timed inside the sandbox (`time.perf_counter`), so exec
//! and process start-up are not counted; both sides run it in alternating rounds.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, ensure};
use corral_client::v1 as pb;
use corral_client::{Client, ScanOptions};
use corral_testkit::corral::DevServer;
use serde_json::{Value, json};

use crate::stats::Samples;

/// Small files in the tree, spread over directories.
const SMALL_FILES: usize = 2_000;
/// Modules of the Python package imported in one go.
const MODULES: usize = 200;
/// The large file read sequentially (MiB).
const LARGE_MB: usize = 64;
/// Files of the upload benchmark.
const UPLOAD_FILES: usize = 10_000;
const ROUNDS: usize = 5;

/// The workloads: (name, shell command printing seconds).
fn workloads() -> Vec<(&'static str, String)> {
    let py = |body: &str| {
        format!(
            "cd /workspace && python3 -c \"import time,os\nt=time.perf_counter()\n{body}\nprint(time.perf_counter()-t)\""
        )
    };
    vec![
        ("stat, 2,000 files ×5", py("for _ in range(5):\n  for d,_,fs in os.walk('tree'):\n    [os.stat(os.path.join(d,f)) for f in fs]")),
        ("open+read, 2,000 small files", py("for d,_,fs in os.walk('tree'):\n  for f in fs:\n    open(os.path.join(d,f),'rb').read()")),
        ("sequential read, 64 MiB", py("f=open('large.bin','rb')\nwhile f.read(1<<20): pass")),
        ("import a 200-module package", "cd /workspace && python3 -c \"import time,sys\nsys.path.insert(0,'.')\nt=time.perf_counter()\nimport pkg.all\nprint(time.perf_counter()-t)\" -B".to_owned()),
        (
            "git status",
            py("import subprocess\nsubprocess.run(['git','-c','safe.directory=*','status','--porcelain'],stdout=subprocess.DEVNULL,check=True)"),
        ),
    ]
}

fn make_tree(root: &Path) -> anyhow::Result<()> {
    for i in 0..SMALL_FILES {
        let dir = root.join(format!("tree/d{}/e{}", i % 20, i % 7));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("f{i}.txt")), format!("file {i}\n").repeat(20))?;
    }
    let pkg = root.join("pkg");
    std::fs::create_dir_all(&pkg)?;
    std::fs::write(pkg.join("__init__.py"), "")?;
    let mut all = String::new();
    for i in 0..MODULES {
        std::fs::write(pkg.join(format!("m{i}.py")), format!("def f{i}(x):\n    return x + {i}\nVALUE = {i}\n"))?;
        all += &format!("from . import m{i}\n");
    }
    std::fs::write(pkg.join("all.py"), all)?;
    let big: Vec<u8> = (0..LARGE_MB << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("large.bin"), big)?;
    let git = |args: &[&str]| std::process::Command::new("git").args(args).current_dir(root).output();
    git(&["init", "-q"])?;
    git(&["add", "-A"])?;
    git(&["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "tree"])?;
    Ok(())
}

async fn seconds(c: &Client, id: &str, cmd: &str) -> anyhow::Result<f64> {
    let r = c.run(pb::ExecRequest { sandbox_id: id.into(), shell: cmd.into(), ..Default::default() }).await?;
    let text = String::from_utf8_lossy(&r.stdout).trim().to_owned();
    text.parse::<f64>().with_context(|| format!("{cmd}: {text:?} {}", String::from_utf8_lossy(&r.stderr)))
}

pub async fn run() -> anyhow::Result<(String, Value)> {
    let dir = tempfile::tempdir()?;
    let tree = dir.path().join("repo");
    make_tree(&tree)?;
    eprintln!("[bench] codebase: starting corral dev");
    let dev = DevServer::start()?;
    let c = crate::latency::ready_client(&dev.endpoint).await?;

    let options = ScanOptions { include_ignored: true, ..Default::default() };
    let cb =
        c.codebases.clone().create(pb::CreateCodebaseRequest { name: "bench".into(), ..Default::default() }).await?;
    let cb = cb.into_inner().codebase.context("no codebase")?;
    let files = corral_client::scan(&tree, &options)?;
    c.upload_files(&cb.id, files, true, |_| {}).await?;
    let req = pb::CreateSandboxRequest {
        codebase_id: cb.id.clone(),
        preset: "full-access".into(),
        disk_mb: 2048,
        ..Default::default()
    };
    let layered = c.create(req).await?;
    // The same tree on a sandbox's own disk (a plain bind mount of its disk directory).
    let plain = c.create(pb::CreateSandboxRequest { disk_mb: 2048, ..Default::default() }).await?;
    copy_tree(&c, &plain.id, &tree).await?;

    let mut rows = Vec::new();
    for (name, cmd) in workloads() {
        let (mut via, mut bind) = (Vec::new(), Vec::new());
        seconds(&c, &layered.id, &cmd).await?;
        seconds(&c, &plain.id, &cmd).await?;
        for _ in 0..ROUNDS {
            via.push(seconds(&c, &layered.id, &cmd).await?);
            bind.push(seconds(&c, &plain.id, &cmd).await?);
        }
        let (v, b) = (median(&mut via), median(&mut bind));
        eprintln!("[bench] codebase: {name}: layer {v:.4} s, own disk {b:.4} s");
        rows.push((name, v, b));
    }

    eprintln!("[bench] codebase: uploading {UPLOAD_FILES} files twice");
    let repo = dir.path().join("big-repo");
    for i in 0..UPLOAD_FILES {
        let d = repo.join(format!("src/m{}", i % 100));
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join(format!("f{i}.py")), format!("# module {i}\nX = {i}\n"))?;
    }
    let t = Instant::now();
    let first = c.codebase_from_dir("big", &repo, &ScanOptions::default(), |_| {}).await?;
    let first_s = t.elapsed().as_secs_f64();
    let id = first.codebase.as_ref().context("no codebase")?.id.clone();
    let t = Instant::now();
    let files = corral_client::scan(&repo, &ScanOptions::default())?;
    let again = c.upload_files(&id, files, true, |_| {}).await?;
    let again_s = t.elapsed().as_secs_f64();
    ensure!(again.bytes_received == 0, "the second upload sent {} bytes", again.bytes_received);

    eprintln!("[bench] codebase: create-to-ready");
    // The first sandbox on the 10,000-file codebase fetches it into the node's cache.
    let t = Instant::now();
    let first_sb = c.create(pb::CreateSandboxRequest { codebase_id: id.clone(), ..Default::default() }).await?;
    let uncached_ms = t.elapsed().as_secs_f64() * 1e3;
    c.destroy(&first_sb.id).await?;
    let (mut pooled, mut cold, mut cb_ready) = (Samples::default(), Samples::default(), Samples::default());
    for _ in 0..20 {
        let t = Instant::now();
        let s = c.create(Default::default()).await?;
        pooled.push(t.elapsed());
        c.destroy(&s.id).await?;
        // Another disk size than the pool's: started cold, as every codebase sandbox is.
        let t = Instant::now();
        let s = c.create(pb::CreateSandboxRequest { disk_mb: 1000, ..Default::default() }).await?;
        cold.push(t.elapsed());
        c.destroy(&s.id).await?;
        let t = Instant::now();
        let s = c.create(pb::CreateSandboxRequest { codebase_id: id.clone(), ..Default::default() }).await?;
        cb_ready.push(t.elapsed());
        c.destroy(&s.id).await?;
    }
    for s in [&layered, &plain] {
        c.destroy(&s.id).await?;
    }

    let mut md = String::from(
        "| workload | through the permission layer (s) | same tree on the sandbox's disk (s) | speed vs own disk |\n|---|---|---|---|\n",
    );
    for (name, v, b) in &rows {
        md += &format!("| {name} | {v:.4} | {b:.4} | {:.2}× |\n", b / v);
    }
    md += &format!(
        "\nUpload of {UPLOAD_FILES} files: {first_s:.2} s; again (nothing new): {again_s:.2} s, {} bytes sent.\n\
         Create-to-ready p50 (20 each, interleaved): from the warm pool {:.2} ms; started cold {:.2} ms; cold on \
         the cached 10,000-file codebase {:.2} ms (p90 {:.2} ms); the first sandbox on it, fetching it into the \
         node's cache, {uncached_ms:.0} ms.\n",
        again.bytes_received,
        pooled.p50(),
        cold.p50(),
        cb_ready.p50(),
        cb_ready.percentile(90.0)
    );
    let value = json!({
        "workloads": rows.iter().map(|(n, v, b)| json!({"name": n, "layer_s": v, "own_disk_s": b, "speed_ratio": b / v})).collect::<Vec<_>>(),
        "upload_10k_s": first_s,
        "upload_again_s": again_s,
        "create_to_ready_pooled": pooled.to_json(),
        "create_to_ready_cold": cold.to_json(),
        "create_to_ready_first_on_uncached_ms": uncached_ms,
        "create_to_ready_codebase": cb_ready.to_json(),
    });
    Ok((md, value))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Writes `tree` into the sandbox's /workspace through the files API (once, untimed).
async fn copy_tree(c: &Client, id: &str, tree: &Path) -> anyhow::Result<()> {
    let files = corral_client::scan(tree, &ScanOptions { include_ignored: true, ..Default::default() })?;
    for f in files {
        let target = format!("/workspace/{}", f.path);
        match f.kind {
            pb::FileKind::Regular => {
                c.write_file(id, &target, std::fs::read(&f.local)?, f.mode).await?;
            }
            pb::FileKind::Symlink => {
                c.run(pb::ExecRequest {
                    sandbox_id: id.into(),
                    argv: vec!["ln".into(), "-s".into(), f.link_target, target],
                    ..Default::default()
                })
                .await?;
            }
            _ => {}
        }
    }
    Ok(())
}
