//! The fault suite in short mode: each scenario once, with a fixed seed, over real etcd, NATS,
//! coordinators and agents (`corral_e2e::faults`). A run passes when the checker finds nothing
//! lost, no duplicate commit, no overlap of two attempts of one item beyond 1 s, no cap
//! exceeded, and the scenario's own checks hold. Long mode: `scripts/faults.sh --runs N`.

use corral_e2e::faults::{Scenario, run};

/// Short mode's seed: fixed, so a failure reproduces with `corral-faults --scenario ID --seed 1`.
const SEED: u64 = 1;

async fn scenario(s: Scenario) -> anyhow::Result<()> {
    let report = run(s, SEED).await?;
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    anyhow::ensure!(report.passed(), "{} ({}) seed {SEED}: {:?}", s.id(), s.describe(), report.violations);
    Ok(())
}

macro_rules! scenarios {
    ($($name:ident => $s:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() -> anyhow::Result<()> {
            scenario(Scenario::$s).await
        }
    )*};
}

scenarios! {
    f1_agent_killed => F1AgentKilled,
    f2_node_killed => F2NodeKilled,
    f3_coordinator_killed_during_submit => F3CoordinatorKilledDuringSubmit,
    f4_leader_cut_from_etcd => F4LeaderCutFromEtcd,
    f6_nats_restarted => F6NatsRestarted,
    f7_jetstream_wiped => F7JetStreamWiped,
    f8_etcd_restarted => F8EtcdRestarted,
    f9_etcd_down => F9EtcdDown,
    f10_agent_cut_from_etcd => F10AgentCutFromEtcd,
    f11_agent_cut_from_nats => F11AgentCutFromNats,
    f12_agent_isolated => F12AgentIsolated,
    f13_disk_full => F13DiskFull,
    agent_stalled_past_its_lease => AgentStalled,
    clock_skew => ClockSkew,
}
