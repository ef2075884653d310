//! Request admission: the limits that shed load before it reaches the
//! engine (`docs/operations.md`, "Limits").
//!
//! - **Requests in flight per credential** (`limit_in_flight`, middleware
//!   around every route but the probes and node-to-node calls): each bearer
//!   token or basic-auth user — or, without one, each client IP address —
//!   may have `requests_in_flight_per_credential_max` requests in flight;
//!   one more answers `429 too_many_requests` with `Retry-After`. One noisy
//!   client then cannot take every worker from the others.
//! - **Events per second per project** (`ProjectRates`, optional): a token
//!   bucket per project, refilled at the configured rate and holding one
//!   second of it; a batch that needs more tokens than the bucket holds
//!   answers `429 rate_limited` with the wait in `Retry-After`, and nothing
//!   of it is applied (so a retry cannot double count).
//!
//! Credentials are kept only as keyed hashes, and only while a request is
//! in flight: the tracker forgets a credential when its last request ends.

use super::error::ApiError;
use crate::limits;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use dashmap::DashMap;
use sessiondb_protocol::ErrorCode;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The limits a request is admitted under, and their counters.
#[derive(Debug)]
pub struct Admission {
    in_flight: InFlight,
    /// `None`: no per-project rate limit (the default).
    rates: Option<ProjectRates>,
    /// Requests refused, by limit, for `/metrics`.
    pub refusals: Refusals,
}

/// Requests refused by each limit since the start.
#[derive(Debug, Default)]
pub struct Refusals {
    pub in_flight: AtomicU64,
    pub rate: AtomicU64,
    pub overloaded: AtomicU64,
    pub query_cost: AtomicU64,
    /// An ingest body over `BODY_BYTES_MAX` as sent.
    pub body_bytes: AtomicU64,
    /// A compressed ingest body that inflates past `BODY_BYTES_MAX`.
    pub decompressed_body_bytes: AtomicU64,
    /// An ingest body in a `Content-Encoding` the node does not read.
    pub content_encoding: AtomicU64,
}

impl Admission {
    /// `sessiondb_requests_refused_total{limit}` (`crate::metrics`).
    pub fn register_metrics(&self, registry: &mut crate::metrics::Registry) {
        let refusals = &self.refusals;
        let samples = [
            ("in_flight", &refusals.in_flight),
            ("rate", &refusals.rate),
            ("overloaded", &refusals.overloaded),
            ("query_cost", &refusals.query_cost),
            ("body_bytes", &refusals.body_bytes),
            ("decompressed_body_bytes", &refusals.decompressed_body_bytes),
            ("content_encoding", &refusals.content_encoding),
        ]
        .map(|(limit, counter)| (limit.to_string(), counter.load(Ordering::Relaxed)));
        crate::metrics::labeled_counter(
            registry,
            "sessiondb_requests_refused_total",
            "Requests refused whole by a limit (docs/operations.md, Limits).",
            "limit",
            samples,
        );
    }

    pub fn new(
        requests_in_flight_per_credential_max: usize,
        project_events_per_second_max: Option<u64>,
    ) -> Admission {
        Admission {
            in_flight: InFlight::new(
                requests_in_flight_per_credential_max,
                limits::CREDENTIALS_TRACKED_MAX,
            ),
            rates: project_events_per_second_max.map(ProjectRates::new),
            refusals: Refusals::default(),
        }
    }

    /// Takes `events` tokens per project from the project's buckets at
    /// `now_ms`, all or none; `429 rate_limited` when a bucket holds too
    /// few.
    pub fn take_events(&self, per_project: &[(&str, u64)], now_ms: i64) -> Result<(), ApiError> {
        let Some(rates) = &self.rates else {
            return Ok(());
        };
        rates.take(per_project, now_ms).map_err(|refusal| {
            self.refusals.rate.fetch_add(1, Ordering::Relaxed);
            let seconds = refusal.wait_ms.div_ceil(1_000).max(1);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                format!(
                    "project `{}` may send {} events per second (--project-events-per-second-max) \
                     and this batch needs {} of them; retry after {seconds} s or send smaller batches",
                    refusal.project, rates.per_second, refusal.needed
                ),
            )
            .with_retry_after(seconds)
        })
    }
}

/// Paths no admission limit applies to: the probes (an orchestrator must
/// see a busy node as alive) and node-to-node calls (throttling Raft or a
/// shard move would turn client load into a cluster failure; they carry
/// the cluster secret).
fn is_exempt(path: &str) -> bool {
    path == "/v1/health" || path == "/v1/ready" || path.starts_with("/v1/internal/")
}

/// Middleware around every route: counts the request against its
/// credential's in-flight limit while it is served.
pub async fn limit_in_flight(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if is_exempt(request.path()) {
        return next.call(request).await.map(|r| r.map_into_left_body());
    }
    let Some(admission) = request
        .app_data::<web::Data<super::AppState>>()
        .map(|state| Arc::clone(&state.admission))
    else {
        return next.call(request).await.map(|r| r.map_into_left_body());
    };
    let caller = caller_of(&request, &admission.in_flight.hasher);
    match admission.in_flight.enter(caller) {
        Ok(_ticket) => next.call(request).await.map(|r| r.map_into_left_body()),
        Err(refusal) => {
            admission.refusals.in_flight.fetch_add(1, Ordering::Relaxed);
            let message = match refusal {
                InFlightRefusal::PerCredential { max } => format!(
                    "this credential (or client address) already has {max} requests in flight \
                     (--requests-in-flight-per-credential-max); wait for answers before sending more"
                ),
                InFlightRefusal::TooManyCallers { max } => format!(
                    "the node is tracking {max} callers with requests in flight \
                     (CREDENTIALS_TRACKED_MAX); retry later"
                ),
            };
            let error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                message,
            )
            .with_retry_after(limits::OVERLOAD_RETRY_AFTER_SECONDS);
            let response = error.error_response();
            Ok(request.into_response(response).map_into_right_body())
        }
    }
}

/// Who a request counts against: a keyed hash of its credential, else its
/// peer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Caller {
    Credential(u64),
    Address(Option<IpAddr>),
}

/// The bearer token or the basic-auth user name (not the password: Segment
/// clients send their write key as the user), hashed with a per-process
/// random key so the tracker never holds a secret.
fn caller_of(request: &ServiceRequest, hasher: &std::collections::hash_map::RandomState) -> Caller {
    let credential = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, rest) = value.trim().split_once(' ')?;
            if scheme.eq_ignore_ascii_case("bearer") {
                Some(rest.trim().to_string())
            } else if scheme.eq_ignore_ascii_case("basic") {
                super::compat::basic_auth_user(request.request())
                    .ok()
                    .flatten()
            } else {
                None
            }
        });
    match credential {
        Some(credential) => Caller::Credential(hasher.hash_one(&credential)),
        None => Caller::Address(request.peer_addr().map(|address| address.ip())),
    }
}

/// Requests in flight per caller. Every request of every worker thread
/// passes here, so the map is a `DashMap` (sharded locks), and the number
/// of callers tracked is its own atomic: a caller's slot is reserved before
/// its entry is made.
#[derive(Debug)]
struct InFlight {
    per_caller_max: usize,
    callers_max: usize,
    counts: Arc<Counts>,
    hasher: std::collections::hash_map::RandomState,
}

#[derive(Debug, Default)]
struct Counts {
    per_caller: DashMap<Caller, usize>,
    callers: AtomicUsize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InFlightRefusal {
    PerCredential { max: usize },
    TooManyCallers { max: usize },
}

/// A request's place; leaving it (drop) frees the place.
#[derive(Debug)]
struct Ticket {
    caller: Caller,
    counts: Arc<Counts>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let dashmap::Entry::Occupied(mut entry) = self.counts.per_caller.entry(self.caller) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
                self.counts.callers.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl InFlight {
    fn new(per_caller_max: usize, callers_max: usize) -> InFlight {
        InFlight {
            per_caller_max,
            callers_max,
            counts: Arc::new(Counts::default()),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn enter(&self, caller: Caller) -> Result<Ticket, InFlightRefusal> {
        let counts = &self.counts;
        match counts.per_caller.entry(caller) {
            dashmap::Entry::Occupied(mut entry) => {
                if *entry.get() >= self.per_caller_max {
                    return Err(InFlightRefusal::PerCredential {
                        max: self.per_caller_max,
                    });
                }
                *entry.get_mut() += 1;
            }
            dashmap::Entry::Vacant(entry) => {
                let max = self.callers_max;
                let reserved =
                    counts
                        .callers
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |callers| {
                            (callers < max).then_some(callers + 1)
                        });
                if reserved.is_err() {
                    return Err(InFlightRefusal::TooManyCallers { max });
                }
                if self.per_caller_max == 0 {
                    counts.callers.fetch_sub(1, Ordering::AcqRel);
                    return Err(InFlightRefusal::PerCredential { max: 0 });
                }
                entry.insert(1);
            }
        }
        Ok(Ticket {
            caller,
            counts: Arc::clone(&self.counts),
        })
    }
}

/// One token bucket per project. Tokens are kept in thousandths of an
/// event so refills at any rate stay exact in integers. Every ingest
/// request of every worker thread passes here: the map is a `DashMap`, and
/// each bucket has its own lock, so batches of different projects do not
/// wait on each other.
#[derive(Debug)]
struct ProjectRates {
    per_second: u64,
    buckets: DashMap<String, Arc<Mutex<Bucket>>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    updated_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RateRefusal {
    project: String,
    needed: u64,
    wait_ms: u64,
}

impl ProjectRates {
    fn new(per_second: u64) -> ProjectRates {
        ProjectRates {
            per_second: per_second.max(1),
            buckets: DashMap::new(),
        }
    }

    /// The bucket holds one second's worth of events at most (the burst).
    fn capacity_milli(&self) -> u64 {
        self.per_second.saturating_mul(1_000)
    }

    fn take(&self, per_project: &[(&str, u64)], now_ms: i64) -> Result<(), RateRefusal> {
        let capacity = self.capacity_milli();
        // The batch's buckets, locked in name order (no two takes wait on
        // each other in a cycle); no map lock is held meanwhile.
        let mut names: Vec<&str> = per_project.iter().map(|(project, _)| *project).collect();
        names.sort_unstable();
        names.dedup();
        let handles: Vec<(&str, Arc<Mutex<Bucket>>)> = names
            .into_iter()
            .map(|project| (project, self.bucket(project, capacity, now_ms)))
            .collect();
        let mut buckets: Vec<(&str, std::sync::MutexGuard<'_, Bucket>)> = handles
            .iter()
            .map(|(project, bucket)| {
                (
                    *project,
                    bucket.lock().unwrap_or_else(PoisonError::into_inner),
                )
            })
            .collect();
        // Refill every bucket this batch touches, check all, then take: a
        // batch for two projects is admitted whole or not at all.
        for (project, events) in per_project {
            let bucket = guard_of(&mut buckets, project);
            let elapsed_ms = u64::try_from(now_ms - bucket.updated_ms).unwrap_or(0);
            // tokens/s × ms = milli-tokens.
            let refill = elapsed_ms.saturating_mul(self.per_second);
            bucket.milli_tokens = bucket.milli_tokens.saturating_add(refill).min(capacity);
            bucket.updated_ms = bucket.updated_ms.max(now_ms);
            let needed = events.saturating_mul(1_000);
            if needed > bucket.milli_tokens {
                let missing = needed - bucket.milli_tokens;
                return Err(RateRefusal {
                    project: (*project).to_string(),
                    needed: *events,
                    wait_ms: missing.div_ceil(self.per_second),
                });
            }
        }
        for (project, events) in per_project {
            guard_of(&mut buckets, project).milli_tokens -= events.saturating_mul(1_000);
        }
        Ok(())
    }

    /// `project`'s bucket, made full if new. More names than projects can
    /// exist: past `RATE_LIMITED_PROJECTS_MAX` the full buckets, which are
    /// the same as absent ones, are dropped first.
    fn bucket(&self, project: &str, capacity: u64, now_ms: i64) -> Arc<Mutex<Bucket>> {
        if let Some(bucket) = self.buckets.get(project) {
            return Arc::clone(bucket.value());
        }
        if self.buckets.len() >= limits::RATE_LIMITED_PROJECTS_MAX {
            self.buckets.retain(|_, bucket| {
                bucket
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .milli_tokens
                    < capacity
            });
        }
        let full = Bucket {
            milli_tokens: capacity,
            updated_ms: now_ms,
        };
        Arc::clone(
            self.buckets
                .entry(project.to_string())
                .or_insert_with(|| Arc::new(Mutex::new(full)))
                .value(),
        )
    }
}

/// The locked bucket of `project` among a batch's.
fn guard_of<'a, 'b>(
    buckets: &'a mut [(&str, std::sync::MutexGuard<'b, Bucket>)],
    project: &str,
) -> &'a mut Bucket {
    let (_, guard) = buckets
        .iter_mut()
        .find(|(name, _)| *name == project)
        .expect("every project of the batch has its bucket");
    guard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_per_caller_and_frees_on_drop() {
        let in_flight = InFlight::new(2, 10);
        let alice = Caller::Credential(1);
        let bob = Caller::Credential(2);
        let first = in_flight.enter(alice).unwrap();
        let _second = in_flight.enter(alice).unwrap();
        assert_eq!(
            in_flight.enter(alice).unwrap_err(),
            InFlightRefusal::PerCredential { max: 2 }
        );
        // Another caller is not affected.
        let _bobs = in_flight.enter(bob).unwrap();
        drop(first);
        let _third = in_flight.enter(alice).unwrap();
    }

    #[test]
    fn in_flight_forgets_idle_callers_and_bounds_how_many_it_tracks() {
        let in_flight = InFlight::new(5, 2);
        let first = in_flight.enter(Caller::Credential(1)).unwrap();
        let _second = in_flight.enter(Caller::Credential(2)).unwrap();
        assert_eq!(
            in_flight.enter(Caller::Credential(3)).unwrap_err(),
            InFlightRefusal::TooManyCallers { max: 2 }
        );
        drop(first);
        assert_eq!(in_flight.counts.per_caller.len(), 1);
        assert_eq!(in_flight.counts.callers.load(Ordering::Acquire), 1);
        let _third = in_flight.enter(Caller::Credential(3)).unwrap();
    }

    #[test]
    fn token_bucket_allows_a_burst_then_refills_at_the_rate() {
        let rates = ProjectRates::new(100);
        rates.take(&[("shop", 100)], 0).unwrap();
        let refusal = rates.take(&[("shop", 10)], 0).unwrap_err();
        assert_eq!(refusal.needed, 10);
        // 10 events at 100/s: 100 ms.
        assert_eq!(refusal.wait_ms, 100);
        rates.take(&[("shop", 10)], 100).unwrap();
        // Never more than one second's worth, however long it waited.
        let refusal = rates.take(&[("shop", 101)], 1_000_000).unwrap_err();
        assert_eq!(refusal.wait_ms, 10);
    }

    #[test]
    fn token_bucket_takes_a_batch_whole_or_not_at_all() {
        let rates = ProjectRates::new(10);
        rates.take(&[("a", 5)], 0).unwrap();
        // `b` has room, `a` has not: nothing is taken from `b`.
        let refusal = rates.take(&[("b", 10), ("a", 6)], 0).unwrap_err();
        assert_eq!(refusal.project, "a");
        rates.take(&[("b", 10)], 0).unwrap();
    }
}
