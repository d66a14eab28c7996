//! Named, owned background tasks. Every long-lived task in Corral is spawned through
//! [`OwnedTask::spawn`]: it has a name, runs inside a span, logs how it ended, and is aborted when
//! its owner drops the handle. Error policy: a task that returns `Err` is logged at error level;
//! owners that must react poll `is_finished`, and loops that must keep running whatever happens
//! are spawned through [`supervise`], which restarts them.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// A background task aborted on drop.
#[derive(Debug)]
pub struct OwnedTask {
    name: &'static str,
    handle: Option<JoinHandle<()>>,
}

impl OwnedTask {
    /// Spawns `fut` as the task `name`.
    pub fn spawn<F, E>(name: &'static str, fut: F) -> Self
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let span = tracing::info_span!("task", task = name);
        #[allow(clippy::disallowed_methods)]
        let handle = tokio::spawn(
            async move {
                match fut.await {
                    Ok(()) => tracing::debug!("task finished"),
                    Err(e) => tracing::error!(error = %e, "task failed"),
                }
            }
            .instrument(span),
        );
        Self { name, handle: Some(handle) }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }
}

/// First delay before restarting a supervised task; doubles on each quick failure.
const RESTART_MIN_DELAY: Duration = Duration::from_millis(100);
/// Longest delay between restarts, so a long outage is noticed within a few seconds once it ends.
const RESTART_MAX_DELAY: Duration = Duration::from_secs(5);
/// A run at least this long counts as healthy: the next restart starts from the first delay again.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Spawns the task `name` that runs the future `make` returns and, whenever it fails or ends,
/// logs why at warn and runs a fresh one after an exponential backoff. A long-lived loop that
/// ends (e.g. a watch broken by an etcd restart) would otherwise leave its owner serving stale
/// state with nothing but one log line to show for it. Aborted on drop like any [`OwnedTask`].
pub fn supervise<M, F, E>(name: &'static str, mut make: M) -> OwnedTask
where
    M: FnMut() -> F + Send + 'static,
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let builder = ExponentialBuilder::default()
        .with_min_delay(RESTART_MIN_DELAY)
        .with_max_delay(RESTART_MAX_DELAY)
        .without_max_times();
    OwnedTask::spawn(name, async move {
        let mut backoff = builder.build();
        loop {
            let started = tokio::time::Instant::now();
            let outcome = make().await;
            if started.elapsed() >= HEALTHY_RUN {
                backoff = builder.build();
            }
            let delay = backoff.next().unwrap_or(RESTART_MAX_DELAY);
            let delay_ms = delay.as_millis() as u64;
            match outcome {
                Ok(()) => tracing::warn!(task = name, delay_ms, "task ended; restarting"),
                Err(e) => tracing::warn!(task = name, error = %e, delay_ms, "task failed; restarting"),
            }
            tokio::time::sleep(delay).await;
        }
        #[allow(unreachable_code)]
        Ok::<(), std::convert::Infallible>(())
    })
}

/// Spawns a task owned by the work it does rather than by a handle: it must end on its own
/// (e.g. bounded by a deadline) and is given a name and a span like every other task.
pub fn spawn_detached<F>(name: &'static str, fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let span = tracing::info_span!("task", task = name);
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(fut.instrument(span));
}

impl Drop for OwnedTask {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Lets the supervisor run until every timer it has set up to `span` from now has fired.
    async fn run_for(span: Duration) {
        let end = tokio::time::Instant::now() + span;
        while tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_task_is_restarted_until_it_keeps_running() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let task = supervise("test.flaky", move || {
            let run = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if run <= 2 {
                    return Err(format!("run {run} failed"));
                }
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        run_for(Duration::from_secs(60)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "two failures then one run that keeps going");
        assert!(!task.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn task_that_ends_is_restarted() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let _task = supervise("test.ends", move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<(), String>(()) }
        });
        run_for(Duration::from_secs(1)).await;
        assert!(runs.load(Ordering::SeqCst) >= 3, "ran {} times", runs.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_handle_stops_restarts() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let task = supervise("test.dropped", move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>("always fails") }
        });
        run_for(Duration::from_secs(1)).await;
        drop(task);
        let before = runs.load(Ordering::SeqCst);
        run_for(Duration::from_secs(60)).await;
        assert_eq!(runs.load(Ordering::SeqCst), before);
    }
}
