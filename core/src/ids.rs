//! Typed identities. Sandbox ids are 128-bit random values, so they cannot be guessed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an id string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{kind} {value:?} is not valid: {why}")]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
    pub why: &'static str,
}

fn random_hex128() -> String {
    let v: u128 = rand::random();
    format!("{v:032x}")
}

/// A sandbox: `sb-` followed by 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SandboxId(String);

impl SandboxId {
    pub const PREFIX: &'static str = "sb-";

    pub fn random() -> Self {
        Self(format!("{}{}", Self::PREFIX, random_hex128()))
    }

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let err = |why| InvalidId { kind: "sandbox id", value: s.chars().take(80).collect(), why };
        let hex = s.strip_prefix(Self::PREFIX).ok_or_else(|| err("must start with \"sb-\""))?;
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(err("must be \"sb-\" followed by 32 lowercase hex digits"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A codebase: `cb-` followed by 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CodebaseId(String);

impl CodebaseId {
    pub const PREFIX: &'static str = "cb-";

    pub fn random() -> Self {
        Self(format!("{}{}", Self::PREFIX, random_hex128()))
    }

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let err = |why| InvalidId { kind: "codebase id", value: s.chars().take(80).collect(), why };
        let hex = s.strip_prefix(Self::PREFIX).ok_or_else(|| err("must start with \"cb-\""))?;
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(err("must be \"cb-\" followed by 32 lowercase hex digits"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CodebaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Validates a name-like id: 1..=63 chars of `[a-z0-9-_]`, starting alphanumeric (no '.', so ids are
/// single NATS subject tokens).
fn check_name(kind: &'static str, s: &str) -> Result<(), InvalidId> {
    let err = |why| InvalidId { kind, value: s.chars().take(80).collect(), why };
    if s.is_empty() || s.len() > 63 {
        return Err(err("must be 1 to 63 characters"));
    }
    if !s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric()) {
        return Err(err("must start with a letter or digit"));
    }
    if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b)) {
        return Err(err("may contain only lowercase letters, digits, '-' and '_'"));
    }
    Ok(())
}

macro_rules! name_id {
    ($(#[$m:meta])* $name:ident, $kind:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                check_name($kind, s)?;
                Ok(Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_id!(
    /// A node (one agent). Chosen by configuration, defaults to the host name.
    NodeId,
    "node id"
);
name_id!(
    /// A tenant. Until authentication lands every request belongs to `default`.
    TenantId,
    "tenant"
);
name_id!(
    /// A user-chosen sandbox name, unique per tenant.
    SandboxName,
    "sandbox name"
);

impl TenantId {
    pub fn default_tenant() -> Self {
        Self("default".to_owned())
    }
}

/// One command execution inside a sandbox; unique per sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExecId(pub u64);

impl ExecId {
    pub fn random() -> Self {
        Self(rand::random::<u64>() >> 1)
    }
}

impl fmt::Display for ExecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A shell session of a sandbox: `ss-`, the sandbox's 32 hex digits, `-`, 16 random hex digits.
/// The sandbox part routes requests to the node; the random part makes it unguessable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId {
    sandbox: SandboxId,
    token: u64,
}

impl SessionId {
    pub const PREFIX: &'static str = "ss-";

    pub fn random(sandbox: &SandboxId) -> Self {
        Self { sandbox: sandbox.clone(), token: rand::random() }
    }

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let err = |why| InvalidId { kind: "session id", value: s.chars().take(80).collect(), why };
        let shape = "must be \"ss-\", 32 lowercase hex digits, '-' and 16 lowercase hex digits";
        let rest = s.strip_prefix(Self::PREFIX).ok_or_else(|| err("must start with \"ss-\""))?;
        let (sb, token) = rest.split_once('-').ok_or_else(|| err(shape))?;
        let lower_hex = |t: &str| t.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if token.len() != 16 || !lower_hex(token) {
            return Err(err(shape));
        }
        let sandbox = SandboxId::parse(&format!("{}{sb}", SandboxId::PREFIX)).map_err(|_| err(shape))?;
        let token = u64::from_str_radix(token, 16).map_err(|_| err(shape))?;
        Ok(Self { sandbox, token })
    }

    /// The sandbox the session belongs to.
    pub fn sandbox(&self) -> &SandboxId {
        &self.sandbox
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.sandbox.as_str().strip_prefix(SandboxId::PREFIX).unwrap_or(self.sandbox.as_str());
        write!(f, "{}{hex}-{:016x}", Self::PREFIX, self.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_round_trip_and_name_their_sandbox() {
        let sb = SandboxId::random();
        let id = SessionId::random(&sb);
        let back = SessionId::parse(&id.to_string()).unwrap();
        assert_eq!((&back, back.sandbox()), (&id, &sb));
        assert!(SessionId::parse("ss-1234").is_err());
        assert!(SessionId::parse(&format!("ss-{}-{}", "a".repeat(32), "G".repeat(16))).is_err());
        assert!(SessionId::parse(sb.as_str()).is_err());
    }

    #[test]
    fn sandbox_ids_round_trip_and_reject_garbage() {
        let id = SandboxId::random();
        assert_eq!(SandboxId::parse(id.as_str()).unwrap(), id);
        assert!(SandboxId::parse("sb-123").is_err());
        assert!(SandboxId::parse("../etc").is_err());
        assert!(SandboxId::parse(&format!("sb-{}", "G".repeat(32))).is_err());
    }

    #[test]
    fn names_are_restricted() {
        assert!(NodeId::parse("node-1").is_ok());
        assert!(NodeId::parse("").is_err());
        assert!(NodeId::parse("a/b").is_err());
        assert!(NodeId::parse("-a").is_err());
        assert!(SandboxName::parse(&"a".repeat(64)).is_err());
    }
}
