//! The queryable aggregates: per (project, experiment), per cell (variation ×
//! breakdown group) and per time bucket, exact counters and a distinct-count
//! sketch. Pure data structure; the segment actor owns one `SegmentStore`.

use super::contribution::{ActiveCell, Entry, Metric};
use super::sketch::Sketch;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The counters of one conversion key.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyCounters {
    pub unique_conversions: i64,
    pub total_conversions: i64,
    pub sessions_with_conversion: i64,
    pub value_sum_micros: i128,
    pub value_sum_squares_micros: i128,
}

/// The exact counters of one cell in one bucket (or summed over many).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub visitors: i64,
    pub conflicts: i64,
    pub sessions: i64,
    pub bounced_sessions: i64,
    pub duration_ms_sum: i64,
    pub pageviews_sum: i64,
    pub keys: BTreeMap<Arc<str>, KeyCounters>,
}

impl Counters {
    fn apply(&mut self, metric: &Metric, amount: i128) {
        // Per-visitor amounts are small; only value sums need 128 bits.
        let small = || i64::try_from(amount).expect("count deltas fit in i64");
        match metric {
            Metric::Visitors => self.visitors += small(),
            Metric::Conflicts => self.conflicts += small(),
            Metric::DecisionsNaming(_) => {
                unreachable!("kept per experiment by ExperimentAggregates::apply_entry")
            }
            Metric::Sessions => self.sessions += small(),
            Metric::BouncedSessions => self.bounced_sessions += small(),
            Metric::DurationMsSum => self.duration_ms_sum += small(),
            Metric::PageviewsSum => self.pageviews_sum += small(),
            Metric::UniqueConversions(key) => self.key(key).unique_conversions += small(),
            Metric::TotalConversions(key) => self.key(key).total_conversions += small(),
            Metric::SessionsWithConversion(key) => {
                self.key(key).sessions_with_conversion += small()
            }
            Metric::ValueSumMicros(key) => self.key(key).value_sum_micros += amount,
            Metric::ValueSumSquaresMicros(key) => {
                // Wrapping keeps add-then-retract exact even if a transient
                // partial sum would not fit.
                let counter = &mut self.key(key).value_sum_squares_micros;
                *counter = counter.wrapping_add(amount);
            }
        }
    }

    fn key(&mut self, key: &Arc<str>) -> &mut KeyCounters {
        if !self.keys.contains_key(key) {
            self.keys.insert(Arc::clone(key), KeyCounters::default());
        }
        self.keys.get_mut(key).expect("inserted above")
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Counters) {
        self.visitors += other.visitors;
        self.conflicts += other.conflicts;
        self.sessions += other.sessions;
        self.bounced_sessions += other.bounced_sessions;
        self.duration_ms_sum += other.duration_ms_sum;
        self.pageviews_sum += other.pageviews_sum;
        for (key, counters) in &other.keys {
            let mine = self.key(key);
            mine.unique_conversions += counters.unique_conversions;
            mine.total_conversions += counters.total_conversions;
            mine.sessions_with_conversion += counters.sessions_with_conversion;
            mine.value_sum_micros += counters.value_sum_micros;
            mine.value_sum_squares_micros = mine
                .value_sum_squares_micros
                .wrapping_add(counters.value_sum_squares_micros);
        }
    }

    /// The counters of `key`, zero if the key never converted here.
    pub fn key_counters(&self, key: &str) -> KeyCounters {
        self.keys.get(key).cloned().unwrap_or_default()
    }
}

/// Which visitors a cell counts: all of a variation, or those with one
/// value of one breakdown attribute.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Group {
    Total,
    Breakdown {
        attribute: Arc<str>,
        value: Arc<str>,
    },
}

#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct CellKey {
    pub variation: Arc<str>,
    pub group: Group,
}

/// One cell in one bucket.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Bucket {
    pub counters: Counters,
    pub sketch: Option<Sketch>,
}

/// Roll-up size: every cell also keeps one bucket per day, so a query over
/// whole days unions at most one sketch per day instead of one per base
/// bucket (24 with hourly buckets).
pub const ROLLUP_MS: i64 = 24 * 3_600_000;

/// All aggregates of one experiment.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExperimentAggregates {
    pub precision: u8,
    /// Per cell, the base buckets (the project's `bucket_ms`).
    pub cells: HashMap<CellKey, BTreeMap<i64, Bucket>>,
    /// Per cell, day buckets holding the sum of their base buckets. Empty
    /// when the base bucket is a day already.
    pub rollups: HashMap<CellKey, BTreeMap<i64, Bucket>>,
    /// Whether `rollups` is kept (base bucket shorter than a day).
    pub rolled_up: bool,
    pub keys: BTreeSet<Arc<str>>,
    /// Decisions naming each variation, over all time. A variation exists
    /// while this is positive.
    pub decisions_by_variation: BTreeMap<Arc<str>, i64>,
}

impl ExperimentAggregates {
    fn new(precision: u8, bucket_ms: i64) -> Self {
        ExperimentAggregates {
            precision,
            cells: HashMap::new(),
            rollups: HashMap::new(),
            rolled_up: bucket_ms < ROLLUP_MS,
            keys: BTreeSet::new(),
            decisions_by_variation: BTreeMap::new(),
        }
    }

    /// The base bucket and, when rolled up, the day bucket a change goes to.
    fn buckets(&mut self, key: CellKey, bucket_ms: i64) -> impl Iterator<Item = &mut Bucket> {
        let empty = || Bucket {
            counters: Counters::default(),
            sketch: None,
        };
        let rollup = if self.rolled_up {
            let day_ms = bucket_ms.div_euclid(ROLLUP_MS) * ROLLUP_MS;
            Some(
                self.rollups
                    .entry(key.clone())
                    .or_default()
                    .entry(day_ms)
                    .or_insert_with(empty),
            )
        } else {
            None
        };
        let base = self
            .cells
            .entry(key)
            .or_default()
            .entry(bucket_ms)
            .or_insert_with(empty);
        std::iter::once(base).chain(rollup)
    }

    fn apply_entry(&mut self, entry: &Entry) {
        if let Metric::DecisionsNaming(variation) = &entry.metric {
            let count = self
                .decisions_by_variation
                .entry(Arc::clone(variation))
                .or_insert(0);
            *count += i64::try_from(entry.amount).expect("decision count deltas fit in i64");
            assert!(*count >= 0, "retractions never exceed what was added");
            if *count == 0 {
                self.decisions_by_variation.remove(variation);
            }
            return;
        }
        if let Some(key) = metric_key(&entry.metric) {
            if !self.keys.contains(key) {
                self.keys.insert(Arc::clone(key));
            }
        }
        for group in groups_of(&entry.assignment.breakdown) {
            let cell = CellKey {
                variation: Arc::clone(&entry.assignment.variation),
                group,
            };
            for bucket in self.buckets(cell, entry.bucket_ms) {
                bucket.counters.apply(&entry.metric, entry.amount);
            }
        }
    }

    fn apply_active(&mut self, cell: &ActiveCell, visitor_hash: u64) {
        let precision = self.precision;
        for group in groups_of(&cell.assignment.breakdown) {
            let key = CellKey {
                variation: Arc::clone(&cell.assignment.variation),
                group,
            };
            for bucket in self.buckets(key, cell.bucket_ms) {
                bucket
                    .sketch
                    .get_or_insert_with(|| Sketch::new(precision))
                    .insert(visitor_hash);
            }
        }
    }

    /// Variations named by any decision, sorted. Independent of arrival
    /// order, unlike the set of cells (a sketch keeps cells of a variation a
    /// visitor left after a late, earlier decision).
    pub fn variations(&self) -> Vec<Arc<str>> {
        self.decisions_by_variation.keys().cloned().collect()
    }

    /// Earliest bucket holding anything.
    pub fn first_bucket_ms(&self) -> Option<i64> {
        self.cells
            .values()
            .filter_map(|buckets| buckets.keys().next().copied())
            .min()
    }

    /// Sums the counters and unions the sketches of `cell` over
    /// [from_ms, to_ms).
    pub fn summarise(
        &self,
        cell: &CellKey,
        from_ms: i64,
        to_ms: i64,
    ) -> (Counters, Option<Sketch>) {
        let mut summary = Summary::default();
        let Some(buckets) = self.cells.get(cell) else {
            return (summary.counters, summary.sketch);
        };
        let first_day_ms = (from_ms + ROLLUP_MS - 1).div_euclid(ROLLUP_MS) * ROLLUP_MS;
        let last_day_ms = to_ms.div_euclid(ROLLUP_MS) * ROLLUP_MS;
        if !self.rolled_up || first_day_ms >= last_day_ms {
            buckets
                .range(from_ms..to_ms)
                .for_each(|(_, bucket)| summary.add(bucket));
            return (summary.counters, summary.sketch);
        }
        // Whole days from the roll-ups, the ragged edges from base buckets.
        buckets
            .range(from_ms..first_day_ms)
            .for_each(|(_, bucket)| summary.add(bucket));
        if let Some(days) = self.rollups.get(cell) {
            days.range(first_day_ms..last_day_ms)
                .for_each(|(_, bucket)| summary.add(bucket));
        }
        buckets
            .range(last_day_ms..to_ms)
            .for_each(|(_, bucket)| summary.add(bucket));
        (summary.counters, summary.sketch)
    }

    /// Drops whole days that start before the day of `before_ms`
    /// (retention). Whole days, so a day roll-up never covers a dropped base
    /// bucket.
    pub fn expire(&mut self, before_ms: i64) {
        let keep_from_ms = before_ms.div_euclid(ROLLUP_MS) * ROLLUP_MS;
        for levels in [&mut self.cells, &mut self.rollups] {
            for buckets in levels.values_mut() {
                *buckets = buckets.split_off(&keep_from_ms);
            }
            levels.retain(|_, buckets| !buckets.is_empty());
        }
    }
}

/// Counters and sketch union accumulated over buckets.
#[derive(Default)]
struct Summary {
    counters: Counters,
    sketch: Option<Sketch>,
}

impl Summary {
    fn add(&mut self, bucket: &Bucket) {
        self.counters.add(&bucket.counters);
        if let Some(bucket_sketch) = &bucket.sketch {
            match &mut self.sketch {
                Some(union) => union.merge(bucket_sketch),
                None => self.sketch = Some(bucket_sketch.clone()),
            }
        }
    }
}

fn metric_key(metric: &Metric) -> Option<&Arc<str>> {
    match metric {
        Metric::UniqueConversions(key)
        | Metric::TotalConversions(key)
        | Metric::ValueSumMicros(key)
        | Metric::ValueSumSquaresMicros(key)
        | Metric::SessionsWithConversion(key) => Some(key),
        _ => None,
    }
}

/// Each contribution counts in the variation's total and in one group per
/// breakdown attribute.
fn groups_of(breakdown: &[(Arc<str>, Arc<str>)]) -> impl Iterator<Item = Group> + '_ {
    std::iter::once(Group::Total).chain(breakdown.iter().map(|(attribute, value)| {
        Group::Breakdown {
            attribute: Arc::clone(attribute),
            value: Arc::clone(value),
        }
    }))
}

/// A batch of changes from one session actor for one project.
#[derive(Debug, Clone, Default)]
pub struct SegmentBatch {
    pub project: Arc<str>,
    pub precision: u8,
    pub bucket_ms: i64,
    pub entries: Vec<Entry>,
    pub active: Vec<(ActiveCell, u64)>,
}

impl SegmentBatch {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.active.is_empty()
    }
}

/// Aggregates of every experiment a segment actor is responsible for.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SegmentStore {
    experiments: HashMap<(Arc<str>, Arc<str>), ExperimentAggregates>,
}

impl SegmentStore {
    pub fn apply(&mut self, batch: &SegmentBatch) {
        for entry in &batch.entries {
            self.experiment_mut(
                &batch.project,
                &entry.experiment,
                (batch.precision, batch.bucket_ms),
            )
            .apply_entry(entry);
        }
        for (cell, visitor_hash) in &batch.active {
            self.experiment_mut(
                &batch.project,
                &cell.experiment,
                (batch.precision, batch.bucket_ms),
            )
            .apply_active(cell, *visitor_hash);
        }
    }

    fn experiment_mut(
        &mut self,
        project: &Arc<str>,
        experiment: &Arc<str>,
        (precision, bucket_ms): (u8, i64),
    ) -> &mut ExperimentAggregates {
        self.experiments
            .entry((Arc::clone(project), Arc::clone(experiment)))
            .or_insert_with(|| ExperimentAggregates::new(precision, bucket_ms))
    }

    pub fn experiment(&self, project: &str, experiment: &str) -> Option<&ExperimentAggregates> {
        // Borrowed-tuple lookups need owned keys with HashMap; experiments
        // are few, so building the key is cheap next to a query.
        self.experiments
            .get(&(Arc::from(project), Arc::from(experiment)))
    }

    /// Experiments of a project, sorted.
    pub fn experiments_of(&self, project: &str) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self
            .experiments
            .keys()
            .filter(|(name, _)| **name == *project)
            .map(|(_, experiment)| Arc::clone(experiment))
            .collect();
        names.sort();
        names
    }

    pub fn cell_count(&self) -> usize {
        self.experiments
            .values()
            .flat_map(|experiment| experiment.cells.values())
            .map(BTreeMap::len)
            .sum()
    }

    /// Drops a project's buckets older than its retention.
    pub fn expire(&mut self, project: &str, before_ms: i64) {
        for ((name, _), experiment) in self.experiments.iter_mut() {
            if **name == *project {
                experiment.expire(before_ms);
            }
        }
    }
}
