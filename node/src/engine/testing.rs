//! Unit-test helpers: a real engine (log, checkpoints, actors) in a
//! directory of its own, on a manual clock.

use super::shard::Outcome;
use super::{durability, Engine, EngineConfig};
use crate::clock::{ManualClock, SharedClock};
use crate::log::LogConfig;
use crate::project::SettingsPatch;
use sessiondb_protocol as wire;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// 2025-11-20 10:30 UTC.
pub const NOW_MS: i64 = 1_763_634_600_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const PROJECT: &str = "shop";
pub const SHARDS: u32 = 8;

/// An engine and its directory.
pub struct TestEngine {
    pub engine: Engine,
    pub clock: Arc<ManualClock>,
    directory: Directory,
}

/// A directory of its own, removed on drop.
struct Directory(PathBuf);

impl Drop for Directory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestEngine {
    pub async fn open(label: &str) -> TestEngine {
        Self::open_with(label, LogConfig::default()).await
    }

    pub async fn open_with(label: &str, log: LogConfig) -> TestEngine {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let directory = std::env::temp_dir().join(format!(
            "sessiondb-engine-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&directory);
        let clock = Arc::new(ManualClock::new(NOW_MS));
        let engine = open_engine(&directory, &clock, log).await;
        TestEngine {
            engine,
            clock,
            directory: Directory(directory),
        }
    }

    /// Stops the engine, drops it (its stores unlock) and recovers it from
    /// its directory.
    pub async fn reopen(self) -> TestEngine {
        let TestEngine {
            engine,
            clock,
            directory,
        } = self;
        engine.shutdown();
        drop(engine);
        let engine = open_engine(&directory.0, &clock, LogConfig::default()).await;
        TestEngine {
            engine,
            clock,
            directory,
        }
    }

    /// Creates `PROJECT` with `browser` as a breakdown attribute.
    pub async fn with_project(self) -> TestEngine {
        let patch = SettingsPatch {
            breakdown_attributes: Some(vec!["browser".to_string()]),
            ..SettingsPatch::default()
        };
        self.engine
            .create_project(PROJECT, &patch)
            .await
            .expect("the project is created");
        self
    }

    /// Validates and ingests `events`.
    pub async fn send(&self, events: &[wire::Event]) -> Vec<Outcome> {
        let validated = events
            .iter()
            .map(|event| self.engine.validate(event.clone()))
            .collect();
        self.engine
            .ingest(validated)
            .await
            .expect("the log takes writes")
    }
}

async fn open_engine(
    directory: &std::path::Path,
    clock: &Arc<ManualClock>,
    log: LogConfig,
) -> Engine {
    let config = EngineConfig {
        shards: SHARDS,
        aggregate_actors: 2,
        ..EngineConfig::default()
    };
    let clock: SharedClock = Arc::clone(clock) as SharedClock;
    let (engine, _) = durability::open(config, clock, directory, log)
        .await
        .expect("the engine opens");
    engine
}

/// A page view of `visitor` in `PROJECT`, `minutes_ago` before `NOW_MS`.
pub fn pageview(id: &str, visitor: &str, minutes_ago: i64) -> wire::Event {
    wire::Event {
        id: id.to_string(),
        project: PROJECT.to_string(),
        visitor: visitor.to_string(),
        ts: wire::Timestamp::Milliseconds(NOW_MS - minutes_ago * 60_000),
        event_type: wire::EventType::Pageview,
        key: None,
        value: None,
        attributes: BTreeMap::from([("browser".to_string(), "firefox".to_string())]),
        decisions: Vec::new(),
    }
}

/// `visitor` exposed to `variation` of `experiment`.
pub fn exposure(id: &str, visitor: &str, experiment: &str, variation: &str) -> wire::Event {
    wire::Event {
        event_type: wire::EventType::Decision,
        decisions: vec![wire::Decision {
            experiment: experiment.to_string(),
            variation: variation.to_string(),
        }],
        ..pageview(id, visitor, 1)
    }
}
