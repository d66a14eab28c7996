//! Placement: a pure function from the cluster view to a decision, property-tested.
//!
//! A sandbox goes to the node, among those that run its runtime and can still fit it (sandbox
//! slots and memory), with the most free capacity left; ties go to the smaller node id, so the
//! result is deterministic. CPU is compressible and only weighs in the score.

use corral_core::ids::NodeId;
use corral_core::model::{Capacity, RuntimeKind};

/// What a sandbox asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    pub runtime: RuntimeKind,
    pub cpus: f64,
    pub memory_mb: u64,
    /// The image a Docker sandbox needs on its node; empty when none.
    pub image: String,
}

/// Resources already promised to sandboxes on a node.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Allocated {
    pub cpus: f64,
    pub memory_mb: u64,
    pub sandboxes: u32,
}

impl Allocated {
    pub fn add(&mut self, d: &Demand) {
        self.cpus += d.cpus;
        self.memory_mb += d.memory_mb;
        self.sandboxes += 1;
    }

    pub fn sub(&mut self, d: &Demand) {
        self.cpus = (self.cpus - d.cpus).max(0.0);
        self.memory_mb = self.memory_mb.saturating_sub(d.memory_mb);
        self.sandboxes = self.sandboxes.saturating_sub(1);
    }
}

/// One candidate node.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<'a> {
    pub id: &'a NodeId,
    pub capacity: Capacity,
    pub runtimes: &'a [RuntimeKind],
    pub images: &'a [String],
    pub allocated: Allocated,
}

/// Why nothing could be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no agent is registered")]
    NoNodes,
    #[error("no registered node runs the {runtime} runtime ({nodes} nodes registered)")]
    NoRuntime { runtime: RuntimeKind, nodes: usize },
    #[error("no node has the image {image:?}; images on nodes running {runtime}: {available:?}")]
    NoImage { image: String, runtime: RuntimeKind, available: Vec<String> },
    #[error("no node has room for {memory_mb} MiB more ({eligible} nodes run {runtime}, all full)")]
    Full { runtime: RuntimeKind, memory_mb: u64, eligible: usize },
}

fn fits(c: &Candidate<'_>, d: &Demand) -> bool {
    c.allocated.sandboxes < c.capacity.sandboxes && c.allocated.memory_mb + d.memory_mb <= c.capacity.memory_mb
}

/// Fraction of the node left free after placing `d` (the scarcest resource decides).
fn free_after(c: &Candidate<'_>, d: &Demand) -> f64 {
    let frac = |used: f64, cap: f64| if cap <= 0.0 { 0.0 } else { 1.0 - used / cap };
    let slots = frac(f64::from(c.allocated.sandboxes + 1), f64::from(c.capacity.sandboxes));
    let mem = frac((c.allocated.memory_mb + d.memory_mb) as f64, c.capacity.memory_mb as f64);
    let cpu = frac(c.allocated.cpus + d.cpus, c.capacity.cpus);
    slots.min(mem).min(cpu.max(0.0))
}

/// Chooses the node for one sandbox.
pub fn place<'a>(candidates: &[Candidate<'a>], d: &Demand) -> Result<&'a NodeId, PlacementError> {
    if candidates.is_empty() {
        return Err(PlacementError::NoNodes);
    }
    let with_runtime: Vec<&Candidate<'a>> = candidates.iter().filter(|c| c.runtimes.contains(&d.runtime)).collect();
    if with_runtime.is_empty() {
        return Err(PlacementError::NoRuntime { runtime: d.runtime, nodes: candidates.len() });
    }
    let eligible: Vec<&Candidate<'a>> =
        with_runtime.iter().copied().filter(|c| d.image.is_empty() || c.images.contains(&d.image)).collect();
    if eligible.is_empty() {
        let mut available: Vec<String> = with_runtime.iter().flat_map(|c| c.images.iter().cloned()).collect();
        available.sort();
        available.dedup();
        return Err(PlacementError::NoImage { image: d.image.clone(), runtime: d.runtime, available });
    }
    eligible
        .iter()
        .filter(|c| fits(c, d))
        .max_by(|a, b| free_after(a, d).total_cmp(&free_after(b, d)).then_with(|| b.id.cmp(a.id)))
        .map(|c| c.id)
        .ok_or(PlacementError::Full { runtime: d.runtime, memory_mb: d.memory_mb, eligible: eligible.len() })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn node(i: usize) -> NodeId {
        NodeId::parse(&format!("n{i}")).unwrap()
    }

    const BWRAP: &[RuntimeKind] = &[RuntimeKind::Bwrap];

    #[test]
    fn prefers_the_emptier_node_and_breaks_ties_by_id() {
        let (a, b) = (node(1), node(2));
        let cap = Capacity { cpus: 2.0, memory_mb: 1024, sandboxes: 10 };
        let d = Demand { runtime: RuntimeKind::Bwrap, cpus: 1.0, memory_mb: 100, image: String::new() };
        let busy = Allocated { cpus: 1.0, memory_mb: 500, sandboxes: 5 };
        let cands = [
            Candidate { id: &a, capacity: cap, runtimes: BWRAP, images: &[], allocated: busy },
            Candidate { id: &b, capacity: cap, runtimes: BWRAP, images: &[], allocated: Allocated::default() },
        ];
        assert_eq!(place(&cands, &d).unwrap(), &b);
        let tie = [
            Candidate { id: &b, capacity: cap, runtimes: BWRAP, images: &[], allocated: Allocated::default() },
            Candidate { id: &a, capacity: cap, runtimes: BWRAP, images: &[], allocated: Allocated::default() },
        ];
        assert_eq!(place(&tie, &d).unwrap(), &a);
    }

    #[test]
    fn explains_why_nothing_fits() {
        let a = node(1);
        let d = Demand { runtime: RuntimeKind::Bwrap, cpus: 1.0, memory_mb: 100, image: String::new() };
        assert_eq!(place(&[], &d), Err(PlacementError::NoNodes));
        let full = Allocated { cpus: 0.0, memory_mb: 0, sandboxes: 1 };
        let cap = Capacity { cpus: 1.0, memory_mb: 1000, sandboxes: 1 };
        let cands = [Candidate { id: &a, capacity: cap, runtimes: BWRAP, images: &[], allocated: full }];
        assert!(matches!(place(&cands, &d), Err(PlacementError::Full { eligible: 1, .. })));
        let none: &[RuntimeKind] = &[];
        let cands = [Candidate { id: &a, capacity: cap, runtimes: none, images: &[], allocated: Allocated::default() }];
        assert!(matches!(place(&cands, &d), Err(PlacementError::NoRuntime { .. })));
    }

    #[test]
    fn docker_sandboxes_go_only_where_their_image_is() {
        let (a, b) = (node(1), node(2));
        let cap = Capacity { cpus: 2.0, memory_mb: 1024, sandboxes: 10 };
        const DOCKER: &[RuntimeKind] = &[RuntimeKind::Bwrap, RuntimeKind::Docker];
        let (base, py) = (vec!["corral/base:latest".to_owned()], vec!["corral/python:latest".to_owned()]);
        let cands = [
            Candidate { id: &a, capacity: cap, runtimes: DOCKER, images: &base, allocated: Allocated::default() },
            Candidate { id: &b, capacity: cap, runtimes: DOCKER, images: &py, allocated: Allocated::default() },
        ];
        let d = Demand { runtime: RuntimeKind::Docker, cpus: 1.0, memory_mb: 64, image: "corral/python:latest".into() };
        assert_eq!(place(&cands, &d).unwrap(), &b);
        let missing = Demand { image: "corral/ruby:latest".into(), ..d };
        let err = place(&cands, &missing).unwrap_err().to_string();
        assert!(err.contains("corral/ruby:latest") && err.contains("corral/base:latest"), "{err}");
    }

    proptest! {
        /// Placing sandboxes one by one never exceeds any node's slots or memory, only uses nodes
        /// that run the runtime, and refuses only when no eligible node fits.
        #[test]
        fn never_overcommits(
            caps in proptest::collection::vec((1u32..8, 256u64..4096, any::<bool>()), 1..6),
            demands in proptest::collection::vec((0.1f64..4.0, 16u64..1024), 1..60),
        ) {
            let ids: Vec<NodeId> = (0..caps.len()).map(node).collect();
            let mut alloc = vec![Allocated::default(); caps.len()];
            for (cpus, memory_mb) in demands {
                let d = Demand { runtime: RuntimeKind::Bwrap, cpus, memory_mb, image: String::new() };
                let cands: Vec<Candidate<'_>> = caps.iter().enumerate().map(|(i, &(s, m, has))| Candidate {
                    id: &ids[i],
                    capacity: Capacity { cpus: 2.0, memory_mb: m, sandboxes: s },
                    runtimes: if has { BWRAP } else { &[] },
                    images: &[],
                    allocated: alloc[i],
                }).collect();
                match place(&cands, &d) {
                    Ok(id) => {
                        let i = ids.iter().position(|x| x == id).unwrap();
                        prop_assert!(caps[i].2, "placed on a node without the runtime");
                        alloc[i].add(&d);
                        prop_assert!(alloc[i].sandboxes <= caps[i].0);
                        prop_assert!(alloc[i].memory_mb <= caps[i].1);
                    }
                    Err(_) => {
                        for c in &cands {
                            prop_assert!(!(c.runtimes.contains(&d.runtime) && fits(c, &d)), "refused although {} fits", c.id);
                        }
                    }
                }
            }
        }
    }
}
