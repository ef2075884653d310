//! Bytes on disk: the segment header, the record frame, segment file names.
//!
//! Pure functions over byte slices; no I/O. Everything that knows the
//! layout lives here, so the writer, the recovery scan and the replay reader
//! cannot disagree about it.

use super::Position;

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SDB-LOG\0";
/// Version of the segment layout described in the module documentation.
pub const SEGMENT_VERSION: u32 = 1;
/// magic (8) + version (4) + first position (8) + crc32 of those 20 bytes (4).
pub const SEGMENT_HEADER_LEN: usize = 24;
/// length (4) + crc32 (4), before the checksummed body.
pub const RECORD_PREFIX_LEN: usize = 8;
/// position (8) + shard (4), the checksummed fields before the payload.
pub const RECORD_FIELDS_LEN: usize = 12;
/// Everything a record costs besides its payload.
pub const RECORD_OVERHEAD_LEN: usize = RECORD_PREFIX_LEN + RECORD_FIELDS_LEN;
/// Largest payload the length field can describe. Recovery decodes with
/// this bound rather than the configured `record_bytes_max`, so that
/// lowering the setting never makes a valid record look torn.
pub const RECORD_PAYLOAD_LEN_LIMIT: usize = u32::MAX as usize - RECORD_FIELDS_LEN;

const SEGMENT_NAME_PREFIX: &str = "log-";
const SEGMENT_NAME_SUFFIX: &str = ".seg";
const SEGMENT_NAME_DIGITS: usize = 20;

/// Why bytes are not a valid header or record. Used both for a cut tail and
/// for `LogError::Corrupt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The file ends inside a header or record.
    Truncated {
        needed_bytes: u64,
        available_bytes: u64,
    },
    /// Bad magic, version, checksum or first position in a segment header.
    BadHeader,
    /// The length field is outside `RECORD_FIELDS_LEN..=RECORD_FIELDS_LEN +
    /// record_bytes_max`.
    LengthOutOfRange { length: u32 },
    /// The stored checksum does not match the bytes.
    ChecksumMismatch { stored: u32, computed: u32 },
    /// A well-formed record whose position is not the next one.
    PositionOutOfOrder { expected: Position, found: Position },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Truncated {
                needed_bytes,
                available_bytes,
            } => write!(
                f,
                "truncated: needs {needed_bytes} bytes, {available_bytes} left"
            ),
            Damage::BadHeader => write!(f, "bad segment header"),
            Damage::LengthOutOfRange { length } => write!(f, "length {length} out of range"),
            Damage::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            Damage::PositionOutOfOrder { expected, found } => {
                write!(f, "position {found}, expected {expected}")
            }
        }
    }
}

/// A record decoded in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub position: Position,
    pub shard: u32,
    pub payload: &'a [u8],
}

/// `log-<first_position:020>.seg`: zero padding makes name order position
/// order.
pub fn segment_file_name(first_position: Position) -> String {
    format!("{SEGMENT_NAME_PREFIX}{first_position:020}{SEGMENT_NAME_SUFFIX}")
}

/// The first position encoded in a segment file name, or `None` for any
/// other file.
pub fn parse_segment_file_name(name: &str) -> Option<Position> {
    let digits = name
        .strip_prefix(SEGMENT_NAME_PREFIX)?
        .strip_suffix(SEGMENT_NAME_SUFFIX)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn encode_segment_header(first_position: Position) -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&first_position.to_le_bytes());
    let crc = crc32fast::hash(&header[0..20]);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(decode_segment_header(&header), Ok(first_position));
    header
}

/// The first position stored in a segment header.
pub fn decode_segment_header(bytes: &[u8]) -> Result<Position, Damage> {
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err(Damage::Truncated {
            needed_bytes: SEGMENT_HEADER_LEN as u64,
            available_bytes: bytes.len() as u64,
        });
    }
    let stored_crc = read_u32(bytes, 20);
    if bytes[0..8] != SEGMENT_MAGIC
        || read_u32(bytes, 8) != SEGMENT_VERSION
        || crc32fast::hash(&bytes[0..20]) != stored_crc
    {
        return Err(Damage::BadHeader);
    }
    Ok(read_u64(bytes, 12))
}

/// Bytes one record takes on disk.
pub fn record_len(payload_len: usize) -> usize {
    RECORD_OVERHEAD_LEN + payload_len
}

/// Appends one framed record to `out`. The caller has checked the payload
/// against `record_bytes_max` (so the length fits in `u32`).
pub fn encode_record(out: &mut Vec<u8>, position: Position, shard: u32, payload: &[u8]) {
    let body_len = RECORD_FIELDS_LEN + payload.len();
    let length = u32::try_from(body_len).expect("payload checked against record_bytes_max");
    let position_bytes = position.to_le_bytes();
    let shard_bytes = shard.to_le_bytes();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&position_bytes);
    hasher.update(&shard_bytes);
    hasher.update(payload);
    let crc = hasher.finalize();

    let start = out.len();
    out.reserve(RECORD_PREFIX_LEN + body_len);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&position_bytes);
    out.extend_from_slice(&shard_bytes);
    out.extend_from_slice(payload);

    debug_assert_eq!(
        decode_record(&out[start..], payload.len()),
        Ok((
            RecordRef {
                position,
                shard,
                payload
            },
            record_len(payload.len())
        ))
    );
}

/// Reads the length field of a record prefix and checks its range. Returns
/// the body length (position + shard + payload).
pub fn decode_record_length(prefix: &[u8], record_bytes_max: usize) -> Result<usize, Damage> {
    let length = read_u32(prefix, 0);
    let body_len = length as usize;
    if body_len < RECORD_FIELDS_LEN || body_len - RECORD_FIELDS_LEN > record_bytes_max {
        return Err(Damage::LengthOutOfRange { length });
    }
    Ok(body_len)
}

/// Checks the checksum of a body against the crc stored in its prefix and
/// splits it into fields.
pub fn decode_record_body<'a>(prefix: &[u8], body: &'a [u8]) -> Result<RecordRef<'a>, Damage> {
    debug_assert!(body.len() >= RECORD_FIELDS_LEN);
    let stored = read_u32(prefix, 4);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(Damage::ChecksumMismatch { stored, computed });
    }
    Ok(RecordRef {
        position: read_u64(body, 0),
        shard: read_u32(body, 8),
        payload: &body[RECORD_FIELDS_LEN..],
    })
}

/// Position and shard from the head of a record (its first
/// `RECORD_OVERHEAD_LEN` bytes), before the checksum is checked.
pub fn decode_record_fields(head: &[u8]) -> (Position, u32) {
    (
        read_u64(head, RECORD_PREFIX_LEN),
        read_u32(head, RECORD_PREFIX_LEN + 8),
    )
}

/// Checks a record read in two parts: its head (`RECORD_OVERHEAD_LEN`
/// bytes) and its payload.
pub fn verify_record(head: &[u8], payload: &[u8]) -> Result<(), Damage> {
    let stored = read_u32(head, 4);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&head[RECORD_PREFIX_LEN..RECORD_OVERHEAD_LEN]);
    hasher.update(payload);
    let computed = hasher.finalize();
    if stored != computed {
        return Err(Damage::ChecksumMismatch { stored, computed });
    }
    Ok(())
}

/// Decodes the record at the start of `bytes`; returns it and the bytes it
/// takes. Does not check the position order (the caller knows what comes
/// next).
pub fn decode_record(
    bytes: &[u8],
    record_bytes_max: usize,
) -> Result<(RecordRef<'_>, usize), Damage> {
    if bytes.len() < RECORD_PREFIX_LEN {
        return Err(Damage::Truncated {
            needed_bytes: RECORD_PREFIX_LEN as u64,
            available_bytes: bytes.len() as u64,
        });
    }
    let (prefix, rest) = bytes.split_at(RECORD_PREFIX_LEN);
    let body_len = decode_record_length(prefix, record_bytes_max)?;
    if rest.len() < body_len {
        return Err(Damage::Truncated {
            needed_bytes: (RECORD_PREFIX_LEN + body_len) as u64,
            available_bytes: bytes.len() as u64,
        });
    }
    let record = decode_record_body(prefix, &rest[..body_len])?;
    Ok((record, RECORD_PREFIX_LEN + body_len))
}

/// Whether a valid record with a position after `after_position` starts
/// anywhere in `bytes[from..]`. Used to tell a torn tail (nothing valid
/// follows the damage) from damage in the middle (something does).
///
/// Byte by byte, with cheap filters (length range, position range) before
/// the checksum, so random bytes cost a few comparisons each.
pub fn valid_record_after(
    bytes: &[u8],
    from: usize,
    after_position: Position,
    record_bytes_max: usize,
) -> Option<usize> {
    let end = bytes.len().checked_sub(RECORD_OVERHEAD_LEN)?;
    // A later record cannot have a position beyond one per minimal record.
    let position_max = after_position + (bytes.len() / RECORD_OVERHEAD_LEN) as u64 + 1;
    (from..=end).find(|&offset| {
        let candidate = &bytes[offset..];
        let position = read_u64(candidate, RECORD_PREFIX_LEN);
        if position <= after_position || position > position_max {
            return false;
        }
        decode_record(candidate, record_bytes_max).is_ok()
    })
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut buf = [0u8; 4];
    buf.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(buf)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(buf)
}
