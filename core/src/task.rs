//! Named, owned background tasks. Every long-lived task in Corral is spawned through
//! [`OwnedTask::spawn`]: it has a name, runs inside a span, logs how it ended, and is aborted when
//! its owner drops the handle. Error policy: a task that returns `Err` is logged at error level;
//! owners that must react poll `is_finished`.

use std::future::Future;

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
