//! Which `run_code` languages this node's runtimes can run, found once at start-up.
//!
//! - **bubblewrap** sandboxes see the host's `/usr`, `/bin`, `/lib*` read-only, so a language is
//!   offered when its program exists in one of [`SEARCH_DIRS`] and, symlinks followed, still lies
//!   under those directories (a link into `/opt` or `/root`, e.g. a pyenv shim, would not resolve
//!   inside the sandbox). The published path is the one found, so the coordinator's command skips
//!   every `PATH` lookup.
//! - **Docker** sandboxes run whatever local image the request names, and what an image contains
//!   can only be learnt by starting a container of it; until images are probed (or carry a label
//!   listing their languages) the Docker runtime offers none, and `RunCode` on a Docker sandbox
//!   is refused with the languages its node's bubblewrap runtime has.

use std::path::{Path, PathBuf};

use corral_core::languages::{LANGUAGES, LanguageOffer, SANDBOX_VISIBLE_ROOTS, SEARCH_DIRS};
use corral_core::model::RuntimeKind;

/// The languages the runtimes of `kinds` can run.
pub fn detect(kinds: &[RuntimeKind]) -> Vec<LanguageOffer> {
    let mut offers = Vec::new();
    if kinds.contains(&RuntimeKind::Bwrap) {
        offers.extend(detect_in(Path::new("/"), RuntimeKind::Bwrap));
    }
    offers
}

/// The languages whose program exists beneath `root` (the host's `/` in production, a fake tree
/// in tests), as offers of `runtime`.
fn detect_in(root: &Path, runtime: RuntimeKind) -> Vec<LanguageOffer> {
    LANGUAGES
        .iter()
        .filter_map(|lang| {
            let program = lang.programs.iter().find_map(|p| find_program(root, p))?;
            Some(LanguageOffer { language: lang.name.to_owned(), runtime, program })
        })
        .collect()
}

/// The sandbox-visible absolute path of `name`: the first of [`SEARCH_DIRS`] holding an
/// executable file of that name whose real path is under a directory the sandbox mounts.
fn find_program(root: &Path, name: &str) -> Option<String> {
    SEARCH_DIRS.iter().find_map(|dir| {
        let inside = format!("{dir}/{name}");
        let host: PathBuf = root.join(inside.trim_start_matches('/'));
        let real = std::fs::canonicalize(&host).ok()?;
        let real_inside = Path::new("/").join(real.strip_prefix(root).ok()?);
        let visible = SANDBOX_VISIBLE_ROOTS.iter().any(|r| real_inside.to_str().is_some_and(|p| p.starts_with(r)));
        (visible && is_executable(&real)).then_some(inside)
    })
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
