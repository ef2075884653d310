//! Projects: tenants with their own settings (`docs/semantics.md`) and the
//! registry that holds them.
//!
//! The registry is the node's view of project configuration. In a cluster,
//! configurations are agreed through placement (`PutProject`) and installed
//! here by the engine (`Engine::install_project`); callers only see
//! `ProjectRegistry`.

use crate::keys::{self, KeyHash, RotatingKey};
use crate::limits;
use chrono_tz::Tz;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Settings of one project, validated.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    pub session_gap_ms: i64,
    pub session_max_ms: i64,
    pub midnight_split: bool,
    pub time_zone: Tz,
    pub allowed_lateness_ms: i64,
    pub future_skew_ms: i64,
    pub bucket_ms: i64,
    pub hll_precision: u8,
    pub retention_ms: i64,
    pub breakdown_attributes: Vec<Arc<str>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            session_gap_ms: 30 * MINUTE_MS,
            session_max_ms: DAY_MS,
            midnight_split: false,
            time_zone: Tz::UTC,
            allowed_lateness_ms: DAY_MS,
            future_skew_ms: 5 * MINUTE_MS,
            bucket_ms: HOUR_MS,
            hll_precision: 14,
            retention_ms: 30 * DAY_MS,
            breakdown_attributes: ["browser", "device", "country", "campaign", "referrer"]
                .into_iter()
                .map(Arc::from)
                .collect(),
        }
    }
}

/// A requested change of settings; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SettingsPatch {
    pub session_gap_ms: Option<i64>,
    pub session_max_ms: Option<i64>,
    pub midnight_split: Option<bool>,
    pub time_zone: Option<String>,
    pub allowed_lateness_ms: Option<i64>,
    pub future_skew_ms: Option<i64>,
    pub bucket_ms: Option<i64>,
    pub hll_precision: Option<u8>,
    pub retention_ms: Option<i64>,
    pub breakdown_attributes: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProjectError {
    #[error("project `{name}` does not exist")]
    Unknown { name: String },
    #[error("project `{name}` already exists")]
    Exists { name: String },
    #[error("invalid project name `{name}`: use 1-{max} bytes of a-z, 0-9, `_` and `-`", max = limits::PROJECT_NAME_BYTES_MAX)]
    InvalidName { name: String },
    #[error("invalid setting `{field}`: {reason}")]
    InvalidSetting { field: &'static str, reason: String },
    #[error("setting `{field}` is fixed when the project is created")]
    Immutable { field: &'static str },
    #[error("too many projects: the limit is {max}", max = limits::PROJECTS_MAX)]
    TooMany,
    #[error("the change could not be written to disk: {cause}")]
    Storage { cause: String },
}

impl Settings {
    /// Applies a patch to a copy of these settings and validates the result.
    /// `creating` allows the fields that are fixed after creation.
    pub fn patched(&self, patch: &SettingsPatch, creating: bool) -> Result<Settings, ProjectError> {
        if !creating {
            if patch.bucket_ms.is_some_and(|value| value != self.bucket_ms) {
                return Err(ProjectError::Immutable { field: "bucket_ms" });
            }
            if patch
                .hll_precision
                .is_some_and(|value| value != self.hll_precision)
            {
                return Err(ProjectError::Immutable {
                    field: "hll_precision",
                });
            }
        }
        let mut settings = self.clone();
        if let Some(value) = patch.session_gap_ms {
            settings.session_gap_ms = value;
        }
        if let Some(value) = patch.session_max_ms {
            settings.session_max_ms = value;
        }
        if let Some(value) = patch.midnight_split {
            settings.midnight_split = value;
        }
        if let Some(name) = &patch.time_zone {
            settings.time_zone = name
                .parse::<Tz>()
                .map_err(|_| ProjectError::InvalidSetting {
                    field: "time_zone",
                    reason: format!("`{name}` is not an IANA time zone name (e.g. `Europe/Paris`)"),
                })?;
        }
        if let Some(value) = patch.allowed_lateness_ms {
            settings.allowed_lateness_ms = value;
        }
        if let Some(value) = patch.future_skew_ms {
            settings.future_skew_ms = value;
        }
        if let Some(value) = patch.bucket_ms {
            settings.bucket_ms = value;
        }
        if let Some(value) = patch.hll_precision {
            settings.hll_precision = value;
        }
        if let Some(value) = patch.retention_ms {
            settings.retention_ms = value;
        }
        if let Some(names) = &patch.breakdown_attributes {
            settings.breakdown_attributes =
                names.iter().map(|name| Arc::from(name.as_str())).collect();
        }
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ProjectError> {
        check_range("session_gap_ms", self.session_gap_ms, 1_000, DAY_MS)?;
        check_range(
            "session_max_ms",
            self.session_max_ms,
            self.session_gap_ms,
            7 * DAY_MS,
        )?;
        check_range(
            "allowed_lateness_ms",
            self.allowed_lateness_ms,
            0,
            7 * DAY_MS,
        )?;
        check_range("future_skew_ms", self.future_skew_ms, 0, HOUR_MS)?;
        check_range("bucket_ms", self.bucket_ms, MINUTE_MS, DAY_MS)?;
        if DAY_MS % self.bucket_ms != 0 || self.bucket_ms % MINUTE_MS != 0 {
            return Err(ProjectError::InvalidSetting {
                field: "bucket_ms",
                reason: "must be a whole number of minutes that divides one day".into(),
            });
        }
        check_range("hll_precision", i64::from(self.hll_precision), 4, 18)?;
        let retention_min_ms = self.allowed_lateness_ms + self.session_gap_ms;
        check_range(
            "retention_ms",
            self.retention_ms,
            retention_min_ms,
            3650 * DAY_MS,
        )?;
        self.validate_breakdown_attributes()
    }

    fn validate_breakdown_attributes(&self) -> Result<(), ProjectError> {
        let names = &self.breakdown_attributes;
        if names.len() > limits::BREAKDOWN_ATTRIBUTES_MAX {
            return Err(ProjectError::InvalidSetting {
                field: "breakdown_attributes",
                reason: format!("at most {} attributes", limits::BREAKDOWN_ATTRIBUTES_MAX),
            });
        }
        for (index, name) in names.iter().enumerate() {
            if name.is_empty() || name.len() > limits::ATTRIBUTE_NAME_BYTES_MAX {
                return Err(ProjectError::InvalidSetting {
                    field: "breakdown_attributes",
                    reason: format!(
                        "attribute names are 1-{} bytes",
                        limits::ATTRIBUTE_NAME_BYTES_MAX
                    ),
                });
            }
            if names[..index].contains(name) {
                return Err(ProjectError::InvalidSetting {
                    field: "breakdown_attributes",
                    reason: format!("`{name}` is listed twice"),
                });
            }
        }
        Ok(())
    }

    /// Whether a change from `self` to `other` changes how retained events
    /// contribute to aggregates, so visitors must be re-evaluated.
    pub fn changes_contributions(&self, other: &Settings) -> bool {
        self.session_gap_ms != other.session_gap_ms
            || self.session_max_ms != other.session_max_ms
            || self.midnight_split != other.midnight_split
            || self.time_zone != other.time_zone
            || self.breakdown_attributes != other.breakdown_attributes
    }

    /// Start of the bucket holding `ts_ms`.
    pub fn bucket_of(&self, ts_ms: i64) -> i64 {
        ts_ms.div_euclid(self.bucket_ms) * self.bucket_ms
    }
}

fn check_range(field: &'static str, value: i64, min: i64, max: i64) -> Result<(), ProjectError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(ProjectError::InvalidSetting {
        field,
        reason: format!("{value} is outside [{min}, {max}]"),
    })
}

/// A project's configuration at one version. Shard actors keep the version
/// they last applied, to notice changes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProjectConfig {
    pub name: Arc<str>,
    pub settings: Settings,
    pub version: u64,
    /// The hashes of the project's ingest key (`docs/security.md`): the key
    /// itself (32 random hex characters, generated at creation, unique
    /// among projects) is shown once and never stored. `configure` keeps
    /// it; only a rotation (`prepare_rotate_ingest_key`) changes it.
    /// Stored as a string where the plaintext key used to be
    /// (`keys::stored_ingest_key`), so older records still decode.
    #[serde(rename = "ingest_key", with = "keys::stored_ingest_key")]
    pub ingest_keys: RotatingKey,
}

/// An experiment's expected allocation by variation (the sample ratio
/// mismatch check's weights), as stored with the project in placement:
/// variation → weight, any positive scale (1:1, 2:1, 50:50).
pub type ExperimentWeights = std::collections::BTreeMap<String, f64>;

/// Why stored allocation weights were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WeightsError {
    #[error("invalid experiment name `{name}`: use 1-{max} bytes", max = limits::DECISION_NAME_BYTES_MAX)]
    InvalidExperiment { name: String },
    #[error("no variation given; give every variation of the experiment a weight")]
    Empty,
    #[error("{count} variations weighted; the limit is {max}", max = limits::EXPERIMENT_WEIGHTS_VARIATIONS_MAX)]
    TooManyVariations { count: usize },
    #[error("invalid variation name `{name}`: use 1-{max} bytes", max = limits::DECISION_NAME_BYTES_MAX)]
    InvalidVariation { name: String },
    #[error("the weight of `{variation}` is {weight}; weights are in [{min}, {max}]", min = limits::EXPERIMENT_WEIGHT_MIN, max = limits::EXPERIMENT_WEIGHT_MAX)]
    WeightOutOfRange { variation: String, weight: f64 },
    #[error("project `{project}` already stores weights for {max} experiments; clear some first", max = limits::WEIGHTED_EXPERIMENTS_PER_PROJECT_MAX)]
    TooManyExperiments { project: String },
}

/// Checks an experiment's allocation weights before they are stored: names
/// as decision events allow them, a bounded count, weights in range (NaN
/// and infinities are out of it).
pub fn check_experiment_weights(
    experiment: &str,
    weights: &ExperimentWeights,
) -> Result<(), WeightsError> {
    let valid_name = |name: &str| !name.is_empty() && name.len() <= limits::DECISION_NAME_BYTES_MAX;
    if !valid_name(experiment) {
        return Err(WeightsError::InvalidExperiment {
            name: experiment.to_string(),
        });
    }
    if weights.is_empty() {
        return Err(WeightsError::Empty);
    }
    if weights.len() > limits::EXPERIMENT_WEIGHTS_VARIATIONS_MAX {
        return Err(WeightsError::TooManyVariations {
            count: weights.len(),
        });
    }
    for (variation, weight) in weights {
        if !valid_name(variation) {
            return Err(WeightsError::InvalidVariation {
                name: variation.clone(),
            });
        }
        if !(limits::EXPERIMENT_WEIGHT_MIN..=limits::EXPERIMENT_WEIGHT_MAX).contains(weight) {
            return Err(WeightsError::WeightOutOfRange {
                variation: variation.clone(),
                weight: *weight,
            });
        }
    }
    Ok(())
}

pub fn validate_name(name: &str) -> Result<(), ProjectError> {
    let valid_byte = |byte: u8| {
        byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-'
    };
    if name.is_empty()
        || name.len() > limits::PROJECT_NAME_BYTES_MAX
        || !name.bytes().all(valid_byte)
    {
        return Err(ProjectError::InvalidName {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// All projects known to this node: at most `PROJECTS_MAX`, read on every
/// event and written only by project changes (under the engine's
/// sequencer), so one read-write lock, not a concurrent map.
#[derive(Debug, Default)]
pub struct ProjectRegistry {
    projects: std::sync::RwLock<std::collections::HashMap<Arc<str>, Arc<ProjectConfig>>>,
    version_last: AtomicU64,
}

impl ProjectRegistry {
    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, std::collections::HashMap<Arc<str>, Arc<ProjectConfig>>>
    {
        self.projects
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, name: &str) -> Option<Arc<ProjectConfig>> {
        self.read().get(name).map(Arc::clone)
    }

    pub fn list(&self) -> Vec<Arc<ProjectConfig>> {
        let mut projects: Vec<_> = self.read().values().map(Arc::clone).collect();
        projects.sort_by(|a, b| a.name.cmp(&b.name));
        projects
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Creates and installs a project (see `prepare_create`); returns it
    /// with its ingest key.
    pub fn create(
        &self,
        name: &str,
        patch: &SettingsPatch,
    ) -> Result<(Arc<ProjectConfig>, String), ProjectError> {
        let (config, key) = self.prepare_create(name, patch)?;
        let config = Arc::new(config);
        self.install(Arc::clone(&config));
        Ok((config, key))
    }

    /// Changes and installs a project's settings; returns the previous and
    /// the new configuration.
    pub fn configure(
        &self,
        name: &str,
        patch: &SettingsPatch,
    ) -> Result<(Arc<ProjectConfig>, Arc<ProjectConfig>), ProjectError> {
        let (previous, config) = self.prepare_configure(name, patch)?;
        let config = Arc::new(config);
        self.install(Arc::clone(&config));
        Ok((previous, config))
    }

    /// Validates a new project and builds its configuration without
    /// installing it: the engine journals it first. Callers serialise
    /// prepare + install (the engine's sequencer), so the existence check
    /// holds until `install`. Also returns the new ingest key: the only
    /// time it exists in plaintext.
    pub fn prepare_create(
        &self,
        name: &str,
        patch: &SettingsPatch,
    ) -> Result<(ProjectConfig, String), ProjectError> {
        validate_name(name)?;
        let settings = Settings::default().patched(patch, true)?;
        if self.read().contains_key(name) {
            return Err(ProjectError::Exists {
                name: name.to_string(),
            });
        }
        if self.len() >= limits::PROJECTS_MAX {
            return Err(ProjectError::TooMany);
        }
        let (key, hash) = self.new_ingest_key();
        let config = ProjectConfig {
            name: Arc::from(name),
            settings,
            version: self.next_version(),
            ingest_keys: RotatingKey::new(hash),
        };
        Ok((config, key))
    }

    /// A new configuration of project `name` whose ingest key is a fresh
    /// one, the old key staying valid for `grace_ms` after `now_ms`; and the
    /// new key in plaintext. Not installed (the engine journals it first).
    pub fn prepare_rotate_ingest_key(
        &self,
        name: &str,
        now_ms: i64,
        grace_ms: i64,
    ) -> Result<(ProjectConfig, String), ProjectError> {
        let previous = self.get(name).ok_or_else(|| ProjectError::Unknown {
            name: name.to_string(),
        })?;
        let grace_ms =
            keys::check_grace_ms(grace_ms).map_err(|error| ProjectError::InvalidSetting {
                field: "grace_ms",
                reason: error.to_string(),
            })?;
        let (key, hash) = self.new_ingest_key();
        let config = ProjectConfig {
            name: Arc::clone(&previous.name),
            settings: previous.settings.clone(),
            version: self.next_version(),
            ingest_keys: previous.ingest_keys.rotated(hash, now_ms, grace_ms),
        };
        Ok((config, key))
    }

    /// Validates a settings change and builds the new configuration without
    /// installing it.
    pub fn prepare_configure(
        &self,
        name: &str,
        patch: &SettingsPatch,
    ) -> Result<(Arc<ProjectConfig>, ProjectConfig), ProjectError> {
        let previous = self.get(name).ok_or_else(|| ProjectError::Unknown {
            name: name.to_string(),
        })?;
        let settings = previous.settings.patched(patch, false)?;
        let config = ProjectConfig {
            name: Arc::clone(&previous.name),
            settings,
            version: self.next_version(),
            ingest_keys: previous.ingest_keys,
        };
        Ok((previous, config))
    }

    /// Installs a configuration (new, changed, or restored by recovery).
    /// Versions only grow, so an older configuration never replaces a newer
    /// one.
    pub fn install(&self, config: Arc<ProjectConfig>) {
        self.version_last
            .fetch_max(config.version, Ordering::SeqCst);
        let mut projects = self
            .projects
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match projects.entry(Arc::clone(&config.name)) {
            std::collections::hash_map::Entry::Occupied(mut entry) => {
                if entry.get().version < config.version {
                    entry.insert(config);
                }
            }
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(config);
            }
        }
    }

    /// The project whose ingest key (current, or previous within its grace
    /// period at `now_ms`) is `key`.
    ///
    /// A linear scan over at most `PROJECTS_MAX` projects, on purpose: it
    /// hashes `key` once and compares it with every project's hashes in
    /// constant time, without stopping at the first match, so the time taken
    /// does not depend on which project (if any) holds the key.
    pub fn by_ingest_key(&self, key: &str, now_ms: i64) -> Option<Arc<ProjectConfig>> {
        let candidate = KeyHash::of(key.as_bytes());
        let mut found = None;
        for project in self.read().values() {
            if project.ingest_keys.matches(&candidate, now_ms) && found.is_none() {
                found = Some(Arc::clone(project));
            }
        }
        found.filter(|_| !key.is_empty())
    }

    /// A fresh random ingest key that no project holds, with its hash. 128
    /// random bits make a collision practically impossible (two concurrent
    /// creations are not checked against each other; the bits cover that
    /// case too).
    fn new_ingest_key(&self) -> (String, KeyHash) {
        loop {
            let key = keys::generate_secret(keys::INGEST_KEY_RANDOM_BYTES);
            let hash = KeyHash::of(key.as_bytes());
            let taken = self
                .read()
                .values()
                .any(|project| project.ingest_keys.holds(&hash));
            if !taken {
                return (key, hash);
            }
        }
    }

    fn next_version(&self) -> u64 {
        self.version_last.fetch_add(1, Ordering::SeqCst) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_applies_defaults_and_rejects_duplicates() {
        let registry = ProjectRegistry::default();
        let (config, _) = registry.create("shop", &SettingsPatch::default()).unwrap();
        assert_eq!(config.settings, Settings::default());
        assert_eq!(
            registry.create("shop", &SettingsPatch::default()),
            Err(ProjectError::Exists {
                name: "shop".into()
            })
        );
        assert!(matches!(
            registry.create("Shop!", &SettingsPatch::default()),
            Err(ProjectError::InvalidName { .. })
        ));
    }

    #[test]
    fn bucket_and_precision_are_fixed_after_creation() {
        let registry = ProjectRegistry::default();
        registry.create("shop", &SettingsPatch::default()).unwrap();
        let patch = SettingsPatch {
            bucket_ms: Some(MINUTE_MS),
            ..SettingsPatch::default()
        };
        assert_eq!(
            registry.configure("shop", &patch),
            Err(ProjectError::Immutable { field: "bucket_ms" })
        );
        let patch = SettingsPatch {
            session_gap_ms: Some(10 * MINUTE_MS),
            ..SettingsPatch::default()
        };
        let (previous, config) = registry.configure("shop", &patch).unwrap();
        assert!(previous.settings.changes_contributions(&config.settings));
        assert!(config.version > previous.version);
        assert_eq!(config.ingest_keys, previous.ingest_keys);
    }

    #[test]
    fn ingest_keys_are_random_hex_stored_hashed_and_find_their_project() {
        let registry = ProjectRegistry::default();
        let (shop, shop_key) = registry.create("shop", &SettingsPatch::default()).unwrap();
        let (_, blog_key) = registry.create("blog", &SettingsPatch::default()).unwrap();
        assert_eq!(shop_key.len(), 32);
        assert!(shop_key.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(shop_key, blog_key);
        assert_eq!(
            shop.ingest_keys,
            RotatingKey::new(KeyHash::of(shop_key.as_bytes()))
        );
        let found = registry.by_ingest_key(&blog_key, 0).unwrap();
        assert_eq!(found.name.as_ref(), "blog");
        assert!(registry.by_ingest_key("", 0).is_none());
        assert!(registry
            .by_ingest_key("0123456789abcdef0123456789abcdef", 0)
            .is_none());
    }

    #[test]
    fn a_rotated_ingest_key_keeps_the_old_one_for_the_grace_period() {
        let registry = ProjectRegistry::default();
        let (before, old_key) = registry.create("shop", &SettingsPatch::default()).unwrap();
        let (rotated, new_key) = registry
            .prepare_rotate_ingest_key("shop", 1_000, 500)
            .unwrap();
        assert!(rotated.version > before.version);
        assert_eq!(rotated.settings, before.settings);
        registry.install(Arc::new(rotated));
        assert!(registry.by_ingest_key(&new_key, 1_000).is_some());
        assert!(registry.by_ingest_key(&old_key, 1_499).is_some());
        assert!(registry.by_ingest_key(&old_key, 1_500).is_none());
        assert!(matches!(
            registry.prepare_rotate_ingest_key("shop", 1_000, -1),
            Err(ProjectError::InvalidSetting {
                field: "grace_ms",
                ..
            })
        ));
        assert!(matches!(
            registry.prepare_rotate_ingest_key("blog", 1_000, 0),
            Err(ProjectError::Unknown { .. })
        ));
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let patch = SettingsPatch {
            bucket_ms: Some(7 * MINUTE_MS),
            ..SettingsPatch::default()
        };
        let error = Settings::default().patched(&patch, true).unwrap_err();
        assert!(matches!(
            error,
            ProjectError::InvalidSetting {
                field: "bucket_ms",
                ..
            }
        ));
        let patch = SettingsPatch {
            time_zone: Some("Mars/Olympus".into()),
            ..SettingsPatch::default()
        };
        let error = Settings::default().patched(&patch, true).unwrap_err();
        assert!(matches!(
            error,
            ProjectError::InvalidSetting {
                field: "time_zone",
                ..
            }
        ));
    }
}
