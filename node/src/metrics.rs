//! Metric primitives and the Prometheus text exposition format (0.0.4),
//! written by hand: a fixed-bucket latency histogram of atomics, and a
//! writer that puts `# HELP` and `# TYPE` before each family's samples.
//! What is measured lives with what it measures (the engine's counters, the
//! log's fsync histogram); `http::metrics` gathers it per scrape.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of the latency histograms (fsync, queries):
/// 100 µs to 10 s. An implicit `+Inf` bucket follows.
pub const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A histogram over [`LATENCY_BUCKETS_SECONDS`]; lock-free, cheap to record.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len() + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

/// A consistent-enough copy of a histogram for one scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts, one per bound of [`LATENCY_BUCKETS_SECONDS`],
    /// then `+Inf` (equal to `count`).
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The `+Inf` bucket and `count` are both derived from the buckets, so
    /// a scrape racing an observation still sees `+Inf == count`.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0_u64;
        let cumulative: Vec<u64> = self
            .buckets
            .iter()
            .map(|bucket| {
                running += bucket.load(Ordering::Relaxed);
                running
            })
            .collect();
        HistogramSnapshot {
            count: running,
            cumulative,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Kind of a metric family (`# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Builds an exposition body, family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.name());
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                let escaped = value
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.text, "{label}=\"{escaped}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", format_value(value));
        self
    }

    /// A whole one-sample family.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// A whole histogram family over [`LATENCY_BUCKETS_SECONDS`].
    pub fn histogram(&mut self, name: &str, help: &str, histogram: &HistogramSnapshot) {
        self.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        for (bound, count) in LATENCY_BUCKETS_SECONDS.iter().zip(&histogram.cumulative) {
            let le = format_value(*bound);
            self.sample(&bucket, &[("le", &le)], *count as f64);
        }
        self.sample(&bucket, &[("le", "+Inf")], histogram.count as f64);
        self.sample(&format!("{name}_sum"), &[], histogram.sum_seconds);
        self.sample(&format!("{name}_count"), &[], histogram.count as f64);
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// Integers without a fraction, the rest as Rust prints floats (which the
/// exposition format accepts).
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// The process's resident set size (`VmRSS` of `/proc/self/status`), in
/// bytes; `None` where there is no procfs.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_the_count() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(50));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 3);
        assert_eq!(snapshot.cumulative[0], 1);
        // 3 ms falls in the 5 ms bucket (index 5) and above.
        assert_eq!(snapshot.cumulative[4], 1);
        assert_eq!(snapshot.cumulative[5], 2);
        assert_eq!(snapshot.cumulative[LATENCY_BUCKETS_SECONDS.len() - 1], 2);
        assert_eq!(*snapshot.cumulative.last().unwrap(), 3);
        assert!((snapshot.sum_seconds - 60.00305).abs() < 1e-9);
    }

    #[test]
    fn exposition_escapes_labels_and_formats_values() {
        let mut exposition = Exposition::default();
        exposition.family("x_total", Kind::Counter, "help").sample(
            "x_total",
            &[("reason", "a\"b")],
            3.0,
        );
        exposition.single("y", Kind::Gauge, "g", 0.5);
        let text = exposition.finish();
        assert_eq!(
            text,
            "# HELP x_total help\n# TYPE x_total counter\nx_total{reason=\"a\\\"b\"} 3\n\
             # HELP y g\n# TYPE y gauge\ny 0.5\n"
        );
    }

    #[test]
    fn resident_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(resident_memory_bytes().is_some_and(|bytes| bytes > 0));
        }
    }
}
