//! What a real node does to its data directory, seen through strace: every
//! file it wrote and kept is `fsync`ed or `fdatasync`ed (`sync_file_range`
//! does not count: it persists neither metadata nor the drive's cache),
//! every directory whose entries changed is `fsync`ed, and no log segment
//! is removed before the checkpoint that covers it is on disk
//! (`docs/durability.md`).
//!
//! Needs Debian's `strace` (`scripts/test` installs it); without it the
//! test fails, it does not skip.

use crate::support::node::{NodeOptions, TempDir, TestNode};
use crate::support::workload::{generate, WorkloadConfig, DAY_MS, MINUTE_MS};
use reqwest::StatusCode;
use sessiondb_protocol::EventBatch;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

const PROJECT: &str = "traced";
/// Small log segments, so that checkpoints remove some during the run.
const LOG_SEGMENT_BYTES_MAX: u64 = 256 * 1024;
/// The system calls the trace needs: what writes, syncs, creates, renames
/// and removes files.
const TRACED_CALLS: &str = "trace=open,openat,creat,write,pwrite64,writev,pwritev,pwritev2,\
ftruncate,fallocate,fsync,fdatasync,sync_file_range,rename,renameat,renameat2,unlink,unlinkat,\
mkdir,mkdirat";
/// Bound on waiting for the traced node to exit after its kill.
const EXIT_WAIT_MAX: Duration = Duration::from_secs(60);

fn strace_available() {
    let version = std::process::Command::new("strace").arg("-V").output();
    match version {
        Ok(output) if output.status.success() => {}
        other => panic!(
            "strace is missing or does not run ({other:?}): install Debian's strace (`apt-get install strace`; scripts/test does it)"
        ),
    }
}

/// One system call of the trace, in completion order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    /// Data or size of the file changed.
    Write(PathBuf),
    /// `fsync` or `fdatasync` of a file or directory.
    Sync(PathBuf),
    /// `sync_file_range`: recorded only to show it does not count.
    RangeSync(PathBuf),
    /// An entry of the directory was created, renamed or removed.
    DirectoryChange {
        directory: PathBuf,
        entry: PathBuf,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    Unlink(PathBuf),
}

/// The `<path>` strace's `-y` prints after a file descriptor, or None.
fn decorated_path(text: &str) -> Option<PathBuf> {
    let start = text.find('<')? + 1;
    let end = start + text[start..].find('>')?;
    Some(PathBuf::from(&text[start..end]))
}

/// The quoted strings of a call's arguments (paths), in order.
fn quoted(text: &str) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('"') else { break };
        paths.push(PathBuf::from(&after[..end]));
        rest = &after[end + 1..];
    }
    paths
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Parses strace's `-f -y` output: joins `<unfinished ...>` with its
/// `resumed` line, keeps successful calls only, in completion order.
fn parse_trace(text: &str) -> Vec<Call> {
    let mut pending: HashMap<String, String> = HashMap::new();
    let mut calls = Vec::new();
    for line in text.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        let complete = if let Some(start) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid.to_string(), start.to_string());
            continue;
        } else if rest.starts_with("<...") {
            let Some(start) = pending.remove(pid) else {
                continue;
            };
            let tail = rest.split_once("resumed>").map_or("", |(_, tail)| tail);
            format!("{start}{tail}")
        } else {
            rest.to_string()
        };
        let Some((call, after)) = complete.split_once('(') else {
            continue;
        };
        let Some((arguments, result)) = after.rsplit_once(" = ") else {
            continue;
        };
        if result.trim_start().starts_with('-') || result.trim_start().starts_with('?') {
            continue;
        }
        let first = arguments.split(',').next().unwrap_or("");
        match call {
            "write" | "pwrite64" | "writev" | "pwritev" | "pwritev2" | "ftruncate"
            | "fallocate" => {
                if let Some(path) = decorated_path(first) {
                    calls.push(Call::Write(path));
                }
            }
            "fsync" | "fdatasync" => {
                if let Some(path) = decorated_path(first) {
                    calls.push(Call::Sync(path));
                }
            }
            "sync_file_range" => {
                if let Some(path) = decorated_path(first) {
                    calls.push(Call::RangeSync(path));
                }
            }
            "open" | "openat" | "creat" => {
                let created = call == "creat" || arguments.contains("O_CREAT");
                if let (true, Some(path)) = (created, decorated_path(result)) {
                    calls.push(Call::DirectoryChange {
                        directory: parent(&path),
                        entry: path,
                    });
                }
            }
            "mkdir" | "mkdirat" | "unlink" | "unlinkat" => {
                if let Some(path) = quoted(arguments).into_iter().next() {
                    if call.starts_with("unlink") {
                        calls.push(Call::Unlink(path.clone()));
                    }
                    calls.push(Call::DirectoryChange {
                        directory: parent(&path),
                        entry: path,
                    });
                }
            }
            "rename" | "renameat" | "renameat2" => {
                let paths = quoted(arguments);
                if let [from, to, ..] = paths.as_slice() {
                    calls.push(Call::Rename {
                        from: from.clone(),
                        to: to.clone(),
                    });
                    for path in [from, to] {
                        calls.push(Call::DirectoryChange {
                            directory: parent(path),
                            entry: path.clone(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    calls
}

/// Every regular file under `directory`, recursively.
fn files_under(directory: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![directory.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).expect("read a data directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// The pid of the node that strace (`strace_pid`) started: its only child.
fn traced_child(strace_pid: u32) -> u32 {
    let children =
        std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children"))
            .expect("read strace's children");
    children
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("strace {strace_pid} has no child: {children:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_the_node_keeps_is_fsynced_and_the_log_is_cut_only_after_the_checkpoint() {
    strace_available();
    let trace_dir = TempDir::new("strace");
    let trace_path = trace_dir.path().join("trace.txt");
    let seed = 0x57ac_e001;
    let mut config = WorkloadConfig::new(seed, PROJECT);
    config.visitors = 1_500;
    config.span_ms = DAY_MS;
    config.max_delay_ms = DAY_MS / 2;
    let workload = generate(&config);
    let options = NodeOptions {
        start_ms: config.base_ms + config.span_ms + MINUTE_MS,
        shards: Some(4),
    };
    let wrapper: Vec<String> = [
        "strace",
        "-f",
        "-y",
        "-qq",
        "-o",
        trace_path.to_str().expect("a UTF-8 path"),
        "-e",
        TRACED_CALLS,
        "--",
    ]
    .map(String::from)
    .to_vec();
    let mut node = TestNode::start_prepared(
        options,
        vec![
            "--log-segment-bytes-max".to_string(),
            LOG_SEGMENT_BYTES_MAX.to_string(),
        ],
        wrapper,
        |_| {},
    )
    .await;
    node.create_project(
        PROJECT,
        serde_json::json!({ "allowed_lateness_ms": 7 * DAY_MS }),
    )
    .await;
    let batches: Vec<_> = workload.batches(i64::MAX, 200);
    let stretch = batches.len().div_ceil(3);
    for (round, chunk) in batches.chunks(stretch).enumerate() {
        for (_, events) in chunk {
            let body = serde_json::to_vec(&EventBatch {
                events: events.clone(),
            })
            .expect("a batch serializes");
            let raw = node.post_raw("/v1/events", body).await;
            assert_eq!(raw.status, StatusCode::OK, "round {round}: {}", raw.text);
        }
        let raw = node.post_admin("/v1/admin/checkpoint", "").await;
        assert_eq!(
            raw.status,
            StatusCode::OK,
            "checkpoint {round}: {}",
            raw.text
        );
        println!("checkpoint {round}: {}", raw.text);
    }
    // End the node as a power cut would find it: no shutdown work.
    let strace_pid = node.pid().expect("strace runs");
    let node_pid = traced_child(strace_pid);
    let killed = std::process::Command::new("kill")
        .args(["-9", &node_pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success(), "kill -9 {node_pid}");
    assert!(
        node.wait_for_exit(EXIT_WAIT_MAX).await.is_some(),
        "strace ends with its traced node"
    );

    let data_dir = node.node_data_dir();
    let trace = std::fs::read_to_string(&trace_path).expect("read the trace");
    let calls = parse_trace(&trace);
    let inside = |path: &Path| path.starts_with(&data_dir);

    // 1. Every file kept in the data directory that was written got an
    //    `fsync`/`fdatasync` after its first write. Checkpoint files and log
    //    segments, whose every byte the node relies on, after their last
    //    write. (The placement store's sled files may end with writes no
    //    flush covered: applied state, which openraft re-applies from the
    //    flushed log after a crash; `docs/cluster.md`.)
    let mut first_unsynced: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut last_unsynced: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut range_synced: BTreeSet<PathBuf> = BTreeSet::new();
    let mut written: BTreeSet<PathBuf> = BTreeSet::new();
    let mut ever_synced: BTreeSet<PathBuf> = BTreeSet::new();
    for (index, call) in calls.iter().enumerate() {
        match call {
            Call::Write(path) if inside(path) => {
                written.insert(path.clone());
                last_unsynced.entry(path.clone()).or_insert(index);
                if !ever_synced.contains(path) {
                    first_unsynced.entry(path.clone()).or_insert(index);
                }
            }
            Call::Sync(path) => {
                last_unsynced.remove(path);
                first_unsynced.remove(path);
                ever_synced.insert(path.clone());
            }
            Call::RangeSync(path) if inside(path) => {
                range_synced.insert(path.clone());
            }
            Call::Rename { from, to } => {
                // A file renamed keeps its state under the new name.
                for map in [&mut first_unsynced, &mut last_unsynced] {
                    if let Some(index) = map.remove(from) {
                        map.insert(to.clone(), index);
                    }
                }
                if written.remove(from) {
                    written.insert(to.clone());
                }
                if ever_synced.remove(from) {
                    ever_synced.insert(to.clone());
                }
            }
            _ => {}
        }
    }
    let kept: BTreeSet<PathBuf> = files_under(&data_dir).into_iter().collect();
    let kept_written: Vec<&PathBuf> = written.iter().filter(|path| kept.contains(*path)).collect();
    let is_relied_on = |path: &Path| {
        let text = path.to_string_lossy();
        text.contains("/checkpoints/checkpoint-") || text.contains("/log/log-")
    };
    let checkpoint_files = kept_written
        .iter()
        .filter(|path| path.to_string_lossy().contains("/checkpoints/checkpoint-"))
        .count();
    assert!(
        checkpoint_files >= 1 && kept_written.len() >= 3,
        "the trace shows the node writing its files (checkpoint files: {checkpoint_files}): {kept_written:?}\ntrace head:\n{}",
        trace.lines().take(40).collect::<Vec<_>>().join("\n")
    );
    let describe = |(path, index): (&PathBuf, &usize)| {
        let range = if range_synced.contains(path) {
            " (only sync_file_range)"
        } else {
            ""
        };
        format!("{} (written at call {index}){range}", path.display())
    };
    let never_synced: Vec<String> = first_unsynced
        .iter()
        .filter(|(path, _)| kept.contains(*path))
        .map(describe)
        .collect();
    assert!(
        never_synced.is_empty(),
        "files kept in the data directory were written and never fsynced:\n{}",
        never_synced.join("\n")
    );
    let unsynced_tail: Vec<String> = last_unsynced
        .iter()
        .filter(|(path, _)| kept.contains(*path) && is_relied_on(path))
        .map(describe)
        .collect();
    assert!(
        unsynced_tail.is_empty(),
        "checkpoint or log files were written after their last fsync:\n{}",
        unsynced_tail.join("\n")
    );

    // 2. Every directory whose entries changed is synced after the change.
    let mut changed: BTreeMap<PathBuf, (usize, PathBuf)> = BTreeMap::new();
    for (index, call) in calls.iter().enumerate() {
        match call {
            Call::DirectoryChange { directory, entry }
                if inside(directory) || *directory == data_dir =>
            {
                changed.insert(directory.clone(), (index, entry.clone()));
            }
            Call::Sync(path) => {
                changed.remove(path);
            }
            _ => {}
        }
    }
    assert!(
        changed.is_empty(),
        "directories changed and never fsynced after it (last change: call, entry):\n{changed:#?}"
    );

    // 3. No log segment is removed before the checkpoint that allows it is
    //    on disk: its file synced, renamed into place, the directory synced.
    let segment_unlinks: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, call)| {
            matches!(call, Call::Unlink(path) if inside(path) && path.to_string_lossy().ends_with(".seg"))
        })
        .map(|(index, _)| index)
        .collect();
    assert!(
        !segment_unlinks.is_empty(),
        "checkpoints removed no log segment: the test needs more data or smaller segments"
    );
    for unlink in segment_unlinks {
        let before = &calls[..unlink];
        let renamed = before.iter().rposition(|call| {
            matches!(call, Call::Rename { to, .. } if to.to_string_lossy().ends_with(".sdbc"))
        });
        let Some(renamed) = renamed else {
            panic!("segment removed at call {unlink} before any checkpoint was renamed into place");
        };
        let Call::Rename { from, to } = &before[renamed] else {
            unreachable!()
        };
        assert!(
            before[..renamed].iter().any(|call| *call == Call::Sync(from.clone())),
            "checkpoint {} renamed at call {renamed} before its file was fsynced; a segment was removed at call {unlink}",
            from.display()
        );
        let directory = parent(to);
        assert!(
            before[renamed..]
                .iter()
                .any(|call| *call == Call::Sync(directory.clone())),
            "a segment was removed at call {unlink} before {} was fsynced after checkpoint {} was renamed into it",
            directory.display(),
            to.display()
        );
    }
}
