//! Changing who holds a group: the leader's half of re-replication.
//!
//! Placement records the replica set a group should have; this module
//! makes the group's Raft membership follow it, one safe step per call:
//! first every missing member is added as a **learner** (it receives the
//! log, or a snapshot when the entries it lacks are purged, but does not
//! count toward a quorum); once each of them has matched the leader's log
//! to within a bound, one **membership change** (openraft's joint
//! consensus) swaps the voters for the wanted set, which also removes
//! members that are no longer wanted. So a lost member is replaced without
//! a window where the group counts an empty replica toward its majority.
//!
//! [`plan_membership`] is the decision, a pure function of what the
//! leader's metrics say; [`GroupHandle::reconcile`] carries out its answer.
//! Callers repeat `reconcile` (the placement leader's reconciler does,
//! each round) until it answers [`ReconcileStep::InSync`].

use super::group::{GroupHandle, ReplicaId, ReplicaNode};
use super::GroupId;
use std::collections::{BTreeMap, BTreeSet};

/// A wanted member counts as caught up, and may become a voter, once its
/// matched log index is at most this many entries behind the leader's
/// last one. Small enough that the membership change does not wait on a
/// long catch-up inside the joint configuration; large enough that a
/// learner under steady ingest gets there.
pub const CATCH_UP_LAG_ENTRIES_MAX: u64 = 64;

/// Where a member of the group stands, in the leader's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberProgress {
    pub replica: ReplicaId,
    pub voter: bool,
    /// The last log index the leader knows this member holds; `None`
    /// before the first answer.
    pub matched_index: Option<u64>,
}

/// A group's replication as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupProgress {
    pub group: GroupId,
    pub leader: ReplicaId,
    pub term: u64,
    /// The leader's last log index.
    pub last_index: Option<u64>,
    /// Every voter and learner, by id.
    pub members: Vec<MemberProgress>,
}

impl GroupProgress {
    /// How many entries `member` lacks; `None` for a non-member.
    pub fn lag_entries(&self, replica: ReplicaId) -> Option<u64> {
        let member = self
            .members
            .iter()
            .find(|member| member.replica == replica)?;
        let last = self.last_index.unwrap_or(0);
        Some(last.saturating_sub(member.matched_index.unwrap_or(0)))
    }
}

/// The next step towards the wanted replica set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipAction {
    /// The voters are the wanted set and no other member is left.
    None,
    /// Add these wanted members as learners.
    AddLearners(BTreeSet<ReplicaId>),
    /// These wanted learners are not caught up yet: wait.
    WaitForCatchUp(BTreeSet<ReplicaId>),
    /// Make the wanted set the voters (removing every other member).
    ChangeVoters(BTreeSet<ReplicaId>),
}

/// What one [`GroupHandle::reconcile`] call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconcileStep {
    /// The group's membership is the wanted set.
    InSync,
    /// Added as learners; they now catch up.
    AddedLearners(BTreeSet<ReplicaId>),
    /// Learners still catching up (how far behind each is).
    CatchingUp(BTreeMap<ReplicaId, u64>),
    /// The voters are now the wanted set.
    ChangedVoters(BTreeSet<ReplicaId>),
}

/// Why the membership could not be changed here.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("group {group}: only the leader changes the membership (leader: {leader:?})")]
    NotLeader {
        group: GroupId,
        leader: Option<ReplicaId>,
    },
    #[error("group {group}: the wanted replica set is empty")]
    EmptyReplicaSet { group: GroupId },
    #[error("group {group}: the membership change failed: {reason}")]
    Change { group: GroupId, reason: String },
}

/// The next step from the leader's view (`voters`, `learners`, what each
/// member matched, the leader's `last_index`) towards `wanted`.
pub fn plan_membership(
    voters: &BTreeSet<ReplicaId>,
    learners: &BTreeSet<ReplicaId>,
    matched: &BTreeMap<ReplicaId, Option<u64>>,
    last_index: Option<u64>,
    wanted: &BTreeSet<ReplicaId>,
) -> MembershipAction {
    assert!(!wanted.is_empty(), "a group always has a replica");
    let strangers = learners.difference(wanted).next().is_some();
    if voters == wanted && !strangers {
        return MembershipAction::None;
    }
    let missing: BTreeSet<ReplicaId> = wanted
        .iter()
        .filter(|replica| !voters.contains(replica) && !learners.contains(replica))
        .copied()
        .collect();
    if !missing.is_empty() {
        return MembershipAction::AddLearners(missing);
    }
    let behind: BTreeSet<ReplicaId> = wanted
        .iter()
        .filter(|replica| !voters.contains(replica))
        .filter(|replica| !caught_up(matched.get(replica).copied().flatten(), last_index))
        .copied()
        .collect();
    if !behind.is_empty() {
        return MembershipAction::WaitForCatchUp(behind);
    }
    MembershipAction::ChangeVoters(wanted.clone())
}

fn caught_up(matched_index: Option<u64>, last_index: Option<u64>) -> bool {
    let last = last_index.unwrap_or(0);
    let matched = matched_index.unwrap_or(0);
    last.saturating_sub(matched) <= CATCH_UP_LAG_ENTRIES_MAX
}

impl GroupHandle {
    /// The group's replication as this replica leads it; `None` when it is
    /// not the leader.
    pub fn progress(&self) -> Option<GroupProgress> {
        let metrics = self.raft().metrics().borrow().clone();
        let replication = metrics.replication.as_ref()?;
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<ReplicaId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(replica, _)| MemberProgress {
                replica: *replica,
                voter: voters.contains(replica),
                matched_index: matched_of(&metrics, replication, *replica),
            })
            .collect();
        Some(GroupProgress {
            group: self.group(),
            leader: metrics.id,
            term: metrics.current_term,
            last_index: metrics.last_log_index,
            members,
        })
    }

    /// Takes one step towards `wanted` as the group's voters (ids with
    /// their addresses); repeat until [`ReconcileStep::InSync`].
    pub async fn reconcile(
        &self,
        wanted: &BTreeMap<ReplicaId, ReplicaNode>,
    ) -> Result<ReconcileStep, MembershipError> {
        let group = self.group();
        if wanted.is_empty() {
            return Err(MembershipError::EmptyReplicaSet { group });
        }
        let progress = self.progress().ok_or_else(|| MembershipError::NotLeader {
            group,
            leader: self.status().leader,
        })?;
        let wanted_ids: BTreeSet<ReplicaId> = wanted.keys().copied().collect();
        match plan_of(&progress, &wanted_ids) {
            MembershipAction::None => Ok(ReconcileStep::InSync),
            MembershipAction::AddLearners(missing) => {
                for replica in &missing {
                    self.add_learner(*replica, wanted[replica].clone()).await?;
                }
                Ok(ReconcileStep::AddedLearners(missing))
            }
            MembershipAction::WaitForCatchUp(behind) => Ok(ReconcileStep::CatchingUp(
                behind
                    .into_iter()
                    .map(|replica| (replica, progress.lag_entries(replica).unwrap_or(u64::MAX)))
                    .collect(),
            )),
            MembershipAction::ChangeVoters(voters) => {
                self.change_voters(voters.clone()).await?;
                Ok(ReconcileStep::ChangedVoters(voters))
            }
        }
    }

    async fn add_learner(
        &self,
        replica: ReplicaId,
        node: ReplicaNode,
    ) -> Result<(), MembershipError> {
        // Not blocking: catching up may take a snapshot's transfer, and the
        // caller comes back to look at the progress instead of holding on.
        self.raft()
            .add_learner(replica, node, false)
            .await
            .map(|_| ())
            .map_err(|error| self.change_error(error))
    }

    async fn change_voters(&self, voters: BTreeSet<ReplicaId>) -> Result<(), MembershipError> {
        // `retain: false`: a member dropped from the voters leaves the group
        // (a lost node is not kept as a learner the leader keeps calling).
        self.raft()
            .change_membership(voters, false)
            .await
            .map(|_| ())
            .map_err(|error| self.change_error(error))
    }

    fn change_error(
        &self,
        error: openraft::error::RaftError<
            ReplicaId,
            openraft::error::ClientWriteError<ReplicaId, ReplicaNode>,
        >,
    ) -> MembershipError {
        match error {
            openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(forward),
            ) => MembershipError::NotLeader {
                group: self.group(),
                leader: forward.leader_id,
            },
            other => MembershipError::Change {
                group: self.group(),
                reason: other.to_string(),
            },
        }
    }
}

fn plan_of(progress: &GroupProgress, wanted: &BTreeSet<ReplicaId>) -> MembershipAction {
    let voters: BTreeSet<ReplicaId> = progress
        .members
        .iter()
        .filter(|member| member.voter)
        .map(|member| member.replica)
        .collect();
    let learners: BTreeSet<ReplicaId> = progress
        .members
        .iter()
        .filter(|member| !member.voter)
        .map(|member| member.replica)
        .collect();
    let matched: BTreeMap<ReplicaId, Option<u64>> = progress
        .members
        .iter()
        .map(|member| (member.replica, member.matched_index))
        .collect();
    plan_membership(&voters, &learners, &matched, progress.last_index, wanted)
}

/// The leader's own log is matched by definition; openraft lists only the
/// others in its replication metrics.
fn matched_of(
    metrics: &openraft::RaftMetrics<ReplicaId, ReplicaNode>,
    replication: &BTreeMap<ReplicaId, Option<openraft::LogId<ReplicaId>>>,
    replica: ReplicaId,
) -> Option<u64> {
    if replica == metrics.id {
        return metrics.last_log_index;
    }
    replication
        .get(&replica)
        .copied()
        .flatten()
        .map(|log_id| log_id.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[ReplicaId]) -> BTreeSet<ReplicaId> {
        ids.iter().copied().collect()
    }

    fn matched(pairs: &[(ReplicaId, u64)]) -> BTreeMap<ReplicaId, Option<u64>> {
        pairs.iter().map(|&(id, index)| (id, Some(index))).collect()
    }

    #[test]
    fn the_wanted_voters_and_no_stranger_are_in_sync() {
        let action = plan_membership(
            &set(&[1, 2, 3]),
            &set(&[]),
            &matched(&[(1, 10), (2, 10), (3, 9)]),
            Some(10),
            &set(&[1, 2, 3]),
        );
        assert_eq!(action, MembershipAction::None);
    }

    #[test]
    fn a_missing_member_is_first_added_as_a_learner() {
        let action = plan_membership(
            &set(&[1, 2, 3]),
            &set(&[]),
            &matched(&[(1, 10), (2, 10)]),
            Some(10),
            &set(&[1, 2, 4]),
        );
        assert_eq!(action, MembershipAction::AddLearners(set(&[4])));
    }

    #[test]
    fn a_learner_far_behind_is_waited_for() {
        let behind = 10 + CATCH_UP_LAG_ENTRIES_MAX + 1;
        let action = plan_membership(
            &set(&[1, 2, 3]),
            &set(&[4]),
            &matched(&[(1, behind), (2, behind), (4, 10)]),
            Some(behind),
            &set(&[1, 2, 4]),
        );
        assert_eq!(action, MembershipAction::WaitForCatchUp(set(&[4])));
    }

    #[test]
    fn a_caught_up_learner_replaces_the_lost_voter_in_one_change() {
        let last = 10 + CATCH_UP_LAG_ENTRIES_MAX;
        let action = plan_membership(
            &set(&[1, 2, 3]),
            &set(&[4]),
            &matched(&[(1, last), (2, last), (4, 10)]),
            Some(last),
            &set(&[1, 2, 4]),
        );
        assert_eq!(action, MembershipAction::ChangeVoters(set(&[1, 2, 4])));
    }

    #[test]
    fn a_learner_no_longer_wanted_is_removed_by_a_voter_change() {
        let action = plan_membership(
            &set(&[1, 2, 3]),
            &set(&[5]),
            &matched(&[(1, 10), (2, 10), (3, 10), (5, 2)]),
            Some(10),
            &set(&[1, 2, 3]),
        );
        assert_eq!(action, MembershipAction::ChangeVoters(set(&[1, 2, 3])));
    }

    #[test]
    fn growing_from_one_voter_adds_then_promotes() {
        let wanted = set(&[1, 2, 3]);
        let add = plan_membership(&set(&[1]), &set(&[]), &matched(&[(1, 5)]), Some(5), &wanted);
        assert_eq!(add, MembershipAction::AddLearners(set(&[2, 3])));
        let promote = plan_membership(
            &set(&[1]),
            &set(&[2, 3]),
            &matched(&[(1, 5), (2, 5), (3, 4)]),
            Some(5),
            &wanted,
        );
        assert_eq!(promote, MembershipAction::ChangeVoters(wanted));
    }
}
