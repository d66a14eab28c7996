//! [`Digest`]: the BLAKE3 hash that names a content-addressed chunk.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::BlobError;

/// A content digest: BLAKE3 of the bytes. `Display`/`FromStr` use 64 lowercase hex characters;
/// serde writes and reads that same string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// The 64 lowercase hex characters (what `Display` writes).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<blake3::Hash> for Digest {
    fn from(hash: blake3::Hash) -> Self {
        Digest(*hash.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for Digest {
    type Err = BlobError;

    /// Parses exactly 64 lowercase hex characters (uppercase is refused, so one digest has one
    /// spelling and one key).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| BlobError::Invalid(format!("digest {s:?}: {why}"));
        if s.len() != 64 {
            return Err(bad("not 64 hex characters"));
        }
        if !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad("not lowercase hex"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| bad(&e.to_string()))?;
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_and_round_trips() {
        // BLAKE3 of the empty input, from the reference test vectors.
        let empty = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
        assert_eq!(Digest::of(b"").to_string(), empty);
        let d: Digest = empty.parse().expect("parses");
        assert_eq!(d, Digest::of(b""));
        let json = serde_json::to_string(&d).expect("serializes");
        assert_eq!(json, format!("\"{empty}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).expect("deserializes"), d);
    }

    #[test]
    fn bad_spellings_are_refused() {
        let upper = Digest::of(b"x").to_string().to_uppercase();
        for bad in ["", "abc", &upper, &"g".repeat(64), &"a".repeat(65)] {
            assert!(matches!(bad.parse::<Digest>(), Err(BlobError::Invalid(_))), "{bad:?}");
        }
        assert!(serde_json::from_str::<Digest>("\"nope\"").is_err());
    }
}
