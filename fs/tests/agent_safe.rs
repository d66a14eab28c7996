//! The `agent-safe` preset on a small repository, and renames across permissions.

mod common;

use std::fs;

use common::{View, errno, mount_rules};
use corral_core::permissions::{PermissionRule, Preset, expand};
use libc::{EACCES, ENOENT, EPERM};

const REPO: &[&str] = &[
    "README.md",
    "src/",
    "src/main.rs",
    ".env",
    ".env.local",
    "secrets/",
    "secrets/a",
    "x/secrets/b",
    "id.key",
    ".git/",
    ".git/config",
    "output/",
    "docs/guide.md",
    "docs/.env",
    "vendor/lib/.git",
];

const HIDDEN: &[&str] = &[
    ".env",
    ".env.local",
    "secrets",
    "secrets/a",
    "x/secrets",
    "x/secrets/b",
    "id.key",
    ".git",
    ".git/config",
    "vendor/lib/.git",
];

fn agent_safe(extra: &[&str]) -> View {
    let extra: Vec<PermissionRule> = extra.iter().map(|r| PermissionRule::parse_cli(r).unwrap()).collect();
    mount_rules(REPO, &expand(Some(Preset::AgentSafe), &extra))
}

#[test]
fn secrets_are_hidden() {
    let v = agent_safe(&[]);
    assert_eq!(v.list(""), ["README.md", "docs", "output", "src", "vendor", "x"]);
    assert_eq!(v.list("vendor/lib"), Vec::<String>::new(), "a submodule's .git file is hidden too");
    assert_eq!(v.list("x"), Vec::<String>::new());
    assert_eq!(v.list("docs"), ["guide.md"]);
    for path in HIDDEN.iter().chain(&["docs/.env"]) {
        assert_eq!(errno(fs::symlink_metadata(v.at(path))), ENOENT, "stat {path}");
        assert_eq!(errno(fs::read(v.at(path))), ENOENT, "read {path}");
    }
    assert_eq!(errno(fs::read_dir(v.at(".git"))), ENOENT);
}

#[test]
fn output_is_writable_and_src_read_only() {
    let v = agent_safe(&[]);
    fs::write(v.at("output/report.txt"), "done").unwrap();
    assert_eq!(fs::read_to_string(v.src("output/report.txt")).unwrap(), "done");
    fs::create_dir(v.at("output/sub")).unwrap();
    fs::write(v.at("output/sub/a"), "a").unwrap();
    assert_eq!(errno(fs::write(v.at("output/.env"), "KEY=1")), EACCES);
    assert_eq!(errno(fs::write(v.at("output/sub/server.pem"), "pem")), EACCES);

    assert_eq!(fs::read_to_string(v.at("src/main.rs")).unwrap(), "src/main.rs");
    assert_eq!(errno(fs::write(v.at("src/main.rs"), "x")), EACCES);
    assert_eq!(errno(fs::write(v.at("src/new.rs"), "x")), EACCES);
    assert_eq!(errno(fs::write(v.at("README.md"), "x")), EACCES);
    assert_eq!(errno(fs::write(v.at(".env"), "KEY=1")), EACCES);
    assert_eq!(fs::read_to_string(v.src(".env")).unwrap(), ".env");
    // `/tmp/**` covers the directory itself, so the sandbox may create it.
    fs::create_dir(v.at("tmp")).unwrap();
    fs::write(v.at("tmp/scratch"), "s").unwrap();
}

#[test]
fn renames_across_permissions_are_refused() {
    let v = agent_safe(&[]);
    fs::write(v.at("output/report.txt"), "r").unwrap();
    assert_eq!(errno(fs::rename(v.at("output/report.txt"), v.at("src/report.txt"))), EACCES);
    assert_eq!(errno(fs::rename(v.at("src/main.rs"), v.at("output/main.rs"))), EACCES);
    assert_eq!(errno(fs::rename(v.at("output/report.txt"), v.at("output/.env"))), EACCES);
    assert_eq!(errno(fs::rename(v.at("output/report.txt"), v.at(".env"))), EACCES);
    assert_eq!(errno(fs::rename(v.at(".env"), v.at("output/env"))), ENOENT);
    assert_eq!(fs::read_to_string(v.src(".env")).unwrap(), ".env");
    // A directory moves only if everything in it may move: a hidden file inside stops it.
    fs::create_dir(v.at("output/d")).unwrap();
    fs::write(v.src("output/d/.env"), "KEY=1").unwrap();
    assert_eq!(v.list("output/d"), Vec::<String>::new());
    assert_eq!(errno(fs::rename(v.at("output/d"), v.at("output/e"))), EACCES);
    fs::remove_file(v.src("output/d/.env")).unwrap();
    fs::write(v.at("output/d/ok.txt"), "ok").unwrap();
    fs::rename(v.at("output/d"), v.at("output/e")).unwrap();
    assert_eq!(fs::read_to_string(v.src("output/e/ok.txt")).unwrap(), "ok");
    assert_eq!(errno(fs::hard_link(v.at("output/report.txt"), v.at("output/link"))), EPERM);
    assert_eq!(errno(fs::hard_link(v.at("src/main.rs"), v.at("output/main.rs"))), EPERM);
}

#[test]
fn extra_rules_keep_secrets_hidden_unless_they_outrank_them() {
    let v = agent_safe(&["docs/**=write"]);
    fs::write(v.at("docs/guide.md"), "edited").unwrap();
    assert_eq!(fs::read_to_string(v.src("docs/guide.md")).unwrap(), "edited");
    assert_eq!(errno(fs::read(v.at("docs/.env"))), ENOENT);
    assert_eq!(errno(fs::write(v.at("docs/.env"), "x")), EACCES);
    drop(v);
    let v = agent_safe(&["/docs/.env=read:file:200", "/.git/config=read:file:200"]);
    assert_eq!(fs::read_to_string(v.at("docs/.env")).unwrap(), "docs/.env");
    // The hidden directory now leads to something visible: View, showing only that.
    assert_eq!(v.list(".git"), ["config"]);
    assert_eq!(fs::read_to_string(v.at(".git/config")).unwrap(), ".git/config");
}
