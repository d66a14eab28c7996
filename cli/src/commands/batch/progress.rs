//! Counting a batch's results as they arrive, and the live progress bar on stderr.

use std::time::Duration;

use corral_client::v1 as pb;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::jobs::{first_line, job_state, job_state_name};

/// An item that ended in another state than COMPLETED.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub index: u32,
    pub job_id: String,
    pub state: String,
    pub exit_code: Option<i32>,
    /// The first line of its stderr, or else why it ended (e.g. "cancelled by client").
    pub why: String,
}

/// The results seen so far.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub total: u32,
    /// Finished items by state (`pending` and `running` come from [`Tally::observe`]).
    pub counts: pb::BatchCounts,
    pub failures: Vec<Failure>,
}

impl Tally {
    pub fn new(total: u32) -> Self {
        Self { total, ..Default::default() }
    }

    /// Counts one finished item.
    pub fn record(&mut self, job: &pb::Job) {
        let c = &mut self.counts;
        let state = job_state(job);
        match state {
            pb::JobState::Completed => c.completed += 1,
            pb::JobState::Timeout => c.timeout += 1,
            pb::JobState::Cancelled => c.cancelled += 1,
            pb::JobState::Lost => c.lost += 1,
            // FAILED, and anything a newer server may add, is a failure.
            _ => c.failed += 1,
        }
        if state != pb::JobState::Completed {
            self.failures.push(Failure {
                index: job.index,
                job_id: job.id.clone(),
                state: job_state_name(job.state),
                exit_code: job.result.as_ref().map(|r| r.exit_code),
                why: why(job),
            });
        }
        // Items finish only once: what is not finished is running or pending.
        self.counts.running = self.counts.running.min(self.total.saturating_sub(self.finished()));
    }

    /// Takes the server's running/pending figures (from a Get of the batch).
    pub fn observe(&mut self, server: &pb::BatchCounts) {
        let unfinished = self.total.saturating_sub(self.finished());
        self.counts.running = server.running.min(unfinished);
        self.counts.pending = unfinished - self.counts.running;
    }

    pub fn finished(&self) -> u32 {
        crate::output::jobs::finished(&self.counts)
    }

    /// Finished items that did not complete.
    pub fn failed(&self) -> u32 {
        self.finished() - self.counts.completed
    }
}

/// Why an item failed: the first line of its stderr, else the server's reason, else what the
/// result says (a timeout, a signal).
fn why(job: &pb::Job) -> String {
    let stderr = job.result.as_ref().map(|r| first_line(&r.stderr)).unwrap_or_default();
    if !stderr.is_empty() {
        return stderr;
    }
    if !job.reason.is_empty() {
        return job.reason.clone();
    }
    match &job.result {
        Some(r) if job_state(job) == pb::JobState::Timeout => format!("timed out after {} ms", r.duration_ms),
        Some(r) if r.oom_killed => "killed: out of memory".to_owned(),
        Some(r) if r.signal > 0 => format!("killed by signal {}", r.signal),
        _ => String::new(),
    }
}

/// Items finished per second.
pub fn rate(finished: u32, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 { 0.0 } else { f64::from(finished) / secs }
}

/// Time left at the rate so far; `None` before the first result.
pub fn eta(finished: u32, total: u32, elapsed: Duration) -> Option<Duration> {
    let r = rate(finished, elapsed);
    if finished == 0 || r <= 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(f64::from(total.saturating_sub(finished)) / r))
}

/// `0.4s`, `42s`, `2m05s`, `1h02m`.
pub fn short_duration(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        return format!("{:.1}s", d.as_secs_f64());
    }
    let s = d.as_secs_f64().round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The bar's message: `18 ok · 1 failed · 5 running · 6.2/s · ETA 3s`.
pub fn status_line(t: &Tally, elapsed: Duration) -> String {
    let eta = match eta(t.finished(), t.total, elapsed) {
        Some(d) => short_duration(d),
        None => "-".to_owned(),
    };
    format!(
        "{} ok · {} failed · {} running · {:.1}/s · ETA {eta}",
        t.counts.completed,
        t.failed(),
        t.counts.running,
        rate(t.finished(), elapsed)
    )
}

/// A progress bar on stderr, or nothing when it is hidden.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(total: u32, show: bool) -> Self {
        if !show {
            return Self { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(u64::from(total)), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("[{bar:20.cyan/blue}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(250));
        Self { bar: Some(bar) }
    }

    /// A bar for an upload in parts: items stored out of `total`.
    pub fn upload(total: u32, show: bool) -> Self {
        if !show {
            return Self { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(u64::from(total)), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("uploading [{bar:20.cyan/blue}] {pos}/{len} items {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        Self { bar: Some(bar) }
    }

    pub fn uploaded(&self, received: u32) {
        if let Some(bar) = &self.bar {
            bar.set_position(u64::from(received));
        }
    }

    pub fn shown(&self) -> bool {
        self.bar.is_some()
    }

    pub fn update(&self, t: &Tally, elapsed: Duration) {
        if let Some(bar) = &self.bar {
            bar.set_position(u64::from(t.finished()));
            bar.set_message(status_line(t, elapsed));
        }
    }

    /// Prints a line above the bar (or on stderr when there is none).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bar so the summary follows on a clean line.
    pub fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(index: u32, state: pb::JobState, exit: i32, stderr: &str) -> pb::Job {
        pb::Job {
            id: format!("j{index}"),
            index,
            state: state as i32,
            result: Some(pb::JobResult { exit_code: exit, stderr: stderr.as_bytes().to_vec(), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn results_are_counted_by_state() {
        let mut t = Tally::new(5);
        t.observe(&pb::BatchCounts { running: 5, ..Default::default() });
        t.record(&job(0, pb::JobState::Completed, 0, ""));
        t.record(&job(3, pb::JobState::Failed, 2, "\nboom\nmore"));
        t.record(&job(1, pb::JobState::Timeout, -1, ""));
        assert_eq!((t.counts.completed, t.counts.failed, t.counts.timeout), (1, 1, 1));
        assert_eq!((t.finished(), t.failed()), (3, 2));
        assert_eq!(t.counts.running, 2, "running never exceeds what is unfinished");
        assert_eq!(t.failures[0].why, "boom");
        assert_eq!(t.failures[0].exit_code, Some(2));
        assert_eq!(t.failures[1].state, "TIMEOUT");
    }

    #[test]
    fn a_failure_without_stderr_gives_the_reason() {
        let mut t = Tally::new(3);
        let cancelled = pb::Job {
            state: pb::JobState::Cancelled as i32,
            reason: "cancelled by client".into(),
            ..Default::default()
        };
        t.record(&cancelled);
        assert_eq!(t.failures[0].why, "cancelled by client");
        assert_eq!(t.failures[0].exit_code, None);
        let mut timeout = job(1, pb::JobState::Timeout, -1, "");
        timeout.result = Some(pb::JobResult { exit_code: -1, signal: 9, duration_ms: 500, ..Default::default() });
        t.record(&timeout);
        assert_eq!(t.failures[1].why, "timed out after 500 ms");
        let mut killed = job(2, pb::JobState::Failed, -1, "");
        killed.result = Some(pb::JobResult { exit_code: -1, signal: 15, ..Default::default() });
        t.record(&killed);
        assert_eq!(t.failures[2].why, "killed by signal 15");
    }

    #[test]
    fn observed_counts_split_the_unfinished_items() {
        let mut t = Tally::new(10);
        t.record(&job(0, pb::JobState::Completed, 0, ""));
        t.observe(&pb::BatchCounts { running: 4, pending: 9, completed: 3, ..Default::default() });
        assert_eq!((t.counts.running, t.counts.pending), (4, 5));
        t.observe(&pb::BatchCounts { running: 50, ..Default::default() });
        assert_eq!((t.counts.running, t.counts.pending), (9, 0));
    }

    #[test]
    fn rate_and_eta_follow_the_results_so_far() {
        assert_eq!(rate(10, Duration::from_secs(4)), 2.5);
        assert_eq!(rate(10, Duration::ZERO), 0.0);
        assert_eq!(eta(10, 30, Duration::from_secs(5)), Some(Duration::from_secs(10)));
        assert_eq!(eta(0, 30, Duration::from_secs(5)), None);
        assert_eq!(eta(30, 30, Duration::from_secs(5)), Some(Duration::ZERO));
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(Duration::from_millis(420)), "0.4s");
        assert_eq!(short_duration(Duration::from_millis(42_400)), "42s");
        assert_eq!(short_duration(Duration::from_secs(125)), "2m05s");
        assert_eq!(short_duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn the_status_line_shows_counts_rate_and_eta() {
        let mut t = Tally::new(4);
        t.record(&job(0, pb::JobState::Completed, 0, ""));
        t.record(&job(1, pb::JobState::Failed, 1, "x"));
        t.observe(&pb::BatchCounts { running: 1, ..Default::default() });
        assert_eq!(status_line(&t, Duration::from_secs(1)), "1 ok · 1 failed · 1 running · 2.0/s · ETA 1.0s");
        assert_eq!(status_line(&Tally::new(3), Duration::ZERO), "0 ok · 0 failed · 0 running · 0.0/s · ETA -");
    }
}
