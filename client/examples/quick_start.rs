//! The quick start of `docs/client.md`: create a project, stream events
//! with a `Sender`, read the results. Run it against a node:
//!
//! ```text
//! SESSIONDB_ADMIN_TOKEN=<admin token> cargo run -p sessiondb-client --example quick_start
//! ```
//!
//! `SESSIONDB_URL` names another node (default `http://127.0.0.1:7070`).

use sessiondb_client::protocol::{CreateProject, ErrorCode, Event};
use sessiondb_client::{Client, ClientError, ResultsRequest, SenderConfig};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let url = std::env::var("SESSIONDB_URL").unwrap_or_else(|_| "http://127.0.0.1:7070".into());
    let admin_token = std::env::var("SESSIONDB_ADMIN_TOKEN").expect("SESSIONDB_ADMIN_TOKEN");
    // The admin token may do everything: projects, results, cluster calls.
    let client = Client::new(&url).with_token(admin_token);
    let created = client
        .create_project(&CreateProject {
            name: "shop".into(),
            ..Default::default()
        })
        .await;
    // A project's ingest key is shown once, at creation; for a project that
    // exists already, issue a new one.
    let ingest_key = match created {
        Ok(project) => project.ingest_key.expect("a new project's key"),
        Err(error) if error.code() == Some(&ErrorCode::ProjectExists) => {
            client.rotate_ingest_key("shop", None).await?.key
        }
        Err(error) => return Err(error),
    };

    // A sender needs only the ingest key: it may send events to its project.
    let sender = Client::new(&url)
        .with_token(ingest_key)
        .sender_for("shop", SenderConfig::default())?;
    for n in 0..1_000 {
        let visitor = format!("v-{n}");
        let variation = if n % 2 == 0 { "a" } else { "b" };
        // Events happen now unless `.at(..)` says otherwise; the sender
        // gives each an id and the project.
        sender
            .track(Event::decision(&visitor, "checkout", variation).attribute("browser", "firefox"))
            .await?;
        if n % 10 == 0 {
            sender
                .track(Event::custom(&visitor, "purchase").value(12.99))
                .await?;
        }
    }
    // Sends what is held and answers the outcome of every event.
    let report = sender.close(Duration::from_secs(30)).await;
    println!(
        "accepted {}, duplicates {}",
        report.accepted, report.duplicates
    );
    for rejected in &report.rejected {
        eprintln!(
            "{}: {} ({})",
            rejected.id, rejected.reason, rejected.message
        );
    }
    for failed in &report.failed {
        eprintln!("not delivered: {} ({})", failed.event.id, failed.error);
    }

    // The last hour, widened to whole buckets by the client.
    let request = ResultsRequest::new("shop", "checkout")
        .since(Duration::from_secs(3_600))
        .keys(["purchase"]);
    let results = client.results(&request).await?;
    for variation in &results.groups[0].variations {
        let purchases = variation
            .metric("purchase")
            .map_or(0, |m| m.unique_conversions);
        println!(
            "{}: {} visitors, {purchases} bought",
            variation.variation, variation.visitors
        );
    }
    Ok(())
}
