//! Job and batch ids.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::InvalidId;

fn random_hex128() -> String {
    let v: u128 = rand::random();
    format!("{v:032x}")
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Digits of the index in the item ids of batches written before batches could be sent in parts
/// (at most 10,000 items); their records carry no `index_digits`.
pub const LEGACY_INDEX_DIGITS: u8 = 5;
/// Digits of the index in the item ids of new batches.
pub const INDEX_DIGITS: u8 = 7;
/// Largest number of items any batch can hold (item ids carry the index in [`INDEX_DIGITS`]
/// digits); the configured limit is at most this.
pub const MAX_BATCH_ITEMS: usize = 10_000_000;

/// A job: `job-` and 32 hex digits; a batch item: the batch's hex, `-`, and its index in a fixed
/// number of digits per batch (7, or 5 in batches written by older versions), so a batch's items
/// are adjacent keys in index order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    pub const PREFIX: &'static str = "job-";

    pub fn random() -> Self {
        Self(format!("{}{}", Self::PREFIX, random_hex128()))
    }

    /// The id of item `index` of a new batch.
    pub fn item(batch: &BatchId, index: u32) -> Self {
        Self::item_with(batch, index, INDEX_DIGITS)
    }

    /// The id of item `index` of `batch`, whose ids carry `digits` digits (its record's
    /// `index_digits`).
    pub fn item_with(batch: &BatchId, index: u32, digits: u8) -> Self {
        let width = usize::from(digits);
        Self(format!("{}{}-{index:0width$}", Self::PREFIX, batch.hex()))
    }

    /// The common start of every item id of `batch`.
    pub fn item_prefix(batch: &BatchId) -> String {
        format!("{}{}-", Self::PREFIX, batch.hex())
    }

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let err = |why| InvalidId { kind: "job id", value: s.chars().take(80).collect(), why };
        let rest = s.strip_prefix(Self::PREFIX).ok_or_else(|| err("must start with \"job-\""))?;
        let ok = match rest.split_once('-') {
            None => is_hex32(rest),
            Some((hex, index)) => {
                let width = [LEGACY_INDEX_DIGITS, INDEX_DIGITS].map(usize::from);
                is_hex32(hex) && width.contains(&index.len()) && index.bytes().all(|b| b.is_ascii_digit())
            }
        };
        if !ok {
            return Err(err(
                "must be \"job-\" and 32 lowercase hex digits (and \"-\" and 7 or 5 digits for a batch item)",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The batch and index of a batch item.
    pub fn batch_item(&self) -> Option<(BatchId, u32)> {
        let (hex, index) = self.0.strip_prefix(Self::PREFIX)?.split_once('-')?;
        Some((BatchId(format!("{}{hex}", BatchId::PREFIX)), index.parse().ok()?))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A batch: `bat-` and 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BatchId(String);

impl BatchId {
    pub const PREFIX: &'static str = "bat-";

    pub fn random() -> Self {
        Self(format!("{}{}", Self::PREFIX, random_hex128()))
    }

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let err = |why| InvalidId { kind: "batch id", value: s.chars().take(80).collect(), why };
        match s.strip_prefix(Self::PREFIX) {
            Some(hex) if is_hex32(hex) => Ok(Self(s.to_owned())),
            _ => Err(err("must be \"bat-\" followed by 32 lowercase hex digits")),
        }
    }

    fn hex(&self) -> &str {
        &self.0[Self::PREFIX.len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::BatchRecord;

    #[test]
    fn ids_round_trip_and_items_sort_by_index() {
        let batch = BatchId::random();
        let a = JobId::item(&batch, 2);
        let b = JobId::item(&batch, 10);
        assert!(a < b, "{a} sorts before {b}");
        assert_eq!(JobId::parse(a.as_str()).unwrap(), a);
        assert_eq!(a.batch_item(), Some((batch.clone(), 2)));
        assert!(a.as_str().starts_with(&JobId::item_prefix(&batch)));
        assert_eq!(JobId::random().batch_item(), None);
        assert!(JobId::parse("job-xyz").is_err());
        assert!(JobId::parse(&format!("{a}0")).is_err());
        assert!(BatchId::parse(batch.as_str()).is_ok());
        assert_eq!(JobId::item(&batch, 999_999).batch_item(), Some((batch.clone(), 999_999)));
        assert!(JobId::item(&batch, 99_999) < JobId::item(&batch, 1_000_000));
    }

    #[test]
    fn batches_of_older_versions_keep_their_five_digit_ids() {
        let batch = BatchId::random();
        let old = format!("{}{}-00042", JobId::PREFIX, &batch.as_str()[BatchId::PREFIX.len()..]);
        let id = JobId::parse(&old).expect("a five-digit item id still parses");
        assert_eq!(id.batch_item(), Some((batch.clone(), 42)));
        // An old record (no index_digits, received or updated_at_ms) reads with the old width.
        let json = format!(
            r#"{{"v":1,"id":"{batch}","tenant":"default","total":3,"max_concurrency":2,"retries_per_item":0,
            "deadline_at_ms":0,"created_at_ms":1,"accepted":true}}"#
        );
        let record: BatchRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(record.item_id(42), id);
        assert_eq!(record.received(), 3);
        assert!(JobId::parse(&format!("{old}0")).is_err(), "six digits are neither width");
    }
}
