//! Batch records: the new record of a batch being uploaded, and every change of its stage, each
//! through [`BatchState::check_transition`]: a part lands (and the last one accepts the batch),
//! or the batch is closed (cancelled by its client or its deadline, or its upload abandoned).

use corral_core::ids::TenantId;
use corral_core::jobs::{BatchId, BatchRecord, BatchState, Cancelled, INDEX_DIGITS, InvalidBatchTransition};

/// A new batch of `total` items, UPLOADING with nothing received; its settings (concurrency,
/// retries, deadline, labels) are the caller's to fill in.
pub fn new_batch(id: BatchId, tenant: TenantId, total: u32, now: i64, body_hash: String) -> BatchRecord {
    BatchRecord {
        v: BatchRecord::VERSION,
        id,
        tenant,
        total,
        max_concurrency: 0,
        retries_per_item: 0,
        deadline_at_ms: 0,
        deadline_lease: 0,
        labels: Default::default(),
        created_at_ms: now,
        accepted: false,
        received: Some(0),
        updated_at_ms: now,
        index_digits: INDEX_DIGITS,
        cancelled: None,
        body_hash,
    }
}

/// Items `..end` have records now: advances `received`, accepting the batch once all arrived.
pub fn receive_part(batch: &mut BatchRecord, end: u32, now: i64) -> Result<(), InvalidBatchTransition> {
    let to = if end == batch.total { BatchState::Accepted } else { BatchState::Uploading };
    batch.state().check_transition(to)?;
    batch.received = Some(end);
    batch.accepted = to == BatchState::Accepted;
    batch.updated_at_ms = now;
    Ok(())
}

/// Marks a batch cancelled; one still uploading shrinks to the items that arrived, so it ends
/// (and its watchers finish) once those are cancelled.
pub fn close_batch(batch: &mut BatchRecord, reason: &str, now: i64) -> Result<(), InvalidBatchTransition> {
    batch.state().check_transition(BatchState::Cancelled)?;
    batch.cancelled = Some(Cancelled { reason: reason.to_owned(), at_ms: now });
    if !batch.accepted {
        batch.total = batch.received();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uploading(total: u32) -> BatchRecord {
        new_batch(BatchId::random(), TenantId::default_tenant(), total, 1, String::new())
    }

    #[test]
    fn parts_advance_and_the_last_one_accepts() {
        let mut b = uploading(3);
        receive_part(&mut b, 2, 5).unwrap();
        assert_eq!((b.state(), b.received(), b.updated_at_ms), (BatchState::Uploading, 2, 5));
        receive_part(&mut b, 3, 6).unwrap();
        assert_eq!(b.state(), BatchState::Accepted);
        assert!(receive_part(&mut b, 3, 7).is_err(), "an accepted batch takes no more parts");
    }

    #[test]
    fn a_closed_upload_shrinks_to_what_arrived_and_stays_closed() {
        let mut b = uploading(3000);
        receive_part(&mut b, 1000, 2).unwrap();
        close_batch(&mut b, "cancelled by client", 3).unwrap();
        assert_eq!((b.state(), b.total, b.received()), (BatchState::Cancelled, 1000, 1000));
        assert!(close_batch(&mut b, "again", 4).is_err());
        assert!(receive_part(&mut b, 1000, 4).is_err());
        let mut done = uploading(10);
        receive_part(&mut done, 10, 2).unwrap();
        close_batch(&mut done, "x", 3).unwrap();
        assert_eq!(done.total, 10, "an accepted batch keeps its total");
    }
}
