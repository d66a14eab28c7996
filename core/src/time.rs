//! Wall-clock helpers (records store Unix milliseconds).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Now, but never before `earliest`: a time written after another time of the same record (started
/// after created, finished after started) stays in order even when the two were read from the
/// clocks of different machines.
pub fn now_ms_after(earliest: i64) -> i64 {
    now_ms().max(earliest)
}
