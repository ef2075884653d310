//! The queryable aggregates: per (project, experiment), per cell (variation ×
//! breakdown group) and per time bucket, exact counters and a distinct-count
//! sketch. Pure data structure; the aggregate actor owns one `AggregateStore`.

use super::contribution::{ActiveCell, Assignment, Entry, Metric};
use super::sketch::{Sketch, SketchUnion};
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
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Bucket {
    pub counters: Counters,
    pub sketch: Option<Sketch>,
}

impl Bucket {
    /// Adds `other` into this bucket: counters add, sketches union.
    fn add(&mut self, other: &Bucket) {
        self.counters.add(&other.counters);
        match (&mut self.sketch, &other.sketch) {
            (Some(sketch), Some(other)) => sketch.merge(other),
            (None, Some(other)) => self.sketch = Some(other.clone()),
            (_, None) => {}
        }
    }
}

/// Roll-up size: every cell also keeps one bucket per day, so a query over
/// whole days unions at most one sketch per day instead of one per base
/// bucket (24 with hourly buckets).
pub const ROLLUP_MS: i64 = 24 * 3_600_000;

/// One cell's buckets.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CellSeries {
    pub key: CellKey,
    /// Base buckets (the project's `bucket_ms`).
    pub base: BTreeMap<i64, Bucket>,
    /// Day buckets holding the sum of their base buckets; empty when the
    /// base bucket is a day already.
    pub rollup: BTreeMap<i64, Bucket>,
    /// The sum of every base bucket held, so the most common query — an
    /// experiment over all its data — reads one sketch per cell instead of
    /// one per day. Derived, so not encoded: `None` until
    /// `ExperimentAggregates::reindex` builds it, and while `None` queries
    /// sum the buckets instead.
    #[serde(skip)]
    pub whole: Option<Bucket>,
}

impl CellSeries {
    /// Rebuilds `whole` from the day roll-ups (or from the base buckets when
    /// they are days already).
    fn rebuild_whole(&mut self, rolled_up: bool) {
        let source = if rolled_up { &self.rollup } else { &self.base };
        let mut whole = Bucket::default();
        for bucket in source.values() {
            whole.add(bucket);
        }
        self.whole = Some(whole);
    }

    /// Whether [from_ms, to_ms) holds every base bucket of the cell.
    fn covers_all(&self, from_ms: i64, to_ms: i64) -> bool {
        match (self.base.keys().next(), self.base.keys().next_back()) {
            (Some(&first_ms), Some(&last_ms)) => from_ms <= first_ms && last_ms < to_ms,
            _ => true,
        }
    }
}

/// All aggregates of one experiment.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExperimentAggregates {
    pub precision: u8,
    /// Whether day roll-ups are kept (base bucket shorter than a day).
    pub rolled_up: bool,
    pub cells: Vec<CellSeries>,
    /// Position of each cell in `cells`. Derived, so not encoded: rebuilt
    /// by `reindex` after decoding.
    #[serde(skip)]
    index: HashMap<CellKey, usize>,
    pub keys: BTreeSet<Arc<str>>,
    /// Decisions naming each variation, over all time. A variation exists
    /// while this is positive.
    pub decisions_by_variation: BTreeMap<Arc<str>, i64>,
}

impl ExperimentAggregates {
    fn new(precision: u8, bucket_ms: i64) -> Self {
        ExperimentAggregates {
            precision,
            rolled_up: bucket_ms < ROLLUP_MS,
            cells: Vec::new(),
            index: HashMap::new(),
            keys: BTreeSet::new(),
            decisions_by_variation: BTreeMap::new(),
        }
    }

    /// Cells a query reads: the variation totals without a breakdown, the
    /// cells of that breakdown attribute with one. Times the buckets of its
    /// range, this is a query's cost (`QueryError::TooExpensive`).
    pub fn cells_read(&self, breakdown: Option<&str>) -> u64 {
        self.cells
            .iter()
            .filter(|series| match (&series.key.group, breakdown) {
                (Group::Total, None) => true,
                (Group::Breakdown { attribute, .. }, Some(asked)) => **attribute == *asked,
                _ => false,
            })
            .count() as u64
    }

    /// Rebuilds the cell index (after decoding, or after cells were
    /// dropped).
    pub fn reindex(&mut self) {
        self.index = self
            .cells
            .iter()
            .enumerate()
            .map(|(position, series)| (series.key.clone(), position))
            .collect();
        debug_assert_eq!(self.index.len(), self.cells.len(), "cell keys are unique");
        let rolled_up = self.rolled_up;
        for series in &mut self.cells {
            series.rebuild_whole(rolled_up);
        }
    }

    /// Positions of the cells an assignment counts in: the variation's
    /// total and one per breakdown attribute. Creates missing cells.
    fn cell_positions(&mut self, assignment: &Assignment, positions: &mut Vec<usize>) {
        positions.clear();
        for group in groups_of(&assignment.breakdown) {
            let key = CellKey {
                variation: Arc::clone(&assignment.variation),
                group,
            };
            let position = self.position_of(&key);
            positions.push(position);
        }
    }

    /// The base bucket and, when rolled up, the day bucket of one cell.
    fn buckets(&mut self, position: usize, bucket_ms: i64) -> impl Iterator<Item = &mut Bucket> {
        let rolled_up = self.rolled_up;
        let series = &mut self.cells[position];
        let rollup = if rolled_up {
            let day_ms = bucket_ms.div_euclid(ROLLUP_MS) * ROLLUP_MS;
            Some(series.rollup.entry(day_ms).or_default())
        } else {
            None
        };
        let base = series.base.entry(bucket_ms).or_default();
        std::iter::once(base)
            .chain(rollup)
            .chain(series.whole.as_mut())
    }

    fn apply_entries(&mut self, entries: &[&Entry]) {
        let mut positions = Vec::new();
        let mut cached: Option<*const Assignment> = None;
        let mut counted: Vec<&Entry> = Vec::with_capacity(entries.len());
        for &entry in entries {
            if let Metric::DecisionsNaming(variation) = &entry.metric {
                self.count_decisions(variation, entry.amount);
                continue;
            }
            if let Some(key) = metric_key(&entry.metric) {
                if !self.keys.contains(key) {
                    self.keys.insert(Arc::clone(key));
                }
            }
            counted.push(entry);
        }
        // A visitor's entries are sorted by assignment then bucket: each
        // run of one (assignment, bucket) resolves its cells and finds its
        // buckets once, not once per entry.
        for run in counted.chunk_by(|left, right| {
            Arc::ptr_eq(&left.assignment, &right.assignment) && left.bucket_ms == right.bucket_ms
        }) {
            let assignment = Arc::as_ptr(&run[0].assignment);
            if cached != Some(assignment) {
                self.cell_positions(&run[0].assignment, &mut positions);
                cached = Some(assignment);
            }
            for &position in &positions {
                for bucket in self.buckets(position, run[0].bucket_ms) {
                    for entry in run {
                        bucket.counters.apply(&entry.metric, entry.amount);
                    }
                }
            }
        }
    }

    fn count_decisions(&mut self, variation: &Arc<str>, amount: i128) {
        let count = self
            .decisions_by_variation
            .entry(Arc::clone(variation))
            .or_insert(0);
        *count += i64::try_from(amount).expect("decision count deltas fit in i64");
        // No lower bound here: after a shard move the new owner retracts
        // decisions the old owner's store added, so one store's count may
        // be negative; only the sum over every store (`query::finish`) is
        // never below zero.
        if *count == 0 {
            self.decisions_by_variation.remove(variation);
        }
    }

    fn apply_active(&mut self, active: &[&(ActiveCell, u64)]) {
        let precision = self.precision;
        let mut positions = Vec::new();
        let mut cached: Option<*const Assignment> = None;
        for (cell, visitor_hash) in active {
            let assignment = Arc::as_ptr(&cell.assignment);
            if cached != Some(assignment) {
                self.cell_positions(&cell.assignment, &mut positions);
                cached = Some(assignment);
            }
            for &position in &positions {
                for bucket in self.buckets(position, cell.bucket_ms) {
                    bucket
                        .sketch
                        .get_or_insert_with(|| Sketch::new(precision))
                        .insert(*visitor_hash);
                }
            }
        }
    }

    /// Adds `other` (the same experiment's aggregates from another node)
    /// into these: counters add, sketches union, decision counts add.
    pub fn merge(&mut self, other: &ExperimentAggregates) {
        assert_eq!(
            self.precision, other.precision,
            "an experiment's precision is fixed when its project is created"
        );
        let rolled_up = self.rolled_up;
        for series in &other.cells {
            let position = self.position_of(&series.key);
            let mine = &mut self.cells[position];
            merge_buckets(&mut mine.base, &series.base);
            merge_buckets(&mut mine.rollup, &series.rollup);
            mine.rebuild_whole(rolled_up);
        }
        self.keys.extend(other.keys.iter().cloned());
        for (variation, count) in &other.decisions_by_variation {
            self.count_decisions(variation, i128::from(*count));
        }
    }

    /// The position of `key`'s cell, created when missing.
    fn position_of(&mut self, key: &CellKey) -> usize {
        if let Some(&position) = self.index.get(key) {
            return position;
        }
        self.cells.push(CellSeries {
            key: key.clone(),
            base: BTreeMap::new(),
            rollup: BTreeMap::new(),
            whole: Some(Bucket::default()),
        });
        self.index.insert(key.clone(), self.cells.len() - 1);
        self.cells.len() - 1
    }

    /// Variations named by any decision, sorted. Independent of arrival
    /// order, unlike the set of cells (a sketch keeps cells of a variation a
    /// visitor left after a late, earlier decision).
    pub fn variations(&self) -> Vec<Arc<str>> {
        self.decisions_by_variation
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(variation, _)| Arc::clone(variation))
            .collect()
    }

    /// Earliest bucket holding anything.
    pub fn first_bucket_ms(&self) -> Option<i64> {
        self.cells
            .iter()
            .filter_map(|series| series.base.keys().next().copied())
            .min()
    }

    /// The buckets of `cell`, if it has any.
    pub fn series(&self, cell: &CellKey) -> Option<&CellSeries> {
        debug_assert_eq!(self.index.len(), self.cells.len(), "index is built");
        self.index.get(cell).map(|&position| &self.cells[position])
    }

    /// Sums the counters and unions the sketches of `cell` over
    /// [from_ms, to_ms).
    pub fn summarise(
        &self,
        cell: &CellKey,
        from_ms: i64,
        to_ms: i64,
    ) -> (Counters, Option<Sketch>) {
        let Some(series) = self.series(cell) else {
            return (Counters::default(), None);
        };
        let mut union = SketchUnion::new(self.precision);
        let counters = self.summarise_into(series, from_ms, to_ms, &mut union);
        (counters, union.to_sketch())
    }

    /// Sums the counters of one cell's buckets over [from_ms, to_ms) and
    /// unions their sketches into `union` (cleared first). A query keeps
    /// one `union` for all its cells: most of a query's time is spent in
    /// these unions, and a fresh sketch per cell would mean a clone and an
    /// allocation each.
    pub fn summarise_into(
        &self,
        series: &CellSeries,
        from_ms: i64,
        to_ms: i64,
        union: &mut SketchUnion,
    ) -> Counters {
        union.clear();
        let mut counters = Counters::default();
        let mut add = |bucket: &Bucket| {
            counters.add(&bucket.counters);
            if let Some(sketch) = &bucket.sketch {
                union.add(sketch);
            }
        };
        if let Some(whole) = series
            .whole
            .as_ref()
            .filter(|_| series.covers_all(from_ms, to_ms))
        {
            add(whole);
            return counters;
        }
        let first_day_ms = (from_ms + ROLLUP_MS - 1).div_euclid(ROLLUP_MS) * ROLLUP_MS;
        let last_day_ms = to_ms.div_euclid(ROLLUP_MS) * ROLLUP_MS;
        if !self.rolled_up || first_day_ms >= last_day_ms {
            series
                .base
                .range(from_ms..to_ms)
                .for_each(|(_, bucket)| add(bucket));
            return counters;
        }
        // Whole days from the roll-ups, the ragged edges from base buckets.
        series
            .base
            .range(from_ms..first_day_ms)
            .for_each(|(_, bucket)| add(bucket));
        series
            .rollup
            .range(first_day_ms..last_day_ms)
            .for_each(|(_, bucket)| add(bucket));
        series
            .base
            .range(last_day_ms..to_ms)
            .for_each(|(_, bucket)| add(bucket));
        counters
    }

    /// Drops whole days that start before the day of `before_ms`
    /// (retention). Whole days, so a day roll-up never covers a dropped base
    /// bucket.
    pub fn expire(&mut self, before_ms: i64) {
        let keep_from_ms = before_ms.div_euclid(ROLLUP_MS) * ROLLUP_MS;
        let rolled_up = self.rolled_up;
        for series in &mut self.cells {
            let held = series.base.len();
            series.base = series.base.split_off(&keep_from_ms);
            series.rollup = series.rollup.split_off(&keep_from_ms);
            if series.base.len() != held {
                series.rebuild_whole(rolled_up);
            }
        }
        let before = self.cells.len();
        self.cells.retain(|series| !series.base.is_empty());
        if self.cells.len() != before {
            self.reindex();
        }
    }

    /// (cell × bucket) pairs held, base buckets only.
    pub fn bucket_count(&self) -> usize {
        self.cells.iter().map(|series| series.base.len()).sum()
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

/// Adds every bucket of `theirs` into the same bucket of `mine`.
fn merge_buckets(mine: &mut BTreeMap<i64, Bucket>, theirs: &BTreeMap<i64, Bucket>) {
    for (bucket_ms, bucket) in theirs {
        mine.entry(*bucket_ms).or_default().add(bucket);
    }
}

/// A batch of changes from one shard actor for one project.
#[derive(Debug, Clone, Default)]
pub struct AggregateBatch {
    pub project: Arc<str>,
    pub precision: u8,
    pub bucket_ms: i64,
    pub entries: Vec<Entry>,
    pub active: Vec<(ActiveCell, u64)>,
}

impl AggregateBatch {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.active.is_empty()
    }
}

/// Aggregates of every experiment an aggregate actor is responsible for.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct AggregateStore {
    experiments: HashMap<(Arc<str>, Arc<str>), ExperimentAggregates>,
}

impl AggregateStore {
    /// Every experiment held, as ((project, experiment), aggregates), for
    /// rebuilding the cardinality limits' name sets on recovery
    /// (`engine::cardinality`).
    pub fn experiments(
        &self,
    ) -> impl Iterator<Item = (&(Arc<str>, Arc<str>), &ExperimentAggregates)> {
        self.experiments.iter()
    }

    pub fn apply(&mut self, batch: &AggregateBatch) {
        // Group by experiment so each experiment is looked up once.
        let mut entries: BTreeMap<&Arc<str>, Vec<&Entry>> = BTreeMap::new();
        for entry in &batch.entries {
            entries.entry(&entry.experiment).or_default().push(entry);
        }
        let mut active: BTreeMap<&Arc<str>, Vec<&(ActiveCell, u64)>> = BTreeMap::new();
        for pair in &batch.active {
            active.entry(&pair.0.experiment).or_default().push(pair);
        }
        let settings = (batch.precision, batch.bucket_ms);
        for (experiment, entries) in entries {
            self.experiment_mut(&batch.project, experiment, settings)
                .apply_entries(&entries);
        }
        for (experiment, active) in active {
            self.experiment_mut(&batch.project, experiment, settings)
                .apply_active(&active);
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

    /// Rebuilds every derived index after decoding from a checkpoint.
    pub fn reindex(&mut self) {
        for experiment in self.experiments.values_mut() {
            experiment.reindex();
        }
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
            .map(ExperimentAggregates::bucket_count)
            .sum()
    }

    /// Every experiment's aggregates, by (project, experiment).
    pub fn into_experiments(
        self,
    ) -> impl Iterator<Item = ((Arc<str>, Arc<str>), ExperimentAggregates)> {
        self.experiments.into_iter()
    }

    /// Merges another node's aggregates of one experiment into this store.
    pub fn absorb(
        &mut self,
        project: Arc<str>,
        experiment: Arc<str>,
        mut aggregates: ExperimentAggregates,
    ) {
        match self
            .experiments
            .get_mut(&(Arc::clone(&project), Arc::clone(&experiment)))
        {
            Some(mine) => mine.merge(&aggregates),
            None => {
                aggregates.reindex();
                self.experiments.insert((project, experiment), aggregates);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    fn assignment(variation: &str) -> Arc<Assignment> {
        Arc::new(Assignment {
            variation: Arc::from(variation),
            breakdown: vec![(Arc::from("browser"), Arc::from("firefox"))],
        })
    }

    /// Three days of hourly activity in two variations, with a key metric.
    fn batch(visitor_offset: u64) -> AggregateBatch {
        let experiment: Arc<str> = Arc::from("x");
        let mut batch = AggregateBatch {
            project: Arc::from("p"),
            precision: 10,
            bucket_ms: HOUR_MS,
            ..AggregateBatch::default()
        };
        for hour in 0..72_i64 {
            let assignment = assignment(if hour % 2 == 0 { "a" } else { "b" });
            let bucket_ms = hour * HOUR_MS;
            for metric in [
                Metric::Visitors,
                Metric::Sessions,
                Metric::TotalConversions(Arc::from("buy")),
            ] {
                batch.entries.push(Entry {
                    experiment: Arc::clone(&experiment),
                    assignment: Arc::clone(&assignment),
                    bucket_ms,
                    metric,
                    amount: 1 + i128::from(hour % 3),
                });
            }
            for visitor in 0..20_u64 {
                let cell = ActiveCell {
                    experiment: Arc::clone(&experiment),
                    assignment: Arc::clone(&assignment),
                    bucket_ms,
                };
                let hash = (visitor_offset + visitor * 7 + hour as u64)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15);
                batch.active.push((cell, hash));
            }
        }
        batch
    }

    fn cell(variation: &str) -> CellKey {
        CellKey {
            variation: Arc::from(variation),
            group: Group::Total,
        }
    }

    /// What a range sums to without the whole-range bucket.
    fn summed(
        aggregates: &ExperimentAggregates,
        cell: &CellKey,
        from_ms: i64,
        to_ms: i64,
    ) -> (Counters, Option<Sketch>) {
        let mut without_whole = aggregates.clone();
        for series in &mut without_whole.cells {
            series.whole = None;
        }
        without_whole.summarise(cell, from_ms, to_ms)
    }

    fn assert_whole_matches_buckets(aggregates: &ExperimentAggregates) {
        for variation in ["a", "b"] {
            let cell = cell(variation);
            let everything = aggregates.summarise(&cell, i64::MIN / 2, i64::MAX / 2);
            assert_eq!(
                everything,
                summed(aggregates, &cell, i64::MIN / 2, i64::MAX / 2)
            );
            assert!(everything.0.visitors > 0, "the cell has data");
            // A range that leaves out a bucket must not use the whole.
            let part = aggregates.summarise(&cell, 0, 48 * HOUR_MS);
            assert_eq!(part, summed(aggregates, &cell, 0, 48 * HOUR_MS));
            assert_ne!(part.0, everything.0, "two of three days count less");
        }
    }

    #[test]
    fn the_whole_range_bucket_equals_the_sum_of_the_buckets() {
        let mut store = AggregateStore::default();
        store.apply(&batch(0));
        let aggregates = store.experiment("p", "x").expect("applied");
        assert_whole_matches_buckets(aggregates);
    }

    #[test]
    fn the_whole_range_bucket_survives_decoding_merging_and_expiry() {
        let mut store = AggregateStore::default();
        store.apply(&batch(0));
        let mut decoded: AggregateStore =
            crate::engine::journal::decode(&crate::engine::journal::encode(&store), "segment")
                .expect("decodes");
        decoded.reindex();
        assert_whole_matches_buckets(decoded.experiment("p", "x").expect("decoded"));

        let mut other = AggregateStore::default();
        other.apply(&batch(1_000));
        for ((project, experiment), aggregates) in other.into_experiments() {
            decoded.absorb(project, experiment, aggregates);
        }
        assert_whole_matches_buckets(decoded.experiment("p", "x").expect("merged"));

        decoded.expire("p", ROLLUP_MS);
        let aggregates = decoded.experiment("p", "x").expect("two days left");
        assert_whole_matches_buckets(aggregates);
        let after_expiry = aggregates.summarise(&cell("a"), i64::MIN / 2, i64::MAX / 2);
        assert_eq!(
            after_expiry,
            aggregates.summarise(&cell("a"), ROLLUP_MS, 72 * HOUR_MS),
            "only the two kept days count"
        );
    }
}
