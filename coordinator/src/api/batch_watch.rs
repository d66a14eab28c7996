//! `Batches.Watch`: each item's result as it finishes, numbered in finishing order.
//!
//! The order is that of the store's revisions at which the items' records became terminal, and
//! within one revision (a group commit, whose writes are in id order) that of the keys: a range
//! read of the batch's items for what finished before the stream started, then a watch of the
//! same keys from the next revision. It is the same on every coordinator, so a client that
//! reconnects anywhere resumes with `from_seq` without gaps or repeats.

use std::collections::HashSet;
use std::sync::Arc;

use corral_core::ids::TenantId;
use corral_core::jobs::{BatchId, JobId, JobRecord};
use corral_core::store::{EventKind, KeyValue};
use corral_proto::v1 as pb;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::Status;

use super::job_convert as jc;
use crate::error::ApiError;
use crate::jobs::{Jobs, records};

pub fn stream(
    jobs: Arc<Jobs>,
    tenant: TenantId,
    batch: BatchId,
    from_seq: u64,
) -> impl Stream<Item = Result<pb::BatchEvent, Status>> + Send + 'static {
    let (tx, rx) = mpsc::channel(256);
    corral_core::task::spawn_detached("coordinator.batch_watch", async move {
        if let Err(e) = follow(&jobs, &tenant, &batch, from_seq, &tx).await {
            let _ = tx.send(Err(e.into())).await;
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

type Tx = mpsc::Sender<Result<pb::BatchEvent, Status>>;

async fn follow(jobs: &Jobs, tenant: &TenantId, batch: &BatchId, from_seq: u64, tx: &Tx) -> Result<(), ApiError> {
    let (_, record) = jobs.get_batch(tenant, batch).await?;
    let total = record.total as usize;
    let prefix = records::jobs_prefix(tenant, Some(batch));
    // What had finished at the first page's revision; later finishes come from the watch.
    let (mut finished, mut after, mut at) = (Vec::new(), None::<String>, 0);
    loop {
        let page = jobs.store.range(&prefix, after.as_deref(), 1000).await?;
        if at == 0 {
            at = page.revision;
        }
        for kv in &page.kvs {
            if kv.mod_revision <= at
                && let Some(r) = terminal(kv)?
            {
                finished.push((kv.mod_revision, kv.key.clone(), r));
            }
        }
        after = page.kvs.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
    }
    finished.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut changes = jobs.store.watch(&prefix, at + 1).await?;
    let mut sent: HashSet<JobId> = HashSet::new();
    let mut seq = 0u64;
    for (_, _, record) in finished {
        if !emit(tx, &mut seq, from_seq, &mut sent, record).await {
            return Ok(());
        }
    }
    while sent.len() < total {
        let Some(event) = changes.next().await else {
            return Err(ApiError::Internal("the store's watch ended; resume with from_seq".into()));
        };
        let event = event?;
        if event.kind != EventKind::Put {
            continue;
        }
        let kv = KeyValue {
            key: event.key,
            value: event.value,
            mod_revision: event.mod_revision,
            create_revision: 0,
            lease: 0,
        };
        if let Some(record) = terminal(&kv)?
            && !emit(tx, &mut seq, from_seq, &mut sent, record).await
        {
            return Ok(());
        }
    }
    Ok(())
}

fn terminal(kv: &KeyValue) -> Result<Option<JobRecord>, ApiError> {
    let record = records::decode_job(kv)?;
    Ok(record.state.is_terminal().then_some(record))
}

/// Sends a finished item (once per job) if the client has not seen it; false when it left.
async fn emit(tx: &Tx, seq: &mut u64, from_seq: u64, sent: &mut HashSet<JobId>, record: JobRecord) -> bool {
    if !sent.insert(record.id.clone()) {
        return true;
    }
    let index = record.batch_item().map_or(0, |(_, i)| i);
    let this = *seq;
    *seq += 1;
    if this < from_seq {
        return true;
    }
    let event = pb::BatchEvent { seq: this, index, job: Some(jc::job_to_pb(record, 0, true)) };
    tx.send(Ok(event)).await.is_ok()
}
