//! `weights PROJECT EXPERIMENT [--set a=2,b=1 | --clear]`: an experiment's
//! stored allocation weights, which the sample ratio mismatch check expects
//! when a results query gives none.

use super::{CliError, Context, EXIT_OK, EXIT_USAGE};
use crate::protocol::ExperimentWeights;
use crate::Client;
use clap::Args;
use std::collections::BTreeMap;

#[derive(Debug, Args)]
pub struct WeightsArgs {
    pub project: String,
    pub experiment: String,
    /// Store these weights: `variation=weight,…`, every variation of the
    /// experiment, any positive scale (`control=1,treatment=1` is 50/50).
    #[arg(long, value_name = "VARIATION=WEIGHT,…", conflicts_with = "clear")]
    pub set: Option<String>,
    /// Forget the stored weights: the check assumes equal shares again.
    #[arg(long)]
    pub clear: bool,
}

pub async fn run(client: &Client, context: &Context, args: WeightsArgs) -> Result<u8, CliError> {
    let (project, experiment) = (&args.project, &args.experiment);
    let answer = match (&args.set, args.clear) {
        (Some(text), _) => {
            let weights = parse_weights(text)?;
            client
                .set_experiment_weights(project, experiment, Some(weights))
                .await
        }
        (None, true) => {
            client
                .set_experiment_weights(project, experiment, None)
                .await
        }
        (None, false) => client.experiment_weights(project, experiment).await,
    }
    .map_err(|error| context.client_error(error))?;
    if context.json {
        context.print_json(&answer)?;
    } else {
        print!("{}", render(&answer));
    }
    Ok(EXIT_OK)
}

/// Reads `variation=weight,…`; the node checks the names and the range.
fn parse_weights(text: &str) -> Result<BTreeMap<String, f64>, CliError> {
    let usage = |reason: String| {
        CliError::new(
            EXIT_USAGE,
            format!("--set {reason}; expected `variation=weight,…`, e.g. `control=1,treatment=1`"),
        )
    };
    let mut weights = BTreeMap::new();
    for entry in text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let (variation, weight) = entry
            .rsplit_once('=')
            .ok_or_else(|| usage(format!("`{entry}` has no `=weight`")))?;
        let weight: f64 = weight
            .trim()
            .parse()
            .map_err(|_| usage(format!("`{weight}` is not a number")))?;
        if weights
            .insert(variation.trim().to_string(), weight)
            .is_some()
        {
            return Err(usage(format!("`{variation}` is given twice")));
        }
    }
    Ok(weights)
}

fn render(answer: &ExperimentWeights) -> String {
    let name = format!("{} / {}", answer.project, answer.experiment);
    let Some(weights) = &answer.weights else {
        return format!("{name}: no stored weights (the check expects equal shares)\n");
    };
    let total: f64 = weights.values().sum();
    let shares: Vec<String> = weights
        .iter()
        .map(|(variation, weight)| format!("{variation} {weight} ({:.2}%)", 100.0 * weight / total))
        .collect();
    format!("{name}: {}\n", shares.join(" / "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_read_as_variation_equals_weight() {
        let weights = parse_weights("a=2, b=1").unwrap();
        assert_eq!(
            weights,
            BTreeMap::from([("a".into(), 2.0), ("b".into(), 1.0)])
        );
        assert!(parse_weights("a:2").is_err());
        assert!(parse_weights("a=x").is_err());
        assert!(parse_weights("a=1,a=2").is_err());
    }

    #[test]
    fn stored_weights_are_shown_with_their_shares() {
        let answer = ExperimentWeights {
            project: "shop".into(),
            experiment: "checkout".into(),
            weights: Some(BTreeMap::from([("a".into(), 2.0), ("b".into(), 1.0)])),
        };
        assert_eq!(
            render(&answer),
            "shop / checkout: a 2 (66.67%) / b 1 (33.33%)\n"
        );
        let none = ExperimentWeights {
            weights: None,
            ..answer
        };
        assert!(render(&none).contains("no stored weights"));
    }
}
