//! Opening a log directory: validate every segment, cut a torn tail of the
//! last one, refuse anything else that is damaged.

use super::format::{self, Damage, SEGMENT_HEADER_LEN};
use super::segment::{self, SegmentFile};
use super::{LogConfig, LogError, Position, RecoveryReport, TailCut};
use std::fs;
use std::path::{Path, PathBuf};

/// What `Log::open` needs to start the writer.
#[derive(Debug)]
pub(super) struct Recovered {
    /// First positions of all segments, the active one last.
    pub segments: Vec<Position>,
    pub active: SegmentFile,
    /// Last position on disk, 0 when the log has never held a record.
    pub last_position: Position,
    /// Largest payload on disk, which may exceed a lowered
    /// `record_bytes_max`; replay accepts records up to it.
    pub payload_bytes_max: usize,
    pub report: RecoveryReport,
}

/// One segment after its scan: where valid records end, and what stopped
/// the scan if it was not the end of the file.
#[derive(Debug)]
struct SegmentScan {
    records: u64,
    /// Largest payload among the valid records.
    payload_bytes_max: usize,
    valid_len_bytes: u64,
    damage: Option<(u64, Damage)>,
}

pub(super) fn recover(dir: &Path, config: &LogConfig) -> Result<Recovered, LogError> {
    fs::create_dir_all(dir).map_err(|source| LogError::io("create directory", dir, source))?;
    let segments = segment::list_segments(dir)?;
    let Some(last_index) = segments.len().checked_sub(1) else {
        let active = SegmentFile::create(dir, 1, config.fault.clone())?;
        return Ok(Recovered {
            segments: vec![1],
            active,
            last_position: 0,
            payload_bytes_max: 0,
            report: RecoveryReport {
                segments: 1,
                ..RecoveryReport::default()
            },
        });
    };

    let mut report = RecoveryReport {
        segments: segments.len(),
        ..RecoveryReport::default()
    };
    let mut last_position: Option<Position> = None;
    let mut payload_bytes_max = 0;
    for (index, (first_position, path)) in segments.iter().enumerate() {
        let is_last = index == last_index;
        if *first_position == 0 {
            return Err(corrupt(path, 0, Damage::BadHeader));
        }
        if let Some(last) = last_position {
            if *first_position != last + 1 {
                return Err(corrupt(
                    path,
                    0,
                    Damage::PositionOutOfOrder {
                        expected: last + 1,
                        found: *first_position,
                    },
                ));
            }
        }
        let bytes = fs::read(path).map_err(|source| LogError::io("read segment", path, source))?;
        if let Err(damage) = check_header(&bytes, *first_position) {
            if is_last && bytes.len() <= SEGMENT_HEADER_LEN {
                // Created but its header never became durable: no records
                // can be in it. Write it again.
                let torn = TornHeader {
                    bytes: bytes.len(),
                    last_position,
                    payload_bytes_max,
                };
                return rewrite_torn_header(dir, segments, torn, report, config);
            }
            return Err(corrupt(path, 0, damage));
        }
        let scan = scan_records(&bytes, *first_position);
        payload_bytes_max = payload_bytes_max.max(scan.payload_bytes_max);
        report.records += scan.records;
        if scan.records > 0 {
            report.first_position.get_or_insert(*first_position);
        }
        let segment_last_position = first_position + scan.records - 1;
        last_position = Some(segment_last_position);
        if let Some((offset, damage)) = scan.damage {
            if !is_last || !may_be_torn(&bytes, offset, segment_last_position, damage) {
                return Err(corrupt(path, offset, damage));
            }
            segment::truncate_file(path, scan.valid_len_bytes)?;
            report.truncated_bytes = bytes.len() as u64 - scan.valid_len_bytes;
            report.cut = Some(TailCut {
                segment: path.clone(),
                offset,
                damage,
            });
            tracing::warn!(
                segment = %path.display(),
                offset,
                truncated_bytes = report.truncated_bytes,
                %damage,
                "log: cut a torn tail"
            );
        }
        if is_last {
            let active = SegmentFile::open(
                path.clone(),
                *first_position,
                scan.valid_len_bytes,
                config.fault.clone(),
            )?;
            let last_position = last_position.expect("set for every segment");
            report.last_position = last_position;
            return Ok(Recovered {
                segments: segments.iter().map(|(first, _)| *first).collect(),
                active,
                last_position,
                payload_bytes_max,
                report,
            });
        }
    }
    unreachable!("the loop returns at the last segment")
}

/// Damage at the end of the last segment is a torn write when it could be
/// one (a short, oversized or mismatching frame, not a well-formed record
/// out of order) and no valid later record follows it.
fn may_be_torn(bytes: &[u8], offset: u64, after_position: Position, damage: Damage) -> bool {
    let torn_kind = matches!(
        damage,
        Damage::Truncated { .. }
            | Damage::LengthOutOfRange { .. }
            | Damage::ChecksumMismatch { .. }
    );
    torn_kind
        && format::valid_record_after(
            bytes,
            offset as usize + 1,
            after_position,
            format::RECORD_PAYLOAD_LEN_LIMIT,
        )
        .is_none()
}

fn check_header(bytes: &[u8], first_position: Position) -> Result<(), Damage> {
    match format::decode_segment_header(bytes)? {
        stored if stored == first_position => Ok(()),
        _ => Err(Damage::BadHeader),
    }
}

/// Decodes records from the header on, while each is valid and has the
/// next position.
fn scan_records(bytes: &[u8], first_position: Position) -> SegmentScan {
    let mut offset = SEGMENT_HEADER_LEN;
    let mut records = 0u64;
    let mut payload_bytes_max = 0;
    while offset < bytes.len() {
        let expected = first_position + records;
        let decoded = format::decode_record(&bytes[offset..], format::RECORD_PAYLOAD_LEN_LIMIT);
        let damage = match decoded {
            Ok((record, _)) if record.position != expected => Damage::PositionOutOfOrder {
                expected,
                found: record.position,
            },
            Ok((record, len)) => {
                payload_bytes_max = payload_bytes_max.max(record.payload.len());
                offset += len;
                records += 1;
                continue;
            }
            Err(damage) => damage,
        };
        return SegmentScan {
            records,
            payload_bytes_max,
            valid_len_bytes: offset as u64,
            damage: Some((offset as u64, damage)),
        };
    }
    SegmentScan {
        records,
        payload_bytes_max,
        valid_len_bytes: offset as u64,
        damage: None,
    }
}

/// The last segment has a torn header: remove it and create it again.
/// What the scan knew when it met a torn header in the last segment.
#[derive(Debug)]
struct TornHeader {
    bytes: usize,
    last_position: Option<Position>,
    payload_bytes_max: usize,
}

fn rewrite_torn_header(
    dir: &Path,
    segments: Vec<(Position, PathBuf)>,
    torn: TornHeader,
    mut report: RecoveryReport,
    config: &LogConfig,
) -> Result<Recovered, LogError> {
    let (first_position, path) = segments
        .last()
        .expect("called for the last segment")
        .clone();
    fs::remove_file(&path).map_err(|source| LogError::io("remove segment", &path, source))?;
    let active = SegmentFile::create(dir, first_position, config.fault.clone())?;
    tracing::warn!(
        segment = %path.display(),
        torn_bytes = torn.bytes,
        "log: rewrote a torn segment header"
    );
    let last_position = torn.last_position.unwrap_or(first_position - 1);
    report.truncated_bytes = torn.bytes as u64;
    report.last_position = last_position;
    report.cut = Some(TailCut {
        segment: path,
        offset: 0,
        damage: Damage::BadHeader,
    });
    Ok(Recovered {
        segments: segments.iter().map(|(first, _)| *first).collect(),
        active,
        last_position,
        payload_bytes_max: torn.payload_bytes_max,
        report,
    })
}

fn corrupt(path: &Path, offset: u64, damage: Damage) -> LogError {
    LogError::Corrupt {
        segment: path.to_path_buf(),
        offset,
        damage,
    }
}
