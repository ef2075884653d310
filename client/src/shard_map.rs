//! [`ShardMapRouter`]: routes each event to the node that owns its shard.
//!
//! # Design
//!
//! * **The map.** A cached copy of `GET /v1/shard-map`: per shard its owner
//!   and epoch, and a [`Client`] per owner address. Events are partitioned by
//!   owner ([`Router::partition`]), so a batch holds one owner's events, and
//!   a batch goes to the owner of its first event's shard (all its events
//!   have that owner unless the map changed in between; then the others are
//!   refused and resent).
//! * **Merging is per shard, by epoch.** Epochs only grow, so a map fetched
//!   from a node that lags behind never takes a shard back to an older owner:
//!   each shard keeps the entry with the larger epoch.
//! * **Refusals teach.** A `not_owner` names the owner and epoch: if that is
//!   newer than the cached entry and the owner's address is known, the entry
//!   is updated at once and the sender resends without waiting. The map
//!   lists every member's address, so a node that owned nothing before is
//!   reachable at once. Every
//!   `not_owner`, `shard_moving` and unreachable node also asks for a
//!   refresh.
//! * **Refreshes are bounded.** At most one fetch runs at a time, and
//!   fetches start at least [`REFRESH_INTERVAL_MIN_MS`] apart; asks that
//!   arrive meanwhile are folded into one more fetch after the running one.
//!   A fetch tries the known nodes, then the seeds, until one answers.
//! * **Unknown owners.** Before the first map (or for a shard without a
//!   known owner address), events are in [`UNROUTED_PARTITION`] and go to
//!   the seeds in turn; the answering node refuses what it does not own,
//!   naming the owner, and the sender's retry and backoff take it from
//!   there.

use crate::router::{Feedback, Partition, Router};
use crate::{Client, ClientError};
use sessiondb_protocol::hashing::{shard_of, SHARD_HASH};
use sessiondb_protocol::{Event, ShardMap};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::time::Instant;

/// Least time between the starts of two shard-map fetches, so a burst of
/// refusals (every batch of a moved shard) costs one fetch, not hundreds.
pub const REFRESH_INTERVAL_MIN_MS: u64 = 100;
/// Longest wait for one node's answer to `GET /v1/shard-map`.
pub const SHARD_MAP_FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// The partition of events whose owner is not known (no map yet, or an
/// owner without an address). Node ids below this value are real owners.
pub const UNROUTED_PARTITION: Partition = u64::MAX;

/// One shard in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    owner: u64,
    epoch: u64,
    moving: bool,
}

/// The cached map.
#[derive(Debug, Default)]
struct Cache {
    /// The largest map version merged so far.
    version: u64,
    /// Empty until the first map.
    entries: Vec<Entry>,
    /// A client per node whose address a map named (owners and members).
    nodes: BTreeMap<u64, Client>,
}

/// The refresh bound: one fetch at a time, spaced out.
#[derive(Debug, Default)]
struct RefreshState {
    running: bool,
    /// Somebody asked while a fetch was running.
    again: bool,
    last_started: Option<Instant>,
}

/// Counters of a [`ShardMapRouter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouterStats {
    /// Shard-map fetches that got a map.
    pub refreshes: u64,
    /// Shard-map fetches where no node answered with a map.
    pub refresh_failures: u64,
    /// Shard entries updated from a `not_owner` answer, without a fetch.
    pub hints_applied: u64,
    /// The largest map version seen.
    pub version: u64,
}

/// One shard of [`ShardMapRouter::assignments`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedAssignment {
    /// The shard's number.
    pub shard: u32,
    /// The node the cached map names as owner.
    pub owner: u64,
    /// The owner's epoch (grows with every move).
    pub epoch: u64,
    /// A move of the shard was under way when the map was fetched.
    pub moving: bool,
}

struct Inner {
    /// `https` when the seeds are, for the `host:port` addresses of a map.
    scheme: &'static str,
    seeds: Vec<Client>,
    /// The settings of every node's client (`Client::for_node`): the
    /// credential, timeout, TLS trust and connection pool given to `new`.
    template: Client,
    cache: RwLock<Cache>,
    refresh: Mutex<RefreshState>,
    next_seed: AtomicUsize,
    refreshes: AtomicU64,
    refresh_failures: AtomicU64,
    hints_applied: AtomicU64,
}

/// The cluster router: partitions events by the owner of their shard, per
/// a cached shard map. See the module documentation.
///
/// Cheap to clone: clones share the cache.
#[derive(Clone)]
pub struct ShardMapRouter {
    inner: Arc<Inner>,
}

impl fmt::Debug for ShardMapRouter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ShardMapRouter")
            .field(
                "seeds",
                &self
                    .inner
                    .seeds
                    .iter()
                    .map(Client::base_url)
                    .collect::<Vec<_>>(),
            )
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl ShardMapRouter {
    /// A router that learns the map from any of `seed_urls` (base URLs,
    /// `http://host:port`) on first use. Every request it makes — shard
    /// map, event batches, to seeds and owners alike — has `client`'s
    /// settings ([`Client::for_node`]): its credential (a project's ingest
    /// key or the admin token, both of which open the shard map;
    /// `docs/security.md`), timeout, TLS trust and connection pool.
    /// `client`'s own URL is not a seed unless listed.
    ///
    /// Fails with [`ClientError::InvalidConfig`] when the list is empty.
    pub fn new<I, S>(client: &Client, seed_urls: I) -> Result<ShardMapRouter, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let seeds: Vec<Client> = seed_urls
            .into_iter()
            .map(|url| client.for_node(url))
            .collect();
        if seeds.is_empty() {
            return Err(ClientError::InvalidConfig {
                message: "a ShardMapRouter needs at least one seed URL".into(),
            });
        }
        let scheme = if seeds[0].base_url().starts_with("https://") {
            "https"
        } else {
            "http"
        };
        Ok(ShardMapRouter {
            inner: Arc::new(Inner {
                scheme,
                template: seeds[0].clone(),
                seeds,
                cache: RwLock::new(Cache::default()),
                refresh: Mutex::new(RefreshState::default()),
                next_seed: AtomicUsize::new(0),
                refreshes: AtomicU64::new(0),
                refresh_failures: AtomicU64::new(0),
                hints_applied: AtomicU64::new(0),
            }),
        })
    }

    /// [`ShardMapRouter::new`], then one fetch of the map: fails with the
    /// last node's error when no seed answers with a usable map.
    pub async fn connect<I, S>(client: &Client, seed_urls: I) -> Result<ShardMapRouter, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let router = ShardMapRouter::new(client, seed_urls)?;
        router.refresh_now().await?;
        Ok(router)
    }

    /// Fetches the map now (from the known nodes, then the seeds) and
    /// merges it; answers the version of the cached map afterwards. Ignores
    /// the refresh bound: for callers that need a fresh map, not for
    /// retries.
    pub async fn refresh_now(&self) -> Result<u64, ClientError> {
        let outcome = self.inner.fetch_and_merge().await;
        self.count_fetch(&outcome);
        outcome
    }

    /// The cached assignments, by shard; empty before the first map.
    pub fn assignments(&self) -> Vec<CachedAssignment> {
        let cache = self.inner.cache.read().expect("cache lock");
        cache
            .entries
            .iter()
            .enumerate()
            .map(|(shard, entry)| CachedAssignment {
                shard: shard as u32,
                owner: entry.owner,
                epoch: entry.epoch,
                moving: entry.moving,
            })
            .collect()
    }

    /// The owner the cached map names for a visitor, if there is a map.
    pub fn owner_of(&self, project: &str, visitor: &str) -> Option<u64> {
        let cache = self.inner.cache.read().expect("cache lock");
        let shards = u32::try_from(cache.entries.len()).ok().filter(|&n| n > 0)?;
        Some(cache.entries[shard_of(project, visitor, shards) as usize].owner)
    }

    /// A snapshot of the router's counters.
    pub fn stats(&self) -> RouterStats {
        RouterStats {
            refreshes: self.inner.refreshes.load(Ordering::Relaxed),
            refresh_failures: self.inner.refresh_failures.load(Ordering::Relaxed),
            hints_applied: self.inner.hints_applied.load(Ordering::Relaxed),
            version: self.inner.cache.read().expect("cache lock").version,
        }
    }

    fn count_fetch<T>(&self, outcome: &Result<T, ClientError>) {
        let counter = match outcome {
            Ok(_) => &self.inner.refreshes,
            Err(_) => &self.inner.refresh_failures,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Asks for a refresh within the bound: starts a fetch task unless one
    /// runs (then it fetches once more when done).
    fn request_refresh(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // Outside a runtime nothing can fetch; the next ask will.
        };
        {
            let mut state = self.inner.refresh.lock().expect("refresh lock");
            if state.running {
                state.again = true;
                return;
            }
            state.running = true;
            state.again = false;
        }
        let router = self.clone();
        runtime.spawn(async move { router.refresh_loop().await });
    }

    async fn refresh_loop(&self) {
        loop {
            let wait_until = {
                let state = self.inner.refresh.lock().expect("refresh lock");
                state
                    .last_started
                    .map(|last| last + Duration::from_millis(REFRESH_INTERVAL_MIN_MS))
            };
            if let Some(wait_until) = wait_until {
                tokio::time::sleep_until(wait_until).await;
            }
            self.inner
                .refresh
                .lock()
                .expect("refresh lock")
                .last_started = Some(Instant::now());
            let outcome = self.inner.fetch_and_merge().await;
            self.count_fetch(&outcome);
            let mut state = self.inner.refresh.lock().expect("refresh lock");
            if state.again {
                state.again = false;
                continue;
            }
            state.running = false;
            return;
        }
    }
}

impl Inner {
    /// The clients to ask for a map: every known node, then the seeds.
    fn fetch_targets(&self) -> Vec<Client> {
        let cache = self.cache.read().expect("cache lock");
        let mut targets: Vec<Client> = cache.nodes.values().cloned().collect();
        for seed in &self.seeds {
            if !targets.iter().any(|t| t.base_url() == seed.base_url()) {
                targets.push(seed.clone());
            }
        }
        targets
    }

    async fn fetch_and_merge(&self) -> Result<u64, ClientError> {
        let mut last_error = None;
        for target in self.fetch_targets() {
            let target = target.with_timeout(SHARD_MAP_FETCH_TIMEOUT);
            match target.shard_map().await {
                Ok(map) => match self.merge(&map) {
                    Ok(version) => return Ok(version),
                    Err(error) => last_error = Some(error),
                },
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("at least one seed"))
    }

    /// Merges a fetched map into the cache, shard by shard, keeping the
    /// larger epoch of each.
    fn merge(&self, map: &ShardMap) -> Result<u64, ClientError> {
        check_map(map)?;
        let mut cache = self.cache.write().expect("cache lock");
        if cache.entries.len() != map.assignments.len() {
            // First map (or a cluster with another shard count, which only
            // a newer map may bring).
            if !cache.entries.is_empty() && map.version <= cache.version {
                return Ok(cache.version);
            }
            cache.entries = map
                .assignments
                .iter()
                .map(|assignment| Entry {
                    owner: assignment.owner,
                    epoch: assignment.epoch,
                    moving: assignment.moving,
                })
                .collect();
        } else {
            for (entry, assignment) in cache.entries.iter_mut().zip(&map.assignments) {
                if assignment.epoch >= entry.epoch {
                    *entry = Entry {
                        owner: assignment.owner,
                        epoch: assignment.epoch,
                        moving: assignment.moving,
                    };
                }
            }
        }
        let addresses = map
            .assignments
            .iter()
            .filter_map(|a| Some((a.owner, a.owner_address.as_deref()?)))
            .chain(map.members.iter().map(|m| (m.node_id, m.address.as_str())));
        for (node, address) in addresses {
            let base_url = base_url_of(address, self.scheme);
            let known = cache
                .nodes
                .get(&node)
                .is_some_and(|client| client.base_url() == base_url);
            if !known {
                cache.nodes.insert(node, self.template.for_node(base_url));
            }
        }
        cache.version = cache.version.max(map.version);
        Ok(cache.version)
    }

    /// Applies a `not_owner` hint; true when it made the entry newer.
    fn apply_hint(&self, shard: u32, owner: u64, epoch: u64) -> bool {
        let mut cache = self.cache.write().expect("cache lock");
        if !cache.nodes.contains_key(&owner) {
            return false;
        }
        let Some(entry) = cache.entries.get_mut(shard as usize) else {
            return false;
        };
        if epoch <= entry.epoch {
            return false;
        }
        *entry = Entry {
            owner,
            epoch,
            moving: false,
        };
        true
    }
}

/// Refuses a map this client cannot route with.
fn check_map(map: &ShardMap) -> Result<(), ClientError> {
    let invalid = |message: String| Err(ClientError::InvalidShardMap { message });
    if map.hash != SHARD_HASH {
        return invalid(format!(
            "the map uses shard function `{}`; this client knows `{SHARD_HASH}` only",
            map.hash
        ));
    }
    if map.shards == 0 || map.assignments.len() != map.shards as usize {
        return invalid(format!(
            "the map has {} assignments for {} shards",
            map.assignments.len(),
            map.shards
        ));
    }
    if let Some((index, assignment)) = map
        .assignments
        .iter()
        .enumerate()
        .find(|(index, assignment)| assignment.shard as usize != *index)
    {
        return invalid(format!(
            "assignment {index} is for shard {}; assignments must be in shard order",
            assignment.shard
        ));
    }
    Ok(())
}

/// A map names owners by `host:port`; clients want a base URL.
fn base_url_of(address: &str, scheme: &str) -> String {
    if address.contains("://") {
        address.trim_end_matches('/').to_string()
    } else {
        format!("{scheme}://{address}")
    }
}

impl Router for ShardMapRouter {
    fn partition(&self, event: &Event) -> Partition {
        let cache = self.inner.cache.read().expect("cache lock");
        let Ok(shards) = u32::try_from(cache.entries.len()) else {
            return UNROUTED_PARTITION;
        };
        if shards == 0 {
            return UNROUTED_PARTITION;
        }
        let owner = cache.entries[shard_of(&event.project, &event.visitor, shards) as usize].owner;
        if owner != UNROUTED_PARTITION && cache.nodes.contains_key(&owner) {
            owner
        } else {
            UNROUTED_PARTITION
        }
    }

    fn route(&self, batch: &[Event], _attempt: u32) -> Client {
        let owner = batch.first().map(|event| self.partition(event));
        if let Some(owner) = owner.filter(|&owner| owner != UNROUTED_PARTITION) {
            let cache = self.inner.cache.read().expect("cache lock");
            if let Some(client) = cache.nodes.get(&owner) {
                return client.clone();
            }
        }
        // No owner known: a seed, in turn; it refuses what it does not own
        // and names the owner. Fetch a map meanwhile.
        self.request_refresh();
        let seeds = &self.inner.seeds;
        seeds[self.inner.next_seed.fetch_add(1, Ordering::Relaxed) % seeds.len()].clone()
    }

    fn feedback(&self, _client: &Client, feedback: Feedback) -> bool {
        let rerouted = match feedback {
            Feedback::NotOwner {
                shard: Some(shard),
                owner: Some(owner),
                epoch: Some(epoch),
            } => {
                let applied = self.inner.apply_hint(shard, owner, epoch);
                if applied {
                    self.inner.hints_applied.fetch_add(1, Ordering::Relaxed);
                }
                applied
            }
            Feedback::NotOwner { .. } | Feedback::ShardMoving { .. } | Feedback::Unreachable => {
                false
            }
        };
        // Other shards may have moved too (a rebalance moves many).
        self.request_refresh();
        rerouted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiondb_protocol::ShardMapEntry;

    fn map(version: u64, owners: &[(u64, u64)]) -> ShardMap {
        ShardMap {
            version,
            node_id: 1,
            hash: SHARD_HASH.to_string(),
            shards: owners.len() as u32,
            assignments: owners
                .iter()
                .enumerate()
                .map(|(shard, &(owner, epoch))| ShardMapEntry {
                    shard: shard as u32,
                    owner,
                    owner_address: Some(format!("127.0.0.1:{}", 9000 + owner)),
                    epoch,
                    moving: false,
                })
                .collect(),
            members: Vec::new(),
        }
    }

    fn owners(router: &ShardMapRouter) -> Vec<(u64, u64)> {
        router
            .assignments()
            .iter()
            .map(|a| (a.owner, a.epoch))
            .collect()
    }

    #[test]
    fn merge_keeps_the_larger_epoch_of_each_shard() {
        let router =
            ShardMapRouter::new(&Client::new("http://127.0.0.1:1"), ["http://127.0.0.1:1"])
                .unwrap();
        router
            .inner
            .merge(&map(10, &[(1, 1), (2, 2), (3, 2)]))
            .unwrap();
        // A lagging node's map: shard 1 older, shard 2 newer.
        router
            .inner
            .merge(&map(8, &[(1, 1), (1, 1), (1, 3)]))
            .unwrap();
        assert_eq!(owners(&router), [(1, 1), (2, 2), (1, 3)]);
        assert_eq!(router.stats().version, 10);
    }

    #[test]
    fn maps_of_an_unknown_hash_or_broken_shape_are_refused() {
        let router =
            ShardMapRouter::new(&Client::new("http://127.0.0.1:1"), ["http://127.0.0.1:1"])
                .unwrap();
        let mut other_hash = map(1, &[(1, 1)]);
        other_hash.hash = "md5".into();
        let mut short = map(1, &[(1, 1), (1, 1)]);
        short.shards = 3;
        let mut shuffled = map(1, &[(1, 1), (1, 1)]);
        shuffled.assignments.swap(0, 1);
        for bad in [other_hash, short, shuffled] {
            assert!(
                matches!(
                    router.inner.merge(&bad),
                    Err(ClientError::InvalidShardMap { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(router.assignments().is_empty());
        assert!(
            ShardMapRouter::new(&Client::new("http://127.0.0.1:1"), Vec::<String>::new()).is_err()
        );
    }

    #[test]
    fn events_are_partitioned_by_the_owner_of_their_shard() {
        let router =
            ShardMapRouter::new(&Client::new("http://127.0.0.1:1"), ["http://127.0.0.1:1"])
                .unwrap();
        let event = |visitor: &str| Event {
            id: format!("e-{visitor}"),
            project: "p".into(),
            visitor: visitor.into(),
            ts: sessiondb_protocol::Timestamp::Milliseconds(0),
            event_type: sessiondb_protocol::EventType::Pageview,
            key: None,
            value: None,
            attributes: Default::default(),
            decisions: Vec::new(),
        };
        assert_eq!(router.partition(&event("v")), UNROUTED_PARTITION);
        let owners = [(1, 1), (2, 1), (3, 1), (2, 1)];
        router.inner.merge(&map(1, &owners)).unwrap();
        for n in 0..100 {
            let visitor = format!("v{n}");
            let shard = shard_of("p", &visitor, 4) as usize;
            assert_eq!(router.partition(&event(&visitor)), owners[shard].0);
            let client = router.route(&[event(&visitor)], 0);
            assert_eq!(
                client.base_url(),
                format!("http://127.0.0.1:{}", 9000 + owners[shard].0)
            );
        }
    }

    #[test]
    fn a_newer_not_owner_hint_reroutes_an_older_one_does_not() {
        let router =
            ShardMapRouter::new(&Client::new("http://127.0.0.1:1"), ["http://127.0.0.1:1"])
                .unwrap();
        router.inner.merge(&map(1, &[(1, 2), (2, 1)])).unwrap();
        let hint = |shard, owner, epoch| Feedback::NotOwner {
            shard: Some(shard),
            owner: Some(owner),
            epoch: Some(epoch),
        };
        let client = Client::new("http://127.0.0.1:9001");
        // Outside a runtime no refresh starts; the hint alone decides.
        assert!(router.feedback(&client, hint(0, 2, 3)));
        assert!(!router.feedback(&client, hint(0, 1, 2)), "older epoch");
        assert!(!router.feedback(&client, hint(1, 7, 5)), "unknown address");
        assert!(!router.feedback(&client, hint(9, 1, 5)), "no such shard");
        assert_eq!(owners(&router), [(2, 3), (2, 1)]);
        // Once a map lists node 7 as a member (owning nothing), a hint
        // naming it applies.
        let mut with_member = map(1, &[(1, 2), (2, 1)]);
        with_member.members.push(sessiondb_protocol::ClusterMember {
            node_id: 7,
            address: "127.0.0.1:9007".into(),
            role: sessiondb_protocol::MemberRole::Learner,
            draining: false,
        });
        router.inner.merge(&with_member).unwrap();
        assert!(router.feedback(&client, hint(1, 7, 5)));
        assert_eq!(owners(&router), [(2, 3), (7, 5)]);
        assert_eq!(router.stats().hints_applied, 2);
    }
}
