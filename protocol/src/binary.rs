//! The compact binary encoding of an ingest batch (`docs/api.md`, "Binary
//! batches").
//!
//! The same [`Event`]s as the JSON [`EventBatch`](crate::EventBatch), sent
//! to `POST /v1/events` with `Content-Type:` [`CONTENT_TYPE`]. The Rust
//! client uses it by default: decoding a binary event costs a few
//! nanoseconds where JSON costs hundreds.
//!
//! Layout (all integers little-endian; `varint` is unsigned LEB128):
//!
//! ```text
//! batch    = MAGIC (4 bytes "SDBB") VERSION (u8 = 1) count:varint event{count}
//! event    = id:string project:string visitor:string ts type:u8
//!            key:option<string> value:option<f64>
//!            attributes:varint (name:string value:string){attributes}
//!            decisions:varint (experiment:string variation:string){decisions}
//! string   = length:varint UTF-8 bytes{length}
//! ts       = 0x00 i64 (ms since the epoch) | 0x01 string (RFC 3339)
//! type     = 0 pageview | 1 click | 2 custom | 3 decision
//! option<T>= 0x00 | 0x01 T
//! ```
//!
//! Every count and length is checked against a named bound
//! ([`BINARY_EVENTS_MAX`], [`BINARY_STRING_BYTES_MAX`], …) *before* anything
//! is allocated, and an allocation is never larger than the bytes that
//! remain could fill, so a hostile header cannot make the decoder allocate
//! much. These bounds only protect the decoder; the node applies its finer
//! per-field limits (id length, attribute count, …) to the decoded events,
//! exactly as for JSON, and rejects offending events one by one.
//!
//! Framing problems (bad magic, unknown version, truncation, invalid UTF-8,
//! an unknown tag, trailing bytes) fail the whole batch with a
//! [`BinaryError`] that names the byte offset.

use crate::{Decision, Event, EventType, Timestamp};
use std::collections::BTreeMap;

/// The `Content-Type` of a binary batch.
pub const CONTENT_TYPE: &str = "application/x-sessiondb-batch";
/// The first four bytes of every binary batch.
pub const MAGIC: [u8; 4] = *b"SDBB";
/// The format version written by [`encode_batch`] and the only one
/// [`decode_batch`] reads.
pub const VERSION: u8 = 1;
/// Most events in one binary batch (the node's `BATCH_EVENTS_MAX`).
pub const BINARY_EVENTS_MAX: usize = 10_000;
/// Longest string (id, name, attribute, RFC 3339 time) in a binary batch.
pub const BINARY_STRING_BYTES_MAX: usize = 4_096;
/// Most attributes on one event in a binary batch.
pub const BINARY_ATTRIBUTES_MAX: usize = 256;
/// Most decisions on one event in a binary batch.
pub const BINARY_DECISIONS_MAX: usize = 256;
/// Longest LEB128 varint (a `u64` needs at most 10 bytes).
const VARINT_BYTES_MAX: usize = 10;
/// The smallest possible encoded event: three empty strings (1 byte each),
/// an RFC 3339 tag with an empty string (2), the type (1), two absent
/// options (2) and two empty lists (2). Bounds the capacity reserved for a
/// batch by the bytes actually present.
const EVENT_BYTES_MIN: usize = 10;

const TS_MILLISECONDS: u8 = 0;
const TS_RFC3339: u8 = 1;
const ABSENT: u8 = 0;
const PRESENT: u8 = 1;

/// Why a binary batch could not be read. Every variant names the byte
/// offset (from the start of the body) where the problem was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryError {
    /// The body does not start with the format's magic bytes `SDBB`.
    #[error("not a SessionDB binary batch: the body must start with \"SDBB\" (offset 0)")]
    BadMagic,
    /// The batch is in a format version this build cannot read.
    #[error("unsupported binary batch version {version} at offset {offset}; this build reads version {VERSION}")]
    UnsupportedVersion {
        /// Where the version byte is.
        offset: usize,
        /// The version the batch declares.
        version: u8,
    },
    /// The body ends before a field it started.
    #[error("the batch ends at offset {offset} in the middle of {what}")]
    Truncated {
        /// Where the body ended.
        offset: usize,
        /// The field being read, e.g. `"event id"`.
        what: &'static str,
    },
    /// A varint is longer than 10 bytes or over `u64`.
    #[error(
        "malformed varint at offset {offset} (longer than {VARINT_BYTES_MAX} bytes or over u64)"
    )]
    BadVarint {
        /// Where the varint starts.
        offset: usize,
    },
    /// The batch declares more than [`BINARY_EVENTS_MAX`] events.
    #[error(
        "the batch declares {count} events at offset {offset}; the limit is {BINARY_EVENTS_MAX}"
    )]
    TooManyEvents {
        /// Where the event count is.
        offset: usize,
        /// The count declared.
        count: u64,
    },
    /// A length or count is over its limit.
    #[error("{what} at offset {offset} is {value}; the limit is {max}")]
    LimitExceeded {
        /// Where the length or count is.
        offset: usize,
        /// What it counts, e.g. `"attribute count"`.
        what: &'static str,
        /// The value found.
        value: u64,
        /// The limit.
        max: usize,
    },
    /// A string field is not UTF-8.
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Where the string starts.
        offset: usize,
        /// The field, e.g. `"visitor"`.
        what: &'static str,
    },
    /// A tag byte (event type, timestamp form, presence) has no meaning.
    #[error("unknown {what} tag {tag} at offset {offset}")]
    InvalidTag {
        /// Where the tag is.
        offset: usize,
        /// Which tag, e.g. `"event type"`.
        what: &'static str,
        /// The byte found.
        tag: u8,
    },
    /// One event names an attribute twice.
    #[error("attribute `{name}` appears twice in one event (offset {offset})")]
    DuplicateAttribute {
        /// Where the second one is.
        offset: usize,
        /// The attribute's name.
        name: String,
    },
    /// Bytes follow the last declared event.
    #[error("{count} unexpected bytes after the last event, from offset {offset}")]
    TrailingBytes {
        /// Where the extra bytes start.
        offset: usize,
        /// How many there are.
        count: usize,
    },
}

impl BinaryError {
    /// The byte offset where decoding stopped.
    pub fn offset(&self) -> usize {
        match self {
            BinaryError::BadMagic => 0,
            BinaryError::UnsupportedVersion { offset, .. }
            | BinaryError::Truncated { offset, .. }
            | BinaryError::BadVarint { offset }
            | BinaryError::TooManyEvents { offset, .. }
            | BinaryError::LimitExceeded { offset, .. }
            | BinaryError::InvalidUtf8 { offset, .. }
            | BinaryError::InvalidTag { offset, .. }
            | BinaryError::DuplicateAttribute { offset, .. }
            | BinaryError::TrailingBytes { offset, .. } => *offset,
        }
    }
}

/// Encodes `events` as one binary batch.
///
/// Encoding never fails. Strings longer than [`BINARY_STRING_BYTES_MAX`],
/// more than [`BINARY_EVENTS_MAX`] events or more than
/// [`BINARY_ATTRIBUTES_MAX`] attributes / [`BINARY_DECISIONS_MAX`]
/// decisions are written as they are, and the *decoder* refuses the batch;
/// all of them are far above the node's own per-event limits, so such an
/// event would be rejected either way.
pub fn encode_batch(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + VARINT_BYTES_MAX + events.len() * 96);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    put_varint(&mut out, events.len() as u64);
    for event in events {
        encode_event(&mut out, event);
    }
    out
}

fn encode_event(out: &mut Vec<u8>, event: &Event) {
    put_string(out, &event.id);
    put_string(out, &event.project);
    put_string(out, &event.visitor);
    match &event.ts {
        Timestamp::Milliseconds(ms) => {
            out.push(TS_MILLISECONDS);
            out.extend_from_slice(&ms.to_le_bytes());
        }
        Timestamp::Rfc3339(text) => {
            out.push(TS_RFC3339);
            put_string(out, text);
        }
    }
    out.push(event_type_tag(event.event_type));
    match &event.key {
        None => out.push(ABSENT),
        Some(key) => {
            out.push(PRESENT);
            put_string(out, key);
        }
    }
    match event.value {
        None => out.push(ABSENT),
        Some(value) => {
            out.push(PRESENT);
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    put_varint(out, event.attributes.len() as u64);
    for (name, value) in &event.attributes {
        put_string(out, name);
        put_string(out, value);
    }
    put_varint(out, event.decisions.len() as u64);
    for decision in &event.decisions {
        put_string(out, &decision.experiment);
        put_string(out, &decision.variation);
    }
}

fn event_type_tag(event_type: EventType) -> u8 {
    match event_type {
        EventType::Pageview => 0,
        EventType::Click => 1,
        EventType::Custom => 2,
        EventType::Decision => 3,
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// Decodes one binary batch. Any framing problem fails the whole batch;
/// see [`BinaryError`]. The events are not validated beyond their framing:
/// the node validates each one as it does JSON events.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Event>, BinaryError> {
    let mut reader = Reader { bytes, offset: 0 };
    if reader.take(MAGIC.len(), "the header").ok() != Some(&MAGIC[..]) {
        return Err(BinaryError::BadMagic);
    }
    let version_offset = reader.offset;
    let version = reader.byte("the header")?;
    if version != VERSION {
        return Err(BinaryError::UnsupportedVersion {
            offset: version_offset,
            version,
        });
    }
    let count_offset = reader.offset;
    let count = reader.varint("the event count")?;
    if count > BINARY_EVENTS_MAX as u64 {
        return Err(BinaryError::TooManyEvents {
            offset: count_offset,
            count,
        });
    }
    let count = count as usize;
    let mut events = Vec::with_capacity(count.min(reader.remaining() / EVENT_BYTES_MIN));
    for _ in 0..count {
        events.push(reader.event()?);
    }
    if reader.remaining() > 0 {
        return Err(BinaryError::TrailingBytes {
            offset: reader.offset,
            count: reader.remaining(),
        });
    }
    Ok(events)
}

/// A cursor over the body; every read checks the bytes are there first.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    fn take(&mut self, length: usize, what: &'static str) -> Result<&'a [u8], BinaryError> {
        if length > self.remaining() {
            return Err(BinaryError::Truncated {
                offset: self.bytes.len(),
                what,
            });
        }
        let slice = &self.bytes[self.offset..self.offset + length];
        self.offset += length;
        Ok(slice)
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, BinaryError> {
        Ok(self.take(1, what)?[0])
    }

    fn array8(&mut self, what: &'static str) -> Result<[u8; 8], BinaryError> {
        let mut array = [0u8; 8];
        array.copy_from_slice(self.take(8, what)?);
        Ok(array)
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, BinaryError> {
        let start = self.offset;
        let mut value: u64 = 0;
        for index in 0..VARINT_BYTES_MAX {
            let byte = self.byte(what)?;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte may only hold the top bit of a u64.
            if index == VARINT_BYTES_MAX - 1 && bits > 1 {
                return Err(BinaryError::BadVarint { offset: start });
            }
            value |= bits << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(BinaryError::BadVarint { offset: start })
    }

    /// A count or length, checked against `max` before any use.
    fn bounded(&mut self, what: &'static str, max: usize) -> Result<usize, BinaryError> {
        let offset = self.offset;
        let value = self.varint(what)?;
        if value > max as u64 {
            return Err(BinaryError::LimitExceeded {
                offset,
                what,
                value,
                max,
            });
        }
        Ok(value as usize)
    }

    fn string(&mut self, what: &'static str) -> Result<String, BinaryError> {
        let length = self.bounded(what, BINARY_STRING_BYTES_MAX)?;
        let offset = self.offset;
        let bytes = self.take(length, what)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_string()),
            Err(_) => Err(BinaryError::InvalidUtf8 { offset, what }),
        }
    }

    fn tag(&mut self, what: &'static str) -> Result<(usize, u8), BinaryError> {
        let offset = self.offset;
        Ok((offset, self.byte(what)?))
    }

    fn presence(&mut self, what: &'static str) -> Result<bool, BinaryError> {
        match self.tag(what)? {
            (_, ABSENT) => Ok(false),
            (_, PRESENT) => Ok(true),
            (offset, tag) => Err(BinaryError::InvalidTag { offset, what, tag }),
        }
    }

    fn event(&mut self) -> Result<Event, BinaryError> {
        let id = self.string("an event id")?;
        let project = self.string("a project name")?;
        let visitor = self.string("a visitor id")?;
        let ts = match self.tag("a timestamp")? {
            (_, TS_MILLISECONDS) => {
                Timestamp::Milliseconds(i64::from_le_bytes(self.array8("a timestamp")?))
            }
            (_, TS_RFC3339) => Timestamp::Rfc3339(self.string("an RFC 3339 timestamp")?),
            (offset, tag) => {
                return Err(BinaryError::InvalidTag {
                    offset,
                    what: "timestamp",
                    tag,
                })
            }
        };
        let event_type = match self.tag("an event type")? {
            (_, 0) => EventType::Pageview,
            (_, 1) => EventType::Click,
            (_, 2) => EventType::Custom,
            (_, 3) => EventType::Decision,
            (offset, tag) => {
                return Err(BinaryError::InvalidTag {
                    offset,
                    what: "event type",
                    tag,
                })
            }
        };
        let key = if self.presence("key presence")? {
            Some(self.string("an event key")?)
        } else {
            None
        };
        let value = if self.presence("value presence")? {
            Some(f64::from_le_bytes(self.array8("an event value")?))
        } else {
            None
        };
        let attribute_count = self.bounded("the attribute count", BINARY_ATTRIBUTES_MAX)?;
        let mut attributes = BTreeMap::new();
        for _ in 0..attribute_count {
            let offset = self.offset;
            let name = self.string("an attribute name")?;
            let value = self.string("an attribute value")?;
            if attributes.contains_key(&name) {
                return Err(BinaryError::DuplicateAttribute { offset, name });
            }
            attributes.insert(name, value);
        }
        let decision_count = self.bounded("the decision count", BINARY_DECISIONS_MAX)?;
        let mut decisions = Vec::with_capacity(decision_count.min(self.remaining() / 2));
        for _ in 0..decision_count {
            let experiment = self.string("an experiment name")?;
            let variation = self.string("a variation name")?;
            decisions.push(Decision {
                experiment,
                variation,
            });
        }
        Ok(Event {
            id,
            project,
            visitor,
            ts,
            event_type,
            key,
            value,
            attributes,
            decisions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_events() -> Vec<Event> {
        vec![
            Event {
                id: "e-1".into(),
                project: "shop".into(),
                visitor: "v-42".into(),
                ts: Timestamp::Milliseconds(1_764_150_000_000),
                event_type: EventType::Decision,
                key: None,
                value: None,
                attributes: [("browser".to_string(), "firefox".to_string())].into(),
                decisions: vec![Decision {
                    experiment: "checkout".into(),
                    variation: "b".into(),
                }],
            },
            Event {
                id: "e-2".into(),
                project: "shop".into(),
                visitor: "v-42".into(),
                ts: Timestamp::Rfc3339("2025-11-26T10:00:05Z".into()),
                event_type: EventType::Custom,
                key: Some("purchase".into()),
                value: Some(1299.5),
                attributes: BTreeMap::new(),
                decisions: Vec::new(),
            },
        ]
    }

    #[test]
    fn sample_batch_round_trips() {
        let events = sample_events();
        let bytes = encode_batch(&events);
        assert_eq!(&bytes[..4], b"SDBB");
        assert_eq!(bytes[4], VERSION);
        assert_eq!(bytes[5], 2, "event count");
        assert_eq!(decode_batch(&bytes).unwrap(), events);
    }

    #[test]
    fn empty_batch_is_six_bytes() {
        let bytes = encode_batch(&[]);
        assert_eq!(bytes, b"SDBB\x01\x00");
        assert_eq!(decode_batch(&bytes).unwrap(), Vec::<Event>::new());
    }

    /// Pins the layout byte by byte, as documented in `docs/api.md`.
    #[test]
    fn layout_of_one_small_event_is_as_documented() {
        let event = Event {
            id: "a".into(),
            project: "p".into(),
            visitor: "v".into(),
            ts: Timestamp::Milliseconds(1),
            event_type: EventType::Custom,
            key: Some("k".into()),
            value: None,
            attributes: BTreeMap::new(),
            decisions: Vec::new(),
        };
        let expected: Vec<u8> = [
            &b"SDBB"[..],
            &[1, 1], // version, count
            &[1, b'a', 1, b'p', 1, b'v'],
            &[0, 1, 0, 0, 0, 0, 0, 0, 0], // ts: ms tag, i64 LE
            &[2],                         // custom
            &[1, 1, b'k'],                // key present
            &[0],                         // value absent
            &[0, 0],                      // no attributes, no decisions
        ]
        .concat();
        assert_eq!(encode_batch(&[event]), expected);
    }

    #[test]
    fn varints_use_leb128() {
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        let mut reader = Reader {
            bytes: &out,
            offset: 0,
        };
        assert_eq!(reader.varint("x").unwrap(), 300);
        let mut max = Vec::new();
        put_varint(&mut max, u64::MAX);
        assert_eq!(max.len(), VARINT_BYTES_MAX);
        let mut reader = Reader {
            bytes: &max,
            offset: 0,
        };
        assert_eq!(reader.varint("x").unwrap(), u64::MAX);
    }

    #[test]
    fn overlong_varint_is_refused() {
        let mut bytes = b"SDBB\x01".to_vec();
        bytes.extend_from_slice(&[0xff; 11]);
        assert_eq!(
            decode_batch(&bytes),
            Err(BinaryError::BadVarint { offset: 5 })
        );
        // Ten bytes whose last one carries more than u64's top bit.
        let mut bytes = b"SDBB\x01".to_vec();
        bytes.extend_from_slice(&[0xff; 9]);
        bytes.push(0x02);
        assert_eq!(
            decode_batch(&bytes),
            Err(BinaryError::BadVarint { offset: 5 })
        );
    }

    #[test]
    fn wrong_magic_and_version_are_refused() {
        assert_eq!(decode_batch(b"{\"events\":[]}"), Err(BinaryError::BadMagic));
        assert_eq!(decode_batch(b""), Err(BinaryError::BadMagic));
        assert_eq!(
            decode_batch(b"SDBB\x02\x00"),
            Err(BinaryError::UnsupportedVersion {
                offset: 4,
                version: 2
            })
        );
    }

    #[test]
    fn hostile_counts_are_refused_before_allocating() {
        let mut bytes = b"SDBB\x01".to_vec();
        put_varint(&mut bytes, u64::MAX);
        assert_eq!(
            decode_batch(&bytes),
            Err(BinaryError::TooManyEvents {
                offset: 5,
                count: u64::MAX
            })
        );
        // A string length far over the bound.
        let mut bytes = b"SDBB\x01\x01".to_vec();
        put_varint(&mut bytes, 1 << 40);
        let error = decode_batch(&bytes).unwrap_err();
        assert_eq!(
            error,
            BinaryError::LimitExceeded {
                offset: 6,
                what: "an event id",
                value: 1 << 40,
                max: BINARY_STRING_BYTES_MAX
            }
        );
        // The largest legal count with no events behind it is truncated.
        let mut bytes = b"SDBB\x01".to_vec();
        put_varint(&mut bytes, BINARY_EVENTS_MAX as u64);
        assert!(matches!(
            decode_batch(&bytes),
            Err(BinaryError::Truncated { .. })
        ));
    }

    #[test]
    fn bad_utf8_tags_duplicates_and_trailing_bytes_are_refused() {
        let good = encode_batch(&sample_events()[..1]);
        // The id "e-1" starts at offset 7 (header 5, count 1, length 1).
        let mut bad_utf8 = good.clone();
        bad_utf8[7] = 0xff;
        assert_eq!(
            decode_batch(&bad_utf8),
            Err(BinaryError::InvalidUtf8 {
                offset: 7,
                what: "an event id"
            })
        );

        let mut bad_type = good.clone();
        // id(4) project(5) visitor(5) ts(9) → the type is at 6 + 23 = 29.
        assert_eq!(bad_type[29], 3);
        bad_type[29] = 9;
        assert_eq!(
            decode_batch(&bad_type),
            Err(BinaryError::InvalidTag {
                offset: 29,
                what: "event type",
                tag: 9
            })
        );

        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            decode_batch(&trailing),
            Err(BinaryError::TrailingBytes {
                offset: good.len(),
                count: 1
            })
        );

        let mut duplicate = b"SDBB\x01\x01".to_vec();
        for text in ["e", "p", "v"] {
            put_string(&mut duplicate, text);
        }
        duplicate.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        duplicate.push(2); // two attributes, same name
        let name_offset = duplicate.len() + 4;
        for text in ["a", "1", "a", "2"] {
            put_string(&mut duplicate, text);
        }
        duplicate.push(0);
        assert_eq!(
            decode_batch(&duplicate),
            Err(BinaryError::DuplicateAttribute {
                offset: name_offset,
                name: "a".into()
            })
        );
    }

    #[test]
    fn every_proper_prefix_of_a_valid_batch_fails_cleanly() {
        let bytes = encode_batch(&sample_events());
        for length in 0..bytes.len() {
            let error = decode_batch(&bytes[..length])
                .expect_err(&format!("a prefix of {length} bytes decoded"));
            assert!(error.offset() <= length, "{error:?} for length {length}");
        }
    }

    fn arb_string() -> impl Strategy<Value = String> {
        prop_oneof![".{0,12}", "[a-z0-9_-]{0,40}"]
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
        // Any bit pattern except NaN, whose payload PartialEq cannot compare.
        let value = any::<u64>()
            .prop_map(f64::from_bits)
            .prop_filter("not NaN", |v| !v.is_nan());
        let decision = (arb_string(), arb_string()).prop_map(|(experiment, variation)| Decision {
            experiment,
            variation,
        });
        (
            (arb_string(), arb_string(), arb_string(), ts, event_type),
            (
                proptest::option::of(arb_string()),
                proptest::option::of(value),
                proptest::collection::btree_map(arb_string(), arb_string(), 0..5),
                proptest::collection::vec(decision, 0..4),
            ),
        )
            .prop_map(
                |((id, project, visitor, ts, event_type), (key, value, attributes, decisions))| {
                    Event {
                        id,
                        project,
                        visitor,
                        ts,
                        event_type,
                        key,
                        value,
                        attributes,
                        decisions,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn any_batch_round_trips(events in proptest::collection::vec(arb_event(), 0..20)) {
            let bytes = encode_batch(&events);
            prop_assert_eq!(decode_batch(&bytes).unwrap(), events);
        }

        #[test]
        fn truncated_batches_fail_without_panicking(
            events in proptest::collection::vec(arb_event(), 1..5),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = encode_batch(&events);
            let length = cut.index(bytes.len());
            prop_assert!(decode_batch(&bytes[..length]).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_batch(&bytes);
            let mut framed = b"SDBB\x01".to_vec();
            framed.extend_from_slice(&bytes);
            if let Err(error) = decode_batch(&framed) {
                prop_assert!(error.offset() <= framed.len());
            }
        }

        #[test]
        fn flipping_one_byte_never_panics(
            events in proptest::collection::vec(arb_event(), 1..4),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = encode_batch(&events);
            let index = at.index(bytes.len());
            bytes[index] = byte;
            let _ = decode_batch(&bytes);
        }
    }
}
