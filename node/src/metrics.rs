//! Metric primitives for `/metrics` (`docs/operations.md`, "Metrics
//! reference"), on the `prometheus-client` crate: its registry, metric
//! types and Prometheus text format (0.0.4).
//!
//! What is measured lives with what it measures (the engine's counters, the
//! log's fsync histogram, admission's refusals, the shard mover's moves);
//! at each scrape every subsystem registers its metrics in a fresh
//! `Registry` (`register_metrics` on each), and `encode` writes it. The
//! helpers here keep the exposed names and help texts exactly as
//! documented: counters are given their full `_total` name and help texts
//! their final period, which `prometheus-client` would otherwise add.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::time::Duration;

pub use prometheus_client::registry::Registry;

/// Upper bounds, in seconds, of the latency histograms (fsync, queries,
/// moves): 100 µs to 10 s. An implicit `+Inf` bucket follows.
pub const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A latency histogram over [`LATENCY_BUCKETS_SECONDS`]. Clones share
/// their counts, so a scrape registers a clone of the live histogram.
#[derive(Debug, Clone)]
pub struct Histogram(prometheus_client::metrics::histogram::Histogram);

/// What a subsystem hands to a scrape: the live histogram itself.
pub type HistogramSnapshot = Histogram;

impl Default for Histogram {
    fn default() -> Self {
        Histogram(prometheus_client::metrics::histogram::Histogram::new(
            LATENCY_BUCKETS_SECONDS,
        ))
    }
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        self.0.observe(elapsed.as_secs_f64());
    }

    /// A handle for a scrape (the same histogram).
    pub fn snapshot(&self) -> HistogramSnapshot {
        self.clone()
    }
}

/// `text` without its final period: `prometheus-client` appends one.
fn help(text: &str) -> &str {
    text.strip_suffix('.').unwrap_or(text)
}

/// A counter's registered name: `prometheus-client` appends `_total`.
fn counter_name(name: &str) -> &str {
    name.strip_suffix("_total")
        .unwrap_or_else(|| panic!("counter {name} must end in _total"))
}

/// A one-sample counter of the value read at this scrape.
pub fn counter(registry: &mut Registry, name: &str, text: &str, value: u64) {
    registry.register(counter_name(name), help(text), ConstCounter::new(value));
}

/// A one-sample integer gauge.
pub fn gauge(registry: &mut Registry, name: &str, text: &str, value: i64) {
    registry.register(name, help(text), ConstGauge::new(value));
}

/// A one-sample fractional gauge.
pub fn gauge_f64(registry: &mut Registry, name: &str, text: &str, value: f64) {
    registry.register(name, help(text), ConstGauge::new(value));
}

/// A counter family with one label, one sample per `(label value, count)`.
/// Written even without samples (its `# HELP` and `# TYPE`), so a scrape
/// lists every documented family.
pub fn labeled_counter(
    registry: &mut Registry,
    name: &str,
    text: &str,
    label: &'static str,
    samples: impl IntoIterator<Item = (String, u64)>,
) {
    registry.register_collector(Box::new(LabeledSamples {
        name: counter_name(name).to_string(),
        help: text.to_string(),
        label,
        samples: samples
            .into_iter()
            .map(|(value, count)| (value, Sample::Counter(count)))
            .collect(),
    }));
}

/// A gauge family with one label (written even without samples).
pub fn labeled_gauge(
    registry: &mut Registry,
    name: &str,
    text: &str,
    label: &'static str,
    samples: impl IntoIterator<Item = (String, i64)>,
) {
    registry.register_collector(Box::new(LabeledSamples {
        name: name.to_string(),
        help: text.to_string(),
        label,
        samples: samples
            .into_iter()
            .map(|(value, level)| (value, Sample::Gauge(level)))
            .collect(),
    }));
}

/// One sample's value; all samples of a family have the same kind.
#[derive(Debug, Clone, Copy)]
enum Sample {
    Counter(u64),
    Gauge(i64),
}

/// A one-label family read at this scrape. A collector, not a `Family`:
/// the registry leaves out empty metrics, but a documented family must
/// show even before its first sample.
#[derive(Debug)]
struct LabeledSamples {
    name: String,
    /// Written as given (collectors' help texts get no period added).
    help: String,
    label: &'static str,
    samples: Vec<(String, Sample)>,
}

impl Collector for LabeledSamples {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let kind = match self.samples.first() {
            Some((_, Sample::Gauge(_))) => MetricType::Gauge,
            _ => MetricType::Counter,
        };
        let mut family = encoder.encode_descriptor(&self.name, &self.help, None, kind)?;
        for (value, sample) in &self.samples {
            let labels = [(self.label, value.as_str())];
            let metric = family.encode_family(&labels)?;
            match *sample {
                Sample::Counter(count) => ConstCounter::new(count).encode(metric)?,
                Sample::Gauge(level) => ConstGauge::new(level).encode(metric)?,
            }
        }
        Ok(())
    }
}

/// A histogram family.
pub fn histogram(registry: &mut Registry, name: &str, text: &str, histogram: &Histogram) {
    registry.register(name, help(text), histogram.0.clone());
}

/// The registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_text::encode(&mut text, registry).expect("writing to a String cannot fail");
    text
}

/// Process-wide numbers: resident memory, and per live visitor.
pub fn register_process(registry: &mut Registry, live_visitors: u64) {
    let rss = resident_memory_bytes().unwrap_or(0);
    gauge(
        registry,
        "sessiondb_process_resident_memory_bytes",
        "Resident set size of the process (VmRSS; 0 where unavailable).",
        i64::try_from(rss).unwrap_or(i64::MAX),
    );
    let per_visitor = if live_visitors == 0 {
        0.0
    } else {
        rss as f64 / live_visitors as f64
    };
    gauge_f64(
        registry,
        "sessiondb_memory_bytes_per_visitor_estimate",
        "Resident memory divided by live visitors (0 when none); an upper bound that includes fixed costs.",
        per_visitor,
    );
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
    fn names_and_help_texts_come_out_as_documented() {
        let mut registry = Registry::default();
        counter(&mut registry, "x_total", "Things counted.", 3);
        gauge_f64(&mut registry, "y", "A level.", 0.5);
        labeled_counter(
            &mut registry,
            "z_total",
            "By reason.",
            "reason",
            [("a\"b".to_string(), 2)],
        );
        let text = encode(&registry);
        assert_eq!(
            text,
            "# HELP x_total Things counted.\n# TYPE x_total counter\nx_total 3\n\
             # HELP y A level.\n# TYPE y gauge\ny 0.5\n\
             # HELP z_total By reason.\n# TYPE z_total counter\nz_total{reason=\"a\\\"b\"} 2\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_and_end_at_the_count() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(50));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        let mut registry = Registry::default();
        super::histogram(&mut registry, "h_seconds", "Latency.", &histogram);
        let text = encode(&registry);
        assert!(
            text.contains("h_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("h_seconds_bucket{le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("h_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("h_seconds_count 3\n"), "{text}");
    }

    #[test]
    fn resident_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(resident_memory_bytes().is_some_and(|bytes| bytes > 0));
        }
    }
}
