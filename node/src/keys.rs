//! Credentials at rest: hashes, never plaintext (`docs/security.md`).
//!
//! Ingest keys and the admin token are stored only as SHA-256 hashes, in the
//! journal, checkpoints, the placement state and the admin token file. A
//! fast hash is enough because every key is random with at least 128 bits:
//! nobody can guess one, so there is nothing for a slow password hash
//! (bcrypt, argon2) to slow down; it would only slow every request.
//!
//! A credential can be rotated: the new key becomes current and the old one
//! stays valid until the end of a grace period (`RotatingKey`), so senders
//! can switch without downtime.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Default grace period of a rotation: how long the previous key stays
/// valid after a new one is issued (`--key-rotation-grace-ms`).
pub const KEY_ROTATION_GRACE_MS_DEFAULT: i64 = 24 * 60 * 60 * 1000;
/// Longest grace period a rotation may ask for: an old key must not stay
/// valid indefinitely by mistake.
pub const KEY_ROTATION_GRACE_MS_MAX: i64 = 30 * 24 * 60 * 60 * 1000;
/// Random bytes in a generated ingest key (hex encoded: twice as many
/// characters). 128 bits: see the module comment.
pub const INGEST_KEY_RANDOM_BYTES: usize = 16;
/// Random bytes in a generated admin token.
pub const ADMIN_TOKEN_RANDOM_BYTES: usize = 32;

/// The SHA-256 hash of a credential.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHash([u8; 32]);

impl fmt::Debug for KeyHash {
    // A hash prefix identifies a key in debugging output without being
    // usable as the key.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "KeyHash({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// Why a stored hash could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyHashError {
    #[error("a key hash is 64 hexadecimal characters, not {characters} characters")]
    Length { characters: usize },
    #[error("a key hash may contain only hexadecimal characters")]
    NotHex,
}

impl KeyHash {
    /// The hash of `secret`.
    pub fn of(secret: &[u8]) -> KeyHash {
        use sha2::Digest;
        KeyHash(sha2::Sha256::digest(secret).into())
    }

    /// Whether `other` is the same hash, looking at every byte whatever the
    /// first difference.
    pub fn matches(&self, other: &KeyHash) -> bool {
        constant_time_eq(&self.0, &other.0)
    }

    /// Lower-case hexadecimal, for the admin token file.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    pub fn from_hex(text: &str) -> Result<KeyHash, KeyHashError> {
        if text.len() != 64 {
            return Err(KeyHashError::Length {
                characters: text.len(),
            });
        }
        let mut bytes = [0u8; 32];
        for (index, byte) in bytes.iter_mut().enumerate() {
            let pair = text
                .get(2 * index..2 * index + 2)
                .ok_or(KeyHashError::NotHex)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| KeyHashError::NotHex)?;
        }
        Ok(KeyHash(bytes))
    }
}

/// Byte equality whose running time depends only on the lengths.
pub fn constant_time_eq(expected: &[u8], candidate: &[u8]) -> bool {
    if expected.len() != candidate.len() {
        return false;
    }
    let difference = expected
        .iter()
        .zip(candidate)
        .fold(0u8, |difference, (left, right)| difference | (left ^ right));
    std::hint::black_box(difference) == 0
}

/// `bytes` random bytes from the operating system, hex encoded.
pub fn generate_secret(bytes: usize) -> String {
    let mut random = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut random);
    random.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A key that was replaced and stays valid until `valid_until_ms` (the
/// node's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredKey {
    pub hash: KeyHash,
    pub valid_until_ms: i64,
}

/// A credential's current hash and, during a rotation's grace period, the
/// previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotatingKey {
    pub current: KeyHash,
    pub previous: Option<RetiredKey>,
}

impl RotatingKey {
    pub fn new(current: KeyHash) -> RotatingKey {
        RotatingKey {
            current,
            previous: None,
        }
    }

    /// Whether `candidate` (a hash of what a request presented) is the
    /// current key, or the previous one before its grace period ended. Both
    /// are always compared, so the time taken does not tell which matched.
    pub fn matches(&self, candidate: &KeyHash, now_ms: i64) -> bool {
        let current = self.current.matches(candidate);
        let previous = self.previous.is_some_and(|retired| {
            retired.hash.matches(candidate) & (now_ms < retired.valid_until_ms)
        });
        current | previous
    }

    /// Whether `hash` is one of this key's hashes, valid or not: a new key
    /// must differ from every one of them.
    pub fn holds(&self, hash: &KeyHash) -> bool {
        self.current.matches(hash) || self.previous.is_some_and(|retired| retired.hash == *hash)
    }

    /// This key after a rotation to `new` at `now_ms`: the current key stays
    /// valid for `grace_ms` more (not at all with 0). A previous key still
    /// in its grace period is dropped: only one old key is ever valid.
    pub fn rotated(&self, new: KeyHash, now_ms: i64, grace_ms: i64) -> RotatingKey {
        RotatingKey {
            current: new,
            previous: (grace_ms > 0).then_some(RetiredKey {
                hash: self.current,
                valid_until_ms: now_ms.saturating_add(grace_ms),
            }),
        }
    }
}

/// The stored form of a project's ingest key: a string in the place where
/// the key itself was stored before keys were hashed, so log records,
/// checkpoints and placement state of either kind decode with the same
/// layout (postcard is not self-describing; a new field would make every
/// old record unreadable).
///
/// Written as `sha256:<current hex>` or, during a grace period,
/// `sha256:<current hex>,<previous hex>@<valid until ms>`. Anything else
/// that is 32 hexadecimal characters is a plaintext key written before
/// hashing: it is hashed as it is read (and stored hashed from the next
/// write on: a checkpoint rewrites every project).
pub mod stored_ingest_key {
    use super::{KeyHash, RetiredKey, RotatingKey};
    use serde::{Deserialize, Deserializer, Serializer};

    const HASHED_PREFIX: &str = "sha256:";
    /// Length of a plaintext key written before hashing.
    const LEGACY_KEY_CHARACTERS: usize = 32;

    pub fn serialize<S: Serializer>(key: &RotatingKey, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&encode(key))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<RotatingKey, D::Error> {
        let text = String::deserialize(deserializer)?;
        decode(&text).map_err(serde::de::Error::custom)
    }

    pub fn encode(key: &RotatingKey) -> String {
        let mut text = format!("{HASHED_PREFIX}{}", key.current.to_hex());
        if let Some(previous) = key.previous {
            text.push_str(&format!(
                ",{}@{}",
                previous.hash.to_hex(),
                previous.valid_until_ms
            ));
        }
        text
    }

    pub fn decode(text: &str) -> Result<RotatingKey, String> {
        let Some(hashed) = text.strip_prefix(HASHED_PREFIX) else {
            if text.len() == LEGACY_KEY_CHARACTERS && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(RotatingKey::new(KeyHash::of(text.as_bytes())));
            }
            return Err("a stored ingest key is neither `sha256:<hash>` nor a 32-character key written before hashing".into());
        };
        let (current, previous) = match hashed.split_once(',') {
            None => (hashed, None),
            Some((current, previous)) => (current, Some(previous)),
        };
        let current = KeyHash::from_hex(current).map_err(|error| error.to_string())?;
        let previous = match previous {
            None => None,
            Some(previous) => {
                let (hash, valid_until_ms) = previous
                    .split_once('@')
                    .ok_or("a retired ingest key needs `@<valid until ms>`")?;
                Some(RetiredKey {
                    hash: KeyHash::from_hex(hash).map_err(|error| error.to_string())?,
                    valid_until_ms: valid_until_ms
                        .parse()
                        .map_err(|_| "a retired ingest key's end is not a number")?,
                })
            }
        };
        Ok(RotatingKey { current, previous })
    }
}

/// Why a requested grace period was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "grace_ms must be 0 to {KEY_ROTATION_GRACE_MS_MAX} (KEY_ROTATION_GRACE_MS_MAX), not {grace_ms}"
)]
pub struct GraceError {
    pub grace_ms: i64,
}

/// Checks a grace period given by an operator.
pub fn check_grace_ms(grace_ms: i64) -> Result<i64, GraceError> {
    if (0..=KEY_ROTATION_GRACE_MS_MAX).contains(&grace_ms) {
        Ok(grace_ms)
    } else {
        Err(GraceError { grace_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip_through_hex() {
        let hash = KeyHash::of(b"some key");
        assert_eq!(KeyHash::from_hex(&hash.to_hex()), Ok(hash));
        assert_eq!(
            KeyHash::from_hex("abc"),
            Err(KeyHashError::Length { characters: 3 })
        );
        assert_eq!(
            KeyHash::from_hex(&"zz".repeat(32)),
            Err(KeyHashError::NotHex)
        );
        assert!(!format!("{hash:?}").contains(&hash.to_hex()));
    }

    #[test]
    fn a_rotated_key_keeps_the_old_one_for_the_grace_period_only() {
        let old = KeyHash::of(b"old");
        let new = KeyHash::of(b"new");
        let key = RotatingKey::new(old).rotated(new, 1_000, 500);
        assert!(key.matches(&new, 1_000));
        assert!(key.matches(&old, 1_499));
        assert!(!key.matches(&old, 1_500));
        assert!(key.matches(&new, 10_000));
        assert!(!key.matches(&KeyHash::of(b"other"), 1_000));
        assert!(key.holds(&old) && key.holds(&new));
        // Without grace the old key stops at once.
        let abrupt = RotatingKey::new(old).rotated(new, 1_000, 0);
        assert!(!abrupt.matches(&old, 1_000));
        // A second rotation drops the first old key.
        let newest = KeyHash::of(b"newest");
        let twice = key.rotated(newest, 1_100, 500);
        assert!(!twice.matches(&old, 1_100));
        assert!(twice.matches(&new, 1_100));
    }

    #[test]
    fn stored_keys_round_trip_and_legacy_plaintext_is_hashed_on_read() {
        let old = KeyHash::of(b"old");
        let key = RotatingKey::new(old).rotated(KeyHash::of(b"new"), 7, 100);
        let text = stored_ingest_key::encode(&key);
        assert!(!text.contains("new") && text.starts_with("sha256:"));
        assert_eq!(stored_ingest_key::decode(&text), Ok(key));
        let plain = RotatingKey::new(old);
        assert_eq!(
            stored_ingest_key::decode(&stored_ingest_key::encode(&plain)),
            Ok(plain)
        );
        let legacy = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            stored_ingest_key::decode(legacy),
            Ok(RotatingKey::new(KeyHash::of(legacy.as_bytes())))
        );
        assert!(stored_ingest_key::decode("short").is_err());
        assert!(stored_ingest_key::decode("sha256:00").is_err());
        assert!(stored_ingest_key::decode(&format!("{text}x")).is_err());
    }

    #[test]
    fn grace_periods_are_bounded() {
        assert_eq!(check_grace_ms(0), Ok(0));
        assert_eq!(
            check_grace_ms(KEY_ROTATION_GRACE_MS_MAX),
            Ok(KEY_ROTATION_GRACE_MS_MAX)
        );
        assert!(check_grace_ms(-1).is_err());
        assert!(check_grace_ms(KEY_ROTATION_GRACE_MS_MAX + 1).is_err());
    }

    #[test]
    fn generated_secrets_are_hex_of_the_requested_size() {
        let secret = generate_secret(INGEST_KEY_RANDOM_BYTES);
        assert_eq!(secret.len(), 2 * INGEST_KEY_RANDOM_BYTES);
        assert!(secret.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(secret, generate_secret(INGEST_KEY_RANDOM_BYTES));
    }
}
