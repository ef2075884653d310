//! `serve --demo`: a synthetic experiment, so that a newcomer sees results
//! move and a winner emerge. Project `demo`, experiment `homepage`,
//! variations `control` and `treatment`.
//!
//! The demo's batches go through the same ingest path as a client's
//! (`http::ingest::ingest_events`: validation, the per-project rate limit,
//! the engine, the per-project counters), so every page and metric counts
//! them like any other events.
//!
//! Each visitor is drawn once: its variation (a fair coin) and, apart from
//! it, its browser, device, country, campaign and referrer, so every
//! breakdown the project offers has values and each value holds both
//! variations in about equal parts. Conversion depends on the visitor's
//! device and campaign and on the variation: treatment lifts signups by
//! `TREATMENT_SIGNUP_LIFT_MOBILE` on mobile and
//! `TREATMENT_SIGNUP_LIFT_OTHER` elsewhere, and purchases a little, so the
//! console's verdict turns to "ahead" for signups within a few minutes.

use crate::http::{ingest, AppState};
use crate::project::{ProjectError, SettingsPatch};
use rand::{Rng, SeedableRng};
use sessiondb_protocol::{Decision, Event, EventType, Timestamp};
use std::collections::BTreeMap;
use std::time::Duration;

const DEMO_PROJECT: &str = "demo";
const DEMO_EXPERIMENT: &str = "homepage";
/// New visitors per tick, and ticks per second: 160 visitors/s, each
/// sending 2–7 events (about 800 events/s).
const DEMO_VISITORS_PER_TICK: u64 = 40;
const DEMO_TICK_MS: u64 = 250;
/// The project's breakdown attributes: every one is filled on every
/// visitor's decision.
const DEMO_BREAKDOWN_ATTRIBUTES: [&str; 5] =
    ["browser", "device", "country", "campaign", "referrer"];
/// Signup probability of a control visitor before the device and campaign
/// factors.
const SIGNUP_RATE_BASE: f64 = 0.10;
/// Relative lift of treatment's signup rate (0.25: 10 % → 12.5 %).
const TREATMENT_SIGNUP_LIFT_MOBILE: f64 = 0.25;
const TREATMENT_SIGNUP_LIFT_OTHER: f64 = 0.08;
const PURCHASE_RATE_BASE: f64 = 0.03;
const TREATMENT_PURCHASE_LIFT: f64 = 0.05;
/// A visitor's events are spread over this much time before now (within
/// the default allowed lateness).
const VISIT_SPREAD_MS: i64 = 30_000;

/// (value, weight) of each attribute, roughly like a web shop's traffic.
const BROWSERS: [(&str, u32); 4] = [("chrome", 62), ("safari", 20), ("firefox", 10), ("edge", 8)];
const DEVICES: [(&str, u32); 3] = [("desktop", 52), ("mobile", 42), ("tablet", 6)];
const COUNTRIES: [(&str, u32); 6] = [
    ("US", 34),
    ("DE", 14),
    ("GB", 12),
    ("FR", 10),
    ("IN", 17),
    ("BR", 13),
];
const CAMPAIGNS: [(&str, u32); 4] = [
    ("none", 55),
    ("newsletter", 15),
    ("spring_sale", 18),
    ("retargeting", 12),
];
const REFERRERS: [(&str, u32); 5] = [
    ("direct", 35),
    ("google", 38),
    ("facebook", 12),
    ("email", 9),
    ("partner_blog", 6),
];

/// Feeds the demo workload until the node stops; a refused batch is
/// logged and the next tick tries again.
pub async fn run(state: AppState) {
    let patch = SettingsPatch {
        breakdown_attributes: Some(DEMO_BREAKDOWN_ATTRIBUTES.map(String::from).to_vec()),
        ..SettingsPatch::default()
    };
    let engine = &state.engine;
    let created = match engine.create_project(DEMO_PROJECT, &patch).await {
        Ok(_) => Ok(()),
        // A demo project from an earlier run keeps its data and gets every
        // breakdown attribute the demo fills.
        Err(ProjectError::Exists { .. }) => engine
            .configure_project(DEMO_PROJECT, &patch)
            .await
            .map(|_| ()),
        Err(error) => Err(error),
    };
    if let Err(error) = created {
        tracing::error!(%error, "demo: cannot set up the project");
        return;
    }
    tracing::info!(
        "demo: feeding project `{DEMO_PROJECT}`, experiment `{DEMO_EXPERIMENT}` ({} visitors/s)",
        DEMO_VISITORS_PER_TICK * 1000 / DEMO_TICK_MS
    );
    let mut random = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    // Visitor ids are new on every run, so a restart does not send events
    // the deduplication has seen.
    let run_id = engine.clock().now_ms();
    let mut visitor_number = 0_u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(DEMO_TICK_MS));
    loop {
        ticker.tick().await;
        let now_ms = engine.clock().now_ms();
        let mut events = Vec::new();
        for _ in 0..DEMO_VISITORS_PER_TICK {
            visitor_number += 1;
            events.extend(visit(
                &mut random,
                &format!("demo-{run_id}-{visitor_number}"),
                now_ms,
            ));
        }
        if let Err(error) =
            ingest::ingest_events(&state, events.into_iter().map(Ok).collect()).await
        {
            tracing::warn!(%error, "demo: batch not accepted");
        }
    }
}

fn pick<'a>(random: &mut impl Rng, choices: &[(&'a str, u32)]) -> &'a str {
    let total: u32 = choices.iter().map(|(_, weight)| weight).sum();
    let mut roll = random.gen_range(0..total);
    for (value, weight) in choices {
        if roll < *weight {
            return value;
        }
        roll -= weight;
    }
    unreachable!("the roll is below the sum of the weights")
}

/// One visitor's events: a decision with its attributes, 1–4 pageviews, and
/// maybe a signup and a purchase.
fn visit(random: &mut impl Rng, visitor: &str, now_ms: i64) -> Vec<Event> {
    let treatment = random.gen_bool(0.5);
    let mut attributes = BTreeMap::new();
    for (name, choices) in [
        ("browser", &BROWSERS[..]),
        ("device", &DEVICES[..]),
        ("country", &COUNTRIES[..]),
        ("campaign", &CAMPAIGNS[..]),
        ("referrer", &REFERRERS[..]),
    ] {
        attributes.insert(name.to_string(), pick(random, choices).to_string());
    }
    let device_factor = match attributes["device"].as_str() {
        "mobile" => 0.7,
        "tablet" => 0.9,
        _ => 1.2,
    };
    let campaign_factor = match attributes["campaign"].as_str() {
        "newsletter" => 1.5,
        "retargeting" => 1.3,
        "spring_sale" => 1.2,
        _ => 1.0,
    };
    let lift = match (treatment, attributes["device"].as_str()) {
        (false, _) => 0.0,
        (true, "mobile") => TREATMENT_SIGNUP_LIFT_MOBILE,
        (true, _) => TREATMENT_SIGNUP_LIFT_OTHER,
    };
    let signup_rate = SIGNUP_RATE_BASE * device_factor * campaign_factor * (1.0 + lift);
    let purchase_lift = if treatment {
        TREATMENT_PURCHASE_LIFT
    } else {
        0.0
    };
    let purchase_rate = PURCHASE_RATE_BASE * campaign_factor * (1.0 + purchase_lift);

    let start_ms = now_ms - VISIT_SPREAD_MS + random.gen_range(0..VISIT_SPREAD_MS / 2);
    let mut sequence = 0_i64;
    let mut event = |event_type: EventType| {
        sequence += 1;
        Event {
            id: format!("{visitor}-{sequence}"),
            project: DEMO_PROJECT.into(),
            visitor: visitor.into(),
            ts: Timestamp::Milliseconds(start_ms + sequence * 2_000),
            event_type,
            key: None,
            value: None,
            attributes: BTreeMap::new(),
            decisions: Vec::new(),
        }
    };
    let mut decision = event(EventType::Decision);
    decision.decisions.push(Decision {
        experiment: DEMO_EXPERIMENT.into(),
        variation: if treatment { "treatment" } else { "control" }.into(),
    });
    decision.attributes = attributes;
    let mut events = vec![decision];
    for _ in 0..random.gen_range(1..=4) {
        events.push(event(EventType::Pageview));
    }
    if random.gen_bool(signup_rate.min(1.0)) {
        let mut signup = event(EventType::Custom);
        signup.key = Some("signup".into());
        events.push(signup);
    }
    if random.gen_bool(purchase_rate.min(1.0)) {
        let mut purchase = event(EventType::Custom);
        purchase.key = Some("purchase".into());
        purchase.value = Some(f64::from(random.gen_range(500..20_000_u32)) / 100.0);
        events.push(purchase);
    }
    events
}
