//! Tests of the log through its public API, plus the pure format layer.

use super::format::{self, RECORD_OVERHEAD_LEN, SEGMENT_HEADER_LEN};
use super::*;
use std::collections::HashSet;
use std::fs;

/// Also the replicated log's tests' (`crate::replication`).
pub(crate) use sessiondb_test_support::TempDir;

/// Small segments so that a few hundred records rotate several times.
fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4096,
        record_bytes_max: 512,
        group_records_max: 256,
        group_bytes_max: 64 * 1024,
        group_wait_us: 0,
        queue_records_max: 1024,
        queue_bytes_max: 1024 * 1024,
        fault: None,
    }
}

fn payload(i: u64) -> Vec<u8> {
    let len = (i * 37 % 200) as usize;
    (0..len).map(|j| (i as usize * 7 + j) as u8).collect()
}

fn shard_of(i: u64) -> u32 {
    (i % 13) as u32
}

fn open(dir: &TempDir, config: LogConfig) -> (Log, RecoveryReport) {
    match Log::open(dir.path(), config) {
        Ok(opened) => opened,
        Err(error) => panic!("open failed: {error}"),
    }
}

fn replay(log: &Log, after: Position) -> Vec<Record> {
    log.replay_after(after)
        .expect("replay starts")
        .collect::<Result<Vec<_>, _>>()
        .expect("replay reads")
}

fn segment_files(dir: &TempDir) -> Vec<PathBuf> {
    segment::list_segments(dir.path())
        .expect("list")
        .into_iter()
        .map(|(_, path)| path)
        .collect()
}

/// Appends records 1..=count one by one (payload i for position i).
async fn append_numbered(log: &Log, count: u64) {
    for i in 1..=count {
        let position = log.append(shard_of(i), payload(i)).await.expect("append");
        assert_eq!(position, i);
    }
}

fn assert_numbered(records: &[Record], first: Position, last: Position) {
    let positions: Vec<Position> = records.iter().map(|record| record.position).collect();
    assert_eq!(positions, (first..=last).collect::<Vec<_>>());
    for record in records {
        assert_eq!(record.shard, shard_of(record.position));
        assert_eq!(record.payload, payload(record.position));
    }
}

fn flip_bit(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).expect("read");
    bytes[offset as usize] ^= 0x10;
    fs::write(path, bytes).expect("write");
}

fn chop(path: &Path, bytes: u64) {
    let len = fs::metadata(path).expect("stat").len();
    let file = fs::OpenOptions::new().write(true).open(path).expect("open");
    file.set_len(len - bytes).expect("truncate");
}

#[test]
fn format_round_trips_and_rejects_damage() {
    let mut buffer = Vec::new();
    format::encode_record(&mut buffer, 42, 7, b"hello");
    format::encode_record(&mut buffer, 43, 8, b"");
    let (first, len) = format::decode_record(&buffer, 16).expect("first");
    assert_eq!(
        (first.position, first.shard, first.payload),
        (42, 7, &b"hello"[..])
    );
    assert_eq!(len, format::record_len(5));
    let (second, _) = format::decode_record(&buffer[len..], 16).expect("second");
    assert_eq!(
        (second.position, second.shard, second.payload),
        (43, 8, &b""[..])
    );
    assert!(matches!(
        format::decode_record(&buffer, 4),
        Err(Damage::LengthOutOfRange { .. })
    ));
    assert!(matches!(
        format::decode_record(&buffer[..len - 1], 16),
        Err(Damage::Truncated { .. })
    ));
    let mut flipped = buffer.clone();
    flipped[RECORD_OVERHEAD_LEN] ^= 1;
    assert!(matches!(
        format::decode_record(&flipped, 16),
        Err(Damage::ChecksumMismatch { .. })
    ));
    // The second record is found after damage to the first, not before 43.
    assert_eq!(format::valid_record_after(&flipped, 1, 42, 16), Some(len));
    assert_eq!(format::valid_record_after(&flipped, 1, 43, 16), None);

    let header = format::encode_segment_header(9);
    assert_eq!(format::decode_segment_header(&header), Ok(9));
    assert_eq!(format::segment_file_name(9), "log-00000000000000000009.seg");
    assert_eq!(
        format::parse_segment_file_name("log-00000000000000000009.seg"),
        Some(9)
    );
    assert_eq!(format::parse_segment_file_name("log-9.seg"), None);
    assert_eq!(format::parse_segment_file_name("other"), None);
}

#[tokio::test]
async fn round_trip_across_segment_rotation() {
    let dir = TempDir::new("round-trip");
    let (log, report) = open(&dir, small_config());
    assert_eq!(report.records, 0);
    append_numbered(&log, 300).await;
    let batch: Vec<(u32, Vec<u8>)> = (301..=340).map(|i| (shard_of(i), payload(i))).collect();
    assert_eq!(log.append_batch(batch).await.expect("batch"), 301..341);

    assert_numbered(&replay(&log, 0), 1, 340);
    assert_eq!(log.last_position(), 340);
    let files = segment_files(&dir);
    assert!(
        files.len() > 5,
        "expected rotation, got {} segments",
        files.len()
    );
    for path in &files {
        assert!(fs::metadata(path).expect("stat").len() <= 4096);
    }
    let stats = log.stats();
    assert_eq!((stats.appends, stats.records), (301, 340));
}

#[tokio::test]
async fn reopen_replays_after_a_checkpoint() {
    let dir = TempDir::new("reopen");
    let (log, _) = open(&dir, small_config());
    append_numbered(&log, 300).await;
    drop(log);

    let (log, report) = open(&dir, small_config());
    assert_eq!(report.records, 300);
    assert_eq!(report.first_position, Some(1));
    assert_eq!(report.last_position, 300);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(report.cut, None);
    assert_numbered(&replay(&log, 123), 124, 300);
    assert!(replay(&log, 300).is_empty());
    // A checkpoint beyond the log: records it includes are missing.
    assert!(matches!(
        log.replay_after(301),
        Err(LogError::Unavailable {
            checkpoint: 301,
            first_position: 1,
            last_position: 300
        })
    ));

    assert_eq!(log.append(1, b"next".to_vec()).await.expect("append"), 301);
    let tail = replay(&log, 300);
    assert_eq!(tail.len(), 1);
    assert_eq!(
        (tail[0].position, &tail[0].payload[..]),
        (301, &b"next"[..])
    );
}

/// 20 records of 60 bytes each, in one segment.
async fn write_twenty_fixed(dir: &TempDir) -> PathBuf {
    let (log, _) = open(dir, LogConfig::default());
    for i in 1..=20u64 {
        log.append(3, vec![i as u8; 40]).await.expect("append");
    }
    drop(log);
    let files = segment_files(dir);
    assert_eq!(files.len(), 1);
    files[0].clone()
}

#[tokio::test]
async fn torn_tail_is_cut_at_any_offset_inside_the_last_record() {
    let record_len = format::record_len(40) as u64;
    assert_eq!(record_len, 60);
    for chopped in [1, 2, 3, 4, 5, 8, 11, 12, 19, 20, 21, 30, 59] {
        let dir = TempDir::new("torn");
        let segment = write_twenty_fixed(&dir).await;
        chop(&segment, chopped);

        let (log, report) = open(&dir, LogConfig::default());
        assert_eq!(report.records, 19, "chopped {chopped}");
        assert_eq!(report.truncated_bytes, record_len - chopped);
        let cut = report.cut.expect("a cut");
        assert_eq!(cut.offset, SEGMENT_HEADER_LEN as u64 + 19 * record_len);
        let records = replay(&log, 0);
        assert_eq!(records.len(), 19);
        assert!(records
            .iter()
            .all(|r| r.payload == vec![r.position as u8; 40]));

        assert_eq!(log.append(3, vec![20; 40]).await.expect("append"), 20);
        drop(log);
        let (log, report) = open(&dir, LogConfig::default());
        assert_eq!((report.records, report.cut), (20, None));
        assert_eq!(replay(&log, 19)[0].payload, vec![20; 40]);
    }
}

#[tokio::test]
async fn flipped_bit_in_the_last_record_is_cut() {
    // In the payload, in the checksum, in the position, in the length.
    for offset_in_record in [59, 5, 10, 0] {
        let dir = TempDir::new("flip-last");
        let segment = write_twenty_fixed(&dir).await;
        let last_offset = SEGMENT_HEADER_LEN as u64 + 19 * 60;
        flip_bit(&segment, last_offset + offset_in_record);

        let (log, report) = open(&dir, LogConfig::default());
        assert_eq!(report.records, 19, "flipped at {offset_in_record}");
        assert_eq!(report.truncated_bytes, 60);
        assert_eq!(report.cut.expect("cut").offset, last_offset);
        assert_eq!(replay(&log, 0).len(), 19);
        assert_eq!(log.append(3, vec![20; 40]).await.expect("append"), 20);
    }
}

#[tokio::test]
async fn flipped_bit_in_a_middle_record_is_corrupt() {
    // In the payload, and in the length (so the frame swallows the rest).
    for offset_in_record in [30, 1] {
        let dir = TempDir::new("flip-middle");
        let segment = write_twenty_fixed(&dir).await;
        let bad_offset = SEGMENT_HEADER_LEN as u64 + 9 * 60;
        flip_bit(&segment, bad_offset + offset_in_record);

        match Log::open(dir.path(), LogConfig::default()) {
            Err(LogError::Corrupt {
                segment: corrupt_segment,
                offset,
                ..
            }) => {
                assert_eq!(corrupt_segment, segment);
                assert_eq!(offset, bad_offset);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // Nothing was cut: the file is as it was.
        assert_eq!(fs::metadata(&segment).expect("stat").len(), 24 + 20 * 60);
    }
}

#[tokio::test]
async fn damage_in_an_earlier_segment_is_corrupt_even_at_its_end() {
    let dir = TempDir::new("flip-earlier");
    let (log, _) = open(&dir, small_config());
    append_numbered(&log, 200).await;
    drop(log);
    let files = segment_files(&dir);
    assert!(files.len() >= 3);
    let first_len = fs::metadata(&files[0]).expect("stat").len();
    flip_bit(&files[0], first_len - 1);

    match Log::open(dir.path(), small_config()) {
        Err(LogError::Corrupt { segment, .. }) => assert_eq!(segment, files[0]),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A torn end of an earlier segment is damage too.
    flip_bit(&files[0], first_len - 1);
    chop(&files[0], 1);
    assert!(matches!(
        Log::open(dir.path(), small_config()),
        Err(LogError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn torn_segment_header_is_written_again() {
    let dir = TempDir::new("torn-header");
    let (log, _) = open(&dir, small_config());
    append_numbered(&log, 5).await;
    drop(log);
    let torn = dir.path().join(format::segment_file_name(6));
    fs::write(&torn, &format::encode_segment_header(6)[..10]).expect("write");

    let (log, report) = open(&dir, small_config());
    assert_eq!((report.records, report.truncated_bytes), (5, 10));
    assert_eq!(report.segments, 2);
    assert_eq!(log.append(1, b"six".to_vec()).await.expect("append"), 6);
    assert_eq!(replay(&log, 5)[0].payload, b"six");
    drop(log);
    let (_, report) = open(&dir, small_config());
    assert_eq!((report.records, report.cut), (6, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_fsyncs() {
    const TASKS: u64 = 64;
    const APPENDS_PER_TASK: u64 = 20;
    let dir = TempDir::new("group");
    // The writer waits (up to a minute, a safety net, not a clock the test
    // relies on) until a group is full: every group holds one append of
    // each task.
    let config = LogConfig {
        group_records_max: TASKS as usize,
        group_wait_us: 60_000_000,
        queue_records_max: TASKS as usize,
        ..LogConfig::default()
    };
    let (log, _) = open(&dir, config);
    let log = Arc::new(log);
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            let mut positions = Vec::new();
            for seq in 0..APPENDS_PER_TASK {
                let payload = format!("{task}:{seq}").into_bytes();
                positions.push(log.append(task as u32, payload).await.expect("append"));
            }
            positions
        }));
    }
    let mut written = std::collections::HashMap::new();
    for (task, handle) in tasks.into_iter().enumerate() {
        let positions = handle.await.expect("task");
        assert!(positions.windows(2).all(|pair| pair[0] < pair[1]));
        for (seq, position) in positions.into_iter().enumerate() {
            assert!(written
                .insert(position, format!("{task}:{seq}").into_bytes())
                .is_none());
        }
    }
    let stats = log.stats();
    let appends = TASKS * APPENDS_PER_TASK;
    assert_eq!(stats.appends, appends);
    assert!(
        stats.groups < appends,
        "groups {} appends {appends}",
        stats.groups
    );
    assert!(stats.group_records_max > 1);
    assert_eq!(stats.fsyncs, stats.groups);

    let records = replay(&log, 0);
    assert_eq!(records.len() as u64, appends);
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record.position, index as u64 + 1);
        assert_eq!(written.get(&record.position), Some(&record.payload));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_fsync_fails_the_group_and_every_later_append() {
    const WAITERS: usize = 8;
    let dir = TempDir::new("fsync-fault");
    let plan = Arc::new(FaultPlan::new());
    let config = LogConfig {
        group_records_max: WAITERS,
        group_wait_us: 60_000_000,
        queue_records_max: WAITERS,
        fault: Some(Arc::clone(&plan)),
        ..small_config()
    };
    let (log, _) = open(&dir, config);
    let log = Arc::new(log);
    // Eight acknowledged records: one batch fills one group at once.
    let first: Vec<(u32, Vec<u8>)> = (1..=8).map(|i| (shard_of(i), payload(i))).collect();
    assert_eq!(log.append_batch(first).await.expect("batch"), 1..9);

    plan.fail_sync_after(0);
    let mut tasks = Vec::new();
    for i in 0..WAITERS as u64 {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            log.append(1, payload(100 + i)).await
        }));
    }
    for task in tasks {
        match task.await.expect("task") {
            Err(LogError::Io { operation, .. }) => assert_eq!(operation, "fsync segment"),
            other => panic!("expected Io, got {other:?}"),
        }
    }
    assert!(matches!(
        log.append(1, b"late".to_vec()).await,
        Err(LogError::Failed { .. })
    ));
    assert!(log.failure().is_some());
    assert_eq!(log.last_position(), 8);
    // Reads do not need the writer.
    assert_numbered(&replay(&log, 0), 1, 8);
    drop(log);

    let (log, report) = open(&dir, small_config());
    assert_eq!((report.records, report.last_position), (8, 8));
    assert_numbered(&replay(&log, 0), 1, 8);
    assert_eq!(log.append(1, b"after".to_vec()).await.expect("append"), 9);
}

#[tokio::test]
async fn failing_write_fails_the_log_and_recovers_acknowledged_records() {
    let dir = TempDir::new("write-fault");
    let plan = Arc::new(FaultPlan::new());
    let config = LogConfig {
        fault: Some(Arc::clone(&plan)),
        ..small_config()
    };
    let (log, _) = open(&dir, config);
    append_numbered(&log, 50).await;
    plan.fail_write_after(0);
    let batch: Vec<(u32, Vec<u8>)> = (51..=60).map(|i| (shard_of(i), payload(i))).collect();
    match log.append_batch(batch).await {
        Err(LogError::Io { operation, .. }) => assert_eq!(operation, "write segment"),
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(matches!(
        log.append(1, payload(51)).await,
        Err(LogError::Failed { .. })
    ));
    drop(log);

    let (log, report) = open(&dir, small_config());
    assert_eq!(report.last_position, 50);
    assert_numbered(&replay(&log, 0), 1, 50);
}

#[tokio::test]
async fn failing_write_during_rotation_leaves_no_new_segment() {
    let dir = TempDir::new("rotation-fault");
    let plan = Arc::new(FaultPlan::new());
    let config = LogConfig {
        fault: Some(Arc::clone(&plan)),
        ..small_config()
    };
    let (log, _) = open(&dir, config);
    append_numbered(&log, 10).await;
    let segments_before = segment_files(&dir);
    // A batch bigger than a segment: its first part goes to the current
    // segment (write 1, sync), the new segment's header is write 2.
    plan.fail_write_after(1);
    let batch: Vec<(u32, Vec<u8>)> = (11..=80).map(|i| (shard_of(i), payload(i))).collect();
    assert!(matches!(
        log.append_batch(batch).await,
        Err(LogError::Io { .. })
    ));
    drop(log);
    assert_eq!(segment_files(&dir), segments_before);
    let (log, report) = open(&dir, small_config());
    assert_eq!(report.last_position, 10);
    assert_numbered(&replay(&log, 0), 1, 10);
}

#[tokio::test]
async fn truncate_before_removes_only_covered_segments() {
    let dir = TempDir::new("truncate");
    let (log, _) = open(&dir, small_config());
    append_numbered(&log, 300).await;
    let firsts: Vec<Position> = segment::list_segments(dir.path())
        .expect("list")
        .into_iter()
        .map(|(first, _)| first)
        .collect();
    assert!(firsts.len() >= 4);
    // A checkpoint inside the third segment: the first two are covered.
    let checkpoint = firsts[2] + 1;
    let report = log.truncate_before(checkpoint + 1).expect("truncate");
    assert_eq!(report.segments_removed, 2);
    assert!(report.bytes_removed > 0);
    let left: Vec<Position> = segment::list_segments(dir.path())
        .expect("list")
        .into_iter()
        .map(|(first, _)| first)
        .collect();
    assert_eq!(left, firsts[2..]);
    assert_numbered(&replay(&log, checkpoint), checkpoint + 1, 300);
    // Replaying from before the oldest segment would miss records.
    assert!(matches!(
        log.replay_after(firsts[2] - 2),
        Err(LogError::Unavailable { .. })
    ));
    assert_eq!(
        replay(&log, firsts[2] - 1).len() as u64,
        300 - firsts[2] + 1
    );

    // Exactly at a segment boundary: the segment before it is covered.
    let report = log.truncate_before(firsts[3]).expect("truncate");
    assert_eq!(report.segments_removed, 1);
    // Never the active segment, whatever the position.
    log.truncate_before(Position::MAX).expect("truncate");
    assert_eq!(segment_files(&dir).len(), 1);
    drop(log);

    let (log, report) = open(&dir, small_config());
    assert_eq!(report.last_position, 300);
    assert_eq!(report.first_position, Some(*firsts.last().expect("some")));
    assert_eq!(log.append(1, b"more".to_vec()).await.expect("append"), 301);
}

#[tokio::test]
async fn bounds_are_enforced() {
    let dir = TempDir::new("bounds");
    let (log, _) = open(&dir, small_config());
    assert!(matches!(
        log.append(1, vec![0; 513]).await,
        Err(LogError::RecordTooLarge { bytes: 513, .. })
    ));
    assert!(matches!(
        log.append_batch(vec![(1, vec![0; 1]); 257]).await,
        Err(LogError::BatchTooLarge { records: 257, .. })
    ));
    assert!(matches!(
        log.append_batch(Vec::new()).await,
        Err(LogError::EmptyBatch)
    ));
    assert_eq!(log.append(1, vec![0; 512]).await.expect("append"), 1);
    assert!(log.failure().is_none());

    let bad = LogConfig {
        segment_bytes_max: 100,
        ..small_config()
    };
    assert!(matches!(
        Log::open(dir.path(), bad),
        Err(LogError::InvalidConfig {
            setting: "segment_bytes_max",
            ..
        })
    ));
}

#[tokio::test]
async fn lowering_record_bytes_max_keeps_larger_records() {
    let dir = TempDir::new("lowered");
    let (log, _) = open(&dir, small_config());
    log.append(1, vec![1; 500]).await.expect("append");
    log.append(1, vec![2; 500]).await.expect("append");
    drop(log);
    let lowered = LogConfig {
        record_bytes_max: 100,
        ..small_config()
    };
    let (log, report) = open(&dir, lowered);
    assert_eq!((report.records, report.cut), (2, None));
    let records = replay(&log, 0);
    assert_eq!(records[1].payload, vec![2; 500]);
    assert!(matches!(
        log.append(1, vec![3; 101]).await,
        Err(LogError::RecordTooLarge { .. })
    ));
}

/// Backpressure: a queue of four records still serves many appenders.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_queue_applies_backpressure_without_losing_appends() {
    let dir = TempDir::new("queue");
    let config = LogConfig {
        group_records_max: 4,
        queue_records_max: 4,
        ..small_config()
    };
    let (log, _) = open(&dir, config);
    let log = Arc::new(log);
    let tasks: Vec<_> = (0..32u32)
        .map(|task| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut positions = Vec::new();
                for _ in 0..10 {
                    positions.push(log.append(task, vec![task as u8; 8]).await.expect("append"));
                }
                positions
            })
        })
        .collect();
    let mut all = HashSet::new();
    for task in tasks {
        for position in task.await.expect("task") {
            assert!(all.insert(position));
        }
    }
    assert_eq!(all.len(), 320);
    assert!(log.stats().group_records_max <= 4);
    assert_eq!(replay(&log, 0).len(), 320);
}

/// Prints group-commit numbers for 64 appenders of 1 KiB; asserts only
/// correctness: speed is measured by benchmarks, never asserted in tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_report() {
    const TASKS: usize = 64;
    const APPENDS_PER_TASK: usize = 50;
    let dir = TempDir::new("report");
    let (log, _) = open(&dir, LogConfig::default());
    let log = Arc::new(log);
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                for _ in 0..APPENDS_PER_TASK {
                    log.append(task as u32, vec![7; 1024])
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let elapsed = started.elapsed();
    let stats = log.stats();
    assert_eq!(stats.records, (TASKS * APPENDS_PER_TASK) as u64);
    println!(
        "log: {} appends in {:?} ({:.0}/s), {} fsyncs, {:.1} records per group, max {}",
        stats.appends,
        elapsed,
        stats.appends as f64 / elapsed.as_secs_f64(),
        stats.fsyncs,
        stats.records as f64 / stats.groups as f64,
        stats.group_records_max,
    );
}

#[tokio::test]
async fn the_enqueued_position_is_where_the_last_queued_record_lands() {
    let dir = TempDir::new("log-enqueued-position");
    {
        let (log, _) = open(&dir, small_config());
        append_numbered(&log, 5).await;
        assert_eq!(log.enqueued_position(), 5);
        let mut pending = Vec::new();
        for i in 6..=9 {
            let records = vec![(shard_of(i), payload(i)), (shard_of(i), payload(i))];
            pending.push(log.enqueue_batch(records).await.expect("enqueue"));
            // Known before the sync, in queue order.
            assert_eq!(log.enqueued_position(), 5 + (i - 5) * 2);
        }
        let mut last = 0;
        for batch in pending {
            last = batch.durable().await.expect("durable").end - 1;
        }
        assert_eq!(last, log.enqueued_position());
        assert_eq!(log.last_position(), log.enqueued_position());
    }
    let (log, _) = open(&dir, small_config());
    assert_eq!(log.enqueued_position(), 13, "reopened at the last record");
}

#[tokio::test]
async fn waiting_for_a_synced_position_ends_with_its_sync_or_the_failure() {
    let dir = TempDir::new("log-wait-synced");
    let (log, _) = open(&dir, small_config());
    append_numbered(&log, 3).await;
    log.wait_synced(3).await.expect("already synced");
    let pending = log
        .enqueue_batch(vec![(1, payload(4)), (2, payload(5))])
        .await
        .expect("enqueue");
    log.wait_synced(log.enqueued_position())
        .await
        .expect("synced in its group");
    assert!(log.last_position() >= 5);
    pending.durable().await.expect("durable");
    drop(log);
    let plan = Arc::new(FaultPlan::new());
    plan.fail_sync_after(0);
    let config = LogConfig {
        fault: Some(Arc::clone(&plan)),
        ..small_config()
    };
    let (log, _) = open(&dir, config);
    let _pending = log
        .enqueue_batch(vec![(1, payload(6))])
        .await
        .expect("enqueue");
    let error = log.wait_synced(6).await.unwrap_err();
    assert!(matches!(error, LogError::Failed { .. }), "{error}");
}
