//! The semantics of the rules, as tables. A rule is written in its CLI form
//! (`PATTERN=PERM[:TYPE[:PRIORITY]]`), `/` at the end of a path in a case marks a directory.

use super::*;
use Permission::{None as N, Read as R, View as V, Write as W};

fn rules(list: &[&str]) -> Rules {
    let parsed: Vec<PermissionRule> =
        list.iter().map(|s| PermissionRule::parse_cli(s).unwrap_or_else(|e| panic!("{s}: {e}"))).collect();
    Rules::compile(&parsed).unwrap()
}

/// `path/` is a directory; the root is `""` (always a directory).
fn eval(r: &Rules, path: &str) -> Permission {
    match path.strip_suffix('/') {
        Some(dir) => r.eval(dir, true),
        None => r.eval(path, path.is_empty()),
    }
}

#[rustfmt::skip]
const TABLE: &[(&[&str], &str, Permission)] = &[
    // Every permission with every type.
    (&["a.txt=none:file"], "a.txt", N),
    (&["a.txt=view:file"], "a.txt", V),
    (&["a.txt=read:file"], "a.txt", R),
    (&["a.txt=write:file"], "a.txt", W),
    (&["src=none:directory"], "src/x", N),
    (&["src=view:directory"], "src/x", V),
    (&["src=read:directory"], "src/a/b.rs", R),
    (&["src=write:directory"], "src/", W),
    (&["*.txt=none"], "a.txt", N),
    (&["*.txt=view"], "a.txt", V),
    (&["*.txt=read"], "d/a.txt", R),
    (&["*.txt=write"], "d/e/a.txt", W),
    // File rules: exact paths only; a leading '/' is allowed.
    (&["/a/b.txt=write:file"], "a/b.txt", W),
    (&["a/b.txt=read:file"], "a/b.txt/c", N),
    (&["a/b.txt=read:file"], "a/c.txt", N),
    (&["a/b.txt=read:file"], "b.txt", N),
    // Directory rules: the path and all beneath, whole segments only; `src/` and `/src` alike.
    (&["src/=write:directory"], "src/x", W),
    (&["/src=view:directory"], "src/x/y/", V),
    (&["src=read:directory"], "srcx/a", N),
    (&["src=read:directory"], "src", R),
    // Ancestors of visible paths are View; other paths are None; the root is at least View.
    (&["a/b.txt=read:file"], "a/", V),
    (&["a/b.txt=read:file"], "a", N),
    (&["a/b=write:directory"], "a/", V),
    (&["a/b=write:directory"], "a/c", N),
    (&["a/b=write:directory"], "c/", N),
    (&["/a/b/*.md=read"], "a/", V),
    (&["/a/b/*.md=read"], "a/b/", V),
    (&["/a/b/*.md=read"], "a/c/", N),
    (&["*.md=read"], "docs/", V),
    (&["*.md=read"], "docs/a.txt", N),
    (&["**/x/**/y=read"], "q/r/", V),
    (&[], "", V),
    (&[], "a/", N),
    (&["**=write"], "", W),
    (&["**=none"], "", V),
    // Two `**` in one pattern, at the top and nested; the directory itself matches.
    (&["**=read", "**/secrets/**=none"], "secrets/a", N),
    (&["**=read", "**/secrets/**=none"], "x/secrets/a", N),
    (&["**=read", "**/secrets/**=none"], "x/y/secrets/z/w", N),
    (&["**=read", "**/secrets/**=none"], "secrets/", N),
    (&["**=read", "**/secrets/**=none"], "x/secrets/", N),
    (&["**=read", "**/secrets/**=none"], "secrets", R),
    (&["**=read", "**/secrets/**=none"], "secretsx/a", R),
    (&["**/x/**/y=read"], "x/y", R),
    (&["**/x/**/y=read"], "a/x/b/c/y", R),
    (&["**/x/**/y=read"], "a/y", N),
    (&["a/**/b/**/c=write"], "a/b/c", W),
    (&["a/**/b/**/c=write"], "a/1/2/b/3/c", W),
    (&["a/**/b/**/c=write"], "z/a/b/c", N),
    // Anchoring: a slash at the start or in the middle anchors; none matches at any depth.
    (&["/x=read"], "x", R),
    (&["/x=read"], "a/x", N),
    (&["x=read"], "a/x", R),
    (&["a/*.md=read"], "a/b.md", R),
    (&["a/*.md=read"], "c/a/b.md", N),
    (&["a/*.md=read"], "a/b/c.md", N),
    (&["a/*.md=read"], "a/x.md/y", R),
    (&["**/foo=read"], "foo", R),
    (&["**/foo=read"], "a/b/foo", R),
    // Wildcards, classes and escapes stay inside one segment.
    (&["file?.txt=read"], "file1.txt", R),
    (&["file?.txt=read"], "file12.txt", N),
    (&["a*=read"], "a/b", R),
    (&["/a*b=read"], "a/b", N),
    (&["[abc].txt=read"], "b.txt", R),
    (&["[abc].txt=read"], "d.txt", N),
    (&["[a-c]x=read"], "bx", R),
    (&["[!a]x=read"], "bx", R),
    (&["[!a]x=read"], "ax", N),
    (&["[^a]x=read"], "ax", N),
    (&["[]]=read"], "]", R),
    (&[r"\*.txt=read"], "*.txt", R),
    (&[r"\*.txt=read"], "a.txt", N),
    (&[r"a\?=read"], "a?", R),
    (&[r"a\?=read"], "ab", N),
    (&[".env*=none", "**=read"], ".env", N),
    (&[".env*=none", "**=read"], "x/.env.local", N),
    (&[".env*=none", "**=read"], "env", R),
    // A trailing '/' matches directories only, and covers what is beneath them.
    (&["build/=none", "**=read"], "build/", N),
    (&["build/=none", "**=read"], "build", R),
    (&["build/=none", "**=read"], "x/build/out.o", N),
    (&["logs/=write"], "x/logs/a.txt", W),
    (&["logs/=write"], "x/logs", N),
    (&["/out/**=write"], "out/", W),
    (&["/out/**=write"], "out", N),
    // Conflicts: priority, then File > Directory > Glob, then literal prefix, then order.
    (&["a/b.txt=none:file", "a/**=write:glob:5"], "a/b.txt", W),
    (&["a/**=write", "a/b.txt=none:file"], "a/b.txt", N),
    (&["a/b.txt=none:file", "a=write:directory"], "a/b.txt", N),
    (&["a=write:directory", "a/**=read"], "a/x", W),
    (&["a=write:directory", "a/b=read:directory"], "a/b/c", R),
    (&["a/b=read:directory", "a=write:directory"], "a/b/c", R),
    (&["docs/*.md=read", "docs/**=write"], "docs/x.md", W),
    (&["docs/**=write", "docs/*.md=read"], "docs/x.md", R),
    (&["**=read", "*.key=none"], "a/b/c.key", N),
    (&["*.key=none", "**=read"], "a/b/c.key", R),
    (&["*.key=none:glob:1", "**=read"], "c.key", N),
    (&["**=read", "*.key=none"], "a/b.keys", R),
    (&["credentials*=none", "**=read"], "credentials.json", N),
    (&["credentials*=none", "**=read"], "my-credentials", R),
    (&["a/**=read", "a/**=write"], "a/x", W),
    (&["x=read:file:-1", "**=none"], "x", N),
    // A None rule covering a directory keeps it hidden unless a stronger rule shows beneath it.
    (&["**/secrets/**=none:glob:10", "secrets/public/**=read"], "secrets/", N),
    (&["**/secrets/**=none:glob:10", "secrets/public/**=read"], "secrets/public/a", N),
    (&["secrets/**=none", "secrets/public/**=read"], "secrets/", V),
    (&["secrets/**=none", "secrets/public/**=read"], "secrets/public/a", R),
    (&["secrets/**=none", "secrets/public/**=read"], "secrets/public/", R),
    (&["secrets/**=none", "secrets/public/**=read"], "secrets/other", N),
    (&["secrets/**=none", "secrets/public/**=read"], "secrets/other/", N),
    (&["d=none:file", "**=read"], "d/", V),
    (&["d/x=none:file", "**=read"], "d/x/", V),
];

#[test]
fn table() {
    assert!(TABLE.len() >= 60, "{} cases", TABLE.len());
    let mut failures = Vec::new();
    for (list, path, want) in TABLE {
        let got = eval(&rules(list), path);
        if got != *want {
            failures.push(format!("{list:?} {path:?}: want {want}, got {got}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), TABLE.len(), failures.join("\n"));
}

/// A small repository, with what each preset makes of every path in it.
#[rustfmt::skip]
const FIXTURE: &[(&str, [Permission; 5])] = &[
    //                            view-only read-only agent-safe development full-access
    ("",                          [V, R, R, W, W]),
    ("README.md",                 [V, R, R, W, W]),
    ("src/",                      [V, R, R, W, W]),
    ("src/main.rs",               [V, R, R, W, W]),
    (".env",                      [V, R, N, N, W]),
    (".env.local",                [V, R, N, N, W]),
    ("config/.env.production",    [V, R, N, N, W]),
    ("secrets/",                  [V, R, N, N, W]),
    ("secrets/a",                 [V, R, N, N, W]),
    ("x/secrets/",                [V, R, N, N, W]),
    ("x/secrets/b",               [V, R, N, N, W]),
    ("id.key",                    [V, R, N, N, W]),
    ("certs/server.pem",          [V, R, N, N, W]),
    ("credentials.json",          [V, R, N, N, W]),
    (".git/",                     [V, R, N, N, W]),
    (".git/config",               [V, R, N, N, W]),
    ("vendor/lib/.git",           [V, R, N, N, W]),
    ("output/",                   [V, R, W, W, W]),
    ("output/report.txt",         [V, R, W, W, W]),
    ("output/.env",               [V, R, N, N, W]),
    ("tmp/scratch",               [V, R, W, W, W]),
    ("docs/guide.md",             [V, R, R, W, W]),
    ("docs/.env",                 [V, R, N, N, W]),
    ("lib/output/x",              [V, R, R, W, W]),
];

#[test]
fn presets_on_a_fixture_repository() {
    for (i, preset) in Preset::all().into_iter().enumerate() {
        let r = Rules::compile(&preset.rules()).unwrap();
        for (path, want) in FIXTURE {
            assert_eq!(eval(&r, path), want[i], "{} {path:?}", preset.name());
        }
    }
}

#[test]
fn extra_rules_cannot_uncover_secrets_without_priority() {
    let extra = |s: &str| Rules::compile(&expand(Some(Preset::AgentSafe), &[PermissionRule::parse_cli(s).unwrap()]));
    let docs = extra("docs/**=write").unwrap();
    assert_eq!(eval(&docs, "docs/guide.md"), W);
    assert_eq!(eval(&docs, "docs/.env"), N);
    assert_eq!(eval(&docs, "docs/"), W);
    assert_eq!(eval(&extra("docs/.env=read:file:101").unwrap(), "docs/.env"), R);
    assert_eq!(eval(&extra("docs/.env=read:file:100").unwrap(), "docs/.env"), R);
    assert_eq!(eval(&extra("docs/.env=read:file:99").unwrap(), "docs/.env"), N);
    // Re-granting a path inside a hidden directory shows the directory as View.
    let inside = extra("/.git/HEAD=read:file:200").unwrap();
    assert_eq!(eval(&inside, ".git/"), V);
    assert_eq!(eval(&inside, ".git/HEAD"), R);
    assert_eq!(eval(&inside, ".git/config"), N);
    assert_eq!(expand(None, &[]), Vec::new());
}

#[test]
fn validation_errors_name_the_rule() {
    let ok = || PermissionRule::new("ok", R, PatternType::Glob, 0);
    let bad = |pattern: &str, kind| PermissionRule::new(pattern, R, kind, 0);
    let cases: Vec<(PermissionRule, &str)> = vec![
        (bad("", PatternType::Glob), "empty"),
        (bad("a/../b", PatternType::Glob), "'..'"),
        (bad("..", PatternType::Directory), "'..'"),
        (bad("./a", PatternType::File), "'.'"),
        (bad("a\0b", PatternType::Glob), "NUL"),
        (bad("[abc", PatternType::Glob), "unclosed"),
        (bad("a/[b/c]", PatternType::Glob), "unclosed"),
        (bad("[[:alpha:]]", PatternType::Glob), "POSIX"),
        (bad("[z-a]", PatternType::Glob), "reversed"),
        (bad("a\\", PatternType::Glob), "escapes nothing"),
        (bad("a//b", PatternType::Glob), "empty path segment"),
        (bad("a*", PatternType::File), "glob character"),
        (bad("src/[x]", PatternType::Directory), "glob character"),
        (bad("a/", PatternType::File), "cannot end with"),
        (bad("/", PatternType::Directory), "root"),
        (bad("/", PatternType::Glob), "names no path"),
        (bad(&"x".repeat(MAX_PATTERN_BYTES + 1), PatternType::Glob), "longer than"),
    ];
    for (rule, reason) in cases {
        let err = Rules::compile(&[ok(), ok(), rule.clone()]).unwrap_err();
        assert_eq!((err.index, err.pattern.as_str()), (2, rule.pattern.as_str()), "{err}");
        assert!(err.reason.contains(reason), "{:?}: {err}", rule.pattern);
        assert!(err.to_string().starts_with("permission rule 2 ("), "{err}");
    }
    let too_many = vec![ok(); MAX_RULES + 1];
    assert_eq!(Rules::compile(&too_many).unwrap_err().index, MAX_RULES);
    assert!(Rules::compile(&too_many[..MAX_RULES]).is_ok());
    assert!(Rules::compile(&[bad(&"x".repeat(MAX_PATTERN_BYTES), PatternType::Glob)]).is_ok());
}

#[test]
fn cli_form() {
    let r = PermissionRule::parse_cli("docs/**=write").unwrap();
    assert_eq!(r, PermissionRule::new("docs/**", W, PatternType::Glob, 0));
    let r = PermissionRule::parse_cli("a=b.txt=read:file:-5").unwrap();
    assert_eq!(r, PermissionRule::new("a=b.txt", R, PatternType::File, -5));
    assert_eq!(PermissionRule::parse_cli(&r.to_string()).unwrap(), r);
    assert_eq!(PermissionRule::parse_cli("src=View:Directory").unwrap().kind, PatternType::Directory);
    for (bad, reason) in [
        ("noequals", "expected PATTERN="),
        ("a=bogus", "unknown permission"),
        ("a=read:weird", "unknown pattern type"),
        ("a=read:file:x", "priority"),
        ("a=read:file:1:2", "too many"),
        ("=read", "empty"),
        ("a*=read:file", "glob character"),
    ] {
        let err = PermissionRule::parse_cli(bad).unwrap_err();
        assert!(err.reason.contains(reason), "{bad}: {err}");
    }
}

#[test]
fn names_and_serde() {
    for p in [N, V, R, W] {
        assert_eq!(p.to_string().parse::<Permission>(), Ok(p));
    }
    for t in [PatternType::Glob, PatternType::Directory, PatternType::File] {
        assert_eq!(t.to_string().parse::<PatternType>(), Ok(t));
    }
    for p in Preset::all() {
        assert_eq!(Preset::parse(p.name()).unwrap(), p);
    }
    assert!(Preset::parse("yolo").unwrap_err().reason.contains("agent-safe"));
    let rule = PermissionRule::new("a/b", W, PatternType::File, 3);
    let json = serde_json::to_string(&rule).unwrap();
    assert_eq!(json, r#"{"pattern":"a/b","permission":"write","type":"file","priority":3}"#);
    assert_eq!(serde_json::from_str::<PermissionRule>(&json).unwrap(), rule);
    let short: PermissionRule = serde_json::from_str(r#"{"pattern":"*.md","permission":"view"}"#).unwrap();
    assert_eq!(short, PermissionRule::new("*.md", V, PatternType::Glob, 0));
    assert!(N < V && V < R && R < W);
}

#[test]
fn rules_keeps_the_given_list() {
    let list = Preset::AgentSafe.rules();
    assert_eq!(Rules::compile(&list).unwrap().rules(), &list[..]);
}

/// Found by the `permission_rules` fuzz target: an escaped backslash before a trailing `/` does
/// not escape the slash.
#[test]
fn a_trailing_slash_after_an_escaped_backslash_means_directories_only() {
    let rule = |p: &str| PermissionRule::new(p, Permission::Read, PatternType::Glob, 0);
    let r = Rules::compile(&[rule(r"a\\/")]).unwrap();
    assert_eq!(r.eval(r"a\", true), Permission::Read);
    assert_eq!(r.eval(r"a\", false), Permission::None);
}
