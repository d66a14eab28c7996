//! Job placement: a pure function from the free slots of the nodes and the pending queues to a
//! plan, property-tested below.
//!
//! Tenants take turns (one job each per round, so a tenant with a long queue cannot starve the
//! others); within a tenant, jobs go in queue order, skipping those whose batch is at its
//! `max_concurrency` or whose tenant is at its cap. A job goes to the node, among those offering
//! its runtime (and image, and language) and with room for it in the one capacity model
//! ([`crate::capacity`]: slots, memory, pids, counting the node's sandboxes too), with the most
//! free slots, which spreads a batch over the nodes; ties go to the smaller node id, so plans are
//! deterministic.

use std::collections::HashMap;

use corral_core::ids::{NodeId, TenantId};
use corral_core::jobs::{BatchId, JobId};
use corral_core::languages::LanguageOffer;
use corral_core::model::RuntimeKind;

use crate::capacity::Resources;

/// A node as placement sees it.
#[derive(Debug, Clone)]
pub struct Slots {
    pub node: NodeId,
    pub capacity: Resources,
    /// Reserved by its sandboxes and running jobs (and by the jobs this plan puts there).
    pub used: Resources,
    pub runtimes: Vec<RuntimeKind>,
    pub images: Vec<String>,
    /// The languages the node can run, per runtime (and image).
    pub languages: Vec<LanguageOffer>,
}

/// What a pending job needs.
#[derive(Debug, Clone)]
pub struct Want {
    pub id: JobId,
    pub batch: Option<BatchId>,
    pub runtime: RuntimeKind,
    pub image: String,
    pub language: Option<String>,
    pub need: Resources,
}

/// The caps in force and what already runs under them.
#[derive(Debug, Clone, Default)]
pub struct Caps {
    pub per_tenant: usize,
    pub running_by_tenant: HashMap<TenantId, usize>,
    /// Each batch's max_concurrency.
    pub per_batch: HashMap<BatchId, usize>,
    pub running_by_batch: HashMap<BatchId, usize>,
}

impl Slots {
    /// Slots (sandboxes or jobs) the node can still take.
    pub fn free(&self) -> u32 {
        self.capacity.slots.saturating_sub(self.used.slots)
    }

    fn fits(&self, w: &Want) -> bool {
        self.capacity.fits(&self.used, &w.need)
            && self.runtimes.contains(&w.runtime)
            && (w.runtime != RuntimeKind::Docker || w.image.is_empty() || self.images.contains(&w.image))
            && w.language
                .as_ref()
                .is_none_or(|lang| self.languages.iter().any(|o| &o.language == lang && o.serves(w.runtime, &w.image)))
    }
}

/// Chooses jobs to start and their nodes; `queues` holds each tenant's pending jobs in order.
pub fn plan(nodes: &mut [Slots], queues: &[(TenantId, Vec<Want>)], caps: &mut Caps) -> Vec<(JobId, NodeId)> {
    let mut out = Vec::new();
    let mut cursor = vec![0usize; queues.len()];
    loop {
        let mut progressed = false;
        for (t, (tenant, queue)) in queues.iter().enumerate() {
            if nodes.iter().all(|n| n.free() == 0) {
                return out;
            }
            if caps.running_by_tenant.get(tenant).copied().unwrap_or(0) >= caps.per_tenant {
                cursor[t] = queue.len();
                continue;
            }
            // This tenant's next job that may start now.
            while let Some(w) = queue.get(cursor[t]) {
                cursor[t] += 1;
                if let Some(b) = &w.batch
                    && caps.running_by_batch.get(b).copied().unwrap_or(0) >= caps.per_batch.get(b).copied().unwrap_or(0)
                {
                    continue;
                }
                let Some(node) = best(nodes, w) else { continue };
                node.used.add(&w.need);
                out.push((w.id.clone(), node.node.clone()));
                *caps.running_by_tenant.entry(tenant.clone()).or_default() += 1;
                if let Some(b) = &w.batch {
                    *caps.running_by_batch.entry(b.clone()).or_default() += 1;
                }
                progressed = true;
                break;
            }
        }
        if !progressed {
            return out;
        }
    }
}

fn best<'a>(nodes: &'a mut [Slots], w: &Want) -> Option<&'a mut Slots> {
    nodes.iter_mut().filter(|n| n.fits(w)).max_by(|a, b| a.free().cmp(&b.free()).then_with(|| b.node.cmp(&a.node)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn node(name: &str, free: usize, runtimes: &[RuntimeKind], langs: &[&str]) -> Slots {
        Slots {
            node: NodeId::parse(name).unwrap(),
            capacity: Resources {
                cpus: 2.0,
                memory_mb: 1 << 20,
                disk_mb: u64::MAX,
                pids: u64::MAX,
                slots: free as u32,
            },
            used: Resources::default(),
            runtimes: runtimes.to_vec(),
            images: vec![],
            languages: langs
                .iter()
                .map(|l| LanguageOffer {
                    language: (*l).to_owned(),
                    runtime: RuntimeKind::Bwrap,
                    image: String::new(),
                    program: format!("/usr/bin/{l}"),
                })
                .collect(),
        }
    }

    fn want(batch: Option<&BatchId>, runtime: RuntimeKind, language: Option<&str>) -> Want {
        Want {
            id: JobId::random(),
            batch: batch.cloned(),
            runtime,
            image: String::new(),
            language: language.map(str::to_owned),
            need: Resources { cpus: 1.0, memory_mb: 256, disk_mb: 0, pids: 64, slots: 1 },
        }
    }

    fn tenant(name: &str) -> TenantId {
        TenantId::parse(name).unwrap()
    }

    #[test]
    fn tenants_take_turns() {
        let mut nodes = vec![node("n1", 4, &[RuntimeKind::Bwrap], &[])];
        let a: Vec<Want> = (0..10).map(|_| want(None, RuntimeKind::Bwrap, None)).collect();
        let b: Vec<Want> = (0..2).map(|_| want(None, RuntimeKind::Bwrap, None)).collect();
        let queues = vec![(tenant("a"), a.clone()), (tenant("b"), b.clone())];
        let mut caps = Caps { per_tenant: 100, ..Default::default() };
        let plan = plan(&mut nodes, &queues, &mut caps);
        let ids: Vec<&JobId> = plan.iter().map(|(j, _)| j).collect();
        assert_eq!(ids, vec![&a[0].id, &b[0].id, &a[1].id, &b[1].id]);
    }

    #[test]
    fn a_full_batch_does_not_block_the_rest_of_the_queue() {
        let batch = BatchId::random();
        let mut nodes = vec![node("n1", 10, &[RuntimeKind::Bwrap], &[])];
        let mut q: Vec<Want> = (0..5).map(|_| want(Some(&batch), RuntimeKind::Bwrap, None)).collect();
        q.push(want(None, RuntimeKind::Bwrap, None));
        let mut caps = Caps { per_tenant: 100, per_batch: [(batch.clone(), 2)].into(), ..Default::default() };
        let plan = plan(&mut nodes, &[(tenant("a"), q.clone())], &mut caps);
        assert_eq!(plan.len(), 3);
        assert_eq!(plan[2].0, q[5].id);
    }

    proptest! {
        #[test]
        fn plans_respect_every_cap_and_offer(
            frees in prop::collection::vec(0usize..6, 1..5),
            noop_on in prop::collection::vec(any::<bool>(), 5),
            python_on in prop::collection::vec(any::<bool>(), 5),
            jobs in prop::collection::vec((0usize..3, 0usize..3, any::<bool>(), any::<bool>()), 0..60),
            per_tenant in 1usize..20,
            batch_caps in prop::collection::vec(1usize..8, 3),
        ) {
            let batches: Vec<BatchId> = (0..3).map(|_| BatchId::random()).collect();
            let mut nodes: Vec<Slots> = frees.iter().enumerate().map(|(i, f)| {
                let mut rts = vec![RuntimeKind::Bwrap];
                if noop_on[i] { rts.push(RuntimeKind::Noop); }
                node(&format!("n{i}"), *f, &rts, if python_on[i] { &["python"] } else { &[] })
            }).collect();
            let before = nodes.clone();
            let mut queues: Vec<(TenantId, Vec<Want>)> = (0..3).map(|t| (tenant(&format!("t{t}")), vec![])).collect();
            for (t, b, noop, python) in &jobs {
                let rt = if *noop { RuntimeKind::Noop } else { RuntimeKind::Bwrap };
                let lang = (*python && !*noop).then_some("python");
                queues[*t].1.push(want(Some(&batches[*b]), rt, lang));
            }
            let mut caps = Caps {
                per_tenant,
                per_batch: batches.iter().cloned().zip(batch_caps.iter().copied()).collect(),
                ..Default::default()
            };
            let plan = plan(&mut nodes, &queues, &mut caps);
            let all: HashMap<&JobId, &Want> = queues.iter().flat_map(|(_, q)| q.iter().map(|w| (&w.id, w))).collect();
            let mut per_node: HashMap<&NodeId, usize> = HashMap::new();
            let mut per_batch: HashMap<&BatchId, usize> = HashMap::new();
            let mut seen = std::collections::HashSet::new();
            for (job, node) in &plan {
                prop_assert!(seen.insert(job), "a job is placed twice");
                let w = all[job];
                let n = before.iter().find(|n| &n.node == node).unwrap();
                prop_assert!(n.runtimes.contains(&w.runtime), "placed on a node without its runtime");
                if w.language.is_some() {
                    prop_assert!(!n.languages.is_empty(), "placed on a node without its language");
                }
                *per_node.entry(node).or_default() += 1;
                *per_batch.entry(w.batch.as_ref().unwrap()).or_default() += 1;
            }
            for n in &before {
                prop_assert!(per_node.get(&n.node).copied().unwrap_or(0) <= n.free() as usize, "node over capacity");
            }
            for (i, b) in batches.iter().enumerate() {
                prop_assert!(per_batch.get(b).copied().unwrap_or(0) <= batch_caps[i], "batch over its cap");
            }
            for (t, q) in &queues {
                let placed = plan.iter().filter(|(j, _)| q.iter().any(|w| &w.id == j)).count();
                prop_assert!(placed <= per_tenant, "tenant {t} over its cap");
            }
        }

        #[test]
        fn a_batch_spreads_over_equal_nodes(slots in 1usize..20, nodes_n in 2usize..5) {
            let batch = BatchId::random();
            let mut nodes: Vec<Slots> =
                (0..nodes_n).map(|i| node(&format!("n{i}"), slots, &[RuntimeKind::Bwrap], &[])).collect();
            let q: Vec<Want> = (0..slots * nodes_n).map(|_| want(Some(&batch), RuntimeKind::Bwrap, None)).collect();
            let mut caps = Caps { per_tenant: usize::MAX, per_batch: [(batch, usize::MAX)].into(), ..Default::default() };
            let plan = plan(&mut nodes, &[(tenant("a"), q)], &mut caps);
            prop_assert_eq!(plan.len(), slots * nodes_n);
            for n in &nodes {
                prop_assert_eq!(n.free(), 0);
            }
        }
    }
}
