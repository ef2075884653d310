//! The nemeses: faults drawn from a seeded schedule, carried out against
//! the Docker cluster, each verified to have taken effect (a fault that
//! did not is recorded as not applied, which makes the run invalid).
//!
//! Targets that depend on the cluster's state when the fault starts (the
//! Raft leader, a shard's owner) are resolved then; the schedule fixes the
//! rest (kind, order, timing, parameters, the seeded choice among
//! candidates), so a seed replays the same schedule.

use crate::api::{Answer, Api};
use crate::cluster::{wait_until, DockerCluster, HEALTH_WAIT_MAX};
use crate::history::{FaultRecord, History, MoveRecord};
use anyhow::{anyhow, bail, Context};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sessiondb_test_support::poll_until;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;
const MINUTE_MS: i64 = 60 * 1000;
/// Clock offsets a skew or jump sets on one node, relative to the
/// cluster's clock: small skews both ways and one-day jumps both ways (a
/// day back puts the newest day of events in that node's future, so they
/// are refused there until the clock heals).
const CLOCK_OFFSETS_MS: &[i64] = &[-DAY_MS, -10 * MINUTE_MS, 10 * MINUTE_MS, DAY_MS];
/// `--fault-log-sync-after`: the log's fsync fails after this many more.
const SYNC_FAILURES_AFTER: &[u64] = &[0, 2, 5];
/// `--fault-log-sync-delay-ms`: every fsync of the log waits this long.
const SYNC_DELAYS_MS: &[u64] = &[150, 400];
/// How long `pause-moving-owner` keeps the owner paused: below the
/// clients' 3 s timeout (`api::INGEST_TIMEOUT`).
const PAUSE_MOVING_HOLDS_MS: &[u64] = &[1_000, 1_800, 2_400];
/// Delay between asking for a move and killing its source (so the kill
/// lands while the move is in flight, at a seeded point of it).
const MOVE_KILL_DELAYS_MS: &[u64] = &[0, 1, 3];
/// Tries of a moving-owner kill before it counts as not applied.
const MOVE_KILL_ATTEMPTS: u64 = 3;

/// Bound on finding a leader when a fault needs one (an election after
/// the previous fault may still be on).
const LEADER_WAIT_MAX: Duration = Duration::from_secs(20);

/// Every kind of fault the harness injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NemesisKind {
    /// kill -9 one node, restart it on the same data after the hold.
    KillRestart,
    /// kill -9 the Raft leader, restart it after the hold.
    KillLeader,
    /// Ask for a move of a shard whose owner is not the Raft leader, and
    /// kill -9 the owner while the move runs.
    KillMovingOwner,
    /// Ask for a move of a shard the Raft leader owns, and kill -9 the
    /// leader (owner and mover at once) while the move runs.
    KillMovingLeader,
    /// `docker pause` (cgroup freezer, like SIGSTOP) one node.
    Pause,
    /// Pause the owner of a shard (not the leader), ask for a move of that
    /// shard (its export waits for the owner), resume the owner within the
    /// clients' timeout: the requests queued meanwhile and the export race.
    PauseMovingOwner,
    /// Cut one node off from the others (minority | majority).
    IsolateNode,
    /// Cut the Raft leader off from the others.
    IsolateLeader,
    /// Cut the owner of a shard off from the others.
    IsolateOwner,
    /// Drop one node's packets to another, silently, in one direction.
    OneWay,
    /// Set one node's clock off by a skew or a one-day jump.
    Clock,
    /// Restart one node with a log whose fsync fails.
    DiskFail,
    /// Restart one node with a log whose fsync is slow.
    DiskSlow,
}

impl NemesisKind {
    pub const ALL: &'static [NemesisKind] = &[
        NemesisKind::KillRestart,
        NemesisKind::KillLeader,
        NemesisKind::KillMovingOwner,
        NemesisKind::KillMovingLeader,
        NemesisKind::Pause,
        NemesisKind::PauseMovingOwner,
        NemesisKind::IsolateNode,
        NemesisKind::IsolateLeader,
        NemesisKind::IsolateOwner,
        NemesisKind::OneWay,
        NemesisKind::Clock,
        NemesisKind::DiskFail,
        NemesisKind::DiskSlow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::KillRestart => "kill-restart",
            NemesisKind::KillLeader => "kill-leader",
            NemesisKind::KillMovingOwner => "kill-moving-owner",
            NemesisKind::KillMovingLeader => "kill-moving-leader",
            NemesisKind::Pause => "pause",
            NemesisKind::PauseMovingOwner => "pause-moving-owner",
            NemesisKind::IsolateNode => "isolate-node",
            NemesisKind::IsolateLeader => "isolate-leader",
            NemesisKind::IsolateOwner => "isolate-owner",
            NemesisKind::OneWay => "one-way",
            NemesisKind::Clock => "clock",
            NemesisKind::DiskFail => "disk-fail",
            NemesisKind::DiskSlow => "disk-slow",
        }
    }

    /// Parses a [`name`](Self::name).
    pub fn from_name(name: &str) -> Option<NemesisKind> {
        NemesisKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.name() == name)
    }
}

/// One planned fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: NemesisKind,
    /// When it starts, after the previous fault healed.
    pub gap_ms: u64,
    /// How long it lasts before it is healed.
    pub hold_ms: u64,
    /// Seeded choice among the candidate nodes (or shards), taken modulo
    /// their number when the fault starts.
    pub choice: u64,
    /// A second seeded choice (the peer of a one-way fault, a move's
    /// target).
    pub second_choice: u64,
    /// The kind's parameter: clock offset (ms), fsync failures after, fsync
    /// delay (ms), or the delay before killing a moving owner (ms).
    pub parameter: i64,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} gap={}ms hold={}ms choice={}/{} parameter={}",
            self.kind.name(),
            self.gap_ms,
            self.hold_ms,
            self.choice,
            self.second_choice,
            self.parameter
        )
    }
}

/// The faults of a run, in order; one at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub faults: Vec<Fault>,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, fault) in self.faults.iter().enumerate() {
            writeln!(f, "  {index}: {fault}")?;
        }
        Ok(())
    }
}

impl Schedule {
    /// `count` faults from `kinds` (each kind at least once when `count`
    /// allows, in a seeded order), with seeded gaps, holds and choices.
    pub fn generate(
        seed: u64,
        kinds: &[NemesisKind],
        count: usize,
        hold_ms: (u64, u64),
    ) -> Schedule {
        assert!(!kinds.is_empty(), "a schedule needs at least one kind");
        let mut random = ChaCha8Rng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7321);
        let mut order: Vec<NemesisKind> = Vec::with_capacity(count);
        while order.len() < count {
            let mut round = kinds.to_vec();
            round.shuffle(&mut random);
            order.extend(round);
        }
        order.truncate(count);
        let faults = order
            .into_iter()
            .map(|kind| {
                let parameter = match kind {
                    NemesisKind::Clock => *CLOCK_OFFSETS_MS.choose(&mut random).expect("offsets"),
                    NemesisKind::DiskFail => {
                        *SYNC_FAILURES_AFTER.choose(&mut random).expect("counts") as i64
                    }
                    NemesisKind::DiskSlow => {
                        *SYNC_DELAYS_MS.choose(&mut random).expect("delays") as i64
                    }
                    NemesisKind::PauseMovingOwner => {
                        *PAUSE_MOVING_HOLDS_MS.choose(&mut random).expect("holds") as i64
                    }
                    NemesisKind::KillMovingOwner | NemesisKind::KillMovingLeader => {
                        *MOVE_KILL_DELAYS_MS.choose(&mut random).expect("delays") as i64
                    }
                    _ => 0,
                };
                Fault {
                    kind,
                    gap_ms: random.gen_range(500..1_500),
                    hold_ms: random.gen_range(hold_ms.0..=hold_ms.1),
                    choice: random.gen(),
                    second_choice: random.gen(),
                    parameter,
                }
            })
            .collect();
        Schedule { faults }
    }
}

/// What the nemesis needs from the run.
#[derive(Debug)]
pub struct Nemesis<'a> {
    pub cluster: &'a mut DockerCluster,
    pub api: Api,
    pub history: History,
}

impl Nemesis<'_> {
    /// The leader as some node reports it, and that node's view of the
    /// shard map.
    /// Waits (at most [`LEADER_WAIT_MAX`]) while an election is on.
    async fn current_view(&self) -> anyhow::Result<crate::api::ClusterView> {
        poll_until(LEADER_WAIT_MAX, async || {
            for id in self.cluster.ids() {
                if let Answer::Ok(view) = self.api.cluster(&self.cluster.url(id)).await {
                    if view.leader.is_some() && !view.shards.is_empty() {
                        return Ok(view);
                    }
                }
            }
            Err("no node reports a leader and a shard map")
        })
        .await
        .map_err(|timed_out| anyhow!("{timed_out}"))
    }

    async fn wait_healthy(&self, id: u64) -> anyhow::Result<()> {
        let url = self.cluster.url(id);
        let api = self.api.clone();
        wait_until(
            &format!("node {id} serving /v1/health"),
            HEALTH_WAIT_MAX,
            || {
                let api = api.clone();
                let url = url.clone();
                async move { api.healthy(&url).await }
            },
        )
        .await
    }

    /// Asks the leader to move `shard` from `owner` to `to` in the
    /// background; `finished` turns true when it answers. The move goes
    /// into the history.
    fn spawn_move(
        &self,
        leader: u64,
        shard: u32,
        owner: u64,
        to: u64,
        note: &'static str,
        finished: &Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<()> {
        let api = self.api.clone();
        let url = self.cluster.url(leader);
        let history = self.history.clone();
        let finished = Arc::clone(finished);
        tokio::spawn(async move {
            let start_ms = history.clock.now_ms();
            let answer = api.move_shard(&url, shard, to).await;
            finished.store(true, Ordering::SeqCst);
            history.record_move(MoveRecord {
                what: format!("move shard {shard} {owner}→{to} ({note})"),
                start_ms,
                end_ms: history.clock.now_ms(),
                outcome: describe(&answer),
            });
        })
    }

    fn pick(&self, choice: u64, among: &[u64]) -> u64 {
        among[(choice % among.len() as u64) as usize]
    }

    /// Carries out `fault`: applies it, holds it, heals it. Returns the
    /// record (also added to the history).
    pub async fn run(&mut self, fault: &Fault) -> FaultRecord {
        let start_ms = self.history.clock.now_ms();
        let mut record = FaultRecord {
            planned: fault.to_string(),
            targets: Vec::new(),
            minority: Vec::new(),
            start_ms,
            end_ms: start_ms,
            applied: false,
            evidence: String::new(),
        };
        match self.apply_hold_heal(fault, &mut record).await {
            Ok(()) => {}
            Err(error) => {
                record.applied = false;
                record.evidence = format!("{} — error: {error:#}", record.evidence);
            }
        }
        record.end_ms = self.history.clock.now_ms();
        self.history.record_fault(record.clone());
        record
    }

    async fn apply_hold_heal(
        &mut self,
        fault: &Fault,
        record: &mut FaultRecord,
    ) -> anyhow::Result<()> {
        let hold = Duration::from_millis(fault.hold_ms);
        let ids = self.cluster.ids();
        match fault.kind {
            NemesisKind::KillRestart | NemesisKind::KillLeader => {
                let target = if fault.kind == NemesisKind::KillLeader {
                    self.current_view().await?.leader.context("no leader")?
                } else {
                    self.pick(fault.choice, &ids)
                };
                record.targets = vec![target];
                record.minority = vec![target];
                self.cluster.kill(target)?;
                let state = self.cluster.state(target)?;
                record.applied = state == "exited";
                record.evidence = format!("node {target} after kill -9: {state}");
                tokio::time::sleep(hold).await;
                self.cluster.start(target)?;
                self.wait_healthy(target).await?;
            }
            NemesisKind::KillMovingOwner | NemesisKind::KillMovingLeader => {
                // A kill that lands after the move answered is not this
                // fault: restart the node and try again (another shard,
                // no delay), at most MOVE_KILL_ATTEMPTS times.
                let mut attempts = Vec::new();
                for attempt in 0..MOVE_KILL_ATTEMPTS {
                    let delay_ms = if attempt == 0 {
                        fault.parameter as u64
                    } else {
                        0
                    };
                    let view = self.current_view().await?;
                    let leader = view.leader.context("no leader")?;
                    let wanted_owner_is_leader = fault.kind == NemesisKind::KillMovingLeader;
                    let candidates: Vec<crate::api::ShardView> = view
                        .shards
                        .iter()
                        .copied()
                        .filter(|shard| (shard.owner == leader) == wanted_owner_is_leader)
                        .collect();
                    if candidates.is_empty() {
                        bail!("no shard whose owner is (leader: {wanted_owner_is_leader}) in {view:?}");
                    }
                    let pick = fault.choice.wrapping_add(attempt);
                    let shard = candidates[(pick % candidates.len() as u64) as usize];
                    let others: Vec<u64> = ids
                        .iter()
                        .copied()
                        .filter(|id| *id != shard.owner)
                        .collect();
                    let to = self.pick(fault.second_choice, &others);
                    let owner = shard.owner;
                    record.targets = vec![owner];
                    record.minority = vec![owner];
                    // Looked up first: the kill must follow the move's
                    // start within milliseconds (a move takes ~5–15 ms).
                    let pid = self.cluster.process_id(owner)?;
                    let finished = Arc::new(AtomicBool::new(false));
                    let mover =
                        self.spawn_move(leader, shard.shard, owner, to, "owner killed", &finished);
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    self.cluster.kill_process(&pid)?;
                    let in_flight = !finished.load(Ordering::SeqCst);
                    wait_until(&format!("node {owner} exiting"), HEALTH_WAIT_MAX, || {
                        let state = self.cluster.state(owner);
                        async move { state.is_ok_and(|state| state == "exited") }
                    })
                    .await?;
                    let state = self.cluster.state(owner)?;
                    attempts.push(format!(
                        "owner {owner} of shard {} killed ({state}) {} its move to {to} finished",
                        shard.shard,
                        if in_flight { "before" } else { "after" }
                    ));
                    record.applied = state == "exited" && in_flight;
                    record.evidence = attempts.join("; ");
                    if record.applied {
                        tokio::time::sleep(hold).await;
                    }
                    self.cluster.start(owner)?;
                    self.wait_healthy(owner).await?;
                    let _ = mover.await;
                    if record.applied {
                        break;
                    }
                }
            }
            NemesisKind::Pause => {
                let target = self.pick(fault.choice, &ids);
                record.targets = vec![target];
                record.minority = vec![target];
                self.cluster.pause(target)?;
                let state = self.cluster.state(target)?;
                record.applied = state == "paused";
                record.evidence = format!("node {target}: {state}");
                tokio::time::sleep(hold).await;
                self.cluster.unpause(target)?;
            }
            NemesisKind::PauseMovingOwner => {
                let view = self.current_view().await?;
                let leader = view.leader.context("no leader")?;
                let candidates: Vec<crate::api::ShardView> = view
                    .shards
                    .iter()
                    .copied()
                    .filter(|shard| shard.owner != leader)
                    .collect();
                if candidates.is_empty() {
                    bail!("no shard owned by a node other than the leader in {view:?}");
                }
                let shard = candidates[(fault.choice % candidates.len() as u64) as usize];
                let owner = shard.owner;
                let others: Vec<u64> = ids.iter().copied().filter(|id| *id != owner).collect();
                let to = self.pick(fault.second_choice, &others);
                record.targets = vec![owner];
                record.minority = vec![owner];
                self.cluster.pause(owner)?;
                let state = self.cluster.state(owner)?;
                let finished = Arc::new(AtomicBool::new(false));
                let mover =
                    self.spawn_move(leader, shard.shard, owner, to, "owner paused", &finished);
                // Shorter than the clients' timeout, so the requests queued
                // during the pause are answered after it.
                tokio::time::sleep(Duration::from_millis(fault.parameter as u64)).await;
                let in_flight = !finished.load(Ordering::SeqCst);
                self.cluster.unpause(owner)?;
                record.applied = state == "paused" && in_flight;
                record.evidence = format!(
                    "owner {owner} of shard {} {state}; its move to {to} {} when it resumed",
                    shard.shard,
                    if in_flight {
                        "was waiting"
                    } else {
                        "had already answered"
                    }
                );
                let _ = mover.await;
            }
            NemesisKind::IsolateNode | NemesisKind::IsolateLeader | NemesisKind::IsolateOwner => {
                let target = match fault.kind {
                    NemesisKind::IsolateLeader => {
                        self.current_view().await?.leader.context("no leader")?
                    }
                    NemesisKind::IsolateOwner => {
                        let view = self.current_view().await?;
                        view.shards[(fault.choice % view.shards.len() as u64) as usize].owner
                    }
                    _ => self.pick(fault.choice, &ids),
                };
                record.targets = vec![target];
                record.minority = vec![target];
                let peers: Vec<u64> = ids.iter().copied().filter(|id| *id != target).collect();
                for &peer in &peers {
                    self.cluster.prohibit(target, peer)?;
                    self.cluster.prohibit(peer, target)?;
                }
                let mut reachable = Vec::new();
                for &peer in &peers {
                    if self.cluster.can_reach(target, peer)? {
                        reachable.push(format!("{target}→{peer}"));
                    }
                    if self.cluster.can_reach(peer, target)? {
                        reachable.push(format!("{peer}→{target}"));
                    }
                }
                record.applied = reachable.is_empty();
                record.evidence = if reachable.is_empty() {
                    format!("node {target} cut off from {peers:?} (probed both ways)")
                } else {
                    format!("still reachable: {reachable:?}")
                };
                tokio::time::sleep(hold).await;
                heal_rules(self.cluster)?;
            }
            NemesisKind::OneWay => {
                let from = self.pick(fault.choice, &ids);
                let others: Vec<u64> = ids.iter().copied().filter(|id| *id != from).collect();
                let to = self.pick(fault.second_choice, &others);
                record.targets = vec![from, to];
                self.cluster.drop_from(to, from)?;
                let blocked = !self.cluster.can_reach(from, to)?;
                record.applied = blocked;
                record.evidence = format!(
                    "packets {from}→{to} dropped: a probe from {from} to {to} {}",
                    if blocked {
                        "timed out"
                    } else {
                        "still got through"
                    }
                );
                tokio::time::sleep(hold).await;
                heal_rules(self.cluster)?;
            }
            NemesisKind::Clock => {
                let target = self.pick(fault.choice, &ids);
                record.targets = vec![target];
                let url = self.cluster.url(target);
                let skewed_ms = self.cluster.start_ms + fault.parameter;
                let set = self.api.set_clock(&url, skewed_ms).await;
                let read = self.api.now_ms(&url).await;
                record.applied = matches!(set, Answer::Ok(_)) && read == Answer::Ok(skewed_ms);
                record.evidence = format!(
                    "node {target} clock set to start{:+}ms: set {}, reads {}",
                    fault.parameter,
                    describe(&set),
                    describe(&read)
                );
                tokio::time::sleep(hold).await;
                match self.api.set_clock(&url, self.cluster.start_ms).await {
                    Answer::Ok(_) => {}
                    other => bail!("resetting node {target}'s clock: {}", describe(&other)),
                }
            }
            NemesisKind::DiskFail | NemesisKind::DiskSlow => {
                let target = self.pick(fault.choice, &ids);
                record.targets = vec![target];
                let flag = if fault.kind == NemesisKind::DiskFail {
                    "--fault-log-sync-after"
                } else {
                    "--fault-log-sync-delay-ms"
                };
                let args = vec![flag.to_string(), fault.parameter.to_string()];
                self.cluster.recreate(target, &args)?;
                self.wait_healthy(target).await?;
                // Whether the fault showed is judged from the history once
                // the hold is over (`check::disk_fault_evidence`).
                record.evidence =
                    format!("node {target} restarted with {flag} {}", fault.parameter);
                let window_start = self.history.clock.now_ms();
                tokio::time::sleep(hold).await;
                let window_end = self.history.clock.now_ms();
                let (applied, evidence) = crate::check::disk_fault_evidence(
                    &self.history.ops(),
                    target,
                    fault.kind,
                    fault.parameter,
                    (window_start, window_end),
                );
                record.applied = applied;
                record.evidence = format!("{}; {evidence}", record.evidence);
                self.cluster.recreate(target, &[])?;
                self.wait_healthy(target).await?;
            }
        }
        Ok(())
    }
}

fn heal_rules(cluster: &mut DockerCluster) -> anyhow::Result<()> {
    let problems = cluster.heal_network();
    if !problems.is_empty() {
        bail!("healing the network: {problems:?}");
    }
    Ok(())
}

/// One line for a move, clock or status answer.
pub fn describe<T: fmt::Debug>(answer: &Answer<T>) -> String {
    match answer {
        Answer::Ok(value) => {
            let text = format!("ok {value:?}");
            text.chars().take(160).collect()
        }
        Answer::Fail { code, message } => {
            let message: String = message.chars().take(160).collect();
            format!("fail {code}: {message}")
        }
        Answer::Unknown { message } => format!("unknown: {message}"),
    }
}
