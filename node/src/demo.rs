//! `serve --demo`: a synthetic experiment fed through the engine, so that a
//! newcomer sees results move. Project `demo`, experiment `homepage`,
//! variations `control` and `treatment` (which converts a little better).

use crate::engine::Engine;
use crate::project::{ProjectError, SettingsPatch};
use rand::{Rng, SeedableRng};
use sessiondb_protocol::{Decision, Event, EventType, Timestamp};
use std::time::Duration;

const DEMO_PROJECT: &str = "demo";
const DEMO_EXPERIMENT: &str = "homepage";
/// Visitors the demo cycles through.
const DEMO_VISITORS_MAX: u64 = 20_000;
/// Events sent per tick, and ticks per second.
const DEMO_BATCH_EVENTS: usize = 200;
const DEMO_TICK_MS: u64 = 250;

/// Feeds the demo workload until the engine stops accepting.
pub async fn run(engine: Engine) {
    match engine
        .create_project(DEMO_PROJECT, &SettingsPatch::default())
        .await
    {
        Ok(_) | Err(ProjectError::Exists { .. }) => {}
        Err(error) => {
            tracing::error!(%error, "demo: cannot create project");
            return;
        }
    }
    tracing::info!(
        "demo: feeding project `{DEMO_PROJECT}`, experiment `{DEMO_EXPERIMENT}` ({} events/s)",
        DEMO_BATCH_EVENTS as u64 * 1000 / DEMO_TICK_MS
    );
    let mut random = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut sequence = 0_u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(DEMO_TICK_MS));
    loop {
        ticker.tick().await;
        let now_ms = engine.clock().now_ms();
        let events = (0..DEMO_BATCH_EVENTS)
            .map(|_| {
                sequence += 1;
                demo_event(&mut random, sequence, now_ms)
            })
            .map(|event| engine.validate(event))
            .collect();
        if let Err(error) = engine.ingest(events).await {
            tracing::warn!(%error, "demo: batch not accepted");
        }
    }
}

fn demo_event(random: &mut impl Rng, sequence: u64, now_ms: i64) -> Event {
    let visitor_number = random.gen_range(0..DEMO_VISITORS_MAX);
    let treatment = visitor_number % 2 == 1;
    let browsers = ["chrome", "firefox", "safari", "edge"];
    let mut event = Event {
        id: format!("demo-{sequence}"),
        project: DEMO_PROJECT.into(),
        visitor: format!("visitor-{visitor_number}"),
        ts: Timestamp::Milliseconds(now_ms - random.gen_range(0..60_000)),
        event_type: EventType::Pageview,
        key: None,
        value: None,
        attributes: Default::default(),
        decisions: Vec::new(),
    };
    let roll: f64 = random.gen();
    let signup_rate = if treatment { 0.12 } else { 0.10 };
    if roll < 0.2 {
        event.event_type = EventType::Decision;
        let variation = if treatment { "treatment" } else { "control" };
        event.decisions.push(Decision {
            experiment: DEMO_EXPERIMENT.into(),
            variation: variation.into(),
        });
        let browser = browsers[(visitor_number % browsers.len() as u64) as usize];
        event.attributes.insert("browser".into(), browser.into());
    } else if roll < 0.2 + signup_rate {
        event.event_type = EventType::Custom;
        event.key = Some("signup".into());
    } else if roll < 0.25 + signup_rate {
        event.event_type = EventType::Custom;
        event.key = Some("purchase".into());
        event.value = Some(f64::from(random.gen_range(500..20_000_u32)) / 100.0);
    }
    event
}
