//! Placement: a pure function from the cluster view to a decision, property-tested.
//!
//! A sandbox goes to the node, among those that run its runtime and can still fit it (see
//! [`crate::capacity`]: slots, memory, disk and process ids, counting the node's sandboxes and its
//! running jobs), with the most free capacity left; ties go to the smaller node id, so the result
//! is deterministic. CPU is compressible and only weighs in the score.

use corral_core::ids::NodeId;
use corral_core::model::RuntimeKind;

use crate::capacity::{Resources, Shortage};

/// What a sandbox asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    pub runtime: RuntimeKind,
    /// The image a Docker sandbox needs on its node; empty when none.
    pub image: String,
    pub need: Resources,
}

impl Demand {
    pub fn of_sandbox(spec: &corral_core::model::SandboxSpec) -> Self {
        Self { runtime: spec.runtime, image: spec.image.clone(), need: Resources::of_sandbox(spec) }
    }
}

/// One candidate node.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<'a> {
    pub id: &'a NodeId,
    pub capacity: Resources,
    pub runtimes: &'a [RuntimeKind],
    pub images: &'a [String],
    /// Reserved by the node's sandboxes and running jobs.
    pub used: Resources,
    /// Largest disk one sandbox may have on the node; 0 = no limit.
    pub max_disk_mb: u64,
}

impl Candidate<'_> {
    /// The first hard resource the node lacks for `need` (a disk above its per-sandbox maximum
    /// counts as disk).
    fn short_of(&self, need: &Resources) -> Option<Shortage> {
        if self.max_disk_mb != 0 && need.disk_mb > self.max_disk_mb {
            return Some(Shortage::Disk);
        }
        self.capacity.short_of(&self.used, need)
    }
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
    #[error(
        "no node has room for this sandbox ({memory_mb} MiB memory, {disk_mb} MiB disk, {pids} pids): \
         {eligible} nodes run {runtime}, all short of {short}"
    )]
    Full { runtime: RuntimeKind, memory_mb: u64, disk_mb: u64, pids: u64, eligible: usize, short: Shortage },
}

fn fits(c: &Candidate<'_>, d: &Demand) -> bool {
    c.short_of(&d.need).is_none()
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
    let score = |c: &Candidate<'_>| c.capacity.free_fraction_after(&c.used, &d.need);
    if let Some(best) =
        eligible.iter().filter(|c| fits(c, d)).max_by(|a, b| score(a).total_cmp(&score(b)).then_with(|| b.id.cmp(a.id)))
    {
        return Ok(best.id);
    }
    // The resource most nodes are short of names the problem.
    let shorts: Vec<Shortage> = eligible.iter().filter_map(|c| c.short_of(&d.need)).collect();
    let count = |s: &Shortage| shorts.iter().filter(|x| *x == s).count();
    let short = shorts.iter().copied().max_by_key(|s| (count(s), std::cmp::Reverse(*s))).unwrap_or(Shortage::Slots);
    Err(PlacementError::Full {
        runtime: d.runtime,
        memory_mb: d.need.memory_mb,
        disk_mb: d.need.disk_mb,
        pids: d.need.pids,
        eligible: eligible.len(),
        short,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn node(i: usize) -> NodeId {
        NodeId::parse(&format!("n{i}")).unwrap()
    }

    const BWRAP: &[RuntimeKind] = &[RuntimeKind::Bwrap];

    fn cap(cpus: f64, memory_mb: u64, slots: u32) -> Resources {
        Resources { cpus, memory_mb, disk_mb: u64::MAX, pids: u64::MAX, slots }
    }

    fn demand(cpus: f64, memory_mb: u64) -> Demand {
        let need = Resources { cpus, memory_mb, disk_mb: 0, pids: 64, slots: 1 };
        Demand { runtime: RuntimeKind::Bwrap, image: String::new(), need }
    }

    fn used(cpus: f64, memory_mb: u64, slots: u32) -> Resources {
        Resources { cpus, memory_mb, slots, ..Default::default() }
    }

    #[test]
    fn prefers_the_emptier_node_and_breaks_ties_by_id() {
        let (a, b) = (node(1), node(2));
        let c = cap(2.0, 1024, 10);
        let d = demand(1.0, 100);
        let cands = [
            Candidate { id: &a, capacity: c, runtimes: BWRAP, images: &[], used: used(1.0, 500, 5), max_disk_mb: 0 },
            Candidate { id: &b, capacity: c, runtimes: BWRAP, images: &[], used: Resources::default(), max_disk_mb: 0 },
        ];
        assert_eq!(place(&cands, &d).unwrap(), &b);
        let tie = [
            Candidate { id: &b, capacity: c, runtimes: BWRAP, images: &[], used: Resources::default(), max_disk_mb: 0 },
            Candidate { id: &a, capacity: c, runtimes: BWRAP, images: &[], used: Resources::default(), max_disk_mb: 0 },
        ];
        assert_eq!(place(&tie, &d).unwrap(), &a);
    }

    #[test]
    fn explains_why_nothing_fits() {
        let a = node(1);
        let d = demand(1.0, 100);
        assert_eq!(place(&[], &d), Err(PlacementError::NoNodes));
        let cands = [Candidate {
            id: &a,
            capacity: cap(1.0, 1000, 1),
            runtimes: BWRAP,
            images: &[],
            used: used(0.0, 0, 1),
            max_disk_mb: 0,
        }];
        let err = place(&cands, &d).unwrap_err();
        assert!(matches!(err, PlacementError::Full { eligible: 1, short: Shortage::Slots, .. }), "{err}");
        let pids = Resources { pids: 32, ..cap(1.0, 1000, 4) };
        let cands = [Candidate {
            id: &a,
            capacity: pids,
            runtimes: BWRAP,
            images: &[],
            used: Resources::default(),
            max_disk_mb: 0,
        }];
        let err = place(&cands, &d).unwrap_err().to_string();
        assert!(err.contains("short of process ids"), "{err}");
        let none: &[RuntimeKind] = &[];
        let cands = [Candidate {
            id: &a,
            capacity: cap(1.0, 1000, 1),
            runtimes: none,
            images: &[],
            used: Resources::default(),
            max_disk_mb: 0,
        }];
        assert!(matches!(place(&cands, &d), Err(PlacementError::NoRuntime { .. })));
    }

    #[test]
    fn disk_is_reserved_and_a_node_maximum_per_sandbox_is_respected() {
        let (a, b) = (node(1), node(2));
        let disk = |disk_mb| Resources { disk_mb, ..cap(4.0, 100_000, 10) };
        let need = Resources { disk_mb: 2048, ..demand(1.0, 64).need };
        let d = Demand { need, ..demand(1.0, 64) };
        // a has room in total but allows only 1 GiB per sandbox; b is full.
        let used = Resources { disk_mb: 3000, ..Resources::default() };
        let cands = [
            Candidate {
                id: &a,
                capacity: disk(10_000),
                runtimes: BWRAP,
                images: &[],
                used: Resources::default(),
                max_disk_mb: 1024,
            },
            Candidate { id: &b, capacity: disk(4096), runtimes: BWRAP, images: &[], used, max_disk_mb: 0 },
        ];
        let err = place(&cands, &d).unwrap_err();
        assert!(matches!(err, PlacementError::Full { short: Shortage::Disk, disk_mb: 2048, .. }), "{err}");
        assert!(err.to_string().contains("short of disk"), "{err}");
        let cands = [Candidate { max_disk_mb: 4096, ..cands[0].clone() }, cands[1].clone()];
        assert_eq!(place(&cands, &d).unwrap(), &a);
    }

    #[test]
    fn docker_sandboxes_go_only_where_their_image_is() {
        let (a, b) = (node(1), node(2));
        let c = cap(2.0, 1024, 10);
        const DOCKER: &[RuntimeKind] = &[RuntimeKind::Bwrap, RuntimeKind::Docker];
        let (base, py) = (vec!["corral/base:latest".to_owned()], vec!["corral/python:latest".to_owned()]);
        let cands = [
            Candidate {
                id: &a,
                capacity: c,
                runtimes: DOCKER,
                images: &base,
                used: Resources::default(),
                max_disk_mb: 0,
            },
            Candidate {
                id: &b,
                capacity: c,
                runtimes: DOCKER,
                images: &py,
                used: Resources::default(),
                max_disk_mb: 0,
            },
        ];
        let d = Demand { runtime: RuntimeKind::Docker, image: "corral/python:latest".into(), ..demand(1.0, 64) };
        assert_eq!(place(&cands, &d).unwrap(), &b);
        let missing = Demand { image: "corral/ruby:latest".into(), ..d };
        let err = place(&cands, &missing).unwrap_err().to_string();
        assert!(err.contains("corral/ruby:latest") && err.contains("corral/base:latest"), "{err}");
    }

    proptest! {
        /// Placing sandboxes one by one never exceeds any node's slots, memory, disk or pids, only
        /// uses nodes that run the runtime, and refuses only when no eligible node fits.
        #[test]
        fn never_overcommits(
            caps in proptest::collection::vec((1u32..8, 256u64..4096, 100u64..4000, 256u64..8192, any::<bool>()), 1..6),
            demands in proptest::collection::vec((0.1f64..4.0, 16u64..1024, 0u64..800, 8u64..1024), 1..60),
        ) {
            let ids: Vec<NodeId> = (0..caps.len()).map(node).collect();
            let mut alloc = vec![Resources::default(); caps.len()];
            let capacity = |i: usize| {
                let (slots, memory_mb, disk_mb, pids, _) = caps[i];
                Resources { cpus: 2.0, memory_mb, disk_mb, pids, slots }
            };
            for (cpus, memory_mb, disk_mb, pids) in demands {
                let need = Resources { cpus, memory_mb, disk_mb, pids, slots: 1 };
                let d = Demand { runtime: RuntimeKind::Bwrap, image: String::new(), need };
                let cands: Vec<Candidate<'_>> = (0..caps.len()).map(|i| Candidate {
                    id: &ids[i],
                    capacity: capacity(i),
                    runtimes: if caps[i].4 { BWRAP } else { &[] },
                    images: &[],
                    used: alloc[i],
                    max_disk_mb: 0,
                }).collect();
                match place(&cands, &d) {
                    Ok(id) => {
                        let i = ids.iter().position(|x| x == id).unwrap();
                        prop_assert!(caps[i].4, "placed on a node without the runtime");
                        alloc[i].add(&d.need);
                        let (c, u) = (capacity(i), alloc[i]);
                        prop_assert!(u.slots <= c.slots && u.memory_mb <= c.memory_mb);
                        prop_assert!(u.disk_mb <= c.disk_mb && u.pids <= c.pids);
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
