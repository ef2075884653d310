//! The benchmarks' shared workload: visitors with a decision (10
//! variations, a `browser` attribute with 10 values) and a few pageviews and
//! purchases each, spread over 7 days.

use sessiondb_node::event::{Event, EventKind, VisitorEvent};
use sessiondb_node::project::ProjectConfig;
use std::sync::Arc;

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;
pub const VARIATIONS: usize = 10;
pub const BROWSERS: usize = 10;
pub const EVENTS_PER_VISITOR: usize = 8;

/// A small deterministic generator (xorshift) so the benchmark needs no
/// test support code.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

pub fn generate(visitors: usize, start_ms: i64, config: &Arc<ProjectConfig>) -> Vec<VisitorEvent> {
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let names = Names::new();
    let mut events = Vec::with_capacity(visitors * EVENTS_PER_VISITOR);
    for visitor in 0..visitors {
        let first_ms = start_ms + random.below(7 * DAY_MS as u64 - HOUR_MS as u64) as i64;
        let visitor_id: Box<str> = format!("visitor-{visitor}").into();
        for index in 0..EVENTS_PER_VISITOR {
            let ts_ms = first_ms + index as i64 * random.below(20 * 60_000) as i64;
            let mut event = Event {
                id: format!("{visitor}-{index}").into(),
                ts_ms,
                value_micros: 0,
                key: None,
                decision: None,
                kind: EventKind::Pageview,
            };
            if index == 0 {
                event.kind = EventKind::Decision;
                let variation = random.below(VARIATIONS as u64) as usize;
                let browser = random.below(BROWSERS as u64) as usize;
                event.set_name_pairs(
                    vec![(
                        Arc::clone(&names.browser),
                        Arc::clone(&names.browsers[browser]),
                    )],
                    vec![(
                        Arc::clone(&names.experiment),
                        Arc::clone(&names.variations[variation]),
                    )],
                );
            } else if random.below(10) == 0 {
                event.kind = EventKind::Custom;
                event.key = Some(Arc::clone(&names.purchase));
                event.value_micros = random.below(100_000_000) as i64;
            }
            events.push(VisitorEvent {
                project: Arc::clone(config),
                visitor: visitor_id.clone(),
                event,
            });
        }
    }
    events
}

struct Names {
    experiment: Arc<str>,
    browser: Arc<str>,
    purchase: Arc<str>,
    variations: Vec<Arc<str>>,
    browsers: Vec<Arc<str>>,
}

impl Names {
    fn new() -> Names {
        Names {
            experiment: Arc::from("checkout"),
            browser: Arc::from("browser"),
            purchase: Arc::from("purchase"),
            variations: (0..VARIATIONS)
                .map(|index| Arc::from(format!("v{index}")))
                .collect(),
            browsers: (0..BROWSERS)
                .map(|index| Arc::from(format!("b{index}")))
                .collect(),
        }
    }
}
