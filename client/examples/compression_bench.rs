//! Does gzip pay? Sends the same events with and without
//! `Compression::Gzip`, in both encodings, straight over loopback and
//! through a local TCP proxy that throttles client-to-node bytes to a slow
//! link's rate, and prints events/s and bytes on the wire per event
//! (`docs/benchmarks.md`, "Client compression").
//!
//! ```text
//! cargo run --release -p sessiondb-client --example compression_bench -- \
//!     <node URL> <admin token> [slow link Mbit/s, default 10] [events, default 200000]
//! ```
//!
//! The node must run on the system clock (the events happen now). Each
//! run sends to a new project, so nothing is a duplicate.

use sessiondb_client::protocol::{CreateProject, Event, ProjectSettingsPatch};
use sessiondb_client::{Client, Compression, Encoding, SenderConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes the proxy reads at a time: one chunk is one slot on the link.
const CHUNK_BYTES: usize = 16 * 1024;
/// Events sent over the slow link: a tenth of the loopback run's, so a run
/// lasts seconds, not minutes.
const SLOW_LINK_EVENTS_DIVISOR: usize = 10;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let node = args
        .get(1)
        .ok_or("usage: compression_bench <node URL> <admin token> [Mbit/s] [events]")?;
    let token = args.get(2).ok_or("the admin token")?;
    let slow_mbit: f64 = args.get(3).map_or(Ok(10.0), |a| a.parse())?;
    let events: usize = args.get(4).map_or(Ok(200_000), |a| a.parse())?;
    let upstream = node.trim_start_matches("http://").to_string();
    println!("| link | encoding | compression | events | events/s | bytes on the wire per event | seconds |");
    println!("|---|---|---|---:|---:|---:|---:|");
    for (link, rate_mbit, count) in [
        ("loopback", None, events),
        ("slow", Some(slow_mbit), events / SLOW_LINK_EVENTS_DIVISOR),
    ] {
        for encoding in [Encoding::Binary, Encoding::Json] {
            for compression in [Compression::None, Compression::Gzip] {
                let proxy = Proxy::start(&upstream, rate_mbit).await?;
                let project = format!("compression-{}", rand_suffix());
                let client = Client::new(&proxy.base_url).with_token(token.as_str());
                client
                    .create_project(&CreateProject {
                        name: project.clone(),
                        settings: ProjectSettingsPatch {
                            breakdown_attributes: Some(vec!["browser".into(), "country".into()]),
                            ..Default::default()
                        },
                    })
                    .await?;
                let before = proxy.bytes_up.load(Ordering::Relaxed);
                let sender = client.sender_for(
                    project.as_str(),
                    SenderConfig {
                        encoding,
                        compression,
                        ..SenderConfig::default()
                    },
                )?;
                let started = Instant::now();
                for n in 0..count {
                    sender.track(event(n)).await?;
                }
                let report = sender.close(Duration::from_secs(600)).await;
                let seconds = started.elapsed().as_secs_f64();
                if !report.is_success() || report.accepted != count as u64 {
                    return Err(format!("not every event was accepted: {report:?}").into());
                }
                let bytes = proxy.bytes_up.load(Ordering::Relaxed) - before;
                let link = match rate_mbit {
                    Some(rate) => format!("{link} ({rate} Mbit/s)"),
                    None => link.to_string(),
                };
                println!(
                    "| {link} | {encoding:?} | {compression:?} | {count} | {:.0} | {:.1} | {seconds:.2} |",
                    count as f64 / seconds,
                    bytes as f64 / count as f64,
                );
            }
        }
    }
    Ok(())
}

/// A decision or a purchase of one of 10 000 visitors, with the attributes
/// a web client sends, happening now.
fn event(n: usize) -> Event {
    let visitor = format!("visitor-{:08}", n % 10_000);
    let browsers = ["firefox", "chrome", "safari", "edge"];
    let countries = ["de", "fr", "us", "jp", "br"];
    let event = if n.is_multiple_of(4) {
        Event::custom(&visitor, "purchase").value(((n % 5_000) as f64) / 100.0)
    } else {
        Event::decision(
            &visitor,
            "checkout",
            if n.is_multiple_of(2) { "a" } else { "b" },
        )
    };
    event
        .attribute("browser", browsers[n % browsers.len()])
        .attribute("country", countries[n % countries.len()])
        .id(format!("{:032x}", rand_u128()))
}

fn rand_suffix() -> String {
    format!("{:08x}", rand_u128() as u32)
}

/// A random number from the standard library's hasher seed (no extra
/// dependency for an example).
fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    let high = hasher.finish();
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(1);
    (u128::from(high) << 64) | u128::from(hasher.finish())
}

/// A loopback TCP proxy that counts the bytes from client to node and,
/// with a rate, lets them through no faster than that: every connection
/// shares one link, each chunk taking its transmission time on it.
struct Proxy {
    base_url: String,
    bytes_up: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(upstream: &str, rate_mbit: Option<f64>) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let bytes_up = Arc::new(AtomicU64::new(0));
        let link_free_at = Arc::new(Mutex::new(Instant::now()));
        let bytes_per_second = rate_mbit.map(|rate| rate * 1e6 / 8.0);
        let upstream = upstream.to_string();
        let counter = Arc::clone(&bytes_up);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let counter = Arc::clone(&counter);
                let link_free_at = Arc::clone(&link_free_at);
                tokio::spawn(async move {
                    let mut chunk = vec![0u8; CHUNK_BYTES];
                    loop {
                        let read = match client_read.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => read,
                        };
                        counter.fetch_add(read as u64, Ordering::Relaxed);
                        if let Some(rate) = bytes_per_second {
                            let sent_at = {
                                let mut free_at = link_free_at.lock().unwrap();
                                let start = (*free_at).max(Instant::now());
                                *free_at = start + Duration::from_secs_f64(read as f64 / rate);
                                *free_at
                            };
                            tokio::time::sleep_until(sent_at.into()).await;
                        }
                        if server_write.write_all(&chunk[..read]).await.is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
            }
        });
        Ok(Proxy { base_url, bytes_up })
    }
}
