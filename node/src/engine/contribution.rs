//! What a visitor adds to the aggregates, as data.
//!
//! A visitor's *contribution* is a pure function of its state and the
//! project settings (`visitor::contribute`). Every change to a visitor is
//! applied as `contribution after − contribution before`, which is how late
//! events retract exactly what they invalidate (`docs/semantics.md`,
//! lateness).

use std::cmp::Ordering;
use std::sync::Arc;

/// The text used for a breakdown attribute the exposure event lacks.
pub const NONE_VALUE: &str = "(none)";

/// Which cells of an experiment a visitor's contributions go to: its sticky
/// variation, and for each breakdown attribute its value on the exposure
/// event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Assignment {
    pub variation: Arc<str>,
    /// (attribute, value), in the order of the project's breakdown attributes.
    pub breakdown: Vec<(Arc<str>, Arc<str>)>,
}

/// One exact counter of a cell.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    Visitors,
    Conflicts,
    /// Decisions naming a variation (any, sticky or conflicting). Kept per
    /// experiment, not per cell: it defines which variations exist, so that
    /// the list does not depend on arrival order.
    DecisionsNaming(Arc<str>),
    Sessions,
    BouncedSessions,
    DurationMsSum,
    PageviewsSum,
    UniqueConversions(Arc<str>),
    TotalConversions(Arc<str>),
    ValueSumMicros(Arc<str>),
    ValueSumSquaresMicros(Arc<str>),
    SessionsWithConversion(Arc<str>),
}

/// `amount` added to `metric` of experiment × assignment × bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub experiment: Arc<str>,
    pub assignment: Arc<Assignment>,
    pub bucket_ms: i64,
    pub metric: Metric,
    pub amount: i128,
}

impl Entry {
    /// The order of normalised entries: experiment, assignment, bucket,
    /// metric. Equal to comparing `(&str, &Assignment, i64, &Metric)`
    /// tuples, but names shared by the same `Arc` compare by pointer first:
    /// one visitor's entries share their experiment and assignment, and
    /// string comparisons were a tenth of the engine's time.
    fn compare(&self, other: &Entry) -> Ordering {
        compare_shared(&self.experiment, &other.experiment)
            .then_with(|| compare_assignment(&self.assignment, &other.assignment))
            .then(self.bucket_ms.cmp(&other.bucket_ms))
            .then_with(|| self.metric.cmp(&other.metric))
    }
}

fn compare_assignment(left: &Arc<Assignment>, right: &Arc<Assignment>) -> Ordering {
    if Arc::ptr_eq(left, right) {
        Ordering::Equal
    } else {
        left.cmp(right)
    }
}

fn compare_shared(left: &Arc<str>, right: &Arc<str>) -> Ordering {
    if Arc::ptr_eq(left, right) {
        Ordering::Equal
    } else {
        left.cmp(right)
    }
}

/// A bucket in which a visitor was active after exposure (distinct-count
/// sketches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCell {
    pub experiment: Arc<str>,
    pub assignment: Arc<Assignment>,
    pub bucket_ms: i64,
}

/// Ordered by experiment, assignment, bucket, with the pointer-equality
/// shortcut of `Entry::compare`.
impl Ord for ActiveCell {
    fn cmp(&self, other: &ActiveCell) -> Ordering {
        compare_shared(&self.experiment, &other.experiment)
            .then_with(|| compare_assignment(&self.assignment, &other.assignment))
            .then(self.bucket_ms.cmp(&other.bucket_ms))
    }
}

impl PartialOrd for ActiveCell {
    fn partial_cmp(&self, other: &ActiveCell) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Everything one visitor contributes, normalised: entries sorted by key,
/// equal keys summed, zero amounts dropped; active cells sorted, unique.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contribution {
    pub entries: Vec<Entry>,
    pub active: Vec<ActiveCell>,
}

impl Contribution {
    pub fn normalise(mut self) -> Contribution {
        // Unstable is enough: entries with equal keys are summed below.
        self.entries.sort_unstable_by(Entry::compare);
        let mut merged: Vec<Entry> = Vec::with_capacity(self.entries.len());
        for entry in self.entries {
            match merged.last_mut() {
                Some(last) if last.compare(&entry) == Ordering::Equal => {
                    last.amount += entry.amount
                }
                _ => merged.push(entry),
            }
        }
        merged.retain(|entry| entry.amount != 0);
        self.entries = merged;
        self.active.sort_unstable();
        self.active.dedup();
        self
    }
}

/// The change from one contribution to another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Difference {
    pub entries: Vec<Entry>,
    /// Cells the visitor is newly active in. Cells it is no longer active in
    /// cannot be removed from a sketch (see docs/semantics.md).
    pub active_added: Vec<ActiveCell>,
}

impl Difference {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.active_added.is_empty()
    }
}

/// `after − before`, both normalised. A merge of two sorted lists.
pub fn difference(before: &Contribution, after: &Contribution) -> Difference {
    let mut entries = Vec::with_capacity(before.entries.len().max(after.entries.len()));
    let (mut left, mut right) = (
        before.entries.iter().peekable(),
        after.entries.iter().peekable(),
    );
    loop {
        let order = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(old), Some(new)) => old.compare(new),
        };
        match order {
            Ordering::Less => {
                let old = left.next().expect("peeked");
                entries.push(Entry {
                    amount: -old.amount,
                    ..old.clone()
                });
            }
            Ordering::Greater => entries.push(right.next().expect("peeked").clone()),
            Ordering::Equal => {
                let old = left.next().expect("peeked");
                let new = right.next().expect("peeked");
                if new.amount != old.amount {
                    entries.push(Entry {
                        amount: new.amount - old.amount,
                        ..new.clone()
                    });
                }
            }
        }
    }
    let active_added = after
        .active
        .iter()
        .filter(|cell| before.active.binary_search(cell).is_err())
        .cloned()
        .collect();
    Difference {
        entries,
        active_added,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bucket_ms: i64, metric: Metric, amount: i128) -> Entry {
        Entry {
            experiment: Arc::from("x"),
            assignment: Arc::new(Assignment {
                variation: Arc::from("a"),
                breakdown: Vec::new(),
            }),
            bucket_ms,
            metric,
            amount,
        }
    }

    #[test]
    fn normalise_sums_equal_keys_and_drops_zeros() {
        let contribution = Contribution {
            entries: vec![
                entry(2, Metric::Sessions, 1),
                entry(1, Metric::Visitors, 1),
                entry(2, Metric::Sessions, 2),
                entry(3, Metric::Sessions, 1),
                entry(3, Metric::Sessions, -1),
            ],
            active: Vec::new(),
        }
        .normalise();
        assert_eq!(
            contribution.entries,
            vec![entry(1, Metric::Visitors, 1), entry(2, Metric::Sessions, 3)]
        );
    }

    #[test]
    fn difference_retracts_and_adds() {
        let before = Contribution {
            entries: vec![entry(1, Metric::Sessions, 2), entry(2, Metric::Sessions, 1)],
            active: Vec::new(),
        }
        .normalise();
        let after = Contribution {
            entries: vec![entry(1, Metric::Sessions, 1), entry(3, Metric::Sessions, 1)],
            active: Vec::new(),
        }
        .normalise();
        let difference = difference(&before, &after);
        assert_eq!(
            difference.entries,
            vec![
                entry(1, Metric::Sessions, -1),
                entry(2, Metric::Sessions, -1),
                entry(3, Metric::Sessions, 1)
            ]
        );
    }
}
