//! The fault suite (RELIABILITY F1–F13, an agent stalled past its lease, clock skew), as a
//! seeded harness over real etcd, NATS, coordinators and agents in separate processes.
//!
//! - [`cluster`]: the processes, one of them optionally in a network namespace to be cut off
//! - [`history`]: the witness (attempts reported from inside the sandboxes) and the etcd log
//! - [`check`]: the one checker (lost, duplicate commit, overlap, cap exceeded) and figures
//! - [`run`]: a scenario's run: workload, fault, wait, check
//! - [`inject`]: the faults themselves
//!
//! A seed chooses the batch's shape (items, cap, run time), when the fault hits (how many
//! attempts are alive, plus a delay), which agent it hits and how long cuts last. Short mode
//! (`tests/tests/faults.rs`) runs each scenario once with a fixed seed; long mode
//! (`scripts/faults.sh`, the `corral-faults` binary) runs each N times with different seeds and
//! writes the figures into `docs/RELIABILITY.md`.

pub mod check;
pub mod cluster;
pub mod history;
mod inject;
pub mod run;

use serde::Serialize;

pub use run::run;

/// The scenarios, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    F1AgentKilled,
    F2NodeKilled,
    F3CoordinatorKilledDuringSubmit,
    F4LeaderCutFromEtcd,
    F6NatsRestarted,
    F7JetStreamWiped,
    F8EtcdRestarted,
    F9EtcdDown,
    F10AgentCutFromEtcd,
    F11AgentCutFromNats,
    F12AgentIsolated,
    F13DiskFull,
    AgentStalled,
    ClockSkew,
}

impl Scenario {
    pub const ALL: [Scenario; 14] = [
        Self::F1AgentKilled,
        Self::F2NodeKilled,
        Self::F3CoordinatorKilledDuringSubmit,
        Self::F4LeaderCutFromEtcd,
        Self::F6NatsRestarted,
        Self::F7JetStreamWiped,
        Self::F8EtcdRestarted,
        Self::F9EtcdDown,
        Self::F10AgentCutFromEtcd,
        Self::F11AgentCutFromNats,
        Self::F12AgentIsolated,
        Self::F13DiskFull,
        Self::AgentStalled,
        Self::ClockSkew,
    ];

    /// Short name (command-line argument, table row).
    pub fn id(self) -> &'static str {
        match self {
            Self::F1AgentKilled => "F1",
            Self::F2NodeKilled => "F2",
            Self::F3CoordinatorKilledDuringSubmit => "F3",
            Self::F4LeaderCutFromEtcd => "F4",
            Self::F6NatsRestarted => "F6",
            Self::F7JetStreamWiped => "F7",
            Self::F8EtcdRestarted => "F8",
            Self::F9EtcdDown => "F9",
            Self::F10AgentCutFromEtcd => "F10",
            Self::F11AgentCutFromNats => "F11",
            Self::F12AgentIsolated => "F12",
            Self::F13DiskFull => "F13",
            Self::AgentStalled => "stall",
            Self::ClockSkew => "skew",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::F1AgentKilled => "kill -9 an agent mid-batch",
            Self::F2NodeKilled => "kill a whole node (agent, watchdog, sandboxes) at once",
            Self::F3CoordinatorKilledDuringSubmit => "kill -9 the leader during a batch submit; client retries by key",
            Self::F4LeaderCutFromEtcd => "two coordinators; cut the leader off from etcd",
            Self::F6NatsRestarted => "restart nats-server during dispatch",
            Self::F7JetStreamWiped => "wipe the JetStream store (stop, delete, start)",
            Self::F8EtcdRestarted => "restart etcd",
            Self::F9EtcdDown => "all etcd down (short: 6-10 s, not 60 s)",
            Self::F10AgentCutFromEtcd => "cut an agent off from etcd only",
            Self::F11AgentCutFromNats => "cut an agent off from NATS only (5-10 s), then heal",
            Self::F12AgentIsolated => "isolate an agent (12-16 s, not 60 s), then heal",
            Self::F13DiskFull => "fill a sandbox's disk quota and a job's /tmp",
            Self::AgentStalled => "SIGSTOP an agent for 3x its lease TTL",
            Self::ClockSkew => "leader coordinator and one agent 60-120 s off (libfaketime)",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.id().eq_ignore_ascii_case(s))
    }
}

/// A small deterministic generator (splitmix64): the same seed gives the same run plan.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// What the seed chose.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub items: usize,
    pub cap: usize,
    /// How long each item runs (s).
    pub run_s: f64,
    /// The fault hits once this many attempts are alive...
    pub trigger_alive: usize,
    /// ...plus this delay (ms).
    pub delay_ms: u64,
    /// Which agent (0-based) a node fault hits.
    pub victim: usize,
    /// How long a cut or outage lasts (s), where the scenario heals.
    pub outage_s: u64,
    /// libfaketime offset for the skew scenario, e.g. "+75s".
    pub skew: String,
}

impl Plan {
    pub fn new(seed: u64) -> Self {
        let mut r = Rng::new(seed);
        let items = r.range(12, 20) as usize;
        let cap = r.range(4, 7) as usize;
        // Longer than the time an agent takes to fence itself (~TTL - 1 s), so a cut hits
        // attempts that are still running.
        let run_s = [2.5, 3.0, 3.5][r.range(0, 2) as usize];
        let trigger_alive = r.range(2, cap as u64) as usize;
        let delay_ms = r.range(0, 1500);
        let victim = r.range(0, 1) as usize;
        let outage_s = r.range(0, 4);
        let skew = format!("{}{}s", if r.range(0, 1) == 0 { "+" } else { "-" }, r.range(60, 120));
        Self { items, cap, run_s, trigger_alive, delay_ms, victim, outage_s, skew }
    }
}

/// One run's result: the checker's figures and verdict, and what the scenario observed.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub scenario: &'static str,
    pub seed: u64,
    pub plan: Plan,
    pub figures: check::Figures,
    /// Fault to detection (node record gone / new leader) or heal to recovery (next commit), s.
    pub detection_s: Option<f64>,
    /// Job reports the leader rejected as stale (coordinator logs).
    pub stale_rejected: usize,
    pub notes: Vec<String>,
    pub violations: Vec<String>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_fixes_the_plan_and_seeds_vary_it() {
        let a = serde_json::to_string(&Plan::new(7)).unwrap();
        assert_eq!(a, serde_json::to_string(&Plan::new(7)).unwrap());
        let plans: std::collections::HashSet<String> =
            (0..20).map(|s| serde_json::to_string(&Plan::new(s)).unwrap()).collect();
        assert!(plans.len() > 15, "20 seeds gave {} plans", plans.len());
        for s in 0..200 {
            let p = Plan::new(s);
            assert!((12..=20).contains(&p.items) && (4..=7).contains(&p.cap) && p.trigger_alive <= p.cap);
        }
    }

    #[test]
    fn scenario_ids_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::parse(s.id()), Some(s));
        }
    }
}
