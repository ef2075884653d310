//! Decode cost per event at the ingest edge: native JSON (parsed as the
//! HTTP layer does: a JSON value per event, then the typed event) against
//! the binary batch encoding (`sessiondb_protocol::binary`). Reports only.
//!
//! Run: `cargo bench -p sessiondb-node --bench decode -- [--events N]`

use sessiondb_protocol::{binary, Decision, Event, EventType, Timestamp};
use std::time::Instant;

fn events(count: usize) -> Vec<Event> {
    (0..count)
        .map(|index| Event {
            id: format!("event-{index:08}"),
            project: "bench".into(),
            visitor: format!("visitor-{}", index / 8),
            ts: Timestamp::Milliseconds(1_700_000_000_000 + index as i64 * 1_000),
            event_type: if index % 8 == 0 {
                EventType::Decision
            } else {
                EventType::Custom
            },
            key: (index % 8 != 0).then(|| "add_to_cart".to_string()),
            value: (index % 3 == 0).then_some(12.5),
            attributes: [
                ("browser".to_string(), "firefox".to_string()),
                ("country".to_string(), "fr".to_string()),
            ]
            .into(),
            decisions: if index % 8 == 0 {
                vec![Decision {
                    experiment: "checkout".into(),
                    variation: "b".into(),
                }]
            } else {
                Vec::new()
            },
        })
        .collect()
}

fn main() {
    let arguments: Vec<String> = std::env::args().collect();
    let count = arguments
        .windows(2)
        .find(|pair| pair[0] == "--events")
        .map_or(1_000_000, |pair| pair[1].parse().expect("--events N"));
    let batch = events(count);
    // Real batches are bounded (BATCH_EVENTS_MAX, BINARY_EVENTS_MAX): decode
    // 5 000-event batches, as a client sends them.
    let chunks: Vec<&[Event]> = batch.chunks(5_000).collect();
    let json: Vec<Vec<u8>> = chunks
        .iter()
        .map(|chunk| {
            serde_json::to_vec(&sessiondb_protocol::EventBatch {
                events: chunk.to_vec(),
            })
            .expect("encodes")
        })
        .collect();
    let binary: Vec<Vec<u8>> = chunks
        .iter()
        .map(|chunk| binary::encode_batch(chunk))
        .collect();

    let started = Instant::now();
    let mut decoded = Vec::with_capacity(count);
    for body in &json {
        let value: serde_json::Value = serde_json::from_slice(body).expect("valid JSON");
        let serde_json::Value::Object(mut object) = value else {
            panic!("an object")
        };
        let Some(serde_json::Value::Array(elements)) = object.remove("events") else {
            panic!("events")
        };
        decoded.extend(
            elements
                .into_iter()
                .map(|element| serde_json::from_value::<Event>(element).expect("valid event")),
        );
    }
    let json_ns = started.elapsed().as_nanos() as f64 / count as f64;
    assert_eq!(decoded, batch);

    let started = Instant::now();
    let mut decoded = Vec::with_capacity(count);
    for body in &binary {
        decoded.extend(binary::decode_batch(body).expect("valid batch"));
    }
    let binary_ns = started.elapsed().as_nanos() as f64 / count as f64;
    assert_eq!(decoded, batch);
    let json_bytes: usize = json.iter().map(Vec::len).sum();
    let binary_bytes: usize = binary.iter().map(Vec::len).sum();

    println!(
        "{count} events: JSON {:.0} bytes/event, {json_ns:.0} ns/event; binary {:.0} bytes/event, {binary_ns:.0} ns/event ({:.1}x faster)",
        json_bytes as f64 / count as f64,
        binary_bytes as f64 / count as f64,
        json_ns / binary_ns
    );
}
