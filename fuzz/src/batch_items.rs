//! `corral batch run`'s JSON Lines items (`corral_cli::batch_items`), fed arbitrary text.
//!
//! Invariants:
//!
//! - every bad line is reported with its own line number and the field it names;
//! - an accepted line gives exactly one command (a non-empty argv, a non-blank shell line, or a
//!   known language with non-empty code), a runtime the CLI knows, an image only for Docker, and
//!   finite non-negative numbers;
//! - an accepted item written back as JSON parses to the same request;
//! - the file as a whole (`corral_cli::batch_source::check`, the streaming check) is accepted
//!   exactly when every non-blank line is and there is at least one, keeping the items' line
//!   numbers; otherwise the message counts and lists the bad lines.

use corral_cli::batch_items::{self, LineError};
use corral_cli::batch_source;
use corral_core::languages;
use corral_proto::v1 as pb;
use serde_json::{Map, Value, json};

const SOURCE: &str = "items.jsonl";

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines: Vec<(usize, Result<pb::JobSpec, LineError>)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, batch_items::parse_line(i + 1, l)))
        .collect();
    for (n, result) in &lines {
        match result {
            Ok(spec) => {
                check_spec(spec);
                round_trip(*n, spec);
            }
            Err(e) => check_error(*n, e),
        }
    }
    check_file(text, &lines);
}

fn check_error(n: usize, e: &LineError) {
    assert_eq!(e.line, n, "{e}");
    let shown = e.to_string();
    assert!(shown.starts_with(&format!("line {n}: ")), "{shown}");
    assert!(e.field.is_empty() || shown.contains(&format!("field {:?}", e.field)), "{shown}");
    assert!(!e.message.is_empty(), "{shown}");
}

fn check_spec(s: &pb::JobSpec) {
    let argv = !s.argv.is_empty();
    let shell = !s.shell.trim().is_empty();
    let code = !s.language.is_empty() || !s.code.is_empty();
    assert_eq!(usize::from(argv) + usize::from(shell) + usize::from(code), 1, "not exactly one command: {s:?}");
    if code {
        assert!(languages::resolve(&s.language).is_some(), "unknown language accepted: {s:?}");
        assert!(!s.code.is_empty(), "a code item without code was accepted: {s:?}");
    }
    let docker = s.runtime == pb::Runtime::Docker as i32;
    assert!(docker || s.runtime == pb::Runtime::Bwrap as i32 || s.runtime == 0, "runtime {}", s.runtime);
    assert!(s.image.is_empty() || docker, "an image without Docker: {s:?}");
    for x in [s.timeout_seconds, s.cpus] {
        assert!(x.is_finite() && x >= 0.0, "{x} accepted: {s:?}");
    }
    assert!(s.memory_mb >= 0, "memory_mb {}", s.memory_mb);
}

/// The item as a JSON line, with only the fields that differ from the defaults.
fn to_json(s: &pb::JobSpec) -> Value {
    let mut o = Map::new();
    let mut put = |k: &str, v: Value| o.insert(k.to_owned(), v);
    if !s.argv.is_empty() {
        put("argv", json!(s.argv));
    }
    if !s.shell.is_empty() {
        put("shell", json!(s.shell));
    }
    if !s.language.is_empty() {
        put("language", json!(s.language));
        put("code", json!(s.code));
    }
    match pb::Runtime::try_from(s.runtime) {
        Ok(pb::Runtime::Bwrap) => put("runtime", json!("bwrap")),
        Ok(pb::Runtime::Docker) => put("runtime", json!("docker")),
        _ => None,
    };
    let strings = [("image", &s.image), ("stdin", &String::from_utf8(s.stdin.clone()).expect("stdin is text"))];
    for (k, v) in strings.into_iter().filter(|(_, v)| !v.is_empty()) {
        put(k, json!(v));
    }
    for (k, v) in [("env", &s.env), ("labels", &s.labels)].into_iter().filter(|(_, m)| !m.is_empty()) {
        put(k, json!(v));
    }
    for (k, v) in [("timeout_seconds", s.timeout_seconds), ("cpus", s.cpus)].into_iter().filter(|(_, x)| *x != 0.0) {
        put(k, json!(v));
    }
    if s.memory_mb != 0 {
        put("memory_mb", json!(s.memory_mb));
    }
    if s.internet_access {
        put("internet_access", json!(true));
    }
    Value::Object(o)
}

fn round_trip(n: usize, spec: &pb::JobSpec) {
    let line = to_json(spec).to_string();
    let mut back =
        batch_items::parse_line(n, &line).unwrap_or_else(|e| panic!("{spec:?} written as {line} fails: {e}"));
    // serde_json parses floats to within an ulp unless built with `float_roundtrip`.
    for (got, want) in [(&mut back.timeout_seconds, spec.timeout_seconds), (&mut back.cpus, spec.cpus)] {
        assert!(got.to_bits().abs_diff(want.to_bits()) <= 1 || *got == want, "{want} came back as {got}");
        *got = want;
    }
    assert_eq!(&back, spec, "{line} parses differently");
}

fn check_file(text: &str, lines: &[(usize, Result<pb::JobSpec, LineError>)]) {
    let bad = lines.iter().filter(|(_, r)| r.is_err()).count();
    match batch_source::check(SOURCE, text.as_bytes(), None) {
        Ok(numbers) => {
            assert_eq!(bad, 0, "a file with {bad} bad line(s) was accepted");
            let want: Vec<usize> = lines.iter().map(|(n, _)| *n).collect();
            assert_eq!(numbers, want, "line numbers of the items");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("{SOURCE}: ")), "{msg}");
            if bad > 0 {
                assert!(msg.contains(&format!("{bad} bad line(s)")), "{msg}");
                assert_eq!(msg.matches("\n  line ").count(), bad.min(20), "{msg}");
            } else {
                assert!(lines.is_empty() && msg.contains("no items"), "{msg}");
            }
        }
    }
}
