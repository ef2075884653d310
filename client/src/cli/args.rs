//! The command line, as clap types. Doc comments are the help text.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// The node `--node` defaults to.
pub const NODE_DEFAULT: &str = "http://127.0.0.1:7070";

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  ok
  1  the command failed (the node said no, e.g. unknown project)
  2  usage error
  3  the node is unreachable (or import events could not be delivered)
  4  input problem: the import file cannot be read, or lines were rejected";

/// Operate a SessionDB node: projects, imports, experiment results.
#[derive(Debug, Parser)]
#[command(name = "sessiondb-ctl", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// The node: a base URL (http://host:port, https://host:port), or
    /// host:port for plain HTTP.
    #[arg(long, global = true, env = "SESSIONDB_NODE", default_value = NODE_DEFAULT)]
    pub node: String,

    /// PEM file of the CA that signed the node's certificate, for an
    /// `https://` --node (the node's `--tls-ca`).
    #[arg(long, global = true, env = "SESSIONDB_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// Print one JSON document on stdout instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// The node's admin token: projects, results, status, cluster and
    /// shards commands, rotations (docs/security.md).
    #[arg(
        long,
        global = true,
        env = "SESSIONDB_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// A project's ingest key: enough for `import` into that project (used
    /// there instead of the admin token when both are given).
    #[arg(
        long,
        global = true,
        env = "SESSIONDB_INGEST_KEY",
        hide_env_values = true
    )]
    pub ingest_key: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that the node answers.
    Ping,
    /// Show the node's status and counters.
    Status,
    /// Create, list, show and configure projects.
    #[command(subcommand)]
    Projects(ProjectsCommand),
    /// Import native events from an NDJSON file, one event per line.
    Import(ImportArgs),
    /// Show an experiment's results per variation.
    Results(ResultsArgs),
    /// Inspect the cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// List, move and rebalance shards (any member forwards moves and
    /// rebalances to the leader).
    #[command(subcommand)]
    Shards(ShardsCommand),
    /// List, drain and remove nodes.
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// Rotate this node's admin token.
    #[command(subcommand)]
    AdminToken(AdminTokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum AdminTokenCommand {
    /// Issue a new admin token for the node (printed once; only its hash is
    /// kept). The old token keeps working for the grace period.
    Rotate(RotateArgs),
}

/// How long the old key stays valid after a rotation.
#[derive(Debug, Clone, Default, Args)]
pub struct RotateArgs {
    /// Grace period in ms during which the old key still works; default:
    /// the node's --key-rotation-grace-ms (24 h unless configured). 0 ends
    /// the old key at once.
    #[arg(long, value_name = "MS")]
    pub grace_ms: Option<i64>,
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// Every member with its role, whether it is draining, and its shards.
    List,
    /// Move every shard of a member to the others (and give it no new
    /// ones); prints progress and returns when it owns none.
    Drain {
        /// The member's node id.
        node_id: u64,
    },
    /// Stop draining a member (after a drain that failed, or by mistake):
    /// it may receive shards again from the next rebalance.
    Undrain {
        /// The member's node id.
        node_id: u64,
    },
    /// Take a drained member out of the cluster; its aggregates are handed
    /// to a remaining member first. Stop the node afterwards.
    Remove {
        /// The member's node id.
        node_id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ShardsCommand {
    /// Every shard with its owner, epoch and the move in progress, if any.
    List,
    /// Hand one shard to another member; answers once the move is done.
    /// Any member forwards it to the leader.
    Move {
        /// The shard's number.
        shard: u32,
        /// The member to hand it to.
        #[arg(long)]
        to: u64,
    },
    /// Even out shard counts over the members (not draining): plan the
    /// moves and carry them out, a few at a time.
    Rebalance,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members and their roles, the leader, the term and the shard counts
    /// per owner, as the node sees them.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Create a project; unset settings take their defaults.
    Create {
        /// Project name: 1–64 bytes of a-z, 0-9, `_` and `-`.
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// List every project.
    List,
    /// Show one project's settings and experiments.
    Show {
        /// Project name.
        name: String,
    },
    /// Change some settings of a project (bucket_ms and hll_precision are
    /// fixed at creation).
    Configure {
        /// Project name.
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Issue a new ingest key for a project (printed once; only its hash is
    /// kept). The old key keeps working for the grace period.
    RotateKey {
        /// Project name.
        name: String,
        #[command(flatten)]
        rotate: RotateArgs,
    },
}

/// Project settings (`docs/api.md` lists defaults and ranges).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Settings")]
pub struct SettingsArgs {
    /// Inactivity that ends a session, in ms.
    #[arg(long, value_name = "MS")]
    pub session_gap_ms: Option<i64>,
    /// Longest session, in ms.
    #[arg(long, value_name = "MS")]
    pub session_max_ms: Option<i64>,
    /// Split sessions at midnight in the project's time zone.
    #[arg(long, value_name = "BOOL")]
    pub midnight_split: Option<bool>,
    /// IANA time zone name, e.g. Europe/Paris.
    #[arg(long, value_name = "ZONE")]
    pub time_zone: Option<String>,
    /// How late an event may arrive, in ms.
    #[arg(long, value_name = "MS")]
    pub allowed_lateness_ms: Option<i64>,
    /// How far in the future an event may be, in ms.
    #[arg(long, value_name = "MS")]
    pub future_skew_ms: Option<i64>,
    /// Aggregation bucket, in ms (fixed at creation).
    #[arg(long, value_name = "MS")]
    pub bucket_ms: Option<i64>,
    /// HyperLogLog precision, 4–18 (fixed at creation).
    #[arg(long, value_name = "BITS")]
    pub hll_precision: Option<u8>,
    /// How long aggregates are kept, in ms.
    #[arg(long, value_name = "MS")]
    pub retention_ms: Option<i64>,
    /// Attributes results can be broken down by, comma-separated.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub breakdown_attributes: Option<Vec<String>>,
}

/// Wire encoding of import batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EncodingArg {
    /// Compact binary batches (`docs/api.md`, "Binary batches").
    Binary,
    /// JSON batches.
    Json,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The NDJSON file: one event per line, as in `POST /v1/events`.
    pub file: PathBuf,

    /// Events per batch (1–10000).
    #[arg(long, value_name = "N", default_value_t = 1_000,
          value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub batch_events: u16,

    /// Where to write rejected lines, as NDJSON `{line, id, reason,
    /// message}`. Default: FILE.rejections.ndjson, written only if a line
    /// was rejected.
    #[arg(long, value_name = "PATH")]
    pub rejections_file: Option<PathBuf>,

    /// Wire encoding of the batches.
    #[arg(long, value_enum, default_value = "binary")]
    pub encoding: EncodingArg,
}

#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// Project name.
    pub project: String,
    /// Experiment name.
    pub experiment: String,
    /// Range start, ms since the epoch, a multiple of the project's
    /// bucket_ms. Default: the first bucket with data.
    #[arg(long, value_name = "MS")]
    pub from: Option<i64>,
    /// Range end (exclusive), ms since the epoch, a multiple of bucket_ms.
    /// Default: the end of the current bucket.
    #[arg(long, value_name = "MS")]
    pub to: Option<i64>,
    /// Break results down by this attribute (one of the project's
    /// breakdown_attributes).
    #[arg(long, value_name = "ATTRIBUTE")]
    pub breakdown: Option<String>,
    /// A conversion key to show; repeat for several. Default: every key seen.
    #[arg(long = "key", value_name = "KEY")]
    pub keys: Vec<String>,
    /// The variation the others are compared with. Default: the first by
    /// name.
    #[arg(long, value_name = "VARIATION")]
    pub baseline: Option<String>,
    /// The allocation the experiment was set up with, for the sample ratio
    /// mismatch check: `variation:weight,…` naming every variation, e.g.
    /// `control:1,treatment:1`. Default: equal.
    #[arg(long, value_name = "VARIATION:WEIGHT,…")]
    pub weights: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn repeated_keys_and_global_flags_parse() {
        let cli = Cli::try_parse_from([
            "sessiondb-ctl",
            "results",
            "shop",
            "checkout",
            "--key",
            "purchase",
            "--key",
            "signup",
            "--json",
            "--node",
            "http://10.0.0.1:7070",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.node, "http://10.0.0.1:7070");
        let Command::Results(args) = cli.command else {
            panic!("expected results");
        };
        assert_eq!(args.keys, ["purchase", "signup"]);
    }

    #[test]
    fn batch_size_is_bounded() {
        let parse = |n: &str| {
            Cli::try_parse_from(["sessiondb-ctl", "import", "f.ndjson", "--batch-events", n])
        };
        assert!(parse("10000").is_ok());
        assert!(parse("10001").is_err());
        assert!(parse("0").is_err());
    }
}
