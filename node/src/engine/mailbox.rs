//! A bounded mailbox in front of a ractor actor, and the one way to ask an
//! actor something.
//!
//! Ractor mailboxes are unbounded. Every actor of ours is reached through a
//! `Mailbox`, which holds a semaphore permit for each message in flight:
//! senders wait (or give up) when `ACTOR_QUEUE_MESSAGES_MAX` messages are
//! queued, and the permit is released when the actor has handled the
//! message and dropped its envelope.
//!
//! Requests carry ractor's `RpcReplyPort`: `Mailbox::call` is ractor's call
//! (`ActorRef::call`) behind the bound, with a timeout; `Mailbox::request`
//! sends now and answers a `Pending` reply to await later, for callers that
//! queue many requests in order before they wait (replay, checkpoints, the
//! sequencer). A request whose actor stops or fails is answered
//! `CallError::NoAnswer` at once: its reply port is dropped with it.

use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
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

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the actor's queue stayed full for {waited_ms} ms")]
    Full { waited_ms: u64 },
    #[error("the actor has stopped")]
    Closed,
    /// The actor stopped or failed before it answered.
    #[error("the actor stopped or failed before it answered")]
    NoAnswer,
    #[error("the actor did not answer within {waited_ms} ms")]
    TimedOut { waited_ms: u64 },
}

fn milliseconds(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
}

/// A request sent, its answer still to come.
#[derive(Debug)]
pub struct Pending<T> {
    answer: ractor::concurrency::OneshotReceiver<T>,
    wait: Duration,
}

impl<T> Pending<T> {
    /// The answer, waiting at most the request's bound.
    pub async fn answer(self) -> Result<T, CallError> {
        match tokio::time::timeout(self.wait, self.answer).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(CallError::NoAnswer),
            Err(_) => Err(CallError::TimedOut {
                waited_ms: milliseconds(self.wait),
            }),
        }
    }
}

/// A reply port for a request, and its pending answer.
fn reply_port<T: Send + 'static>(wait: Duration) -> (RpcReplyPort<T>, Pending<T>) {
    let (sender, answer) = ractor::concurrency::oneshot();
    (RpcReplyPort::from(sender), Pending { answer, wait })
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

    /// Asks the actor and waits for the answer (ractor's call): at most
    /// `wait` for room, then at most `wait` for the answer.
    pub async fn call<T, F>(&self, build: F, wait: Duration) -> Result<T, CallError>
    where
        T: Send + 'static,
        F: FnOnce(RpcReplyPort<T>) -> M,
    {
        let permit = self.permit_within(wait).await?;
        let called = self
            .actor
            .call(
                |port| Envelope {
                    message: build(port),
                    _permit: permit,
                },
                Some(wait),
            )
            .await;
        match called {
            Ok(CallResult::Success(answer)) => Ok(answer),
            Ok(CallResult::Timeout) => Err(CallError::TimedOut {
                waited_ms: milliseconds(wait),
            }),
            Ok(CallResult::SenderError) => Err(CallError::NoAnswer),
            Err(_) => Err(CallError::Closed),
        }
    }

    /// Sends a request now (waiting as long as it takes for room, like
    /// `send`) and answers its pending reply, bounded by `wait`.
    pub async fn request<T, F>(&self, build: F, wait: Duration) -> Result<Pending<T>, CallError>
    where
        T: Send + 'static,
        F: FnOnce(RpcReplyPort<T>) -> M,
    {
        let (port, pending) = reply_port(wait);
        self.send(build(port))
            .await
            .map_err(|_| CallError::Closed)?;
        Ok(pending)
    }

    async fn permit_within(&self, wait: Duration) -> Result<OwnedSemaphorePermit, CallError> {
        tokio::time::timeout(wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| CallError::Full {
                waited_ms: milliseconds(wait),
            })?
            .map_err(|_| CallError::Closed)
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

    /// Sends a request in the room held; its answer to await later.
    pub fn request<T, F>(self, build: F, wait: Duration) -> Result<Pending<T>, CallError>
    where
        T: Send + 'static,
        F: FnOnce(RpcReplyPort<T>) -> M,
    {
        let (port, pending) = reply_port(wait);
        self.send(build(port)).map_err(|_| CallError::Closed)?;
        Ok(pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::{Actor, ActorProcessingErr};

    /// Answers a number with its double; panics on 0.
    struct Doubler;

    enum Ask {
        Double(u64, RpcReplyPort<u64>),
    }

    impl Actor for Doubler {
        type Msg = Envelope<Ask>;
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<Self::Msg>,
            _arguments: (),
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }

        async fn handle(
            &self,
            _myself: ActorRef<Self::Msg>,
            envelope: Self::Msg,
            _state: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            let Ask::Double(number, reply) = envelope.message;
            assert!(number != 0, "zero");
            let _ = reply.send(number * 2);
            Ok(())
        }
    }

    async fn doubler() -> Mailbox<Ask> {
        let (actor, _) = Actor::spawn(None, Doubler, ()).await.expect("spawns");
        Mailbox::new(actor, 2)
    }

    #[tokio::test]
    async fn calls_and_requests_are_answered_in_order() {
        let mailbox = doubler().await;
        let wait = Duration::from_secs(10);
        let answer = mailbox.call(|reply| Ask::Double(21, reply), wait).await;
        assert_eq!(answer, Ok(42));
        let first = mailbox
            .request(|reply| Ask::Double(1, reply), wait)
            .await
            .unwrap();
        let second = mailbox
            .request(|reply| Ask::Double(2, reply), wait)
            .await
            .unwrap();
        assert_eq!(
            (first.answer().await, second.answer().await),
            (Ok(2), Ok(4))
        );
        assert_eq!(mailbox.depth(2), 0);
    }

    #[tokio::test]
    async fn a_failed_or_stopped_actor_answers_at_once() {
        let mailbox = doubler().await;
        let wait = Duration::from_secs(30);
        let failed = mailbox.call(|reply| Ask::Double(0, reply), wait).await;
        assert_eq!(failed, Err(CallError::NoAnswer));
        mailbox.stop();
        let stopped = mailbox.call(|reply| Ask::Double(1, reply), wait).await;
        assert_eq!(stopped, Err(CallError::Closed));
    }
}
