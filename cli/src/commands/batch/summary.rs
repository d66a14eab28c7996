//! The end of `corral batch run`: counts by state, wall time, rate, and the items that failed.

use std::fmt::Write;
use std::time::Duration;

use corral_client::v1 as pb;
use serde_json::{Value, json};

use super::progress::{Failure, rate, short_duration};
use crate::output::jobs::{clip, finished};

/// At most this many failed items are listed in the text summary.
const MAX_LISTED: usize = 50;

/// What the summary reports.
pub struct Summary<'a> {
    pub batch_id: &'a str,
    /// The batch's state at the end (COMPLETED, CANCELLED, …).
    pub state: String,
    pub total: u32,
    pub counts: pb::BatchCounts,
    pub wall: Duration,
    /// Sorted by index.
    pub failures: &'a [Failure],
    /// The line of the items file each item came from.
    pub lines: &'a [usize],
}

impl Summary<'_> {
    fn line_of(&self, index: u32) -> usize {
        self.lines.get(index as usize).copied().unwrap_or(0)
    }

    fn rows(&self) -> Vec<(&'static str, u32)> {
        let c = &self.counts;
        let all = [
            ("COMPLETED", c.completed),
            ("FAILED", c.failed),
            ("TIMEOUT", c.timeout),
            ("CANCELLED", c.cancelled),
            ("LOST", c.lost),
            ("RUNNING", c.running),
            ("PENDING", c.pending),
        ];
        all.into_iter().filter(|(_, n)| *n > 0).collect()
    }

    pub fn text(&self) -> String {
        let done = finished(&self.counts);
        let mut s = format!(
            "batch {}  {}  {done}/{} items in {} ({:.1}/s)\n",
            self.batch_id,
            self.state,
            self.total,
            short_duration(self.wall),
            rate(done, self.wall)
        );
        let _ = writeln!(s, "  {:<10} {:>6}", "STATE", "COUNT");
        for (state, n) in self.rows() {
            let _ = writeln!(s, "  {state:<10} {n:>6}");
        }
        if self.failures.is_empty() {
            return s;
        }
        let _ = writeln!(s, "failed items ({}):", self.failures.len());
        let _ = writeln!(s, "  {:>5}  {:>5}  {:<9}  {:>4}  STDERR / REASON", "INDEX", "LINE", "STATE", "EXIT");
        for f in self.failures.iter().take(MAX_LISTED) {
            let exit = f.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
            let line = self.line_of(f.index);
            let _ = writeln!(s, "  {:>5}  {line:>5}  {:<9}  {exit:>4}  {}", f.index, f.state, clip(&f.why, 100));
        }
        if self.failures.len() > MAX_LISTED {
            let more = self.failures.len() - MAX_LISTED;
            let _ = writeln!(s, "  … and {more} more (corral job list --batch {} --limit 0)", self.batch_id);
        }
        s
    }

    pub fn json(&self) -> Value {
        let c = &self.counts;
        let failed: Vec<Value> = self
            .failures
            .iter()
            .map(|f| {
                json!({ "index": f.index, "line": self.line_of(f.index), "job_id": f.job_id, "state": f.state,
                        "exit_code": f.exit_code, "why": f.why })
            })
            .collect();
        json!({
            "batch_id": self.batch_id,
            "state": self.state,
            "total": self.total,
            "counts": {
                "pending": c.pending, "running": c.running, "completed": c.completed, "failed": c.failed,
                "timeout": c.timeout, "cancelled": c.cancelled, "lost": c.lost,
            },
            "wall_seconds": self.wall.as_secs_f64(),
            "per_second": rate(finished(c), self.wall),
            "failed": failed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(index: u32, state: &str, exit_code: Option<i32>, why: &str) -> Failure {
        Failure { index, job_id: format!("j{index}"), state: state.into(), exit_code, why: why.into() }
    }

    #[test]
    fn the_text_summary_has_counts_rate_and_failed_items() {
        let failures = [failure(7, "FAILED", Some(3), "bad input"), failure(9, "CANCELLED", None, "deadline passed")];
        let lines: Vec<usize> = (1..=20).collect();
        let s = Summary {
            batch_id: "b1",
            state: "COMPLETED".into(),
            total: 20,
            counts: pb::BatchCounts { completed: 18, failed: 1, cancelled: 1, ..Default::default() },
            wall: Duration::from_secs(4),
            failures: &failures,
            lines: &lines,
        };
        let text = s.text();
        assert!(text.starts_with("batch b1  COMPLETED  20/20 items in 4.0s (5.0/s)\n"), "{text}");
        assert!(text.contains("  COMPLETED      18\n") && text.contains("  CANCELLED       1\n"), "{text}");
        assert!(!text.contains("TIMEOUT"), "zero counts are left out: {text}");
        assert!(text.contains("failed items (2):"), "{text}");
        assert!(text.contains("      7      8  FAILED        3  bad input\n"), "{text}");
        assert!(text.contains("      9     10  CANCELLED     -  deadline passed\n"), "{text}");
        let v = s.json();
        assert_eq!(v["counts"]["completed"], 18);
        assert_eq!(v["per_second"], 5.0);
        assert_eq!(v["failed"][0]["line"], 8);
        assert_eq!(v["failed"][1]["exit_code"], Value::Null);
    }

    #[test]
    fn long_failure_lists_are_cut() {
        let failures: Vec<Failure> = (0..60).map(|i| failure(i, "FAILED", Some(1), "x")).collect();
        let s = Summary {
            batch_id: "b2",
            state: "COMPLETED".into(),
            total: 60,
            counts: pb::BatchCounts { failed: 60, ..Default::default() },
            wall: Duration::from_secs(1),
            failures: &failures,
            lines: &[],
        };
        let text = s.text();
        assert_eq!(text.matches("  FAILED        1  x\n").count(), MAX_LISTED, "{text}");
        assert!(text.contains("… and 10 more (corral job list --batch b2 --limit 0)"), "{text}");
    }
}
