//! [`EtcdStore`]: the [`StateStore`] backed by a real etcd cluster (etcd-client, gRPC).
//!
//! The client is cheap to clone (it shares one balanced gRPC channel), so each call clones it
//! instead of locking. Errors map as: transport and gRPC failures → `Unavailable`, a missing
//! lease → `LeaseNotFound`, a watch on a compacted revision → `Compacted`.
//!
//! etcd confirms a new watch before it checks its start revision, so a watch from a compacted
//! revision returns a stream whose first item is `Err(Compacted)`; after any `Err` a watch stream
//! ends.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, Error as EtcdError, EventType, GetOptions, PutOptions,
    SortOrder, SortTarget, Txn as EtcdTxn, TxnOp, WatchOptions, WatchResponse, WatchStream,
};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::{
    Compare, EventKind, KeyValue, LeaseId, Op, RangePage, StateStore, StoreError, StoreResult, Txn, TxnOutcome,
    WatchEvent,
};

/// How long `connect` waits for the cluster to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of one unary request (watch and keep-alive streams are not cut by it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings so a watch on a dead connection fails instead of hanging.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// A [`StateStore`] on etcd v3.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to `endpoints` (`http://host:port`) and checks that the cluster answers.
    pub async fn connect(endpoints: &[String]) -> StoreResult<Self> {
        let unreachable = |why: String| StoreError::Unavailable(format!("cannot reach etcd at {endpoints:?}: {why}"));
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_INTERVAL)
            .with_keep_alive_while_idle(true);
        let probe = async {
            let mut client = Client::connect(endpoints, Some(options)).await?;
            // The channel connects lazily: one real request proves the cluster answers.
            client.status().await?;
            Ok::<_, EtcdError>(client)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, probe).await {
            Ok(Ok(client)) => Ok(Self { client }),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(_) => Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        }
    }
}

#[async_trait]
impl StateStore for EtcdStore {
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let mut resp = self.client.clone().get(key, None).await.map_err(unavailable)?;
        resp.take_kvs().into_iter().next().map(to_kv).transpose()
    }

    async fn range(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> StoreResult<RangePage> {
        let start: Vec<u8> = match start_after {
            Some(after) if after >= prefix => [after.as_bytes(), b"\0"].concat(),
            // etcd rejects an empty key; "\0" is the first key there is.
            _ if prefix.is_empty() => vec![0],
            _ => prefix.as_bytes().to_vec(),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let options = GetOptions::new()
            .with_range(prefix_end(prefix.as_bytes()))
            .with_limit(limit)
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        let mut resp = self.client.clone().get(start, Some(options)).await.map_err(unavailable)?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let more = resp.more();
        let kvs = resp.take_kvs().into_iter().map(to_kv).collect::<StoreResult<_>>()?;
        Ok(RangePage { kvs, more, revision })
    }

    async fn txn(&self, txn: Txn) -> StoreResult<TxnOutcome> {
        txn.check()?;
        let lease_in_txn = txn.ops.iter().find_map(|op| match op {
            Op::Put { lease: Some(l), .. } if *l != 0 => Some(*l),
            _ => None,
        });
        let compares: Vec<EtcdCompare> = txn
            .compares
            .into_iter()
            .map(|Compare::ModRevision { key, revision }| EtcdCompare::mod_revision(key, CompareOp::Equal, revision))
            .collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    TxnOp::put(key, value, lease.filter(|l| *l != 0).map(|l| PutOptions::new().with_lease(l)))
                }
                Op::Delete { key } => TxnOp::delete(key, None),
            })
            .collect();
        let request = EtcdTxn::new().when(compares).and_then(ops);
        let resp = self.client.clone().txn(request).await.map_err(|e| match lease_in_txn {
            Some(lease) if is_lease_not_found(&e) => StoreError::LeaseNotFound(lease),
            _ => unavailable(e),
        })?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(TxnOutcome { succeeded: resp.succeeded(), revision })
    }

    async fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId> {
        // etcd counts whole seconds; round up so a lease never lives shorter than asked.
        let secs = i64::try_from(ttl.as_millis().div_ceil(1000)).unwrap_or(i64::MAX).max(1);
        let resp = self.client.clone().lease_grant(secs, None).await.map_err(unavailable)?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        // etcd-client sends one keep-alive and waits for its answer; a TTL of 0 means the lease
        // is gone, which it reports as a keep-alive error.
        let result = self.client.clone().lease_keep_alive(lease).await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_lease_not_found(&e) => Err(StoreError::LeaseNotFound(lease)),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> StoreResult<()> {
        match self.client.clone().lease_revoke(lease).await {
            Ok(_) => Ok(()),
            Err(e) if is_lease_not_found(&e) => Err(StoreError::LeaseNotFound(lease)),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> StoreResult<BoxStream<'static, StoreResult<WatchEvent>>> {
        let mut options = WatchOptions::new().with_prefix();
        if from_revision > 0 {
            options = options.with_start_revision(from_revision);
        }
        let mut stream = self.client.clone().watch(prefix, Some(options)).await.map_err(unavailable)?;
        // Wait for etcd to confirm the watch, so every change after this call returns is seen.
        let mut pending = VecDeque::new();
        loop {
            let resp = stream.message().await.map_err(unavailable)?;
            let resp = resp.ok_or_else(|| StoreError::Unavailable("etcd closed the watch stream".into()))?;
            if resp.canceled() {
                return Err(cancelled(&resp, from_revision));
            }
            push_events(&resp, &mut pending)?;
            if resp.created() {
                break;
            }
        }
        let needed = pending.back().map_or(from_revision.max(0), |e| e.mod_revision + 1);
        let state = WatchState { stream, pending, done: false, needed };
        Ok(futures::stream::unfold(state, next_event).boxed())
    }
}

/// An open etcd watch and the events of its last response not yet handed out.
struct WatchState {
    /// Owns the gRPC stream; dropping it (with the returned stream) cancels the watch.
    stream: WatchStream,
    pending: VecDeque<WatchEvent>,
    /// Set after an error has been yielded: the stream then ends.
    done: bool,
    /// The first revision not yet seen (0 = none seen and the watch started "from now").
    needed: i64,
}

async fn next_event(mut s: WatchState) -> Option<(StoreResult<WatchEvent>, WatchState)> {
    loop {
        if let Some(event) = s.pending.pop_front() {
            return Some((Ok(event), s));
        }
        if s.done {
            return None;
        }
        let failure = match s.stream.message().await {
            Ok(Some(resp)) if resp.canceled() => cancelled(&resp, s.needed),
            Ok(Some(resp)) => match push_events(&resp, &mut s.pending) {
                Ok(()) => {
                    if let Some(last) = s.pending.back() {
                        s.needed = last.mod_revision + 1;
                    }
                    continue;
                }
                Err(e) => e,
            },
            Ok(None) => StoreError::Unavailable("etcd closed the watch stream".into()),
            Err(e) => unavailable(e),
        };
        s.done = true;
        return Some((Err(failure), s));
    }
}

fn push_events(resp: &WatchResponse, out: &mut VecDeque<WatchEvent>) -> StoreResult<()> {
    for event in resp.events() {
        let Some(kv) = event.kv() else { continue };
        let key = key_string(kv.key())?;
        let (kind, value) = match event.event_type() {
            EventType::Put => (EventKind::Put, kv.value().to_vec()),
            EventType::Delete => (EventKind::Delete, Vec::new()),
        };
        out.push_back(WatchEvent { kind, key, value, mod_revision: kv.mod_revision() });
    }
    Ok(())
}

/// The error for a watch etcd cancelled: compaction (naming the first revision the watch still
/// needed), or anything else (reported as unavailable).
fn cancelled(resp: &WatchResponse, needed: i64) -> StoreError {
    match resp.compact_revision() {
        0 => StoreError::Unavailable(format!("etcd cancelled the watch: {}", resp.cancel_reason())),
        _ if needed > 0 => StoreError::Compacted(needed),
        compacted => StoreError::Compacted(compacted),
    }
}

fn to_kv(kv: etcd_client::KeyValue) -> StoreResult<KeyValue> {
    let (mod_revision, create_revision, lease) = (kv.mod_revision(), kv.create_revision(), kv.lease());
    let (key, value) = kv.into_key_value();
    Ok(KeyValue { key: key_string(&key)?, value, mod_revision, create_revision, lease })
}

fn key_string(key: &[u8]) -> StoreResult<String> {
    String::from_utf8(key.to_vec()).map_err(|_| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        why: "key is not utf-8".into(),
    })
}

/// The first key after every key starting with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Empty prefix (or all 0xff): "\0" means "to the end of the keyspace".
    vec![0]
}

fn is_lease_not_found(e: &EtcdError) -> bool {
    match e {
        EtcdError::GRpcStatus(status) => status.message().contains("lease not found"),
        EtcdError::LeaseKeepAliveError(msg) => msg.contains("lease not found"),
        _ => false,
    }
}

fn unavailable(e: EtcdError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
