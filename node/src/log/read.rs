//! Reading single records by location: the position and the byte offset the
//! writer reported when it synced them. For callers that index the log in
//! memory (the replicated log's lagging followers) and must not stream a
//! whole segment to reach one record.

use super::format::{self, Damage, RECORD_FIELDS_LEN, RECORD_OVERHEAD_LEN};
use super::{LogError, Position, Record};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Reads records at known locations, up to the last position synced when it
/// was made. Keeps the segment it read last open, so a run of reads in one
/// segment opens it once.
#[derive(Debug)]
pub struct RecordReader {
    dir: PathBuf,
    /// First positions of the segments when the reader was made.
    segments: Vec<Position>,
    last_position: Position,
    payload_bytes_max: usize,
    open: Option<OpenSegment>,
}

#[derive(Debug)]
struct OpenSegment {
    first_position: Position,
    path: PathBuf,
    file: File,
}

impl RecordReader {
    pub(super) fn new(
        dir: &Path,
        segments: Vec<Position>,
        last_position: Position,
        payload_bytes_max: usize,
    ) -> RecordReader {
        RecordReader {
            dir: dir.to_path_buf(),
            segments,
            last_position,
            payload_bytes_max,
            open: None,
        }
    }

    /// The record at `position`, which starts `offset` bytes into its
    /// segment. Checks the frame, the position and the checksum: a wrong
    /// location is `Corrupt`, never another record.
    pub fn read_at(&mut self, position: Position, offset: u64) -> Result<Record, LogError> {
        let segment = self.segment_of(position)?;
        let payload_bytes_max = self.payload_bytes_max;
        let open = self.open_segment(segment)?;
        let mut head = [0u8; RECORD_OVERHEAD_LEN];
        read_exact_at(open, offset, &mut head)?;
        let corrupt = |path: &Path, damage| LogError::Corrupt {
            segment: path.to_path_buf(),
            offset,
            damage,
        };
        let body_len = format::decode_record_length(&head, payload_bytes_max)
            .map_err(|damage| corrupt(&open.path, damage))?;
        let (found, shard) = format::decode_record_fields(&head);
        if found != position {
            let damage = Damage::PositionOutOfOrder {
                expected: position,
                found,
            };
            return Err(corrupt(&open.path, damage));
        }
        let mut payload = vec![0u8; body_len - RECORD_FIELDS_LEN];
        read_exact_at(open, offset + RECORD_OVERHEAD_LEN as u64, &mut payload)?;
        format::verify_record(&head, &payload).map_err(|damage| corrupt(&open.path, damage))?;
        Ok(Record {
            position,
            shard,
            payload,
        })
    }

    /// First position of the segment holding `position`.
    fn segment_of(&self, position: Position) -> Result<Position, LogError> {
        let first_position = self.segments.first().copied().unwrap_or(1);
        let missing = LogError::RecordMissing {
            position,
            first_position,
            last_position: self.last_position,
        };
        if position < first_position || position > self.last_position {
            return Err(missing);
        }
        let index = self.segments.partition_point(|first| *first <= position);
        // `position >= segments[0]`, so at least one segment starts at or
        // before it.
        Ok(self.segments[index - 1])
    }

    fn open_segment(&mut self, first_position: Position) -> Result<&mut OpenSegment, LogError> {
        let reuse = matches!(&self.open, Some(open) if open.first_position == first_position);
        if !reuse {
            let path = self.dir.join(format::segment_file_name(first_position));
            let file =
                File::open(&path).map_err(|source| LogError::io("open segment", &path, source))?;
            self.open = Some(OpenSegment {
                first_position,
                path,
                file,
            });
        }
        Ok(self.open.as_mut().expect("opened above"))
    }
}

fn read_exact_at(open: &mut OpenSegment, offset: u64, buffer: &mut [u8]) -> Result<(), LogError> {
    let path = &open.path;
    open.file
        .seek(SeekFrom::Start(offset))
        .and_then(|_| open.file.read_exact(buffer))
        .map_err(|source| LogError::io("read segment", path, source))
}
