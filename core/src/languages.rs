//! The `run_code` language registry: each language's canonical name, aliases, the file its code is
//! written to, the toolchain program it needs, and how that program runs the file.
//!
//! The agent resolves each language's program to an absolute path a runtime can see (see
//! [`SEARCH_DIRS`]) and publishes what it found in its `NodeInfo`; the coordinator builds the
//! command from the registry and that path, so no sandbox ever goes through a `PATH` lookup (or
//! a pyenv-style shim costing ~200 ms per launch).

use serde::{Deserialize, Serialize};

use crate::model::{Command, RuntimeKind};

/// How a language's program turns the code file into a running process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// `{program} {file}`.
    Interpret,
    /// `{program} run {file}` (go).
    GoRun,
    /// `{program} -o {dir}/main {file} && exec {dir}/main` (gcc, rustc).
    Compile,
}

/// One entry of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Language {
    /// The canonical name.
    pub name: &'static str,
    /// Other names accepted for it (lower case).
    pub aliases: &'static [&'static str],
    /// The file the code is written to inside the sandbox.
    pub file_name: &'static str,
    /// File extensions (without the dot) that `detect` maps to this language.
    pub extensions: &'static [&'static str],
    /// Candidate program names, in order of preference.
    pub programs: &'static [&'static str],
    pub runner: Runner,
}

/// Every language Corral knows, in display order.
pub const LANGUAGES: &[Language] = &[
    lang("python", &["py", "python3"], "main.py", &["py"], &["python3"], Runner::Interpret),
    lang(
        "javascript",
        &["js", "node", "nodejs"],
        "main.js",
        &["js", "mjs", "cjs"],
        &["node", "nodejs"],
        Runner::Interpret,
    ),
    lang("bash", &[], "main.sh", &["sh", "bash"], &["bash"], Runner::Interpret),
    lang("sh", &["shell"], "main.sh", &[], &["sh", "dash"], Runner::Interpret),
    lang("ruby", &["rb"], "main.rb", &["rb"], &["ruby"], Runner::Interpret),
    lang("perl", &["pl"], "main.pl", &["pl", "pm"], &["perl"], Runner::Interpret),
    lang("c", &["gcc"], "main.c", &["c"], &["gcc", "cc"], Runner::Compile),
    lang("go", &["golang"], "main.go", &["go"], &["go"], Runner::GoRun),
    lang("rust", &["rs", "rustc"], "main.rs", &["rs"], &["rustc"], Runner::Compile),
];

const fn lang(
    name: &'static str,
    aliases: &'static [&'static str],
    file_name: &'static str,
    extensions: &'static [&'static str],
    programs: &'static [&'static str],
    runner: Runner,
) -> Language {
    Language { name, aliases, file_name, extensions, programs, runner }
}

/// Directories searched for a language's program, in order of preference. All lie under the
/// host directories a bubblewrap sandbox mounts (`/usr`, `/bin`); `/usr/bin` comes first so the
/// distribution's interpreter wins over anything in `/usr/local`.
pub const SEARCH_DIRS: [&str; 4] = ["/usr/bin", "/bin", "/usr/local/bin", "/usr/lib/go/bin"];

/// Host directories a bubblewrap sandbox sees; a program (after following symlinks) must lie in one.
pub const SANDBOX_VISIBLE_ROOTS: [&str; 6] = ["/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/lib32/"];

/// The registry entry for a name or alias (case and surrounding blanks ignored).
pub fn resolve(name: &str) -> Option<&'static Language> {
    let name = name.trim().to_ascii_lowercase();
    LANGUAGES.iter().find(|l| l.name == name || l.aliases.contains(&name.as_str()))
}

/// The language of a file name, by its extension (`main.py` → python); `None` when unknown.
pub fn detect(file_name: &str) -> Option<&'static Language> {
    let (_, ext) = file_name.rsplit_once('.')?;
    let ext = ext.to_ascii_lowercase();
    LANGUAGES.iter().find(|l| l.extensions.contains(&ext.as_str()))
}

impl Language {
    /// Where its program may be, in order of preference: each program name in each of
    /// [`SEARCH_DIRS`].
    pub fn candidates(&self) -> impl Iterator<Item = String> + '_ {
        self.programs.iter().flat_map(|p| SEARCH_DIRS.iter().map(move |d| format!("{d}/{p}")))
    }

    /// The command that runs `{dir}/{file_name}` with `program` (an absolute path). `dir` must be
    /// a plain absolute path (no quotes or blanks): it is pasted into a shell line for compilers.
    pub fn command(&self, program: &str, dir: &str) -> Command {
        let file = format!("{dir}/{}", self.file_name);
        match self.runner {
            Runner::Interpret => Command::Argv(vec![program.to_owned(), file]),
            Runner::GoRun => Command::Argv(vec![program.to_owned(), "run".to_owned(), file]),
            Runner::Compile => Command::Shell(format!("'{program}' -o '{dir}/main' '{file}' && exec '{dir}/main'")),
        }
    }
}

/// A language a node can run in one of its runtimes, with the program that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanguageOffer {
    /// Canonical registry name.
    pub language: String,
    pub runtime: RuntimeKind,
    /// The Docker image whose containers have the program; empty for bubblewrap (every
    /// sandbox sees the host's `/usr`).
    #[serde(default)]
    pub image: String,
    /// Absolute path of the program inside the runtime's sandboxes.
    pub program: String,
}

impl LanguageOffer {
    /// Whether this offer is for sandboxes of `runtime` (and, for Docker, of `image`).
    pub fn serves(&self, runtime: RuntimeKind, image: &str) -> bool {
        self.runtime == runtime && (runtime != RuntimeKind::Docker || self.image == image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_resolve_to_the_canonical_name() {
        for (alias, name) in [
            ("py", "python"),
            ("Python3", "python"),
            (" js ", "javascript"),
            ("node", "javascript"),
            ("golang", "go"),
            ("rs", "rust"),
            ("shell", "sh"),
            ("bash", "bash"),
            ("c", "c"),
        ] {
            assert_eq!(resolve(alias).map(|l| l.name), Some(name), "{alias}");
        }
    }

    #[test]
    fn unknown_languages_are_none() {
        assert!(resolve("cobol").is_none());
        assert!(resolve("").is_none());
        assert!(detect("Makefile").is_none());
        assert!(detect("x.cob").is_none());
    }

    #[test]
    fn names_and_aliases_are_unique_and_lower_case() {
        let mut all: Vec<&str> =
            LANGUAGES.iter().flat_map(|l| std::iter::once(l.name).chain(l.aliases.iter().copied())).collect();
        assert!(all.iter().all(|n| *n == n.to_ascii_lowercase()));
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a name or alias is used twice");
        let required = ["python", "javascript", "bash", "sh", "ruby", "perl", "c", "go", "rust"];
        assert!(required.iter().all(|r| resolve(r).is_some()));
    }

    #[test]
    fn file_names_and_detection_agree() {
        assert_eq!(resolve("python").unwrap().file_name, "main.py");
        assert_eq!(resolve("c").unwrap().file_name, "main.c");
        assert_eq!(resolve("go").unwrap().file_name, "main.go");
        for l in LANGUAGES {
            assert_eq!(detect(l.file_name).map(|d| d.name), Some(if l.name == "sh" { "bash" } else { l.name }));
        }
        assert_eq!(detect("src/app.MJS").map(|l| l.name), Some("javascript"));
        assert_eq!(detect("run.sh").map(|l| l.name), Some("bash"));
    }

    #[test]
    fn commands_run_the_file_with_the_resolved_program() {
        let py = resolve("py").unwrap().command("/usr/bin/python3", "/tmp/c1");
        assert_eq!(py, Command::Argv(vec!["/usr/bin/python3".into(), "/tmp/c1/main.py".into()]));
        let go = resolve("go").unwrap().command("/usr/bin/go", "/tmp/c1");
        assert_eq!(go, Command::Argv(vec!["/usr/bin/go".into(), "run".into(), "/tmp/c1/main.go".into()]));
        let c = resolve("c").unwrap().command("/usr/bin/gcc", "/tmp/c1");
        assert_eq!(
            c,
            Command::Shell("'/usr/bin/gcc' -o '/tmp/c1/main' '/tmp/c1/main.c' && exec '/tmp/c1/main'".into())
        );
    }
}
