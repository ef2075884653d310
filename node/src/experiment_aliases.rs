//! Experiment aliases (`docs/ingest-formats.md`, "Optimizely names"): the
//! ids a compatible format names experiments and variations by, mapped to
//! the keys its events are stored under.
//!
//! Optimizely SDKs send decisions by id (`experiment_id`, `variation_id`)
//! with the keys in the decision's `metadata`. Events are stored under the
//! keys, the names experimenters know; the ids stay reachable through this
//! table, which a results query uses to accept an id and to name the ids
//! beside the keys in its answer. The table of each project is agreed
//! through placement (`PlacementCommand::PutAliases`), so it is the same on
//! every node and survives a restart; it is proposed only when a batch
//! carries an id the table does not hold yet, and it is bounded by
//! `ALIASES_PER_PROJECT_MAX`.

use crate::limits;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most ids (experiments and variations together) one project's table
/// holds. Past it, new ids are not aliased: their events are stored under
/// the keys their batch carries, or under the ids when it carries none.
pub const ALIASES_PER_PROJECT_MAX: usize = 10_000;

/// One decision's ids and keys, as a batch carried them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alias {
    pub experiment_id: String,
    pub experiment_key: String,
    pub variation_id: String,
    pub variation_key: String,
}

impl Alias {
    /// Whether every part is a non-empty name that fits a decision
    /// (`DECISION_NAME_BYTES_MAX`); others are never stored.
    pub fn is_storable(&self) -> bool {
        [
            &self.experiment_id,
            &self.experiment_key,
            &self.variation_id,
            &self.variation_key,
        ]
        .iter()
        .all(|name| !name.is_empty() && name.len() <= limits::DECISION_NAME_BYTES_MAX)
    }
}

/// One experiment's key and its variations' keys by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExperimentAlias {
    pub key: String,
    pub variations: BTreeMap<String, String>,
}

/// One project's table: experiments by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectAliases {
    experiments: BTreeMap<String, ExperimentAlias>,
}

impl ProjectAliases {
    /// Ids held, experiments and variations together.
    pub fn len(&self) -> usize {
        self.experiments
            .values()
            .map(|experiment| 1 + experiment.variations.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.experiments.is_empty()
    }

    /// Whether the table already maps `alias`'s ids to its keys.
    pub fn holds(&self, alias: &Alias) -> bool {
        self.experiments
            .get(&alias.experiment_id)
            .is_some_and(|experiment| {
                experiment.key == alias.experiment_key
                    && experiment.variations.get(&alias.variation_id) == Some(&alias.variation_key)
            })
    }

    /// Adds (or renames, when a key changed) `alias`; returns whether the
    /// table changed. A storable alias whose new ids would pass
    /// `ALIASES_PER_PROJECT_MAX` is left out.
    pub fn insert(&mut self, alias: &Alias) -> bool {
        if !alias.is_storable() || self.holds(alias) {
            return false;
        }
        let experiment_known = self.experiments.contains_key(&alias.experiment_id);
        let variation_known = self
            .experiments
            .get(&alias.experiment_id)
            .is_some_and(|experiment| experiment.variations.contains_key(&alias.variation_id));
        let new_ids = usize::from(!experiment_known) + usize::from(!variation_known);
        if self.len() + new_ids > ALIASES_PER_PROJECT_MAX {
            return false;
        }
        let experiment = self
            .experiments
            .entry(alias.experiment_id.clone())
            .or_default();
        experiment.key.clone_from(&alias.experiment_key);
        experiment
            .variations
            .insert(alias.variation_id.clone(), alias.variation_key.clone());
        true
    }

    /// The key experiment `id` is stored under.
    pub fn experiment_key(&self, id: &str) -> Option<&str> {
        self.experiments
            .get(id)
            .map(|experiment| experiment.key.as_str())
    }

    /// The key variation `variation_id` of experiment `experiment_id` is
    /// stored under.
    pub fn variation_key(&self, experiment_id: &str, variation_id: &str) -> Option<&str> {
        self.experiments
            .get(experiment_id)?
            .variations
            .get(variation_id)
            .map(String::as_str)
    }

    /// The experiment a query names, by key or by id: its stored name (the
    /// key) and its id. `None` when the table knows neither. An id wins
    /// over a key of the same spelling; of several ids with one key (rules
    /// of one flag named by the flag), the smallest.
    pub fn experiment(&self, name: &str) -> Option<(&str, &ExperimentAlias)> {
        if let Some((id, experiment)) = self.experiments.get_key_value(name) {
            return Some((id.as_str(), experiment));
        }
        self.experiments
            .iter()
            .find(|(_, experiment)| experiment.key == name)
            .map(|(id, experiment)| (id.as_str(), experiment))
    }
}

impl ExperimentAlias {
    /// The id of the variation stored under `key`.
    pub fn variation_id(&self, key: &str) -> Option<&str> {
        self.variations
            .iter()
            .find(|(_, variation_key)| *variation_key == key)
            .map(|(id, _)| id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(experiment: (&str, &str), variation: (&str, &str)) -> Alias {
        Alias {
            experiment_id: experiment.0.into(),
            experiment_key: experiment.1.into(),
            variation_id: variation.0.into(),
            variation_key: variation.1.into(),
        }
    }

    #[test]
    fn ids_and_keys_resolve_both_ways() {
        let mut table = ProjectAliases::default();
        assert!(table.insert(&alias(("70001", "checkout"), ("70011", "control"))));
        assert!(table.insert(&alias(("70001", "checkout"), ("70012", "treatment"))));
        assert!(!table.insert(&alias(("70001", "checkout"), ("70012", "treatment"))));
        assert_eq!(table.len(), 3);
        assert_eq!(table.experiment_key("70001"), Some("checkout"));
        assert_eq!(table.variation_key("70001", "70012"), Some("treatment"));
        let (id, experiment) = table.experiment("checkout").unwrap();
        assert_eq!(id, "70001");
        assert_eq!(experiment.variation_id("control"), Some("70011"));
        assert_eq!(table.experiment("70001").unwrap().1.key, "checkout");
        assert!(table.experiment("other").is_none());
        // A renamed key replaces the old one.
        assert!(table.insert(&alias(("70001", "checkout_v2"), ("70011", "control"))));
        assert_eq!(table.experiment_key("70001"), Some("checkout_v2"));
    }

    #[test]
    fn unstorable_aliases_and_aliases_past_the_limit_are_left_out() {
        let mut table = ProjectAliases::default();
        assert!(!table.insert(&alias(("", "checkout"), ("1", "a"))));
        let long = "x".repeat(limits::DECISION_NAME_BYTES_MAX + 1);
        assert!(!table.insert(&alias(("1", &long), ("1", "a"))));
        assert!(table.is_empty());
        let mut experiment = 0;
        while table.len() + 2 <= ALIASES_PER_PROJECT_MAX {
            let id = experiment.to_string();
            assert!(table.insert(&alias((&id, "e"), (&id, "v"))));
            experiment += 1;
        }
        assert_eq!(table.len(), ALIASES_PER_PROJECT_MAX);
        assert!(!table.insert(&alias(("new", "e"), ("new", "v"))));
        assert!(!table.insert(&alias(("0", "e"), ("extra", "v"))));
        // A known id may still be renamed: that adds no id.
        assert!(table.insert(&alias(("0", "renamed"), ("0", "v"))));
        assert_eq!(table.len(), ALIASES_PER_PROJECT_MAX);
    }
}
