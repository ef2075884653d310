//! Which node a batch goes to.
//!
//! A [`Sender`](crate::Sender) asks its [`Router`] for a destination once per
//! attempt of every batch. Today there are two routers: [`SingleNode`] and
//! [`RoundRobin`] over a fixed list of nodes (any node accepts any event).
//!
//! Shard-aware routing (the Cluster issue) slots in here: a router that
//! caches the shard map will split events by owner before batching and
//! answer the owner of a batch's shard, refreshing its map when a node
//! answers "not owner". The sender's batching, retries and flush accounting
//! do not change.

use crate::Client;
use sessiondb_protocol::Event;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Picks the node that receives one attempt of one batch.
///
/// Called from the sender's batch tasks, concurrently, so it must be cheap
/// and must not block.
pub trait Router: Send + Sync + fmt::Debug + 'static {
    /// The node that receives `batch` on try number `attempt` (0 for the
    /// first try; retries count up). A retry may go to another node: the
    /// events keep their ids, so a node that already applied them counts
    /// them as duplicates.
    fn route(&self, batch: &[Event], attempt: u32) -> &Client;
}

/// Every batch goes to one node.
#[derive(Debug, Clone)]
pub struct SingleNode {
    client: Client,
}

impl SingleNode {
    pub fn new(client: Client) -> SingleNode {
        SingleNode { client }
    }
}

impl Router for SingleNode {
    fn route(&self, _batch: &[Event], _attempt: u32) -> &Client {
        &self.client
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

    /// A router over the nodes at `base_urls`, sharing one connection pool.
    pub fn from_urls<I, S>(base_urls: I) -> Option<RoundRobin>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let http = reqwest::Client::new();
        let clients = base_urls
            .into_iter()
            .map(|url| Client::new(url).with_http_client(http.clone()))
            .collect();
        RoundRobin::new(clients)
    }
}

impl Router for RoundRobin {
    fn route(&self, _batch: &[Event], _attempt: u32) -> &Client {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_rotates_over_every_node() {
        let router = RoundRobin::from_urls(["http://a:1", "http://b:2", "http://c:3"]).unwrap();
        let picked: Vec<&str> = (0..6).map(|_| router.route(&[], 0).base_url()).collect();
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
        assert!(RoundRobin::new(Vec::new()).is_none());
    }
}
