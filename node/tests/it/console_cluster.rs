//! The admin console in headless Chromium against a real 3-node cluster
//! (`docs/console.md`): the overview shows the members, roles, Raft leader
//! and term, health and shard counts that `GET /v1/cluster` reports; the
//! shard grid follows a move, a rebalance and a drain made from the UI of a
//! follower (which forwards them to the leader); the projects page shows
//! the per-project event counters as events/s; a killed member turns
//! unreachable; a browser without the token is refused.
//!
//! One cluster and one browser for the whole file (one test): forming a
//! cluster of debug builds is the slow part. Screenshots land in
//! `target/console-screenshots/cluster-*.png`.

use crate::support::browser::{Browser, Page, CONDITION_WAIT_MAX};
use crate::support::cluster::{
    cluster_status, create_project_everywhere, form_three_node_cluster, owners, send_routed,
    wait_for, SHARDS, START_MS,
};
use crate::support::node::TestNode;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sessiondb_protocol::{ClusterStatus, Decision, Event, EventType, MemberRole, Timestamp};
use sessiondb_test_support::poll_until;
use std::collections::BTreeMap;

const PROJECT: &str = "shop";
const EXPERIMENT: &str = "checkout";

/// Visitor `number`'s exposure and pageview, a minute apart, within the
/// hour before the nodes' clocks.
fn visitor_events(number: u32) -> Vec<Event> {
    let visitor = format!("v-{number:05}");
    let ts_ms = START_MS - 3_600_000 + i64::from(number) * 1_000;
    let event = |suffix: &str, offset_ms: i64, event_type: EventType| Event {
        id: format!("{visitor}-{suffix}"),
        project: PROJECT.to_string(),
        visitor: visitor.clone(),
        ts: Timestamp::Milliseconds(ts_ms + offset_ms),
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
    vec![decision, event("page", 60_000, EventType::Pageview)]
}

fn events_of(visitors: std::ops::Range<u32>) -> Vec<Event> {
    visitors.flat_map(visitor_events).collect()
}

fn node_of(nodes: &[TestNode], id: u64) -> &TestNode {
    &nodes[usize::try_from(id - 1).expect("a small id")]
}

/// Sends fresh `events` to their owners per node 1's current shard map
/// (retrying `shard_moving` / `not_owner`); answers the accepted count.
async fn send_to_owners(nodes: &[TestNode], events: &[Event]) -> u64 {
    let map = owners(
        &cluster_status(&nodes[0])
            .await
            .expect("node 1 answers /v1/cluster"),
    );
    let (accepted, duplicates) = send_routed(nodes, &map, events).await;
    assert_eq!(duplicates, 0, "fresh events only");
    accepted
}

/// `sessiondb_project_events_total{project="shop"}` of one node (0 while
/// the project has no accepted event there).
async fn project_events_metric(node: &TestNode) -> u64 {
    let raw = node.get_admin("/metrics").await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.text);
    let prefix = format!("sessiondb_project_events_total{{project=\"{PROJECT}\"}} ");
    raw.text
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |value| value.parse().expect("an integer counter"))
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

/// The nodes table as `[node, role, raft, health, shards]` rows.
const PAGE_ROWS: &str = "[...document.querySelectorAll('#nodes-table tbody tr')].map(r => \
     ['node', 'role', 'raft', 'health', 'shards'].map(n => \
       r.querySelector(`[data-field=\"${n}\"]`).textContent))";

/// The shard grid's owner per shard, in shard order.
const PAGE_OWNERS: &str =
    "[...document.querySelectorAll('#shard-grid .shard')].map(c => Number(c.dataset.owner))";

/// What the nodes table must show for `status`; `unreachable` members
/// are expected as such.
fn expected_rows(status: &ClusterStatus, unreachable: &[u64]) -> Value {
    let mut members = status.members.clone();
    members.sort_by_key(|member| member.node_id);
    let rows: Vec<Value> = members
        .iter()
        .map(|member| {
            let role = match member.role {
                MemberRole::Voter => "voter",
                MemberRole::Learner => "learner",
            };
            let role = if member.draining {
                format!("{role} · draining")
            } else {
                role.to_string()
            };
            let raft = if Some(member.node_id) == status.leader {
                "leader"
            } else if member.role == MemberRole::Learner {
                "learner"
            } else {
                "follower"
            };
            let health = if unreachable.contains(&member.node_id) {
                "unreachable"
            } else {
                "ok"
            };
            let shards = status
                .shards
                .iter()
                .filter(|shard| shard.owner == member.node_id)
                .count();
            json!([
                member.node_id.to_string(),
                role,
                raft,
                health,
                shards.to_string()
            ])
        })
        .collect();
    Value::Array(rows)
}

/// Waits until the nodes table, the Raft summary and the shard grid show
/// what `console_node`'s `GET /v1/cluster` says (the page polls every
/// second; the map is read again on each try so a changing term or map
/// cannot make the comparison stale).
async fn wait_until_overview_equals_api(
    page: &Page,
    console_node: &TestNode,
    unreachable: &[u64],
    what: &str,
) -> ClusterStatus {
    let waited = poll_until(CONDITION_WAIT_MAX, async || {
        let status = cluster_status(console_node)
            .await
            .expect("the console's node answers /v1/cluster");
        let shown = page
            .evaluate(&format!(
                "({{rows: {PAGE_ROWS}, owners: {PAGE_OWNERS}, \
                   leader: document.querySelector('#cluster-summary').dataset.leader, \
                   term: document.querySelector('#cluster-summary').dataset.term}})"
            ))
            .await;
        let expected = json!({
            "rows": expected_rows(&status, unreachable),
            "owners": status.shards.iter().map(|shard| shard.owner).collect::<Vec<_>>(),
            "leader": status.leader.map(|id| id.to_string()).unwrap_or_default(),
            "term": status.term.to_string(),
        });
        if shown == expected {
            Ok(status)
        } else {
            Err(format!("shown {shown:#}, expected {expected:#}"))
        }
    })
    .await;
    match waited {
        Ok(status) => status,
        Err(timed_out) => {
            let shot = page.screenshot(&format!("failed-{what}")).await;
            panic!(
                "{what}: the overview never showed /v1/cluster's state; {timed_out}; screenshot {}",
                shot.display()
            );
        }
    }
}

/// Clicks an operation's confirmation through, and waits for its report;
/// the operation must succeed. Answers the report's fields.
async fn confirm_and_wait(page: &Page, op: &str, screenshot: Option<&str>) -> Value {
    let outcome = confirm_and_finish(page, op, screenshot).await;
    assert_eq!(outcome["state"], json!("done"), "{op} failed: {outcome}");
    outcome["fields"].clone()
}

/// Clicks an operation's confirmation through, and waits until it is done
/// or failed: `{state, text, fields}`.
async fn confirm_and_finish(page: &Page, op: &str, screenshot: Option<&str>) -> Value {
    page.wait_for(
        &format!("the {op} confirmation"),
        "document.querySelector('#confirm-dialog').open",
    )
    .await;
    if let Some(name) = screenshot {
        page.screenshot(name).await;
    }
    let runs = page
        .evaluate("Number(document.querySelector('#op-result').dataset.run || 0)")
        .await;
    page.evaluate("document.querySelector('#confirm-ok').click(); true")
        .await;
    page.wait_for(
            &format!("the {op} report"),
            &format!(
                "(() => {{ const r = document.querySelector('#op-result'); \
                 return r.dataset.op === '{op}' && Number(r.dataset.run) > {runs} && ['done', 'failed'].includes(r.dataset.state) && \
                 {{state: r.dataset.state, text: r.textContent, fields: Object.fromEntries( \
                   [...r.querySelectorAll('[data-field]')].map(f => [f.dataset.field, f.textContent]))}}; }})()"
            ),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_and_operates_a_three_node_cluster() {
    let mut nodes = form_three_node_cluster().await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    create_project_everywhere(&all, PROJECT, json!({"bucket_ms": 60_000})).await;
    let initial = wait_for(&all, &[1, 2, 3], "the initial map", |_| true).await;
    let leader = initial.leader.expect("a leader");
    // The console under test is a follower's: it sends the cluster
    // operations to its own node, which forwards them to the leader.
    let console_id = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    // The member drained from the UI, and later killed: neither the
    // leader nor the console's node.
    let drained = [1, 2, 3]
        .into_iter()
        .find(|id| *id != leader && *id != console_id)
        .unwrap();
    let browser = Browser::launch().await;
    let page = logged_in_page(&browser, node_of(&nodes, console_id)).await;

    // The overview: three real members with their roles, the leader and
    // term, everyone healthy, shard counts and the grid from the map.
    let status =
        wait_until_overview_equals_api(&page, node_of(&nodes, console_id), &[], "three nodes")
            .await;
    assert_eq!(status.members.len(), 3);
    assert_eq!(
        page.evaluate("document.querySelectorAll('#shard-grid .shard').length")
            .await,
        json!(SHARDS)
    );

    // The projects page while events stream in through their owners, one
    // batch per page sample: the per-project counters summed over the
    // members, as events/s; the same counters are in /metrics.
    page.evaluate("location.hash = '#/projects'; true").await;
    page.wait_for(
        "the project on the projects page",
        &format!("document.querySelector('[data-rate-of=\"{PROJECT}\"]')"),
    )
    .await;
    let mut accepted = 0;
    let mut next_visitor = 0;
    for batch in 0..4u32 {
        let samples = page
            .evaluate("Number(document.body.dataset.statusSamples || 0)")
            .await;
        accepted += send_to_owners(&nodes, &events_of(next_visitor..next_visitor + 25)).await;
        next_visitor += 25;
        page.wait_for(
            &format!("a sample after batch {batch}"),
            &format!("Number(document.body.dataset.statusSamples) > {samples}"),
        )
        .await;
    }
    assert_eq!(accepted, 200);
    page.wait_for(
        "the project's event total and a positive rate",
        &format!(
            "(() => {{ const s = document.querySelector('[data-rate-of=\"{PROJECT}\"]'); \
             return s && Number(s.dataset.eventsTotal) === {accepted} && Number(s.dataset.eventsRate) > 0; }})()"
        ),
    )
    .await;
    page.screenshot("cluster-projects").await;
    let mut metric_total = 0;
    for node in &nodes {
        metric_total += project_events_metric(node).await;
    }
    assert_eq!(metric_total, accepted, "sessiondb_project_events_total");
    // Without new events the rate falls back to zero once the window has
    // passed, while the total stays.
    page.wait_for(
        "the rate to fall to zero without events",
        &format!(
            "(() => {{ const s = document.querySelector('[data-rate-of=\"{PROJECT}\"]'); \
             return Number(s.dataset.eventsTotal) === {accepted} && Number(s.dataset.eventsRate) === 0; }})()"
        ),
    )
    .await;

    // Move a shard from the UI: pick it in the grid, choose the target,
    // confirm, and see the report and the grid follow.
    page.evaluate("location.hash = '#/'; true").await;
    let moved_shard = initial.shards[0].shard;
    let from = initial.shards[0].owner;
    let to = [1, 2, 3].into_iter().find(|id| *id != from).unwrap();
    page.wait_for(
        "the grid and the node pickers",
        &format!(
            "document.querySelector('#shard-grid .shard[data-shard=\"{moved_shard}\"]') && \
             document.querySelectorAll('#move-to option').length === 3"
        ),
    )
    .await;
    page.evaluate(&format!(
        "document.querySelector('#shard-grid .shard[data-shard=\"{moved_shard}\"]').click(); \
         document.querySelector('#move-to').value = '{to}'; \
         document.querySelector('#move-form').requestSubmit(); true"
    ))
    .await;
    let report = confirm_and_wait(&page, "move", Some("cluster-move-confirm")).await;
    assert_eq!(report["shard"], json!(moved_shard.to_string()), "{report}");
    assert_eq!(report["from"], json!(from.to_string()), "{report}");
    assert_eq!(report["to"], json!(to.to_string()), "{report}");
    let after_move =
        wait_until_overview_equals_api(&page, node_of(&nodes, console_id), &[], "after the move")
            .await;
    let moved = &after_move.shards[moved_shard as usize];
    assert_eq!(moved.owner, to);
    assert_eq!(report["epoch"], json!(moved.epoch.to_string()));
    page.screenshot("cluster-move-done").await;

    // A move the leader refuses (to the shard's owner) shows the node's
    // error code and message, and changes nothing.
    page.evaluate(&format!(
        "document.querySelector('#move-shard').value = '{moved_shard}'; \
         document.querySelector('#move-to').value = '{to}'; \
         document.querySelector('#move-form').requestSubmit(); true"
    ))
    .await;
    let refused = confirm_and_finish(&page, "move", None).await;
    assert_eq!(refused["state"], json!("failed"), "{refused}");
    let text = refused["text"].as_str().unwrap();
    assert!(
        text.contains("move_refused") && text.contains("which owns it"),
        "{text}"
    );
    let unchanged = cluster_status(node_of(&nodes, console_id)).await.unwrap();
    assert_eq!(owners(&unchanged), owners(&after_move));

    // Rebalance from the UI: the leader evens out the shards; the report
    // lists the moves and the grid and the counts follow the map.
    page.evaluate("document.querySelector('#op-rebalance').click(); true")
        .await;
    let report = confirm_and_wait(&page, "rebalance", None).await;
    let balanced = wait_until_overview_equals_api(
        &page,
        node_of(&nodes, console_id),
        &[],
        "after the rebalance",
    )
    .await;
    let moved_count: usize = report["moved"].as_str().unwrap().parse().unwrap();
    assert!(moved_count > 0, "the map was uneven: {report}");
    assert_eq!(report["failed"], json!("none"), "{report}");
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for shard in &balanced.shards {
        *counts.entry(shard.owner).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "every member owns shards: {counts:?}");
    let (fewest, most) = (
        counts.values().min().unwrap(),
        counts.values().max().unwrap(),
    );
    assert!(most - fewest <= 1, "balanced: {counts:?}");

    // More events, now spread over the three owners: each node's ingest
    // line in the chart.
    for batch in 0..3u32 {
        let samples = page
            .evaluate("Number(document.body.dataset.statusSamples || 0)")
            .await;
        accepted += send_to_owners(&nodes, &events_of(next_visitor..next_visitor + 40)).await;
        next_visitor += 40;
        page.wait_for(
            &format!("a sample after the spread batch {batch}"),
            &format!("Number(document.body.dataset.statusSamples) > {samples}"),
        )
        .await;
    }
    page.wait_for(
        "one ingest line per node",
        "document.querySelectorAll('#chart-ingest polyline').length === 3",
    )
    .await;
    // Each event was counted once, by its owner, whichever node that was.
    let mut per_node = Vec::new();
    for node in &nodes {
        per_node.push(project_events_metric(node).await);
    }
    assert_eq!(per_node.iter().sum::<u64>(), accepted, "{per_node:?}");
    assert!(
        per_node.iter().all(|count| *count > 0),
        "every owner counted events: {per_node:?}"
    );
    page.screenshot_full("cluster-overview").await;

    // Drain a member from the UI: its shards move to the others, the
    // report says none remain, and the overview shows it draining and
    // empty.
    page.evaluate(&format!(
        "document.querySelector('#drain-node').value = '{drained}'; \
         document.querySelector('#drain-form').requestSubmit(); true"
    ))
    .await;
    let report = confirm_and_wait(&page, "drain", Some("cluster-drain-confirm")).await;
    assert_eq!(report["remaining_shards"], json!("0"), "{report}");
    assert_eq!(report["failed"], json!("none"), "{report}");
    let moved_count: usize = report["moved"].as_str().unwrap().parse().unwrap();
    assert_eq!(moved_count, counts[&drained], "{report}");
    let after_drain =
        wait_until_overview_equals_api(&page, node_of(&nodes, console_id), &[], "after the drain")
            .await;
    assert!(
        after_drain
            .members
            .iter()
            .any(|member| member.node_id == drained && member.draining),
        "{after_drain:?}"
    );
    assert!(after_drain
        .shards
        .iter()
        .all(|shard| shard.owner != drained && shard.moving_to.is_none()));
    page.screenshot_full("cluster-drained").await;

    // The experiment page on the follower shows the whole cluster's
    // numbers (its node fans the query out): the same visitors per
    // variation as the leader's results API for the same range.
    page.evaluate(&format!(
        "location.hash = '#/experiments/{PROJECT}/{EXPERIMENT}'; true"
    ))
    .await;
    let visitors = u64::from(next_visitor);
    page.wait_for(
        "every visitor of the cluster on the experiment page",
        &format!(
            "document.body.dataset.view === 'experiment' && \
             [...document.querySelectorAll('#results [data-metric=\"visitors\"]')] \
               .reduce((sum, c) => sum + Number(c.dataset.value), 0) === {visitors}"
        ),
    )
    .await;
    let shown = page
        .evaluate(
            "(() => { const r = document.querySelector('#results'); \
             return {from: Number(r.dataset.from), to: Number(r.dataset.to), \
               visitors: Object.fromEntries([...r.querySelectorAll('[data-metric=\"visitors\"]')] \
                 .map(c => [c.closest('tr').dataset.variation, Number(c.dataset.value)]))}; })()",
        )
        .await;
    let results = node_of(&nodes, leader)
        .results(
            PROJECT,
            EXPERIMENT,
            shown["from"].as_i64().unwrap(),
            shown["to"].as_i64().unwrap(),
            None,
            &[],
        )
        .await;
    let api_visitors: serde_json::Map<String, Value> = results.groups[0]
        .variations
        .iter()
        .map(|variation| (variation.variation.clone(), json!(variation.visitors)))
        .collect();
    assert_eq!(shown["visitors"], Value::Object(api_visitors));
    page.evaluate("location.hash = '#/'; true").await;

    // A browser without the token, on another member, is refused: the
    // login screen, no grid, 401 on every data call and operation, and the
    // internal report wants the cluster secret, not the admin token.
    let other_id = [1, 2, 3].into_iter().find(|id| *id != console_id).unwrap();
    let stranger = browser.new_page().await;
    stranger
        .navigate(&node_of(&nodes, other_id).url("/console/"))
        .await;
    stranger
        .wait_for("the login screen", "document.body.dataset.view === 'login'")
        .await;
    assert_eq!(
        stranger
            .evaluate("document.querySelectorAll('#shard-grid .shard').length")
            .await,
        json!(0)
    );
    let statuses = stranger
        .evaluate(&format!(
            "(async () => {{ const out = []; \
               for (const p of ['/console/api/members', '/v1/cluster']) {{ \
                 out.push((await fetch(p)).status); \
                 out.push((await fetch(p, {{headers: {{Authorization: 'Bearer wrong-token-0123456789'}}}})).status); }} \
               out.push((await fetch('/v1/cluster/rebalance', {{method: 'POST'}})).status); \
               out.push((await fetch('/v1/cluster/shards/0/move', {{method: 'POST', \
                 headers: {{'Content-Type': 'application/json'}}, body: '{{\"to\": 1}}'}})).status); \
               out.push((await fetch('/v1/internal/console/node', \
                 {{headers: {{Authorization: 'Bearer ' + {}}}}})).status); \
               return out; }})()",
            json!(node_of(&nodes, other_id).admin_token())
        ))
        .await;
    // The admin token is a valid credential of the wrong class for the
    // node-to-node endpoint: 403 (docs/security.md).
    assert_eq!(statuses, json!([401, 401, 401, 401, 401, 401, 403]));
    let still = cluster_status(node_of(&nodes, console_id)).await.unwrap();
    assert_eq!(owners(&still), owners(&after_drain), "nothing moved");

    // A member that dies turns unreachable in the overview; the others stay
    // healthy.
    let victim = drained;
    nodes[usize::try_from(victim - 1).unwrap()].kill_9().await;
    wait_until_overview_equals_api(
        &page,
        node_of(&nodes, console_id),
        &[victim],
        "a killed member",
    )
    .await;
    let reason = page
        .evaluate(&format!(
            "document.querySelector('#nodes-table tr[data-node-id=\"{victim}\"] [data-field=\"health\"]').title"
        ))
        .await;
    assert!(
        reason
            .as_str()
            .unwrap()
            .contains("/v1/internal/console/node"),
        "the health cell says why: {reason}"
    );
    page.screenshot("cluster-node-unreachable").await;
}
