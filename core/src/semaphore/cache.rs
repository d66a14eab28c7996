//! Who is in each semaphore line, as a store watch shows it: what a single writer that stages
//! permits in its own transactions ([`super::StoreSemaphore::grant_in`]) counts before it writes.

use std::collections::{HashMap, HashSet};

use crate::keys::{SemEntryKey, SemScope};
use crate::store::EventKind;

/// Places per scope (holders and waiters alike; a single writer only writes granted places).
#[derive(Debug, Default)]
pub struct LineCache {
    lines: HashMap<SemScope, HashSet<String>>,
}

impl LineCache {
    /// Applies a store event; false when `key` is not a semaphore place.
    pub fn apply(&mut self, kind: EventKind, key: &str) -> bool {
        let Some((scope, holder)) = SemEntryKey::parse(key) else { return false };
        match kind {
            EventKind::Put => self.joined(scope, holder),
            EventKind::Delete => self.left(&scope, &holder),
        }
        true
    }

    /// Notes a place written (by the caller's own transaction, before its watch shows it).
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
    fn follows_puts_and_deletes_of_places_only() {
        let mut cache = LineCache::default();
        let t = SemScope::Tenant(TenantId::default_tenant());
        let n = SemScope::Node(NodeId::parse("n1").unwrap());
        let key = |scope: &SemScope, h: &str| SemEntryKey { scope, holder: h }.to_string();
        assert!(cache.apply(EventKind::Put, &key(&t, "a")));
        assert!(cache.apply(EventKind::Put, &key(&t, "a")), "a rewrite counts once");
        assert!(cache.apply(EventKind::Put, &key(&t, "b")));
        assert!(cache.apply(EventKind::Put, &key(&n, "a")));
        assert!(!cache.apply(EventKind::Put, "/corral/v1/nodes/n1"));
        assert_eq!((cache.len(&t), cache.len(&n)), (2, 1));
        assert!(cache.apply(EventKind::Delete, &key(&t, "a")));
        assert!(cache.apply(EventKind::Delete, &key(&t, "gone")));
        assert_eq!(cache.len(&t), 1);
        assert!(cache.contains(&t, "b") && !cache.contains(&t, "a"));
        cache.clear();
        assert_eq!(cache.len(&n), 0);
    }
}
