//! `results <project> <experiment>`: an experiment's results as tables.

use super::args::ResultsArgs;
use super::table::{format_percent, format_signed_percent, format_utc, Align, Table};
use super::{CliError, Context, EXIT_OK};
use crate::protocol::{ResultsGroup, ResultsResponse, SampleRatioMismatch};
use crate::{Client, RangeAlignment, ResultsRequest};

pub async fn run(client: &Client, context: &Context, args: ResultsArgs) -> Result<u8, CliError> {
    let request = ResultsRequest {
        project: args.project,
        experiment: args.experiment,
        from: args.from,
        to: args.to,
        alignment: RangeAlignment::Outward,
        breakdown: args.breakdown,
        keys: args.keys,
        baseline: args.baseline,
        weights: args.weights,
    };
    let results = client
        .results(&request)
        .await
        .map_err(|error| CliError::from_client(&context.node, error))?;
    if context.json {
        context.print_json(&results)?;
    } else {
        print!("{}", render(&results));
    }
    Ok(EXIT_OK)
}

/// The human rendering: a title line, then per breakdown group a table of
/// visitors and sessions and one table per conversion key.
pub fn render(results: &ResultsResponse) -> String {
    let mut out = format!(
        "{} / {}: {} to {}",
        results.project,
        results.experiment,
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
            variation.variation.clone(),
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
    for key in &results.keys {
        let mut table = Table::new(&[
            ("VARIATION", Align::Left),
            ("CONVERTED", Align::Right),
            ("CONVERSIONS", Align::Right),
            ("RATE", Align::Right),
            ("IMPROVEMENT (95% CI)", Align::Left),
            ("P-VALUE", Align::Right),
        ]);
        for variation in &group.variations {
            let Some(metrics) = variation.metrics.iter().find(|m| &m.key == key) else {
                continue;
            };
            let is_baseline = results.baseline.as_deref() == Some(variation.variation.as_str());
            let (improvement, p_value) = match &metrics.rate_comparison {
                Some(comparison) => (
                    format!(
                        "{} [{}, {}]",
                        format_signed_percent(comparison.relative_improvement),
                        format_signed_percent(comparison.ci_low),
                        format_signed_percent(comparison.ci_high)
                    ),
                    format!("{:.4}", comparison.p_value),
                ),
                None if is_baseline => ("baseline".to_string(), String::new()),
                None => ("n/a".to_string(), String::new()),
            };
            table.row(vec![
                variation.variation.clone(),
                metrics.unique_conversions.to_string(),
                metrics.total_conversions.to_string(),
                format_percent(metrics.conversion_rate),
                improvement,
                p_value,
            ]);
        }
        out.push_str(&format!("\nkey {key}\n"));
        out.push_str(&table.render());
    }
    out
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
        "SAMPLE RATIO MISMATCH: the split of visitors is broken; do not trust the comparisons"
    } else {
        "sample ratio ok"
    };
    format!(
        "{verdict} (p = {:.4}, expected {})\n",
        srm.p_value,
        expected.join(" / ")
    )
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
VARIATION  CONVERTED  CONVERSIONS    RATE  IMPROVEMENT (95% CI)      P-VALUE
a                 10           11  10.00%  baseline
b                 15           16  15.00%  +50.0% [-10.0%, +110.0%]   0.2869
";
        assert!(text.ends_with(expected), "{text}");
    }

    #[test]
    fn a_broken_split_is_shouted() {
        let srm = |p_value: f64, flagged: bool| SampleRatioMismatch {
            p_value,
            expected_weights: [("a".to_string(), 0.5), ("b".to_string(), 0.5)].into(),
            flagged,
        };
        assert_eq!(
            render_sample_ratio_mismatch(&srm(0.000_002_4, true)),
            "SAMPLE RATIO MISMATCH: the split of visitors is broken; do not trust the \
             comparisons (p = 0.0000, expected a 50.00% / b 50.00%)\n"
        );
        assert_eq!(
            render_sample_ratio_mismatch(&srm(0.53, false)),
            "sample ratio ok (p = 0.5300, expected a 50.00% / b 50.00%)\n"
        );
    }
}
