//! The history of a fault run, recorded outside the cluster.
//!
//! - [`Witness`]: every attempt of a witnessed job connects from inside its sandbox to a TCP
//!   server here, says which item it runs, and holds the connection until its process dies
//!   (however it dies: exit, kill, fence, watchdog). The witness stamps the connect and the close
//!   on this process's monotonic clock, so skewed clocks elsewhere do not matter.
//! - [`RecordLog`]: one etcd watch on everything under `/corral/v1/`, resumed after the revision
//!   it last saw whenever etcd goes away, so it holds every change of every job record, node
//!   record and the leader key, in revision order.
//!
//! Times are seconds since the run's epoch (`t0`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_core::jobs::{JobRecord, JobState};
use corral_core::keys::{JobsPrefix, LeaderKey, NodesPrefix};
use corral_core::store::{self, EventKind, StateStore, etcd::EtcdStore};
use corral_core::task::{OwnedTask, spawn_detached};
use futures::StreamExt;
use tokio::io::AsyncBufReadExt;

/// One attempt seen by the witness: the item it ran, when it connected and when its
/// connection closed (`None` while alive).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub item: String,
    pub start: f64,
    pub end: Option<f64>,
}

/// Receives attempts' reports; see the module docs.
pub struct Witness {
    pub addr: SocketAddr,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    _accept: OwnedTask,
}

impl Witness {
    /// Listens on `ip` (127.0.0.1, or the host side of a veth pair that sandboxes in a
    /// network namespace can reach).
    pub async fn start(ip: std::net::Ipv4Addr, t0: Instant) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let attempts: Arc<Mutex<Vec<Attempt>>> = Arc::default();
        let seen = attempts.clone();
        let accept = OwnedTask::spawn("faults.witness", async move {
            while let Ok((sock, _)) = listener.accept().await {
                let seen = seen.clone();
                // Ends when the attempt's connection closes.
                spawn_detached("faults.witness-conn", async move {
                    let start = t0.elapsed().as_secs_f64();
                    let mut lines = tokio::io::BufReader::new(sock).lines();
                    let Ok(Some(item)) = lines.next_line().await else { return };
                    let slot = {
                        let mut g = seen.lock().unwrap();
                        g.push(Attempt { item: item.trim().to_owned(), start, end: None });
                        g.len() - 1
                    };
                    while let Ok(Some(_)) = lines.next_line().await {}
                    seen.lock().unwrap()[slot].end = Some(t0.elapsed().as_secs_f64());
                });
            }
            anyhow::Ok(())
        });
        Ok(Self { addr, attempts, _accept: accept })
    }

    /// A bash command line for item `item`: report to the witness, run `then`, exit with its
    /// status (97 when the witness cannot be reached, so such a run is never silently uncounted).
    pub fn line(&self, item: &str, then: &str) -> String {
        format!(
            "exec 3<>/dev/tcp/{}/{} || exit 97; echo {item} >&3; {{ {then}; }}; s=$?; exit $s",
            self.addr.ip(),
            self.addr.port()
        )
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }

    /// Attempts alive now.
    pub fn open(&self) -> usize {
        self.attempts.lock().unwrap().iter().filter(|a| a.end.is_none()).count()
    }
}

/// What a record change was about.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Job { id: String, state: JobState, attempt: u32, node: Option<String>, committed: bool },
    NodeUp(String),
    NodeGone(String),
    Leader(String),
    LeaderGone,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub at: f64,
    pub revision: i64,
    pub change: Change,
}

#[derive(Default)]
struct Log {
    events: Vec<Event>,
    /// Watches that had to resume after an error (etcd went away).
    resumes: usize,
    /// Changes the log may have missed (the resume revision was compacted).
    gaps: usize,
}

/// Follows etcd; see the module docs.
pub struct RecordLog {
    log: Arc<Mutex<Log>>,
    _task: OwnedTask,
}

fn decode_change(kind: EventKind, key: &str, value: &[u8]) -> Option<Change> {
    let kv =
        store::KeyValue { key: key.to_owned(), value: value.to_vec(), mod_revision: 0, create_revision: 0, lease: 0 };
    if key == LeaderKey.to_string() {
        if kind == EventKind::Delete {
            return Some(Change::LeaderGone);
        }
        let rec: corral_coordinator::leader::LeaderRecord = store::decode(&kv).ok()?;
        return Some(Change::Leader(rec.coordinator));
    }
    if let Some(node) = key.strip_prefix(&NodesPrefix.to_string()) {
        return Some(match kind {
            EventKind::Put => Change::NodeUp(node.to_owned()),
            EventKind::Delete => Change::NodeGone(node.to_owned()),
        });
    }
    if key.starts_with(&JobsPrefix(None).to_string()) && kind == EventKind::Put {
        let rec: JobRecord = store::decode(&kv).ok()?;
        let committed = rec.state.is_terminal() && rec.result.is_some();
        let node = rec.node.map(|n| n.to_string());
        return Some(Change::Job { id: rec.id.to_string(), state: rec.state, attempt: rec.attempt, node, committed });
    }
    None
}

impl RecordLog {
    /// Starts following etcd at `endpoint` from its current revision.
    pub async fn start(endpoint: String, t0: Instant) -> anyhow::Result<Self> {
        let store = EtcdStore::connect(std::slice::from_ref(&endpoint)).await?;
        let from = store.range(&LeaderKey.to_string(), None, 1).await?.revision + 1;
        let log: Arc<Mutex<Log>> = Arc::default();
        let task = OwnedTask::spawn("faults.record-log", follow(endpoint, store, from, log.clone(), t0));
        Ok(Self { log, _task: task })
    }

    pub fn events(&self) -> Vec<Event> {
        self.log.lock().unwrap().events.clone()
    }

    /// (resumes, gaps)
    pub fn resumes_and_gaps(&self) -> (usize, usize) {
        let g = self.log.lock().unwrap();
        (g.resumes, g.gaps)
    }

    /// Jobs whose latest record is RUNNING on `node`.
    pub fn running_on(&self, node: &str) -> usize {
        let g = self.log.lock().unwrap();
        let mut last = std::collections::HashMap::new();
        for e in &g.events {
            if let Change::Job { id, state, node: n, .. } = &e.change {
                last.insert(id.clone(), (*state, n.clone()));
            }
        }
        last.values().filter(|(s, n)| *s == JobState::Running && n.as_deref() == Some(node)).count()
    }
}

async fn follow(
    endpoint: String,
    mut store: EtcdStore,
    mut from: i64,
    log: Arc<Mutex<Log>>,
    t0: Instant,
) -> anyhow::Result<()> {
    let root = "/corral/v1/";
    loop {
        if let Ok(mut events) = store.watch(root, from).await {
            while let Some(ev) = events.next().await {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(corral_core::store::StoreError::Compacted(_)) => {
                        log.lock().unwrap().gaps += 1;
                        from = store.range(root, None, 1).await.map_or(from, |p| p.revision + 1);
                        break;
                    }
                    Err(_) => break,
                };
                from = ev.mod_revision + 1;
                if let Some(change) = decode_change(ev.kind, &ev.key, &ev.value) {
                    let at = t0.elapsed().as_secs_f64();
                    log.lock().unwrap().events.push(Event { at, revision: ev.mod_revision, change });
                }
            }
        }
        log.lock().unwrap().resumes += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(s) = EtcdStore::connect(std::slice::from_ref(&endpoint)).await {
            store = s;
        }
    }
}
