//! `results <project> <experiment>`: an experiment's results as tables.

use super::args::ResultsArgs;
use super::table::{
    format_p_value, format_percent, format_signed_percent, format_utc, Align, Table,
};
use super::time::align_range;
use super::{CliError, Context, EXIT_OK, EXIT_USAGE};
use crate::protocol::{
    Comparison, ErrorCode, ResultsGroup, ResultsResponse, SampleRatioMismatch, VariationResults,
};
use crate::{Client, ClientError, RangeAlignment, ResultsRequest};

/// Visitors each of a variation and the baseline need before a verdict is
/// given: with fewer, a single conversion swings the rate by tens of
/// percent. The console's threshold (`node/src/http/console/app.js`).
pub const VERDICT_VISITORS_MIN: i64 = 100;
/// Unique conversions a variation and the baseline need together before a
/// verdict is given (the console's threshold).
pub const VERDICT_CONVERSIONS_MIN: i64 = 10;
/// Two-sided significance level of a verdict (the intervals are 95%).
pub const VERDICT_ALPHA: f64 = 0.05;

pub async fn run(client: &Client, context: &Context, args: ResultsArgs) -> Result<u8, CliError> {
    let (from, to) = resolve_range(client, context, &args).await?;
    let request = ResultsRequest {
        project: args.project,
        experiment: args.experiment,
        from,
        to,
        // Aligned above, where the note on stderr says so.
        alignment: RangeAlignment::Exact,
        breakdown: args.breakdown,
        keys: args.keys,
        baseline: args.baseline,
        weights: args.weights,
    };
    let results = match client.results(&request).await {
        Ok(results) => results,
        Err(error) => return Err(explain_refusal(client, context, &request, error).await),
    };
    check_keys(client, context, &request).await?;
    if context.json {
        context.print_json(&results)?;
    } else {
        print!("{}", render(&results));
    }
    Ok(EXIT_OK)
}

/// The range asked for, in ms and widened to the project's buckets (the
/// node answers only whole buckets); says so on stderr when it moved.
async fn resolve_range(
    client: &Client,
    context: &Context,
    args: &ResultsArgs,
) -> Result<(Option<i64>, Option<i64>), CliError> {
    if args.from.is_none() && args.to.is_none() && args.since.is_none() {
        return Ok((None, None));
    }
    let project = client
        .project(&args.project)
        .await
        .map_err(|error| context.client_error(error))?;
    let from = match args.since {
        // `--since` counts back from the node's clock, not this machine's.
        Some(since_ms) => {
            let status = client
                .status()
                .await
                .map_err(|error| context.client_error(error))?;
            Some(status.now_ms.saturating_sub(since_ms))
        }
        None => args.from,
    };
    let bucket_ms = project.settings.bucket_ms;
    let aligned = align_range(from, args.to, bucket_ms);
    if aligned.changed {
        eprintln!("{}", aligned.notice(bucket_ms));
    }
    Ok((aligned.from, aligned.to))
}

/// A refused query: an unknown breakdown or baseline is a usage error
/// that lists the valid ones; anything else as the node said it.
async fn explain_refusal(
    client: &Client,
    context: &Context,
    request: &ResultsRequest,
    error: ClientError,
) -> CliError {
    match error.code() {
        Some(ErrorCode::UnknownBreakdown) => {
            let known = match client.project(&request.project).await {
                Ok(project) => project.settings.breakdown_attributes,
                Err(_) => return context.client_error(error),
            };
            let asked = request.breakdown.clone().unwrap_or_default();
            usage_error(
                "unknown_breakdown",
                format!("project {} has no breakdown attribute {asked}", request.project),
                "breakdown attributes",
                &known,
            )
            .with_hint(match known.is_empty() {
                true => "the project has no breakdown attributes; add some with `sessiondb-ctl projects configure <project> --breakdown-attributes a,b`".to_string(),
                false => format!("known breakdown attributes: {}", known.join(", ")),
            })
        }
        Some(ErrorCode::UnknownBaseline) => {
            let unfiltered = ResultsRequest {
                baseline: None,
                keys: Vec::new(),
                ..request.clone()
            };
            let Ok(results) = client.results(&unfiltered).await else {
                return context.client_error(error);
            };
            let known = variations_of(&results);
            let asked = request.baseline.clone().unwrap_or_default();
            usage_error(
                "unknown_baseline",
                format!("experiment {} has no variation {asked}", request.experiment),
                "variations",
                &known,
            )
        }
        _ => context.client_error(error),
    }
}

/// A `--key` the experiment never saw is a usage error listing the keys
/// it did see in the range: the node would answer zeros for it.
async fn check_keys(
    client: &Client,
    context: &Context,
    request: &ResultsRequest,
) -> Result<(), CliError> {
    if request.keys.is_empty() {
        return Ok(());
    }
    let every_key = ResultsRequest {
        keys: Vec::new(),
        breakdown: None,
        ..request.clone()
    };
    let known = client
        .results(&every_key)
        .await
        .map_err(|error| context.client_error(error))?
        .keys;
    let unknown: Vec<&String> = request
        .keys
        .iter()
        .filter(|key| !known.contains(key))
        .collect();
    match unknown.first() {
        None => Ok(()),
        Some(key) => Err(usage_error(
            "unknown_key",
            format!(
                "experiment {} has no conversion key {key} in this range",
                request.experiment
            ),
            "conversion keys",
            &known,
        )),
    }
}

/// An unknown name given on the command line: exit 2, with the known ones.
fn usage_error(code: &str, message: String, what: &str, known: &[String]) -> CliError {
    let hint = if known.is_empty() {
        format!("there are no {what} in this range yet")
    } else {
        format!("known {what}: {}", known.join(", "))
    };
    CliError::new(EXIT_USAGE, message)
        .with_code(code)
        .with_hint(hint)
}

/// Every variation of any group, sorted, once each.
fn variations_of(results: &ResultsResponse) -> Vec<String> {
    let mut names: Vec<String> = results
        .groups
        .iter()
        .flat_map(|group| group.variations.iter().map(|v| v.variation.clone()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// What the numbers say about a variation against the baseline for one
/// key (the console's verdicts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ahead,
    Behind,
    NoDifference,
    NotEnoughData,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ahead => "ahead",
            Verdict::Behind => "behind",
            Verdict::NoDifference => "no difference",
            Verdict::NotEnoughData => "not enough data",
        }
    }
}

/// The verdict for `variation` against `baseline` on `key`: not enough
/// data below the minimum sample, else significant at [`VERDICT_ALPHA`]
/// with the interval wholly above (ahead) or below (behind) zero. Rests on
/// the always-valid p-value and confidence sequence when the node gives
/// them (valid however often one looks), else the fixed-horizon ones.
pub fn verdict_of(variation: &VariationResults, baseline: &VariationResults, key: &str) -> Verdict {
    let conversions = |v: &VariationResults| {
        v.metrics
            .iter()
            .find(|metrics| metrics.key == key)
            .map_or(0, |metrics| metrics.unique_conversions)
    };
    let comparison = variation
        .metrics
        .iter()
        .find(|metrics| metrics.key == key)
        .and_then(|metrics| metrics.rate_comparison.as_ref());
    let Some(comparison) = comparison else {
        return Verdict::NotEnoughData;
    };
    if variation.visitors < VERDICT_VISITORS_MIN
        || baseline.visitors < VERDICT_VISITORS_MIN
        || conversions(variation) + conversions(baseline) < VERDICT_CONVERSIONS_MIN
    {
        return Verdict::NotEnoughData;
    }
    let (p_value, low, high) = evidence(comparison);
    let significant = p_value < VERDICT_ALPHA;
    if significant && low > 0.0 {
        Verdict::Ahead
    } else if significant && high < 0.0 {
        Verdict::Behind
    } else {
        Verdict::NoDifference
    }
}

/// (p-value, interval low, interval high) a verdict rests on.
fn evidence(comparison: &Comparison) -> (f64, f64, f64) {
    match (
        comparison.always_valid_p_value,
        comparison.cs_low,
        comparison.cs_high,
    ) {
        (Some(p_value), Some(low), Some(high)) => (p_value, low, high),
        _ => (comparison.p_value, comparison.ci_low, comparison.ci_high),
    }
}

/// The human rendering: a title line, then per breakdown group a table of
/// visitors and sessions and one table per conversion key.
pub fn render(results: &ResultsResponse) -> String {
    let mut out = format!(
        "{} / {}: {} to {}",
        results.project,
        named(&results.experiment, results.experiment_id.as_deref()),
        format_utc(results.from),
        format_utc(results.to)
    );
    if let Some(baseline) = &results.baseline {
        out.push_str(&format!(", baseline {baseline}"));
    }
    out.push('\n');
    if results
        .groups
        .iter()
        .all(|group| group.variations.is_empty())
    {
        out.push_str("\nno visitors in this range\n");
        return out;
    }
    for group in &results.groups {
        out.push('\n');
        if let (Some(attribute), Some(value)) = (&results.breakdown, &group.breakdown_value) {
            out.push_str(&format!("{attribute} = {value}\n"));
        }
        out.push_str(&render_group(results, group));
    }
    out
}

/// A name with the id a compatible format gave it (Optimizely), if any.
fn named(name: &str, id: Option<&str>) -> String {
    match id {
        Some(id) => format!("{name} (id {id})"),
        None => name.to_string(),
    }
}

fn render_group(results: &ResultsResponse, group: &ResultsGroup) -> String {
    let mut visitors = Table::new(&[
        ("VARIATION", Align::Left),
        ("VISITORS", Align::Right),
        ("ACTIVE VISITORS", Align::Right),
        ("SESSIONS", Align::Right),
        ("BOUNCE RATE", Align::Right),
        ("CONFLICTS", Align::Right),
    ]);
    for variation in &group.variations {
        visitors.row(vec![
            named(&variation.variation, variation.variation_id.as_deref()),
            variation.visitors.to_string(),
            format!(
                "{:.0} ± {:.0}",
                variation.active_visitors.value, variation.active_visitors.standard_error
            ),
            variation.sessions.sessions.to_string(),
            format_percent(variation.sessions.bounce_rate),
            variation.conflicts.to_string(),
        ]);
    }
    let mut out = visitors.render();
    if let Some(srm) = &group.srm {
        out.push_str(&render_sample_ratio_mismatch(srm));
    }
    let baseline = results
        .baseline
        .as_deref()
        .and_then(|name| group.variation(name));
    for key in &results.keys {
        out.push_str(&format!("\nkey {key}\n"));
        out.push_str(&key_table(group, baseline, key).render());
    }
    out
}

/// One row per variation for one conversion key: counts, rate, the
/// comparison with the baseline (fixed-horizon and always-valid p-values)
/// and the verdict.
fn key_table(group: &ResultsGroup, baseline: Option<&VariationResults>, key: &str) -> Table {
    let mut table = Table::new(&[
        ("VARIATION", Align::Left),
        ("CONVERTED", Align::Right),
        ("CONVERSIONS", Align::Right),
        ("RATE", Align::Right),
        ("IMPROVEMENT (95% CI)", Align::Left),
        ("P-VALUE", Align::Right),
        ("ALWAYS-VALID P", Align::Right),
        ("VERDICT", Align::Left),
    ]);
    for variation in &group.variations {
        let Some(metrics) = variation.metrics.iter().find(|m| m.key == key) else {
            continue;
        };
        let is_baseline = baseline.is_some_and(|b| b.variation == variation.variation);
        let mut row = vec![
            named(&variation.variation, variation.variation_id.as_deref()),
            metrics.unique_conversions.to_string(),
            metrics.total_conversions.to_string(),
            format_percent(metrics.conversion_rate),
        ];
        match (&metrics.rate_comparison, baseline) {
            (Some(comparison), Some(baseline)) if !is_baseline => row.extend([
                format!(
                    "{} [{}, {}]",
                    format_signed_percent(comparison.relative_improvement),
                    format_signed_percent(comparison.ci_low),
                    format_signed_percent(comparison.ci_high)
                ),
                format_p_value(comparison.p_value),
                comparison
                    .always_valid_p_value
                    .map_or_else(|| "-".to_string(), format_p_value),
                verdict_of(variation, baseline, key).label().to_string(),
            ]),
            _ if is_baseline => row.push("baseline".to_string()),
            _ => row.extend([
                "n/a".to_string(),
                String::new(),
                String::new(),
                Verdict::NotEnoughData.label().to_string(),
            ]),
        }
        table.row(row);
    }
    table
}

/// One line on the split of visitors: a warning when it is broken, since
/// then no comparison below can be trusted.
fn render_sample_ratio_mismatch(srm: &SampleRatioMismatch) -> String {
    let expected: Vec<String> = srm
        .expected_weights
        .iter()
        .map(|(variation, weight)| format!("{variation} {}", format_percent(*weight)))
        .collect();
    let verdict = if srm.flagged {
        "WARNING: SAMPLE RATIO MISMATCH: the split of visitors is broken; do not trust the comparisons"
    } else {
        "sample ratio ok"
    };
    let p_value = format_p_value(srm.p_value);
    let p_value = if p_value.starts_with('<') {
        format!("p {p_value}")
    } else {
        format!("p = {p_value}")
    };
    format!("{verdict} ({p_value}, expected {})\n", expected.join(" / "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Comparison, Estimate, KeyMetrics, SessionMetrics, VariationResults};

    fn variation(
        name: &str,
        visitors: i64,
        converted: i64,
        comparison: Option<Comparison>,
    ) -> VariationResults {
        VariationResults {
            variation: name.into(),
            variation_id: None,
            visitors,
            conflicts: 0,
            active_visitors: Estimate {
                value: visitors as f64,
                standard_error: 2.4,
            },
            sessions: SessionMetrics {
                sessions: visitors + 10,
                bounced_sessions: 0,
                duration_ms_sum: 0,
                pageviews_sum: 0,
                bounce_rate: 0.25,
                duration_ms_mean: 0.0,
                pageviews_per_session: 0.0,
            },
            metrics: vec![KeyMetrics {
                key: "purchase".into(),
                unique_conversions: converted,
                total_conversions: converted + 1,
                value_sum: 0.0,
                value_sum_squares: 0.0,
                conversion_rate: converted as f64 / visitors as f64,
                value_per_visitor: 0.0,
                sessions_with_conversion: converted,
                rate_comparison: comparison,
                value_comparison: None,
            }],
        }
    }

    #[test]
    fn renders_variations_keys_and_comparisons() {
        let results = ResultsResponse {
            project: "shop".into(),
            experiment: "checkout".into(),
            experiment_id: None,
            from: 0,
            to: 3_600_000,
            breakdown: None,
            baseline: Some("a".into()),
            keys: vec!["purchase".into()],
            groups: vec![ResultsGroup {
                breakdown_value: None,
                variations: vec![
                    variation("a", 100, 10, None),
                    variation(
                        "b",
                        100,
                        15,
                        Some(Comparison {
                            relative_improvement: 0.5,
                            ci_low: -0.1,
                            ci_high: 1.1,
                            p_value: 0.2869,
                            p_value_holm: None,
                            always_valid_p_value: None,
                            cs_low: None,
                            cs_high: None,
                        }),
                    ),
                ],
                srm: None,
            }],
            partial: false,
            missing_nodes: Vec::new(),
        };
        let text = render(&results);
        assert!(
            text.starts_with(
                "shop / checkout: 1970-01-01 00:00Z to 1970-01-01 01:00Z, baseline a\n"
            ),
            "{text}"
        );
        let expected = "\
VARIATION  VISITORS  ACTIVE VISITORS  SESSIONS  BOUNCE RATE  CONFLICTS
a               100          100 ± 2       110       25.00%          0
b               100          100 ± 2       110       25.00%          0

key purchase
VARIATION  CONVERTED  CONVERSIONS    RATE  IMPROVEMENT (95% CI)      P-VALUE  ALWAYS-VALID P  VERDICT
a                 10           11  10.00%  baseline
b                 15           16  15.00%  +50.0% [-10.0%, +110.0%]   0.2869               -  no difference
";
        assert!(text.ends_with(expected), "{text}");
    }

    fn comparison(p_value: f64, low: f64, high: f64, always_valid: Option<f64>) -> Comparison {
        Comparison {
            relative_improvement: (low + high) / 2.0,
            ci_low: low,
            ci_high: high,
            p_value,
            p_value_holm: None,
            always_valid_p_value: always_valid,
            cs_low: always_valid.map(|_| low - 0.1),
            cs_high: always_valid.map(|_| high + 0.1),
        }
    }

    #[test]
    fn verdicts_follow_the_console() {
        let baseline = variation("a", 1_000, 50, None);
        let verdict = |visitors: i64, converted: i64, c: Comparison| {
            verdict_of(
                &variation("b", visitors, converted, Some(c)),
                &baseline,
                "purchase",
            )
        };
        assert_eq!(
            verdict(1_000, 90, comparison(0.000_01, 0.3, 1.2, Some(0.001))),
            Verdict::Ahead
        );
        assert_eq!(
            verdict(1_000, 10, comparison(0.000_01, -0.9, -0.3, Some(0.001))),
            Verdict::Behind
        );
        // Significant at a fixed horizon, not always-valid: the always-valid
        // numbers win.
        assert_eq!(
            verdict(1_000, 70, comparison(0.01, 0.1, 0.7, Some(0.2))),
            Verdict::NoDifference
        );
        // Without always-valid numbers the fixed-horizon ones decide.
        assert_eq!(
            verdict(1_000, 90, comparison(0.000_01, 0.3, 1.2, None)),
            Verdict::Ahead
        );
        // Below the minimum sample, whatever the test says.
        assert_eq!(
            verdict(99, 90, comparison(0.000_01, 0.3, 1.2, Some(0.001))),
            Verdict::NotEnoughData
        );
        let few = variation("a", 1_000, 2, None);
        assert_eq!(
            verdict_of(
                &variation("b", 1_000, 7, Some(comparison(0.01, 0.1, 0.7, Some(0.01)))),
                &few,
                "purchase"
            ),
            Verdict::NotEnoughData
        );
    }

    #[test]
    fn ids_are_shown_beside_the_names() {
        let mut aliased = variation("control", 10, 1, None);
        aliased.variation_id = Some("70011".into());
        let results = ResultsResponse {
            project: "shop".into(),
            experiment: "checkout_flow".into(),
            experiment_id: Some("70001".into()),
            from: 0,
            to: 3_600_000,
            breakdown: None,
            baseline: Some("control".into()),
            keys: vec![],
            groups: vec![ResultsGroup {
                breakdown_value: None,
                variations: vec![aliased],
                srm: None,
            }],
            partial: false,
            missing_nodes: Vec::new(),
        };
        let text = render(&results);
        assert!(
            text.starts_with("shop / checkout_flow (id 70001): "),
            "{text}"
        );
        assert!(text.contains("\ncontrol (id 70011) "), "{text}");
    }

    #[test]
    fn a_broken_split_is_shouted() {
        let srm = |p_value: f64, flagged: bool| SampleRatioMismatch {
            p_value,
            expected_weights: [("a".to_string(), 0.5), ("b".to_string(), 0.5)].into(),
            flagged,
            weights_source: Default::default(),
        };
        assert_eq!(
            render_sample_ratio_mismatch(&srm(0.000_002_4, true)),
            "WARNING: SAMPLE RATIO MISMATCH: the split of visitors is broken; do not trust \
             the comparisons (p <0.0001, expected a 50.00% / b 50.00%)\n"
        );
        assert_eq!(
            render_sample_ratio_mismatch(&srm(0.53, false)),
            "sample ratio ok (p = 0.5300, expected a 50.00% / b 50.00%)\n"
        );
    }
}
