//! Following a batch's results through `Batches.Watch`, resuming after a dropped connection.

use std::pin::Pin;
use std::time::Duration;

use corral_client::v1 as pb;
use corral_client::{Client, ClientError};
use futures::{Stream, StreamExt};
use tonic::Code;

/// Reconnections in a row (without an event in between) before giving up.
const MAX_RETRIES: u32 = 6;

type Events = Pin<Box<dyn Stream<Item = corral_client::Result<pb::BatchEvent>> + Send>>;

/// The results of one batch in finishing order. A stream that breaks (UNAVAILABLE, a reset
/// connection) or ends while the batch is still running is reopened from the number of results
/// seen, a few times with growing pauses.
///
/// [`Watcher::next`] is cancel-safe: dropping its future (e.g. in `select!`) loses no event.
pub struct Watcher {
    client: Client,
    batch_id: String,
    /// Results seen so far: the `from_seq` of the next Watch.
    seen: u64,
    stream: Option<Events>,
    retries: u32,
}

impl Watcher {
    /// Follows `batch_id`, skipping its first `from` results.
    pub fn new(client: Client, batch_id: &str, from: u64) -> Self {
        Self { client, batch_id: batch_id.to_owned(), seen: from, stream: None, retries: 0 }
    }

    /// The next result, or `None` once the batch has no more.
    pub async fn next(&mut self) -> anyhow::Result<Option<pb::BatchEvent>> {
        loop {
            let stream = match &mut self.stream {
                Some(s) => s,
                None => match self.client.watch_batch(&self.batch_id, self.seen).await {
                    Ok(s) => self.stream.insert(Box::pin(s)),
                    Err(e) => {
                        self.retry(e).await?;
                        continue;
                    }
                },
            };
            match stream.next().await {
                Some(Ok(ev)) if ev.seq < self.seen => {} // already seen before a reconnection
                Some(Ok(ev)) => {
                    self.seen = ev.seq + 1;
                    self.retries = 0;
                    return Ok(Some(ev));
                }
                Some(Err(e)) => {
                    self.stream = None;
                    self.retry(e).await?;
                }
                None => {
                    self.stream = None;
                    if !self.ended_early().await? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Whether a stream that ended cleanly left results behind: the batch is still running.
    async fn ended_early(&mut self) -> anyhow::Result<bool> {
        let batch = self.client.get_batch(&self.batch_id).await?;
        let running = batch.state == pb::BatchState::Running as i32 && self.seen < u64::from(batch.total);
        if running {
            anyhow::ensure!(
                self.retries < MAX_RETRIES,
                "the watch of batch {} keeps ending early ({} of {} results seen)",
                self.batch_id,
                self.seen,
                batch.total
            );
            self.retries += 1;
            tokio::time::sleep(backoff(self.retries)).await;
        }
        Ok(running)
    }

    /// Pauses before reconnecting after `e`, or returns it when it is not worth retrying.
    async fn retry(&mut self, e: ClientError) -> anyhow::Result<()> {
        if !retryable(&e) || self.retries >= MAX_RETRIES {
            return Err(
                anyhow::Error::new(e).context(format!("watching batch {} ({} results seen)", self.batch_id, self.seen))
            );
        }
        self.retries += 1;
        tokio::time::sleep(backoff(self.retries)).await;
        Ok(())
    }
}

/// Errors of the connection rather than of the request.
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Status(s) => {
            matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled)
        }
        ClientError::Connect { .. } => true,
        _ => false,
    }
}

/// 250 ms, 500 ms, 1 s, 2 s, then 4 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 << attempt.saturating_sub(1).min(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_four_seconds() {
        let waits: Vec<u64> = (1..=7).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 4000, 4000]);
    }

    #[test]
    fn only_connection_failures_are_retried() {
        let status = |c| ClientError::Status(tonic::Status::new(c, "x"));
        assert!(retryable(&status(Code::Unavailable)));
        assert!(retryable(&status(Code::Unknown)));
        assert!(!retryable(&status(Code::NotFound)));
        assert!(!retryable(&status(Code::InvalidArgument)));
        assert!(!retryable(&ClientError::Missing("batch")));
    }

    /// A Batches service whose watch breaks (UNAVAILABLE) after 3 of 6 results, then ends
    /// early once (batch still running) after resending one result, then delivers the rest.
    #[derive(Default)]
    struct Flaky {
        from_seqs: std::sync::Mutex<Vec<u64>>,
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::BatchEvent, tonic::Status>> + Send>>;

    fn event(seq: u64) -> Result<pb::BatchEvent, tonic::Status> {
        let job = pb::Job { id: format!("j{seq}"), index: seq as u32, ..Default::default() };
        Ok(pb::BatchEvent { seq, index: seq as u32, job: Some(job) })
    }

    #[tonic::async_trait]
    impl pb::batches_server::Batches for Flaky {
        type WatchStream = WatchStream;

        async fn watch(
            &self,
            req: tonic::Request<pb::WatchBatchRequest>,
        ) -> Result<tonic::Response<WatchStream>, tonic::Status> {
            let from = req.into_inner().from_seq;
            self.from_seqs.lock().unwrap().push(from);
            let items = match from {
                0 => vec![event(0), event(1), event(2), Err(tonic::Status::unavailable("going away"))],
                3 => vec![event(2), event(3), event(4)],
                _ => (from..6).map(event).collect(),
            };
            Ok(tonic::Response::new(Box::pin(futures::stream::iter(items))))
        }

        async fn get(
            &self,
            _: tonic::Request<pb::GetBatchRequest>,
        ) -> Result<tonic::Response<pb::GetBatchResponse>, tonic::Status> {
            let done = self.from_seqs.lock().unwrap().len() >= 3;
            let state = if done { pb::BatchState::Completed } else { pb::BatchState::Running };
            let batch = pb::Batch { id: "b1".into(), total: 6, state: state as i32, ..Default::default() };
            Ok(tonic::Response::new(pb::GetBatchResponse { batch: Some(batch) }))
        }

        async fn submit(
            &self,
            _: tonic::Request<pb::SubmitBatchRequest>,
        ) -> Result<tonic::Response<pb::SubmitBatchResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }

        async fn append(
            &self,
            _: tonic::Request<pb::AppendBatchRequest>,
        ) -> Result<tonic::Response<pb::AppendBatchResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }

        async fn cancel(
            &self,
            _: tonic::Request<pb::CancelBatchRequest>,
        ) -> Result<tonic::Response<pb::CancelBatchResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }

        async fn list(
            &self,
            _: tonic::Request<pb::ListBatchesRequest>,
        ) -> Result<tonic::Response<pb::ListBatchesResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }
    }

    #[tokio::test]
    async fn a_broken_or_early_ended_watch_resumes_where_it_left() {
        let flaky = std::sync::Arc::new(Flaky::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serve = tonic::transport::Server::builder()
            .add_service(pb::batches_server::BatchesServer::from_arc(flaky.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        let follow = async {
            let client = Client::connect(&format!("http://{addr}")).await.unwrap();
            let mut watcher = Watcher::new(client, "b1", 0);
            let mut seqs = Vec::new();
            while let Some(ev) = watcher.next().await.unwrap() {
                seqs.push(ev.seq);
            }
            seqs
        };
        let seqs = tokio::select! {
            seqs = follow => seqs,
            r = serve => panic!("the test server stopped: {r:?}"),
        };
        assert_eq!(seqs, [0, 1, 2, 3, 4, 5], "every result once, in order");
        assert_eq!(*flaky.from_seqs.lock().unwrap(), [0, 3, 5], "each watch resumed from the results seen");
    }
}
