//! The shard groups of one node: [`GroupHost`] owns the node's
//! [`ReplicatedLog`] (every group's Raft log, one `fdatasync` for all) and
//! the directory of the groups' snapshot files, and starts, stops and
//! forgets replicas there. It keeps no table of running replicas: the
//! caller (`cluster::replicas`) decides which groups run here and serves
//! their peers' requests.
//!
//! ```text
//! <dir>/
//!   log/         the ReplicatedLog's segments
//!   snapshots/   group-<id>.snapshot, the newest snapshot of each group
//! ```

use super::group::{start_replica, SnapshotFile};
use super::{
    GroupApply, GroupConfig, GroupError, GroupHandle, GroupId, GroupTransport, OpenReport,
    ReplicaId, ReplicaTypes, ReplicatedLog, ReplicatedLogConfig, ReplicatedLogError,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One node's groups: their shared log, snapshots, timing and transport.
pub struct GroupHost<T: GroupTransport> {
    replica: ReplicaId,
    log: ReplicatedLog<ReplicaTypes>,
    snapshot_dir: PathBuf,
    config: GroupConfig,
    transport: T,
}

impl<T: GroupTransport> std::fmt::Debug for GroupHost<T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GroupHost")
            .field("replica", &self.replica)
            .field("snapshot_dir", &self.snapshot_dir)
            .finish_non_exhaustive()
    }
}

impl<T: GroupTransport> GroupHost<T> {
    /// Opens (or creates) the groups' storage under `dir` for the node
    /// whose id is `replica`; answers what the log held.
    pub fn open(
        dir: &Path,
        replica: ReplicaId,
        log_config: ReplicatedLogConfig,
        config: GroupConfig,
        transport: T,
    ) -> Result<(GroupHost<T>, OpenReport), ReplicatedLogError> {
        let (log, report) = ReplicatedLog::open(dir.join("log"), log_config)?;
        let host = GroupHost {
            replica,
            log,
            snapshot_dir: dir.join("snapshots"),
            config,
            transport,
        };
        Ok((host, report))
    }

    /// The groups with state on this node's disk (entries in the log or a
    /// snapshot file): the replicas a restarting node starts again.
    pub fn groups_on_disk(&self) -> Result<BTreeSet<GroupId>, GroupError> {
        let mut groups: BTreeSet<GroupId> = self.log.group_ids().into_iter().collect();
        let entries = match std::fs::read_dir(&self.snapshot_dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(groups),
            Err(error) => return Err(self.directory_error(error)),
        };
        for entry in entries {
            let entry = entry.map_err(|error| self.directory_error(error))?;
            if let Some(group) = group_of_snapshot_name(&entry.file_name().to_string_lossy()) {
                groups.insert(group);
            }
        }
        Ok(groups)
    }

    /// Starts this node's replica of `group` with its state in `apply`
    /// (rebuilt from the newest snapshot, then the log). A group already
    /// running here is refused by the log (one handle per group).
    pub async fn start<A: GroupApply>(
        &self,
        group: GroupId,
        apply: A,
    ) -> Result<GroupHandle, GroupError> {
        let raft = start_replica(
            self.replica,
            group,
            &self.log,
            &self.snapshot_dir,
            apply,
            self.transport.clone(),
            &self.config,
        )
        .await?;
        Ok(GroupHandle::new(group, raft))
    }

    /// Stops `replica` and deletes what this node kept of its group (the
    /// group moved away or this node was dropped from it): its log entries
    /// and its snapshot file. A stale copy must not come back as a voter.
    pub async fn forget(&self, replica: GroupHandle) -> Result<(), GroupError> {
        let group = replica.group();
        replica.shutdown().await?;
        self.log.forget_group(group).await?;
        SnapshotFile::new(group, &self.snapshot_dir).remove()
    }

    pub fn log(&self) -> &ReplicatedLog<ReplicaTypes> {
        &self.log
    }

    pub fn replica(&self) -> ReplicaId {
        self.replica
    }

    fn directory_error(&self, error: std::io::Error) -> GroupError {
        GroupError::Snapshots {
            path: self.snapshot_dir.clone(),
            reason: error.to_string(),
        }
    }
}

/// `group-<id>.snapshot` → `id`; other names (temporary files) → `None`.
fn group_of_snapshot_name(name: &str) -> Option<GroupId> {
    name.strip_prefix("group-")?
        .strip_suffix(".snapshot")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_snapshot_files_name_groups() {
        assert_eq!(group_of_snapshot_name("group-12.snapshot"), Some(12));
        assert_eq!(group_of_snapshot_name("group-12.tmp"), None);
        assert_eq!(group_of_snapshot_name("group-x.snapshot"), None);
        assert_eq!(group_of_snapshot_name("other"), None);
    }
}
