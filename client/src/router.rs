//! Which node a batch goes to.
//!
//! A [`Sender`](crate::Sender) asks its [`Router`] two things: which
//! *partition* an event belongs to, before batching (events of different
//! partitions never share a batch), and which node receives one attempt of
//! a batch. When a node refuses events because it does not own their shard
//! (`not_owner`) or the shard is moving (`shard_moving`), or cannot be
//! reached, the sender tells the router ([`Router::feedback`]) and asks it
//! again for the events' partitions before the retry.
//!
//! - [`SingleNode`]: every batch to one node; one partition.
//! - [`RoundRobin`]: batches rotate over a fixed list of nodes; one
//!   partition. Right for a single node behind several addresses; in a
//!   cluster, most events would be refused as `not_owner` and resent.
//! - [`ShardMapRouter`](crate::ShardMapRouter): the cluster router. It
//!   caches the shard map (`GET /v1/shard-map`), partitions events by the
//!   owner of their shard and sends each batch to that owner
//!   (`docs/client.md`, "Routing in a cluster").

use crate::Client;
use sessiondb_protocol::Event;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A partition of events: the sender batches each partition apart. The
/// [`ShardMapRouter`](crate::ShardMapRouter) uses the owner's node id.
pub type Partition = u64;

/// What a node said (or did not say) about one attempt, for the router to
/// learn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// The node does not own `shard`; it names the owner at `epoch` when it
    /// knows it.
    NotOwner {
        /// The events' shard, if the node said.
        shard: Option<u32>,
        /// The owner, if the node knows it.
        owner: Option<u64>,
        /// The shard's epoch as the node knows it.
        epoch: Option<u64>,
    },
    /// `shard` is being moved; its events are refused until the move ends.
    ShardMoving {
        /// The moving shard, if the node said.
        shard: Option<u32>,
        /// The shard's epoch as the node knows it.
        epoch: Option<u64>,
    },
    /// The request got no answer (connection refused, reset, timeout).
    Unreachable,
}

/// Where batches go.
///
/// Called from the sender's worker and batch tasks, concurrently, so every
/// method must be cheap and must not block.
pub trait Router: Send + Sync + fmt::Debug + 'static {
    /// The partition of `event`. Events of different partitions never
    /// share a batch. The default puts every event in partition 0.
    fn partition(&self, _event: &Event) -> Partition {
        0
    }

    /// The node that receives `batch` (events of one partition) on try
    /// number `attempt` (0 for the first try; retries count up). A retry may
    /// go to another node: the events keep their ids, so a node that already
    /// applied them counts them as duplicates.
    fn route(&self, batch: &[Event], attempt: u32) -> Client;

    /// Learns from `client`'s answer to an attempt. Answers true when the
    /// router now routes the refused events elsewhere (the sender then
    /// resends them at once instead of backing off). The default learns
    /// nothing.
    fn feedback(&self, _client: &Client, _feedback: Feedback) -> bool {
        false
    }
}

/// Every batch goes to one node.
#[derive(Debug, Clone)]
pub struct SingleNode {
    client: Client,
}

impl SingleNode {
    /// A router sending every batch to `client`'s node, with its settings.
    pub fn new(client: Client) -> SingleNode {
        SingleNode { client }
    }
}

impl Router for SingleNode {
    fn route(&self, _batch: &[Event], _attempt: u32) -> Client {
        self.client.clone()
    }
}

/// Batches (and retries) rotate over a fixed list of nodes.
#[derive(Debug)]
pub struct RoundRobin {
    clients: Vec<Client>,
    next: AtomicUsize,
}

impl RoundRobin {
    /// A router over `clients`; `None` when the list is empty.
    pub fn new(clients: Vec<Client>) -> Option<RoundRobin> {
        if clients.is_empty() {
            return None;
        }
        Some(RoundRobin {
            clients,
            next: AtomicUsize::new(0),
        })
    }

    /// A router over the nodes at `base_urls`, each reached with
    /// `client`'s settings ([`Client::for_node`]: credential, timeout, TLS,
    /// the one connection pool); `client`'s own URL is not in the rotation
    /// unless listed. `None` when the list is empty.
    pub fn from_urls<I, S>(client: &Client, base_urls: I) -> Option<RoundRobin>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let clients = base_urls
            .into_iter()
            .map(|url| client.for_node(url))
            .collect();
        RoundRobin::new(clients)
    }
}

impl Router for RoundRobin {
    fn route(&self, _batch: &[Event], _attempt: u32) -> Client {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[index].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_rotates_over_every_node() {
        let template = Client::new("http://unused:1").with_token("the-one-credential");
        let router =
            RoundRobin::from_urls(&template, ["http://a:1", "http://b:2", "http://c:3"]).unwrap();
        let picked: Vec<String> = (0..6)
            .map(|_| router.route(&[], 0).base_url().to_string())
            .collect();
        assert_eq!(
            picked,
            [
                "http://a:1",
                "http://b:2",
                "http://c:3",
                "http://a:1",
                "http://b:2",
                "http://c:3"
            ]
        );
        // Every node's client carries the template's one credential.
        let request = router
            .route(&[], 0)
            .request(reqwest::Method::GET, "http://a:1/v1/status")
            .build()
            .unwrap();
        assert_eq!(
            request.headers()[reqwest::header::AUTHORIZATION],
            "Bearer the-one-credential"
        );
        assert!(RoundRobin::new(Vec::new()).is_none());
    }
}
