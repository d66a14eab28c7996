//! Runs every target over its committed seeds (`corpus/<target>/`) and the inputs that once
//! crashed it (`regressions/<target>/`), so the normal test suite keeps both passing without AFL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return BTreeMap::new() };
    entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

fn crate_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(sub)
}

#[test]
fn the_committed_corpus_is_what_the_seed_generator_makes() {
    for (target, _) in corral_fuzz::TARGETS {
        let want: BTreeMap<String, Vec<u8>> = corral_fuzz::seeds::of(target).into_iter().collect();
        let have = files(&crate_dir("corpus").join(target));
        assert!(have == want, "fuzz/corpus/{target} is stale: run `cargo run -p corral-fuzz --bin corral-fuzz-seeds`");
    }
}

#[test]
fn every_target_passes_its_seeds_and_regressions() {
    for (target, run) in corral_fuzz::TARGETS {
        let seeds = files(&crate_dir("corpus").join(target));
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for (name, bytes) in seeds.iter().chain(&files(&crate_dir("regressions").join(target))) {
            eprintln!("{target}/{name}");
            run(bytes);
        }
    }
}
