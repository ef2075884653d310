//! A bounded mailbox in front of a ractor actor.
//!
//! Ractor mailboxes are unbounded (SPEC §10). Every actor of ours is reached
//! through a `Mailbox`, which holds a semaphore permit for each message in
//! flight: senders wait (or give up) when `ACTOR_QUEUE_MESSAGES_MAX`
//! messages are queued, and the permit is released when the actor has
//! handled the message and dropped its envelope.

use ractor::ActorRef;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A message with the permit that keeps its place in the queue.
#[derive(Debug)]
pub struct Envelope<M> {
    pub message: M,
    _permit: OwnedSemaphorePermit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MailboxError {
    #[error("the actor's queue stayed full")]
    Full,
    #[error("the actor has stopped")]
    Closed,
}

#[derive(Debug)]
pub struct Mailbox<M: Send + 'static> {
    actor: ActorRef<Envelope<M>>,
    permits: Arc<Semaphore>,
}

impl<M: Send + 'static> Mailbox<M> {
    pub fn new(actor: ActorRef<Envelope<M>>, capacity: usize) -> Self {
        assert!(capacity > 0);
        Mailbox {
            actor,
            permits: Arc::new(Semaphore::new(capacity)),
        }
    }

    /// Waits as long as it takes for room. Used only where giving up would
    /// lose data and the receiver is known to make progress.
    pub async fn send(&self, message: M) -> Result<(), MailboxError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| MailboxError::Closed)?;
        self.deliver(message, permit)
    }

    /// Waits at most `wait` for room.
    pub async fn send_within(&self, message: M, wait: Duration) -> Result<(), MailboxError> {
        let permit = tokio::time::timeout(wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| MailboxError::Full)?
            .map_err(|_| MailboxError::Closed)?;
        self.deliver(message, permit)
    }

    /// Waits at most `wait` for room and holds it: the caller can then send
    /// without waiting, e.g. after writing to the log, so that a message
    /// that is in the log is never refused by a full queue.
    pub async fn reserve_within(&self, wait: Duration) -> Result<Reservation<'_, M>, MailboxError> {
        let permit = tokio::time::timeout(wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| MailboxError::Full)?
            .map_err(|_| MailboxError::Closed)?;
        Ok(Reservation {
            mailbox: self,
            permit,
        })
    }

    /// Sends only if there is room now.
    pub fn try_send(&self, message: M) -> Result<(), MailboxError> {
        let permit = Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| MailboxError::Full)?;
        self.deliver(message, permit)
    }

    fn deliver(&self, message: M, permit: OwnedSemaphorePermit) -> Result<(), MailboxError> {
        self.actor
            .send_message(Envelope {
                message,
                _permit: permit,
            })
            .map_err(|_| MailboxError::Closed)
    }

    /// Messages queued or being handled.
    pub fn depth(&self, capacity: usize) -> usize {
        capacity.saturating_sub(self.permits.available_permits())
    }

    pub fn stop(&self) {
        self.permits.close();
        self.actor.stop(None);
    }
}

/// Room held in a mailbox for one message.
#[derive(Debug)]
pub struct Reservation<'a, M: Send + 'static> {
    mailbox: &'a Mailbox<M>,
    permit: OwnedSemaphorePermit,
}

impl<M: Send + 'static> Reservation<'_, M> {
    pub fn send(self, message: M) -> Result<(), MailboxError> {
        self.mailbox.deliver(message, self.permit)
    }
}
