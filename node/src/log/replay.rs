//! Streaming replay: read records after a checkpoint position, one segment
//! file at a time through a buffered reader, without the writer.

use super::format::{self, Damage, RECORD_FIELDS_LEN, RECORD_OVERHEAD_LEN, SEGMENT_HEADER_LEN};
use super::{LogError, Position, Record};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

const READ_BUFFER_BYTES: usize = 1024 * 1024;

/// Records with positions in `(after, last_position]`, in order. Yields an
/// error at most once, then ends.
///
/// `last_position` is the last acknowledged position when the replay
/// started; records appended later are not yielded, and a record being
/// written concurrently is never read half-way.
#[derive(Debug)]
pub struct Replay {
    dir: PathBuf,
    /// First positions of the segments still to read, in order.
    segments: std::vec::IntoIter<Position>,
    reader: Option<SegmentReader>,
    /// Where the previous segment ended, for an error if no segment follows.
    ended: Option<(PathBuf, u64)>,
    after: Position,
    last_position: Position,
    next_position: Position,
    payload_bytes_max: usize,
    done: bool,
    /// Byte offset, in its segment, of the record yielded last.
    last_offset: Option<u64>,
}

#[derive(Debug)]
struct SegmentReader {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
}

impl Replay {
    pub(super) fn new(
        dir: &Path,
        segments: &[Position],
        after: Position,
        last_position: Position,
        payload_bytes_max: usize,
    ) -> Replay {
        // The last segment starting at or before the first wanted position.
        let start = segments
            .iter()
            .rposition(|first| *first <= after.saturating_add(1))
            .unwrap_or(0);
        let remaining = segments[start..].to_vec();
        let next_position = remaining.first().copied().unwrap_or(last_position + 1);
        Replay {
            dir: dir.to_path_buf(),
            segments: remaining.into_iter(),
            reader: None,
            ended: None,
            after,
            last_position,
            next_position,
            payload_bytes_max,
            done: after >= last_position,
            last_offset: None,
        }
    }

    /// Where the record yielded last starts in its segment: with its
    /// position, the location [`super::RecordReader::read_at`] reads.
    pub fn last_offset(&self) -> Option<u64> {
        self.last_offset
    }

    fn next_record(&mut self) -> Result<Option<Record>, LogError> {
        loop {
            if self.next_position > self.last_position {
                return Ok(None);
            }
            let Some(reader) = self.reader.as_mut() else {
                self.open_next_segment()?;
                continue;
            };
            let mut head = [0u8; RECORD_OVERHEAD_LEN];
            if !read_exact_or_eof(reader, &mut head)? {
                // Segments end on record boundaries; the next one goes on.
                self.ended = Some((reader.path.clone(), reader.offset));
                self.reader = None;
                continue;
            }
            let record_offset = reader.offset;
            let body_len = format::decode_record_length(&head, self.payload_bytes_max)
                .map_err(|damage| corrupt(&reader.path, record_offset, damage))?;
            let payload_len = body_len - RECORD_FIELDS_LEN;
            let (position, shard) = format::decode_record_fields(&head);
            if position != self.next_position {
                let damage = Damage::PositionOutOfOrder {
                    expected: self.next_position,
                    found: position,
                };
                return Err(corrupt(&reader.path, record_offset, damage));
            }
            self.next_position += 1;
            reader.offset += (RECORD_OVERHEAD_LEN + payload_len) as u64;
            if position <= self.after {
                // Before the checkpoint: skip the payload unread.
                reader
                    .reader
                    .seek_relative(payload_len as i64)
                    .map_err(|source| LogError::io("read segment", &reader.path, source))?;
                continue;
            }
            let mut payload = vec![0u8; payload_len];
            if reader.reader.read_exact(&mut payload).is_err() {
                let damage = Damage::Truncated {
                    needed_bytes: (RECORD_OVERHEAD_LEN + payload_len) as u64,
                    available_bytes: RECORD_OVERHEAD_LEN as u64,
                };
                return Err(corrupt(&reader.path, record_offset, damage));
            }
            format::verify_record(&head, &payload)
                .map_err(|damage| corrupt(&reader.path, record_offset, damage))?;
            self.last_offset = Some(record_offset);
            return Ok(Some(Record {
                position,
                shard,
                payload,
            }));
        }
    }

    fn open_next_segment(&mut self) -> Result<(), LogError> {
        let Some(first_position) = self.segments.next() else {
            // The files end before the last acknowledged position.
            let (path, offset) = self.ended.take().unwrap_or((self.dir.clone(), 0));
            let damage = Damage::Truncated {
                needed_bytes: RECORD_OVERHEAD_LEN as u64,
                available_bytes: 0,
            };
            return Err(corrupt(&path, offset, damage));
        };
        let path = self.dir.join(format::segment_file_name(first_position));
        if first_position != self.next_position {
            let damage = Damage::PositionOutOfOrder {
                expected: self.next_position,
                found: first_position,
            };
            return Err(corrupt(&path, 0, damage));
        }
        let file =
            File::open(&path).map_err(|source| LogError::io("open segment", &path, source))?;
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        reader
            .read_exact(&mut header)
            .map_err(|source| LogError::io("read segment", &path, source))?;
        match format::decode_segment_header(&header) {
            Ok(stored) if stored == first_position => {}
            Ok(_) => return Err(corrupt(&path, 0, Damage::BadHeader)),
            Err(damage) => return Err(corrupt(&path, 0, damage)),
        }
        self.reader = Some(SegmentReader {
            path,
            reader,
            offset: SEGMENT_HEADER_LEN as u64,
        });
        Ok(())
    }
}

impl Iterator for Replay {
    type Item = Result<Record, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_record();
        if !matches!(next, Ok(Some(_))) {
            self.done = true;
        }
        next.transpose()
    }
}

/// `Ok(false)` at a clean end of file; a partial read is a truncated record.
fn read_exact_or_eof(reader: &mut SegmentReader, buf: &mut [u8]) -> Result<bool, LogError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.reader.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => {
                let damage = Damage::Truncated {
                    needed_bytes: buf.len() as u64,
                    available_bytes: filled as u64,
                };
                return Err(corrupt(&reader.path, reader.offset, damage));
            }
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(LogError::io("read segment", &reader.path, source)),
        }
    }
    Ok(true)
}

fn corrupt(path: &Path, offset: u64, damage: Damage) -> LogError {
    LogError::Corrupt {
        segment: path.to_path_buf(),
        offset,
        damage,
    }
}
