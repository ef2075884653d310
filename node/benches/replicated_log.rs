//! The replicated log's group commit, in process: acknowledged appends/s of
//! G Raft groups with N appenders each, all in ONE shared log
//! (`ReplicatedLog`, one fdatasync per group of appends across groups),
//! against the ingest log (`Log`) with the same G×N appenders in one
//! stream. An append is acknowledged when its entries are synced. Reports;
//! asserts only that every append was acknowledged.
//!
//! openraft 0.9 waits for each append's callback before the next one of a
//! group, so `--appenders 1` is what one group's Raft does; more appenders
//! per group (sharing the group's handle, each waiting for its own append)
//! is the pipelined case the storage API allows.
//!
//! Run: `cargo bench -p sessiondb-node --bench replicated_log -- [--groups 16] [--appenders 1,4] [--entries 1] [--payload-bytes 1024] [--seconds 3]`

use sessiondb_node::log::{Log, LogConfig};
use sessiondb_node::replication::{GroupLog, ReplicatedLog, ReplicatedLogConfig};
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The node binary's allocator (`node/src/main.rs`), so the figures are
/// the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

openraft::declare_raft_types!(
    /// Groups whose entries are byte batches, as ingest batches will be.
    pub BenchTypes:
        D = Vec<u8>,
        R = (),
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<BenchTypes>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

#[derive(Debug, Clone)]
struct Options {
    groups: usize,
    appenders: Vec<usize>,
    entries: usize,
    payload_bytes: usize,
    seconds: u64,
}

fn options() -> Options {
    let mut options = Options {
        groups: 16,
        appenders: vec![1, 4],
        entries: 1,
        payload_bytes: 1024,
        seconds: 3,
    };
    let arguments: Vec<String> = std::env::args().collect();
    for pair in arguments.windows(2) {
        let number = || pair[1].parse::<u64>().expect("a number");
        match pair[0].as_str() {
            "--groups" => options.groups = number() as usize,
            "--appenders" => {
                options.appenders = pair[1]
                    .split(',')
                    .map(|count| count.parse().expect("a number"))
                    .collect();
            }
            "--entries" => options.entries = number() as usize,
            "--payload-bytes" => options.payload_bytes = number() as usize,
            "--seconds" => options.seconds = number(),
            _ => {}
        }
    }
    options
}

/// What one run acknowledged.
#[derive(Debug)]
struct Measured {
    appends: u64,
    elapsed: Duration,
    fsyncs: u64,
    fsync_time: Duration,
}

impl Measured {
    fn report(&self, label: &str, options: &Options) {
        let seconds = self.elapsed.as_secs_f64();
        let appends_per_second = self.appends as f64 / seconds;
        let entries_per_second = appends_per_second * options.entries as f64;
        let megabytes_per_second = entries_per_second * options.payload_bytes as f64 / 1e6;
        let appends_per_fsync = self.appends as f64 / self.fsyncs.max(1) as f64;
        let fsync_ms_mean = self.fsync_time.as_secs_f64() * 1e3 / self.fsyncs.max(1) as f64;
        // The disk's fsync time varies several-fold from run to run on a
        // shared machine; the rest of a group commit's cycle is the code's.
        let cycle_ms = seconds * 1e3 / self.fsyncs.max(1) as f64;
        let other_ms = cycle_ms - fsync_ms_mean;
        println!(
            "{label:<44} {appends_per_second:>7.0} appends/s {megabytes_per_second:>6.1} MB/s \
             {appends_per_fsync:>5.1} appends/fsync {fsync_ms_mean:>5.2} ms fsync \
             + {other_ms:>5.2} ms other per commit"
        );
    }
}

fn entry(index: u64, payload_bytes: usize) -> openraft::Entry<BenchTypes> {
    openraft::Entry {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: openraft::EntryPayload::Normal(vec![index as u8; payload_bytes]),
    }
}

/// One group's handle and the index its next entry takes, behind one lock
/// so that the group's appenders keep its entries consecutive.
struct Group {
    store: GroupLog<BenchTypes>,
    next_index: u64,
}

async fn replicated(options: &Options, appenders: usize) -> Measured {
    let dir = bench_dir("replicated");
    let config = ReplicatedLogConfig::default();
    let (log, _) = ReplicatedLog::<BenchTypes>::open(&dir, config).expect("open");
    let stop = Arc::new(AtomicBool::new(false));
    let appends = Arc::new(AtomicU64::new(0));
    let before = log.stats().log;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for group in 0..options.groups {
        let store = log.group(group as u32).expect("a new group");
        let group = Arc::new(tokio::sync::Mutex::new(Group {
            store,
            next_index: 1,
        }));
        for _ in 0..appenders {
            let (group, stop, appends) =
                (Arc::clone(&group), Arc::clone(&stop), Arc::clone(&appends));
            let (entries, payload_bytes) = (options.entries, options.payload_bytes);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let durable = {
                        let mut group = group.lock().await;
                        let first = group.next_index;
                        group.next_index += entries as u64;
                        let batch = (first..first + entries as u64)
                            .map(|index| entry(index, payload_bytes))
                            .collect();
                        group.store.append_entries(batch).await.expect("queued")
                    };
                    durable.durable().await.expect("synced");
                    appends.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    let appends = stop_after(options.seconds, &stop, tasks, &appends).await;
    let measured = Measured {
        appends,
        elapsed: started.elapsed(),
        fsyncs: log.stats().log.fsyncs - before.fsyncs,
        fsync_time: log.stats().log.fsync_time_total - before.fsync_time_total,
    };
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

async fn single_stream(options: &Options, appenders: usize) -> Measured {
    let dir = bench_dir("single");
    let (log, _) = Log::open(&dir, LogConfig::default()).expect("open");
    let log = Arc::new(log);
    let stop = Arc::new(AtomicBool::new(false));
    let appends = Arc::new(AtomicU64::new(0));
    let before = log.stats();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for appender in 0..options.groups * appenders {
        let (log, stop, appends) = (Arc::clone(&log), Arc::clone(&stop), Arc::clone(&appends));
        let (entries, payload_bytes) = (options.entries, options.payload_bytes);
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let batch = (0..entries)
                    .map(|_| (appender as u32, vec![appender as u8; payload_bytes]))
                    .collect();
                log.append_batch(batch).await.expect("synced");
                appends.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let appends = stop_after(options.seconds, &stop, tasks, &appends).await;
    let measured = Measured {
        appends,
        elapsed: started.elapsed(),
        fsyncs: log.stats().fsyncs - before.fsyncs,
        fsync_time: log.stats().fsync_time_total - before.fsync_time_total,
    };
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

/// Lets the appenders run for `seconds`, stops them, waits for their last
/// appends, and returns how many were acknowledged.
async fn stop_after(
    seconds: u64,
    stop: &AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    appends: &AtomicU64,
) -> u64 {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("appender");
    }
    appends.load(Ordering::Relaxed)
}

fn bench_dir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sessiondb-bench-replicated-log-{label}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "{} groups, {} entries of {} bytes per append, {} s per run",
        options.groups, options.entries, options.payload_bytes, options.seconds
    );
    for &appenders in &options.appenders {
        let groups = options.groups;
        let shared = runtime.block_on(replicated(&options, appenders));
        shared.report(
            &format!("replicated log, {groups} groups x {appenders} appenders"),
            &options,
        );
        let single = runtime.block_on(single_stream(&options, appenders));
        single.report(
            &format!("ingest log, {} appenders in one stream", groups * appenders),
            &options,
        );
    }
}
