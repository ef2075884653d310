//! Bytes of one replicated-log record: the payload of a `crate::log` record
//! whose shard field carries the group id. Pure functions, no I/O; the
//! layout is described in the module documentation (`super`).
//!
//! Every payload starts with a kind byte. A kind's layout never changes: a
//! new layout gets a new kind, and an unknown kind is refused, never
//! skipped (skipping a truncation or a vote would silently change a
//! group's history).

use openraft::{Entry, EntryPayload, LogId, NodeId, RaftTypeConfig, Vote};
use serde::{Deserialize, Serialize};

/// A Raft entry as appended: `kind | postcard(LogId) | postcard(EntryPayload)`.
pub const KIND_ENTRY: u8 = 1;
/// The same bytes as an entry, written again at the head of the log so an
/// old file can be deleted (carried forward). Never truncates anything.
pub const KIND_COPY: u8 = 2;
/// `kind | index (u64 LE)`: the group's entries at and above `index` are
/// gone.
pub const KIND_TRUNCATE: u8 = 3;
/// `kind | postcard(GroupMeta)`: the group's whole metadata; the last one
/// in the log wins.
pub const KIND_STATE: u8 = 4;
/// `kind`: the group left this node; everything before it is void.
pub const KIND_FORGET: u8 = 5;

const KIND_LEN: usize = 1;
const TRUNCATE_LEN: usize = KIND_LEN + 8;

/// Everything about a group besides its entries, written whole by every
/// change so that one record (the last) restores it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct GroupMeta<NID: NodeId> {
    pub vote: Option<Vote<NID>>,
    pub committed: Option<LogId<NID>>,
    /// openraft's last purged log id: entries at and below it are no
    /// longer served to openraft.
    pub purged: Option<LogId<NID>>,
    /// The retention floor: entries above it stay on disk even when
    /// purged (see `ReplicatedLog::set_retention_floor`).
    pub floor: Option<u64>,
}

impl<NID: NodeId> GroupMeta<NID> {
    /// Entries at and below this index are neither served nor kept: the
    /// lower of the purge point and the retention floor.
    pub fn keep_after(&self) -> Option<u64> {
        let purged = self.purged.as_ref()?.index;
        Some(self.floor.map_or(purged, |floor| floor.min(purged)))
    }
}

/// What recovery needs of a record without decoding an entry's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header<NID: NodeId> {
    Entry { log_id: LogId<NID>, copy: bool },
    Truncate { index: u64 },
    State(GroupMeta<NID>),
    Forget,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("empty record")]
    Empty,
    #[error("unknown record kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("record of kind {kind} is {bytes} bytes, expected {expected}")]
    WrongLength {
        kind: u8,
        bytes: usize,
        expected: usize,
    },
    #[error("record of kind {kind} does not decode: {source}")]
    Decode {
        kind: u8,
        #[source]
        source: postcard::Error,
    },
    #[error("record of kind {kind} has {bytes} bytes after its fields")]
    TrailingBytes { kind: u8, bytes: usize },
    #[error("cannot encode a record of kind {kind}: {source}")]
    Encode {
        kind: u8,
        #[source]
        source: postcard::Error,
    },
}

pub fn encode_entry<C>(entry: &Entry<C>) -> Result<Vec<u8>, RecordError>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
{
    let encode_error = |source| RecordError::Encode {
        kind: KIND_ENTRY,
        source,
    };
    let bytes = postcard::to_extend(&entry.log_id, vec![KIND_ENTRY]).map_err(encode_error)?;
    let bytes = postcard::to_extend(&entry.payload, bytes).map_err(encode_error)?;
    debug_assert!(matches!(
        decode_header::<C::NodeId>(&bytes),
        Ok(Header::Entry { log_id, copy: false }) if log_id == entry.log_id
    ));
    debug_assert!(decode_entry::<C>(&bytes).is_ok());
    Ok(bytes)
}

/// The bytes of an entry record turned into a copy of it (the kind byte
/// differs, nothing else): carrying an entry forward never re-encodes it.
pub fn into_copy(mut bytes: Vec<u8>) -> Vec<u8> {
    assert!(
        matches!(bytes.first(), Some(&KIND_ENTRY | &KIND_COPY)),
        "only entry records are copied"
    );
    bytes[0] = KIND_COPY;
    bytes
}

/// An entry from an entry or copy record.
pub fn decode_entry<C>(bytes: &[u8]) -> Result<Entry<C>, RecordError>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
{
    let (kind, rest) = split_kind(bytes)?;
    if kind != KIND_ENTRY && kind != KIND_COPY {
        return Err(RecordError::UnknownKind { kind });
    }
    let decode_error = |source| RecordError::Decode { kind, source };
    let (log_id, rest) =
        postcard::take_from_bytes::<LogId<C::NodeId>>(rest).map_err(decode_error)?;
    let (payload, rest) =
        postcard::take_from_bytes::<EntryPayload<C>>(rest).map_err(decode_error)?;
    no_trailing_bytes(kind, rest)?;
    Ok(Entry { log_id, payload })
}

pub fn encode_truncate(index: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(TRUNCATE_LEN);
    bytes.push(KIND_TRUNCATE);
    bytes.extend_from_slice(&index.to_le_bytes());
    debug_assert!(matches!(
        decode_header::<u64>(&bytes),
        Ok(Header::Truncate { index: decoded }) if decoded == index
    ));
    bytes
}

pub fn encode_state<NID: NodeId>(meta: &GroupMeta<NID>) -> Result<Vec<u8>, RecordError> {
    let bytes =
        postcard::to_extend(meta, vec![KIND_STATE]).map_err(|source| RecordError::Encode {
            kind: KIND_STATE,
            source,
        })?;
    debug_assert!(matches!(
        decode_header::<NID>(&bytes),
        Ok(Header::State(ref decoded)) if decoded == meta
    ));
    Ok(bytes)
}

pub fn encode_forget() -> Vec<u8> {
    vec![KIND_FORGET]
}

/// The kind and fixed fields of a record; an entry's payload is left
/// undecoded.
pub fn decode_header<NID: NodeId>(bytes: &[u8]) -> Result<Header<NID>, RecordError> {
    let (kind, rest) = split_kind(bytes)?;
    let decode_error = |source| RecordError::Decode { kind, source };
    match kind {
        KIND_ENTRY | KIND_COPY => {
            let (log_id, _payload) =
                postcard::take_from_bytes::<LogId<NID>>(rest).map_err(decode_error)?;
            Ok(Header::Entry {
                log_id,
                copy: kind == KIND_COPY,
            })
        }
        KIND_TRUNCATE => {
            let index_bytes: [u8; 8] = rest.try_into().map_err(|_| RecordError::WrongLength {
                kind,
                bytes: bytes.len(),
                expected: TRUNCATE_LEN,
            })?;
            Ok(Header::Truncate {
                index: u64::from_le_bytes(index_bytes),
            })
        }
        KIND_STATE => {
            let (meta, rest) =
                postcard::take_from_bytes::<GroupMeta<NID>>(rest).map_err(decode_error)?;
            no_trailing_bytes(kind, rest)?;
            Ok(Header::State(meta))
        }
        KIND_FORGET => {
            no_trailing_bytes(kind, rest)?;
            Ok(Header::Forget)
        }
        kind => Err(RecordError::UnknownKind { kind }),
    }
}

fn split_kind(bytes: &[u8]) -> Result<(u8, &[u8]), RecordError> {
    match bytes.split_first() {
        Some((kind, rest)) => Ok((*kind, rest)),
        None => Err(RecordError::Empty),
    }
}

fn no_trailing_bytes(kind: u8, rest: &[u8]) -> Result<(), RecordError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(RecordError::TrailingBytes {
            kind,
            bytes: rest.len(),
        })
    }
}
