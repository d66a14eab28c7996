//! Codebases end to end: the store (upload hygiene, dedup, listing, download, delete) and
//! sandboxes on a codebase (rules and presets from inside, copy-on-write layers, diff), on both
//! runtimes; [`node`]: the permission matrix, a crashed file system server, one copy per node.

mod node;

pub use node::{codebase_fs_crash, codebase_one_copy, codebase_permission_matrix};

use std::path::Path;

use anyhow::{Context, ensure};
use corral_client::v1 as pb;
use corral_client::{Client, ScanOptions};
use tonic::Code;

use crate::{expect_err, shell};

/// A small repository: code, docs, secrets, ignored and default-ignored files, a symlink.
pub fn fixture_repo(root: &Path) -> anyhow::Result<()> {
    let files: &[(&str, &str)] = &[
        ("README.md", "# demo\n"),
        ("src/main.py", "print('hello')\n"),
        ("src/util/helpers.py", "X = 1\n"),
        ("docs/guide.md", "guide\n"),
        ("docs/.env", "DOCS_TOKEN=1\n"),
        ("notes.txt", "private notes\n"),
        (".env", "SECRET=1\n"),
        ("secrets/api.txt", "key\n"),
        ("config/secrets/db.txt", "pw\n"),
        ("id.key", "k\n"),
        ("build/out.o", "ignored\n"),
        (".gitignore", "build/\n"),
        (".git/config", "[core]\n"),
        ("node_modules/x/index.js", "1\n"),
    ];
    for (path, body) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().context("parent")?)?;
        std::fs::write(p, body)?;
    }
    std::fs::create_dir_all(root.join("output"))?;
    std::os::unix::fs::symlink("src/main.py", root.join("main-link.py"))?;
    Ok(())
}

pub(crate) async fn new_codebase(c: &Client, name: &str) -> anyhow::Result<pb::Codebase> {
    let req = pb::CreateCodebaseRequest { name: name.into(), ..Default::default() };
    c.codebases.clone().create(req).await?.into_inner().codebase.context("no codebase")
}

pub(crate) async fn upload_repo(
    c: &Client,
    id: &str,
    root: &Path,
    secrets: bool,
) -> anyhow::Result<pb::UploadResponse> {
    let options = ScanOptions { include_secrets: secrets, ..Default::default() };
    let files = corral_client::scan(root, &options)?;
    Ok(c.upload_files(id, files, true, |_| {}).await?)
}

async fn paths(c: &Client, id: &str) -> anyhow::Result<Vec<String>> {
    let req = pb::ListCodebaseFilesRequest { codebase_id: id.into(), page_size: 10_000, ..Default::default() };
    Ok(c.codebases.clone().list_files(req).await?.into_inner().files.into_iter().map(|f| f.path).collect())
}

/// One raw upload of `files` (for what the client itself refuses to send).
async fn raw_upload(
    c: &Client,
    id: &str,
    items: Vec<pb::upload_request::Item>,
) -> corral_client::Result<pb::UploadResponse> {
    let mut msgs = vec![pb::UploadRequest {
        item: Some(pb::upload_request::Item::Start(pb::UploadStart { codebase_id: id.into(), replace: false })),
    }];
    msgs.extend(items.into_iter().map(|i| pb::UploadRequest { item: Some(i) }));
    Ok(c.codebases.clone().upload(futures::stream::iter(msgs)).await?.into_inner())
}

fn file(path: &str, size: i64) -> pb::upload_request::Item {
    pb::upload_request::Item::File(pb::UploadFile { path: path.into(), size, mode: 0o644, ..Default::default() })
}

/// Upload hygiene, dedup, listing, download, delete.
pub async fn codebase_store(c: &Client) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    fixture_repo(dir.path())?;
    let cb = new_codebase(c, "store-test").await?;
    let first = upload_repo(c, &cb.id, dir.path(), false).await?;
    let listed = paths(c, &cb.id).await?;
    for want in
        ["README.md", "src/main.py", "src/util/helpers.py", "docs/guide.md", "output", "main-link.py", ".gitignore"]
    {
        ensure!(listed.iter().any(|p| p == want), "{want} missing from {listed:?}");
    }
    for gone in
        [".env", "docs/.env", "secrets/api.txt", "id.key", "build/out.o", ".git/config", "node_modules/x/index.js"]
    {
        ensure!(!listed.iter().any(|p| p == gone), "{gone} uploaded although ignored or secret: {listed:?}");
    }
    ensure!(first.bytes_received > 0, "first upload sent nothing");
    // The same tree again: nothing to send.
    let again = upload_repo(c, &cb.id, dir.path(), false).await?;
    ensure!(again.bytes_received == 0, "second upload sent {} bytes", again.bytes_received);
    // Identical files in another codebase are stored once too.
    let twin = new_codebase(c, "store-twin").await?;
    ensure!(upload_repo(c, &twin.id, dir.path(), false).await?.bytes_received == 0, "twin upload sent bytes");

    let mut got = Vec::new();
    c.download_codebase(&cb.id, "src/main.py", |p| {
        got.extend_from_slice(p);
        Ok(())
    })
    .await?;
    ensure!(got == b"print('hello')\n", "downloaded {:?}", String::from_utf8_lossy(&got));
    let mut tar_bytes = Vec::new();
    c.download_codebase(&cb.id, "src", |p| {
        tar_bytes.extend_from_slice(p);
        Ok(())
    })
    .await?;
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut names = Vec::new();
    for entry in archive.entries()? {
        names.push(entry?.path()?.to_string_lossy().into_owned());
    }
    ensure!(
        names.contains(&"main.py".to_owned()) && names.contains(&"util/helpers.py".to_owned()),
        "tar has {names:?}"
    );

    // Refused with the field named, and nothing stored.
    let before = c.codebases.clone().get(pb::GetCodebaseRequest { id: cb.id.clone() }).await?.into_inner().codebase;
    expect_err(raw_upload(c, &cb.id, vec![file("../escape", 0)]).await, Code::InvalidArgument, "traversal")?;
    expect_err(raw_upload(c, &cb.id, vec![file("/abs", 0)]).await, Code::InvalidArgument, "absolute")?;
    let link = pb::UploadFile {
        path: "l".into(),
        kind: pb::FileKind::Symlink as i32,
        link_target: "../../etc/passwd".into(),
        ..Default::default()
    };
    expect_err(
        raw_upload(c, &cb.id, vec![pb::upload_request::Item::File(link)]).await,
        Code::InvalidArgument,
        "leaves the tree",
    )?;
    // Symlink-then-write: an entry below a symlink (even one inside the tree) is refused.
    let inner = pb::UploadFile {
        path: "ln".into(),
        kind: pb::FileKind::Symlink as i32,
        link_target: "src".into(),
        ..Default::default()
    };
    let through = vec![pb::upload_request::Item::File(inner), file("ln/evil", 0)];
    expect_err(raw_upload(c, &cb.id, through).await, Code::InvalidArgument, "not a directory")?;
    let dev = pb::UploadFile { path: "dev".into(), kind: 9, ..Default::default() };
    expect_err(
        raw_upload(c, &cb.id, vec![pb::upload_request::Item::File(dev)]).await,
        Code::InvalidArgument,
        "devices",
    )?;
    let suid = pb::UploadFile { path: "s".into(), mode: 0o4755, ..Default::default() };
    expect_err(
        raw_upload(c, &cb.id, vec![pb::upload_request::Item::File(suid)]).await,
        Code::InvalidArgument,
        "set-id",
    )?;
    let short = vec![file("short", 10), pb::upload_request::Item::Data(b"abc".to_vec())];
    expect_err(raw_upload(c, &cb.id, short).await, Code::InvalidArgument, "10 bytes declared, 3 received")?;
    let huge = vec![file("huge", 200 << 20)];
    expect_err(raw_upload(c, &cb.id, huge).await, Code::ResourceExhausted, "codebase_max_file_mb")?;
    let after = c.codebases.clone().get(pb::GetCodebaseRequest { id: cb.id.clone() }).await?.into_inner().codebase;
    ensure!(before.map(|b| b.digest) == after.map(|a| a.digest), "a refused upload changed the codebase");

    // The client refuses hard links and devices before sending anything.
    let hard = tempfile::tempdir()?;
    std::fs::write(hard.path().join("a"), "x")?;
    std::fs::hard_link(hard.path().join("a"), hard.path().join("b"))?;
    let err = corral_client::scan(hard.path(), &ScanOptions::default()).unwrap_err().to_string();
    ensure!(err.contains("hard link"), "{err}");
    let fifo = tempfile::tempdir()?;
    let status = std::process::Command::new("mkfifo").arg(fifo.path().join("pipe")).status()?;
    ensure!(status.success(), "mkfifo failed");
    let err = corral_client::scan(fifo.path(), &ScanOptions::default()).unwrap_err().to_string();
    ensure!(err.contains("device, fifo or socket"), "{err}");
    let outside = tempfile::tempdir()?;
    std::os::unix::fs::symlink("../../etc/passwd", outside.path().join("leak"))?;
    let err = corral_client::scan(outside.path(), &ScanOptions::default()).unwrap_err().to_string();
    ensure!(err.contains("leaves the tree"), "{err}");

    expect_err(
        c.codebases.clone().get(pb::GetCodebaseRequest { id: "cb-nope".into() }).await.map_err(Into::into),
        Code::InvalidArgument,
        "codebase id",
    )?;
    let missing = format!("cb-{}", "0".repeat(32));
    expect_err(
        c.codebases.clone().get(pb::GetCodebaseRequest { id: missing }).await.map_err(Into::into),
        Code::NotFound,
        "not found",
    )?;
    c.codebases.clone().delete(pb::DeleteCodebaseRequest { id: twin.id.clone(), force: false }).await?;
    expect_err(
        c.codebases.clone().get(pb::GetCodebaseRequest { id: twin.id }).await.map_err(Into::into),
        Code::NotFound,
        "not found",
    )?;
    Ok(())
}

/// A sandbox on a codebase through `agent-safe` plus rules, seen from inside; writes stay in
/// its layer; a second sandbox does not see them; diff reports them; delete is refused while
/// in use.
pub async fn codebase_sandbox(c: &Client, runtime: pb::Runtime) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    fixture_repo(dir.path())?;
    let cb = new_codebase(c, "sandbox-test").await?;
    upload_repo(c, &cb.id, dir.path(), true).await?;
    let rule = |pattern: &str, p: pb::Permission, t: pb::PatternType| pb::PermissionRule {
        pattern: pattern.into(),
        permission: p as i32,
        r#type: t as i32,
        priority: 0,
    };
    let image = if runtime == pb::Runtime::Docker { "corral/python" } else { "" };
    let create = pb::CreateSandboxRequest {
        runtime: runtime as i32,
        image: image.into(),
        codebase_id: cb.id.clone(),
        preset: "agent-safe".into(),
        permissions: vec![
            rule("docs/**", pb::Permission::Write, pb::PatternType::Glob),
            rule("notes.txt", pb::Permission::View, pb::PatternType::File),
            rule("src/util", pb::Permission::None, pb::PatternType::Directory),
            // Same priority: the file rule beats the directory rule above it.
            rule("src/util/helpers.py", pb::Permission::Read, pb::PatternType::File),
        ],
        ..Default::default()
    };
    let a = c.create(create.clone()).await?;
    let b = c.create(create).await?;
    ensure!(a.codebase_id == cb.id && a.preset == "agent-safe", "sandbox shows {:?}/{:?}", a.codebase_id, a.preset);
    let run = |id: &str, cmd: &str| c.run(shell(id, cmd));
    let out =
        |r: &pb::ExecResponse| String::from_utf8_lossy(&r.stdout).into_owned() + &String::from_utf8_lossy(&r.stderr);

    let r = run(&a.id, "cat /workspace/src/main.py").await?;
    ensure!(r.exit_code == 0 && r.stdout == b"print('hello')\n", "read: {}", out(&r));
    let r = run(&a.id, "ls -a /workspace").await?;
    let listing = out(&r);
    for hidden in [".env", "secrets", "id.key"] {
        ensure!(!listing.split_whitespace().any(|n| n == hidden), "{hidden} listed: {listing}");
    }
    ensure!(listing.split_whitespace().any(|n| n == "notes.txt"), "view file not listed: {listing}");
    for (cmd, want) in [
        ("cat /workspace/.env", "No such file"),
        ("cat /workspace/docs/.env", "No such file"),
        ("cat /workspace/config/secrets/db.txt", "No such file"),
        ("ls /workspace/src/util/ && cat /workspace/src/util/helpers.py", "helpers.py\nX = 1"),
        ("ls /workspace/src", "main.py\nutil"),
        ("stat -c %s /workspace/notes.txt && cat /workspace/notes.txt", "Permission denied"),
        ("echo x > /workspace/src/new.py", "Permission denied"),
        ("echo x >> /workspace/src/main.py", "Permission denied"),
        ("rm /workspace/README.md", "Permission denied"),
        // Raw syscall, not libc's wrapper: openat(AT_FDCWD, ".env", O_RDONLY) answers ENOENT (2).
        (
            "cd /workspace && python3 -c \"import ctypes,os; l=ctypes.CDLL(None,use_errno=True); \
             r=l.syscall(257,-100,b'.env',0); print('raw', r, ctypes.get_errno())\"",
            "raw -1 2",
        ),
    ] {
        let r = run(&a.id, cmd).await?;
        ensure!(out(&r).contains(want), "{cmd:?}: wanted {want:?}, got {:?}", out(&r));
    }
    // Writes where the rules allow land in this sandbox's layer only.
    let r = run(
        &a.id,
        "echo new > /workspace/output/result.txt && echo more >> /workspace/docs/guide.md && \
                        rm /workspace/docs/.env 2>&1; mv /workspace/output/result.txt /workspace/output/final.txt && \
                        cat /workspace/output/final.txt /workspace/docs/guide.md",
    )
    .await?;
    ensure!(out(&r).contains("new") && out(&r).contains("guide\nmore"), "writes: {}", out(&r));
    let r = run(&b.id, "cat /workspace/docs/guide.md; ls /workspace/output").await?;
    ensure!(r.stdout == b"guide\n", "the other sandbox sees {:?}", out(&r));
    let diff = c.sandboxes.clone().diff(pb::DiffSandboxRequest { id: a.id.clone() }).await?.into_inner();
    let has =
        |path: &str, kind: pb::ChangeKind| diff.changes.iter().any(|ch| ch.path == path && ch.kind == kind as i32);
    ensure!(has("output/final.txt", pb::ChangeKind::Added), "diff {:?}", diff.changes);
    ensure!(has("docs/guide.md", pb::ChangeKind::Modified), "diff {:?}", diff.changes);
    ensure!(
        !diff.changes.iter().any(|ch| ch.path == "output/result.txt"),
        "renamed-away file in diff {:?}",
        diff.changes
    );
    // The codebase itself never changes.
    let mut guide = Vec::new();
    c.download_codebase(&cb.id, "docs/guide.md", |p| {
        guide.extend_from_slice(p);
        Ok(())
    })
    .await?;
    ensure!(guide == b"guide\n", "the codebase changed: {:?}", String::from_utf8_lossy(&guide));
    // The layer is on the sandbox's disk: it counts against its quota.
    let small = pb::CreateSandboxRequest {
        runtime: runtime as i32,
        image: image.into(),
        codebase_id: cb.id.clone(),
        preset: "agent-safe".into(),
        disk_mb: 16,
        ..Default::default()
    };
    let small = c.create(small).await?;
    let r = run(&small.id, "dd if=/dev/zero of=/workspace/output/big bs=1M count=32 2>&1").await?;
    ensure!(out(&r).contains("No space left"), "a 32 MiB write to a 16 MiB layer: {}", out(&r));
    c.destroy(&small.id).await?;
    // The files API goes through the same rules.
    expect_err(c.read_file(&a.id, "/workspace/.env").await, Code::NotFound, ".env")?;

    expect_err(
        c.codebases
            .clone()
            .delete(pb::DeleteCodebaseRequest { id: cb.id.clone(), force: false })
            .await
            .map_err(Into::into),
        Code::FailedPrecondition,
        "used by 2",
    )?;
    let no_cb = c.create(pb::CreateSandboxRequest { runtime: runtime as i32, ..Default::default() }).await?;
    expect_err(
        c.sandboxes.clone().diff(pb::DiffSandboxRequest { id: no_cb.id.clone() }).await.map_err(Into::into),
        Code::FailedPrecondition,
        "no codebase",
    )?;
    for id in [&a.id, &b.id, &no_cb.id] {
        c.destroy(id).await?;
    }
    c.codebases.clone().delete(pb::DeleteCodebaseRequest { id: cb.id, force: false }).await?;
    Ok(())
}

/// Bad rules and presets are refused at create, naming the rule.
pub async fn codebase_bad_rules(c: &Client) -> anyhow::Result<()> {
    let cb = new_codebase(c, "rules-test").await?;
    let bad = |preset: &str, rules: Vec<pb::PermissionRule>| pb::CreateSandboxRequest {
        codebase_id: cb.id.clone(),
        preset: preset.into(),
        permissions: rules,
        ..Default::default()
    };
    let rule = |pattern: &str, permission: i32, t: i32| pb::PermissionRule {
        pattern: pattern.into(),
        permission,
        r#type: t,
        priority: 0,
    };
    expect_err(c.create(bad("nope", vec![])).await, Code::InvalidArgument, "preset")?;
    expect_err(c.create(bad("", vec![rule("a/../b", 3, 1)])).await, Code::InvalidArgument, "permissions[0]")?;
    expect_err(
        c.create(bad("", vec![rule("x", 3, 1), rule("[abc", 3, 1)])).await,
        Code::InvalidArgument,
        "permissions[1]",
    )?;
    expect_err(c.create(bad("", vec![rule("x", 0, 1)])).await, Code::InvalidArgument, "permissions[0].permission")?;
    expect_err(c.create(bad("", vec![rule("a*", 3, 3)])).await, Code::InvalidArgument, "permissions[0]")?;
    let no_cb = pb::CreateSandboxRequest { preset: "read-only".into(), ..Default::default() };
    expect_err(c.create(no_cb).await, Code::InvalidArgument, "preset")?;
    let missing = pb::CreateSandboxRequest { codebase_id: format!("cb-{}", "1".repeat(32)), ..Default::default() };
    expect_err(c.create(missing).await, Code::NotFound, "codebase")?;
    let presets = c.codebases.clone().list_presets(pb::ListPresetsRequest {}).await?.into_inner().presets;
    let names: Vec<&str> = presets.iter().map(|p| p.name.as_str()).collect();
    ensure!(names == ["view-only", "read-only", "agent-safe", "development", "full-access"], "presets {names:?}");
    Ok(())
}

/// Against a server with `codebase_max_files = 3` and `codebase_max_mb = 1`: an upload carrying
/// more is refused as it goes, naming the setting, and the codebase is unchanged.
pub async fn codebase_limits(c: &Client) -> anyhow::Result<()> {
    let cb = new_codebase(c, "limits").await?;
    let entries = (0..4).map(|i| file(&format!("f{i}"), 0)).collect();
    expect_err(raw_upload(c, &cb.id, entries).await, Code::ResourceExhausted, "codebase_max_files")?;
    let piece = vec![7u8; 600 << 10];
    let mut big = vec![file("a", piece.len() as i64), pb::upload_request::Item::Data(piece.clone())];
    big.push(file("b", piece.len() as i64));
    big.push(pb::upload_request::Item::Data(piece));
    expect_err(raw_upload(c, &cb.id, big).await, Code::ResourceExhausted, "codebase_max_mb")?;
    let after = c.codebases.clone().get(pb::GetCodebaseRequest { id: cb.id.clone() }).await?.into_inner();
    ensure!(
        after.codebase.is_some_and(|a| a.file_count == 0 && a.digest.is_empty()),
        "a refused upload changed the codebase"
    );
    Ok(())
}
