//! Path permission rules: which paths of a codebase a sandbox may see, read or write.
//!
//! A rule names paths with a pattern and grants one [`Permission`]; [`Rules::compile`] validates a
//! list and [`Rules::eval`] answers for one path. The FUSE filesystem (`corral-fs`) calls `eval`
//! on every lookup, so it is pure, allocation-light and never touches the filesystem.
//!
//! - `glob`: the gitignore-style matcher (own code, an NFA over path segments).
//! - `rules`: compiling and evaluating a list ([`Rules`]), including the visibility of ancestors.
//! - `presets`: the named starting points ([`Preset`]) and [`expand`].
//!
//! # Patterns
//!
//! Paths are relative to the codebase root, `/`-separated, without leading or trailing slash;
//! `""` is the root.
//!
//! - [`PatternType::File`] `a/b.txt` (or `/a/b.txt`) matches exactly that path.
//! - [`PatternType::Directory`] `src` (or `src/`, `/src`) matches `src` and everything beneath it.
//! - [`PatternType::Glob`] follows gitignore: a pattern without a slash (a trailing one aside)
//!   matches a name at any depth (`*.key` matches `a/b/c.key`); a slash at the start or in the
//!   middle anchors it to the root (`/x`, `a/*.md`); `*` and `?` stay within one segment; `**`
//!   matches any number of segments, zero included, as often as it appears (`**/secrets/**`);
//!   `[abc]`, `[a-z]`, `[!x]` / `[^x]` are character classes (no POSIX `[:name:]` classes);
//!   `\` escapes the next character; a trailing `/` matches directories only.
//!   As in gitignore, a glob that matches a directory covers everything beneath it: `.git/`
//!   hides `.git/config`, and `*.key` hides `old.key/notes` too. A trailing `/**` therefore means
//!   the same as a trailing `/`: `secrets/**` matches the directory `secrets` itself (so a hiding
//!   rule hides the directory, not only its contents) and everything in it — but not a *file*
//!   named `secrets`.
//!
//! # Which rule wins
//!
//! Among the rules matching a path: the highest `priority`; then the most specific type
//! (File > Directory > Glob); then the longest literal prefix (the pattern's bytes before its
//! first `*`, `?`, `[` or `\`, after dropping a leading `/`; the whole path for File and
//! Directory rules); then the later rule in the list. Every part of that order is a property of
//! the rule alone, so the rules are sorted once and the first match wins.
//!
//! A path no rule matches gets [`Permission::None`], with two exceptions: the root is always at
//! least `View`, and so is a directory that leads to something visible (see [`Rules::eval`]).

mod glob;
mod presets;
mod rules;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use presets::{Preset, SECRET_PRIORITY, expand};
pub use rules::{MAX_PATTERN_BYTES, MAX_RULES, Rules};

/// What a sandbox may do with a path, in increasing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Hidden: lookups answer "no such file", listings omit it.
    None,
    /// Listed and `stat`-able (a directory can be listed and entered); contents unreadable.
    View,
    /// Readable, not changeable.
    Read,
    /// Readable and changeable, and new paths may be created there.
    Write,
}

/// How a rule's pattern is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatternType {
    /// A gitignore-style pattern (the default).
    #[default]
    Glob,
    /// A directory and everything beneath it.
    Directory,
    /// Exactly one path.
    File,
}

/// One rule as written by a user (CLI, API, config) or a preset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionRule {
    pub pattern: String,
    pub permission: Permission,
    #[serde(rename = "type", default)]
    pub kind: PatternType,
    /// Higher wins; 0 when none is given.
    #[serde(default)]
    pub priority: i32,
}

/// A rule that cannot be used, naming it by its position in the list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("permission rule {index} ({pattern:?}): {reason}")]
pub struct RuleError {
    pub index: usize,
    pub pattern: String,
    pub reason: String,
}

impl RuleError {
    pub(crate) fn new(index: usize, pattern: &str, reason: impl Into<String>) -> RuleError {
        RuleError { index, pattern: pattern.to_owned(), reason: reason.into() }
    }
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::None => "none",
            Permission::View => "view",
            Permission::Read => "read",
            Permission::Write => "write",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = String;

    fn from_str(s: &str) -> Result<Permission, String> {
        [Permission::None, Permission::View, Permission::Read, Permission::Write]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown permission {s:?} (expected none, view, read or write)"))
    }
}

impl PatternType {
    pub fn as_str(self) -> &'static str {
        match self {
            PatternType::Glob => "glob",
            PatternType::Directory => "directory",
            PatternType::File => "file",
        }
    }
}

impl fmt::Display for PatternType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PatternType {
    type Err = String;

    fn from_str(s: &str) -> Result<PatternType, String> {
        [PatternType::Glob, PatternType::Directory, PatternType::File]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown pattern type {s:?} (expected glob, directory or file)"))
    }
}

impl PermissionRule {
    /// A rule from its parts.
    pub fn new(pattern: impl Into<String>, permission: Permission, kind: PatternType, priority: i32) -> Self {
        PermissionRule { pattern: pattern.into(), permission, kind, priority }
    }

    /// Parses the CLI form `PATTERN=PERM`, `PATTERN=PERM:TYPE` or `PATTERN=PERM:TYPE:PRIORITY`
    /// (e.g. `docs/**=write`, `notes.txt=read:file:5`); the type defaults to `glob` and the
    /// priority to 0. The split is at the last `=`, so a pattern may contain `=`. The rule is
    /// validated as [`Rules::compile`] would; errors name index 0 (a caller parsing a list sets
    /// the index it knows).
    pub fn parse_cli(s: &str) -> Result<PermissionRule, RuleError> {
        let (pattern, spec) = s.rsplit_once('=').ok_or_else(|| {
            RuleError::new(0, s, "expected PATTERN=PERMISSION[:TYPE[:PRIORITY]], e.g. 'docs/**=write'")
        })?;
        let err = |reason: String| RuleError::new(0, pattern, reason);
        let mut parts = spec.split(':');
        let permission = parts.next().unwrap_or_default().parse::<Permission>().map_err(err)?;
        let kind = parts.next().map(str::parse::<PatternType>).transpose().map_err(err)?.unwrap_or_default();
        let priority = parts
            .next()
            .map(|p| p.trim().parse::<i32>().map_err(|e| err(format!("priority {p:?}: {e}"))))
            .transpose()?
            .unwrap_or(0);
        if parts.next().is_some() {
            return Err(err(format!("too many ':' parts in {spec:?} (PERMISSION[:TYPE[:PRIORITY]])")));
        }
        let rule = PermissionRule { pattern: pattern.to_owned(), permission, kind, priority };
        Rules::compile(std::slice::from_ref(&rule))?;
        Ok(rule)
    }
}

impl fmt::Display for PermissionRule {
    /// The CLI form, which [`PermissionRule::parse_cli`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}:{}:{}", self.pattern, self.permission, self.kind, self.priority)
    }
}
