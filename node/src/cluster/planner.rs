//! The rebalance planner (`docs/cluster.md`, "Rebalance"): pure functions
//! from a shard map (and per-shard loads) to the moves that even it out.
//! `cluster::moves::ShardMover` carries the plans out.
//!
//! `plan_rebalance` makes every member that may hold shards (not draining)
//! own ⌊shards/members⌋ or ⌈shards/members⌉ shards with as few moves as
//! possible; a drain is a rebalance without the drained node.
//! `plan_rebalance_by_load` then trades shards between the most and the
//! least loaded members without changing counts.

use super::placement::{NodeId, ShardAssignment};
use sessiondb_protocol as wire;
use std::collections::{BTreeMap, BTreeSet};

/// The most load-evening swaps one plan adds after the count balance (each
/// is two moves).
pub const LOAD_SWAPS_MAX: usize = 16;

/// `plan_rebalance_by_load` over the part of the map that can move: the
/// shards of `unreachable` members stay where they are (their owner cannot
/// export them), and those members receive none (they cannot import). The
/// reachable `members` share the other shards evenly.
pub fn plan_rebalance_reachable(
    members: &BTreeSet<NodeId>,
    shards: &[ShardAssignment],
    loads: &[u64],
    unreachable: &BTreeSet<NodeId>,
) -> Vec<wire::PlannedMove> {
    let movable: Vec<usize> = (0..shards.len())
        .filter(|shard| !unreachable.contains(&shards[*shard].owner))
        .collect();
    let movable_shards: Vec<ShardAssignment> = movable.iter().map(|shard| shards[*shard]).collect();
    let movable_loads: Vec<u64> = if loads.len() == shards.len() {
        movable.iter().map(|shard| loads[*shard]).collect()
    } else {
        Vec::new()
    };
    let targets: BTreeSet<NodeId> = members.difference(unreachable).copied().collect();
    plan_rebalance_by_load(&targets, &movable_shards, &movable_loads)
        .into_iter()
        .map(|step| wire::PlannedMove {
            shard: u32::try_from(movable[step.shard as usize]).expect("at most SHARDS_MAX shards"),
            ..step
        })
        .collect()
}

/// `plan_rebalance`, then up to `LOAD_SWAPS_MAX` trades that even out load
/// (`loads[shard]`, e.g. retained events) without changing counts: while
/// a shard of the most loaded member and one of the least loaded can swap
/// owners and leave both below the heavier one's load, the pair that leaves
/// them closest swaps. The plan is then each shard's move from its owner
/// now to its final owner, so a shard moves at most once, and a second call
/// with the same loads plans nothing (no improving trade is left). With
/// equal loads, or no loads, it is the count plan as is. Shards with a move
/// in progress stay where they are.
pub fn plan_rebalance_by_load(
    members: &BTreeSet<NodeId>,
    shards: &[ShardAssignment],
    loads: &[u64],
) -> Vec<wire::PlannedMove> {
    let counted = plan_rebalance(members, shards);
    if members.len() < 2 || loads.len() != shards.len() {
        return counted;
    }
    let initial: Vec<NodeId> = shards.iter().map(|a| a.owner).collect();
    let mut owner = initial.clone();
    for step in &counted {
        owner[step.shard as usize] = step.to;
    }
    let pinned: Vec<bool> = shards.iter().map(|a| a.moving_to.is_some()).collect();
    let mut traded = false;
    for _ in 0..LOAD_SWAPS_MAX {
        let Some((heavy_shard, light_shard)) = best_trade(members, &owner, loads, &pinned) else {
            break;
        };
        owner.swap(heavy_shard, light_shard);
        traded = true;
    }
    if !traded {
        return counted;
    }
    (0..owner.len())
        .filter(|shard| owner[*shard] != initial[*shard])
        .map(|shard| wire::PlannedMove {
            shard: u32::try_from(shard).expect("at most SHARDS_MAX shards"),
            from: initial[shard],
            to: owner[shard],
        })
        .collect()
}

/// The trade between the most and the least loaded member that leaves them
/// closest, if one leaves both below the heavier one's load: (the heavy
/// member's shard, the light member's shard).
fn best_trade(
    members: &BTreeSet<NodeId>,
    owner: &[NodeId],
    loads: &[u64],
    pinned: &[bool],
) -> Option<(usize, usize)> {
    let load_of = |node: NodeId| -> u64 {
        owner
            .iter()
            .zip(loads)
            .filter(|(o, _)| **o == node)
            .map(|(_, load)| *load)
            .sum()
    };
    let mut by_load: Vec<(u64, NodeId)> = members.iter().map(|m| (load_of(*m), *m)).collect();
    by_load.sort_unstable();
    let (light_load, light) = *by_load.first()?;
    let (heavy_load, heavy) = *by_load.last()?;
    let movable = |node: NodeId| (0..owner.len()).filter(move |s| owner[*s] == node && !pinned[*s]);
    let mut best: Option<(u64, usize, usize)> = None;
    for h in movable(heavy) {
        for l in movable(light) {
            let (h_load, l_load) = (loads[h], loads[l]);
            if h_load <= l_load {
                continue;
            }
            let new_heavy = heavy_load - h_load + l_load;
            let new_light = light_load - l_load + h_load;
            if new_heavy.max(new_light) >= heavy_load {
                continue;
            }
            let gap = new_heavy.abs_diff(new_light);
            if best.is_none_or(|(best_gap, _, _)| gap < best_gap) {
                best = Some((gap, h, l));
            }
        }
    }
    best.map(|(_, h, l)| (h, l))
}

/// The moves that even out shard counts over `members`: afterwards every
/// member owns ⌊shards/members⌋ or ⌈shards/members⌉ shards. Shards owned by
/// a node that is not a member all move. Minimal: only surplus shards move,
/// and the members that keep the larger share are those that already own
/// the most. Deterministic: ties go to the lower node id; donors give their
/// highest-numbered shards first; receivers are filled in node id order.
/// A shard with a move in progress is left where it is.
pub fn plan_rebalance(
    members: &BTreeSet<NodeId>,
    shards: &[ShardAssignment],
) -> Vec<wire::PlannedMove> {
    if members.is_empty() || shards.is_empty() {
        return Vec::new();
    }
    let mut owned: BTreeMap<NodeId, Vec<u32>> = BTreeMap::new();
    for (index, assignment) in shards.iter().enumerate() {
        let shard = u32::try_from(index).expect("at most SHARDS_MAX shards");
        owned.entry(assignment.owner).or_default().push(shard);
    }
    let count = |node: &NodeId| owned.get(node).map_or(0, Vec::len);
    let base = shards.len() / members.len();
    let larger = shards.len() % members.len();
    // The members that keep ⌈…⌉: those owning the most, lower ids first.
    let mut by_count: Vec<NodeId> = members.iter().copied().collect();
    by_count.sort_by(|a, b| count(b).cmp(&count(a)).then(a.cmp(b)));
    let target: BTreeMap<NodeId, usize> = by_count
        .iter()
        .enumerate()
        .map(|(rank, node)| (*node, base + usize::from(rank < larger)))
        .collect();
    // Surplus shards, in donor id order, each donor's highest shards first.
    let mut surplus: Vec<(u32, NodeId)> = Vec::new();
    for (owner, owned_shards) in &owned {
        let keep = target.get(owner).copied().unwrap_or(0);
        let movable: Vec<u32> = owned_shards
            .iter()
            .rev()
            .copied()
            .filter(|shard| shards[*shard as usize].moving_to.is_none())
            .collect();
        let extra = owned_shards.len().saturating_sub(keep);
        surplus.extend(movable.into_iter().take(extra).map(|shard| (shard, *owner)));
    }
    let mut receivers = target
        .iter()
        .flat_map(|(node, want)| std::iter::repeat_n(*node, want.saturating_sub(count(node))));
    surplus
        .into_iter()
        .map_while(|(shard, from)| {
            receivers
                .next()
                .map(|to| wire::PlannedMove { shard, from, to })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(owners: &[NodeId]) -> Vec<ShardAssignment> {
        owners
            .iter()
            .map(|owner| ShardAssignment {
                owner: *owner,
                epoch: 1,
                moving_to: None,
            })
            .collect()
    }

    fn apply(shards: &[ShardAssignment], plan: &[wire::PlannedMove]) -> BTreeMap<NodeId, usize> {
        let mut owners: Vec<NodeId> = shards.iter().map(|a| a.owner).collect();
        for step in plan {
            assert_eq!(owners[step.shard as usize], step.from, "{step:?}");
            owners[step.shard as usize] = step.to;
        }
        let mut counts = BTreeMap::new();
        for owner in owners {
            *counts.entry(owner).or_insert(0) += 1;
        }
        counts
    }

    /// A seeded generator of numbers below a bound (xorshift64).
    fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |bound| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        }
    }

    fn members(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn assert_balanced(
        members: &BTreeSet<NodeId>,
        shards: usize,
        counts: &BTreeMap<NodeId, usize>,
    ) {
        let low = shards / members.len();
        let high = shards.div_ceil(members.len());
        for node in members {
            let count = counts.get(node).copied().unwrap_or(0);
            assert!(
                (low..=high).contains(&count),
                "node {node}: {count} in {counts:?}"
            );
        }
        assert!(
            counts.keys().all(|node| members.contains(node)),
            "{counts:?}"
        );
    }

    #[test]
    fn an_unreachable_member_neither_gives_nor_receives() {
        // Node 3 is down and owns shards 4 and 5; 1 owns the rest.
        let shards = map(&[1, 1, 1, 1, 3, 3, 1, 1]);
        let nodes = members(&[1, 2, 3]);
        let unreachable = members(&[3]);
        let plan = plan_rebalance_reachable(&nodes, &shards, &[], &unreachable);
        assert!(
            plan.iter().all(|step| step.from != 3 && step.to != 3),
            "{plan:?}"
        );
        let counts = apply(&shards, &plan);
        // The six movable shards are shared by nodes 1 and 2.
        assert_eq!((counts[&1], counts[&2], counts[&3]), (3, 3, 2), "{plan:?}");
        // With loads, still nothing of node 3 moves.
        let loads = [5, 1, 9, 2, 100, 100, 3, 4];
        let plan = plan_rebalance_reachable(&nodes, &shards, &loads, &unreachable);
        assert!(
            plan.iter().all(|step| step.from != 3 && step.to != 3),
            "{plan:?}"
        );
    }

    #[test]
    fn a_fresh_cluster_is_evened_out_with_the_fewest_moves() {
        let shards = map(&[1; 8]);
        let nodes = members(&[1, 2, 3]);
        let plan = plan_rebalance(&nodes, &shards);
        // Node 1 keeps 3 (it owns the most), 2 and 3 get 3 and 2: 5 moves.
        assert_eq!(plan.len(), 5);
        let counts = apply(&shards, &plan);
        assert_balanced(&nodes, 8, &counts);
        assert_eq!(counts[&1], 3);
        assert_eq!(
            plan,
            vec![
                wire::PlannedMove {
                    shard: 7,
                    from: 1,
                    to: 2
                },
                wire::PlannedMove {
                    shard: 6,
                    from: 1,
                    to: 2
                },
                wire::PlannedMove {
                    shard: 5,
                    from: 1,
                    to: 2
                },
                wire::PlannedMove {
                    shard: 4,
                    from: 1,
                    to: 3
                },
                wire::PlannedMove {
                    shard: 3,
                    from: 1,
                    to: 3
                },
            ]
        );
        // Deterministic, and a balanced map needs nothing more.
        assert_eq!(plan_rebalance(&nodes, &shards), plan);
        let mut after = shards.clone();
        for step in &plan {
            after[step.shard as usize].owner = step.to;
        }
        assert!(plan_rebalance(&nodes, &after).is_empty());
    }

    #[test]
    fn the_number_of_moves_is_the_surplus() {
        // Counts 5, 1, 0 over 6 shards and 3 members: 2 each; node 1 gives
        // 3, node 3 takes 2, node 2 takes 1.
        let shards = map(&[1, 1, 2, 1, 1, 1]);
        let nodes = members(&[1, 2, 3]);
        let plan = plan_rebalance(&nodes, &shards);
        assert_eq!(plan.len(), 3);
        assert_balanced(&nodes, 6, &apply(&shards, &plan));
        // With a remainder the larger share stays with the largest owners:
        // counts 4, 3 over 7 shards and 2 members need no move.
        let shards = map(&[1, 2, 1, 2, 1, 2, 1]);
        assert!(plan_rebalance(&members(&[1, 2]), &shards).is_empty());
        // 6, 1 over 7 shards: one node keeps 4, so 2 moves.
        let shards = map(&[1, 1, 1, 1, 1, 1, 2]);
        let plan = plan_rebalance(&members(&[1, 2]), &shards);
        assert_eq!(plan.len(), 2);
        assert_balanced(&members(&[1, 2]), 7, &apply(&shards, &plan));
    }

    #[test]
    fn shards_of_departed_nodes_all_move_and_moving_shards_stay() {
        let shards = map(&[9, 9, 1, 2]);
        let nodes = members(&[1, 2]);
        let plan = plan_rebalance(&nodes, &shards);
        assert_eq!(plan.len(), 2);
        assert!(plan.iter().all(|step| step.from == 9));
        assert_balanced(&nodes, 4, &apply(&shards, &plan));

        let mut shards = map(&[1, 1, 1, 1]);
        shards[3].moving_to = Some(2);
        let plan = plan_rebalance(&nodes, &shards);
        assert!(plan.iter().all(|step| step.shard != 3), "{plan:?}");
        assert_eq!(plan.len(), 2);
        // Nothing to do without members or shards.
        assert!(plan_rebalance(&BTreeSet::new(), &shards).is_empty());
        assert!(plan_rebalance(&nodes, &[]).is_empty());
    }

    #[test]
    fn load_swaps_even_out_skewed_shards_and_keep_counts() {
        // Node 1 holds the two heavy shards, node 2 the two light ones:
        // counts are even, loads are not; one trade evens them.
        let shards = map(&[1, 1, 2, 2]);
        let loads = [100, 90, 1, 2];
        let nodes = members(&[1, 2]);
        let plan = plan_rebalance_by_load(&nodes, &shards, &loads);
        assert_eq!(plan.len(), 2, "{plan:?}");
        let counts = apply(&shards, &plan);
        assert_balanced(&nodes, 4, &counts);
        let mut owners: Vec<NodeId> = shards.iter().map(|a| a.owner).collect();
        for step in &plan {
            owners[step.shard as usize] = step.to;
        }
        let load = |node| -> u64 {
            owners
                .iter()
                .zip(loads)
                .filter(|(o, _)| **o == node)
                .map(|(_, l)| l)
                .sum()
        };
        assert!(load(1).abs_diff(load(2)) < 190 - 3, "{plan:?}");
        assert_eq!(load(1) + load(2), 193);
        // Equal loads, or no loads: the count plan alone.
        let fresh = map(&[1; 8]);
        let three = members(&[1, 2, 3]);
        assert_eq!(
            plan_rebalance_by_load(&three, &fresh, &[5; 8]),
            plan_rebalance(&three, &fresh)
        );
        assert_eq!(
            plan_rebalance_by_load(&three, &fresh, &[]),
            plan_rebalance(&three, &fresh)
        );
    }

    #[test]
    fn random_loads_never_worsen_the_spread_and_move_each_shard_once() {
        let mut next = xorshift(0x2545_F491_4F6C_DD1D);
        for _ in 0..300 {
            let member_count = 2 + next(4) as usize;
            let nodes: BTreeSet<NodeId> = (1..=member_count as u64).collect();
            let shard_count = member_count + next(30) as usize;
            let owners: Vec<NodeId> = (0..shard_count)
                .map(|_| 1 + next(member_count as u64))
                .collect();
            let loads: Vec<u64> = (0..shard_count).map(|_| next(1_000)).collect();
            let shards = map(&owners);
            let counted = plan_rebalance(&nodes, &shards);
            let plan = plan_rebalance_by_load(&nodes, &shards, &loads);
            assert_balanced(&nodes, shard_count, &apply(&shards, &plan));
            // A fixed point: from the planned map, nothing more to do.
            let mut after = shards.clone();
            for step in &plan {
                after[step.shard as usize].owner = step.to;
            }
            if plan.len() < counted.len() + 2 * LOAD_SWAPS_MAX {
                assert!(plan_rebalance_by_load(&nodes, &after, &loads).is_empty());
            }
            let moved: BTreeSet<u32> = plan.iter().map(|step| step.shard).collect();
            assert_eq!(moved.len(), plan.len(), "a shard moves at most once");
            let spread = |plan: &[wire::PlannedMove]| {
                let mut owner = owners.clone();
                for step in plan {
                    owner[step.shard as usize] = step.to;
                }
                let per: Vec<u64> = nodes
                    .iter()
                    .map(|node| {
                        owner
                            .iter()
                            .zip(&loads)
                            .filter(|(o, _)| *o == node)
                            .map(|(_, l)| *l)
                            .sum()
                    })
                    .collect();
                per.iter().max().copied().unwrap_or(0) - per.iter().min().copied().unwrap_or(0)
            };
            assert!(spread(&plan) <= spread(&counted), "{owners:?} {loads:?}");
        }
    }

    #[test]
    fn random_maps_end_balanced_with_exactly_the_surplus_moved() {
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..500 {
            let member_count = 1 + next(6) as usize;
            let nodes: BTreeSet<NodeId> = (1..=member_count as u64).collect();
            let shard_count = 1 + next(40) as usize;
            // Owners among the members and one departed node (99).
            let owners: Vec<NodeId> = (0..shard_count)
                .map(|_| {
                    let pick = next(member_count as u64 + 1);
                    if pick == member_count as u64 {
                        99
                    } else {
                        pick + 1
                    }
                })
                .collect();
            let shards = map(&owners);
            let plan = plan_rebalance(&nodes, &shards);
            let counts = apply(&shards, &plan);
            assert_balanced(&nodes, shard_count, &counts);
            // Lower bound on moves: every shard of a departed node, plus
            // what members hold above ⌈…⌉, plus what the larger-share slots
            // force beyond that. The plan moves each shard at most once.
            let moved: BTreeSet<u32> = plan.iter().map(|step| step.shard).collect();
            assert_eq!(moved.len(), plan.len());
            let mut before: BTreeMap<NodeId, usize> = BTreeMap::new();
            for owner in &owners {
                *before.entry(*owner).or_insert(0) += 1;
            }
            let minimal: usize = before
                .iter()
                .map(|(node, count)| count.saturating_sub(counts.get(node).copied().unwrap_or(0)))
                .sum();
            assert_eq!(plan.len(), minimal, "{owners:?} → {plan:?}");
            // And no balanced map is closer: over every choice of the
            // members that get the larger share, the fewest moves (shards
            // not kept by their owner) is the plan's length.
            let (base, larger) = (shard_count / member_count, shard_count % member_count);
            let best = (0u32..(1 << member_count))
                .filter(|mask| mask.count_ones() as usize == larger)
                .map(|mask| {
                    let kept: usize = nodes
                        .iter()
                        .enumerate()
                        .map(|(rank, node)| {
                            let target = base + usize::from(mask & (1 << rank) != 0);
                            before.get(node).copied().unwrap_or(0).min(target)
                        })
                        .sum();
                    shard_count - kept
                })
                .min()
                .expect("some choice");
            assert_eq!(plan.len(), best, "{owners:?} → {plan:?}");
        }
    }
}
