//! The checkers (`docs/reliability.md`, "Properties and checkers"): pure
//! functions of the recorded history, the final read of every shard and
//! the final results. Each returns its violations as sentences.

use crate::api::{FailCode, ShardEvents};
use crate::history::{FaultRecord, History, Observation, Op, OpOutcome};
use crate::nemesis::NemesisKind;
use sessiondb_protocol::{ErrorCode, Event, ResultsResponse};
use sessiondb_test_support::oracle::{compare, Oracle, OracleSettings};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

/// Failure codes after which the batch may still have been applied: the
/// log could not confirm the write (it may be on disk and replayed at the
/// next start), or the node was stopping. Such a failure counts as
/// "unknown" for the "failed events are absent" property.
pub const MAYBE_APPLIED_CODES: &[ErrorCode] =
    &[ErrorCode::StorageUnavailable, ErrorCode::ShuttingDown];
/// At most this many examples are printed per violated property.
const EXAMPLES_MAX: usize = 5;

/// The distinct events a run sends and their shards.
#[derive(Debug, Clone, Copy)]
pub struct EventTable<'a> {
    pub events: &'a [Event],
    pub shard_of: &'a [u32],
}

/// Every node's copy of every shard after heal, and the final owners.
#[derive(Debug, Clone, Default)]
pub struct FinalRead {
    /// (owner, epoch) by shard, from the settled cluster view.
    pub owners: Vec<(u64, u64)>,
    pub copies: Vec<ShardEvents>,
}

/// One results answer to compare with the oracle.
#[derive(Debug, Clone)]
pub struct ResultsCase {
    pub experiment: String,
    pub breakdown: Option<String>,
    pub from: i64,
    pub to: i64,
    pub actual: ResultsResponse,
}

/// The outcome of the checkers.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Broken properties: the run is red.
    pub violations: Vec<String>,
    /// Planned faults that did not take effect: the run is invalid, not
    /// green.
    pub invalid: Vec<String>,
    /// Facts worth reporting that break nothing.
    pub notes: Vec<String>,
}

impl Verdict {
    pub fn is_green(&self) -> bool {
        self.violations.is_empty() && self.invalid.is_empty()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if !self.violations.is_empty() {
            "RED"
        } else if !self.invalid.is_empty() {
            "INVALID"
        } else {
            "GREEN"
        };
        writeln!(f, "verdict: {verdict}")?;
        for violation in &self.violations {
            writeln!(f, "  violation: {violation}")?;
        }
        for invalid in &self.invalid {
            writeln!(f, "  invalid (fault not applied): {invalid}")?;
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        Ok(())
    }
}

/// What the history says about one event.
#[derive(Debug, Clone, Copy, Default)]
struct Fate {
    acked: bool,
    /// Some attempt may have applied it (no answer, or a maybe-applied
    /// failure).
    maybe: bool,
    failed: bool,
    /// Some attempt failed with a maybe-applied code.
    maybe_failed: bool,
}

fn fates(ops: &[Op], events: usize) -> Vec<Fate> {
    let mut fates = vec![Fate::default(); events];
    for op in ops {
        match &op.outcome {
            OpOutcome::Ok { rejected } => {
                let rejected: HashSet<usize> = rejected.iter().map(|(index, _)| *index).collect();
                for (position, &event) in op.events.iter().enumerate() {
                    if rejected.contains(&position) {
                        fates[event].failed = true;
                    } else {
                        fates[event].acked = true;
                    }
                }
            }
            OpOutcome::Fail { code } => {
                let maybe =
                    matches!(code, FailCode::Node(code) if MAYBE_APPLIED_CODES.contains(code));
                for &event in &op.events {
                    fates[event].failed = true;
                    fates[event].maybe |= maybe;
                    fates[event].maybe_failed |= maybe;
                }
            }
            OpOutcome::Unknown { .. } => {
                for &event in &op.events {
                    fates[event].maybe = true;
                }
            }
        }
    }
    fates
}

fn examples<T: fmt::Debug>(items: &[T]) -> String {
    let shown: Vec<&T> = items.iter().take(EXAMPLES_MAX).collect();
    format!("{shown:?}")
}

/// Every acknowledged event is held exactly once by its shard's final
/// owner; no event that only ever failed is held; nothing unknown is held;
/// no node other than the final owner still claims a shard. Answers the
/// applied set (indices into the table).
fn check_presence(
    table: EventTable<'_>,
    fates: &[Fate],
    read: &FinalRead,
    verdict: &mut Verdict,
) -> Vec<usize> {
    let index: HashMap<(&str, &str), usize> = table
        .events
        .iter()
        .enumerate()
        .map(|(i, event)| ((event.visitor.as_str(), event.id.as_str()), i))
        .collect();
    let mut held = vec![0usize; table.events.len()];
    let mut strangers = Vec::new();
    let mut wrong_shard = Vec::new();
    let mut stale = Vec::new();
    for copy in &read.copies {
        let (owner, epoch) = read.owners[copy.shard as usize];
        if copy.node_id != owner {
            if copy.role != "elsewhere" {
                verdict.violations.push(format!(
                    "two owners: node {} calls itself {} of shard {} at epoch {} while the cluster says node {owner} owns it at epoch {epoch}",
                    copy.node_id, copy.role, copy.shard, copy.epoch
                ));
            }
            if !copy.events.is_empty() {
                stale.push((copy.node_id, copy.shard, copy.events.len()));
            }
            continue;
        }
        if copy.role != "owner" || copy.epoch != epoch {
            verdict.violations.push(format!(
                "the owner of shard {} (node {owner}, epoch {epoch}) reports role {} at epoch {}",
                copy.shard, copy.role, copy.epoch
            ));
        }
        for event in &copy.events {
            match index.get(&(event.visitor.as_str(), event.id.as_str())) {
                Some(&i) => {
                    held[i] += 1;
                    if table.shard_of[i] != copy.shard {
                        wrong_shard.push((copy.shard, event.clone()));
                    }
                }
                None => strangers.push(event.clone()),
            }
        }
    }
    if !stale.is_empty() {
        verdict.notes.push(format!(
            "non-owners still hold moved shards' state (a drop did not reach them; never served): (node, shard, events) {}",
            examples(&stale)
        ));
    }
    if !strangers.is_empty() {
        verdict.violations.push(format!(
            "{} events held that no client sent: {}",
            strangers.len(),
            examples(&strangers)
        ));
    }
    if !wrong_shard.is_empty() {
        verdict.violations.push(format!(
            "{} events held by the wrong shard: {}",
            wrong_shard.len(),
            examples(&wrong_shard)
        ));
    }
    let describe = |i: usize| {
        let event = &table.events[i];
        format!(
            "{}/{} (shard {})",
            event.visitor, event.id, table.shard_of[i]
        )
    };
    let lost: Vec<String> = (0..held.len())
        .filter(|&i| fates[i].acked && held[i] == 0)
        .map(describe)
        .collect();
    if !lost.is_empty() {
        verdict.violations.push(format!(
            "{} acknowledged events lost: {}",
            lost.len(),
            examples(&lost)
        ));
    }
    let doubled: Vec<String> = (0..held.len())
        .filter(|&i| held[i] > 1)
        .map(describe)
        .collect();
    if !doubled.is_empty() {
        verdict.violations.push(format!(
            "{} events held more than once: {}",
            doubled.len(),
            examples(&doubled)
        ));
    }
    let resurrected: Vec<String> = (0..held.len())
        .filter(|&i| held[i] > 0 && !fates[i].acked && !fates[i].maybe && fates[i].failed)
        .map(describe)
        .collect();
    if !resurrected.is_empty() {
        verdict.violations.push(format!(
            "{} events held although every attempt failed: {}",
            resurrected.len(),
            examples(&resurrected)
        ));
    }
    let never_sent: Vec<String> = (0..held.len())
        .filter(|&i| held[i] > 0 && !fates[i].acked && !fates[i].maybe && !fates[i].failed)
        .map(describe)
        .collect();
    if !never_sent.is_empty() {
        verdict.violations.push(format!(
            "{} events held that were never sent: {}",
            never_sent.len(),
            examples(&never_sent)
        ));
    }
    let maybe_failed_present = (0..held.len())
        .filter(|&i| held[i] > 0 && !fates[i].acked && fates[i].maybe_failed)
        .count();
    if maybe_failed_present > 0 {
        verdict.notes.push(format!(
            "{maybe_failed_present} events answered {MAYBE_APPLIED_CODES:?} (never acknowledged) were applied anyway"
        ));
    }
    (0..held.len()).filter(|&i| held[i] > 0).collect()
}

/// The cluster's results over the applied set equal the oracle's.
fn check_results(
    table: EventTable<'_>,
    applied: &[usize],
    cases: &[ResultsCase],
    verdict: &mut Verdict,
) {
    let events: Vec<Event> = applied.iter().map(|&i| table.events[i].clone()).collect();
    let oracle = Oracle::new(OracleSettings::default(), &events);
    let keys: Vec<&str> = crate::run::KEYS.to_vec();
    for case in cases {
        if case.actual.partial {
            verdict.violations.push(format!(
                "results of {} ({:?}) are partial after heal: missing nodes {:?}",
                case.experiment, case.breakdown, case.actual.missing_nodes
            ));
            continue;
        }
        let expected = oracle.results(
            &case.experiment,
            case.from,
            case.to,
            case.breakdown.as_deref(),
            &keys,
        );
        let problems = compare(&case.actual, &expected, &keys);
        if !problems.is_empty() {
            verdict.violations.push(format!(
                "results of {} (breakdown {:?}) disagree with the oracle over the {} applied events in {} places: {}",
                case.experiment,
                case.breakdown,
                applied.len(),
                problems.len(),
                examples(&problems)
            ));
        }
    }
}

/// Per observer, a shard's epoch never goes back; one (shard, epoch) names
/// one owner in every observation.
fn check_epochs(observations: &[Observation], verdict: &mut Verdict) {
    let mut last: HashMap<(u64, usize), (u64, u64)> = HashMap::new();
    let mut owners: HashMap<(usize, u64), u64> = HashMap::new();
    let mut backwards = Vec::new();
    let mut conflicting = Vec::new();
    for observation in observations {
        for (shard, &(owner, epoch, _)) in observation.shards.iter().enumerate() {
            if let Some(&(seen_epoch, seen_at)) = last.get(&(observation.observer, shard)) {
                if epoch < seen_epoch {
                    backwards.push(format!(
                        "node {} saw shard {shard} at epoch {seen_epoch} ({seen_at} ms) then {epoch} ({} ms)",
                        observation.observer, observation.at_ms
                    ));
                }
            }
            last.insert((observation.observer, shard), (epoch, observation.at_ms));
            let known = *owners.entry((shard, epoch)).or_insert(owner);
            if known != owner {
                conflicting.push(format!(
                    "shard {shard} epoch {epoch}: owner {known} and {owner} (node {} at {} ms)",
                    observation.observer, observation.at_ms
                ));
            }
        }
    }
    if !backwards.is_empty() {
        verdict.violations.push(format!(
            "{} observations where a shard's epoch went back: {}",
            backwards.len(),
            examples(&backwards)
        ));
    }
    if !conflicting.is_empty() {
        verdict.violations.push(format!(
            "{} observations of two owners for one shard epoch: {}",
            conflicting.len(),
            examples(&conflicting)
        ));
    }
}

/// No node acknowledges a shard's events after the cluster committed the
/// shard to another node, unless it became the owner again at a newer
/// epoch. An observation of epoch `e` at time `t` proves `e` was committed
/// before `t`; an ack sent to node N at `invoke` after epoch `e` (owner
/// O ≠ N) was observed is legal only if N owns some epoch above `e`.
fn check_single_acknowledger(ops: &[Op], observations: &[Observation], verdict: &mut Verdict) {
    // Per shard: epoch → (owner, first time observed).
    let mut epochs: BTreeMap<usize, BTreeMap<u64, (u64, u64)>> = BTreeMap::new();
    for observation in observations {
        for (shard, &(owner, epoch, _)) in observation.shards.iter().enumerate() {
            let entry = epochs
                .entry(shard)
                .or_default()
                .entry(epoch)
                .or_insert((owner, observation.at_ms));
            entry.1 = entry.1.min(observation.at_ms);
        }
    }
    let mut stale_acks = Vec::new();
    for op in ops {
        let OpOutcome::Ok { rejected } = &op.outcome else {
            continue;
        };
        let rejected: HashSet<usize> = rejected.iter().map(|(index, _)| *index).collect();
        let acked_shards: BTreeSet<u32> = op
            .shards
            .iter()
            .enumerate()
            .filter(|(position, _)| !rejected.contains(position))
            .map(|(_, &shard)| shard)
            .collect();
        for shard in acked_shards {
            let Some(history) = epochs.get(&(shard as usize)) else {
                continue;
            };
            let Some((&epoch_before, &(owner_before, _))) = history
                .iter()
                .filter(|(_, &(_, first_ms))| first_ms < op.invoke_ms)
                .max_by_key(|(&epoch, _)| epoch)
            else {
                continue;
            };
            if owner_before == op.node {
                continue;
            }
            let later: Vec<(u64, u64)> = history
                .range(epoch_before + 1..)
                .map(|(&epoch, &(owner, _))| (epoch, owner))
                .collect();
            let owns_later = later.iter().any(|&(_, owner)| owner == op.node);
            let contiguous = later
                .iter()
                .enumerate()
                .all(|(offset, &(epoch, _))| epoch == epoch_before + 1 + offset as u64);
            if !owns_later && contiguous {
                stale_acks.push(format!(
                    "node {} acknowledged shard {shard} events at {}..{} ms after epoch {epoch_before} (owner {owner_before}) was committed",
                    op.node, op.invoke_ms, op.complete_ms
                ));
            }
        }
    }
    if !stale_acks.is_empty() {
        verdict.violations.push(format!(
            "{} acknowledgements by a node that no longer owned the shard: {}",
            stale_acks.len(),
            examples(&stale_acks)
        ));
    }
}

/// During a fault that takes out one node (kill, pause, isolation), the
/// other nodes keep acknowledging. A fault during which no client even
/// tried a node outside it proves nothing: the run is invalid.
fn check_majority_served(ops: &[Op], faults: &[FaultRecord], verdict: &mut Verdict) {
    for fault in faults {
        if fault.minority.is_empty() || !fault.applied {
            continue;
        }
        let to_majority: Vec<&Op> = ops
            .iter()
            .filter(|op| {
                !fault.minority.contains(&op.node)
                    && op.invoke_ms >= fault.start_ms
                    && op.complete_ms <= fault.end_ms
            })
            .collect();
        let served = to_majority.iter().any(|op| {
            matches!(&op.outcome, OpOutcome::Ok { rejected } if rejected.len() < op.events.len())
        });
        if to_majority.is_empty() {
            verdict.invalid.push(format!(
                "no client request reached a node outside {:?} during {} [{}..{} ms]: no load to prove the majority served",
                fault.minority, fault.planned, fault.start_ms, fault.end_ms
            ));
        } else if !served {
            let outcomes: Vec<&OpOutcome> = to_majority.iter().map(|op| &op.outcome).collect();
            verdict.violations.push(format!(
                "no node outside {:?} acknowledged anything during {} [{}..{} ms] ({} requests: {})",
                fault.minority,
                fault.planned,
                fault.start_ms,
                fault.end_ms,
                to_majority.len(),
                examples(&outcomes)
            ));
        }
    }
}

/// Whether a disk fault on `node` showed in the history during `window`:
/// a `storage_unavailable` answer for a failing fsync, an acknowledgement
/// slower than the delay for a slow one.
pub fn disk_fault_evidence(
    ops: &[Op],
    node: u64,
    kind: NemesisKind,
    parameter: i64,
    window: (u64, u64),
) -> (bool, String) {
    let in_window: Vec<&Op> = ops
        .iter()
        .filter(|op| op.node == node && op.invoke_ms >= window.0 && op.invoke_ms <= window.1)
        .collect();
    match kind {
        NemesisKind::DiskFail => {
            let failed = in_window
                .iter()
                .filter(|op| {
                    matches!(
                        &op.outcome,
                        OpOutcome::Fail {
                            code: FailCode::Node(ErrorCode::StorageUnavailable)
                        }
                    )
                })
                .count();
            (
                failed > 0,
                format!(
                    "{failed} of {} requests to node {node} answered storage_unavailable",
                    in_window.len()
                ),
            )
        }
        _ => {
            let slowest = in_window
                .iter()
                .filter(|op| matches!(op.outcome, OpOutcome::Ok { .. }))
                .map(|op| op.complete_ms - op.invoke_ms)
                .max();
            let applied = slowest.is_some_and(|ms| ms >= parameter as u64);
            (
                applied,
                format!(
                    "slowest acknowledgement of node {node}: {slowest:?} ms over {} requests (fsync delay {parameter} ms)",
                    in_window.len()
                ),
            )
        }
    }
}

/// Runs every checker.
pub fn check_all(
    history: &History,
    table: EventTable<'_>,
    read: &FinalRead,
    results: &[ResultsCase],
) -> Verdict {
    let mut verdict = Verdict::default();
    let ops = history.ops();
    let observations = history.observations();
    let faults = history.faults();
    for fault in &faults {
        if !fault.applied {
            verdict
                .invalid
                .push(format!("{} — {}", fault.planned, fault.evidence));
        }
    }
    let fates = fates(&ops, table.events.len());
    let applied = check_presence(table, &fates, read, &mut verdict);
    check_results(table, &applied, results, &mut verdict);
    check_epochs(&observations, &mut verdict);
    check_single_acknowledger(&ops, &observations, &mut verdict);
    check_majority_served(&ops, &faults, &mut verdict);
    let acked = fates.iter().filter(|fate| fate.acked).count();
    verdict.notes.push(format!(
        "{acked} events acknowledged, {} applied, {} never acknowledged",
        applied.len(),
        table.events.len() - acked
    ));
    verdict
}

#[cfg(test)]
mod tests {
    //! Each checker on small hand-made histories: it must flag the broken
    //! property and pass the sound one, or a green run would prove nothing.

    use super::*;
    use sessiondb_protocol::{EventType, RejectCode, Timestamp};

    fn event(visitor: &str, id: &str) -> Event {
        Event {
            id: id.to_string(),
            project: "chaos".to_string(),
            visitor: visitor.to_string(),
            ts: Timestamp::Milliseconds(1_764_000_000_000),
            event_type: EventType::Custom,
            key: Some("purchase".to_string()),
            value: None,
            attributes: Default::default(),
            decisions: Vec::new(),
        }
    }

    fn op(
        node: u64,
        events: Vec<usize>,
        shards: Vec<u32>,
        at_ms: (u64, u64),
        outcome: OpOutcome,
    ) -> Op {
        Op {
            client: 0,
            node,
            events,
            shards,
            invoke_ms: at_ms.0,
            complete_ms: at_ms.1,
            outcome,
        }
    }

    fn ok() -> OpOutcome {
        OpOutcome::Ok {
            rejected: Vec::new(),
        }
    }

    fn fail(code: FailCode) -> OpOutcome {
        OpOutcome::Fail { code }
    }

    fn node_fail(code: ErrorCode) -> OpOutcome {
        fail(FailCode::Node(code))
    }

    /// The final read: node 1 owns shard 0 at epoch 1 and holds `held`.
    fn read(held: &[(&str, &str)]) -> FinalRead {
        FinalRead {
            owners: vec![(1, 1)],
            copies: vec![ShardEvents {
                node_id: 1,
                shard: 0,
                role: "owner".to_string(),
                owner: 1,
                epoch: 1,
                events: held
                    .iter()
                    .map(|(visitor, id)| crate::api::AuditedEvent {
                        project: "chaos".to_string(),
                        visitor: visitor.to_string(),
                        id: id.to_string(),
                    })
                    .collect(),
            }],
        }
    }

    fn presence(ops: &[Op], held: &[(&str, &str)]) -> Verdict {
        let events = vec![event("v1", "a"), event("v1", "b"), event("v2", "c")];
        let shards = vec![0, 0, 0];
        let table = EventTable {
            events: &events,
            shard_of: &shards,
        };
        let mut verdict = Verdict::default();
        check_presence(table, &fates(ops, events.len()), &read(held), &mut verdict);
        verdict
    }

    #[test]
    fn presence_flags_lost_doubled_resurrected_and_unsent_events() {
        let acked = [op(1, vec![0, 1], vec![0, 0], (0, 5), ok())];
        assert!(presence(&acked, &[("v1", "a"), ("v1", "b")])
            .violations
            .is_empty());

        let lost = presence(&acked, &[("v1", "a")]);
        assert!(
            lost.violations[0].contains("1 acknowledged events lost"),
            "{lost}"
        );

        let doubled = read(&[("v1", "a"), ("v1", "b")]);
        let mut copies = doubled.copies.clone();
        copies.extend(doubled.copies.clone());
        let events = vec![event("v1", "a"), event("v1", "b"), event("v2", "c")];
        let table = EventTable {
            events: &events,
            shard_of: &[0, 0, 0],
        };
        let mut verdict = Verdict::default();
        let final_read = FinalRead {
            owners: doubled.owners,
            copies,
        };
        check_presence(table, &fates(&acked, 3), &final_read, &mut verdict);
        assert!(
            verdict
                .violations
                .iter()
                .any(|v| v.contains("held more than once")),
            "{verdict}"
        );

        let failed = [
            op(1, vec![0, 1], vec![0, 0], (0, 5), ok()),
            op(1, vec![2], vec![0], (6, 8), fail(FailCode::Connect)),
        ];
        let resurrected = presence(&failed, &[("v1", "a"), ("v1", "b"), ("v2", "c")]);
        assert!(
            resurrected
                .violations
                .iter()
                .any(|v| v.contains("every attempt failed")),
            "{resurrected}"
        );
        let maybe = [
            op(1, vec![0, 1], vec![0, 0], (0, 5), ok()),
            op(
                1,
                vec![2],
                vec![0],
                (6, 8),
                node_fail(ErrorCode::StorageUnavailable),
            ),
        ];
        let maybe_applied = presence(&maybe, &[("v1", "a"), ("v1", "b"), ("v2", "c")]);
        assert!(maybe_applied.violations.is_empty(), "{maybe_applied}");
        assert!(maybe_applied
            .notes
            .iter()
            .any(|n| n.contains("applied anyway")));

        let unsent = presence(&acked, &[("v1", "a"), ("v1", "b"), ("v2", "c")]);
        assert!(
            unsent.violations.iter().any(|v| v.contains("never sent")),
            "{unsent}"
        );
        let stranger = presence(&acked, &[("v1", "a"), ("v1", "b"), ("v9", "z")]);
        assert!(
            stranger
                .violations
                .iter()
                .any(|v| v.contains("no client sent")),
            "{stranger}"
        );
    }

    #[test]
    fn a_second_claimed_owner_is_flagged() {
        let mut final_read = read(&[]);
        final_read.copies.push(ShardEvents {
            node_id: 2,
            shard: 0,
            role: "owner".to_string(),
            owner: 2,
            epoch: 1,
            events: Vec::new(),
        });
        let events: Vec<Event> = Vec::new();
        let table = EventTable {
            events: &events,
            shard_of: &[],
        };
        let mut verdict = Verdict::default();
        check_presence(table, &[], &final_read, &mut verdict);
        assert!(verdict.violations[0].starts_with("two owners"), "{verdict}");
    }

    fn observation(at_ms: u64, observer: u64, owner: u64, epoch: u64) -> Observation {
        Observation {
            at_ms,
            observer,
            leader: Some(1),
            term: 1,
            shards: vec![(owner, epoch, None)],
        }
    }

    #[test]
    fn epochs_going_back_or_naming_two_owners_are_flagged() {
        let sound = [
            observation(0, 1, 1, 1),
            observation(10, 1, 2, 2),
            observation(10, 2, 2, 2),
        ];
        let mut verdict = Verdict::default();
        check_epochs(&sound, &mut verdict);
        assert!(verdict.violations.is_empty(), "{verdict}");

        let back = [observation(0, 1, 2, 2), observation(10, 1, 1, 1)];
        let mut verdict = Verdict::default();
        check_epochs(&back, &mut verdict);
        assert!(verdict.violations[0].contains("went back"), "{verdict}");

        let two = [observation(0, 1, 1, 2), observation(5, 2, 3, 2)];
        let mut verdict = Verdict::default();
        check_epochs(&two, &mut verdict);
        assert!(verdict.violations[0].contains("two owners"), "{verdict}");
    }

    #[test]
    fn an_acknowledgement_by_a_fenced_off_owner_is_flagged() {
        // Shard 0 moved from node 1 (epoch 1) to node 2 (epoch 2), seen at
        // 100 ms; node 1 acknowledging at 200 ms is a second owner.
        let observations = [observation(0, 1, 1, 1), observation(100, 1, 2, 2)];
        let stale = [op(1, vec![0], vec![0], (200, 210), ok())];
        let mut verdict = Verdict::default();
        check_single_acknowledger(&stale, &observations, &mut verdict);
        assert!(
            verdict.violations[0].contains("no longer owned"),
            "{verdict}"
        );

        // Before the move was observed, or by the new owner: fine. A
        // rejected event is no acknowledgement.
        let fine = [
            op(1, vec![0], vec![0], (50, 60), ok()),
            op(2, vec![0], vec![0], (200, 210), ok()),
            op(
                1,
                vec![0],
                vec![0],
                (200, 210),
                OpOutcome::Ok {
                    rejected: vec![(0, RejectCode::NotOwner)],
                },
            ),
        ];
        let mut verdict = Verdict::default();
        check_single_acknowledger(&fine, &observations, &mut verdict);
        assert!(verdict.violations.is_empty(), "{verdict}");

        // Node 1 owning the shard again at epoch 3 may acknowledge again.
        let back = [
            observation(0, 1, 1, 1),
            observation(100, 1, 2, 2),
            observation(300, 1, 1, 3),
        ];
        let again = [op(1, vec![0], vec![0], (250, 320), ok())];
        let mut verdict = Verdict::default();
        check_single_acknowledger(&again, &back, &mut verdict);
        assert!(verdict.violations.is_empty(), "{verdict}");
    }

    fn isolation(minority: u64) -> FaultRecord {
        FaultRecord {
            planned: "isolate-node".to_string(),
            targets: vec![minority],
            minority: vec![minority],
            start_ms: 100,
            end_ms: 200,
            applied: true,
            evidence: String::new(),
        }
    }

    #[test]
    fn the_majority_must_serve_and_must_have_been_asked() {
        let faults = [isolation(3)];
        let served = [op(1, vec![0], vec![0], (120, 130), ok())];
        let mut verdict = Verdict::default();
        check_majority_served(&served, &faults, &mut verdict);
        assert!(verdict.is_green(), "{verdict}");

        let refused = [op(
            1,
            vec![0],
            vec![0],
            (120, 130),
            node_fail(ErrorCode::Overloaded),
        )];
        let mut verdict = Verdict::default();
        check_majority_served(&refused, &faults, &mut verdict);
        assert!(
            verdict.violations[0].contains("acknowledged anything"),
            "{verdict}"
        );

        let only_minority = [op(3, vec![0], vec![0], (120, 130), ok())];
        let mut verdict = Verdict::default();
        check_majority_served(&only_minority, &faults, &mut verdict);
        assert!(
            verdict.violations.is_empty() && verdict.invalid.len() == 1,
            "{verdict}"
        );
    }

    #[test]
    fn disk_faults_need_evidence_in_their_window() {
        let ops = [
            op(
                2,
                vec![0],
                vec![0],
                (110, 120),
                node_fail(ErrorCode::StorageUnavailable),
            ),
            op(2, vec![0], vec![0], (130, 600), ok()),
            op(1, vec![0], vec![0], (130, 900), ok()),
        ];
        assert!(disk_fault_evidence(&ops, 2, NemesisKind::DiskFail, 3, (100, 200)).0);
        assert!(!disk_fault_evidence(&ops, 1, NemesisKind::DiskFail, 3, (100, 200)).0);
        assert!(disk_fault_evidence(&ops, 2, NemesisKind::DiskSlow, 400, (100, 200)).0);
        assert!(!disk_fault_evidence(&ops, 2, NemesisKind::DiskSlow, 500, (100, 200)).0);
        assert!(!disk_fault_evidence(&ops, 2, NemesisKind::DiskSlow, 400, (300, 400)).0);
    }
}
