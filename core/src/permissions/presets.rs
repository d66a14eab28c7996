//! Named starting points for a sandbox's rules.

use super::{PatternType, Permission, PermissionRule, RuleError};

/// The priority of the secret-hiding rules of `agent-safe` and `development`. Extra rules have
/// priority 0 unless given one, so they cannot uncover a secret by accident; an extra rule with a
/// priority above this one (or equal to it and more specific) re-grants.
pub const SECRET_PRIORITY: i32 = 100;

/// A named rule set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    /// Everything `View`: names and metadata, no contents.
    ViewOnly,
    /// Everything `Read`.
    ReadOnly,
    /// Everything `Read`; `/output/` and `/tmp/` `Write`; the secrets hidden.
    AgentSafe,
    /// Everything `Write`; the secrets hidden.
    Development,
    /// Everything `Write`.
    FullAccess,
}

/// What `agent-safe` and `development` hide, at any depth: dotenv files, `secrets` directories
/// (with their contents), keys and certificates, credential files, and git metadata. `.git` has no
/// trailing slash so that it also hides the `.git` *file* of a worktree or submodule (which names
/// the real git directory).
const SECRETS: [&str; 6] = [".env*", "**/secrets/**", "*.key", "*.pem", "credentials*", ".git"];

impl Preset {
    /// Parses a preset's name (`view-only`, `read-only`, `agent-safe`, `development`,
    /// `full-access`); errors name index 0.
    pub fn parse(s: &str) -> Result<Preset, RuleError> {
        Preset::all().into_iter().find(|p| p.name() == s.trim()).ok_or_else(|| {
            let names: Vec<&str> = Preset::all().iter().map(|p| p.name()).collect();
            RuleError::new(0, s, format!("unknown preset (expected one of {})", names.join(", ")))
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::ViewOnly => "view-only",
            Preset::ReadOnly => "read-only",
            Preset::AgentSafe => "agent-safe",
            Preset::Development => "development",
            Preset::FullAccess => "full-access",
        }
    }

    /// What the preset gives, in a line (for listings).
    pub fn description(self) -> &'static str {
        match self {
            Preset::ViewOnly => "everything listed and stat-able, nothing readable",
            Preset::ReadOnly => "everything readable, nothing writable",
            Preset::AgentSafe => {
                "everything readable; /output/** and /tmp/** writable; .env*, secrets/, *.key, *.pem, credentials* and .git/ hidden"
            }
            Preset::Development => "everything writable except the secrets agent-safe hides, which stay hidden",
            Preset::FullAccess => "everything writable",
        }
    }

    pub fn all() -> [Preset; 5] {
        [Preset::ViewOnly, Preset::ReadOnly, Preset::AgentSafe, Preset::Development, Preset::FullAccess]
    }

    /// The preset's rules.
    pub fn rules(self) -> Vec<PermissionRule> {
        let glob =
            |pattern: &str, permission, priority| PermissionRule::new(pattern, permission, PatternType::Glob, priority);
        let secrets = || SECRETS.iter().map(move |p| glob(p, Permission::None, SECRET_PRIORITY));
        match self {
            Preset::ViewOnly => vec![glob("**", Permission::View, 0)],
            Preset::ReadOnly => vec![glob("**", Permission::Read, 0)],
            Preset::AgentSafe => [
                glob("**", Permission::Read, 0),
                glob("/output/**", Permission::Write, 0),
                glob("/tmp/**", Permission::Write, 0),
            ]
            .into_iter()
            .chain(secrets())
            .collect(),
            Preset::Development => std::iter::once(glob("**", Permission::Write, 0)).chain(secrets()).collect(),
            Preset::FullAccess => vec![glob("**", Permission::Write, 0)],
        }
    }
}

/// The preset's rules then the extra rules (extras win ties by coming later).
pub fn expand(preset: Option<Preset>, extra: &[PermissionRule]) -> Vec<PermissionRule> {
    preset.map(Preset::rules).unwrap_or_default().into_iter().chain(extra.iter().cloned()).collect()
}
