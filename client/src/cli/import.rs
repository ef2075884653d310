//! `import <file.ndjson>`: stream a file of native events through a
//! [`Sender`].
//!
//! The file is read line by line (never whole), so its size does not
//! matter; the sender's `buffer_events_max` bounds what is held. A line that
//! is not an event is rejected locally (reason [`LineReason::MalformedLine`]) and not
//! sent. Every rejected line — local or refused by the node — is written to
//! the rejections file as `{"line", "id", "reason", "message"}`.

use super::args::{EncodingArg, ImportArgs};
use super::table::{Align, Table};
use super::{CliError, Context, EXIT_FAILED, EXIT_INPUT, EXIT_OK, EXIT_UNREACHABLE};
use crate::protocol::{ErrorCode, Event, RejectCode};
use crate::sender::{FlushReport, REPORT_DETAILS_MAX};
use crate::{Backpressure, Client, ClientError, Encoding, Sender, SenderConfig};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a line of the input was not imported: the node's reason, or one
/// found before or after sending. Written as its snake_case string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LineReason {
    /// The line is not a JSON event, or is longer than [`LINE_BYTES_MAX`]:
    /// `malformed_line`. It was not sent.
    MalformedLine,
    /// The event could not be delivered after every retry:
    /// `delivery_failed`. Importing the file again is safe.
    DeliveryFailed,
    /// The node refused the event (`docs/api.md`, "Per-event reasons").
    Node(RejectCode),
}

impl LineReason {
    /// The reason as written in the rejections file.
    pub fn as_str(&self) -> &str {
        match self {
            LineReason::MalformedLine => "malformed_line",
            LineReason::DeliveryFailed => "delivery_failed",
            LineReason::Node(code) => code.as_str(),
        }
    }
}

impl std::fmt::Display for LineReason {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl Serialize for LineReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for LineReason {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<LineReason, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(match text.as_str() {
            "malformed_line" => LineReason::MalformedLine,
            "delivery_failed" => LineReason::DeliveryFailed,
            code => LineReason::Node(RejectCode::from_wire(code)),
        })
    }
}
/// The import flushes every this many events, so that the rejection
/// details of one flush stay under [`REPORT_DETAILS_MAX`].
pub const IMPORT_FLUSH_EVENTS: u64 = REPORT_DETAILS_MAX as u64;
/// Events the import's sender holds at most.
pub const IMPORT_BUFFER_EVENTS_MAX: usize = 50_000;
/// How often the progress line is redrawn on a terminal.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);
/// Away from a terminal, a progress line each time this many percent of
/// the file more were read…
const PROGRESS_LINE_PERCENT_STEP: u64 = 10;
/// …or this long after the previous line, whichever comes first.
const PROGRESS_LINE_INTERVAL: Duration = Duration::from_secs(10);
/// Longest line read; a longer one is rejected (its rest skipped).
pub const LINE_BYTES_MAX: usize = 1024 * 1024;

/// One line of the rejections file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RejectedLine {
    /// Line number in the input file, from 1.
    pub line: u64,
    /// The event's id, when the line had one.
    pub id: Option<String>,
    pub reason: LineReason,
    pub message: String,
}

/// The summary printed at the end (`--json` prints it as is). The counts
/// add up: `events_sent = accepted + duplicates + rejected_by_node +
/// failed`, and `lines = events_sent + malformed + blank` (unless a
/// failure stopped the import early).
#[derive(Debug, Clone, Serialize)]
pub struct ImportSummary {
    pub file: PathBuf,
    pub lines: u64,
    pub events_sent: u64,
    pub accepted: u64,
    pub duplicates: u64,
    /// Every rejected line: `malformed + rejected_by_node`.
    pub rejected: u64,
    /// Events the node refused.
    pub rejected_by_node: u64,
    /// Lines that are not events, not sent.
    pub malformed: u64,
    /// Blank lines, skipped.
    pub blank: u64,
    pub failed: u64,
    /// Rejected lines per reason (`malformed_line` or the node's reason).
    pub rejections_by_reason: BTreeMap<String, u64>,
    pub elapsed_ms: u64,
    pub events_per_second: f64,
    /// Where the rejected lines were written, if anywhere.
    pub rejections_file: Option<PathBuf>,
    /// Why events could not be delivered, when some could not: the
    /// `--json` error (`{"code", "message", "hint"}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
}

pub async fn run(client: &Client, context: &Context, args: ImportArgs) -> Result<u8, CliError> {
    let file = File::open(&args.file).map_err(|source| {
        CliError::new(EXIT_INPUT, format!("cannot read {}", args.file.display()))
            .with_hint("check the path; the file must hold one JSON event per line")
            .with_source(source)
    })?;
    // Fail fast (exit 3) rather than retrying every batch against nothing.
    client
        .health()
        .await
        .map_err(|error| context.client_error(error))?;
    let config = SenderConfig {
        batch_events_max: usize::from(args.batch_events),
        buffer_events_max: IMPORT_BUFFER_EVENTS_MAX.max(usize::from(args.batch_events)),
        backpressure: Backpressure::Wait,
        encoding: match args.encoding {
            EncodingArg::Binary => Encoding::Binary,
            EncodingArg::Json => Encoding::Json,
        },
        ..SenderConfig::default()
    };
    let sender = client
        .sender(config)
        .map_err(|error| context.client_error(error))?;
    let rejections_path = args
        .rejections_file
        .clone()
        .unwrap_or_else(|| default_rejections_path(&args.file));
    let file_bytes = file.metadata().map_or(0, |metadata| metadata.len());
    let mut import = Import {
        context: context.clone(),
        rejections: Rejections::new(rejections_path, args.rejections_file.is_some())?,
        lines: LineMap::default(),
        progress: Progress::new(file_bytes),
        totals: FlushReport::default(),
        by_reason: BTreeMap::new(),
        malformed: 0,
        blank: 0,
        rejected_by_node: 0,
        failed: 0,
        first_failure: None,
    };
    let started = Instant::now();
    let lines_read = import.read_all(file, &sender).await?;
    let report = sender
        .flush()
        .await
        .map_err(|error| context.client_error(error))?;
    import.absorb(report)?;
    import.progress.clear();
    import.rejections.finish()?;

    let elapsed = started.elapsed();
    let events_sent = sender.stats().events_tracked;
    let failure = import.first_failure.take().map(|failure| {
        let (error, refused) = failure;
        delivery_error(error, refused, import.failed)
    });
    let summary = ImportSummary {
        file: args.file.clone(),
        lines: lines_read,
        events_sent,
        accepted: import.totals.accepted,
        duplicates: import.totals.duplicates,
        rejected: import.malformed + import.rejected_by_node,
        rejected_by_node: import.rejected_by_node,
        malformed: import.malformed,
        blank: import.blank,
        failed: import.failed,
        rejections_by_reason: import.by_reason.clone(),
        elapsed_ms: elapsed.as_millis() as u64,
        events_per_second: events_sent as f64 / elapsed.as_secs_f64().max(1e-9),
        rejections_file: import.rejections.written_path(),
        error: failure.as_ref().map(|failure| {
            let document: serde_json::Value =
                serde_json::from_str(&failure.to_json(context.verbose)).expect("JSON");
            document["error"].clone()
        }),
    };
    if context.json {
        context.print_json(&summary)?;
    } else {
        print_summary(&summary, failure.is_some());
    }
    if let Some(failure) = failure {
        if !context.json {
            failure.print(context.error_style());
        }
        return Ok(failure.exit_code);
    }
    Ok(if summary.rejected > 0 {
        EXIT_INPUT
    } else {
        EXIT_OK
    })
}

/// The error of an import whose events could not all be delivered. A
/// refused credential is said as such: sending again would be refused
/// again, so it is not "safe to import again" advice.
fn delivery_error(error: CliError, refused: bool, failed: u64) -> CliError {
    if refused {
        return error;
    }
    let exit_code = if error.exit_code == EXIT_UNREACHABLE {
        EXIT_UNREACHABLE
    } else {
        EXIT_FAILED
    };
    CliError {
        exit_code,
        message: format!("{failed} events could not be delivered: {}", error.message),
        hint: Some("events keep their ids: importing the file again is safe".to_string()),
        ..error
    }
}

fn default_rejections_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".rejections.ndjson");
    PathBuf::from(name)
}

fn print_summary(summary: &ImportSummary, failed: bool) {
    println!(
        "imported {}: {} lines, {} events sent in {:.2} s ({:.0} events/s)",
        summary.file.display(),
        summary.lines,
        summary.events_sent,
        summary.elapsed_ms as f64 / 1_000.0,
        summary.events_per_second
    );
    println!(
        "  sent {} = {} accepted + {} duplicates + {} rejected + {} failed",
        summary.events_sent,
        summary.accepted,
        summary.duplicates,
        summary.rejected_by_node,
        summary.failed
    );
    if summary.malformed + summary.blank > 0 {
        println!(
            "  lines not sent: {} malformed, {} blank",
            summary.malformed, summary.blank
        );
    }
    if failed {
        println!("  failed events were not delivered (see the error below)");
    }
    if summary.rejections_by_reason.is_empty() {
        return;
    }
    match &summary.rejections_file {
        Some(path) => println!(
            "\n{} rejected lines (listed in {}):",
            summary.rejected,
            path.display()
        ),
        None => println!("\n{} rejected lines:", summary.rejected),
    }
    let mut table = Table::new(&[("REASON", Align::Left), ("LINES", Align::Right)]);
    for (reason, count) in &summary.rejections_by_reason {
        table.row(vec![reason.clone(), count.to_string()]);
    }
    print!("{}", table.render());
}

/// The state of one import.
struct Import {
    context: Context,
    rejections: Rejections,
    lines: LineMap,
    progress: Progress,
    totals: FlushReport,
    by_reason: BTreeMap<String, u64>,
    malformed: u64,
    blank: u64,
    rejected_by_node: u64,
    failed: u64,
    /// The first delivery error, and whether the node refused the
    /// credential (401 or 403).
    first_failure: Option<(CliError, bool)>,
}

impl Import {
    /// Reads and tracks every line; answers the number of lines read.
    async fn read_all(&mut self, file: File, sender: &Sender) -> Result<u64, CliError> {
        let mut reader = BufReader::new(file);
        let mut buffer = Vec::new();
        let mut line_number: u64 = 0;
        let mut tracked: u64 = 0;
        let mut bytes_read: u64 = 0;
        loop {
            buffer.clear();
            let read =
                read_line_bounded(&mut reader, &mut buffer, &mut bytes_read).map_err(|source| {
                    CliError::new(EXIT_INPUT, "cannot read the input file").with_source(source)
                })?;
            let Some(complete) = read else { break };
            line_number += 1;
            match parse_line(&buffer, complete) {
                Parsed::Blank => {
                    self.blank += 1;
                    self.lines.skip(tracked);
                }
                Parsed::Bad(mut rejected) => {
                    rejected.line = line_number;
                    self.lines.skip(tracked);
                    self.malformed += 1;
                    self.reject(rejected)?;
                }
                Parsed::Event(event) => {
                    sender.track(*event).await.map_err(|error| {
                        CliError::new(EXIT_FAILED, "the sender stopped").with_source(error)
                    })?;
                    tracked += 1;
                    if tracked.is_multiple_of(IMPORT_FLUSH_EVENTS) {
                        let report = sender.flush().await.map_err(|error| {
                            CliError::new(EXIT_FAILED, "the sender stopped").with_source(error)
                        })?;
                        self.absorb(report)?;
                        if self.failed > 0 {
                            // The node went away: stop instead of failing
                            // every remaining batch after its retries.
                            break;
                        }
                    }
                }
            }
            let rejected = self.malformed + self.rejected_by_node;
            self.progress
                .show(bytes_read, line_number, sender, rejected);
        }
        Ok(line_number)
    }

    fn reject(&mut self, rejected: RejectedLine) -> Result<(), CliError> {
        *self
            .by_reason
            .entry(rejected.reason.as_str().to_string())
            .or_default() += 1;
        self.rejections.write(&rejected)
    }

    /// Counts a flush report and writes its rejections and failures.
    fn absorb(&mut self, report: FlushReport) -> Result<(), CliError> {
        for rejected in &report.rejected {
            let line = RejectedLine {
                line: self.lines.line_of(rejected.seq),
                id: Some(rejected.id.clone()),
                reason: LineReason::Node(rejected.reason.clone()),
                message: rejected.message.clone(),
            };
            self.rejected_by_node += 1;
            self.reject(line)?;
        }
        for failed in &report.failed {
            self.failed += 1;
            if self.first_failure.is_none() {
                let error =
                    CliError::classify(&self.context.node, &self.context.credential, &failed.error)
                        .with_source(failed.error.clone());
                self.first_failure = Some((error, is_refused_credential(&failed.error)));
            }
            let line = RejectedLine {
                line: self.lines.line_of(failed.seq),
                id: Some(failed.event.id.clone()),
                reason: LineReason::DeliveryFailed,
                message: error_chain(&*failed.error),
            };
            self.rejections.write(&line)?;
        }
        // Beyond REPORT_DETAILS_MAX per flush (cannot happen with
        // IMPORT_FLUSH_EVENTS ≤ REPORT_DETAILS_MAX), count what we cannot list.
        self.rejected_by_node += report.details_dropped;
        self.totals.accepted += report.accepted;
        self.totals.duplicates += report.duplicates;
        Ok(())
    }
}

/// A 401 or 403: the node refused the credential, not the events.
fn is_refused_credential(error: &ClientError) -> bool {
    matches!(
        error.code(),
        Some(ErrorCode::Unauthorized | ErrorCode::Forbidden)
    )
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        text.push_str(": ");
        text.push_str(&error.to_string());
        cause = error.source();
    }
    text
}

enum Parsed {
    Blank,
    Bad(RejectedLine),
    Event(Box<Event>),
}

fn parse_line(bytes: &[u8], complete: bool) -> Parsed {
    let bad = |id: Option<String>, message: String| {
        Parsed::Bad(RejectedLine {
            line: 0,
            id,
            reason: LineReason::MalformedLine,
            message,
        })
    };
    if !complete {
        return bad(
            None,
            format!("the line is longer than {LINE_BYTES_MAX} bytes"),
        );
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Parsed::Blank;
    }
    match serde_json::from_slice::<Event>(bytes) {
        Ok(event) => Parsed::Event(Box::new(event)),
        Err(error) => {
            let id = serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .and_then(|value| value.get("id")?.as_str().map(str::to_string));
            bad(id, format!("not a valid event: {error}"))
        }
    }
}

/// Reads one line (without its `\n`) into `buffer`, keeping at most
/// [`LINE_BYTES_MAX`] bytes of it. `None` at the end of the input;
/// `Some(false)` when the line was cut.
fn read_line_bounded(
    reader: &mut impl BufRead,
    buffer: &mut Vec<u8>,
    bytes_read: &mut u64,
) -> std::io::Result<Option<bool>> {
    let mut complete = true;
    let mut any = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(any.then_some(complete));
        }
        any = true;
        let (chunk, found_newline) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (&available[..end], true),
            None => (available, false),
        };
        let room = LINE_BYTES_MAX.saturating_sub(buffer.len());
        if chunk.len() > room {
            complete = false;
        }
        buffer.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let consumed = chunk.len() + usize::from(found_newline);
        reader.consume(consumed);
        *bytes_read += consumed as u64;
        if found_newline {
            return Ok(Some(complete));
        }
    }
}

/// Maps a sender sequence number back to its line: the n-th event is on
/// line n + 1 plus the number of blank or bad lines before it. Holds one
/// entry per skipped line only.
#[derive(Debug, Default)]
struct LineMap {
    /// (first sequence number, lines skipped before it), increasing.
    offsets: Vec<(u64, u64)>,
}

impl LineMap {
    /// A line was skipped after `tracked` events were sent.
    fn skip(&mut self, tracked: u64) {
        let skipped = self.offsets.last().map_or(0, |&(_, skipped)| skipped) + 1;
        match self.offsets.last_mut() {
            Some(last) if last.0 == tracked => last.1 = skipped,
            _ => self.offsets.push((tracked, skipped)),
        }
    }

    fn line_of(&self, seq: u64) -> u64 {
        let index = self.offsets.partition_point(|&(first, _)| first <= seq);
        let skipped = if index == 0 {
            0
        } else {
            self.offsets[index - 1].1
        };
        seq + 1 + skipped
    }
}

/// The rejections file, created at the first rejection (or at once when
/// the user named it, so an old file is never left behind).
struct Rejections {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl Rejections {
    fn new(path: PathBuf, create_now: bool) -> Result<Rejections, CliError> {
        let mut rejections = Rejections { path, writer: None };
        if create_now {
            rejections.open()?;
        }
        Ok(rejections)
    }

    fn open(&mut self) -> Result<&mut BufWriter<File>, CliError> {
        if self.writer.is_none() {
            let file = File::create(&self.path).map_err(|source| self.error(source))?;
            self.writer = Some(BufWriter::new(file));
        }
        Ok(self.writer.as_mut().expect("opened above"))
    }

    fn write(&mut self, rejected: &RejectedLine) -> Result<(), CliError> {
        let mut line = serde_json::to_vec(rejected).expect("a RejectedLine serializes");
        line.push(b'\n');
        let written = self.open()?.write_all(&line);
        written.map_err(|source| self_error(&self.path, source))
    }

    fn finish(&mut self) -> Result<(), CliError> {
        if let Some(writer) = &mut self.writer {
            writer
                .flush()
                .map_err(|source| self_error(&self.path, source))?;
        }
        Ok(())
    }

    fn written_path(&self) -> Option<PathBuf> {
        self.writer.as_ref().map(|_| self.path.clone())
    }

    fn error(&self, source: std::io::Error) -> CliError {
        self_error(&self.path, source)
    }
}

fn self_error(path: &Path, source: std::io::Error) -> CliError {
    CliError::new(
        EXIT_INPUT,
        format!("cannot write the rejections file {}", path.display()),
    )
    .with_source(source)
}

/// Progress on stderr: on a terminal one line redrawn in place; else
/// plain lines, every [`PROGRESS_LINE_PERCENT_STEP`] percent of the file or
/// [`PROGRESS_LINE_INTERVAL`], so a log file gets a few lines and no
/// control codes.
struct Progress {
    terminal: bool,
    started: Instant,
    last_drawn: Option<Instant>,
    file_bytes: u64,
    /// The percentage at which the next plain line is due.
    next_percent: u64,
}

impl Progress {
    fn new(file_bytes: u64) -> Progress {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_drawn: None,
            file_bytes,
            next_percent: PROGRESS_LINE_PERCENT_STEP,
        }
    }

    fn show(&mut self, bytes_read: u64, lines: u64, sender: &Sender, rejected: u64) {
        let now = Instant::now();
        let since_last = self
            .last_drawn
            .map_or(now.duration_since(self.started), |last| {
                now.duration_since(last)
            });
        let percent = (bytes_read * 100).checked_div(self.file_bytes);
        let due = if self.terminal {
            self.last_drawn.is_none() || since_last >= PROGRESS_INTERVAL
        } else {
            percent.is_some_and(|percent| percent >= self.next_percent)
                || since_last >= PROGRESS_LINE_INTERVAL
        };
        if !due {
            return;
        }
        self.last_drawn = Some(now);
        if let Some(percent) = percent {
            self.next_percent =
                (percent / PROGRESS_LINE_PERCENT_STEP + 1) * PROGRESS_LINE_PERCENT_STEP;
        }
        let elapsed = now.duration_since(self.started);
        let resolved = sender.stats().events_resolved;
        let line = progress_line(
            bytes_read,
            self.file_bytes,
            elapsed,
            lines,
            resolved,
            rejected,
        );
        if self.terminal {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }

    fn clear(&self) {
        if self.terminal && self.last_drawn.is_some() {
            eprint!("\r\x1b[2K");
        }
    }
}

/// `importing: 45% (10234 lines read, 9000 events acknowledged, 5000
/// events/s, 3 rejected), ETA 12s`.
fn progress_line(
    bytes_read: u64,
    file_bytes: u64,
    elapsed: Duration,
    lines: u64,
    resolved: u64,
    rejected: u64,
) -> String {
    let rate = resolved as f64 / elapsed.as_secs_f64().max(1e-9);
    let counts = format!(
        "{lines} lines read, {resolved} events acknowledged, {rate:.0} events/s, {rejected} rejected"
    );
    if file_bytes == 0 || bytes_read == 0 {
        return format!("importing: {counts}");
    }
    let percent = (bytes_read * 100 / file_bytes).min(100);
    if percent == 0 {
        // Too little read for an estimate worth showing.
        return format!("importing: 0% ({counts})");
    }
    let remaining = file_bytes.saturating_sub(bytes_read);
    let eta = elapsed.mul_f64(remaining as f64 / bytes_read as f64);
    format!("importing: {percent}% ({counts}), ETA {}", format_eta(eta))
}

/// `12s`, `3m05s`, `2h10m`.
fn format_eta(eta: Duration) -> String {
    let seconds = eta.as_secs();
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3_599 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3_600, seconds % 3_600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_map_skips_blank_and_bad_lines() {
        // Lines: 1 event(seq 0), 2 bad, 3 blank, 4 event(seq 1), 5 event(seq 2), 6 bad, 7 event(seq 3)
        let mut map = LineMap::default();
        map.skip(1);
        map.skip(1);
        map.skip(3);
        assert_eq!(
            (0..4).map(|seq| map.line_of(seq)).collect::<Vec<_>>(),
            [1, 4, 5, 7]
        );
        let mut leading = LineMap::default();
        leading.skip(0);
        assert_eq!(leading.line_of(0), 2);
    }

    #[test]
    fn long_lines_are_cut_and_flagged() {
        let mut input = vec![b'x'; LINE_BYTES_MAX + 10];
        input.extend_from_slice(b"\n{}\nlast");
        let mut reader = BufReader::with_capacity(1000, &input[..]);
        let mut buffer = Vec::new();
        let mut bytes = 0;
        assert_eq!(
            read_line_bounded(&mut reader, &mut buffer, &mut bytes).unwrap(),
            Some(false)
        );
        assert_eq!(buffer.len(), LINE_BYTES_MAX);
        buffer.clear();
        assert_eq!(
            read_line_bounded(&mut reader, &mut buffer, &mut bytes).unwrap(),
            Some(true)
        );
        assert_eq!(buffer, b"{}");
        buffer.clear();
        assert_eq!(
            read_line_bounded(&mut reader, &mut buffer, &mut bytes).unwrap(),
            Some(true)
        );
        assert_eq!(buffer, b"last");
        buffer.clear();
        assert_eq!(
            read_line_bounded(&mut reader, &mut buffer, &mut bytes).unwrap(),
            None
        );
        assert_eq!(bytes, input.len() as u64);
    }

    #[test]
    fn progress_says_how_far_and_how_long_still() {
        let line = progress_line(250, 1_000, Duration::from_secs(3), 40, 30, 1);
        assert_eq!(
            line,
            "importing: 25% (40 lines read, 30 events acknowledged, 10 events/s, 1 rejected), ETA 9s"
        );
        assert_eq!(format_eta(Duration::from_secs(185)), "3m05s");
        assert_eq!(format_eta(Duration::from_secs(7_800)), "2h10m");
        assert!(
            progress_line(0, 0, Duration::from_secs(1), 0, 0, 0).starts_with("importing: 0 lines")
        );
    }

    #[test]
    fn bad_lines_keep_their_id_when_they_have_one() {
        let Parsed::Bad(rejected) = parse_line(br#"{"id":"e-9","ts":"soon"}"#, true) else {
            panic!("expected a bad line");
        };
        assert_eq!(rejected.id.as_deref(), Some("e-9"));
        assert_eq!(rejected.reason, LineReason::MalformedLine);
        assert!(matches!(parse_line(b"  \r", true), Parsed::Blank));
        assert!(matches!(parse_line(b"not json", true), Parsed::Bad(_)));
    }
}
