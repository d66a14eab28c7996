//! Typed etcd keys under `/corral/v1/`. Call sites build a key struct; `Display` renders the wire key.

use std::fmt;

use crate::ids::{CodebaseId, NodeId, SandboxId, SandboxName, TenantId};
use crate::jobs::{BatchId, JobId};

/// The root of every Corral key.
pub const ROOT: &str = "/corral/v1/";

/// What a semaphore counts: one tenant's, one batch's or one node's running work.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SemScope {
    Tenant(TenantId),
    Batch(BatchId),
    Node(NodeId),
}

impl fmt::Display for SemScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tenant(t) => write!(f, "tenant/{t}"),
            Self::Batch(b) => write!(f, "batch/{b}"),
            Self::Node(n) => write!(f, "node/{n}"),
        }
    }
}

/// `sem/{scope}/` prefix of a semaphore's line: its holders and waiters.
pub struct SemLinePrefix<'a>(pub &'a SemScope);

/// `sem/{scope}/{holder}`: one holder's place in a semaphore's line, on the holder's lease.
pub struct SemEntryKey<'a> {
    pub scope: &'a SemScope,
    pub holder: &'a str,
}

impl fmt::Display for SemLinePrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ROOT}sem/{}/", self.0)
    }
}

impl fmt::Display for SemEntryKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ROOT}sem/{}/{}", self.scope, self.holder)
    }
}

/// `codebases/{tenant}/{id}`: a codebase's record (its file list is a blob named by digest).
pub struct CodebaseKey<'a> {
    pub tenant: &'a TenantId,
    pub id: &'a CodebaseId,
}

/// Prefix of one tenant's codebase records, or of all.
pub struct CodebasesPrefix<'a>(pub Option<&'a TenantId>);

impl fmt::Display for CodebaseKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ROOT}codebases/{}/{}", self.tenant, self.id)
    }
}

impl fmt::Display for CodebasesPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(t) => write!(f, "{ROOT}codebases/{t}/"),
            None => write!(f, "{ROOT}codebases/"),
        }
    }
}

/// `leader`: the coordinator that runs the reconciler, on that coordinator's lease.
pub struct LeaderKey;

impl fmt::Display for LeaderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ROOT}leader")
    }
}

/// `nodes/{node_id}`: a node's NodeInfo, on the agent's lease.
pub struct NodeKey<'a>(pub &'a NodeId);

/// Prefix of all node records.
pub struct NodesPrefix;

/// `sandboxes/{tenant}/{sandbox_id}`: a sandbox record.
pub struct SandboxKey<'a> {
    pub tenant: &'a TenantId,
    pub id: &'a SandboxId,
}

/// Prefix of one tenant's sandbox records (`sandboxes/{tenant}/`).
pub struct TenantSandboxesPrefix<'a>(pub &'a TenantId);

/// Prefix of all sandbox records (`sandboxes/`).
pub struct SandboxesPrefix;

/// `names/{tenant}/{name}` → sandbox id.
pub struct NameKey<'a> {
    pub tenant: &'a TenantId,
    pub name: &'a SandboxName,
}

impl fmt::Display for NodeKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ROOT}nodes/{}", self.0)
    }
}

impl fmt::Display for NodesPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ROOT}nodes/")
    }
}

impl fmt::Display for SandboxKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ROOT}sandboxes/{}/{}", self.tenant, self.id)
    }
}

impl fmt::Display for TenantSandboxesPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ROOT}sandboxes/{}/", self.0)
    }
}

impl fmt::Display for SandboxesPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ROOT}sandboxes/")
    }
}

impl fmt::Display for NameKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ROOT}names/{}/{}", self.tenant, self.name)
    }
}

/// `deadlines/{tenant}/{id}`: present while the sandbox or batch `id` has time left. It sits on an
/// etcd lease whose TTL is the time left, so etcd's clock, not any coordinator's or agent's,
/// decides when the deadline passes: the key's deletion is the expiry.
pub struct DeadlineKey<'a> {
    pub tenant: &'a TenantId,
    /// A sandbox or batch id (their prefixes tell them apart).
    pub id: &'a str,
}

/// Prefix of all deadline keys (`deadlines/`).
pub struct DeadlinesPrefix;

impl fmt::Display for DeadlineKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ROOT}deadlines/{}/{}", self.tenant, self.id)
    }
}

impl fmt::Display for DeadlinesPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ROOT}deadlines/")
    }
}

/// `jobs/{tenant}/{job_id}`: a job record.
pub struct JobKey<'a> {
    pub tenant: &'a TenantId,
    pub id: &'a JobId,
}

/// `jobs/{tenant}/`, or `jobs/` for every tenant.
pub struct JobsPrefix<'a>(pub Option<&'a TenantId>);

/// `joblogs/{tenant}/{job_id}`: the whole output of a job whose record holds only its start.
pub struct JobLogsKey<'a> {
    pub tenant: &'a TenantId,
    pub id: &'a JobId,
}

/// `batches/{tenant}/{batch_id}`: a batch record.
pub struct BatchKey<'a> {
    pub tenant: &'a TenantId,
    pub id: &'a BatchId,
}

/// `batches/{tenant}/`, or `batches/` for every tenant.
pub struct BatchesPrefix<'a>(pub Option<&'a TenantId>);

/// `idem/{tenant}/{key}`: what a Submit with this idempotency key created.
pub struct IdemKey<'a> {
    pub tenant: &'a TenantId,
    pub key: &'a str,
}

impl fmt::Display for JobKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ROOT}jobs/{}/{}", self.tenant, self.id)
    }
}

impl fmt::Display for JobsPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(t) => write!(f, "{ROOT}jobs/{t}/"),
            None => write!(f, "{ROOT}jobs/"),
        }
    }
}

impl fmt::Display for JobLogsKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ROOT}joblogs/{}/{}", self.tenant, self.id)
    }
}

impl fmt::Display for BatchKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ROOT}batches/{}/{}", self.tenant, self.id)
    }
}

impl fmt::Display for BatchesPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(t) => write!(f, "{ROOT}batches/{t}/"),
            None => write!(f, "{ROOT}batches/"),
        }
    }
}

impl fmt::Display for IdemKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ROOT}idem/{}/{}", self.tenant, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_render() {
        let t = TenantId::default_tenant();
        let id = SandboxId::parse("sb-0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(
            SandboxKey { tenant: &t, id: &id }.to_string(),
            "/corral/v1/sandboxes/default/sb-0123456789abcdef0123456789abcdef"
        );
        assert!(SandboxKey { tenant: &t, id: &id }.to_string().starts_with(&TenantSandboxesPrefix(&t).to_string()));
        assert_eq!(NodeKey(&NodeId::parse("n1").unwrap()).to_string(), "/corral/v1/nodes/n1");
    }
}
