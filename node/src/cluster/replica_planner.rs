//! Which nodes should hold each shard group (`docs/cluster.md`,
//! "Replicated shards (design)", "Re-replication"): a pure planner, like
//! `planner` for shard moves. Given the members that may hold replicas,
//! the replication factor and the groups' current replica sets, it answers
//! the sets that should change:
//!
//! - a member that may no longer hold replicas (it left, is draining, or
//!   was declared lost) is dropped from every set;
//! - a set with fewer members than the effective factor (the factor,
//!   capped at the number of eligible members) is filled with the eligible
//!   members holding the fewest replicas;
//! - while one member holds two or more replicas more than another, one
//!   replica moves from the fullest to the emptiest, one group at a time;
//! - two replicas of a group are never on one node, and a set's order is
//!   kept (its first member is the group's preferred leader).
//!
//! Planning is deterministic (ties broken by node id, then group), and a
//! plan applied and planned again changes nothing.

use super::placement::NodeId;
use crate::replication::GroupId;
use std::collections::{BTreeMap, BTreeSet};

/// Every group's replica set: the members in order.
pub type ReplicaSets = BTreeMap<GroupId, Vec<NodeId>>;

/// The sets of `groups` groups that should change, given the members
/// `eligible` to hold replicas, the `factor` and the `current` sets (a
/// group missing from `current` has no replica yet).
pub fn plan_replica_sets(
    eligible: &BTreeSet<NodeId>,
    factor: usize,
    groups: u32,
    current: &ReplicaSets,
) -> ReplicaSets {
    let factor = factor.min(eligible.len());
    let mut sets: ReplicaSets = (0..groups)
        .map(|group| {
            let kept: Vec<NodeId> = current
                .get(&group)
                .into_iter()
                .flatten()
                .filter(|node| eligible.contains(node))
                .copied()
                .collect();
            (group, kept)
        })
        .collect();
    if factor == 0 {
        return changed(current, sets);
    }
    shrink(&mut sets, factor);
    fill(&mut sets, eligible, factor);
    balance(&mut sets, eligible);
    for set in sets.values() {
        debug_assert!(set.len() == factor, "every set has the factor's members");
        debug_assert!(
            set.iter().collect::<BTreeSet<_>>().len() == set.len(),
            "no node twice in a set"
        );
    }
    changed(current, sets)
}

/// Drops the members past the factor (the set's last ones).
fn shrink(sets: &mut ReplicaSets, factor: usize) {
    for set in sets.values_mut() {
        set.truncate(factor);
    }
}

/// Fills each set up to the factor with the eligible members holding the
/// fewest replicas.
fn fill(sets: &mut ReplicaSets, eligible: &BTreeSet<NodeId>, factor: usize) {
    let groups: Vec<GroupId> = sets.keys().copied().collect();
    for group in groups {
        while sets[&group].len() < factor {
            let counts = replica_counts(sets, eligible);
            let set = &sets[&group];
            let emptiest = counts
                .iter()
                .filter(|(node, _)| !set.contains(node))
                .min_by_key(|(node, count)| (**count, **node))
                .map(|(node, _)| *node)
                .expect("the factor is at most the eligible members");
            sets.get_mut(&group).expect("listed").push(emptiest);
        }
    }
}

/// Moves one replica at a time from the fullest member to the emptiest
/// while they differ by two or more.
fn balance(sets: &mut ReplicaSets, eligible: &BTreeSet<NodeId>) {
    // Each move narrows the spread; the bound only guards against a bug.
    let moves_max = sets.len() * eligible.len() + 1;
    for _ in 0..moves_max {
        let counts = replica_counts(sets, eligible);
        let (fullest, most) = counts
            .iter()
            .max_by_key(|(node, count)| (**count, std::cmp::Reverse(**node)))
            .map(|(node, count)| (*node, *count))
            .expect("eligible members");
        let (emptiest, fewest) = counts
            .iter()
            .min_by_key(|(node, count)| (**count, **node))
            .map(|(node, count)| (*node, *count))
            .expect("eligible members");
        if most < fewest + 2 {
            return;
        }
        let group = sets
            .iter()
            .find(|(_, set)| set.contains(&fullest) && !set.contains(&emptiest))
            .map(|(group, _)| *group)
            .expect("the fullest holds a group the emptiest does not");
        let set = sets.get_mut(&group).expect("found");
        let position = set.iter().position(|node| *node == fullest).expect("held");
        set[position] = emptiest;
    }
    unreachable!("balancing ends within {moves_max} moves");
}

fn replica_counts(sets: &ReplicaSets, eligible: &BTreeSet<NodeId>) -> BTreeMap<NodeId, usize> {
    let mut counts: BTreeMap<NodeId, usize> = eligible.iter().map(|node| (*node, 0)).collect();
    for node in sets.values().flatten() {
        *counts
            .get_mut(node)
            .expect("sets hold eligible members only") += 1;
    }
    counts
}

fn changed(current: &ReplicaSets, planned: ReplicaSets) -> ReplicaSets {
    planned
        .into_iter()
        .filter(|(group, set)| current.get(group) != Some(set))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn apply(current: &ReplicaSets, changes: ReplicaSets) -> ReplicaSets {
        let mut sets = current.clone();
        sets.extend(changes);
        sets
    }

    #[test]
    fn a_new_cluster_spreads_its_groups_evenly() {
        let sets = plan_replica_sets(&nodes(&[1, 2, 3, 4]), 3, 8, &ReplicaSets::new());
        assert_eq!(sets.len(), 8);
        let counts = replica_counts(&sets, &nodes(&[1, 2, 3, 4]));
        assert!(counts.values().all(|count| *count == 6), "{counts:?}");
    }

    #[test]
    fn a_single_node_holds_every_group_alone() {
        let sets = plan_replica_sets(&nodes(&[1]), 3, 4, &ReplicaSets::new());
        assert!(sets.values().all(|set| set == &[1]));
    }

    #[test]
    fn a_lost_member_is_replaced_and_the_others_keep_their_places() {
        let current: ReplicaSets = [(0, vec![3, 1, 2]), (1, vec![1, 2, 3])].into();
        let changes = plan_replica_sets(&nodes(&[1, 2, 4]), 3, 2, &current);
        assert_eq!(changes[&0], [1, 2, 4], "3 dropped, 4 added last");
        assert_eq!(changes[&1], [1, 2, 4]);
    }

    #[test]
    fn a_joining_member_takes_a_fair_share() {
        let current = plan_replica_sets(&nodes(&[1, 2, 3]), 3, 4, &ReplicaSets::new());
        let changes = plan_replica_sets(&nodes(&[1, 2, 3, 4]), 3, 4, &current);
        let after = apply(&current, changes.clone());
        let counts = replica_counts(&after, &nodes(&[1, 2, 3, 4]));
        assert!(counts.values().all(|count| *count == 3), "{counts:?}");
        for (group, set) in &changes {
            let moved = set
                .iter()
                .filter(|node| !current[group].contains(node))
                .count();
            assert_eq!(moved, 1, "group {group} swaps one member at a time");
        }
    }

    proptest! {
        #[test]
        fn plans_are_valid_balanced_and_stable(
            eligible in proptest::collection::btree_set(1u64..8, 1..6),
            factor in 1usize..5,
            groups in 1u32..12,
            current in proptest::collection::btree_map(
                0u32..12,
                proptest::collection::vec(1u64..8, 0..5),
                0..12,
            ),
        ) {
            // Sets as placement could hold them: no node twice.
            let current: ReplicaSets = current
                .into_iter()
                .map(|(group, set)| {
                    let mut seen = BTreeSet::new();
                    (group, set.into_iter().filter(|node| seen.insert(*node)).collect())
                })
                .collect();
            let changes = plan_replica_sets(&eligible, factor, groups, &current);
            let after = apply(&current, changes);
            let factor = factor.min(eligible.len());
            for group in 0..groups {
                let set = &after[&group];
                prop_assert_eq!(set.len(), factor);
                prop_assert!(set.iter().all(|node| eligible.contains(node)));
                prop_assert_eq!(set.iter().collect::<BTreeSet<_>>().len(), set.len());
            }
            let planned: ReplicaSets = after
                .iter()
                .filter(|(group, _)| **group < groups)
                .map(|(group, set)| (*group, set.clone()))
                .collect();
            let counts = replica_counts(&planned, &eligible);
            let most = counts.values().max().unwrap();
            let fewest = counts.values().min().unwrap();
            prop_assert!(most - fewest <= 1, "{:?}", counts);
            prop_assert!(plan_replica_sets(&eligible, factor, groups, &planned).is_empty());
        }
    }
}
