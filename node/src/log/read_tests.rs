//! Tests of the located path: `enqueue_with_callback` reports where each
//! record landed, `RecordReader::read_at` reads it back there, and
//! `Replay::last_offset` agrees with both.

use super::tests::TempDir;
use super::*;

/// Segments of 1 KiB, so forty records of up to 200 bytes rotate often.
fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1024,
        record_bytes_max: 256,
        group_records_max: 64,
        group_bytes_max: 64 * 1024,
        queue_records_max: 256,
        queue_bytes_max: 1024 * 1024,
        ..LogConfig::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    (0..(i * 37 % 200)).map(|j| (i + j) as u8).collect()
}

/// Enqueues `batch` with a callback and waits for what it was called with.
async fn append_located(log: &Log, batch: Vec<(u32, Vec<u8>)>) -> Result<Appended, LogError> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let callback: AppendCallback = Box::new(move |result| {
        let _ = sender.send(result);
    });
    log.enqueue_with_callback(batch, callback).await?;
    receiver.await.expect("the writer calls every callback")
}

#[tokio::test]
async fn callback_offsets_read_back_and_match_replay() {
    let dir = TempDir::new("located");
    let (log, _) = Log::open(dir.path(), small_config()).expect("open");
    let mut locations = Vec::new();
    for batch_start in (1..=40u64).step_by(5) {
        let batch: Vec<(u32, Vec<u8>)> = (batch_start..batch_start + 5)
            .map(|i| (i as u32 % 3, payload(i)))
            .collect();
        let appended = append_located(&log, batch).await.expect("append");
        assert_eq!(appended.positions, batch_start..batch_start + 5);
        assert_eq!(appended.offsets.len(), 5);
        locations.extend(appended.positions.clone().zip(appended.offsets));
    }
    assert!(
        log.segment_first_positions().len() > 3,
        "the test needs several segments"
    );

    let mut reader = log.record_reader();
    for (position, offset) in &locations {
        let record = reader.read_at(*position, *offset).expect("read");
        assert_eq!(record.position, *position);
        assert_eq!(record.shard, *position as u32 % 3);
        assert_eq!(record.payload, payload(*position));
    }

    let mut replay = log.replay_after(0).expect("replay");
    let mut replayed = Vec::new();
    while let Some(record) = replay.next() {
        let record = record.expect("replay reads");
        replayed.push((record.position, replay.last_offset().expect("an offset")));
    }
    assert_eq!(replayed, locations);
}

#[tokio::test]
async fn a_wrong_location_is_refused_never_misread() {
    let dir = TempDir::new("wrong-location");
    let (log, _) = Log::open(dir.path(), small_config()).expect("open");
    let batch: Vec<(u32, Vec<u8>)> = (1..=3).map(|i| (0, payload(i))).collect();
    let appended = append_located(&log, batch).await.expect("append");
    let mut reader = log.record_reader();

    // Record 2's offset asked as position 3: the stored position differs.
    match reader.read_at(3, appended.offsets[1]) {
        Err(LogError::Corrupt { damage, .. }) => assert_eq!(
            damage,
            Damage::PositionOutOfOrder {
                expected: 3,
                found: 2
            }
        ),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // An offset inside a record: its bytes are no valid frame.
    assert!(matches!(
        reader.read_at(2, appended.offsets[1] + 1),
        Err(LogError::Corrupt { .. })
    ));
    // Positions the log does not hold (0 is before every record).
    for position in [0, 4] {
        assert!(matches!(
            reader.read_at(position, appended.offsets[0]),
            Err(LogError::RecordMissing {
                first_position: 1,
                last_position: 3,
                ..
            })
        ));
    }
}

#[tokio::test]
async fn a_failed_write_calls_the_callback_with_the_error() {
    let dir = TempDir::new("located-fault");
    let plan = Arc::new(FaultPlan::new());
    let config = LogConfig {
        fault: Some(Arc::clone(&plan)),
        ..small_config()
    };
    let (log, _) = Log::open(dir.path(), config).expect("open");
    append_located(&log, vec![(0, payload(1))])
        .await
        .expect("append");
    plan.fail_sync_after(0);
    assert!(matches!(
        append_located(&log, vec![(0, payload(2))]).await,
        Err(LogError::Io {
            operation: "fsync segment",
            ..
        })
    ));
    assert!(matches!(
        append_located(&log, vec![(0, payload(3))]).await,
        Err(LogError::Failed { .. })
    ));
}
