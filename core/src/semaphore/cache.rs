//! Who is in each semaphore line: what a single writer that stages permits in its own
//! transactions ([`super::StoreSemaphore::grant_in`]) counts before it writes.

use std::collections::{HashMap, HashSet};

use crate::keys::SemScope;

/// Places per scope (holders and waiters alike; a single writer only writes granted places).
#[derive(Debug, Default)]
pub struct LineCache {
    lines: HashMap<SemScope, HashSet<String>>,
}

impl LineCache {
    /// Notes a place written.
    pub fn joined(&mut self, scope: SemScope, holder: String) {
        self.lines.entry(scope).or_default().insert(holder);
    }

    /// Notes a place removed.
    pub fn left(&mut self, scope: &SemScope, holder: &str) {
        if let Some(line) = self.lines.get_mut(scope) {
            line.remove(holder);
            if line.is_empty() {
                self.lines.remove(scope);
            }
        }
    }

    /// Places in the line of `scope`.
    pub fn len(&self, scope: &SemScope) -> usize {
        self.lines.get(scope).map_or(0, HashSet::len)
    }

    /// Every non-empty line and its length.
    pub fn iter(&self) -> impl Iterator<Item = (&SemScope, usize)> {
        self.lines.iter().map(|(scope, line)| (scope, line.len()))
    }

    pub fn contains(&self, scope: &SemScope, holder: &str) -> bool {
        self.lines.get(scope).is_some_and(|l| l.contains(holder))
    }

    /// Forgets everything (before a reload).
    pub fn clear(&mut self) {
        self.lines.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{NodeId, TenantId};

    #[test]
    fn counts_places_per_line() {
        let mut cache = LineCache::default();
        let t = SemScope::Tenant(TenantId::default_tenant());
        let n = SemScope::Node(NodeId::parse("n1").unwrap());
        cache.joined(t.clone(), "a".into());
        cache.joined(t.clone(), "a".into());
        cache.joined(t.clone(), "b".into());
        cache.joined(n.clone(), "a".into());
        assert_eq!((cache.len(&t), cache.len(&n)), (2, 1), "a place joins once");
        cache.left(&t, "a");
        cache.left(&t, "gone");
        assert_eq!(cache.len(&t), 1);
        assert!(cache.contains(&t, "b") && !cache.contains(&t, "a"));
        assert_eq!(cache.iter().count(), 2);
        cache.left(&n, "a");
        assert_eq!(cache.iter().count(), 1, "an empty line goes");
    }
}
