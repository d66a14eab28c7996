//! The path-permission engine (`corral_core::permissions`) and the codebase path checks
//! (`corral_core::codebase::{check_path, check_link_target}`).
//!
//! Input: up to [`MAX_LINES`] lines, each a tag byte and its fields (see [`rule_line`] and the
//! other encoders, which the seed generator uses):
//!
//! - `R` PERM TYPE PRIO PATTERN: a rule;
//! - `X` PERM TYPE PRIO COUNT FRAGMENT: a rule whose pattern is FRAGMENT repeated COUNT + 1 times,
//!   up to [`MAX_LONG_PATTERN`] bytes (long patterns from short inputs);
//! - `P` DIR PATH: a path, a directory when DIR is odd;
//! - `Y` DIR COUNT FRAGMENT: a path that is FRAGMENT repeated, up to [`MAX_LONG_PATH`] bytes;
//! - `L` LINK TAB TARGET: a symlink of a codebase and its target;
//! - `S` PRESET: the preset the rules extend ([`expand`]), `'0'..='4'` (`'5'`: none).
//!
//! PERM is `n v r w`, TYPE `g d f` (other bytes pick one by their value); PRIO indexes
//! [`PRIORITIES`] (`'0'..='9'`, `'a'`, `'b'`).
//!
//! Invariants:
//!
//! - [`Rules::compile`] either refuses, naming the first bad rule (index in range, its pattern;
//!   the rules before it compile, the rule alone is refused for the same reason), or compiles
//!   every rule; compiling is deterministic and a preset's rules shift the index by their count;
//! - on compiled rules, `eval` does not panic, is deterministic (twice, and on a second compile),
//!   ignores stray slashes, gives the root at least `View`, and does not depend on the order of
//!   rules whose (priority, type) differ; `parse_cli(rule.to_string())` gives the rule back;
//! - File rules only: `eval` is the documented choice (highest priority, then the later rule;
//!   a hidden or unmatched directory is `View` when a visible File rule names a path beneath it);
//! - one glob made of literal names (`\` escapes resolved) and `**`: `eval` agrees with a naive
//!   recursive segment matcher written from the module docs (anchoring, `**`, trailing `/` and
//!   `/**`, ancestors, `View` for a directory it could match beneath);
//! - a preset that hides secrets (`agent-safe`, `development`) keeps them hidden whatever extra
//!   rules below [`SECRET_PRIORITY`] are added;
//! - [`codebase::check_path`] accepts exactly the non-empty, relative paths of at most
//!   `MAX_PATH_BYTES` without NUL, `.`, `..` or empty segments, or segments over
//!   `MAX_SEGMENT_BYTES`; [`codebase::check_link_target`], for a link whose path passes
//!   `check_path` (as its callers check first), accepts exactly the relative targets that,
//!   resolved lexically from the link's directory, never climb above the root.
//!
//! Patterns of a few hundred bytes and paths of hundreds of segments come from the `X` and `Y`
//! lines; the engine claims it cannot blow up on them, which AFL's hang timeout checks.

use Permission::{None as N, View as V};
use corral_core::codebase::{self, MAX_PATH_BYTES, MAX_SEGMENT_BYTES};
use corral_core::permissions::{
    MAX_PATTERN_BYTES, PatternType, Permission, PermissionRule, Preset, RuleError, Rules, SECRET_PRIORITY, expand,
};

/// Most lines one input is read for.
pub const MAX_LINES: usize = 24;
/// Most rules, paths and links one input holds.
pub const RULES_PER_INPUT: usize = 8;
pub const PATHS_PER_INPUT: usize = 8;
pub const LINKS_PER_INPUT: usize = 4;
/// The input is cut here: room for one pattern over `MAX_PATTERN_BYTES`, nothing much bigger.
pub const MAX_INPUT: usize = 6 * 1024;
/// Longest pattern an `X` line builds.
pub const MAX_LONG_PATTERN: usize = 600;
/// Longest path a `Y` line builds: past `MAX_PATH_BYTES`, for `check_path`'s limit.
pub const MAX_LONG_PATH: usize = MAX_PATH_BYTES + 100;
/// Longest path given to `eval` (longer ones go only to `check_path`), to keep an input fast.
pub const MAX_EVAL_PATH: usize = 1024;
/// The priorities a PRIO byte picks from: the usual small ones, around `SECRET_PRIORITY`, extremes.
pub const PRIORITIES: [i32; 12] = [0, 1, -1, 5, 10, 99, 100, 101, 200, -5, i32::MAX, i32::MIN];

/// Paths the secret-hiding presets hide (their tests' fixture), checked under every preset input.
const SECRET_PATHS: [&str; 12] = [
    ".env",
    "config/.env.production",
    "secrets",
    "secrets/a",
    "x/secrets/b",
    "id.key",
    "certs/server.pem",
    "credentials.json",
    ".git",
    ".git/config",
    "vendor/lib/.git",
    "output/.env",
];

pub fn run(data: &[u8]) {
    let input = decode(&data[..data.len().min(MAX_INPUT)]);
    for (path, _) in &input.paths {
        check_codebase_path(path);
    }
    for (link, target) in &input.links {
        check_link(link, target);
    }
    let paths: Vec<(&str, bool)> =
        input.paths.iter().filter(|(p, _)| p.len() <= MAX_EVAL_PATH).map(|(p, d)| (p.as_str(), *d)).collect();
    let compiled = compile_checked(&input.rules);
    if let [rule] = &input.rules[..] {
        let naive = rule.kind == PatternType::Glob && NaiveGlob::parse(&rule.pattern).is_some();
        assert!(!naive || compiled.is_ok(), "a glob of names and `**` is refused: {:?}", compiled.as_ref().err());
    }
    if let Ok(rules) = &compiled {
        check_compiled(rules, &input.rules, &paths);
        check_order(rules, &input.rules, &paths);
        check_file_model(rules, &input.rules, &paths);
        check_glob_model(rules, &input.rules, &paths);
    }
    if let Some(preset) = input.preset {
        check_preset(preset, &input.rules, compiled.as_ref().err(), &paths);
    }
}

#[derive(Default)]
struct Input {
    rules: Vec<PermissionRule>,
    paths: Vec<(String, bool)>,
    links: Vec<(String, String)>,
    preset: Option<Preset>,
}

fn decode(data: &[u8]) -> Input {
    let mut input = Input::default();
    for line in data.split(|b| *b == b'\n').take(MAX_LINES) {
        let Some((&tag, rest)) = line.split_first() else { continue };
        match (tag, rest) {
            (b'R', [p, k, prio, pattern @ ..]) if input.rules.len() < RULES_PER_INPUT => {
                input.rules.push(PermissionRule::new(text(pattern), permission(*p), kind(*k), priority(*prio)));
            }
            (b'X', [p, k, prio, count, fragment @ ..]) if input.rules.len() < RULES_PER_INPUT => {
                let pattern = repeat(fragment, *count, MAX_LONG_PATTERN);
                input.rules.push(PermissionRule::new(pattern, permission(*p), kind(*k), priority(*prio)));
            }
            (b'P', [dir, path @ ..]) if input.paths.len() < PATHS_PER_INPUT => {
                input.paths.push((text(path), dir & 1 == 1))
            }
            (b'Y', [dir, count, fragment @ ..]) if input.paths.len() < PATHS_PER_INPUT => {
                input.paths.push((repeat(fragment, *count, MAX_LONG_PATH), dir & 1 == 1));
            }
            (b'L', rest) if input.links.len() < LINKS_PER_INPUT => {
                let (link, target) = match rest.iter().position(|b| *b == b'\t') {
                    Some(i) => (&rest[..i], &rest[i + 1..]),
                    None => (rest, &[][..]),
                };
                input.links.push((text(link), text(target)));
            }
            (b'S', [p, ..]) => input.preset = Preset::all().get(usize::from(p % 6)).copied(),
            _ => {}
        }
    }
    input
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `fragment` repeated `count + 1` times, but no more than fits in `max` bytes (at least once).
fn repeat(fragment: &[u8], count: u8, max: usize) -> String {
    let fragment = text(fragment);
    let fits = max / fragment.len().max(1);
    fragment.repeat((usize::from(count) + 1).min(fits).max(1))
}

fn permission(b: u8) -> Permission {
    match b {
        b'n' => Permission::None,
        b'v' => Permission::View,
        b'r' => Permission::Read,
        b'w' => Permission::Write,
        _ => [Permission::None, Permission::View, Permission::Read, Permission::Write][usize::from(b % 4)],
    }
}

fn kind(b: u8) -> PatternType {
    match b {
        b'g' => PatternType::Glob,
        b'd' => PatternType::Directory,
        b'f' => PatternType::File,
        _ => [PatternType::Glob, PatternType::Directory, PatternType::File][usize::from(b % 3)],
    }
}

fn priority(b: u8) -> i32 {
    let i = match b {
        b'0'..=b'9' => b - b'0',
        b'a' | b'b' => b - b'a' + 10,
        _ => b % 12,
    };
    PRIORITIES[usize::from(i)]
}

// --- Encoders, for the seeds -----------------------------------------------------------------

fn rule_fields(rule: &PermissionRule) -> [u8; 3] {
    let perm = match rule.permission {
        Permission::None => b'n',
        Permission::View => b'v',
        Permission::Read => b'r',
        Permission::Write => b'w',
    };
    let kind = match rule.kind {
        PatternType::Glob => b'g',
        PatternType::Directory => b'd',
        PatternType::File => b'f',
    };
    let i = PRIORITIES.iter().position(|p| *p == rule.priority).expect("a priority of PRIORITIES");
    [perm, kind, b"0123456789ab"[i]]
}

/// An `R` line.
pub fn rule_line(rule: &PermissionRule) -> Vec<u8> {
    [&b"R"[..], &rule_fields(rule), rule.pattern.as_bytes()].concat()
}

/// An `X` line: `rule`'s pattern is the fragment, repeated `count + 1` times.
pub fn long_rule_line(rule: &PermissionRule, count: u8) -> Vec<u8> {
    [&b"X"[..], &rule_fields(rule), &[count], rule.pattern.as_bytes()].concat()
}

/// A `P` line.
pub fn path_line(path: &str, is_dir: bool) -> Vec<u8> {
    [&[b'P', b'0' + u8::from(is_dir)][..], path.as_bytes()].concat()
}

/// A `Y` line.
pub fn long_path_line(fragment: &str, count: u8, is_dir: bool) -> Vec<u8> {
    [&[b'Y', b'0' + u8::from(is_dir), count][..], fragment.as_bytes()].concat()
}

/// An `L` line.
pub fn link_line(link: &str, target: &str) -> Vec<u8> {
    [&b"L"[..], link.as_bytes(), b"\t", target.as_bytes()].concat()
}

/// An `S` line.
pub fn preset_line(preset: Option<Preset>) -> Vec<u8> {
    let i = preset.map_or(5, |p| Preset::all().iter().position(|q| *q == p).expect("a preset"));
    vec![b'S', b'0' + i as u8]
}

// --- Compiling --------------------------------------------------------------------------------

/// Compiles `list` and checks the refusal, if any, names the first bad rule.
fn compile_checked(list: &[PermissionRule]) -> Result<Rules, RuleError> {
    let result = Rules::compile(list);
    let again = Rules::compile(list);
    assert_eq!(result.as_ref().err(), again.as_ref().err(), "compile is not deterministic on {list:?}");
    match &result {
        Err(e) => {
            assert!(e.index < list.len(), "error index {} of {} rules: {e}", e.index, list.len());
            assert_eq!(e.pattern, list[e.index].pattern, "the error's pattern is not rule {}'s: {e}", e.index);
            assert!(!e.reason.is_empty(), "{e}");
            assert!(e.to_string().starts_with(&format!("permission rule {} (", e.index)), "{e}");
            let before = Rules::compile(&list[..e.index]);
            assert!(before.is_ok(), "{e} is not the first bad rule: {:?}", before.err());
            let alone = Rules::compile(std::slice::from_ref(&list[e.index]));
            let alone = alone.expect_err("a rule refused in a list compiles alone");
            assert_eq!((alone.index, &alone.reason), (0, &e.reason), "alone and in a list, {:?}", list[e.index]);
        }
        Ok(rules) => {
            assert_eq!(rules.rules(), list, "Rules::rules is not the list given");
            for rule in list {
                assert!(Rules::compile(std::slice::from_ref(rule)).is_ok(), "{rule:?} alone is refused");
            }
        }
    }
    result
}

/// The tidy form of a path: its non-empty segments.
fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// A path as the rules are documented for: the root or a path `check_path` accepts.
fn well_formed(path: &str) -> bool {
    path.is_empty() || codebase::check_path(path).is_ok()
}

fn check_compiled(rules: &Rules, list: &[PermissionRule], paths: &[(&str, bool)]) {
    for is_dir in [true, false] {
        assert!(rules.eval("", is_dir) >= V, "the root is {} under {list:?}", rules.eval("", is_dir));
    }
    let second = Rules::compile(list).expect("compiled once");
    for &(path, is_dir) in paths {
        let got = rules.eval(path, is_dir);
        assert_eq!(rules.eval(path, is_dir), got, "eval({path:?}, {is_dir}) twice under {list:?}");
        assert_eq!(second.eval(path, is_dir), got, "eval({path:?}, {is_dir}) on a second compile of {list:?}");
        let tidy = segments(path).join("/");
        if tidy != path {
            assert_eq!(rules.eval(&tidy, is_dir), got, "eval({path:?}) and eval({tidy:?}) under {list:?}");
        }
    }
    for rule in list {
        let shown = rule.to_string();
        assert_eq!(PermissionRule::parse_cli(&shown).as_ref(), Ok(rule), "the CLI form {shown:?} of {rule:?}");
    }
}

/// "Every part of that order is a property of the rule alone": rules whose priority and type all
/// differ evaluate the same in any order (the rest of the order is only a tie-break among them).
fn check_order(rules: &Rules, list: &[PermissionRule], paths: &[(&str, bool)]) {
    let keys: Vec<(i32, &str)> = list.iter().map(|r| (r.priority, r.kind.as_str())).collect();
    if (1..keys.len()).any(|i| keys[..i].contains(&keys[i])) {
        return;
    }
    let reversed: Vec<PermissionRule> = list.iter().rev().cloned().collect();
    let other = Rules::compile(&reversed).expect("the same rules, reversed");
    for &(path, is_dir) in paths.iter().chain([("", true)].iter()) {
        assert_eq!(other.eval(path, is_dir), rules.eval(path, is_dir), "{path:?} {is_dir} under {list:?} reversed");
    }
}

// --- File rules only --------------------------------------------------------------------------

/// The segments a File pattern names (one leading `/` dropped).
fn file_segments(rule: &PermissionRule) -> Vec<&str> {
    rule.pattern.strip_prefix('/').unwrap_or(&rule.pattern).split('/').collect()
}

/// The documented answer for File rules only: among the rules naming exactly `path`, the highest
/// priority wins, then the later rule (same type; the literal prefix is the whole path, the same
/// for all of them). If that is `None` or nothing names it: the root is `View`; a directory is
/// `View` when a File rule above `None` names a path beneath it (nothing covers a whole subtree);
/// anything else is `None`.
fn file_model(list: &[PermissionRule], path: &[&str], is_dir: bool) -> Permission {
    let winner =
        list.iter().enumerate().filter(|(_, r)| file_segments(r) == path).max_by_key(|(i, r)| (r.priority, *i));
    match winner {
        Some((_, r)) if r.permission > N => r.permission,
        _ if path.is_empty() => V,
        _ if is_dir
            && list.iter().any(|r| {
                let named = file_segments(r);
                r.permission > N && named.len() > path.len() && named.starts_with(path)
            }) =>
        {
            V
        }
        _ => N,
    }
}

fn check_file_model(rules: &Rules, list: &[PermissionRule], paths: &[(&str, bool)]) {
    if list.iter().any(|r| r.kind != PatternType::File) {
        return;
    }
    // The input's paths, and each rule's path with its ancestors and a child.
    let mut cases: Vec<Vec<&str>> = paths.iter().filter(|(p, _)| well_formed(p)).map(|(p, _)| segments(p)).collect();
    for rule in list {
        let named = file_segments(rule);
        cases.extend((0..=named.len()).map(|k| named[..k].to_vec()));
        cases.push([&named[..], &["child"]].concat());
    }
    for path in &cases {
        let joined = path.join("/");
        for is_dir in [true, false] {
            let want = file_model(list, path, is_dir);
            let got = rules.eval(&joined, is_dir);
            assert_eq!(got, want, "eval({joined:?}, is_dir {is_dir}) under the File rules {list:?}");
        }
    }
}

// --- One glob of literal names and `**` -------------------------------------------------------

/// Most `**` and segments of a glob, and segments of a path, the naive matcher is run on (it
/// backtracks over every way to split the path among the `**`).
const NAIVE_MAX_STARS: usize = 3;
const NAIVE_MAX_SEGMENTS: usize = 16;
const NAIVE_MAX_PATH: usize = 24;

#[derive(Clone, Debug, PartialEq)]
enum NaiveSeg {
    /// `**`: zero or more whole segments.
    Any,
    /// A name, its escapes resolved.
    Name(String),
}

/// A glob made only of literal names (with `\` escapes) and `**`, read as the module docs
/// describe.
#[derive(Debug)]
struct NaiveGlob {
    segs: Vec<NaiveSeg>,
    dir_only: bool,
}

/// One segment of a glob between slashes: `**`, or a name without unescaped `*`, `?` or `[` whose
/// escapes are resolved (`\x` is `x`). `None` for what the model leaves out or the engine refuses:
/// wildcards and classes, a `\` with nothing after it (an escaped `/` splits into one of those),
/// empty, `.` and `..` segments.
fn naive_segment(raw: &str) -> Option<NaiveSeg> {
    if raw == "**" {
        return Some(NaiveSeg::Any);
    }
    if raw.is_empty() || raw == "." || raw == ".." {
        return None;
    }
    let mut name = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => name.push(chars.next()?),
            '*' | '?' | '[' => return None,
            c => name.push(c),
        }
    }
    Some(NaiveSeg::Name(name))
}

impl NaiveGlob {
    /// `None` unless the pattern is valid, short and only literal names and `**`.
    fn parse(pattern: &str) -> Option<NaiveGlob> {
        if pattern.len() > MAX_PATTERN_BYTES || pattern.contains('\0') {
            return None;
        }
        let (p, leading) = pattern.strip_prefix('/').map_or((pattern, false), |p| (p, true));
        let (p, mut dir_only) = p.strip_suffix('/').map_or((p, false), |p| (p, true));
        // A trailing `/` after an odd run of `\` is an escaped slash, which no name can hold.
        if dir_only && p.bytes().rev().take_while(|b| *b == b'\\').count() % 2 == 1 {
            return None;
        }
        let mut raw: Vec<&str> = p.split('/').collect();
        // "a slash at the start or in the middle anchors it"; without one, "at any depth".
        let anchored = leading || raw.len() > 1;
        // "A trailing `/**` therefore means the same as a trailing `/`".
        while raw.len() > 1 && raw.last() == Some(&"**") {
            raw.pop();
            dir_only = true;
        }
        let mut segs = if anchored { vec![] } else { vec![NaiveSeg::Any] };
        for r in raw {
            segs.push(naive_segment(r)?);
        }
        let stars = segs.iter().filter(|s| **s == NaiveSeg::Any).count();
        (stars <= NAIVE_MAX_STARS && segs.len() <= NAIVE_MAX_SEGMENTS).then_some(NaiveGlob { segs, dir_only })
    }

    /// The pattern matches `path` itself, or one of its ancestors (a directory, which covers
    /// everything beneath it); a trailing `/` needs the path itself to be a directory.
    fn matches(&self, path: &[&str], is_dir: bool) -> bool {
        (0..=path.len()).any(|k| whole(&self.segs, &path[..k]) && (k < path.len() || is_dir || !self.dir_only))
    }
}

/// The segments `pat` match all of `path`, trying every split at each `**`.
fn whole(pat: &[NaiveSeg], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((NaiveSeg::Any, rest)) => (0..=path.len()).any(|k| whole(rest, &path[k..])),
        Some((NaiveSeg::Name(name), rest)) => path.first() == Some(&name.as_str()) && whole(rest, &path[1..]),
    }
}

/// Some path strictly beneath `dir` matches `pat` whole: `pat` can consume `dir` and still has a
/// segment left (a `**` can always take one more name, a name is matched by itself).
fn beneath(pat: &[NaiveSeg], dir: &[&str]) -> bool {
    match (pat.split_first(), dir.split_first()) {
        (None, _) => false,
        (Some((NaiveSeg::Any, _)), _) => true,
        (Some((NaiveSeg::Name(_), _)), None) => true,
        (Some((NaiveSeg::Name(name), rest)), Some((first, dir))) => first == name && beneath(rest, dir),
    }
}

/// `eval` for the single rule `g` = `permission`, per the docs: a match above `None` decides;
/// otherwise the root is `View`, a directory is `View` when the (visible) rule could match
/// beneath it, and the rest is `None`.
fn glob_model(g: &NaiveGlob, permission: Permission, path: &[&str], is_dir: bool) -> Permission {
    let is_dir = is_dir || path.is_empty();
    if permission > N && g.matches(path, is_dir) {
        permission
    } else if path.is_empty() || (is_dir && permission > N && beneath(&g.segs, path)) {
        V
    } else {
        N
    }
}

fn check_glob_model(rules: &Rules, list: &[PermissionRule], paths: &[(&str, bool)]) {
    let [rule] = list else { return };
    if rule.kind != PatternType::Glob {
        return;
    }
    let Some(g) = NaiveGlob::parse(&rule.pattern) else { return };
    // The input's paths, and paths made from the pattern: each `**` as nothing, one or two names
    // (all alike, or one at a time), at the root or one level down, with their ancestors.
    let mut cases: Vec<Vec<&str>> = paths.iter().filter(|(p, _)| well_formed(p)).map(|(p, _)| segments(p)).collect();
    let stars: Vec<usize> = (0..g.segs.len()).filter(|i| g.segs[*i] == NaiveSeg::Any).collect();
    let fill = |width: &dyn Fn(usize) -> usize| -> Vec<&str> {
        let mut out = Vec::new();
        for (i, seg) in g.segs.iter().enumerate() {
            match seg {
                NaiveSeg::Any => out.extend(std::iter::repeat_n("q", width(i))),
                NaiveSeg::Name(n) => out.push(n.as_str()),
            }
        }
        out
    };
    let mut made = vec![fill(&|_| 0), fill(&|_| 1), fill(&|_| 2)];
    made.extend(stars.iter().map(|s| fill(&|i| usize::from(i == *s))));
    for path in made {
        for top in [&[][..], &["q"][..]] {
            let path = [top, &path[..]].concat();
            cases.extend((0..=path.len()).map(|k| path[..k].to_vec()));
            cases.push([&path[..], &["child"]].concat());
        }
    }
    // Only paths as the docs describe them: an escaped `.` is a name no path has.
    let documented = |p: &&Vec<&str>| p.len() <= NAIVE_MAX_PATH && p.iter().all(|s| *s != "." && *s != "..");
    for path in cases.iter().filter(documented) {
        let joined = path.join("/");
        for is_dir in [true, false] {
            let want = glob_model(&g, rule.permission, path, is_dir);
            let got = rules.eval(&joined, is_dir);
            assert_eq!(got, want, "eval({joined:?}, is_dir {is_dir}) under the glob {rule:?} (read as {g:?})");
        }
    }
}

// --- Presets ----------------------------------------------------------------------------------

fn check_preset(preset: Preset, extra: &[PermissionRule], extra_error: Option<&RuleError>, paths: &[(&str, bool)]) {
    let base = preset.rules();
    let list = expand(Some(preset), extra);
    assert_eq!(
        list,
        [&base[..], extra].concat(),
        "expand({}) is not the preset's rules then the extras",
        preset.name()
    );
    let alone = Rules::compile(&base).expect("a preset's rules compile");
    let compiled = compile_checked(&list);
    match (&compiled, extra_error) {
        (Err(e), Some(x)) => assert_eq!((e.index, &e.reason), (base.len() + x.index, &x.reason), "{e} vs {x}"),
        (Ok(_), None) => {}
        (got, want) => {
            panic!("{} with extras {extra:?}: {:?}, the extras alone {want:?}", preset.name(), got.as_ref().err())
        }
    }
    let Ok(rules) = compiled else { return };
    check_compiled(&rules, &list, paths);
    // "Extra rules have priority 0 unless given one, so they cannot uncover a secret by accident."
    let hides = matches!(preset, Preset::AgentSafe | Preset::Development);
    if !hides || extra.iter().any(|r| r.priority >= SECRET_PRIORITY) {
        return;
    }
    let secrets = SECRET_PATHS.iter().map(|p| (*p, true)).chain(SECRET_PATHS.iter().map(|p| (*p, false)));
    for (path, is_dir) in paths.iter().copied().filter(|(p, _)| well_formed(p)).chain(secrets) {
        if alone.eval(path, is_dir) == N {
            let got = rules.eval(path, is_dir);
            assert_eq!(got, N, "{} hides {path:?} (is_dir {is_dir}) but not with {extra:?}", preset.name());
        }
    }
}

// --- Codebase paths ---------------------------------------------------------------------------

/// What `check_path` documents: non-empty, relative, not over-long, no NUL, every segment a
/// non-empty name other than `.` and `..` and at most `MAX_SEGMENT_BYTES`.
fn path_model(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_PATH_BYTES
        && !path.starts_with('/')
        && !path.contains('\0')
        && path.split('/').all(|s| !s.is_empty() && s != "." && s != ".." && s.len() <= MAX_SEGMENT_BYTES)
}

fn check_codebase_path(path: &str) {
    let got = codebase::check_path(path);
    if let Err(e) = &got {
        assert!(!e.is_empty(), "an empty refusal of {path:?}");
    }
    assert_eq!(got.is_ok(), path_model(path), "check_path({path:?}) = {got:?}");
}

/// A symlink at `link` (a path `check_path` accepts) may point at `target` when the target is
/// relative and not empty, over-long or with NUL, and walking it from the link's directory
/// (`depth` names below the root) never climbs above the root.
fn link_model(link: &str, target: &str) -> bool {
    if target.is_empty() || target.len() > MAX_PATH_BYTES || target.contains('\0') || target.starts_with('/') {
        return false;
    }
    let mut depth = link.matches('/').count();
    for seg in target.split('/') {
        match seg {
            "" | "." => {}
            ".." if depth == 0 => return false,
            ".." => depth -= 1,
            _ => depth += 1,
        }
    }
    true
}

fn check_link(link: &str, target: &str) {
    let got = codebase::check_link_target(link, target);
    if codebase::check_path(link).is_ok() {
        assert_eq!(got.is_ok(), link_model(link, target), "check_link_target({link:?}, {target:?}) = {got:?}");
    }
}
