//! Proptest-based fuzz target for the binary batch codec
//! (`sessiondb_protocol::binary`); see `docs/reliability.md`, "Fuzzing".
//!
//! cargo-fuzz needs a nightly toolchain, so the targets are proptest
//! properties: a modest number of cases in the default suite, many more
//! with `SESSIONDB_FUZZ_CASES=<n>` (the long run).
//!
//! Properties: `decode_batch` never panics; every error names an offset
//! inside the input; whatever decodes re-encodes to bytes that decode to
//! the same batch; a valid encoding round-trips exactly.

use proptest::prelude::*;
use proptest::test_runner::Config;
use sessiondb_protocol::binary::{decode_batch, encode_batch, MAGIC, VERSION};
use sessiondb_protocol::{Decision, Event, EventType, Timestamp};

/// Cases per target: `SESSIONDB_FUZZ_CASES`, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("SESSIONDB_FUZZ_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn config() -> Config {
    Config {
        cases: cases(1000),
        ..Config::default()
    }
}

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![".{0,10}", "[a-z0-9_-]{0,24}", Just(String::new())]
}

fn arb_event() -> impl Strategy<Value = Event> {
    let ts = prop_oneof![
        any::<i64>().prop_map(Timestamp::Milliseconds),
        arb_string().prop_map(Timestamp::Rfc3339),
    ];
    let event_type = prop_oneof![
        Just(EventType::Pageview),
        Just(EventType::Click),
        Just(EventType::Custom),
        Just(EventType::Decision),
    ];
    // Every bit pattern, NaN included: the checks below compare encodings,
    // which NaN payloads do not disturb.
    let value = any::<u64>().prop_map(f64::from_bits);
    let decision = (arb_string(), arb_string()).prop_map(|(experiment, variation)| Decision {
        experiment,
        variation,
    });
    (
        (arb_string(), arb_string(), arb_string(), ts, event_type),
        (
            proptest::option::of(arb_string()),
            proptest::option::of(value),
            proptest::collection::btree_map(arb_string(), arb_string(), 0..4),
            proptest::collection::vec(decision, 0..3),
        ),
    )
        .prop_map(
            |((id, project, visitor, ts, event_type), (key, value, attributes, decisions))| Event {
                id,
                project,
                visitor,
                ts,
                event_type,
                key,
                value,
                attributes,
                decisions,
            },
        )
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR the byte at the index with a non-zero mask.
    Flip(prop::sample::Index, u8),
    /// Replace the byte at the index.
    Set(prop::sample::Index, u8),
    /// Keep only the first `index` bytes.
    Truncate(prop::sample::Index),
    /// Insert bytes before the index.
    Insert(prop::sample::Index, Vec<u8>),
    /// Remove up to `n` bytes from the index.
    Delete(prop::sample::Index, usize),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set(at, byte)),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (
            any::<prop::sample::Index>(),
            proptest::collection::vec(any::<u8>(), 1..8)
        )
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<prop::sample::Index>(), 1..8usize).prop_map(|(at, n)| Mutation::Delete(at, n)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    if bytes.is_empty() {
        if let Mutation::Insert(_, inserted) = mutation {
            bytes.extend_from_slice(inserted);
        }
        return;
    }
    match mutation {
        Mutation::Flip(at, mask) => {
            let index = at.index(bytes.len());
            bytes[index] ^= mask;
        }
        Mutation::Set(at, byte) => {
            let index = at.index(bytes.len());
            bytes[index] = *byte;
        }
        Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len())),
        Mutation::Insert(at, inserted) => {
            let index = at.index(bytes.len() + 1);
            bytes.splice(index..index, inserted.iter().copied());
        }
        Mutation::Delete(at, n) => {
            let index = at.index(bytes.len());
            let end = (index + n).min(bytes.len());
            bytes.drain(index..end);
        }
    }
}

/// The property every input must satisfy: no panic (the test would fail),
/// an error offset inside the input, and a decoded batch that survives
/// encode → decode unchanged (compared by encoding, so NaN values count as
/// equal to themselves). Returns whether the input decoded.
fn check_decode(bytes: &[u8]) -> Result<bool, TestCaseError> {
    match decode_batch(bytes) {
        Err(error) => {
            prop_assert!(
                error.offset() <= bytes.len(),
                "{error:?} points past the {} input bytes",
                bytes.len()
            );
            prop_assert!(!error.to_string().is_empty());
            Ok(false)
        }
        Ok(events) => {
            // A decoded batch cannot hold more events than it has bytes.
            prop_assert!(events.len() <= bytes.len());
            let encoded = encode_batch(&events);
            let again = decode_batch(&encoded);
            prop_assert!(again.is_ok(), "re-encoding fails to decode: {again:?}");
            prop_assert_eq!(&encode_batch(&again.unwrap()), &encoded);
            // Non-minimal varints are the only way to spell a batch longer.
            prop_assert!(encoded.len() <= bytes.len());
            Ok(true)
        }
    }
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.push(VERSION);
    bytes.extend_from_slice(body);
    bytes
}

proptest! {
    #![proptest_config(config())]

    /// (a) Arbitrary bytes, bare and behind a valid header (so the event
    /// decoder is reached rather than stopping at the magic).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_decode(&bytes)?;
        check_decode(&framed(&bytes))?;
        // A small event count in front makes the event decoder run on the rest.
        let mut counted = framed(&[1]);
        counted.extend_from_slice(&bytes);
        check_decode(&counted)?;
    }

    /// (b) Valid batches round-trip exactly; then one to four random edits
    /// (flips, overwrites, truncations, insertions, deletions) must decode
    /// cleanly or fail with a typed error.
    #[test]
    fn mutated_valid_batches_never_panic(
        events in proptest::collection::vec(arb_event(), 0..6),
        mutations in proptest::collection::vec(arb_mutation(), 1..5),
    ) {
        let bytes = encode_batch(&events);
        let decoded = decode_batch(&bytes);
        prop_assert!(decoded.is_ok(), "a valid batch fails: {decoded:?}");
        prop_assert_eq!(encode_batch(&decoded.unwrap()), bytes.clone());
        let mut mutated = bytes;
        for mutation in &mutations {
            mutate(&mut mutated, mutation);
        }
        check_decode(&mutated)?;
    }

    /// (b) Every proper prefix of a valid non-empty batch is an error (never
    /// a shorter batch), at an offset inside the prefix.
    #[test]
    fn truncations_of_valid_batches_are_errors(
        events in proptest::collection::vec(arb_event(), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = encode_batch(&events);
        let length = cut.index(bytes.len());
        let result = decode_batch(&bytes[..length]);
        prop_assert!(result.is_err(), "a {length}-byte prefix decoded");
        prop_assert!(result.unwrap_err().offset() <= length);
    }
}

/// Regression-style pins of hostile headers: huge counts and lengths are
/// refused before anything is allocated, whatever the remaining bytes.
#[test]
fn hostile_length_prefixes_are_refused() {
    // count = u64::MAX, then lengths of 2^62 for the first string.
    let mut bytes = framed(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert!(decode_batch(&bytes).is_err());
    bytes = framed(&[0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
    let error = decode_batch(&bytes).unwrap_err();
    assert_eq!(error.offset(), 6, "{error:?}");
}
