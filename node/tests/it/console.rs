//! The admin console in headless Chromium against the real binary
//! (`docs/console.md`): login with the admin token, the cluster overview,
//! an experiment page that updates while events stream in and shows the
//! JSON results API's numbers, breakdowns, time ranges, a checkpoint from
//! the UI, and refusal without the token.
//!
//! Screenshots land in `target/console-screenshots/`. Without Chromium
//! these tests fail with instructions (`scripts/test` installs it).

use crate::support::browser::{Browser, Page};
use crate::support::node::{TestNode, TEST_ADMIN_TOKEN};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sessiondb_protocol::{Decision, Event, EventType, NodeStatus, ResultsResponse, Timestamp};
use std::collections::{BTreeMap, BTreeSet};

/// The node's manual clock: 2025-11-26 10:00:00 UTC.
const START_MS: i64 = 1_764_151_200_000;
const MINUTE_MS: i64 = 60_000;
const PROJECT: &str = "shop";
const EXPERIMENT: &str = "checkout";
const BROWSERS: [&str; 3] = ["firefox", "chrome", "safari"];
/// Minutes before `START_MS` over which visitors are exposed.
const EXPOSURE_SPREAD_MINUTES: i64 = 40;

/// Events of visitor `number`: an exposure, a pageview, and on some
/// visitors a purchase (with a value) and a signup. Deterministic.
fn visitor_events(number: u32) -> Vec<Event> {
    let visitor = format!("v-{number:04}");
    let exposed_ms = START_MS - 50 * MINUTE_MS
        + i64::from(number / 2) % EXPOSURE_SPREAD_MINUTES * MINUTE_MS
        + i64::from(number % 2) * 5_000;
    let event = |suffix: &str, offset_ms: i64, event_type: EventType| Event {
        id: format!("{visitor}-{suffix}"),
        project: PROJECT.to_string(),
        visitor: visitor.clone(),
        ts: Timestamp::Milliseconds(exposed_ms + offset_ms),
        event_type,
        key: None,
        value: None,
        attributes: BTreeMap::new(),
        decisions: Vec::new(),
    };
    let mut decision = event("decision", 0, EventType::Decision);
    decision.decisions = vec![Decision {
        experiment: EXPERIMENT.to_string(),
        variation: if number.is_multiple_of(2) {
            "control"
        } else {
            "treatment"
        }
        .to_string(),
    }];
    decision.attributes.insert(
        "browser".to_string(),
        BROWSERS[number as usize % BROWSERS.len()].to_string(),
    );
    decision.attributes.insert(
        "device".to_string(),
        if number.is_multiple_of(5) {
            "mobile"
        } else {
            "desktop"
        }
        .to_string(),
    );
    let mut events = vec![decision, event("page", 10_000, EventType::Pageview)];
    if number % 3 != 2 {
        events.push(event("page-2", 20_000, EventType::Pageview));
    }
    if number.is_multiple_of(3) || number % 7 == 1 {
        let mut purchase = event("purchase", 30_000, EventType::Custom);
        purchase.key = Some("purchase".to_string());
        purchase.value = Some(f64::from(number % 9 + 1) * 12.5);
        events.push(purchase);
    }
    if number.is_multiple_of(4) || number % 5 == 3 {
        let mut signup = event("signup", 45_000, EventType::Custom);
        signup.key = Some("signup".to_string());
        events.push(signup);
    }
    events
}

fn events_of(visitors: std::ops::Range<u32>) -> Vec<Event> {
    visitors.flat_map(visitor_events).collect()
}

async fn node_with_project() -> TestNode {
    let node = TestNode::start(START_MS).await;
    node.create_project(
        PROJECT,
        json!({"bucket_ms": MINUTE_MS, "breakdown_attributes": ["browser", "device"]}),
    )
    .await;
    node
}

async fn send(node: &TestNode, events: &[Event]) {
    let answer = node.send_batch(events).await;
    assert!(
        answer.rejected.is_empty(),
        "test events must be accepted: {answer:?}"
    );
}

async fn status(node: &TestNode) -> NodeStatus {
    let raw = node.get_raw("/v1/status").await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    serde_json::from_value(raw.body).expect("a NodeStatus")
}

/// Opens the console in a fresh page and logs in through the login form.
async fn logged_in_page(browser: &Browser, node: &TestNode) -> Page {
    let page = browser.new_page().await;
    page.navigate(&node.url("/console/")).await;
    page.wait_for("the login screen", "document.body.dataset.view === 'login'")
        .await;
    page.evaluate(&format!(
        "document.querySelector('#token').value = {}; \
         document.querySelector('#login-form').requestSubmit(); true",
        json!(node.admin_token())
    ))
    .await;
    page.wait_for(
        "the overview after login",
        "document.body.dataset.view === 'overview'",
    )
    .await;
    page
}

/// Every `[data-metric]` cell of the results, keyed by (group, variation,
/// key, metric), with its exact value and its text.
async fn shown_cells(page: &Page) -> BTreeMap<(String, String, String, String), (f64, String)> {
    let cells = page
        .evaluate(
            "[...document.querySelectorAll('#results [data-metric]')].map(c => ({
                group: c.closest('[data-group]').dataset.group,
                variation: c.closest('tr').dataset.variation,
                key: (c.closest('table').dataset.key || ''),
                metric: c.dataset.metric,
                value: c.dataset.value,
                text: c.textContent.split(' [')[0]}))",
        )
        .await;
    let mut shown = BTreeMap::new();
    for cell in cells.as_array().expect("an array of cells") {
        let field = |name: &str| cell[name].as_str().unwrap_or_default().to_string();
        let value: f64 = field("value")
            .parse()
            .unwrap_or_else(|e| panic!("cell {cell}: value is not a number: {e}"));
        let key = (
            field("group"),
            field("variation"),
            field("key"),
            field("metric"),
        );
        assert!(
            shown.insert(key.clone(), (value, field("text"))).is_none(),
            "cell {key:?} shown twice"
        );
    }
    shown
}

/// What the results table must show for `results`: the same cells as
/// `shown_cells`, with the API's numbers.
fn expected_cells(results: &ResultsResponse) -> BTreeMap<(String, String, String, String), f64> {
    let mut expected = BTreeMap::new();
    for group in &results.groups {
        let group_name = group.breakdown_value.clone().unwrap_or_default();
        for variation in &group.variations {
            let mut put = |key: &str, metric: &str, value: f64| {
                expected.insert(
                    (
                        group_name.clone(),
                        variation.variation.clone(),
                        key.to_string(),
                        metric.to_string(),
                    ),
                    value,
                );
            };
            put("", "visitors", variation.visitors as f64);
            put("", "conflicts", variation.conflicts as f64);
            put("", "active_visitors.value", variation.active_visitors.value);
            put("", "sessions.sessions", variation.sessions.sessions as f64);
            put("", "sessions.bounce_rate", variation.sessions.bounce_rate);
            put(
                "",
                "sessions.duration_ms_mean",
                variation.sessions.duration_ms_mean,
            );
            put(
                "",
                "sessions.pageviews_per_session",
                variation.sessions.pageviews_per_session,
            );
            for metrics in &variation.metrics {
                let key = metrics.key.as_str();
                put(key, "unique_conversions", metrics.unique_conversions as f64);
                put(key, "total_conversions", metrics.total_conversions as f64);
                put(key, "conversion_rate", metrics.conversion_rate);
                put(key, "value_per_visitor", metrics.value_per_visitor);
                for (prefix, comparison) in [
                    ("rate_comparison", &metrics.rate_comparison),
                    ("value_comparison", &metrics.value_comparison),
                ] {
                    if let Some(comparison) = comparison {
                        put(
                            key,
                            &format!("{prefix}.relative_improvement"),
                            comparison.relative_improvement,
                        );
                        put(key, &format!("{prefix}.p_value"), comparison.p_value);
                        if let Some(p_value) = comparison.always_valid_p_value {
                            put(key, &format!("{prefix}.always_valid_p_value"), p_value);
                        }
                    }
                }
            }
        }
    }
    expected
}

/// How a metric's number is printed: scale to display units, decimals.
fn display_of(metric: &str) -> (f64, i32) {
    match metric {
        "visitors" | "conflicts" | "sessions.sessions" | "unique_conversions"
        | "total_conversions" => (1.0, 0),
        "active_visitors.value" => (1.0, 1),
        "sessions.bounce_rate" | "conversion_rate" => (100.0, 2),
        "sessions.duration_ms_mean" => (0.001, 1),
        "sessions.pageviews_per_session" => (1.0, 2),
        "value_per_visitor" => (1.0, 4),
        metric if metric.ends_with(".relative_improvement") => (100.0, 2),
        // `.p_value` and `.always_valid_p_value`.
        metric if metric.ends_with("p_value") => (1.0, 4),
        other => panic!("unexpected metric {other}"),
    }
}

/// The first number in a cell's text (`−` is a minus sign).
fn leading_number(text: &str) -> Option<f64> {
    // Counts carry thousands separators ("1,234").
    let text = text.replace('−', "-").replace(',', "");
    let number: String = text
        // "▲ "/"▼ " mark better and worse improvements.
        .trim_start_matches(['▲', '▼', ' '])
        .trim_start_matches(['<', '+'])
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
        .collect();
    number.parse().ok()
}

/// Fails unless the table shows exactly the API's cells: same set, each
/// exact value equal, each printed number the value rounded for display.
fn assert_shown_equals_api(
    shown: &BTreeMap<(String, String, String, String), (f64, String)>,
    results: &ResultsResponse,
) {
    let expected = expected_cells(results);
    let shown_keys: BTreeSet<_> = shown.keys().collect();
    let expected_keys: BTreeSet<_> = expected.keys().collect();
    assert_eq!(
        shown_keys, expected_keys,
        "the table's cells differ from the API's"
    );
    for (key, api_value) in &expected {
        let (value, text) = &shown[key];
        let tolerance = 1e-12 * api_value.abs().max(1.0);
        assert!(
            (value - api_value).abs() <= tolerance,
            "{key:?}: the page holds {value}, the API says {api_value}"
        );
        let (scale, decimals) = display_of(&key.3);
        if key.3.ends_with("p_value") && text.starts_with('<') {
            assert!(*api_value < 1e-4, "{key:?}: shown {text}, API {api_value}");
            continue;
        }
        let printed = leading_number(text)
            .unwrap_or_else(|| panic!("{key:?}: no number in the text {text:?}"));
        let half_step = 0.5 * 10f64.powi(-decimals) + 1e-9;
        assert!(
            (printed - api_value * scale).abs() <= half_step,
            "{key:?}: the page prints {text:?}, the API says {api_value}"
        );
    }
}

async fn api_results(
    node: &TestNode,
    from: i64,
    to: i64,
    breakdown: Option<&str>,
) -> ResultsResponse {
    node.results(PROJECT, EXPERIMENT, from, to, breakdown, &[])
        .await
}

/// The range and breakdown the page's table was computed for.
async fn shown_query(page: &Page) -> (i64, i64, String) {
    let query = page
        .evaluate(
            "(() => { const r = document.querySelector('#results').dataset; \
             return [Number(r.from), Number(r.to), r.breakdown]; })()",
        )
        .await;
    (
        query[0].as_i64().expect("from"),
        query[1].as_i64().expect("to"),
        query[2].as_str().unwrap_or_default().to_string(),
    )
}

/// Waits until the page's table equals the API's answer for the query the
/// page shows (the page refreshes every 2 s), then checks it cell by cell.
/// Types `typed` into the range inputs, submits the query form and waits
/// until the results answer the range `expected_ms` (ms since the epoch).
async fn submit_range(page: &Page, typed: (&str, &str), expected_ms: (i64, i64), what: &str) {
    page.evaluate(&format!(
        "document.querySelector('#range-from').value = '{}'; \
         document.querySelector('#range-to').value = '{}'; \
         document.querySelector('#query-form').requestSubmit(); true",
        typed.0, typed.1
    ))
    .await;
    let (from_ms, to_ms) = expected_ms;
    page.wait_for(
        what,
        &format!(
            "Number(document.querySelector('#results').dataset.from) === {from_ms} && \
             Number(document.querySelector('#results').dataset.to) === {to_ms}"
        ),
    )
    .await;
}

async fn wait_until_page_equals_api(page: &Page, node: &TestNode, what: &str) -> ResultsResponse {
    let (from, to, breakdown) = shown_query(page).await;
    let breakdown = (!breakdown.is_empty()).then_some(breakdown);
    let results = api_results(node, from, to, breakdown.as_deref()).await;
    let total: i64 = results.groups[0]
        .variations
        .iter()
        .map(|v| v.visitors)
        .sum();
    let expected = expected_cells(&results);
    // The page catches up within a poll or two; wait for its visitor cells
    // to agree, then compare everything.
    let visitor_cells: Vec<Value> = expected
        .iter()
        .filter(|(key, _)| key.3 == "visitors")
        .map(|(key, value)| json!([key.0, key.1, value]))
        .collect();
    page.wait_for(
        &format!("{what}: the table to show the API's visitors ({total} in the first group)"),
        &format!(
            "(() => {{ const want = {}; const r = document.querySelector('#results');
               if (Number(r.dataset.from) !== {from} || Number(r.dataset.to) !== {to}) return false;
               const cells = [...r.querySelectorAll('[data-metric=\"visitors\"]')];
               return cells.length === want.length && want.every(([g, v, n]) => cells.some(c =>
                 c.closest('[data-group]').dataset.group === g &&
                 c.closest('tr').dataset.variation === v && Number(c.dataset.value) === n)); }})()",
            Value::Array(visitor_cells)
        ),
    )
    .await;
    assert_shown_equals_api(&shown_cells(page).await, &results);
    assert_sample_ratio_notes_equal_api(page, &results).await;
    results
}

/// Fails unless each group shows the API's sample ratio check: the banner
/// exactly when `srm.flagged`, with the API's p-value, and no note where
/// the API has no check.
async fn assert_sample_ratio_notes_equal_api(page: &Page, results: &ResultsResponse) {
    let shown = page
        .evaluate(
            "[...document.querySelectorAll('#results .card.group')].map(card => {
                const note = card.querySelector('.srm-flagged, .srm-ok');
                return [card.dataset.group,
                  note ? note.classList.contains('srm-flagged') : null,
                  note ? Number(note.dataset.srmPValue) : null]; })",
        )
        .await;
    // Numbers compared as f64: the page hands back 1 for a p-value of 1.0.
    let shown: Vec<(String, Option<bool>, Option<f64>)> = shown
        .as_array()
        .expect("an array of groups")
        .iter()
        .map(|group| {
            (
                group[0].as_str().unwrap_or_default().to_string(),
                group[1].as_bool(),
                group[2].as_f64(),
            )
        })
        .collect();
    let expected: Vec<(String, Option<bool>, Option<f64>)> = results
        .groups
        .iter()
        .map(|group| {
            (
                group.breakdown_value.clone().unwrap_or_default(),
                group.srm.as_ref().map(|srm| srm.flagged),
                group.srm.as_ref().map(|srm| srm.p_value),
            )
        })
        .collect();
    assert_eq!(
        shown, expected,
        "the sample ratio notes differ from the API's"
    );
}

/// Sum of the visitors shown in the table.
const SHOWN_VISITORS: &str =
    "[...document.querySelectorAll('#results [data-metric=\"visitors\"]')]\
     .reduce((sum, c) => sum + Number(c.dataset.value), 0)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_shows_the_overview_with_the_real_node() {
    let node = node_with_project().await;
    let browser = Browser::launch().await;
    let page = logged_in_page(&browser, &node).await;

    // The token is in sessionStorage only, never in the address.
    let href = page.evaluate("location.href").await;
    assert!(!href.as_str().unwrap().contains(TEST_ADMIN_TOKEN), "{href}");
    let stored = page
        .evaluate("sessionStorage.getItem('sessiondb.adminToken')")
        .await;
    assert_eq!(stored, json!(TEST_ADMIN_TOKEN));

    // One node row, from the node's own status.
    let before = status(&node).await;
    let rows = page
        .wait_for(
            "the nodes table",
            "(() => { const rows = [...document.querySelectorAll('#nodes-table tbody tr')]; \
             return rows.length > 0 && rows.map(r => Object.fromEntries([...r.cells] \
               .map(c => [c.dataset.field, c.textContent]))); })()",
        )
        .await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "a single-node cluster: {rows:?}");
    assert_eq!(rows[0]["node"], json!(before.node_id.to_string()));
    assert_eq!(rows[0]["health"], json!("ok"));
    assert_eq!(rows[0]["shards"], json!(before.shards.to_string()));
    // The node bootstrapped a cluster of one: its only voter and leader.
    assert_eq!(rows[0]["role"], json!("voter"));
    assert_eq!(rows[0]["raft"], json!("leader"));

    // The shard grid: every shard, all owned by this node.
    let owners = page
        .evaluate("[...document.querySelectorAll('#shard-grid .shard')].map(c => c.dataset.owner)")
        .await;
    let owners = owners.as_array().unwrap();
    assert_eq!(owners.len(), before.shards as usize);
    assert!(owners
        .iter()
        .all(|owner| *owner == json!(before.node_id.to_string())));

    // Events stream in, one batch per status sample the page takes, so
    // the rate charts have a history.
    for batch in 0..6u32 {
        let samples = page
            .evaluate("Number(document.body.dataset.statusSamples || 0)")
            .await;
        send(&node, &events_of(batch * 5..batch * 5 + 5)).await;
        page.wait_for(
            &format!("a status sample after batch {batch}"),
            &format!("Number(document.body.dataset.statusSamples) > {samples}"),
        )
        .await;
    }
    // Accepted, duplicate and rejected events show up in the node row.
    let events = events_of(0..30);
    let resent = node.send_batch(&events[..10]).await;
    assert_eq!(resent.duplicates, 10);
    let mut unknown = events[0].clone();
    unknown.project = "no-such-project".to_string();
    let refused = node.send_batch(&[unknown]).await;
    assert_eq!(refused.rejected.len(), 1);
    let after = status(&node).await;
    assert!(after.events_accepted > before.events_accepted);
    page.wait_for(
        "the counters of the node row to match /v1/status",
        &format!(
            "(() => {{ const f = n => document.querySelector(`#nodes-table [data-field=\"${{n}}\"]`).textContent; \
             return f('events_accepted') === '{}' && f('events_duplicate') === '{}' && f('events_rejected') === '{}' \
               && f('live_visitors') === '{}'; }})()",
            after.events_accepted, after.events_duplicate, after.events_rejected, after.live_visitors
        ),
    )
    .await;
    // The ingest chart drew the burst from its ring buffer of samples.
    page.wait_for(
        "a few status samples in the charts",
        "Number(document.body.dataset.statusSamples) >= 4 && \
         Number(document.querySelector('#chart-ingest').dataset.points) >= 3",
    )
    .await;
    let drawn = page
        .evaluate("document.querySelectorAll('#chart-ingest polyline').length")
        .await;
    assert_eq!(drawn, json!(1), "one ingest-rate line");
    page.screenshot("overview").await;

    // The cluster operations are there, with this one node to choose.
    let choices = page
        .evaluate(
            "[...document.querySelectorAll('#move-to option, #drain-node option')].map(o => o.value)",
        )
        .await;
    assert_eq!(
        choices,
        json!([before.node_id.to_string(), before.node_id.to_string()])
    );
    // A move without a shard chosen is refused in the page, before any
    // request, with a message saying what to do.
    page.evaluate("document.querySelector('#move-form').requestSubmit(); true")
        .await;
    let refusal = page
        .wait_for(
            "the move refused without a shard",
            "document.querySelector('#op-result').dataset.state === 'failed' && \
             document.querySelector('#op-result').textContent",
        )
        .await;
    assert!(
        refusal.as_str().unwrap().contains(&format!(
            "Choose a shard between 0 and {}",
            before.shards - 1
        )),
        "{refusal}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experiment_page_updates_live_and_shows_the_results_api_numbers() {
    let node = node_with_project().await;
    send(&node, &events_of(0..40)).await;
    let browser = Browser::launch().await;
    let page = logged_in_page(&browser, &node).await;

    // From the projects list to the experiment.
    page.evaluate("location.hash = '#/projects'; true").await;
    page.wait_for(
        "the experiment link",
        &format!(
            "document.querySelector('[data-project=\"{PROJECT}\"] a[data-experiment=\"{EXPERIMENT}\"]')"
        ),
    )
    .await;
    page.screenshot("projects").await;
    page.evaluate(&format!(
        "document.querySelector('a[data-experiment=\"{EXPERIMENT}\"]').click(); true"
    ))
    .await;
    page.wait_for(
        "the experiment's first 40 visitors",
        &format!("document.body.dataset.view === 'experiment' && {SHOWN_VISITORS} === 40"),
    )
    .await;
    // A marker that a reload would erase.
    page.evaluate("window.__notReloaded = true").await;

    // Events stream in; the page follows each batch without reloading.
    for end in [70u32, 100, 130, 160] {
        send(&node, &events_of(end - 30..end)).await;
        page.wait_for(
            &format!("{end} visitors on the page"),
            &format!("{SHOWN_VISITORS} === {end}"),
        )
        .await;
    }
    assert_eq!(
        page.evaluate("window.__notReloaded === true").await,
        json!(true)
    );
    let results = wait_until_page_equals_api(&page, &node, "no breakdown").await;
    assert_eq!(
        results.keys,
        vec!["purchase".to_string(), "signup".to_string()]
    );
    assert_eq!(
        results.groups[0]
            .variations
            .iter()
            .map(|v| v.visitors)
            .sum::<i64>(),
        160
    );
    // Charts per variation from /timeseries.
    page.wait_for(
        "the visitors chart with one line per variation",
        "new Set([...document.querySelectorAll('#chart-visitors polyline')].map(p => p.dataset.series)).size === 2",
    )
    .await;
    page.screenshot_full("experiment").await;

    // Breakdown by browser: one group per value, as the API has them.
    page.evaluate(
        "const s = document.querySelector('#breakdown'); s.value = 'browser'; \
         s.dispatchEvent(new Event('change')); true",
    )
    .await;
    let groups = page
        .wait_for(
            "groups by browser",
            "document.querySelector('#results').dataset.breakdown === 'browser' && \
             [...document.querySelectorAll('#results [data-group]')].map(g => g.dataset.group)",
        )
        .await;
    let by_browser = wait_until_page_equals_api(&page, &node, "by browser").await;
    let api_groups: Vec<Value> = by_browser
        .groups
        .iter()
        .map(|group| json!(group.breakdown_value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(groups, Value::Array(api_groups));
    assert_eq!(groups, json!(["chrome", "firefox", "safari"]));
    page.screenshot_full("experiment-breakdown").await;

    // A time range: unaligned input is aligned to the project's minute
    // buckets, and the numbers are the API's for that range.
    let from_ms = START_MS - 45 * MINUTE_MS;
    let to_ms = START_MS - 30 * MINUTE_MS;
    let input = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .format("%Y-%m-%dT%H:%M")
            .to_string()
    };
    submit_range(
        &page,
        (&input(from_ms), &input(to_ms)),
        (from_ms, to_ms),
        "the chosen range",
    )
    .await;
    let ranged = wait_until_page_equals_api(&page, &node, "a 15-minute range").await;
    let ranged_visitors: i64 = ranged
        .groups
        .iter()
        .flat_map(|group| &group.variations)
        .map(|variation| variation.visitors)
        .sum();
    assert!(
        ranged_visitors > 0 && ranged_visitors < 160,
        "the range holds some of the visitors, not all: {ranged_visitors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_from_the_console_reports_its_result() {
    let node = node_with_project().await;
    send(&node, &events_of(0..25)).await;
    let browser = Browser::launch().await;
    let page = logged_in_page(&browser, &node).await;

    // Cancelling the confirmation does nothing.
    page.evaluate("document.querySelector('#op-checkpoint').click(); true")
        .await;
    page.wait_for(
        "the confirmation dialog",
        "document.querySelector('#confirm-dialog').open",
    )
    .await;
    page.evaluate("document.querySelector('#confirm-cancel').click(); true")
        .await;
    page.wait_for(
        "the cancellation",
        "document.querySelector('#op-result').dataset.state === 'cancelled'",
    )
    .await;

    // Confirming takes the checkpoint and shows what it wrote.
    page.evaluate("document.querySelector('#op-checkpoint').click(); true")
        .await;
    page.wait_for(
        "the confirmation dialog",
        "document.querySelector('#confirm-dialog').open",
    )
    .await;
    page.screenshot("checkpoint-confirm").await;
    page.evaluate("document.querySelector('#confirm-ok').click(); true")
        .await;
    let fields = page
        .wait_for(
            "the checkpoint's result",
            "document.querySelector('#op-result').dataset.state === 'done' && \
             Object.fromEntries([...document.querySelectorAll('#op-result [data-field]')] \
               .map(f => [f.dataset.field, Number(f.textContent)]))",
        )
        .await;
    assert_eq!(fields["visitors"], json!(25), "{fields}");
    assert!(fields["position"].as_f64().unwrap() > 0.0, "{fields}");
    assert!(fields["bytes"].as_f64().unwrap() > 0.0, "{fields}");
    page.screenshot("checkpoint-done").await;

    // The checkpoint is real: a second one, through the API, starts from
    // the same log position (nothing was logged in between).
    let raw = node.post_admin("/v1/admin/checkpoint", "").await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    assert_eq!(raw.body["position"], fields["position"]);
    assert_eq!(raw.body["visitors"], json!(25));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_without_the_token_is_refused() {
    let node = node_with_project().await;
    send(&node, &events_of(0..10)).await;
    let browser = Browser::launch().await;
    let page = browser.new_page().await;
    page.navigate(&node.url("/console/")).await;
    page.wait_for("the login screen", "document.body.dataset.view === 'login'")
        .await;

    // Going to a page by its address still shows the login screen.
    page.evaluate("location.hash = '#/experiments/shop/checkout'; true")
        .await;
    page.wait_for(
        "the login screen after a hash change",
        "location.hash === '#/experiments/shop/checkout' && document.body.dataset.view === 'login'",
    )
    .await;
    let results_shown = page
        .evaluate("document.querySelectorAll('#results [data-metric]').length")
        .await;
    assert_eq!(results_shown, json!(0));

    // Every data call answers 401 without the token or with a wrong one.
    let statuses = page
        .evaluate(
            "(async () => { const paths = ['/console/api/status', '/console/api/projects', \
               '/console/api/projects/shop/experiments/checkout/results', '/console/api/members', \
               '/v1/cluster']; \
             const out = []; \
             for (const p of paths) { \
               out.push((await fetch(p)).status); \
               out.push((await fetch(p, {headers: {Authorization: 'Bearer wrong-token-0123456789'}})).status); } \
             out.push((await fetch('/v1/admin/checkpoint', {method: 'POST'})).status); \
             const body = await (await fetch('/console/api/status')).json(); \
             out.push(body.error); return out; })()",
        )
        .await;
    assert_eq!(
        statuses,
        json!([
            401,
            401,
            401,
            401,
            401,
            401,
            401,
            401,
            401,
            401,
            401,
            "unauthorized"
        ])
    );

    // A wrong token in the form is refused and not kept.
    page.evaluate(
        "document.querySelector('#token').value = 'wrong-token-0123456789'; \
         document.querySelector('#login-form').requestSubmit(); true",
    )
    .await;
    let message = page
        .wait_for(
            "the refusal message",
            "document.body.dataset.loginRefusals === '1' && \
             document.querySelector('#login-error').textContent",
        )
        .await;
    assert!(message.as_str().unwrap().contains("refused"), "{message}");
    assert_eq!(
        page.evaluate("document.body.dataset.view").await,
        json!("login")
    );
    assert_eq!(
        page.evaluate("sessionStorage.getItem('sessiondb.adminToken')")
            .await,
        Value::Null
    );
    page.screenshot("login-refused").await;

    // The same page with the right token gets in; the stored token is what
    // later calls send.
    page.evaluate(&format!(
        "document.querySelector('#token').value = {}; \
         document.querySelector('#login-form').requestSubmit(); true",
        json!(node.admin_token())
    ))
    .await;
    page.wait_for(
        "the experiment page after login",
        "document.body.dataset.view === 'experiment' && \
         document.querySelectorAll('#results [data-metric]').length > 0",
    )
    .await;
    // The token appears in no log line.
    assert!(!node.stderr_text().contains(TEST_ADMIN_TOKEN));
}

/// Every chart of the experiment page is empty (no element drawn).
const EXPERIMENT_CHARTS_EMPTY: &str =
    "[...document.querySelectorAll('#experiment-view svg.chart')] \
     .every(svg => svg.childElementCount === 0)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn navigation_starts_each_experiment_afresh_and_a_dead_node_is_shown_stale() {
    let mut node = node_with_project().await;
    send(&node, &events_of(0..40)).await;
    let browser = Browser::launch().await;
    let page = logged_in_page(&browser, &node).await;

    // An experiment with data, a breakdown and a range chosen.
    page.evaluate(&format!(
        "location.hash = '#/experiments/{PROJECT}/{EXPERIMENT}'; true"
    ))
    .await;
    page.wait_for(
        "the experiment ready with its charts",
        "document.querySelector('#results').dataset.state === 'ready' && \
         new Set([...document.querySelectorAll('#chart-visitors polyline')].map(p => p.dataset.series)).size === 2",
    )
    .await;
    page.evaluate(
        "const s = document.querySelector('#breakdown'); s.value = 'browser'; \
         s.dispatchEvent(new Event('change')); true",
    )
    .await;
    page.wait_for(
        "the breakdown by browser",
        "document.querySelector('#results').dataset.breakdown === 'browser'",
    )
    .await;

    // An unknown experiment of the same project: an empty state under its
    // own title, and nothing of the previous page.
    page.evaluate(&format!(
        "location.hash = '#/experiments/{PROJECT}/no-such-experiment'; true"
    ))
    .await;
    let state = page
        .wait_for(
            "the empty state of an unknown experiment",
            "document.querySelector('#results').dataset.state === 'empty' && \
             document.querySelector('#experiment-state').textContent",
        )
        .await;
    assert!(
        state
            .as_str()
            .unwrap()
            .contains("No experiment “no-such-experiment”"),
        "{state}"
    );
    let leftovers = page
        .evaluate(&format!(
            "({{ title: document.querySelector('#experiment-title').textContent, \
               groups: document.querySelectorAll('#results [data-group]').length, \
               chartsEmpty: {EXPERIMENT_CHARTS_EMPTY}, \
               chartsHidden: document.querySelector('#experiment-charts').hidden, \
               keys: document.querySelector('#chart-key').options.length, \
               from: document.querySelector('#range-from').value, \
               shown: document.querySelector('#range-shown').textContent }})"
        ))
        .await;
    assert_eq!(
        leftovers,
        json!({"title": format!("{PROJECT} / no-such-experiment"), "groups": 0,
               "chartsEmpty": true, "chartsHidden": true, "keys": 0, "from": "", "shown": ""})
    );
    page.screenshot("experiment-unknown").await;

    // An unknown project says so.
    page.evaluate("location.hash = '#/experiments/no-such-project/x'; true")
        .await;
    let state = page
        .wait_for(
            "the empty state of an unknown project",
            "document.querySelector('#experiment-state').textContent.includes('no project') && \
             document.querySelector('#experiment-state').textContent",
        )
        .await;
    assert!(
        state.as_str().unwrap().contains("no-such-project"),
        "{state}"
    );

    // Back to the experiment: drawn again from scratch, without the
    // breakdown chosen before.
    page.evaluate(&format!(
        "location.hash = '#/experiments/{PROJECT}/{EXPERIMENT}'; true"
    ))
    .await;
    page.wait_for(
        "the experiment drawn again",
        "document.querySelector('#results').dataset.state === 'ready' && \
         new Set([...document.querySelectorAll('#chart-visitors polyline')].map(p => p.dataset.series)).size === 2",
    )
    .await;
    assert_eq!(
        page.evaluate("[document.querySelector('#breakdown').value, document.querySelector('#results').dataset.breakdown]")
            .await,
        json!(["", ""])
    );

    // The node dies: the page keeps its numbers, says since when they are
    // stale, and offers no operation.
    page.wait_for(
        "the operations enabled while the node answers",
        "document.body.dataset.connection === 'live' && !document.querySelector('#op-checkpoint').disabled",
    )
    .await;
    node.kill_9().await;
    let badge = page
        .wait_for(
            "the connection shown stale",
            "document.body.dataset.connection === 'down' && \
             document.querySelector('#results').dataset.state === 'stale' && \
             document.querySelector('#connection').textContent",
        )
        .await;
    let badge = badge.as_str().unwrap();
    assert!(
        badge.starts_with("stale since ") && badge.ends_with(" UTC, retrying"),
        "{badge}"
    );
    let disabled = page
        .evaluate("[...document.querySelectorAll('.ops-panel button')].map(b => b.disabled)")
        .await;
    assert!(
        disabled
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d == &json!(true)),
        "{disabled}"
    );
    // The last numbers stay on the page.
    assert_eq!(page.evaluate(SHOWN_VISITORS).await, json!(40));
    page.screenshot("experiment-stale").await;
}

/// The experiment of the verdict test: two arms of `ARM_VISITORS`; on
/// `purchase` control converts 10 % and treatment 30 %, on `signup` both 20 %.
const VERDICT_EXPERIMENT: &str = "banner";
const ARM_VISITORS: u32 = 300;

/// Events of visitor `number` of `VERDICT_EXPERIMENT`; `conflicting`
/// decisions of the other variation follow the first one.
fn banner_events(number: u32, conflicting: u32) -> Vec<Event> {
    let visitor = format!("b-{number:04}");
    let treatment = number % 2 == 1;
    let rank = number / 2;
    let at_ms = START_MS - 30 * MINUTE_MS + i64::from(number % 20) * MINUTE_MS;
    let event = |suffix: String, offset_ms: i64, event_type: EventType| Event {
        id: format!("{visitor}-{suffix}"),
        project: PROJECT.to_string(),
        visitor: visitor.clone(),
        ts: Timestamp::Milliseconds(at_ms + offset_ms),
        event_type,
        key: None,
        value: None,
        attributes: BTreeMap::new(),
        decisions: Vec::new(),
    };
    let decision = |suffix: String, offset_ms: i64, variation: &str| {
        let mut decision = event(suffix, offset_ms, EventType::Decision);
        decision.decisions = vec![Decision {
            experiment: VERDICT_EXPERIMENT.to_string(),
            variation: variation.to_string(),
        }];
        decision
    };
    let (mine, other) = if treatment {
        ("treatment", "control")
    } else {
        ("control", "treatment")
    };
    let mut events = vec![decision("decision".to_string(), 0, mine)];
    // Later than the first decision, which therefore stays the visitor's.
    events.extend(
        (0..conflicting)
            .map(|n| decision(format!("conflict-{n}"), 1_000 * i64::from(n + 1), other)),
    );
    let purchase_ranks = if treatment { 3 } else { 1 };
    if rank % 10 < purchase_ranks {
        let mut purchase = event("purchase".to_string(), 10_000, EventType::Custom);
        purchase.key = Some("purchase".to_string());
        events.push(purchase);
    }
    if rank.is_multiple_of(5) {
        let mut signup = event("signup".to_string(), 20_000, EventType::Custom);
        signup.key = Some("signup".to_string());
        events.push(signup);
    }
    events
}

/// The verdicts on the page: (variation, key) → verdict.
async fn shown_verdicts(page: &Page) -> Value {
    page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#verdicts li[data-verdict]')]            .map(li => [`${li.dataset.variation}/${li.dataset.key}`, li.dataset.verdict]))",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_wait_for_enough_data_then_name_the_winner_and_warn_of_conflicts() {
    let node = node_with_project().await;
    // A few visitors: far below the minimum sample.
    send(
        &node,
        &(0..20)
            .flat_map(|n| banner_events(n, 0))
            .collect::<Vec<_>>(),
    )
    .await;
    let browser = Browser::launch().await;
    let page = logged_in_page(&browser, &node).await;
    page.evaluate(&format!(
        "location.hash = '#/experiments/{PROJECT}/{VERDICT_EXPERIMENT}'; true"
    ))
    .await;
    page.wait_for(
        "verdicts for 20 visitors",
        &format!("{SHOWN_VISITORS} === 20 && document.querySelectorAll('#verdicts li[data-verdict]').length === 2"),
    )
    .await;
    assert_eq!(
        shown_verdicts(&page).await,
        json!({"treatment/purchase": "not_enough_data", "treatment/signup": "not_enough_data"})
    );
    let detail = page
        .evaluate("document.querySelector('#verdicts li[data-key=\"purchase\"]').textContent")
        .await;
    assert!(
        detail
            .as_str()
            .unwrap()
            .contains("a verdict needs 100 visitors in each and 10 conversions"),
        "{detail}"
    );
    assert_eq!(
        page.evaluate("document.querySelectorAll('#verdicts [data-warning]').length")
            .await,
        json!(0)
    );

    // Enough visitors: treatment is ahead on purchase, no different on signup.
    let everyone = 2 * ARM_VISITORS;
    send(
        &node,
        &(20..everyone)
            .flat_map(|n| banner_events(n, 0))
            .collect::<Vec<_>>(),
    )
    .await;
    page.wait_for(
        "verdicts for every visitor",
        &format!(
            "{SHOWN_VISITORS} === {everyone} &&              document.querySelector('#verdicts li[data-key=\"purchase\"]').dataset.verdict !== 'not_enough_data'"
        ),
    )
    .await;
    assert_eq!(
        shown_verdicts(&page).await,
        json!({"treatment/purchase": "ahead", "treatment/signup": "no_difference"})
    );
    // Not by colour alone: the verdict is written out with its numbers.
    let ahead = page
        .evaluate("document.querySelector('#verdicts li[data-key=\"purchase\"]').textContent")
        .await;
    let ahead = ahead.as_str().unwrap();
    assert!(
        ahead.starts_with("▲ ahead treatment on purchase")
            && ahead.contains("conversion rate 30.00% vs 10.00%"),
        "{ahead}"
    );
    page.screenshot_full("experiment-verdict").await;

    // The cumulative conversion rate of purchase ends at each variation's
    // rate (each visitor converts at most once here), with the exact value
    // as the tooltip of its last point.
    let chart = page
        .wait_for(
            "the cumulative conversion rate chart",
            "(() => { const svg = document.querySelector('#chart-cumulative-rate'); \
               const last = name => [...svg.querySelectorAll(`circle.point[data-series=\"${name}\"]`)].pop(); \
               const c = last('control'), t = last('treatment'); \
               if (!c || !t) return false; \
               return { control: Number(c.dataset.y), treatment: Number(t.dataset.y), \
                 tooltip: t.querySelector('title').textContent, \
                 stretched: svg.hasAttribute('preserveAspectRatio'), \
                 titles: [...svg.querySelectorAll('.axis-title')].map(t => t.textContent), \
                 xTicks: svg.querySelectorAll('text.axis').length, \
                 partialFrom: Number(svg.dataset.partialFrom), \
                 to: Number(document.querySelector('#results').dataset.to) }; })()",
        )
        .await;
    assert_eq!(chart["control"], json!(0.1), "{chart}");
    assert!(
        (chart["treatment"].as_f64().unwrap() - 0.3).abs() < 1e-12,
        "{chart}"
    );
    assert!(
        chart["tooltip"]
            .as_str()
            .unwrap()
            .starts_with("treatment · ")
            && chart["tooltip"].as_str().unwrap().ends_with(": 30.00%"),
        "{chart}"
    );
    assert_eq!(chart["stretched"], json!(false));
    assert_eq!(
        chart["titles"],
        json!(["conversion rate", "bucket start (UTC), 1 min each"])
    );
    // The bucket in progress (the last of the default range) is partial.
    assert_eq!(
        chart["partialFrom"].as_i64(),
        Some(chart["to"].as_i64().unwrap() - MINUTE_MS),
        "{chart}"
    );

    // At 400 px the page does not scroll sideways: the tables are cards and
    // the improvement and p-value of treatment are on screen.
    page.set_width(400).await;
    let layout = page
        .wait_for(
            "the phone layout",
            "(() => { const p = document.querySelector('#results [data-key=\"purchase\"] tr[data-variation=\"treatment\"] [data-metric=\"rate_comparison.p_value\"]'); \
               const r = p.getBoundingClientRect(); \
               return document.documentElement.scrollWidth <= 400 && r.right <= 400 && r.width > 0 \
                 && { label: p.dataset.label, right: r.right, page: document.documentElement.scrollWidth }; })()",
        )
        .await;
    assert_eq!(layout["label"], json!("p (one look)"), "{layout}");
    page.screenshot_full("experiment-400").await;
    page.set_width(1400).await;

    // Decisions that keep contradicting the visitors' variation: more
    // conflicts than visitors is a warning naming the variation.
    send(
        &node,
        &(0..everyone)
            .filter(|n| n % 2 == 0)
            .flat_map(|n| banner_events(n, 3).into_iter().skip(1).take(3))
            .collect::<Vec<_>>(),
    )
    .await;
    let results = node
        .results(
            PROJECT,
            VERDICT_EXPERIMENT,
            START_MS - 60 * MINUTE_MS,
            START_MS + MINUTE_MS,
            None,
            &[],
        )
        .await;
    let over: Vec<&str> = results.groups[0]
        .variations
        .iter()
        .filter(|v| v.conflicts > v.visitors)
        .map(|v| v.variation.as_str())
        .collect();
    assert!(
        !over.is_empty(),
        "the test needs conflicts above visitors: {results:?}"
    );
    let warning = page
        .wait_for(
            "the conflicts warning",
            "(document.querySelector('#verdicts [data-warning=\"conflicts\"]') || {}).textContent",
        )
        .await;
    assert!(
        warning
            .as_str()
            .unwrap()
            .contains(&format!("{}: ", over[0])),
        "{warning}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_page_says_where_the_token_comes_from_and_refuses_its_hash() {
    let node = TestNode::start(START_MS).await;
    let browser = Browser::launch().await;
    let page = browser.new_page().await;
    page.navigate(&node.url("/console/")).await;
    page.wait_for("the login screen", "document.body.dataset.view === 'login'")
        .await;
    let help = page
        .evaluate("document.querySelector('#token-help').textContent.replace(/\\s+/g, ' ')")
        .await;
    let help = help.as_str().unwrap();
    for said in [
        "SESSIONDB_ADMIN_TOKEN",
        "--admin-token",
        "printed it once on its standard output",
        "sessiondb generated admin token (shown once, only its hash is stored)",
        "<data-dir>/admin-token holds only the token's SHA-256 hash",
        "delete <data-dir>/admin-token",
        "sessiondb-ctl admin-token rotate",
    ] {
        assert!(help.contains(said), "the help lacks {said:?}: {help}");
    }
    for width in [1400, 400] {
        page.set_width(width).await;
        page.screenshot(&format!("login-{width}")).await;
    }

    // What the token file holds is refused, and the page says why.
    let file = std::fs::read_to_string(node.node_data_dir().join("admin-token"))
        .expect("the admin-token file");
    assert!(
        !file.contains(node.admin_token()),
        "the file holds only the hash"
    );
    page.evaluate(&format!(
        "document.querySelector('#token').value = {}; \
         document.querySelector('#login-form').requestSubmit(); true",
        json!(file)
    ))
    .await;
    let error = page
        .wait_for(
            "the refusal of the hash",
            "document.body.dataset.loginRefusals === '1' && document.querySelector('#login-error').textContent",
        )
        .await;
    assert!(
        error
            .as_str()
            .unwrap()
            .starts_with("That is the token's hash from <data-dir>/admin-token, not the token (401 unauthorized)."),
        "{error}"
    );
    assert_eq!(
        page.evaluate("document.body.dataset.view").await,
        json!("login")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_squares_are_reachable_and_chosen_by_keyboard() {
    let node = node_with_project().await;
    let browser = Browser::launch().await;
    let page = logged_in_page(&browser, &node).await;
    page.wait_for(
        "the shard grid",
        "document.querySelectorAll('#shard-grid .shard').length > 5",
    )
    .await;
    let focusable = page
        .evaluate(
            "[...document.querySelectorAll('#shard-grid .shard')].every(s => s.tabIndex === 0 \
               && s.getAttribute('role') === 'button' && s.getAttribute('aria-label').startsWith(`shard ${s.dataset.shard} `))",
        )
        .await;
    assert_eq!(focusable, json!(true));
    // Enter on a focused square chooses it for a move, as a click does.
    let chosen = page
        .evaluate(
            "(() => { const s = document.querySelector('#shard-grid .shard[data-shard=\"5\"]'); s.focus(); \
               s.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true})); \
               return [document.activeElement === s, document.querySelector('#move-shard').value]; })()",
        )
        .await;
    assert_eq!(chosen, json!([true, "5"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_are_shown_and_taken_in_the_project_time_zone_or_utc() {
    let node = TestNode::start(START_MS).await;
    node.create_project(
        "west",
        json!({"bucket_ms": MINUTE_MS, "time_zone": "America/Los_Angeles"}),
    )
    .await;
    let events: Vec<Event> = events_of(0..20)
        .into_iter()
        .map(|mut event| {
            event.project = "west".to_string();
            event
        })
        .collect();
    send(&node, &events).await;
    let browser = Browser::launch().await;
    let page = logged_in_page(&browser, &node).await;
    page.evaluate(&format!(
        "location.hash = '#/experiments/west/{EXPERIMENT}'; true"
    ))
    .await;
    page.wait_for(
        "the experiment in the project's zone",
        "document.querySelector('#results').dataset.state === 'ready' && \
         document.querySelector('#range-from').value !== ''",
    )
    .await;
    // Late November: Los Angeles is UTC−8, shown with a 24-hour clock.
    let pacific = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms - 8 * 60 * MINUTE_MS)
            .unwrap()
            .format("%Y-%m-%d %H:%M")
            .to_string()
    };
    let utc = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .format("%Y-%m-%d %H:%M")
            .to_string()
    };
    let shown = |page: &Page| {
        let page = page.clone();
        async move {
            page.evaluate(
                "(() => { const r = document.querySelector('#results').dataset; return { \
                   zone: document.querySelector('#time-zone').value, \
                   from: document.querySelector('#range-from').value, \
                   to: document.querySelector('#range-to').value, \
                   label: document.querySelector('.zone-name').textContent, \
                   fromMs: Number(r.from), toMs: Number(r.to) }; })()",
            )
            .await
        }
    };
    let west = shown(&page).await;
    let (from_ms, to_ms) = (
        west["fromMs"].as_i64().unwrap(),
        west["toMs"].as_i64().unwrap(),
    );
    assert_eq!(west["zone"], json!("America/Los_Angeles"), "{west}");
    assert_eq!(west["label"], json!("America/Los_Angeles"), "{west}");
    assert_eq!(west["from"], json!(pacific(from_ms)), "{west}");
    assert_eq!(west["to"], json!(pacific(to_ms)), "{west}");
    page.screenshot("experiment-time-zone").await;

    // Switched to UTC: the same instants, in UTC.
    page.evaluate(
        "{ const z = document.querySelector('#time-zone'); z.value = 'UTC'; \
         z.dispatchEvent(new Event('change')); } true",
    )
    .await;
    let switched = page
        .wait_for(
            "the range in UTC",
            &format!(
                "document.querySelector('#range-from').value === '{}' && document.querySelector('.zone-name').textContent",
                utc(from_ms)
            ),
        )
        .await;
    assert_eq!(switched, json!("UTC"));

    // Back to Pacific time: a range typed there is taken there.
    page.evaluate(
        "{ const z = document.querySelector('#time-zone'); z.value = 'America/Los_Angeles'; \
         z.dispatchEvent(new Event('change')); } true",
    )
    .await;
    let chosen_from = START_MS - 45 * MINUTE_MS;
    let chosen_to = START_MS - 30 * MINUTE_MS;
    submit_range(
        &page,
        (&pacific(chosen_from), &pacific(chosen_to)),
        (chosen_from, chosen_to),
        "the range typed in Pacific time",
    )
    .await;
}

/// "+12.3%" / "−4.0%": how the console writes a relative improvement.
fn signed_percent(value: f64) -> String {
    let sign = if value >= 0.0 { "+" } else { "−" };
    format!("{sign}{:.1}%", (value.abs() * 100.0))
}

/// The improvement chart's last point of `variation`: its value, tooltip
/// and the band's point count, once drawn.
async fn last_improvement_point(page: &Page, variation: &str) -> Value {
    page.wait_for(
        &format!("the improvement of {variation}"),
        &format!(
            "(() => {{ const svg = document.querySelector('#chart-improvement'); \
               const last = [...svg.querySelectorAll('circle.point[data-series=\"{variation}\"]')].pop(); \
               const band = svg.querySelector('.band[data-series=\"{variation}\"]'); \
               if (!last || !band) return false; \
               const r = document.querySelector('#results').dataset; \
               return {{ y: Number(last.dataset.y), tooltip: last.querySelector('title').textContent, \
                 band: Number(band.dataset.points || 1), group: r.chartGroup, \
                 from: Number(r.from), to: Number(r.to), \
                 zero: svg.querySelectorAll('.zero-line').length, \
                 note: document.querySelector('#improvement-note').textContent, \
                 key: document.querySelector('#chart-improvement-key').textContent }}; }})()"
        ),
    )
    .await
}

/// The purchase rate comparison of `variation` in the results API's group
/// `value` (`None`: no breakdown) over [from, to).
async fn api_rate_comparison(
    node: &TestNode,
    range: (i64, i64),
    breakdown: Option<&str>,
    value: Option<&str>,
    variation: &str,
) -> sessiondb_protocol::Comparison {
    let results = node
        .results(
            PROJECT,
            EXPERIMENT,
            range.0,
            range.1,
            breakdown,
            &["purchase", "signup"],
        )
        .await;
    let group = results
        .groups
        .iter()
        .find(|group| group.breakdown_value.as_deref() == value)
        .expect("the group");
    group.variation(variation).expect("the variation").metrics[0]
        .rate_comparison
        .clone()
        .expect("a rate comparison")
}

/// The relative improvement chart draws what the time-series API computed
/// (its last point is the results page's comparison over the same range),
/// its band is the always-valid confidence sequence and says so; with a
/// breakdown every chart shows the chosen value's series. At 1400 and
/// 400 px.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn improvement_over_time_has_its_confidence_sequence_and_follows_the_breakdown() {
    let node = node_with_project().await;
    send(&node, &events_of(0..600)).await;
    let browser = Browser::launch().await;
    let page = logged_in_page(&browser, &node).await;
    page.evaluate(&format!(
        "location.hash = '#/experiments/{PROJECT}/{EXPERIMENT}'; true"
    ))
    .await;
    page.wait_for(
        "the experiment's 600 visitors",
        &format!("document.querySelector('#results').dataset.state === 'ready' && {SHOWN_VISITORS} === 600"),
    )
    .await;

    let shown = last_improvement_point(&page, "treatment").await;
    let range = (
        shown["from"].as_i64().unwrap(),
        shown["to"].as_i64().unwrap(),
    );
    let api = api_rate_comparison(&node, range, None, None, "treatment").await;
    assert!(
        (shown["y"].as_f64().unwrap() - api.relative_improvement).abs() < 1e-9,
        "{shown} vs {api:?}"
    );
    let tooltip = shown["tooltip"].as_str().unwrap();
    let (low, high) = (api.cs_low.expect("cs_low"), api.cs_high.expect("cs_high"));
    assert!(tooltip.starts_with("treatment · "), "{tooltip}");
    assert!(
        tooltip.contains(&format!(
            "always-valid 95% CS {} … {}",
            signed_percent(low),
            signed_percent(high)
        )),
        "{tooltip} vs {api:?}"
    );
    assert!(tooltip.contains("vs control"), "{tooltip}");
    assert!(shown["band"].as_i64().unwrap() >= 2, "{shown}");
    assert!(
        shown["note"].as_str().unwrap().contains("always valid"),
        "{shown}"
    );
    assert_eq!(shown["key"], json!("key purchase"), "{shown}");
    // The baseline has no line of its own.
    let baseline_points = page
        .evaluate("document.querySelectorAll('#chart-improvement circle.point[data-series=\"control\"]').length")
        .await;
    assert_eq!(baseline_points, json!(0));
    page.screenshot_full("experiment-improvement").await;

    // With a breakdown the charts follow the chosen value.
    page.evaluate(
        "{ const b = document.querySelector('#breakdown'); b.value = 'browser'; \
         b.dispatchEvent(new Event('change')); } true",
    )
    .await;
    let choices = page
        .wait_for(
            "the breakdown values of the charts",
            "(() => { const label = document.querySelector('#chart-group-label'); \
               const r = document.querySelector('#results').dataset; \
               if (label.hidden || r.breakdown !== 'browser' || r.chartGroup !== 'chrome') return false; \
               return [...document.querySelectorAll('#chart-group option')].map(o => o.value); })()",
        )
        .await;
    assert_eq!(choices, json!(["chrome", "firefox", "safari"]));
    page.evaluate(
        "{ const g = document.querySelector('#chart-group'); g.value = 'safari'; \
         g.dispatchEvent(new Event('change')); } true",
    )
    .await;
    page.wait_for(
        "the safari charts",
        "document.querySelector('#results').dataset.chartGroup === 'safari'",
    )
    .await;
    let results = node
        .results(
            PROJECT,
            EXPERIMENT,
            range.0,
            range.1,
            Some("browser"),
            &["purchase"],
        )
        .await;
    let safari = results
        .groups
        .iter()
        .find(|group| group.breakdown_value.as_deref() == Some("safari"))
        .expect("a safari group");
    for variation in &safari.variations {
        let drawn = page
            .wait_for(
                &format!("safari visitors of {}", variation.variation),
                &format!(
                    "(() => {{ const points = [...document.querySelectorAll('#chart-visitors circle.point[data-series=\"{}\"]')]; \
                       return points.length > 0 && points.reduce((n, p) => n + Number(p.dataset.y), 0) === {} \
                         && points.length; }})()",
                    variation.variation, variation.visitors
                ),
            )
            .await;
        assert!(drawn.as_i64().unwrap() > 1, "{drawn}");
    }
    let total_visitors: i64 = results
        .groups
        .iter()
        .map(|g| g.variations.iter().map(|v| v.visitors).sum::<i64>())
        .sum();
    let safari_visitors: i64 = safari.variations.iter().map(|v| v.visitors).sum();
    assert!(
        safari_visitors < total_visitors,
        "a strict part of the visitors"
    );
    let shown = last_improvement_point(&page, "treatment").await;
    assert_eq!(shown["group"], json!("safari"));
    let api = api_rate_comparison(&node, range, Some("browser"), Some("safari"), "treatment").await;
    assert!(
        (shown["y"].as_f64().unwrap() - api.relative_improvement).abs() < 1e-9,
        "{shown} vs {api:?}"
    );
    page.screenshot_full("experiment-breakdown-series").await;

    // Stored weights: every group's split note names them as its source.
    let raw = node
        .send_admin(
            reqwest::Method::PUT,
            &format!("/v1/projects/{PROJECT}/experiments/{EXPERIMENT}/weights"),
            r#"{"weights": {"control": 1, "treatment": 1}}"#,
        )
        .await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let notes = page
        .wait_for(
            "the split notes naming the stored weights",
            "(() => { const notes = [...document.querySelectorAll('#results .srm-ok, #results .srm-flagged')]; \
               return notes.length === 3 && notes.every(n => n.dataset.weightsSource === 'stored') \
                 && notes[0].textContent; })()",
        )
        .await;
    assert!(
        notes
            .as_str()
            .unwrap()
            .contains("the experiment's stored weights"),
        "{notes}"
    );

    // At 400 px: no sideways scrolling, the improvement chart on screen.
    page.set_width(400).await;
    let layout = page
        .wait_for(
            "the improvement chart at 400 px",
            "(() => { const r = document.querySelector('#chart-improvement').getBoundingClientRect(); \
               const g = document.querySelector('#chart-group').getBoundingClientRect(); \
               return document.documentElement.scrollWidth <= 400 && r.width > 0 && r.right <= 400 \
                 && g.right <= 400 && { right: r.right }; })()",
        )
        .await;
    assert!(layout["right"].as_f64().unwrap() <= 400.0, "{layout}");
    page.screenshot_full("experiment-improvement-400").await;
}

/// The overview's times are in the console's zone: the projects' zone by
/// default (they share one here), UTC once chosen, at 1400 and 400 px.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_times_follow_the_console_time_zone() {
    let node = TestNode::start(START_MS).await;
    node.create_project("west", json!({"time_zone": "America/Los_Angeles"}))
        .await;
    let browser = Browser::launch().await;
    let page = logged_in_page(&browser, &node).await;
    // The last tick of the ingest chart is the last sample's time.
    let last_tick = |zone: &'static str| {
        let page = page.clone();
        async move {
            page.wait_for(
                &format!("the overview in {zone}"),
                &format!(
                    "(() => {{ const view = document.querySelector('#overview-view'); \
                       const svg = document.querySelector('#chart-ingest'); \
                       const ticks = [...svg.querySelectorAll('text.axis')]; \
                       const title = [...svg.querySelectorAll('.axis-title')].map(t => t.textContent); \
                       if (view.dataset.timeZone !== '{zone}' || Number(svg.dataset.points) < 2) return false; \
                       return {{ tick: ticks[ticks.length - 1].textContent, sample: Number(document.body.dataset.lastSampleMs), \
                         title, zone: document.querySelector('#overview-zone').value }}; }})()"
                ),
            )
            .await
        }
    };
    let clock = |ms: i64, zone: chrono_tz::Tz| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .with_timezone(&zone)
            .format("%H:%M:%S")
            .to_string()
    };
    let pacific = last_tick("America/Los_Angeles").await;
    let sample = pacific["sample"].as_i64().unwrap();
    assert_eq!(
        pacific["tick"],
        json!(clock(sample, chrono_tz::America::Los_Angeles)),
        "{pacific}"
    );
    assert_eq!(pacific["zone"], json!("America/Los_Angeles"));
    assert!(
        pacific["title"]
            .to_string()
            .contains("time (America/Los_Angeles)"),
        "{pacific}"
    );
    page.screenshot("overview-time-zone").await;

    page.evaluate(
        "{ const z = document.querySelector('#overview-zone'); z.value = 'UTC'; \
         z.dispatchEvent(new Event('change')); } true",
    )
    .await;
    let utc = last_tick("UTC").await;
    let sample = utc["sample"].as_i64().unwrap();
    assert_eq!(utc["tick"], json!(clock(sample, chrono_tz::UTC)), "{utc}");
    assert!(utc["title"].to_string().contains("time (UTC)"), "{utc}");

    page.set_width(400).await;
    let narrow = page
        .wait_for(
            "the overview at 400 px",
            "(() => { const r = document.querySelector('#overview-zone').getBoundingClientRect(); \
               return r.width > 0 && r.right <= 400 && document.querySelector('#overview-view').dataset.timeZone; })()",
        )
        .await;
    assert_eq!(narrow, json!("UTC"));
    page.screenshot("overview-time-zone-400").await;
}

/// An Optimizely experiment is shown by its keys, with the ids beside them,
/// whether the page was opened by the experiment's key or by its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimizely_experiments_are_shown_by_key_with_their_ids() {
    let node = node_with_project().await;
    let impression = |visitor: &str, variation_id: &str, variation_key: &str| {
        json!({"visitor_id": visitor, "snapshots": [{
            "decisions": [{"experiment_id": "70001", "variation_id": variation_id,
                "metadata": {"rule_key": "checkout_flow", "flag_key": "", "variation_key": variation_key}}],
            "events": [{"key": "campaign_activated", "timestamp": START_MS - 10 * MINUTE_MS,
                "uuid": format!("{visitor}-impression")}]
        }]})
    };
    let batch = json!({"visitors": [
        impression("o-1", "70011", "control"),
        impression("o-2", "70012", "treatment"),
    ]});
    let path = format!("/optimizely/v1/events?project={PROJECT}");
    let answer = node.post_raw(&path, batch.to_string()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["accepted"], 2, "{}", answer.text);

    let browser = Browser::launch().await;
    let page = logged_in_page(&browser, &node).await;
    for opened_by in ["70001", "checkout_flow"] {
        page.evaluate(&format!(
            "location.hash = '#/experiments/{PROJECT}/{opened_by}'; true"
        ))
        .await;
        let title = page
            .wait_for(
                &format!("the experiment opened by {opened_by}, titled by its key"),
                "(() => { const t = document.querySelector('#experiment-title').textContent; \
                 return document.querySelectorAll('#results tr[data-variation]').length === 2 \
                   && t.includes('(id ') && t; })()",
            )
            .await;
        assert_eq!(
            title,
            json!(format!("{PROJECT} / checkout_flow (id 70001)"))
        );
        let rows = page
            .evaluate(
                "[...document.querySelectorAll('#results tr[data-variation]')]
                   .map(row => [row.dataset.variation, row.dataset.variationId,
                                row.querySelector('th').textContent])",
            )
            .await;
        assert_eq!(
            rows,
            json!([
                ["control", "70011", "control id 70011"],
                ["treatment", "70012", "treatment id 70012"]
            ]),
            "opened by {opened_by}"
        );
    }
}
