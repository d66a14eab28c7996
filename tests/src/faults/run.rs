//! One run of a scenario: start the cluster and the recorders, submit a witnessed batch, wait
//! until the seed's number of attempts is alive, inject the fault, wait for every acknowledged
//! job to end, then check the history.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use corral_client::{Client, v1 as pb};
use corral_core::jobs::{BatchId, JobId, JobRecord};
use corral_core::keys::JobsPrefix;
use corral_core::store::{self, StateStore, etcd::EtcdStore};

use super::check::{self, Acked, Record};
use super::cluster::{FaultCluster, Placement, TTL};
use super::history::Change;
use super::history::{RecordLog, Witness};
use super::{Plan, RunReport, Scenario, inject};

/// How the detection (or recovery) time of a run is measured.
#[derive(Debug, Clone, Default)]
pub enum Detect {
    #[default]
    None,
    /// The node record of this node is deleted (its lease expired).
    NodeGone(String),
    /// A coordinator other than this one holds the leader key.
    NewLeader(String),
    /// The first job commit after the fault is healed.
    CommitAfterHeal,
}

/// A run in progress; the faults in [`inject`] act on it.
pub struct Ctx {
    pub cluster: FaultCluster,
    pub witness: Witness,
    pub records: RecordLog,
    /// Talks to the last coordinator (the one that is not cut or killed).
    pub client: Client,
    pub plan: Plan,
    pub t0: Instant,
    pub acked: Vec<Acked>,
    pub caps: HashMap<String, usize>,
    pub notes: Vec<String>,
    pub violations: Vec<String>,
    pub fault_at: Option<f64>,
    pub healed_at: Option<f64>,
    pub detect: Detect,
}

impl Ctx {
    pub fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// The batch's items, each reporting `i{k}` to the witness.
    pub fn batch_request(&self, key: &str) -> pb::SubmitBatchRequest {
        let items = (0..self.plan.items)
            .map(|k| pb::JobSpec {
                argv: vec![
                    "bash".into(),
                    "-c".into(),
                    self.witness.line(&format!("i{k}"), &format!("sleep {}", self.plan.run_s)),
                ],
                internet_access: true,
                timeout_seconds: 60.0,
                ..Default::default()
            })
            .collect();
        pb::SubmitBatchRequest {
            items,
            max_concurrency: self.plan.cap as u32,
            idempotency_key: key.to_owned(),
            ..Default::default()
        }
    }

    /// Records that Submit acknowledged batch `batch` (its items become acked jobs).
    pub fn acked_batch(&mut self, batch: &str) -> anyhow::Result<()> {
        let id = BatchId::parse(batch)?;
        for k in 0..self.plan.items {
            let job_id = JobId::item(&id, k as u32).to_string();
            self.acked.push(Acked { job_id, label: format!("i{k}"), group: batch.to_owned() });
        }
        self.caps.insert(batch.to_owned(), self.plan.cap);
        Ok(())
    }

    /// Waits until the seed's number of attempts is alive (and, when `node` is given, one of
    /// them runs there), then the seed's delay.
    pub async fn wait_trigger(&self, node: Option<&str>) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        while self.witness.open() < self.plan.trigger_alive || node.is_some_and(|n| self.records.running_on(n) == 0) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the batch never had {} attempts alive",
                self.plan.trigger_alive
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(self.plan.delay_ms)).await;
        // The fault must hit something on the node: wait again if its attempts ended meanwhile.
        while node.is_some_and(|n| self.records.running_on(n) == 0) {
            anyhow::ensure!(Instant::now() < deadline, "nothing ran on {node:?} to hit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Final job records (job id → record), read from etcd.
    pub async fn finals(&self) -> anyhow::Result<HashMap<String, JobRecord>> {
        let store = EtcdStore::connect(&[self.cluster.etcd.endpoint()]).await?;
        let page = store.range(&JobsPrefix(None).to_string(), None, 0).await?;
        let mut out = HashMap::new();
        for kv in &page.kvs {
            let rec: JobRecord = store::decode(kv)?;
            out.insert(rec.id.to_string(), rec);
        }
        Ok(out)
    }

    /// Waits (generously) until every acked job's record is terminal, the fault was detected
    /// (for the kinds of detection that must happen) and no attempt is alive.
    async fn settle(&self) -> anyhow::Result<HashMap<String, JobRecord>> {
        let deadline = Instant::now() + Duration::from_secs(150);
        let must_detect = matches!(self.detect, Detect::NodeGone(_) | Detect::NewLeader(_));
        while must_detect && self.detection().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        loop {
            let finals = self.finals().await;
            if let Ok(f) = &finals
                && self.acked.iter().all(|a| f.get(&a.job_id).is_some_and(|r| r.state.is_terminal()))
            {
                break;
            }
            if Instant::now() >= deadline {
                return finals;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let quiet = Instant::now() + Duration::from_secs(15);
        while self.witness.open() > 0 && Instant::now() < quiet {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.finals().await
    }

    fn detection(&self) -> Option<f64> {
        let events = self.records.events();
        let fault = self.fault_at?;
        match &self.detect {
            Detect::None => None,
            Detect::NodeGone(n) => check::first_after(&events, fault, |c| matches!(c, Change::NodeGone(x) if x == n)),
            Detect::NewLeader(old) => {
                check::first_after(&events, fault, |c| matches!(c, Change::Leader(x) if x != old))
            }
            Detect::CommitAfterHeal => {
                let heal = self.healed_at.unwrap_or(fault);
                check::first_after(&events, heal, |c| matches!(c, Change::Job { committed: true, .. }))
            }
        }
    }

    async fn finish(mut self, scenario: Scenario, seed: u64) -> anyhow::Result<(RunReport, FaultCluster)> {
        let finals = self.settle().await.context("reading the final job records")?;
        let record = Record {
            acked: self.acked.clone(),
            caps: self.caps.clone(),
            attempts: self.witness.attempts(),
            events: self.records.events(),
            finals: finals.iter().map(|(k, r)| (k.clone(), r.state)).collect(),
        };
        let checked = check::check(&record);
        // Every batch item just sleeps: it must complete, whatever the fault did.
        for a in self.acked.iter().filter(|a| self.caps.contains_key(&a.group)) {
            if let Some(r) = finals.get(&a.job_id).filter(|r| r.state != corral_core::jobs::JobState::Completed) {
                self.violations.push(format!("{} ended {} ({})", a.job_id, r.state, r.reason));
            }
        }
        let reclaimed: u32 =
            self.acked.iter().filter_map(|a| finals.get(&a.job_id)).map(|r| r.attempt.saturating_sub(1)).sum();
        self.notes.push(format!("{reclaimed} attempts claimed again (records)"));
        let kills_attempts = matches!(
            scenario,
            Scenario::F1AgentKilled | Scenario::F2NodeKilled | Scenario::F12AgentIsolated | Scenario::AgentStalled
        );
        if kills_attempts && reclaimed == 0 {
            self.violations.push("the fault interrupted no attempt: the run tested nothing".into());
        }
        // RELIABILITY F6: duplicate deliveries after a NATS restart are absorbed by the claim
        // CAS, so nothing runs twice (no node is lost, so nothing needs a re-run either).
        if scenario == Scenario::F6NatsRestarted && checked.figures.reruns > 0 {
            self.violations.push(format!("{} duplicate runs after the NATS restart", checked.figures.reruns));
        }
        let detection = self.detection();
        match (&self.detect, detection) {
            (Detect::NodeGone(n), None) => self.violations.push(format!("{n} was never detected as gone")),
            (Detect::NewLeader(_), None) => self.violations.push("no new leader took over".into()),
            // Generous bounds (RELIABILITY: TTL + 2 s for a node, 15 s for a leader): correctness
            // on a loaded machine, not speed.
            (Detect::NodeGone(n), Some(d)) if d > 3.0 * TTL as f64 => {
                self.violations.push(format!("{n} detected only after {d:.1} s (TTL {TTL} s)"))
            }
            (Detect::NewLeader(_), Some(d)) if d > 30.0 => self.violations.push(format!("new leader after {d:.1} s")),
            _ => {}
        }
        let (resumes, gaps) = self.records.resumes_and_gaps();
        if gaps > 0 {
            self.notes.push(format!("the etcd log resumed over {gaps} compacted ranges (commits may be missed)"));
        }
        self.notes.push(format!("etcd watch resumed {resumes} times"));
        let mut violations = checked.violations;
        violations.append(&mut self.violations);
        let report = RunReport {
            scenario: scenario.id(),
            seed,
            plan: self.plan.clone(),
            figures: checked.figures,
            detection_s: detection,
            stale_rejected: self.cluster.count_in_coordinator_logs("rejected a stale job report"),
            notes: self.notes,
            violations,
        };
        Ok((report, self.cluster))
    }
}

/// The processes of a scenario: (coordinators, agents).
fn layout(s: Scenario, plan: &Plan) -> (Vec<Placement>, Vec<Placement>) {
    let plain = Placement::default();
    let cut = Placement { netns: true, ..Default::default() };
    let skewed = |skew: &str| Placement { skew: Some(skew.to_owned()), ..Default::default() };
    let mut agents = vec![plain.clone(), plain.clone()];
    let coordinators = match s {
        Scenario::F3CoordinatorKilledDuringSubmit => vec![plain.clone(), plain],
        Scenario::F4LeaderCutFromEtcd => vec![cut, plain],
        Scenario::F10AgentCutFromEtcd | Scenario::F11AgentCutFromNats | Scenario::F12AgentIsolated => {
            agents[plan.victim] = cut;
            vec![plain]
        }
        Scenario::ClockSkew => {
            // The leader and one agent off, in opposite directions; the client's coordinator true.
            let other = if plan.skew.starts_with('+') {
                plan.skew.replacen('+', "-", 1)
            } else {
                plan.skew.replacen('-', "+", 1)
            };
            agents[plan.victim] = skewed(&other);
            vec![skewed(&plan.skew), plain]
        }
        _ => vec![plain],
    };
    (coordinators, agents)
}

/// Runs scenario `s` with `seed`; the report says what held. Errors are harness failures (the
/// cluster did not start, the batch never got going).
pub async fn run(s: Scenario, seed: u64) -> anyhow::Result<RunReport> {
    let plan = Plan::new(seed);
    let t0 = Instant::now();
    let (coordinators, agents) = layout(s, &plan);
    let cluster = FaultCluster::start(&coordinators, &agents).await?;
    let witness = Witness::start(cluster.host, t0).await?;
    let records = RecordLog::start(cluster.etcd.endpoint(), t0).await?;
    let endpoint = cluster.endpoints.last().cloned().context("no coordinator")?;
    let client = match crate::ready_client(&endpoint).await {
        Ok(c) => c,
        Err(e) => return Err(e.context(cluster.logs())),
    };
    let mut ctx = Ctx {
        cluster,
        witness,
        records,
        client,
        plan,
        t0,
        acked: Vec::new(),
        caps: HashMap::new(),
        notes: Vec::new(),
        violations: Vec::new(),
        fault_at: None,
        healed_at: None,
        detect: Detect::None,
    };
    if let Err(e) = inject::inject(s, &mut ctx).await {
        return Err(e.context(format!("{} seed {seed}\n{}", s.id(), ctx.cluster.logs())));
    }
    let (report, cluster) = ctx.finish(s, seed).await?;
    if !report.passed() {
        eprintln!("{}", cluster.logs());
    }
    Ok(report)
}
