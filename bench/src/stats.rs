//! Latency samples and their percentiles.

use std::time::Duration;

use serde_json::{Value, json};

/// Durations of one kind of operation, in the order they were taken.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    ms: Vec<f64>,
}

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.ms.push(d.as_secs_f64() * 1000.0);
    }

    /// Adds the samples of another series of the same operation.
    pub fn extend(&mut self, other: Samples) {
        self.ms.extend(other.ms);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// Nearest-rank percentile (`p` in 0..=100) in milliseconds; NaN without samples.
    pub fn percentile(&self, p: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub fn p50(&self) -> f64 {
        self.percentile(50.0)
    }

    pub fn p99(&self) -> f64 {
        self.percentile(99.0)
    }

    pub fn mean(&self) -> f64 {
        if self.ms.is_empty() { f64::NAN } else { self.ms.iter().sum::<f64>() / self.ms.len() as f64 }
    }

    pub fn to_json(&self) -> Value {
        let v = self.sorted();
        json!({
            "n": v.len(),
            "p50_ms": round3(self.p50()),
            "p90_ms": round3(self.percentile(90.0)),
            "p99_ms": round3(self.p99()),
            "mean_ms": round3(self.mean()),
            "min_ms": round3(v.first().copied().unwrap_or(f64::NAN)),
            "max_ms": round3(v.last().copied().unwrap_or(f64::NAN)),
        })
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for ms in 1..=100 {
            s.push(Duration::from_millis(ms));
        }
        assert!((s.p50() - 50.0).abs() < 1e-9);
        assert!((s.p99() - 99.0).abs() < 1e-9);
        assert!((s.percentile(100.0) - 100.0).abs() < 1e-9);
        assert!((s.mean() - 50.5).abs() < 1e-9);
    }

    #[test]
    fn empty_and_single() {
        assert!(Samples::default().p50().is_nan());
        let mut s = Samples::default();
        s.push(Duration::from_millis(7));
        assert!((s.p99() - 7.0).abs() < 1e-9 && (s.p50() - 7.0).abs() < 1e-9);
    }
}
