//! Compiling a rule list and evaluating it for one path.

use std::cmp::Reverse;

use super::glob::{Glob, literal_prefix_len};
use super::{PatternType, Permission, PermissionRule, RuleError};

/// The most rules one list may hold.
pub const MAX_RULES: usize = 1024;
/// The longest pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 4096;

/// A validated rule list, compiled for [`Rules::eval`]: immutable and cheap to clone and evaluate.
#[derive(Clone, Debug)]
pub struct Rules {
    /// As given.
    rules: Vec<PermissionRule>,
    /// Compiled, strongest first (see "Which rule wins" in the module docs).
    sorted: Vec<Compiled>,
}

#[derive(Clone, Debug)]
struct Compiled {
    matcher: Matcher,
    permission: Permission,
}

#[derive(Clone, Debug)]
enum Matcher {
    /// Exactly this path (its segments).
    File(Vec<String>),
    /// This path and everything beneath it.
    Directory(Vec<String>),
    Glob(Glob),
}

impl Rules {
    /// Validates and compiles `rules`. Refused, naming the first bad rule's index: more than
    /// [`MAX_RULES`] rules; an empty pattern or one longer than [`MAX_PATTERN_BYTES`]; a NUL, a
    /// `.` or `..` segment, an empty segment (`a//b`); an unclosed `[` class, a reversed range or
    /// a dangling `\` in a glob; a `File` or `Directory` pattern with glob characters
    /// (`* ? [ ] \`), naming the root, or (for `File`) ending with `/`.
    pub fn compile(rules: &[PermissionRule]) -> Result<Rules, RuleError> {
        if rules.len() > MAX_RULES {
            let extra = &rules[MAX_RULES];
            return Err(RuleError::new(MAX_RULES, &extra.pattern, format!("more than {MAX_RULES} rules")));
        }
        let mut keyed = Vec::with_capacity(rules.len());
        for (index, rule) in rules.iter().enumerate() {
            let matcher = compile_one(rule).map_err(|reason| RuleError::new(index, &rule.pattern, reason))?;
            let (rank, prefix) = match &matcher {
                Matcher::File(p) => (2u8, p.join("/").len()),
                Matcher::Directory(p) => (1, p.join("/").len()),
                Matcher::Glob(_) => (0, literal_prefix_len(&rule.pattern)),
            };
            let key = (rule.priority, rank, prefix, index);
            keyed.push((key, Compiled { matcher, permission: rule.permission }));
        }
        keyed.sort_by_key(|(key, _)| Reverse(*key));
        Ok(Rules { rules: rules.to_vec(), sorted: keyed.into_iter().map(|(_, c)| c).collect() })
    }

    /// The permission of `path` (relative to the codebase root, `/`-separated, no leading or
    /// trailing slash; `""` is the root), which is a directory when `is_dir`.
    ///
    /// The strongest matching rule decides. When that gives `None` (or nothing matches):
    /// - the root is `View`;
    /// - a directory is `View` — listable and enterable, nothing more — when something beneath it
    ///   could be visible: some rule with a permission above `None` that is stronger than every
    ///   rule covering the directory's whole subtree with `None` (a matching Directory rule or
    ///   glob) could match beneath it. A File or Directory rule could match beneath when it names
    ///   a path under the directory; a glob when, after the directory's segments, the pattern
    ///   still has segments to match: a glob whose literal part leads under the directory, and
    ///   every glob starting with `**` or without a slash (those match at any depth). So
    ///   `*.md=read` makes every directory `View`, while under `agent-safe` the hidden `.git`
    ///   stays hidden because the rule hiding it outranks `**=read`. This judges patterns, not
    ///   the tree: a directory can be `View` with nothing visible in it.
    /// - anything else is `None`.
    pub fn eval(&self, path: &str, is_dir: bool) -> Permission {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let is_dir = is_dir || segs.is_empty();
        let winner = self.sorted.iter().find(|c| c.matcher.matches(&segs, is_dir));
        match winner {
            Some(c) if c.permission > Permission::None => c.permission,
            _ if segs.is_empty() => Permission::View,
            _ if is_dir && self.leads_to_visible(&segs) => Permission::View,
            _ => Permission::None,
        }
    }

    /// The rules as given to [`Rules::compile`].
    pub fn rules(&self) -> &[PermissionRule] {
        &self.rules
    }

    /// Whether something beneath the directory `dir` could be visible (see [`Rules::eval`]).
    fn leads_to_visible(&self, dir: &[&str]) -> bool {
        for c in &self.sorted {
            if c.matcher.covers(dir) {
                // Every path beneath matches this rule, so no weaker rule can win there.
                return c.permission > Permission::None;
            }
            if c.permission > Permission::None && c.matcher.could_match_beneath(dir) {
                return true;
            }
        }
        false
    }
}

impl Matcher {
    fn matches(&self, path: &[&str], is_dir: bool) -> bool {
        match self {
            Matcher::File(p) => p.len() == path.len() && p.iter().zip(path).all(|(a, b)| a == b),
            Matcher::Directory(p) => p.len() <= path.len() && p.iter().zip(path).all(|(a, b)| a == b),
            Matcher::Glob(g) => g.matches(path, is_dir),
        }
    }

    /// Whether the rule matches the directory `dir` and so everything beneath it.
    fn covers(&self, dir: &[&str]) -> bool {
        match self {
            Matcher::File(_) => false,
            Matcher::Directory(_) | Matcher::Glob(_) => self.matches(dir, true),
        }
    }

    fn could_match_beneath(&self, dir: &[&str]) -> bool {
        match self {
            Matcher::File(p) | Matcher::Directory(p) => p.len() > dir.len() && p.iter().zip(dir).all(|(a, b)| a == b),
            Matcher::Glob(g) => g.could_match_beneath(dir),
        }
    }
}

fn compile_one(rule: &PermissionRule) -> Result<Matcher, String> {
    let pattern = rule.pattern.as_str();
    if pattern.is_empty() {
        return Err("the pattern is empty".into());
    }
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(format!("the pattern is longer than {MAX_PATTERN_BYTES} bytes"));
    }
    if pattern.contains('\0') {
        return Err("the pattern contains a NUL byte".into());
    }
    match rule.kind {
        PatternType::Glob => Glob::parse(pattern).map(Matcher::Glob),
        PatternType::File => literal_path(pattern, false).map(Matcher::File),
        PatternType::Directory => literal_path(pattern, true).map(Matcher::Directory),
    }
}

/// The segments of a File or Directory pattern: one leading `/` is allowed, a trailing one only
/// for directories.
fn literal_path(pattern: &str, is_dir: bool) -> Result<Vec<String>, String> {
    if let Some(c) = pattern.chars().find(|c| matches!(c, '*' | '?' | '[' | ']' | '\\')) {
        return Err(format!("'{c}' is a glob character; use the glob type for patterns"));
    }
    let mut p = pattern.strip_prefix('/').unwrap_or(pattern);
    if let Some(stripped) = p.strip_suffix('/') {
        if !is_dir {
            return Err("a file pattern cannot end with '/'".into());
        }
        p = stripped;
    }
    if p.is_empty() {
        return Err("the pattern names the root (use the glob `**` for everything)".into());
    }
    p.split('/')
        .map(|seg| match seg {
            "" => Err("empty path segment ('//')".to_string()),
            "." | ".." => Err(format!("'{seg}' segments are not allowed")),
            _ => Ok(seg.to_owned()),
        })
        .collect()
}
