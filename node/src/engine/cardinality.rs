//! Cardinality limits: how many experiments, variations, conversion keys
//! and breakdown values a project may have on this node
//! (`docs/ingest-formats.md`, "Cardinality limits"). Without them anyone
//! holding an ingest key could grow the aggregates without bound.
//!
//! The decision is made in `Engine::ingest`, before an event is logged: a
//! refused event never reaches the log, and a folded breakdown value is
//! logged as `(other)`. Replay after a restart therefore never decides
//! again — it applies exactly what was decided — and reaches the same
//! results. The name sets themselves are rebuilt on recovery from what the
//! node holds (the checkpoint's aggregates and visitors, then every
//! replayed event), so later events meet the same sets.

use super::aggregates::{AggregateStore, Group};
use super::contribution::NONE_VALUE;
use super::shard::ShardState;
use crate::event::{Event, EventKind, NameKind, RejectReason};
use crate::limits;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// The breakdown value that stands for every value beyond
/// `BREAKDOWN_VALUES_PER_ATTRIBUTE_MAX` in an experiment.
pub const OTHER_VALUE: &str = "(other)";

/// What `NameSets::admit` changed in an event it admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Folded {
    /// Breakdown values counted as `(other)`.
    pub breakdown_values: u64,
    /// Whether the event is a page view whose new page name, beyond the
    /// key limit, is counted as `(other)`.
    pub page_name: bool,
}

/// The limits, per project on one node. `Default` is the documented
/// `limits` constants; tests lower them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardinalityLimits {
    pub experiments_per_project: usize,
    pub variations_per_experiment: usize,
    pub conversion_keys_per_project: usize,
    pub breakdown_values_per_attribute: usize,
}

impl Default for CardinalityLimits {
    fn default() -> Self {
        CardinalityLimits {
            experiments_per_project: limits::EXPERIMENTS_PER_PROJECT_MAX,
            variations_per_experiment: limits::VARIATIONS_PER_EXPERIMENT_MAX,
            conversion_keys_per_project: limits::CONVERSION_KEYS_PER_PROJECT_MAX,
            breakdown_values_per_attribute: limits::BREAKDOWN_VALUES_PER_ATTRIBUTE_MAX,
        }
    }
}

#[derive(Debug, Default)]
struct ExperimentNames {
    variations: HashSet<Arc<str>>,
    /// Per breakdown attribute, its values.
    breakdown_values: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

#[derive(Debug, Default)]
struct ProjectNames {
    experiments: HashMap<Arc<str>, ExperimentNames>,
    conversion_keys: HashSet<Arc<str>>,
}

/// The names each project has on this node, and the limits they are held
/// to.
#[derive(Debug, Default)]
pub struct NameSets {
    limits: CardinalityLimits,
    projects: HashMap<Arc<str>, ProjectNames>,
}

impl NameSets {
    pub fn new(limits: CardinalityLimits) -> NameSets {
        NameSets {
            limits,
            projects: HashMap::new(),
        }
    }

    /// Admits `event` of `project`: refuses it when it names one experiment,
    /// variation or conversion key more than its limit allows (nothing of
    /// it is recorded then), else records its names, counts a page view's
    /// new name beyond the key limit as `(other)` and folds each breakdown
    /// value beyond its limit into `(other)`. Answers what was folded.
    pub fn admit(&mut self, project: &Arc<str>, event: &mut Event) -> Result<Folded, RejectReason> {
        let limits = self.limits;
        let names = self.projects.entry(Arc::clone(project)).or_default();
        names.check(&limits, event)?;
        let page_name = names.fold_page_name(&limits, event);
        names.record_names(event);
        let mut folded = Folded {
            breakdown_values: 0,
            page_name,
        };
        let Some(data) = event.decision.as_deref_mut() else {
            return Ok(folded);
        };
        for (attribute, value) in data.attributes.iter_mut() {
            if !names.admit_value(&limits, &data.decisions, attribute, value) {
                *value = Arc::from(OTHER_VALUE);
                folded.breakdown_values += 1;
            }
        }
        Ok(folded)
    }

    /// Records the names of an event that was admitted before (a replayed
    /// one), without limits: it was decided when it was logged.
    pub fn observe(&mut self, project: &Arc<str>, event: &Event) {
        let names = self.projects.entry(Arc::clone(project)).or_default();
        names.record_names(event);
        for (attribute, value) in event.attributes() {
            for (experiment, _) in event.decisions() {
                names.record_value(experiment, attribute, value);
            }
        }
    }

    /// Records the names a checkpoint's aggregate store holds.
    pub fn observe_store(&mut self, store: &AggregateStore) {
        for ((project, experiment), aggregates) in store.experiments() {
            let names = self.projects.entry(Arc::clone(project)).or_default();
            names
                .conversion_keys
                .extend(aggregates.keys.iter().cloned());
            // Variations only ever named by a conflicting decision have no
            // cell of their own, but were admitted all the same.
            names
                .experiments
                .entry(Arc::clone(experiment))
                .or_default()
                .variations
                .extend(aggregates.decisions_by_variation.keys().cloned());
            for cell in &aggregates.cells {
                names
                    .experiments
                    .entry(Arc::clone(experiment))
                    .or_default()
                    .variations
                    .insert(Arc::clone(&cell.key.variation));
                if let Group::Breakdown { attribute, value } = &cell.key.group {
                    // `(none)` is the engine's, not a value an event sent.
                    if &**value != NONE_VALUE {
                        names.record_value(experiment, attribute, value);
                    }
                }
            }
        }
    }

    /// Records the names a checkpoint's shard holds (retained events and
    /// frozen exposures).
    pub fn observe_shard(&mut self, shard: &ShardState) {
        for (project, visitor) in shard.visitors() {
            for event in visitor.events() {
                self.observe(project, event);
            }
            let names = self.projects.entry(Arc::clone(project)).or_default();
            for exposure in visitor.frozen() {
                names
                    .experiments
                    .entry(Arc::clone(&exposure.experiment))
                    .or_default()
                    .variations
                    .insert(Arc::clone(&exposure.variation));
                for (attribute, value) in &exposure.attributes {
                    names.record_value(&exposure.experiment, attribute, value);
                }
                for key in &exposure.keys {
                    names.conversion_keys.insert(Arc::clone(&key.key));
                }
            }
        }
    }
}

impl ProjectNames {
    /// Whether the event's key, experiments and variations fit.
    fn check(&self, limits: &CardinalityLimits, event: &Event) -> Result<(), RejectReason> {
        // A page view beyond the limit is kept with its name folded
        // (`fold_page_name`): it still makes sessions and page views.
        if let Some(key) = event
            .key
            .as_ref()
            .filter(|_| event.kind != EventKind::Pageview)
        {
            if !self.admits_key(limits, key) {
                return Err(refusal(
                    NameKind::ConversionKey,
                    key,
                    limits.conversion_keys_per_project,
                ));
            }
        }
        let mut variations: BTreeMap<&Arc<str>, BTreeSet<&Arc<str>>> = BTreeMap::new();
        for (experiment, variation) in event.decisions() {
            variations.entry(experiment).or_default().insert(variation);
        }
        let mut new_experiments = 0;
        for (experiment, event_variations) in variations {
            let known = self.experiments.get(experiment);
            if known.is_none() {
                new_experiments += 1;
                if self.experiments.len() + new_experiments > limits.experiments_per_project {
                    return Err(refusal(
                        NameKind::Experiment,
                        experiment,
                        limits.experiments_per_project,
                    ));
                }
            }
            let held = known.map_or(0, |names| names.variations.len());
            let mut new_variations = 0;
            for variation in event_variations {
                if known.is_some_and(|names| names.variations.contains(variation)) {
                    continue;
                }
                new_variations += 1;
                if held + new_variations > limits.variations_per_experiment {
                    return Err(refusal(
                        NameKind::Variation,
                        variation,
                        limits.variations_per_experiment,
                    ));
                }
            }
        }
        Ok(())
    }

    fn admits_key(&self, limits: &CardinalityLimits, key: &Arc<str>) -> bool {
        self.conversion_keys.contains(key)
            || self.conversion_keys.len() < limits.conversion_keys_per_project
    }

    /// A page view naming a new page beyond the key limit is counted under
    /// `(other)`: its session, bounce and page-view counts matter more than
    /// its page name, unlike a conversion, whose key is what it measures.
    fn fold_page_name(&self, limits: &CardinalityLimits, event: &mut Event) -> bool {
        if event.kind != EventKind::Pageview {
            return false;
        }
        match &event.key {
            Some(key) if &**key != OTHER_VALUE && !self.admits_key(limits, key) => {
                event.key = Some(Arc::from(OTHER_VALUE));
                true
            }
            _ => false,
        }
    }

    /// Records the event's key, experiments and variations. `(other)` as
    /// a folded page name takes no place of its own.
    fn record_names(&mut self, event: &Event) {
        if let Some(key) = event.key.as_ref().filter(|key| &***key != OTHER_VALUE) {
            self.conversion_keys.insert(Arc::clone(key));
        }
        for (experiment, variation) in event.decisions() {
            self.experiments
                .entry(Arc::clone(experiment))
                .or_default()
                .variations
                .insert(Arc::clone(variation));
        }
    }

    /// Admits `value` of `attribute` in every experiment of the event, or
    /// in none: a value folded in one experiment is folded in all, since an
    /// event has one value per attribute.
    fn admit_value(
        &mut self,
        limits: &CardinalityLimits,
        decisions: &[(Arc<str>, Arc<str>)],
        attribute: &Arc<str>,
        value: &Arc<str>,
    ) -> bool {
        if &**value == OTHER_VALUE {
            return true;
        }
        let fits = decisions.iter().all(|(experiment, _)| {
            let values = self
                .experiments
                .get(experiment)
                .and_then(|names| names.breakdown_values.get(attribute));
            values.is_none_or(|values| {
                values.contains(value) || values.len() < limits.breakdown_values_per_attribute
            })
        });
        if fits {
            for (experiment, _) in decisions {
                self.record_value(experiment, attribute, value);
            }
        }
        fits
    }

    fn record_value(&mut self, experiment: &Arc<str>, attribute: &Arc<str>, value: &Arc<str>) {
        if &**value == OTHER_VALUE {
            return;
        }
        let values = self
            .experiments
            .entry(Arc::clone(experiment))
            .or_default()
            .breakdown_values
            .entry(Arc::clone(attribute))
            .or_default();
        if !values.contains(value) {
            values.insert(Arc::clone(value));
        }
    }
}

fn refusal(kind: NameKind, name: &str, max: usize) -> RejectReason {
    RejectReason::CardinalityLimit {
        kind,
        name: name.to_string(),
        max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    const LIMITS: CardinalityLimits = CardinalityLimits {
        experiments_per_project: 2,
        variations_per_experiment: 2,
        conversion_keys_per_project: 2,
        breakdown_values_per_attribute: 2,
    };

    fn event(key: Option<&str>, decisions: &[(&str, &str)], referrer: Option<&str>) -> Event {
        let mut event = Event {
            id: "e".into(),
            ts_ms: 0,
            value_micros: 0,
            key: key.map(Arc::from),
            decision: None,
            kind: EventKind::Custom,
        };
        let pairs = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(name, value)| (Arc::from(*name), Arc::from(*value)))
                .collect()
        };
        let attributes = referrer.map_or(Vec::new(), |value| pairs(&[("referrer", value)]));
        event.set_name_pairs(attributes, pairs(decisions));
        event
    }

    fn code(result: Result<Folded, RejectReason>) -> String {
        match result {
            Ok(folded) => format!("ok {}", folded.breakdown_values),
            Err(reason) => reason.code().to_string(),
        }
    }

    #[test]
    fn experiments_variations_and_keys_beyond_their_limit_are_refused() {
        let project: Arc<str> = Arc::from("shop");
        let mut names = NameSets::new(LIMITS);
        let mut admit = |event: Event| code(names.admit(&project, &mut { event }));
        assert_eq!(admit(event(None, &[("x", "a"), ("y", "a")], None)), "ok 0");
        assert_eq!(admit(event(None, &[("z", "a")], None)), "cardinality_limit");
        // Known experiments still take events; a refused event recorded
        // nothing, so its other names are still free.
        assert_eq!(admit(event(None, &[("x", "b")], None)), "ok 0");
        assert_eq!(admit(event(None, &[("x", "c")], None)), "cardinality_limit");
        assert_eq!(admit(event(None, &[("x", "a"), ("x", "b")], None)), "ok 0");
        assert_eq!(admit(event(Some("buy"), &[], None)), "ok 0");
        assert_eq!(
            admit(event(Some("k2"), &[("y", "c"), ("y", "d")], None)),
            "cardinality_limit"
        );
        assert_eq!(admit(event(Some("k2"), &[], None)), "ok 0");
        assert_eq!(admit(event(Some("k3"), &[], None)), "cardinality_limit");
        assert_eq!(admit(event(Some("buy"), &[], None)), "ok 0");
        let reason = names
            .admit(&project, &mut event(None, &[("z", "a")], None))
            .unwrap_err();
        let message = reason.to_string();
        assert!(
            message.contains("experiment `z`") && message.contains("EXPERIMENTS_PER_PROJECT_MAX"),
            "{message}"
        );
    }

    #[test]
    fn page_views_beyond_the_key_limit_are_kept_under_other() {
        let project: Arc<str> = Arc::from("shop");
        let mut names = NameSets::new(LIMITS);
        let mut page_view = |page: &str| {
            let mut event = event(Some(page), &[], None);
            event.kind = EventKind::Pageview;
            let folded = names
                .admit(&project, &mut event)
                .expect("a page view is kept");
            (event.key.as_deref().map(str::to_string), folded.page_name)
        };
        assert_eq!(page_view("home"), (Some("home".to_string()), false));
        assert_eq!(page_view("cart"), (Some("cart".to_string()), false));
        assert_eq!(page_view("blog-1"), (Some(OTHER_VALUE.to_string()), true));
        assert_eq!(page_view("blog-2"), (Some(OTHER_VALUE.to_string()), true));
        assert_eq!(page_view("home"), (Some("home".to_string()), false));
        // `(other)` took no place: a conversion key is still refused only
        // because the two real names fill the limit.
        let reason = names
            .admit(&project, &mut event(Some("buy"), &[], None))
            .unwrap_err();
        assert_eq!(reason.code(), "cardinality_limit");
    }

    #[test]
    fn breakdown_values_beyond_the_limit_fold_into_other() {
        let project: Arc<str> = Arc::from("shop");
        let mut names = NameSets::new(LIMITS);
        let mut value_of = |experiments: &[(&str, &str)], referrer: &str| {
            let mut event = event(None, experiments, Some(referrer));
            names.admit(&project, &mut event).expect("admitted");
            event.attribute("referrer").expect("kept").to_string()
        };
        assert_eq!(value_of(&[("x", "a")], "r1"), "r1");
        assert_eq!(value_of(&[("x", "a")], "r2"), "r2");
        assert_eq!(value_of(&[("x", "a")], "r3"), OTHER_VALUE);
        assert_eq!(value_of(&[("x", "b")], "r1"), "r1");
        // Another experiment has room, but an event has one value for all
        // its experiments.
        assert_eq!(value_of(&[("y", "a")], "r3"), "r3");
        assert_eq!(value_of(&[("x", "a"), ("y", "a")], "r4"), OTHER_VALUE);
        assert_eq!(value_of(&[("y", "a")], "r4"), "r4");
    }

    #[test]
    fn observed_events_rebuild_the_same_sets() {
        let project: Arc<str> = Arc::from("shop");
        let mut decided = NameSets::new(LIMITS);
        let mut log = Vec::new();
        for (index, referrer) in ["r1", "r2", "r3", "r1"].into_iter().enumerate() {
            let experiment = format!("x{}", index % 3);
            let mut event = event(None, &[(experiment.as_str(), "a")], Some(referrer));
            if decided.admit(&project, &mut event).is_ok() {
                log.push(event);
            }
        }
        let mut rebuilt = NameSets::new(LIMITS);
        for event in &log {
            rebuilt.observe(&project, event);
        }
        for probe in [
            event(None, &[("x0", "a")], Some("r9")),
            event(None, &[("x2", "a")], None),
        ] {
            let (mut first, mut second) = (probe.clone(), probe);
            assert_eq!(
                code(decided.admit(&project, &mut first)),
                code(rebuilt.admit(&project, &mut second))
            );
            assert_eq!(first, second);
        }
    }
}
