//! A `Sender` streaming page views to project `shop` with its ingest key
//! (the example of `Sender`'s documentation):
//!
//! ```text
//! SESSIONDB_INGEST_KEY=<ingest key of shop> cargo run -p sessiondb-client --example page_views
//! ```
//!
//! `SESSIONDB_URL` names another node (default `http://127.0.0.1:7070`).

use sessiondb_client::protocol::Event;
use sessiondb_client::{Client, SenderConfig};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), sessiondb_client::ClientError> {
    let url = std::env::var("SESSIONDB_URL").unwrap_or_else(|_| "http://127.0.0.1:7070".into());
    let ingest_key = std::env::var("SESSIONDB_INGEST_KEY").expect("SESSIONDB_INGEST_KEY");
    let client = Client::new(url).with_token(ingest_key);
    let sender = client.sender_for("shop", SenderConfig::default())?;
    for n in 0..10_000 {
        sender
            .track(Event::pageview(format!("v-{}", n % 500)))
            .await?;
    }
    let report = sender.close(Duration::from_secs(10)).await;
    println!(
        "{} accepted, {} rejected, {} failed",
        report.accepted,
        report.rejected.len(),
        report.failed.len()
    );
    Ok(())
}
