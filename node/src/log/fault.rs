//! The fault-injection hook: make the Nth write or fsync of segment files
//! fail, to test the disk-error path without a broken disk.
//!
//! A `FaultPlan` is shared (`Arc`) between a test and `LogConfig::fault`.
//! `delay_syncs(ms)` makes every sync slower instead (a slow disk).
//! Arm it with `fail_write_after(n)` / `fail_sync_after(n)`: after `n` more
//! successful operations of that kind, the next one fails once with an
//! `io::Error` (kind `Other`). A failing write first writes half of its bytes,
//! as a real short write before `ENOSPC` would. Counting covers every write
//! and `sync_data` the log makes on segment files (segment headers
//! included), from the moment of arming. Without a plan the log pays one
//! `Option` check per operation.
//!
//! `delay_syncs_ms(ms)` makes every sync wait `ms` first: a slow disk, for
//! the chaos tests (the log's one writer thread sleeps, so acknowledgements
//! slow down and batches queue up, as on a disk whose fsync stalls).
//! `hold_syncs()` stalls every sync until `release_syncs()`: a disk that
//! has not yet made anything durable, for tests that must observe a write
//! in flight.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

const DISARMED: u64 = u64::MAX;

#[derive(Debug)]
pub struct FaultPlan {
    writes_before_failure: AtomicU64,
    syncs_before_failure: AtomicU64,
    sync_delay_ms: AtomicU64,
    /// While true, every sync waits on `released`.
    syncs_held: Mutex<bool>,
    released: Condvar,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            writes_before_failure: AtomicU64::new(DISARMED),
            syncs_before_failure: AtomicU64::new(DISARMED),
            sync_delay_ms: AtomicU64::new(0),
            syncs_held: Mutex::new(false),
            released: Condvar::new(),
        }
    }
}

impl FaultPlan {
    pub fn new() -> Self {
        Self::default()
    }

    /// After `successes` more writes, the next write fails.
    pub fn fail_write_after(&self, successes: u64) {
        assert!(successes < DISARMED);
        self.writes_before_failure
            .store(successes, Ordering::SeqCst);
    }

    /// After `successes` more syncs, the next sync fails.
    pub fn fail_sync_after(&self, successes: u64) {
        assert!(successes < DISARMED);
        self.syncs_before_failure.store(successes, Ordering::SeqCst);
    }

    /// Every later sync first waits `delay_ms` (0: no delay).
    pub fn delay_syncs_ms(&self, delay_ms: u64) {
        self.sync_delay_ms.store(delay_ms, Ordering::SeqCst);
    }

    /// Every later sync waits until [`Self::release_syncs`]. Release before
    /// dropping the log: closing it waits for its writer thread.
    pub fn hold_syncs(&self) {
        *self
            .syncs_held
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
    }

    pub fn release_syncs(&self) {
        *self
            .syncs_held
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = false;
        self.released.notify_all();
    }

    /// Called before each write; `Err` means: write half, then fail.
    pub(super) fn on_write(&self) -> io::Result<()> {
        countdown(&self.writes_before_failure, "write")
    }

    /// Called before each sync; `Err` means: fail without syncing.
    pub(super) fn on_sync(&self) -> io::Result<()> {
        let delay_ms = self.sync_delay_ms.load(Ordering::SeqCst);
        if delay_ms > 0 {
            // Only the log's writer thread syncs, so this blocks no task.
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        }
        let mut held = self
            .syncs_held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *held {
            // Only the log's writer thread syncs, so this blocks no task.
            held = self
                .released
                .wait(held)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(held);
        countdown(&self.syncs_before_failure, "fsync")
    }
}

fn countdown(counter: &AtomicU64, operation: &str) -> io::Result<()> {
    let previous = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
        DISARMED => None,
        0 => Some(DISARMED),
        left => Some(left - 1),
    });
    match previous {
        Ok(0) => Err(io::Error::other(format!("injected {operation} failure"))),
        _ => Ok(()),
    }
}
