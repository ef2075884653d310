//! One open segment file that the writer appends to, and the directory
//! operations around segments. Every write and sync of a segment goes
//! through `SegmentFile`, which is where the fault hook sits.

use super::fault::FaultPlan;
use super::format::{self, SEGMENT_HEADER_LEN};
use super::{LogError, Position};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A segment open for appending. `len_bytes` is what this process has
/// written to it (the file length, as the file is append-only).
#[derive(Debug)]
pub(super) struct SegmentFile {
    path: PathBuf,
    file: File,
    first_position: Position,
    len_bytes: u64,
    fault: Option<Arc<FaultPlan>>,
}

impl SegmentFile {
    /// Creates `log-<first_position>.seg` with its header, syncs it and the
    /// directory, so that a segment that exists after a crash always has a
    /// durable header.
    pub(super) fn create(
        dir: &Path,
        first_position: Position,
        fault: Option<Arc<FaultPlan>>,
    ) -> Result<SegmentFile, LogError> {
        let path = dir.join(format::segment_file_name(first_position));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| LogError::io("create segment", &path, source))?;
        let mut segment = SegmentFile {
            path,
            file,
            first_position,
            len_bytes: 0,
            fault,
        };
        let header = format::encode_segment_header(first_position);
        let written = segment.write_all(&header).and_then(|()| segment.sync());
        if let Err(error) = written.and_then(|()| sync_dir(dir)) {
            // Best effort: a half-made segment would only be a torn header.
            let _ = fs::remove_file(&segment.path);
            return Err(error);
        }
        Ok(segment)
    }

    /// Opens an existing, already validated segment for appending.
    pub(super) fn open(
        path: PathBuf,
        first_position: Position,
        len_bytes: u64,
        fault: Option<Arc<FaultPlan>>,
    ) -> Result<SegmentFile, LogError> {
        assert!(len_bytes >= SEGMENT_HEADER_LEN as u64);
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|source| LogError::io("open segment", &path, source))?;
        Ok(SegmentFile {
            path,
            file,
            first_position,
            len_bytes,
            fault,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn first_position(&self) -> Position {
        self.first_position
    }

    pub(super) fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// Appends `bytes`. On error the file may hold a prefix of them.
    pub(super) fn write_all(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        let result = match self.fault.as_ref().map(|plan| plan.on_write()) {
            Some(Err(injected)) => {
                let half = &bytes[..bytes.len() / 2];
                self.file.write_all(half).and(Err(injected))
            }
            _ => self.file.write_all(bytes),
        };
        result.map_err(|source| LogError::io("write segment", &self.path, source))?;
        self.len_bytes += bytes.len() as u64;
        Ok(())
    }

    /// `fdatasync`: data and the file length, not the timestamps.
    pub(super) fn sync(&mut self) -> Result<(), LogError> {
        let result = match self.fault.as_ref().map(|plan| plan.on_sync()) {
            Some(Err(injected)) => Err(injected),
            _ => self.file.sync_data(),
        };
        result.map_err(|source| LogError::io("fsync segment", &self.path, source))
    }
}

/// Makes created and removed directory entries durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| LogError::io("fsync directory", dir, source))
}

/// Cuts a file to `len_bytes` and syncs it.
pub(super) fn truncate_file(path: &Path, len_bytes: u64) -> Result<(), LogError> {
    let truncate = |path: &Path| -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(len_bytes)?;
        file.sync_all()
    };
    truncate(path).map_err(|source| LogError::io("truncate segment", path, source))
}

/// Segment files in `dir`, sorted by first position. Other files are
/// ignored.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(Position, PathBuf)>, LogError> {
    let entries = fs::read_dir(dir).map_err(|source| LogError::io("list", dir, source))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| LogError::io("list", dir, source))?;
        let name = entry.file_name();
        if let Some(first_position) = name.to_str().and_then(format::parse_segment_file_name) {
            segments.push((first_position, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|(first_position, _)| *first_position);
    Ok(segments)
}
