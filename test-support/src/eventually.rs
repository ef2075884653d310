//! The one bounded wait of the tests.
//!
//! Nodes, clusters and browsers reach a state some time after the call that
//! caused it. A test never sleeps for that time: it asks again, every
//! [`POLL_INTERVAL`], until the answer is right or a bound passes. Bounds are
//! generous (debug builds on a busy 2-core machine are slow) because they are
//! failure points, not delays: a passing test waits only as long as its
//! condition takes.

use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

/// Pause between two attempts: short next to any bound, long enough that
/// polling does not load the node it waits for.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A condition that did not hold within its bound, with the last thing seen
/// instead.
#[derive(Debug)]
pub struct TimedOut<E> {
    pub within: Duration,
    pub attempts: u32,
    pub last: E,
}

impl<E: fmt::Display> fmt::Display for TimedOut<E> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "not within {:?} ({} attempts); last seen: {}",
            self.within, self.attempts, self.last
        )
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for TimedOut<E> {}

/// Calls `attempt` until it answers `Ok`, every [`POLL_INTERVAL`], and
/// answers that value; once `within` has passed, answers the last `Err`
/// (what was seen instead). `attempt` runs at least once.
pub async fn poll_until<T, E>(
    within: Duration,
    mut attempt: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, TimedOut<E>> {
    let deadline = Instant::now() + within;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let last = match attempt().await {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            return Err(TimedOut {
                within,
                attempts,
                last,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// [`poll_until`] for a test: the value once `attempt` answers `Ok`, else
/// the test fails naming `what` and the last thing seen.
pub async fn eventually<T, E: fmt::Display>(
    within: Duration,
    what: &str,
    attempt: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    match poll_until(within, attempt).await {
        Ok(value) => value,
        Err(timed_out) => panic!("{what}: {timed_out}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_the_first_success() {
        let mut calls = 0;
        let value = eventually(Duration::from_secs(60), "the third call", async || {
            calls += 1;
            if calls == 3 {
                Ok(calls)
            } else {
                Err(format!("call {calls}"))
            }
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn a_zero_bound_still_tries_once_and_keeps_what_it_saw() {
        let mut calls = 0u32;
        let timed_out = poll_until(Duration::ZERO, async || -> Result<(), u32> {
            calls += 1;
            Err(calls)
        })
        .await
        .expect_err("never succeeds");
        assert_eq!((timed_out.attempts, timed_out.last), (1, 1));
        assert_eq!(
            timed_out.to_string(),
            "not within 0ns (1 attempts); last seen: 1"
        );
    }

    #[tokio::test]
    async fn eventually_fails_the_test_naming_what_it_waited_for() {
        let failed = tokio::spawn(eventually(Duration::ZERO, "the impossible", async || {
            Err::<(), _>("still false")
        }))
        .await
        .expect_err("the wait fails");
        let message = failed
            .into_panic()
            .downcast::<String>()
            .expect("a formatted message");
        assert_eq!(
            *message,
            "the impossible: not within 0ns (1 attempts); last seen: still false"
        );
    }
}
