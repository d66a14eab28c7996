//! Submitting a batch in parts: `Batches.Submit` with the declared total and the first part,
//! then `Batches.Append` for each following part, taking items from an iterator so only one part
//! is in memory. Parts stay under the sizes every server accepts ([`PART_ITEMS`] items,
//! [`PART_BYTES`] bytes), checked here before anything is sent; a part that fails with a
//! transient error is sent again (Append is idempotent by index).

use std::time::Duration;

use corral_proto::v1 as pb;
use prost::Message;

use crate::{Client, ClientError, Result};

/// Most items in one part (servers accept at least this many per request).
pub const PART_ITEMS: usize = 1000;
/// Most bytes in one part's request (servers accept at least this much).
pub const PART_BYTES: usize = 4 * 1024 * 1024;
/// Room kept in a part for the request's other fields.
const OVERHEAD: usize = 64 * 1024;
/// Attempts per part when the server is unavailable or a write raced.
const ATTEMPTS: u32 = 5;

/// A submitted batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub batch_id: String,
    /// False when an earlier Submit with the same idempotency key created it (and this one
    /// finished or repeated its upload).
    pub created: bool,
    pub total: u32,
}

/// Cuts items into parts of at most [`PART_ITEMS`] items and [`PART_BYTES`] bytes.
struct Parts<I> {
    items: I,
    next: Option<pb::JobSpec>,
    index: u64,
}

impl<I, E> Parts<I>
where
    I: Iterator<Item = std::result::Result<pb::JobSpec, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn take(&mut self) -> Result<Option<pb::JobSpec>> {
        if let Some(item) = self.next.take() {
            return Ok(Some(item));
        }
        match self.items.next() {
            None => Ok(None),
            Some(Err(e)) => Err(ClientError::Items(e.into())),
            Some(Ok(item)) => {
                let size = item.encoded_len();
                if size + OVERHEAD > PART_BYTES {
                    return Err(ClientError::ItemTooLarge {
                        index: self.index,
                        bytes: size,
                        limit: PART_BYTES - OVERHEAD,
                    });
                }
                self.index += 1;
                Ok(Some(item))
            }
        }
    }

    /// The next part (empty at the end).
    fn part(&mut self) -> Result<Vec<pb::JobSpec>> {
        let (mut part, mut bytes) = (Vec::new(), OVERHEAD);
        while part.len() < PART_ITEMS {
            let Some(item) = self.take()? else { break };
            // An item costs its bytes plus a tag and a length prefix in the repeated field.
            let cost = item.encoded_len() + 8;
            if bytes + cost > PART_BYTES {
                self.next = Some(item);
                break;
            }
            bytes += cost;
            part.push(item);
        }
        Ok(part)
    }
}

fn transient(status: &tonic::Status) -> bool {
    matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Aborted)
}

/// Runs `call` again after transient errors, with backoff (100 ms, growing fourfold).
async fn retrying<T, F, Fut>(mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
{
    let mut pause = Duration::from_millis(100);
    for attempt in 1.. {
        match call().await {
            Err(s) if transient(&s) && attempt < ATTEMPTS => {
                tokio::time::sleep(pause).await;
                pause *= 4;
            }
            other => return other.map_err(ClientError::from),
        }
    }
    unreachable!("the loop returns by its last attempt")
}

impl Client {
    /// Submits a batch of exactly `total` items taken from `items`, in parts (see the module
    /// docs); `options` carries everything but the items (its `items` are ignored).
    /// `progress(received, total)` is called after each part. The batch runs once its last part
    /// is stored. A batch of more than one part gets an idempotency key if it has none, so a
    /// retried first part cannot create a second batch; a Submit retried with the key of an
    /// interrupted upload resumes it where the server says it stopped.
    pub async fn submit_batch_parts<I, E>(
        &self,
        mut options: pb::SubmitBatchRequest,
        total: u32,
        items: I,
        mut progress: impl FnMut(u32, u32),
    ) -> Result<Uploaded>
    where
        I: IntoIterator<Item = std::result::Result<pb::JobSpec, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut parts = Parts { items: items.into_iter(), next: None, index: 0 };
        let first = parts.part()?;
        if first.is_empty() != (total == 0) {
            return Err(ClientError::Count { declared: total, given: parts.index });
        }
        let whole = first.len() as u64 == u64::from(total);
        options.items = first;
        options.total_items = if whole { 0 } else { total };
        if !whole && options.idempotency_key.is_empty() {
            options.idempotency_key = format!("upload-{:032x}", rand::random::<u128>());
        }
        let sent = options.items.len() as u64;
        let resp = retrying(|| {
            let mut batches = self.batches.clone();
            let req = options.clone();
            async move { batches.submit(req).await.map(tonic::Response::into_inner) }
        })
        .await?;
        drop(options);
        let (batch_id, mut received) = (resp.batch_id, resp.received);
        progress(received, total);
        // Items the server already has (this part, or more of an upload being resumed).
        let mut position = sent;
        while position < u64::from(received) {
            if parts.take()?.is_none() {
                break;
            }
            position += 1;
        }
        loop {
            let part = parts.part()?;
            if part.is_empty() {
                break;
            }
            if position + part.len() as u64 > u64::from(total) {
                return Err(ClientError::Count { declared: total, given: position + part.len() as u64 });
            }
            let req = pb::AppendBatchRequest { batch_id: batch_id.clone(), first_index: position as u32, items: part };
            let sent = retrying(|| {
                let mut batches = self.batches.clone();
                let req = req.clone();
                async move { batches.append(req).await.map(tonic::Response::into_inner) }
            })
            .await;
            let resp = match sent {
                Ok(resp) => resp,
                Err(e) => {
                    // The upload cannot go on: cancel the batch now (it never ran) rather than
                    // leaving it to the server's upload timeout.
                    let cancel = pb::CancelBatchRequest { batch_id: batch_id.clone() };
                    let _ = self.batches.clone().cancel(cancel).await;
                    return Err(e);
                }
            };
            position += req.items.len() as u64;
            received = resp.received;
            progress(received, total);
        }
        if position < u64::from(total) {
            return Err(ClientError::Count { declared: total, given: position });
        }
        Ok(Uploaded { batch_id, created: resp.created, total })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(bytes: usize) -> std::result::Result<pb::JobSpec, std::io::Error> {
        Ok(pb::JobSpec { shell: "x".repeat(bytes), ..Default::default() })
    }

    #[test]
    fn parts_are_bounded_by_count_and_bytes_and_keep_every_item_in_order() {
        let items = (0..2500).map(|i| spec(10 + i % 7));
        let mut parts = Parts { items, next: None, index: 0 };
        let sizes: Vec<usize> =
            std::iter::from_fn(|| Some(parts.part().unwrap()).filter(|p| !p.is_empty())).map(|p| p.len()).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        let big = (0..10).map(|_| spec(1024 * 1024));
        let mut parts = Parts { items: big, next: None, index: 0 };
        let mut seen = 0;
        loop {
            let part = parts.part().unwrap();
            if part.is_empty() {
                break;
            }
            let bytes: usize = part.iter().map(|p| p.encoded_len() + 8).sum();
            assert!(bytes + OVERHEAD <= PART_BYTES, "{bytes}");
            seen += part.len();
        }
        assert_eq!(seen, 10);
    }

    #[test]
    fn an_item_larger_than_a_part_is_refused_before_sending() {
        let items = [spec(10), spec(PART_BYTES)].into_iter();
        let mut parts = Parts { items, next: None, index: 0 };
        let msg = parts.part().unwrap_err().to_string();
        assert_eq!(
            msg,
            format!("item 1 is {} bytes; an item can be at most {} bytes", PART_BYTES + 5, PART_BYTES - OVERHEAD)
        );
    }
}
