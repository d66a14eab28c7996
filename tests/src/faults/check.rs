//! The one checker: from a run's [`Record`] (what Submit acknowledged, the witness's attempts,
//! the etcd history and the final records) it computes the [`Figures`] and the invariant
//! violations — lost, duplicate commit, overlap and cap exceeded. Pure, so it is unit-tested on
//! hand-made histories below.

use std::collections::{BTreeMap, HashMap};

use corral_core::jobs::JobState;
use serde::Serialize;

use super::history::{Attempt, Change, Event};

/// Two attempts of one item may overlap this long (the witness sees a close a little after the
/// process died) before it counts as a concurrent duplicate.
pub const OVERLAP_TOLERANCE: f64 = 1.0;

/// One job a Submit returned OK for.
#[derive(Debug, Clone)]
pub struct Acked {
    pub job_id: String,
    /// The witness label its attempts report.
    pub label: String,
    /// The batch (or "singles") it belongs to: the cap applies per group.
    pub group: String,
}

/// Everything recorded about one run.
#[derive(Debug, Default)]
pub struct Record {
    pub acked: Vec<Acked>,
    /// `max_concurrency` per group (absent: no cap to check).
    pub caps: HashMap<String, usize>,
    pub attempts: Vec<Attempt>,
    pub events: Vec<Event>,
    /// Final state of every job record read at the end (job id → state).
    pub finals: HashMap<String, JobState>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub jobs: usize,
    /// Acked jobs without a terminal record at the end.
    pub lost: usize,
    /// Acked jobs that ended other than COMPLETED (reported, not a violation by itself).
    pub not_completed: usize,
    /// Jobs whose record was committed (made terminal with a result) more than once.
    pub dup_commits: usize,
    /// Attempts beyond the first, per the witness.
    pub reruns: usize,
    /// The longest time two attempts of one item were both alive (s).
    pub worst_overlap_s: f64,
    /// The most attempts of one group alive at once, and that group's cap.
    pub max_alive: usize,
    pub cap: usize,
    /// Attempts still alive at the end (orphans).
    pub alive_at_end: usize,
}

/// The checker's verdict.
#[derive(Debug, Default)]
pub struct Checked {
    pub figures: Figures,
    pub violations: Vec<String>,
}

/// Runs every check.
pub fn check(r: &Record) -> Checked {
    let mut f = Figures { jobs: r.acked.len(), ..Default::default() };
    let mut violations = Vec::new();
    for a in &r.acked {
        match r.finals.get(&a.job_id) {
            Some(s) if s.is_terminal() => f.not_completed += usize::from(*s != JobState::Completed),
            other => {
                f.lost += 1;
                violations.push(format!("lost: {} acked but {:?} at the end", a.job_id, other));
            }
        }
    }
    for (job, commits) in commits_per_job(&r.events) {
        if commits > 1 {
            f.dup_commits += 1;
            violations.push(format!("duplicate commit: {job} committed {commits} times"));
        }
    }
    let mut by_label: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    let end_of_run = r.attempts.iter().flat_map(|a| [a.start, a.end.unwrap_or(0.0)]).fold(0.0, f64::max);
    for a in &r.attempts {
        f.alive_at_end += usize::from(a.end.is_none());
        by_label.entry(&a.item).or_default().push((a.start, a.end.unwrap_or(end_of_run)));
    }
    for (label, spans) in &mut by_label {
        spans.sort_by(|x, y| x.0.total_cmp(&y.0));
        f.reruns += spans.len() - 1;
        for pair in spans.windows(2) {
            let overlap = pair[0].1 - pair[1].0;
            f.worst_overlap_s = f.worst_overlap_s.max(overlap);
            if overlap > OVERLAP_TOLERANCE {
                violations.push(format!("overlap: two attempts of {label} alive together for {overlap:.2} s"));
            }
        }
    }
    let group_of: HashMap<&str, &str> = r.acked.iter().map(|a| (a.label.as_str(), a.group.as_str())).collect();
    for (group, cap) in &r.caps {
        let spans: Vec<(f64, f64)> = r
            .attempts
            .iter()
            .filter(|a| group_of.get(a.item.as_str()) == Some(&group.as_str()))
            .map(|a| (a.start, a.end.unwrap_or(f64::INFINITY)))
            .collect();
        let alive = max_alive(&spans);
        if alive > f.max_alive {
            (f.max_alive, f.cap) = (alive, *cap);
        }
        if alive > *cap {
            violations.push(format!("cap exceeded: {alive} attempts of {group} alive at once, cap {cap}"));
        }
    }
    if f.alive_at_end > 0 {
        violations.push(format!("{} attempts still alive after every job ended", f.alive_at_end));
    }
    Checked { figures: f, violations }
}

/// How often each job's record became committed: a committed write after a state that was not
/// committed, or a committed write that changes the attempt of an earlier one.
fn commits_per_job(events: &[Event]) -> HashMap<&str, usize> {
    let mut last: HashMap<&str, (bool, u32)> = HashMap::new();
    let mut commits: HashMap<&str, usize> = HashMap::new();
    for e in events {
        if let Change::Job { id, attempt, committed, .. } = &e.change {
            let before = last.insert(id, (*committed, *attempt));
            let new_commit = *committed && before.is_none_or(|(was, at)| !was || at != *attempt);
            if new_commit {
                *commits.entry(id).or_default() += 1;
            }
        }
    }
    commits
}

/// The most spans alive at one instant; a span ending when another starts does not overlap it.
pub fn max_alive(spans: &[(f64, f64)]) -> usize {
    let mut edges: Vec<(f64, i32)> = spans.iter().flat_map(|(s, e)| [(*s, 1), (*e, -1)]).collect();
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most.max(0) as usize
}

/// The first event at or after `since` that `pred` accepts, as seconds after `since`.
pub fn first_after(events: &[Event], since: f64, pred: impl Fn(&Change) -> bool) -> Option<f64> {
    events.iter().find(|e| e.at >= since && pred(&e.change)).map(|e| e.at - since)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(item: &str, start: f64, end: Option<f64>) -> Attempt {
        Attempt { item: item.into(), start, end }
    }

    fn job(id: &str, state: JobState, attempt: u32, committed: bool) -> Event {
        Event { at: 0.0, revision: 0, change: Change::Job { id: id.into(), state, attempt, node: None, committed } }
    }

    fn acked(n: usize) -> Vec<Acked> {
        (0..n).map(|i| Acked { job_id: format!("j{i}"), label: format!("i{i}"), group: "b".into() }).collect()
    }

    #[test]
    fn a_clean_run_has_no_violations() {
        let mut r = Record { acked: acked(2), caps: [("b".to_owned(), 1)].into(), ..Default::default() };
        r.attempts = vec![attempt("i0", 0.0, Some(1.0)), attempt("i1", 1.0, Some(2.0))];
        r.finals = [("j0".to_owned(), JobState::Completed), ("j1".to_owned(), JobState::Completed)].into();
        r.events = vec![job("j0", JobState::Running, 1, false), job("j0", JobState::Completed, 1, true)];
        let c = check(&r);
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        assert_eq!((c.figures.max_alive, c.figures.cap, c.figures.reruns), (1, 1, 0));
    }

    #[test]
    fn each_invariant_is_caught() {
        let mut r = Record { acked: acked(3), caps: [("b".to_owned(), 2)].into(), ..Default::default() };
        // i0 re-run while its first attempt still lives 3 s; i1 and i2 make three alive at once.
        r.attempts = vec![
            attempt("i0", 0.0, Some(5.0)),
            attempt("i0", 2.0, Some(6.0)),
            attempt("i1", 1.0, Some(4.0)),
            attempt("i2", 1.5, None),
        ];
        r.finals = [("j0".to_owned(), JobState::Completed), ("j1".to_owned(), JobState::Running)].into();
        r.events = vec![
            job("j0", JobState::Completed, 1, true),
            job("j0", JobState::Completed, 1, true), // a rewrite of the same commit: not a second one
            job("j0", JobState::Failed, 2, true),
        ];
        let c = check(&r);
        let f = &c.figures;
        assert_eq!((f.lost, f.dup_commits, f.reruns, f.max_alive, f.alive_at_end), (2, 1, 1, 4, 1));
        assert!((f.worst_overlap_s - 3.0).abs() < 1e-9);
        for what in ["lost", "duplicate commit", "overlap", "cap exceeded", "still alive"] {
            assert!(c.violations.iter().any(|v| v.contains(what)), "{what} not reported: {:?}", c.violations);
        }
    }

    #[test]
    fn a_short_overlap_and_touching_spans_are_tolerated() {
        assert_eq!(max_alive(&[(0.0, 1.0), (1.0, 2.0)]), 1);
        let mut r = Record { acked: acked(1), ..Default::default() };
        r.attempts = vec![attempt("i0", 0.0, Some(1.5)), attempt("i0", 1.0, Some(2.0))];
        r.finals = [("j0".to_owned(), JobState::Completed)].into();
        let c = check(&r);
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        assert_eq!(c.figures.reruns, 1);
    }
}
