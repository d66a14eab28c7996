//! An agent stopped (SIGSTOP) for three times its lease TTL under a running batch with a cap of 8.
//! Its attempts must not keep running beside the attempts the coordinator re-queues elsewhere:
//! a witness outside the cluster records, from inside every attempt's sandbox, when the attempt
//! started and when its process died (its TCP connection closed), and the hosts' process tables
//! are sampled while it runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::ensure;
use corral_client::v1 as pb;
use corral_core::task::{OwnedTask, spawn_detached};
use corral_e2e::*;
use tokio::io::AsyncBufReadExt;

const CAP: usize = 8;
const ITEMS: usize = 16;
const MARKER: &str = "corral-stall-witness";
const SLEEPER: &str = "corral-stall-sleeper";

/// What the witness saw: per item, the [start, end] of each attempt's connection.
#[derive(Default)]
struct History {
    attempts: HashMap<String, Vec<(Instant, Option<Instant>)>>,
    open: usize,
    max_open: usize,
}

/// Serves the witness until the returned task is dropped.
async fn witness(history: Arc<Mutex<History>>) -> anyhow::Result<(u16, OwnedTask)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let task = OwnedTask::spawn("stall-test.witness", async move {
        while let Ok((stream, _)) = listener.accept().await {
            let history = history.clone();
            spawn_detached("stall-test.witness-conn", async move {
                let mut lines = tokio::io::BufReader::new(stream).lines();
                let Ok(Some(item)) = lines.next_line().await else { return };
                let index = {
                    let mut h = history.lock().unwrap();
                    h.open += 1;
                    h.max_open = h.max_open.max(h.open);
                    let v = h.attempts.entry(item.clone()).or_default();
                    v.push((Instant::now(), None));
                    v.len() - 1
                };
                // The connection closes when the attempt's process dies, however it dies.
                while let Ok(Some(_)) = lines.next_line().await {}
                let mut h = history.lock().unwrap();
                h.open -= 1;
                h.attempts.get_mut(&item).unwrap()[index].1 = Some(Instant::now());
            });
        }
        anyhow::Ok(())
    });
    Ok((port, task))
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill").args([sig, &pid.to_string()]).status()?;
    ensure!(status.success(), "kill {sig} {pid}: {status}");
    Ok(())
}

/// Processes on this host whose command line starts with `program` and carries `marker`.
fn count_processes(marker: &str, program: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains(marker) && c.starts_with(program)
            })
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_agent_leaves_no_overlapping_attempts() -> anyhow::Result<()> {
    const TTL: u64 = 4;
    // With `CORRAL_AGENT__WATCHDOG=false` this fails: 12 attempts alive under the cap of 8, and
    // re-runs overlapping the stalled node's attempts by seconds.
    let agent_env = [("CORRAL_AGENT__LEASE_TTL_SECONDS", "4"), ("CORRAL_AGENT__HEARTBEAT_SECONDS", "1")];
    let cluster = Cluster::start_with_envs(2, &[], &agent_env)?;
    let client = ready_client(&cluster.endpoint).await?;
    let history = Arc::new(Mutex::new(History::default()));
    let (port, _witness) = witness(history.clone()).await?;
    let result = run(&cluster, &client, &history, port, TTL).await;
    if result.is_err() {
        eprintln!("{}", cluster_logs(&cluster));
    }
    result
}

async fn run(
    cluster: &Cluster,
    client: &corral_client::Client,
    history: &Arc<Mutex<History>>,
    port: u16,
    ttl: u64,
) -> anyhow::Result<()> {
    let items = (0..ITEMS)
        .map(|i| {
            let code = format!(
                "import socket,time # {MARKER}\ns=socket.create_connection(('127.0.0.1',{port}))\n\
                 s.sendall(b'item-{i}\\n')\ntime.sleep(8)\n"
            );
            pb::JobSpec {
                argv: vec!["/usr/bin/python3".into(), "-c".into(), code],
                internet_access: true,
                timeout_seconds: 60.0,
                ..Default::default()
            }
        })
        .collect();
    let batch = client
        .submit_batch(pb::SubmitBatchRequest { items, max_concurrency: CAP as u32, ..Default::default() })
        .await?;

    // A long-lived sandbox on the node that will stall, with a process that would outlive it.
    let victim_node = cluster.node_id(1);
    let mut parked = None;
    for _ in 0..4 {
        let s = client.create(Default::default()).await?;
        if s.node_id == victim_node {
            let line = format!("exec /usr/bin/python3 -c 'import time # {SLEEPER}\ntime.sleep(1000)'");
            client.start_process_shell(&s.id, &line).await?;
            parked = Some(s.id);
            break;
        }
    }
    let parked = parked.ok_or_else(|| anyhow::anyhow!("no sandbox was placed on {victim_node}"))?;
    let since = Instant::now();
    while count_processes(SLEEPER, "/usr/bin/python3") != 1 {
        ensure!(since.elapsed() < Duration::from_secs(10), "the parked sandbox's process is not running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut parked_lost = false;

    // Sample the process table until the batch is done; stop agent 1 once attempts run on it.
    let victim = cluster.agents[0].pid();
    let started = Instant::now();
    let (mut stopped_at, mut resumed, mut max_procs) = (None::<Instant>, false, 0);
    loop {
        max_procs = max_procs.max(count_processes(MARKER, "/usr/bin/python3"));
        if !parked_lost && state(&client.get(&parked).await?) == pb::SandboxState::Lost {
            // LOST only once its processes are certainly dead.
            ensure!(count_processes(SLEEPER, "/usr/bin/python3") == 0, "a LOST sandbox still runs its process");
            parked_lost = true;
        }
        let open = history.lock().unwrap().open;
        if stopped_at.is_none() && open >= CAP {
            signal(victim, "-STOP")?;
            stopped_at = Some(Instant::now());
            eprintln!("stopped agent 1 with {open} attempts running");
        }
        if let Some(t) = stopped_at
            && !resumed
            && t.elapsed() >= Duration::from_secs(3 * ttl)
        {
            signal(victim, "-CONT")?;
            resumed = true;
            eprintln!("resumed agent 1");
        }
        let b = client.get_batch(&batch).await?;
        if b.state != pb::BatchState::Running as i32 && resumed {
            ensure!(b.state == pb::BatchState::Completed as i32, "batch ended {b:?}");
            break;
        }
        ensure!(started.elapsed() < Duration::from_secs(180), "batch not done after 3 minutes: {b:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(stopped_at.is_some(), "never saw {CAP} attempts running at once");
    ensure!(parked_lost, "the stalled node's sandbox never became LOST");

    let h = history.lock().unwrap();
    ensure!(h.max_open <= CAP, "{} attempts alive at once (witness), cap {CAP}", h.max_open);
    ensure!(max_procs <= CAP, "{max_procs} attempt processes alive at once (process table), cap {CAP}");
    let (mut reruns, mut worst) = (0, Duration::ZERO);
    for (item, attempts) in &h.attempts {
        let mut spans: Vec<(Instant, Instant)> =
            attempts.iter().map(|(s, e)| (*s, e.unwrap_or_else(Instant::now))).collect();
        spans.sort();
        reruns += spans.len() - 1;
        for pair in spans.windows(2) {
            let overlap = pair[0].1.saturating_duration_since(pair[1].0);
            worst = worst.max(overlap);
            ensure!(overlap <= Duration::from_secs(1), "{item}: two attempts overlapped by {overlap:?}");
        }
    }
    ensure!(h.attempts.len() == ITEMS, "{} items reported to the witness", h.attempts.len());
    ensure!(reruns > 0, "no attempt was re-run elsewhere: the stall did not interrupt anything");
    eprintln!(
        "{reruns} attempts re-run after the stall; worst overlap {worst:?}; max alive {} (witness) / {max_procs} (processes)",
        h.max_open
    );
    Ok(())
}
