//! Which `run_code` languages this node's runtimes can run, found once at start-up.
//!
//! - **bubblewrap** sandboxes see the host's `/usr`, `/bin`, `/lib*` read-only, so a language is
//!   offered when its program exists in one of [`corral_core::languages::SEARCH_DIRS`] and, symlinks followed, still lies
//!   under those directories (a link into `/opt` or `/root`, e.g. a pyenv shim, would not resolve
//!   inside the sandbox). The published path is the one found, so the coordinator's command skips
//!   every `PATH` lookup.
//! - **Docker** sandboxes run a local image, and what an image contains can only be learnt by
//!   starting a container of it: [`probe_docker`] starts one short-lived container per local
//!   image (once per image, new images within [`PROBE_PERIOD`]), lists which candidate
//!   programs exist in it, and publishes offers tagged with the image.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use corral_core::ids::{ExecId, SandboxId, TenantId};
use corral_core::languages::{LANGUAGES, LanguageOffer, SANDBOX_VISIBLE_ROOTS};
use corral_core::model::{Command, ExecSpec, RuntimeKind, SandboxSpec};
use corral_core::store::StoreError;

use crate::Agent;
use crate::runtime::{ExecEvent, Runtime, RuntimeResult};

/// How often the Docker runtime's image list is checked for images not probed yet.
pub const PROBE_PERIOD: Duration = Duration::from_secs(30);

/// The languages the host's bubblewrap sandboxes can run (none when the node has no bubblewrap).
pub fn detect(kinds: &[RuntimeKind]) -> Vec<LanguageOffer> {
    let mut offers = Vec::new();
    if kinds.contains(&RuntimeKind::Bwrap) {
        offers.extend(detect_in(Path::new("/"), RuntimeKind::Bwrap));
    }
    offers
}

/// Probes every local image of the node's Docker runtime, once each, and adds their offers to
/// the agent's languages (the heartbeat republishes the node record). Runs until dropped.
pub async fn probe_docker(agent: Arc<Agent>) -> Result<(), StoreError> {
    let Some(rt) = agent.runtime(RuntimeKind::Docker).cloned() else {
        return std::future::pending().await;
    };
    let mut probed = BTreeSet::new();
    loop {
        for image in rt.images().await {
            if !probed.insert(image.clone()) {
                continue;
            }
            match probe_image(&agent, rt.as_ref(), &image).await {
                Ok(offers) => {
                    tracing::info!(%image, languages = ?offers.iter().map(|o| &o.language).collect::<Vec<_>>(), "image probed");
                    agent.add_languages(offers);
                }
                Err(e) => tracing::warn!(%image, error = %e, "could not probe the image's languages"),
            }
        }
        tokio::time::sleep(PROBE_PERIOD).await;
    }
}

/// Starts a container of `image`, lists which candidate programs it has, removes it. The
/// agent knows its spec meanwhile, so GC leaves it alone for a sweep.
async fn probe_image(agent: &Agent, rt: &dyn Runtime, image: &str) -> RuntimeResult<Vec<LanguageOffer>> {
    let spec = SandboxSpec {
        id: SandboxId::random(),
        tenant: TenantId::default_tenant(),
        runtime: RuntimeKind::Docker,
        name: None,
        cpus: 0.5,
        memory_mb: 64,
        pids_limit: 32,
        timeout_seconds: 60,
        internet_access: false,
        env: Default::default(),
        labels: Default::default(),
        workdir: "/workspace".to_owned(),
        image: image.to_owned(),
        // The smallest disk: the probe only lists programs.
        disk_mb: crate::runtime::disk::MIN_DISK_MB,
        codebase: None,
    };
    agent.specs().insert(spec.id.clone(), spec.clone());
    let found = match rt.create(&spec).await {
        Ok(()) => list_programs(rt, &spec.id).await,
        Err(e) => Err(e),
    };
    if let Err(e) = rt.destroy(&spec.id).await {
        tracing::warn!(sandbox_id = %spec.id, error = %e, "could not remove a probe container");
    }
    agent.specs().remove(&spec.id);
    let found = found?;
    let offers = LANGUAGES.iter().filter_map(|lang| {
        let program = lang.candidates().find(|c| found.contains(c))?;
        Some(LanguageOffer {
            language: lang.name.to_owned(),
            runtime: RuntimeKind::Docker,
            image: image.to_owned(),
            program,
        })
    });
    Ok(offers.collect())
}

/// The candidate program paths that are executable files inside sandbox `id`.
async fn list_programs(rt: &dyn Runtime, id: &SandboxId) -> RuntimeResult<BTreeSet<String>> {
    let paths: Vec<String> = LANGUAGES.iter().flat_map(|l| l.candidates()).collect();
    let script = format!("for p in {}; do [ -f \"$p\" ] && [ -x \"$p\" ] && echo \"$p\"; done; true", paths.join(" "));
    let spec = ExecSpec {
        command: Command::Shell(script),
        env: Default::default(),
        cwd: "/workspace".to_owned(),
        timeout_ms: 10_000,
        stdin: Vec::new(),
        max_output_bytes: 64 * 1024,
        side_channel: false,
    };
    let mut handle = rt.exec(id, ExecId::random(), spec).await?;
    let mut out = Vec::new();
    while let Some(event) = handle.events.recv().await {
        match event {
            ExecEvent::Stdout(d) => out.extend(d),
            ExecEvent::Exit(_) => break,
            _ => {}
        }
    }
    Ok(String::from_utf8_lossy(&out).lines().map(str::to_owned).collect())
}

/// The languages whose program exists beneath `root` (the host's `/` in production, a fake tree
/// in tests), as offers of `runtime`.
fn detect_in(root: &Path, runtime: RuntimeKind) -> Vec<LanguageOffer> {
    LANGUAGES
        .iter()
        .filter_map(|lang| {
            let program = lang.candidates().find(|c| visible_program(root, c))?;
            Some(LanguageOffer { language: lang.name.to_owned(), runtime, image: String::new(), program })
        })
        .collect()
}

/// Whether `inside` (an absolute path as the sandbox sees it) is an executable file whose real
/// path, symlinks followed, is still under a directory the sandbox mounts.
fn visible_program(root: &Path, inside: &str) -> bool {
    let host: PathBuf = root.join(inside.trim_start_matches('/'));
    let Ok(real) = std::fs::canonicalize(&host) else { return false };
    let Ok(rel) = real.strip_prefix(root) else { return false };
    let real_inside = Path::new("/").join(rel);
    let visible = SANDBOX_VISIBLE_ROOTS.iter().any(|r| real_inside.to_str().is_some_and(|p| p.starts_with(r)));
    visible && is_executable(&real)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    fn executable(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn finds_visible_programs_and_skips_links_out_of_the_sandbox() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        executable(&r.join("usr/bin/python3.11"));
        symlink("python3.11", r.join("usr/bin/python3")).unwrap();
        executable(&r.join("usr/local/bin/perl"));
        // A shim outside what the sandbox mounts: not offered.
        executable(&r.join("opt/shims/ruby"));
        symlink(r.join("opt/shims/ruby"), r.join("usr/bin/ruby")).unwrap();
        // Not executable: not offered.
        std::fs::write(r.join("usr/bin/node"), "").unwrap();
        let offers = detect_in(r, RuntimeKind::Bwrap);
        let found: Vec<(&str, &str)> = offers.iter().map(|o| (o.language.as_str(), o.program.as_str())).collect();
        assert_eq!(found, vec![("python", "/usr/bin/python3"), ("perl", "/usr/local/bin/perl")]);
    }

    #[test]
    fn this_host_offers_python_and_the_shells() {
        let offers = detect(&[RuntimeKind::Bwrap]);
        for lang in ["python", "sh", "bash"] {
            assert!(offers.iter().any(|o| o.language == lang), "{lang} missing from {offers:?}");
        }
        assert!(detect(&[RuntimeKind::Docker]).is_empty());
    }
}
