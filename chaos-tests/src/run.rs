//! One chaos run: start a cluster, drive concurrent clients while the
//! nemesis works through its schedule and shards move, heal, let the
//! clients finish, read back every shard, and check the history.

use crate::api::{Answer, Api, ClusterView, FailCode};
use crate::check::{self, FinalRead, Verdict};
use crate::cluster::{wait_until, DockerCluster};
use crate::history::{History, MoveRecord, Observation, Op, OpOutcome};
use crate::nemesis::{describe, Nemesis, NemesisKind, Schedule};
use crate::Seed;
use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sessiondb_protocol::{ErrorCode, Event, RejectCode};
use sessiondb_workload::{generate, Workload, WorkloadConfig, DAY_MS, HOUR_MS};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// 2025-11-26 00:00:00 UTC: every node's manual clock at the start.
pub const START_MS: i64 = 1_764_115_200_000;
/// The project every run writes to.
pub const PROJECT: &str = "chaos";
/// Event times lie in the two days before [`START_MS`].
const SPAN_MS: i64 = 2 * DAY_MS;
/// The project's allowed lateness: the most the settings allow, so that a
/// one-day clock jump freezes nothing and every event keeps its id.
const ALLOWED_LATENESS_MS: i64 = 7 * DAY_MS;
const FUTURE_SKEW_MS: i64 = HOUR_MS;
const BUCKET_MS: i64 = HOUR_MS;
/// Breakdown asked of the results check besides the plain one.
const BREAKDOWN: &str = "browser";
pub const KEYS: &[&str] = &["add_to_cart", "purchase", "signup"];
/// Events per ingest request (before the split by owner).
const BATCH_EVENTS: usize = 20;
/// Share of events a client gives up on after a failed or unknown attempt
/// (instead of retrying), so that "failed events are absent" is tested.
const ABANDON_SHARE: f64 = 0.2;
/// Time a fault takes besides its gap and hold (restarts, probes), for
/// pacing the clients.
const FAULT_OVERHEAD_MS: u64 = 2_500;
/// Period of the ownership observer's `GET /v1/cluster` on every node.
const OBSERVE_INTERVAL: Duration = Duration::from_millis(250);
/// Bound on the cluster forming (3 members, a leader, a shard map).
const FORM_WAIT_MAX: Duration = Duration::from_secs(90);
/// Bound, after the last fault healed, on every node serving, agreeing on a
/// leader, and every shard owned with no move in flight.
pub const HEAL_WAIT_MAX: Duration = Duration::from_secs(60);
/// Bound, after heal, on the clients getting every event they still hold
/// acknowledged.
pub const DRAIN_WAIT_MAX: Duration = Duration::from_secs(60);
/// The same bound when the cluster did not settle after heal.
const UNSETTLED_DRAIN_WAIT_MAX: Duration = Duration::from_secs(10);

/// What one run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: Seed,
    pub nodes: u64,
    pub shards: u32,
    pub clients: usize,
    pub visitors: usize,
    pub kinds: Vec<NemesisKind>,
    pub faults: usize,
    /// Range of a fault's hold (ms).
    pub hold_ms: (u64, u64),
    /// Shard moves and rebalances in the background during the faults.
    pub moves: bool,
}

impl RunConfig {
    pub fn new(seed: u64, kinds: &[NemesisKind]) -> RunConfig {
        RunConfig {
            seed: Seed(seed),
            nodes: 3,
            shards: 12,
            clients: 3,
            visitors: 200,
            kinds: kinds.to_vec(),
            faults: kinds.len(),
            hold_ms: (2_000, 4_000),
            moves: true,
        }
    }

    pub fn schedule(&self) -> Schedule {
        Schedule::generate(self.seed.0, &self.kinds, self.faults, self.hold_ms)
    }
}

/// What a run found.
#[derive(Debug)]
pub struct RunReport {
    pub seed: Seed,
    pub schedule: Schedule,
    /// The nemeses the schedule was drawn from, comma-separated.
    pub kinds: String,
    pub verdict: Verdict,
    pub summary: String,
    /// Distinct events of the workload.
    pub events: usize,
    /// Ingest operations recorded.
    pub ops: usize,
}

impl RunReport {
    /// The seed and schedule that replay the run, the summary, and every
    /// violation.
    pub fn describe(&self) -> String {
        format!(
            "chaos run {seed} (replay: cargo run -p sessiondb-chaos-tests --bin chaos -- \
             --seed {number} --nemeses {kinds} --faults {faults})\nschedule:\n{schedule}{summary}\n{verdict}",
            seed = self.seed,
            number = self.seed.0,
            kinds = self.kinds,
            faults = self.schedule.faults.len(),
            schedule = self.schedule,
            summary = self.summary,
            verdict = self.verdict
        )
    }
}

/// The workload of a run: distinct events, and what each client sends.
struct Plan {
    distinct: Vec<Event>,
    shard_of: Vec<u32>,
    /// Per client: indices into `distinct` in arrival order (re-sent
    /// copies appear twice).
    per_client: Vec<Vec<usize>>,
}

fn plan(config: &RunConfig) -> (Plan, Workload) {
    let mut workload_config = WorkloadConfig::new(config.seed.0, PROJECT);
    workload_config.visitors = config.visitors;
    workload_config.base_ms = START_MS - SPAN_MS;
    workload_config.span_ms = SPAN_MS - HOUR_MS;
    workload_config.max_delay_ms = SPAN_MS;
    let workload = generate(&workload_config);
    let index: HashMap<(&str, &str), usize> = workload
        .distinct
        .iter()
        .enumerate()
        .map(|(i, event)| ((event.visitor.as_str(), event.id.as_str()), i))
        .collect();
    let shard_of: Vec<u32> = workload
        .distinct
        .iter()
        .map(|event| sessiondb_protocol::hashing::shard_of(PROJECT, &event.visitor, config.shards))
        .collect();
    let mut per_client = vec![Vec::new(); config.clients];
    for event in &workload.arrival {
        let i = index[&(event.visitor.as_str(), event.id.as_str())];
        // A visitor's events all go through one client, in arrival order.
        let client =
            sessiondb_protocol::hashing::shard_of("client", &event.visitor, config.clients as u32);
        per_client[client as usize].push(i);
    }
    let plan = Plan {
        distinct: workload.distinct.clone(),
        shard_of,
        per_client,
    };
    (plan, workload)
}

/// The newest (owner, epoch) per shard any node reported: the clients'
/// routing table.
#[derive(Debug, Default)]
struct RoutingTable {
    owners: Vec<(u64, u64)>,
    leader: Option<u64>,
}

impl RoutingTable {
    fn learn(&mut self, view: &ClusterView) {
        if self.owners.len() < view.shards.len() {
            self.owners.resize(view.shards.len(), (0, 0));
        }
        for shard in &view.shards {
            let known = &mut self.owners[shard.shard as usize];
            if shard.epoch >= known.1 {
                *known = (shard.owner, shard.epoch);
            }
        }
        if view.leader.is_some() {
            self.leader = view.leader;
        }
    }
}

type Shared<T> = Arc<RwLock<T>>;

fn urls(cluster: &DockerCluster) -> BTreeMap<u64, String> {
    cluster
        .ids()
        .into_iter()
        .map(|id| (id, cluster.url(id)))
        .collect()
}

async fn form_cluster(cluster: &mut DockerCluster, api: &Api) -> anyhow::Result<ClusterView> {
    cluster.run_node(1, &[])?;
    let first = cluster.url(1);
    wait_until("node 1 bootstrapping a cluster", FORM_WAIT_MAX, || {
        let api = api.clone();
        let first = first.clone();
        async move {
            matches!(api.cluster(&first).await,
                Answer::Ok(view) if view.leader == Some(1) && !view.shards.is_empty())
        }
    })
    .await?;
    for id in 2..=cluster.nodes.len() as u64 {
        cluster.run_node(id, &[])?;
    }
    let ids = cluster.ids();
    let all = urls(cluster);
    wait_until("every node a member of one cluster", FORM_WAIT_MAX, || {
        let api = api.clone();
        let all = all.clone();
        let ids = ids.clone();
        async move {
            for url in all.values() {
                match api.cluster(url).await {
                    Answer::Ok(view)
                        if view.leader.is_some()
                            && view
                                .members
                                .iter()
                                .map(|m| m.node_id)
                                .eq(ids.iter().copied()) => {}
                    _ => return false,
                }
            }
            true
        }
    })
    .await?;
    let project = serde_json::json!({
        "name": PROJECT,
        "settings": {
            "allowed_lateness_ms": ALLOWED_LATENESS_MS,
            "future_skew_ms": FUTURE_SKEW_MS,
            "bucket_ms": BUCKET_MS,
            "breakdown_attributes": [BREAKDOWN],
        }
    });
    // Projects are replicated through placement: create it once, then
    // wait until every member knows it.
    match api.create_project(&first, &project).await {
        Answer::Ok(_) => {}
        other => bail!("creating the project: {}", describe(&other)),
    }
    wait_until("every node knowing the project", FORM_WAIT_MAX, || {
        let api = api.clone();
        let all = all.clone();
        async move {
            for url in all.values() {
                if !matches!(api.project(url, PROJECT).await, Answer::Ok(_)) {
                    return false;
                }
            }
            true
        }
    })
    .await?;
    let leader = match api.cluster(&first).await {
        Answer::Ok(view) => view.leader.context("a leader")?,
        other => bail!("cluster status: {}", describe(&other)),
    };
    match api.rebalance(&cluster.url(leader)).await {
        Answer::Ok(_) => {}
        other => bail!("initial rebalance: {}", describe(&other)),
    }
    match api.cluster(&cluster.url(leader)).await {
        Answer::Ok(view) => Ok(view),
        other => bail!("cluster status after rebalance: {}", describe(&other)),
    }
}

/// Polls every node's `GET /v1/cluster` until `stop`.
async fn observe(
    api: Api,
    urls: BTreeMap<u64, String>,
    history: History,
    routing: Shared<RoutingTable>,
    stop: Arc<AtomicBool>,
) {
    let mut interval = tokio::time::interval(OBSERVE_INTERVAL);
    while !stop.load(Ordering::SeqCst) {
        interval.tick().await;
        let polls = urls.iter().map(|(&id, url)| {
            let api = api.clone();
            async move { (id, api.cluster(url).await) }
        });
        for (observer, answer) in futures::future::join_all(polls).await {
            if let Answer::Ok(view) = answer {
                routing.write().expect("routing lock").learn(&view);
                history.record_observation(Observation {
                    at_ms: history.clock.now_ms(),
                    observer,
                    leader: view.leader,
                    term: view.term,
                    shards: view
                        .shards
                        .iter()
                        .map(|s| (s.owner, s.epoch, s.moving_to))
                        .collect(),
                });
            }
        }
    }
}

/// Shard moves and rebalances in the background until `stop`.
async fn move_shards(
    api: Api,
    urls: BTreeMap<u64, String>,
    history: History,
    routing: Shared<RoutingTable>,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut random = ChaCha8Rng::seed_from_u64(seed ^ 0x6d6f_7665_7321);
    let ids: Vec<u64> = urls.keys().copied().collect();
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(random.gen_range(800..2_000))).await;
        let (leader, owners) = {
            let table = routing.read().expect("routing lock");
            (table.leader, table.owners.clone())
        };
        let (Some(leader), false) = (leader, owners.is_empty()) else {
            continue;
        };
        let start_ms = history.clock.now_ms();
        let (what, answer) = if random.gen_bool(0.25) {
            ("rebalance".to_string(), api.rebalance(&urls[&leader]).await)
        } else {
            let shard = random.gen_range(0..owners.len()) as u32;
            let owner = owners[shard as usize].0;
            let others: Vec<u64> = ids.iter().copied().filter(|id| *id != owner).collect();
            let to = others[random.gen_range(0..others.len())];
            (
                format!("move shard {shard} {owner}→{to}"),
                api.move_shard(&urls[&leader], shard, to).await,
            )
        };
        history.record_move(MoveRecord {
            what,
            start_ms,
            end_ms: history.clock.now_ms(),
            outcome: describe(&answer),
        });
    }
}

/// Per-event reasons after which a client sends the event again: the
/// shard is elsewhere or moving, the node's clock is off, or the node does
/// not know the project yet.
fn is_retryable_rejection(reason: &RejectCode) -> bool {
    reason.is_retryable()
        || matches!(
            reason,
            RejectCode::TooLate | RejectCode::TooEarly | RejectCode::UnknownProject
        )
}

/// How the clients should behave, shared with the run.
#[derive(Debug, Default)]
struct ClientSignals {
    /// The faults are over: send what is left as fast as possible, and
    /// stop when nothing is left.
    draining: AtomicBool,
    /// Stop after the current round.
    give_up: AtomicBool,
}

/// Pause between two rounds of a client while draining.
const DRAIN_PACE: Duration = Duration::from_millis(10);

/// One client: sends its events in batches routed by owner, recording
/// every operation. While the faults run, it fills every round up to
/// [`BATCH_EVENTS`] with events it already had acknowledged (they must come
/// back as duplicates), so that every fault meets load on every owner. Stops when draining
/// with nothing left, or when told to give up; answers how many events it
/// still held.
#[allow(clippy::too_many_arguments)]
async fn client(
    client_id: usize,
    plan: Arc<Plan>,
    queue: Vec<usize>,
    api: Api,
    urls: BTreeMap<u64, String>,
    history: History,
    routing: Shared<RoutingTable>,
    pace: Duration,
    signals: Arc<ClientSignals>,
    seed: u64,
) -> usize {
    let mut random = ChaCha8Rng::seed_from_u64(seed ^ (client_id as u64).wrapping_mul(0x9e37_79b9));
    let mut queue: VecDeque<usize> = queue.into();
    let mut acknowledged: Vec<usize> = Vec::new();
    loop {
        let draining = signals.draining.load(Ordering::SeqCst);
        if signals.give_up.load(Ordering::SeqCst) || (draining && queue.is_empty()) {
            break;
        }
        tokio::time::sleep(if draining { DRAIN_PACE } else { pace }).await;
        let take = queue.len().min(BATCH_EVENTS);
        let mut batch: Vec<usize> = queue.drain(..take).collect();
        if !draining && !acknowledged.is_empty() {
            // While the faults run, top the round up with acknowledged
            // events (they must come back as duplicates): every owner gets
            // load even when what is left is stuck on one shard.
            while batch.len() < BATCH_EVENTS {
                batch.push(acknowledged[random.gen_range(0..acknowledged.len())]);
            }
        }
        if batch.is_empty() {
            continue;
        }
        let owners = routing.read().expect("routing lock").owners.clone();
        let mut by_owner: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for &event in &batch {
            let shard = plan.shard_of[event] as usize;
            let owner = owners.get(shard).map_or(1, |(owner, _)| *owner);
            by_owner.entry(owner).or_default().push(event);
        }
        // One request per owner, concurrently: a dead or paused node
        // delays only its own share.
        let sends = by_owner.into_iter().map(|(node, events)| {
            let api = api.clone();
            let url = urls.get(&node).cloned();
            let plan = Arc::clone(&plan);
            let history = history.clone();
            async move {
                let bodies: Vec<Event> = events.iter().map(|&i| plan.distinct[i].clone()).collect();
                let invoke_ms = history.clock.now_ms();
                let answer = match &url {
                    Some(url) => api.ingest(url, &bodies).await,
                    None => Answer::Fail {
                        code: FailCode::UnknownNode,
                        message: format!("no node {node}"),
                    },
                };
                let complete_ms = history.clock.now_ms();
                (node, events, invoke_ms, complete_ms, answer)
            }
        });
        for (node, events, invoke_ms, complete_ms, answer) in futures::future::join_all(sends).await
        {
            let outcome = match &answer {
                Answer::Ok(response) => OpOutcome::Ok {
                    rejected: response
                        .rejected
                        .iter()
                        .map(|r| (r.index, r.reason.clone()))
                        .collect(),
                },
                Answer::Fail { code, .. } => OpOutcome::Fail { code: code.clone() },
                Answer::Unknown { message } => OpOutcome::Unknown {
                    message: message.clone(),
                },
            };
            match &outcome {
                OpOutcome::Ok { rejected } => {
                    let rejected_positions: BTreeSet<usize> =
                        rejected.iter().map(|(index, _)| *index).collect();
                    for (position, &event) in events.iter().enumerate() {
                        if !rejected_positions.contains(&position) {
                            acknowledged.push(event);
                        }
                    }
                    for (index, reason) in rejected {
                        if is_retryable_rejection(reason) {
                            queue.push_back(events[*index]);
                        }
                    }
                }
                OpOutcome::Fail { .. } | OpOutcome::Unknown { .. } => {
                    for &event in &events {
                        if !random.gen_bool(ABANDON_SHARE) {
                            queue.push_back(event);
                        }
                    }
                }
            }
            history.record_op(Op {
                client: client_id,
                node,
                shards: events.iter().map(|&i| plan.shard_of[i]).collect(),
                events,
                invoke_ms,
                complete_ms,
                outcome,
            });
        }
    }
    queue.len()
}

/// Waits until every node serves, all agree on a leader and members, and
/// every shard has an owner and no move in flight.
async fn wait_healed(cluster: &DockerCluster, api: &Api) -> anyhow::Result<ClusterView> {
    let all = urls(cluster);
    let ids = cluster.ids();
    let shards = cluster.shards as usize;
    let settled: Arc<RwLock<Option<ClusterView>>> = Arc::default();
    let last_seen: Arc<RwLock<String>> = Arc::default();
    let result = wait_until("the cluster settled after heal", HEAL_WAIT_MAX, || {
        let api = api.clone();
        let all = all.clone();
        let ids = ids.clone();
        let settled = Arc::clone(&settled);
        let last_seen = Arc::clone(&last_seen);
        async move {
            let mut views = Vec::new();
            for url in all.values() {
                match api.cluster(url).await {
                    Answer::Ok(view) => views.push(view),
                    other => {
                        *last_seen.write().expect("lock") = format!("{url}: {}", describe(&other));
                        return false;
                    }
                }
            }
            let leader = views[0].leader;
            let agreed = leader.is_some()
                && views.iter().all(|view| {
                    view.leader == leader
                        && view
                            .members
                            .iter()
                            .map(|m| m.node_id)
                            .eq(ids.iter().copied())
                        && view.shards.len() == shards
                        && view.shards == views[0].shards
                        && view.shards.iter().all(|s| s.moving_to.is_none())
                });
            if agreed {
                *settled.write().expect("lock") = Some(views.swap_remove(0));
            } else {
                *last_seen.write().expect("lock") = views
                    .iter()
                    .map(|view| {
                        let moving: Vec<String> = view
                            .shards
                            .iter()
                            .filter_map(|s| {
                                s.moving_to
                                    .map(|to| format!("{}: {}→{to}", s.shard, s.owner))
                            })
                            .collect();
                        format!(
                            "node {} (leader {:?}, term {}, {} members, moving {moving:?})",
                            view.node_id,
                            view.leader,
                            view.term,
                            view.members.len()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
            }
            agreed
        }
    })
    .await;
    if let Err(error) = result {
        bail!("{error:#}; last seen: {}", last_seen.read().expect("lock"));
    }
    let view = settled.read().expect("lock").clone();
    view.context("a settled view")
}

/// The view with the highest term among the nodes that know a leader.
async fn newest_view(cluster: &DockerCluster, api: &Api) -> Option<ClusterView> {
    let mut newest: Option<ClusterView> = None;
    for id in cluster.ids() {
        if let Answer::Ok(view) = api.cluster(&cluster.url(id)).await {
            let better = newest.as_ref().is_none_or(|known| view.term > known.term);
            if view.leader.is_some() && !view.shards.is_empty() && better {
                newest = Some(view);
            }
        }
    }
    newest
}

/// Reads every shard back from every node.
async fn final_read(
    cluster: &DockerCluster,
    api: &Api,
    view: &ClusterView,
) -> anyhow::Result<FinalRead> {
    let mut read = FinalRead {
        owners: view.shards.iter().map(|s| (s.owner, s.epoch)).collect(),
        ..FinalRead::default()
    };
    for shard in &view.shards {
        for id in cluster.ids() {
            match api.shard_events(&cluster.url(id), shard.shard).await {
                Answer::Ok(events) => read.copies.push(events),
                Answer::Fail {
                    code: FailCode::Http(404) | FailCode::Node(ErrorCode::NotFound),
                    message,
                } => {
                    bail!(
                        "node {id} has no GET /v1/cluster/shards/{{s}}/events ({message}): \
                     rebuild the image from this tree (cluster-config/build-image)"
                    )
                }
                other => bail!(
                    "reading shard {} on node {id}: {}",
                    shard.shard,
                    describe(&other)
                ),
            }
        }
    }
    Ok(read)
}

/// Results of every experiment (plain and by [`BREAKDOWN`]) over the whole
/// workload, from node 1 (a fan-out over every member).
async fn final_results(
    cluster: &DockerCluster,
    api: &Api,
    workload: &Workload,
) -> anyhow::Result<Vec<check::ResultsCase>> {
    let floor = |t: i64| t.div_euclid(BUCKET_MS) * BUCKET_MS;
    let from = floor(workload.min_ts_ms());
    let to = floor(workload.max_ts_ms()) + BUCKET_MS;
    let mut cases = Vec::new();
    let experiments: std::collections::BTreeSet<String> = workload
        .distinct
        .iter()
        .flat_map(|event| event.decisions.iter().map(|d| d.experiment.clone()))
        .collect();
    for experiment in experiments {
        for breakdown in [None, Some(BREAKDOWN)] {
            let mut query = vec![
                ("from", from.to_string()),
                ("to", to.to_string()),
                ("keys", KEYS.join(",")),
            ];
            if let Some(attribute) = breakdown {
                query.push(("breakdown", attribute.to_string()));
            }
            let answer = api
                .results(&cluster.url(1), PROJECT, &experiment, &query)
                .await;
            let actual = match answer {
                Answer::Ok(results) => results,
                other => bail!("results of {experiment}: {}", describe(&other)),
            };
            cases.push(check::ResultsCase {
                experiment: experiment.clone(),
                breakdown: breakdown.map(str::to_string),
                from,
                to,
                actual,
            });
        }
    }
    Ok(cases)
}

/// Runs one chaos run and checks it. An error is a harness failure (the
/// run could not be carried out); violations are in the report.
pub async fn run(config: &RunConfig) -> anyhow::Result<RunReport> {
    let schedule = config.schedule();
    let (plan, workload) = plan(config);
    let plan = Arc::new(plan);
    let api = Api::new();
    let mut cluster = DockerCluster::create(config.seed.0, config.nodes, config.shards, START_MS)?;
    let outcome = drive(config, &schedule, &plan, &workload, &api, &mut cluster).await;
    let report = match outcome {
        Ok(report) => report,
        Err(error) => {
            let logs: String = cluster
                .ids()
                .into_iter()
                .map(|id| format!("--- node {id} (tail) ---\n{}", cluster.logs(id, 40)))
                .collect();
            return Err(error.context(format!(
                "chaos run {} could not finish; schedule:\n{schedule}{logs}",
                config.seed
            )));
        }
    };
    if !report.verdict.is_green() {
        for id in cluster.ids() {
            eprintln!("--- node {id} (tail) ---\n{}", cluster.logs(id, 60));
        }
    }
    Ok(report)
}

async fn drive(
    config: &RunConfig,
    schedule: &Schedule,
    plan: &Arc<Plan>,
    workload: &Workload,
    api: &Api,
    cluster: &mut DockerCluster,
) -> anyhow::Result<RunReport> {
    let formed_at = Instant::now();
    let initial = form_cluster(cluster, api).await?;
    let form_ms = formed_at.elapsed().as_millis();
    let history = History::new();
    let routing: Shared<RoutingTable> = Arc::default();
    routing.write().expect("routing lock").learn(&initial);
    let all = urls(cluster);

    let stop_observer = Arc::new(AtomicBool::new(false));
    let observer = tokio::spawn(observe(
        api.clone(),
        all.clone(),
        history.clone(),
        Arc::clone(&routing),
        Arc::clone(&stop_observer),
    ));
    let stop_mover = Arc::new(AtomicBool::new(!config.moves));
    let mover = tokio::spawn(move_shards(
        api.clone(),
        all.clone(),
        history.clone(),
        Arc::clone(&routing),
        config.seed.0,
        Arc::clone(&stop_mover),
    ));

    // Pace the clients so that new events span most of the schedule
    // (a fault also spends time restarting and probing).
    let schedule_ms: u64 = schedule
        .faults
        .iter()
        .map(|f| f.gap_ms + f.hold_ms + FAULT_OVERHEAD_MS)
        .sum();
    let signals = Arc::new(ClientSignals::default());
    let mut clients = Vec::new();
    for (client_id, queue) in plan.per_client.iter().enumerate() {
        let batches = (queue.len() / BATCH_EVENTS).max(1) as u64;
        let pace = Duration::from_millis((schedule_ms / batches).clamp(10, 1_000));
        clients.push(tokio::spawn(client(
            client_id,
            Arc::clone(plan),
            queue.clone(),
            api.clone(),
            all.clone(),
            history.clone(),
            Arc::clone(&routing),
            pace,
            Arc::clone(&signals),
            config.seed.0,
        )));
    }

    let mut nemesis = Nemesis {
        cluster,
        api: api.clone(),
        history: history.clone(),
    };
    history.progress(&format!("cluster formed in {form_ms} ms; clients started"));
    for fault in &schedule.faults {
        tokio::time::sleep(Duration::from_millis(fault.gap_ms)).await;
        history.progress(&format!("fault: {fault}"));
        let record = nemesis.run(fault).await;
        history.progress(&format!(
            "healed: applied={} ({})",
            record.applied, record.evidence
        ));
    }
    let cluster = nemesis.cluster;
    signals.draining.store(true, Ordering::SeqCst);
    stop_mover.store(true, Ordering::SeqCst);
    let _ = mover.await;
    history.progress("background moves stopped; waiting for the cluster to settle");
    let healed_at_ms = history.clock.now_ms();

    let mut violations = Vec::new();
    let settled = match wait_healed(cluster, api).await {
        Ok(view) => Some(view),
        Err(error) => {
            violations.push(format!("after heal: {error:#}"));
            None
        }
    };
    let settled_ms = history.clock.now_ms() - healed_at_ms;
    history.progress("settled; waiting for the clients to drain");
    if let Some(view) = &settled {
        routing.write().expect("routing lock").learn(view);
    }

    // Let the clients finish what they hold, within a bound (short when
    // the cluster did not settle: that is already a violation).
    let drain_wait = if settled.is_some() {
        DRAIN_WAIT_MAX
    } else {
        UNSETTLED_DRAIN_WAIT_MAX
    };
    let drain_deadline = Instant::now() + drain_wait;
    let mut left = 0;
    for mut handle in clients {
        let remaining = drain_deadline.saturating_duration_since(Instant::now());
        let joined = match tokio::time::timeout(remaining, &mut handle).await {
            Ok(joined) => joined,
            Err(_) => {
                // Past the bound: stop every client after its current
                // request and count what it still holds.
                signals.give_up.store(true, Ordering::SeqCst);
                handle.await
            }
        };
        left += joined.context("a client task panicked")?;
    }
    signals.give_up.store(true, Ordering::SeqCst);
    let drained_ms = history.clock.now_ms() - healed_at_ms;
    if left > 0 {
        violations.push(format!(
            "the clients still held {left} unacknowledged events {drain_wait:?} after heal"
        ));
    }
    history.progress(&format!("clients done ({left} events left)"));
    stop_observer.store(true, Ordering::SeqCst);
    let _ = observer.await;
    history.progress("observer stopped; final read");

    let view = match settled {
        Some(view) => view,
        // Read back what there is: the newest view a node with a leader
        // gives (the checkers flag a fenced or unowned shard).
        None => newest_view(cluster, api)
            .await
            .context("no node reports a leader and a shard map after heal")?,
    };
    let read = final_read(cluster, api, &view).await?;
    let results = final_results(cluster, api, workload).await?;
    history.progress("final read done; checking");
    let mut verdict = check::check_all(&history, plan_events(plan), &read, &results);
    verdict.violations.splice(0..0, violations);
    if !verdict.is_green() {
        let path = std::env::temp_dir().join(format!("{}-history.txt", cluster.prefix));
        let names: Vec<String> = plan
            .distinct
            .iter()
            .map(|event| format!("{}/{}", event.visitor, event.id))
            .collect();
        match history.dump(&path, &names) {
            Ok(()) => verdict
                .notes
                .push(format!("history written to {}", path.display())),
            Err(error) => verdict.notes.push(format!(
                "history not written to {}: {error}",
                path.display()
            )),
        }
    }

    let ops = history.ops();
    let summary =
        format!(
        "cluster formed in {form_ms} ms; {} distinct events, {} ops ({} ok, {} fail, {} unknown), \
         {} ownership observations, {} moves/rebalances ({} ok); settled {settled_ms} ms and \
         drained {drained_ms} ms after heal\nfaults:\n{}moves:\n{}",
        plan.distinct.len(),
        ops.len(),
        ops.iter().filter(|op| matches!(op.outcome, OpOutcome::Ok { .. })).count(),
        ops.iter().filter(|op| matches!(op.outcome, OpOutcome::Fail { .. })).count(),
        ops.iter().filter(|op| matches!(op.outcome, OpOutcome::Unknown { .. })).count(),
        history.observations().len(),
        history.moves().len(),
        history.moves().iter().filter(|m| m.outcome.starts_with("ok")).count(),
        history
            .faults()
            .iter()
            .map(|f| format!(
                "  {} → nodes {:?} [{}..{} ms] applied={} ({})\n",
                f.planned, f.targets, f.start_ms, f.end_ms, f.applied, f.evidence
            ))
            .collect::<String>(),
        history
            .moves()
            .iter()
            .map(|m| format!("  {} [{}..{} ms] {}\n", m.what, m.start_ms, m.end_ms, m.outcome))
            .collect::<String>(),
    );
    Ok(RunReport {
        seed: config.seed,
        schedule: schedule.clone(),
        kinds: config
            .kinds
            .iter()
            .map(|kind| kind.name())
            .collect::<Vec<_>>()
            .join(","),
        verdict,
        summary,
        events: plan.distinct.len(),
        ops: ops.len(),
    })
}

fn plan_events(plan: &Plan) -> check::EventTable<'_> {
    check::EventTable {
        events: &plan.distinct,
        shard_of: &plan.shard_of,
    }
}
