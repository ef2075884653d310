//! The chaos tests' final read (`docs/reliability.md`): which
//! events a shard has applied, as this node holds them.
//!
//! After the faults heal, the chaos checker asks every shard's owner for
//! its event ids and compares them with the recorded client history: every
//! acknowledged event must be there exactly once, every event that only
//! ever failed must not. The read goes through the shard actor like any
//! other message, so it sees everything applied before it was queued.

use super::actors::ShardMessage;
use super::handoff::{HandoffError, ShardRole};
use super::Engine;
use std::time::Duration;

/// One event held by a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditedEvent {
    pub project: String,
    pub visitor: String,
    pub id: String,
}

/// A shard's applied events and this node's role for the shard when read.
#[derive(Debug, Clone)]
pub struct ShardAudit {
    pub shard: u32,
    pub role: ShardRole,
    /// Retained events (inside the horizon), sorted. Events of sessions
    /// frozen past the allowed lateness keep no id and are not listed.
    pub events: Vec<AuditedEvent>,
}

impl Engine {
    /// Lists the events `shard` holds on this node, whatever its role (a
    /// node that no longer owns a shard holds none of its events once the
    /// move's drop reached it).
    pub async fn audit_shard(&self, shard: u32) -> Result<ShardAudit, HandoffError> {
        let shards = self.shards();
        if shard >= shards {
            return Err(HandoffError::UnknownShard { shard, shards });
        }
        let role = self.shard_role(shard);
        let snapshot = |reply| ShardMessage::Snapshot { reply };
        let wait = Duration::from_millis(crate::limits::ACTOR_REPLY_WAIT_MS);
        let state = self.inner.shard_actors[shard as usize]
            .call(snapshot, wait)
            .await
            .map_err(HandoffError::Actor)?;
        let mut events: Vec<AuditedEvent> = state
            .retained_event_ids()
            .into_iter()
            .map(|(project, visitor, id)| AuditedEvent {
                project: project.to_string(),
                visitor: visitor.into_string(),
                id: id.into_string(),
            })
            .collect();
        events
            .sort_by(|a, b| (&a.project, &a.visitor, &a.id).cmp(&(&b.project, &b.visitor, &b.id)));
        Ok(ShardAudit {
            shard,
            role,
            events,
        })
    }
}
