//! One capacity model for a node: what it offers and what sandboxes and jobs reserve from it.
//!
//! Sandbox placement and job placement both count every sandbox and every running job of a
//! node against the same [`Resources`], so neither can fill a node the other already filled.
//! CPU is compressible: it is counted and weighs in the placement score, but never refuses a
//! placement. Memory, disk, process ids and slots are hard: a placement that would exceed one is
//! refused, and the error names the resource.

use corral_core::jobs::JobSpec;
use corral_core::model::{Capacity, SandboxSpec};

/// Most processes a job's sandbox may run, as the coordinator counts it (the agents'
/// `job_pids_limit` default).
pub const JOB_PIDS: u64 = 1024;

/// An amount of each resource a node has.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resources {
    pub cpus: f64,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub pids: u64,
    /// Sandboxes and jobs (one each).
    pub slots: u32,
}

impl Resources {
    /// What a node offers. A node that reports no disk (older agents, quotas off) is not limited
    /// by disk.
    pub fn of_node(c: &Capacity) -> Self {
        Self {
            cpus: c.cpus,
            memory_mb: c.memory_mb,
            disk_mb: if c.disk_mb == 0 { u64::MAX } else { c.disk_mb },
            pids: c.pids,
            slots: c.sandboxes,
        }
    }

    /// What one sandbox reserves.
    pub fn of_sandbox(s: &SandboxSpec) -> Self {
        Self { cpus: s.cpus, memory_mb: s.memory_mb, disk_mb: s.disk_mb, pids: u64::from(s.pids_limit), slots: 1 }
    }

    /// What one running job reserves (its files live in memory, counted in `memory_mb`).
    pub fn of_job(s: &JobSpec) -> Self {
        Self { cpus: s.cpus, memory_mb: s.memory_mb, disk_mb: 0, pids: JOB_PIDS, slots: 1 }
    }

    pub fn add(&mut self, o: &Self) {
        self.cpus += o.cpus;
        self.memory_mb = self.memory_mb.saturating_add(o.memory_mb);
        self.disk_mb = self.disk_mb.saturating_add(o.disk_mb);
        self.pids = self.pids.saturating_add(o.pids);
        self.slots = self.slots.saturating_add(o.slots);
    }

    pub fn sub(&mut self, o: &Self) {
        self.cpus = (self.cpus - o.cpus).max(0.0);
        self.memory_mb = self.memory_mb.saturating_sub(o.memory_mb);
        self.disk_mb = self.disk_mb.saturating_sub(o.disk_mb);
        self.pids = self.pids.saturating_sub(o.pids);
        self.slots = self.slots.saturating_sub(o.slots);
    }

    pub fn plus(mut self, o: &Self) -> Self {
        self.add(o);
        self
    }

    pub fn minus(mut self, o: &Self) -> Self {
        self.sub(o);
        self
    }

    /// The first hard resource that `used + need` would exceed on a node of capacity `self`.
    pub fn short_of(&self, used: &Self, need: &Self) -> Option<Shortage> {
        let over = |used: u64, need: u64, cap: u64| used.saturating_add(need) > cap;
        if used.slots.saturating_add(need.slots) > self.slots {
            Some(Shortage::Slots)
        } else if over(used.memory_mb, need.memory_mb, self.memory_mb) {
            Some(Shortage::Memory)
        } else if over(used.disk_mb, need.disk_mb, self.disk_mb) {
            Some(Shortage::Disk)
        } else if over(used.pids, need.pids, self.pids) {
            Some(Shortage::Pids)
        } else {
            None
        }
    }

    pub fn fits(&self, used: &Self, need: &Self) -> bool {
        self.short_of(used, need).is_none()
    }

    /// The fraction of the node left free after adding `need` to `used`, by its scarcest
    /// resource (CPU included, although it never refuses).
    pub fn free_fraction_after(&self, used: &Self, need: &Self) -> f64 {
        let after = used.plus(need);
        let frac = |used: f64, cap: f64| if cap <= 0.0 { 0.0 } else { (1.0 - used / cap).max(0.0) };
        let hard = |used: u64, cap: u64| if cap == u64::MAX { 1.0 } else { frac(used as f64, cap as f64) };
        frac(f64::from(after.slots), f64::from(self.slots))
            .min(hard(after.memory_mb, self.memory_mb))
            .min(hard(after.disk_mb, self.disk_mb))
            .min(hard(after.pids, self.pids))
            .min(frac(after.cpus, self.cpus))
    }
}

/// The resource a placement ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shortage {
    Slots,
    Memory,
    Disk,
    Pids,
}

impl std::fmt::Display for Shortage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Slots => "sandbox slots",
            Self::Memory => "memory",
            Self::Disk => "disk",
            Self::Pids => "process ids",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Resources {
        Resources { cpus: 2.0, memory_mb: 1000, disk_mb: u64::MAX, pids: 4096, slots: 4 }
    }

    #[test]
    fn names_the_first_resource_short() {
        let need = Resources { cpus: 8.0, memory_mb: 500, disk_mb: 10, pids: 1024, slots: 1 };
        assert_eq!(node().short_of(&Resources::default(), &need), None, "CPU never refuses");
        let used = Resources { memory_mb: 600, ..Default::default() };
        assert_eq!(node().short_of(&used, &need), Some(Shortage::Memory));
        let used = Resources { pids: 3500, ..Default::default() };
        assert_eq!(node().short_of(&used, &need), Some(Shortage::Pids));
        let used = Resources { slots: 4, ..Default::default() };
        assert_eq!(node().short_of(&used, &need), Some(Shortage::Slots));
        let small_disk = Resources { disk_mb: 5, ..node() };
        assert_eq!(small_disk.short_of(&Resources::default(), &need), Some(Shortage::Disk));
    }

    #[test]
    fn a_node_without_disk_figures_is_not_limited_by_disk() {
        let cap = Capacity { cpus: 1.0, memory_mb: 10, sandboxes: 1, disk_mb: 0, max_sandbox_disk_mb: 0, pids: 10 };
        assert_eq!(Resources::of_node(&cap).disk_mb, u64::MAX);
    }

    mod mixed {
        use corral_core::ids::{NodeId, TenantId};
        use corral_core::jobs::JobId;
        use corral_core::model::RuntimeKind;
        use proptest::prelude::*;

        use super::*;
        use crate::jobs::place::{self, Caps, Slots, Want};
        use crate::scheduler::{self, Candidate, Demand};

        const BWRAP: &[RuntimeKind] = &[RuntimeKind::Bwrap];

        fn need((cpus, memory_mb, disk_mb, pids): (f64, u64, u64, u64)) -> Resources {
            Resources { cpus, memory_mb, disk_mb, pids, slots: 1 }
        }

        proptest! {
            /// Sandboxes placed one by one and job plans, in a random mix on the same nodes,
            /// never take more of any hard resource than a node has.
            #[test]
            fn sandboxes_and_jobs_never_oversubscribe_a_node(
                nodes in proptest::collection::vec((1u32..12, 512u64..8192, 200u64..4000, 512u64..16384), 1..5),
                steps in proptest::collection::vec(
                    (any::<bool>(), 1usize..6, (0.1f64..4.0, 16u64..2048, 0u64..1000, 16u64..2048)), 1..40),
            ) {
                let ids: Vec<NodeId> = (0..nodes.len()).map(|i| NodeId::parse(&format!("n{i}")).unwrap()).collect();
                let caps: Vec<Resources> = nodes.iter().map(|&(slots, memory_mb, disk_mb, pids)| {
                    Resources { cpus: 4.0, memory_mb, disk_mb, pids, slots }
                }).collect();
                let mut used = vec![Resources::default(); nodes.len()];
                let tenant = TenantId::parse("t").unwrap();
                for (sandbox, count, shape) in steps {
                    if sandbox {
                        let d = Demand { runtime: RuntimeKind::Bwrap, image: String::new(), need: need(shape) };
                        let cands: Vec<Candidate<'_>> = ids.iter().enumerate().map(|(i, id)| Candidate {
                            id, capacity: caps[i], runtimes: BWRAP, images: &[], used: used[i], max_disk_mb: 0,
                        }).collect();
                        if let Ok(id) = scheduler::place(&cands, &d) {
                            let i = ids.iter().position(|x| x == id).unwrap();
                            used[i].add(&d.need);
                        }
                    } else {
                        let mut slots: Vec<Slots> = ids.iter().enumerate().map(|(i, id)| Slots {
                            node: id.clone(), capacity: caps[i], used: used[i], runtimes: BWRAP.to_vec(),
                            images: vec![], languages: vec![],
                        }).collect();
                        let wants: Vec<Want> = (0..count).map(|_| Want {
                            id: JobId::random(), batch: None, runtime: RuntimeKind::Bwrap, image: String::new(),
                            language: None, need: Resources { disk_mb: 0, ..need(shape) },
                        }).collect();
                        let needs: std::collections::HashMap<JobId, Resources> =
                            wants.iter().map(|w| (w.id.clone(), w.need)).collect();
                        let mut limits = Caps { per_tenant: usize::MAX, ..Default::default() };
                        for (job, node) in place::plan(&mut slots, &[(tenant.clone(), wants)], &mut limits) {
                            let i = ids.iter().position(|x| *x == node).unwrap();
                            used[i].add(&needs[&job]);
                        }
                    }
                    for (u, c) in used.iter().zip(&caps) {
                        prop_assert!(u.slots <= c.slots, "slots {} > {}", u.slots, c.slots);
                        prop_assert!(u.memory_mb <= c.memory_mb, "memory {} > {}", u.memory_mb, c.memory_mb);
                        prop_assert!(u.disk_mb <= c.disk_mb, "disk {} > {}", u.disk_mb, c.disk_mb);
                        prop_assert!(u.pids <= c.pids, "pids {} > {}", u.pids, c.pids);
                    }
                }
            }
        }
    }
}
