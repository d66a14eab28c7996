//! The end-to-end scenarios against a real cluster: nats-server + etcd + coordinator + 2 agents,
//! each a separate process; plus node loss (`kill -9` of an agent).

use std::time::{Duration, Instant};

use anyhow::ensure;
use corral_client::v1 as pb;
use corral_e2e::*;

async fn cluster() -> anyhow::Result<(Cluster, corral_client::Client)> {
    let cluster = Cluster::start(2)?;
    let client = ready_client(&cluster.endpoint).await?;
    Ok((cluster, client))
}

macro_rules! cluster_test {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() -> anyhow::Result<()> {
            let (cluster, client) = cluster().await?;
            let result = corral_e2e::$name(&client).await;
            if result.is_err() {
                eprintln!("{}", cluster_logs(&cluster));
            }
            result
        }
    };
}

cluster_test!(lifecycle);
cluster_test!(exec);
cluster_test!(background_server);
cluster_test!(files);
cluster_test!(bad_input);
cluster_test!(ttl_expiry);
cluster_test!(set_timeout);
cluster_test!(background_processes);
cluster_test!(sessions);
cluster_test!(run_code);
cluster_test!(docker_sandbox);

/// Codebases with their contents in a real S3-protocol server, shared by the coordinator and
/// both agents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codebases_on_s3() -> anyhow::Result<()> {
    let s3 = corral_testkit::s3::S3Server::start()?;
    let env = s3_env(&s3);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cluster = Cluster::start_with_envs(2, &env, &env)?;
    let client = ready_client(&cluster.endpoint).await?;
    let result = async {
        codebase_store(&client).await?;
        codebase_sandbox(&client, pb::Runtime::Bwrap).await
    }
    .await;
    if result.is_err() {
        eprintln!("{}", cluster_logs(&cluster));
    }
    result
}

fn s3_env(s3: &corral_testkit::s3::S3Server) -> Vec<(String, String)> {
    vec![
        ("CORRAL_BLOB__BACKEND".into(), "s3".into()),
        ("CORRAL_BLOB__S3_ENDPOINT".into(), s3.endpoint()),
        ("CORRAL_BLOB__S3_BUCKET".into(), s3.bucket().into()),
        ("CORRAL_BLOB__S3_ACCESS_KEY_ID".into(), s3.access_key().into()),
        ("CORRAL_BLOB__S3_SECRET_ACCESS_KEY".into(), s3.secret_key().into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_output_keeps_agent_memory_bounded() -> anyhow::Result<()> {
    let (cluster, client) = cluster().await?;
    huge_output(&client).await?;
    for a in &cluster.agents {
        let (rss, peak) = a.memory_kib().ok_or_else(|| anyhow::anyhow!("no memory figures for {}", a.name))?;
        ensure!(peak < 200 * 1024, "{} peaked at {peak} KiB (rss {rss} KiB) for 200 MB of output", a.name);
    }
    Ok(())
}

/// `kill -9` of one agent: its sandboxes become LOST within 15 s, the other agent keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_sandboxes_become_lost() -> anyhow::Result<()> {
    let (mut cluster, client) = cluster().await?;
    let mut by_node: std::collections::HashMap<String, Vec<String>> = Default::default();
    for _ in 0..8 {
        let s = client.create(Default::default()).await?;
        by_node.entry(s.node_id.clone()).or_default().push(s.id);
    }
    ensure!(by_node.len() == 2, "placement used {} nodes for 8 sandboxes: {by_node:?}", by_node.len());
    let victim = cluster.node_id(1);
    let survivors = by_node[&cluster.node_id(2)].clone();
    cluster.agents[0].kill9();
    let killed_at = Instant::now();
    for id in &by_node[&victim] {
        let s = wait_state(&client, id, pb::SandboxState::Lost, Duration::from_secs(15)).await;
        if s.is_err() {
            eprintln!("{}", cluster_logs(&cluster));
        }
        let s = s?;
        ensure!(s.termination_reason.contains(&victim), "reason {:?}", s.termination_reason);
    }
    eprintln!("sandboxes of the killed agent were LOST after {:?}", killed_at.elapsed());
    for id in &survivors {
        let out = client.run_argv(id, &["echo", "alive"]).await?;
        ensure!(out.stdout == b"alive\n", "survivor {id}: {out:?}");
    }
    let fresh = client.create(Default::default()).await?;
    ensure!(fresh.node_id == cluster.node_id(2), "new sandbox placed on {}", fresh.node_id);
    ensure!(client.run_argv(&fresh.id, &["true"]).await?.exit_code == 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_bwrap() -> anyhow::Result<()> {
    let (_server, client) = cluster().await?;
    pause_resume(&client, corral_client::v1::Runtime::Bwrap).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_docker() -> anyhow::Result<()> {
    let (_server, client) = cluster().await?;
    pause_resume(&client, corral_client::v1::Runtime::Docker).await
}

/// Docker containers outlive a crashed agent: restarted within the lease TTL, the agent re-adopts
/// the container whose sandbox is still RUNNING (its background process still there) and removes
/// the one whose record ended while it was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_readopts_live_containers_and_reaps_the_rest() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(1)?;
    let client = ready_client(&cluster.endpoint).await?;
    let docker = |image: &str| pb::CreateSandboxRequest {
        runtime: pb::Runtime::Docker as i32,
        image: image.to_owned(),
        ..Default::default()
    };
    let keep = client.create(docker("corral/base")).await?;
    let gone = client.create(docker("corral/base")).await?;
    let bg = client.run_shell(&keep.id, "nohup sleep 600 >/dev/null 2>&1 & echo started > /workspace/mark").await?;
    ensure!(bg.exit_code == 0, "{bg:?}");

    cluster.agents[0].kill9();
    // While the agent is down its record is still live (the lease has not expired yet); ending
    // `gone` now leaves a container behind that the restarted agent must reap.
    client.destroy(&gone.id).await?;
    cluster.restart_agent(1)?;

    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        match client.run_shell(&keep.id, "cat /workspace/mark; pgrep -x sleep >/dev/null && echo sleeping").await {
            Ok(out) => break out,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for re-adoption: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => {
                eprintln!("{}", cluster_logs(&cluster));
                return Err(e.into());
            }
        }
    };
    ensure!(out.stdout == b"started\nsleeping\n", "re-adopted sandbox lost its state: {out:?}");
    ensure!(state(&client.get(&keep.id).await?) == pb::SandboxState::Running, "re-adopted sandbox is not RUNNING");

    let gone_label = format!("label=corral.sandbox_id={}", gone.id);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ps = std::process::Command::new("docker").args(["ps", "-aq", "--filter", &gone_label]).output()?;
        if ps.stdout.is_empty() {
            break;
        }
        ensure!(Instant::now() < deadline, "the ended sandbox's container was not reaped: {:?}", ps.stdout);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    client.destroy(&keep.id).await?;
    Ok(())
}

/// A sandbox whose create was answered RUNNING but whose RUNNING record never landed (as if its
/// coordinator died right after answering) is not failed: the reconciler re-publishes the create,
/// the agent confirms the sandbox it already runs, and the record becomes RUNNING again with the
/// sandbox's files intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrecorded_start_is_confirmed_again() -> anyhow::Result<()> {
    use corral_core::ids::{SandboxId, TenantId};
    use corral_core::keys::SandboxKey;
    use corral_core::model::SandboxRecord;
    use corral_core::state::SandboxState;
    use corral_core::store::{self, StateStore, Txn, etcd::EtcdStore};

    let cluster = Cluster::start_with_env(1, &[("CORRAL_COORDINATOR__CREATE_TIMEOUT_SECONDS", "3")])?;
    let client = ready_client(&cluster.endpoint).await?;
    let s = client.create(Default::default()).await?;
    client.run_shell(&s.id, "echo kept > /workspace/mark").await?;
    // RUNNING is written shortly after Create answers; a read makes it durable now.
    client.get(&s.id).await?;

    let store = EtcdStore::connect(&[cluster.etcd.endpoint()]).await?;
    let (tenant, id) = (TenantId::default_tenant(), SandboxId::parse(&s.id)?);
    let key = SandboxKey { tenant: &tenant, id: &id };
    let kv = store.get(&key.to_string()).await?.ok_or_else(|| anyhow::anyhow!("no record for {}", s.id))?;
    let mut record: SandboxRecord = store::decode(&kv)?;
    ensure!(record.state == SandboxState::Running, "record after create: {:?}", record.state);
    record.state = SandboxState::Scheduled;
    record.started_at_ms = 0;
    record.created_at_ms -= 3_500;
    let out = store.txn(Txn::new().when(&key, kv.mod_revision).put(&key, store::encode(&record))).await?;
    ensure!(out.succeeded, "rewriting the record raced with something");

    let again = wait_state(&client, &s.id, pb::SandboxState::Running, Duration::from_secs(20)).await;
    if again.is_err() {
        eprintln!("{}", cluster_logs(&cluster));
    }
    ensure!(again?.started_at_ms > 0, "the confirmed record carries its start time");
    let out = client.run_shell(&s.id, "cat /workspace/mark").await?;
    ensure!(out.stdout == b"kept\n", "the same sandbox, not a new one: {:?}", String::from_utf8_lossy(&out.stdout));
    client.destroy(&s.id).await?;
    Ok(())
}

/// A sandbox destroyed right after Create answered (before its deferred RUNNING write) is
/// recorded STOPPED with its start time, whichever write path it took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_destroyed_at_once_keeps_its_start_time() -> anyhow::Result<()> {
    let (_cluster, client) = cluster().await?;
    for _ in 0..5 {
        let s = client.create(Default::default()).await?;
        client.destroy(&s.id).await?;
        let got = client.get(&s.id).await?;
        ensure!(got.state == pb::SandboxState::Stopped as i32, "after destroy: {:?}", got.state);
        ensure!(got.started_at_ms >= got.created_at_ms && got.started_at_ms > 0, "start time kept: {got:?}");
        ensure!(got.ended_at_ms >= got.started_at_ms, "ended after it started: {got:?}");
    }
    Ok(())
}

/// A client reads what Create told it: right after Create returns RUNNING, Get and List say
/// RUNNING too (the RUNNING write happens after Create answers; readers wait for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_create_see_running() -> anyhow::Result<()> {
    let (_cluster, client) = cluster().await?;
    for i in 0..20 {
        let label = format!("round{i}");
        let req =
            pb::CreateSandboxRequest { labels: [("round".to_owned(), label.clone())].into(), ..Default::default() };
        let s = client.create(req).await?;
        ensure!(s.state == pb::SandboxState::Running as i32, "create answered {:?}", s.state);
        let got = client.get(&s.id).await?;
        ensure!(got.state == pb::SandboxState::Running as i32, "round {i}: get right after create: {:?}", got.state);
        let listed = client
            .list(pb::ListSandboxesRequest { labels: [("round".to_owned(), label)].into(), ..Default::default() })
            .await?;
        ensure!(
            listed.sandboxes.iter().map(|s| s.state).collect::<Vec<_>>() == vec![pb::SandboxState::Running as i32],
            "round {i}: list right after create: {:?}",
            listed.sandboxes
        );
        client.destroy(&s.id).await?;
    }
    Ok(())
}

/// Two coordinators: one leads (runs the reconciler), the other serves the API too. `kill -9` of
/// the leader: the standby takes over the reconciler within the lease TTL, so a sandbox created
/// through it still expires on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_coordinator_takes_over_the_reconciler() -> anyhow::Result<()> {
    use corral_core::keys::LeaderKey;
    use corral_core::store::{self, StateStore, etcd::EtcdStore};

    const LEASE: &[(&str, &str)] = &[("CORRAL_COORDINATOR__LEADER_LEASE_SECONDS", "3")];
    let mut cluster = Cluster::start_with_env(1, LEASE)?;
    ready_client(&cluster.endpoint).await?;
    let (mut second, second_endpoint) = cluster.add_coordinator(LEASE)?;
    let store = EtcdStore::connect(&[cluster.etcd.endpoint()]).await?;
    let leader = || async {
        let kv = store.get(&LeaderKey.to_string()).await?;
        anyhow::Ok(kv.map(|kv| store::decode::<corral_coordinator::leader::LeaderRecord>(&kv)).transpose()?)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = loop {
        if let Some(l) = leader().await? {
            break l;
        }
        ensure!(Instant::now() < deadline, "no coordinator became the leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let endpoints = [
        cluster.endpoint.trim_start_matches("http://").to_owned(),
        second_endpoint.trim_start_matches("http://").to_owned(),
    ];
    ensure!(endpoints.contains(&first.endpoint), "leader {first:?} is one of {endpoints:?}");
    let first_is_original = first.endpoint == endpoints[0];
    let survivor = if first_is_original { second_endpoint.clone() } else { cluster.endpoint.clone() };

    let client = ready_client(&survivor).await?;
    let s = client.create(pb::CreateSandboxRequest { timeout_seconds: 6, ..Default::default() }).await?;
    let killed = Instant::now();
    if first_is_original {
        cluster.coordinator.kill9();
    } else {
        second.kill9();
    }
    let expired = wait_state(&client, &s.id, pb::SandboxState::Expired, Duration::from_secs(30)).await;
    if expired.is_err() {
        eprintln!("{}\n--- second coordinator:\n{}", cluster_logs(&cluster), second.log_tail(4000));
    }
    expired?;
    let now_leader = leader().await?.ok_or_else(|| anyhow::anyhow!("no leader after the kill"))?;
    ensure!(now_leader.endpoint != first.endpoint, "the standby leads now: {now_leader:?}");
    eprintln!("sandbox expired {:?} after the leader was killed", killed.elapsed());
    Ok(())
}

/// A running sandbox whose record predates deadline keys (no `deadline_lease`, only the old
/// absolute `expires_at_ms`) still expires: the leader gives it a deadline key for the time left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_before_deadline_keys_still_expire() -> anyhow::Result<()> {
    use corral_core::ids::{SandboxId, TenantId};
    use corral_core::keys::{DeadlineKey, SandboxKey};
    use corral_core::model::SandboxRecord;
    use corral_core::store::{self, StateStore, Txn, etcd::EtcdStore};

    let (cluster, client) = cluster().await?;
    let s = client.create(pb::CreateSandboxRequest { timeout_seconds: 3600, ..Default::default() }).await?;
    client.get(&s.id).await?; // the RUNNING record (with its deadline key) is written
    let store = EtcdStore::connect(&[cluster.etcd.endpoint()]).await?;
    let (tenant, id) = (TenantId::default_tenant(), SandboxId::parse(&s.id)?);
    let key = SandboxKey { tenant: &tenant, id: &id }.to_string();
    let kv = store.get(&key).await?.ok_or_else(|| anyhow::anyhow!("no record"))?;
    let mut old: SandboxRecord = store::decode(&kv)?;
    ensure!(old.deadline_lease != 0, "a running sandbox with a timeout has a deadline lease");
    // Rewrite it as an older coordinator would have: an absolute expiry 3 s away, no key.
    old.deadline_lease = 0;
    old.expires_at_ms = corral_core::time::now_ms() + 3000;
    let deadline = DeadlineKey { tenant: &tenant, id: id.as_str() };
    let txn = Txn::new().when(&key, kv.mod_revision).put(&key, store::encode(&old)).delete(&deadline);
    ensure!(store.txn(txn).await?.succeeded, "rewriting the record");
    let expired = wait_state(&client, &s.id, pb::SandboxState::Expired, Duration::from_secs(30)).await;
    if expired.is_err() {
        eprintln!("{}", cluster_logs(&cluster));
    }
    expired?;
    Ok(())
}
