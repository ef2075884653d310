//! Project changes: create, configure, and install a configuration the
//! cluster agreed on. Each is journaled before it takes effect, under the
//! sequencer, so replay installs the same configurations in the same order
//! relative to events; a change that affects contributions waits until
//! every shard re-evaluated its visitors.

use super::actors::ShardMessage;
use super::Engine;
use crate::limits;
use crate::project::{ProjectConfig, ProjectError, SettingsPatch};
use std::sync::Arc;
use std::time::Duration;

impl Engine {
    /// Creates a project; returns once its creation is on disk, with its
    /// ingest key (only its hash is stored: this is the one time it is
    /// known).
    pub async fn create_project(
        &self,
        name: &str,
        patch: &SettingsPatch,
    ) -> Result<(Arc<ProjectConfig>, String), ProjectError> {
        let _order = self.inner.sequencer.lock().await;
        let (config, key) = self.inner.projects.prepare_create(name, patch)?;
        self.journal_project(&config).await?;
        let config = Arc::new(config);
        self.inner.projects.install(Arc::clone(&config));
        Ok((config, key))
    }

    /// Changes settings; returns once the change is on disk and every shard
    /// has re-evaluated its visitors under them (when the change affects
    /// contributions).
    pub async fn configure_project(
        &self,
        name: &str,
        patch: &SettingsPatch,
    ) -> Result<Arc<ProjectConfig>, ProjectError> {
        let _order = self.inner.sequencer.lock().await;
        let (_, config) = self.inner.projects.prepare_configure(name, patch)?;
        self.journal_project(&config).await?;
        let config = Arc::new(config);
        self.inner.projects.install(Arc::clone(&config));
        self.reconfigure_shards(&config).await;
        Ok(config)
    }

    /// Why this node cannot write now (its log failed), if it cannot: a
    /// change that needs the log is refused before the cluster agrees on
    /// it.
    pub fn storage_failure(&self) -> Option<String> {
        self.inner.storage.log.failure()
    }

    /// Installs a configuration the cluster agreed on (placement's
    /// `PutProject`), journaled first; re-evaluates retained visitors when
    /// it replaces an older one. A configuration no newer than the one held
    /// changes nothing (answers `false`): every member installs each
    /// version once, whether it hears of it from its own request or from
    /// placement.
    pub async fn install_project(&self, config: ProjectConfig) -> Result<bool, ProjectError> {
        let _order = self.inner.sequencer.lock().await;
        let previous = self.inner.projects.get(&config.name);
        if previous
            .as_ref()
            .is_some_and(|held| held.version >= config.version)
        {
            return Ok(false);
        }
        self.journal_project(&config).await?;
        let config = Arc::new(config);
        self.inner.projects.install(Arc::clone(&config));
        if previous.is_some() {
            self.reconfigure_shards(&config).await;
        }
        Ok(true)
    }

    async fn journal_project(&self, config: &ProjectConfig) -> Result<(), ProjectError> {
        let entry = super::journal::JournalEntry::Project {
            config: config.clone(),
        };
        let record = (super::journal::ALL_SHARDS, super::journal::encode(&entry));
        let stored = match self.inner.storage.log.enqueue_batch(vec![record]).await {
            Ok(pending) => pending.durable().await,
            Err(error) => Err(error),
        };
        stored.map(|_| ()).map_err(|error| ProjectError::Storage {
            cause: error.to_string(),
        })
    }

    /// Tells every shard about a new configuration and waits until all have
    /// re-evaluated. Called in log order (under the sequencer or during
    /// replay).
    pub(super) async fn reconfigure_shards(&self, config: &Arc<ProjectConfig>) {
        let wait = Duration::from_millis(limits::ACTOR_APPLY_WAIT_MS);
        let mut pending = Vec::with_capacity(self.inner.shard_actors.len());
        for shard in &self.inner.shard_actors {
            let message = |reply| ShardMessage::Reconfigure {
                config: Arc::clone(config),
                reply,
            };
            if let Ok(answer) = shard.request(message, wait).await {
                pending.push(answer);
            }
        }
        for answer in pending {
            if let Err(error) = answer.answer().await {
                tracing::error!(%error, project = %config.name, "a shard did not confirm a reconfiguration");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{TestEngine, PROJECT};
    use super::*;

    #[tokio::test]
    async fn project_changes_are_journaled_and_come_back_after_a_restart() {
        let node = TestEngine::open("projects-restart")
            .await
            .with_project()
            .await;
        let patch = SettingsPatch {
            session_gap_ms: Some(10 * 60_000),
            ..SettingsPatch::default()
        };
        let changed = node
            .engine
            .configure_project(PROJECT, &patch)
            .await
            .expect("a valid change");
        assert_eq!(changed.settings.session_gap_ms, 10 * 60_000);
        let node = node.reopen().await;
        let restored = node.engine.projects().get(PROJECT).expect("restored");
        assert_eq!(*restored, *changed);
    }

    #[tokio::test]
    async fn a_configuration_no_newer_than_the_one_held_changes_nothing() {
        let node = TestEngine::open("projects-install")
            .await
            .with_project()
            .await;
        let held = node.engine.projects().get(PROJECT).expect("created");
        let mut older = (*held).clone();
        older.settings.session_gap_ms += 60_000;
        assert!(!node.engine.install_project(older).await.expect("journaled"));
        assert_eq!(node.engine.projects().get(PROJECT).expect("held"), held);
        let mut newer = (*held).clone();
        newer.version += 1;
        newer.settings.session_gap_ms += 60_000;
        assert!(node
            .engine
            .install_project(newer.clone())
            .await
            .expect("journaled"));
        assert_eq!(*node.engine.projects().get(PROJECT).expect("held"), newer);
    }

    #[tokio::test]
    async fn invalid_changes_are_refused_before_the_log() {
        let node = TestEngine::open("projects-invalid")
            .await
            .with_project()
            .await;
        let error = node
            .engine
            .create_project(PROJECT, &SettingsPatch::default())
            .await
            .unwrap_err();
        assert!(matches!(error, ProjectError::Exists { .. }), "{error}");
        let error = node
            .engine
            .configure_project("nope", &SettingsPatch::default())
            .await
            .unwrap_err();
        assert!(matches!(error, ProjectError::Unknown { .. }), "{error}");
        assert_eq!(node.engine.storage_failure(), None);
    }
}
