//! The command line, as clap types. Doc comments are the help text.

use super::time::{parse_duration_ms, parse_time_ms};
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// The node `--node` defaults to.
pub const NODE_DEFAULT: &str = "http://127.0.0.1:7070";

/// The heading the flags every command takes are listed under.
const GLOBAL_HEADING: &str = "Global options";

const EXIT_CODES_HELP: &str = "\
Examples:
  sessiondb-ctl --node 127.0.0.1:7070 ping
  export SESSIONDB_ADMIN_TOKEN=...
  sessiondb-ctl projects create shop
  sessiondb-ctl import events.ndjson --ingest-key \"$KEY\"
  sessiondb-ctl results shop checkout --since 7d

Exit codes:
  0  ok
  1  the command failed (the node said no, e.g. unknown project)
  2  usage error
  3  the node is unreachable (or import events could not be delivered)
  4  input problem: the import file cannot be read, or lines were rejected
With --json, errors too are one JSON document on stdout:
  {\"error\": {\"code\": ..., \"message\": ..., \"hint\": ...}}";

/// Operate a SessionDB node: projects, imports, experiment results.
#[derive(Debug, Parser)]
#[command(name = "sessiondb-ctl", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// The node: a base URL (http://host:port, https://host:port), or
    /// host:port for plain HTTP.
    #[arg(long, global = true, env = "SESSIONDB_NODE", default_value = NODE_DEFAULT,
          help_heading = GLOBAL_HEADING)]
    pub node: String,

    /// PEM file of the CA that signed the node's certificate, for an
    /// `https://` --node (the node's `--tls-ca`).
    #[arg(long, global = true, env = "SESSIONDB_CA_FILE", value_name = "PATH",
          help_heading = GLOBAL_HEADING)]
    pub ca_file: Option<PathBuf>,

    /// Print one JSON document on stdout instead of tables (errors too).
    #[arg(long, global = true, help_heading = GLOBAL_HEADING)]
    pub json: bool,

    /// Say more: the cause chain of an error, the settings of a created
    /// project.
    #[arg(short, long, global = true, action = ArgAction::Count,
          help_heading = GLOBAL_HEADING)]
    pub verbose: u8,

    /// The node's admin token: projects, results, status, cluster and
    /// shards commands, rotations (docs/security.md).
    #[arg(
        long,
        global = true,
        env = "SESSIONDB_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = GLOBAL_HEADING
    )]
    pub admin_token: Option<String>,

    /// A project's ingest key: enough for `import` into that project (used
    /// there instead of the admin token when both are given).
    #[arg(
        long,
        global = true,
        env = "SESSIONDB_INGEST_KEY",
        hide_env_values = true,
        value_name = "KEY",
        help_heading = GLOBAL_HEADING
    )]
    pub ingest_key: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that the node answers.
    #[command(
        after_help = "Examples:\n  sessiondb-ctl ping\n  sessiondb-ctl --node 10.0.0.5:7070 --json ping"
    )]
    Ping,
    /// Show the node's status and counters.
    #[command(after_help = "Examples:\n  sessiondb-ctl status\n  sessiondb-ctl --json status")]
    Status,
    /// Create, list, show and configure projects.
    #[command(subcommand, after_help = PROJECTS_EXAMPLES)]
    Projects(ProjectsCommand),
    /// Import native events from an NDJSON file, one event per line.
    #[command(after_help = IMPORT_EXAMPLES)]
    Import(ImportArgs),
    /// Show an experiment's results per variation.
    #[command(after_help = RESULTS_EXAMPLES)]
    Results(ResultsArgs),
    /// Show, set or clear an experiment's stored allocation weights (what
    /// the sample ratio mismatch check expects when a query gives none).
    Weights(super::weights::WeightsArgs),
    /// Inspect the cluster.
    #[command(subcommand, after_help = "Examples:\n  sessiondb-ctl cluster status")]
    Cluster(ClusterCommand),
    /// List, move and rebalance shards (any member forwards moves and
    /// rebalances to the leader).
    #[command(subcommand, after_help = SHARDS_EXAMPLES)]
    Shards(ShardsCommand),
    /// List, drain and remove nodes.
    #[command(subcommand, after_help = NODES_EXAMPLES)]
    Nodes(NodesCommand),
    /// Rotate this node's admin token.
    #[command(subcommand, after_help = ADMIN_TOKEN_EXAMPLES)]
    AdminToken(AdminTokenCommand),
}

const PROJECTS_EXAMPLES: &str = "\
Examples:
  KEY=$(sessiondb-ctl projects create shop --breakdown-attributes browser,country)
  sessiondb-ctl projects list
  sessiondb-ctl projects show shop
  sessiondb-ctl projects configure shop --time-zone Europe/Paris --midnight-split true
  sessiondb-ctl projects rotate-key shop --grace-ms 3600000";

const IMPORT_EXAMPLES: &str = "\
Examples:
  sessiondb-ctl import events.ndjson --ingest-key \"$KEY\"
  sessiondb-ctl import events.ndjson --rejections-file rejected.ndjson --batch-events 5000
  sessiondb-ctl --json import events.ndjson";

const RESULTS_EXAMPLES: &str = "\
Examples:
  sessiondb-ctl results shop checkout --since 7d
  sessiondb-ctl results shop checkout --from 2026-12-01 --to 2026-12-04T12:00Z --key purchase
  sessiondb-ctl results shop checkout --breakdown browser --baseline control
  sessiondb-ctl results shop checkout --weights control:1,treatment:3 --json";

const SHARDS_EXAMPLES: &str = "\
Examples:
  sessiondb-ctl shards list
  sessiondb-ctl shards move 12 --to 3
  sessiondb-ctl shards rebalance";

const NODES_EXAMPLES: &str = "\
Examples:
  sessiondb-ctl nodes list
  sessiondb-ctl nodes drain 3
  sessiondb-ctl nodes remove 3";

const ADMIN_TOKEN_EXAMPLES: &str = "\
Examples:
  sessiondb-ctl admin-token rotate
  sessiondb-ctl admin-token rotate --grace-ms 0";

#[derive(Debug, Subcommand)]
pub enum AdminTokenCommand {
    /// Issue a new admin token for the node (printed once; only its hash is
    /// kept). The old token keeps working for the grace period.
    #[command(after_help = ADMIN_TOKEN_EXAMPLES)]
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
    #[command(
        after_help = "Examples:\n  sessiondb-ctl nodes list\n  sessiondb-ctl --json nodes list"
    )]
    List,
    /// Move every shard of a member to the others (and give it no new
    /// ones); prints progress and returns when it owns none.
    #[command(after_help = "Examples:\n  sessiondb-ctl nodes drain 3")]
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
    #[command(
        after_help = "Examples:\n  sessiondb-ctl nodes drain 3 && sessiondb-ctl nodes remove 3"
    )]
    Remove {
        /// The member's node id.
        node_id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ShardsCommand {
    /// Every shard with its owner, epoch and the move in progress, if any.
    #[command(
        after_help = "Examples:\n  sessiondb-ctl shards list\n  sessiondb-ctl --json shards list"
    )]
    List,
    /// Hand one shard to another member; answers once the move is done.
    /// Any member forwards it to the leader.
    #[command(after_help = "Examples:\n  sessiondb-ctl shards move 12 --to 3")]
    Move {
        /// The shard's number.
        shard: u32,
        /// The member to hand it to.
        #[arg(long)]
        to: u64,
    },
    /// Even out shard counts over the members (not draining): plan the
    /// moves and carry them out, a few at a time.
    #[command(
        after_help = "Examples:\n  sessiondb-ctl shards rebalance\n  sessiondb-ctl --json shards rebalance"
    )]
    Rebalance,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members and their roles, the leader, the term and the shard counts
    /// per owner, as the node sees them.
    #[command(
        after_help = "Examples:\n  sessiondb-ctl cluster status\n  sessiondb-ctl --json cluster status"
    )]
    Status,
}

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Create a project; unset settings take their defaults. Prints the
    /// project's ingest key, once, alone on stdout (`-v`: its settings too).
    #[command(
        after_help = "Examples:\n  KEY=$(sessiondb-ctl projects create shop)\n  sessiondb-ctl projects create shop --session-gap-ms 600000 --breakdown-attributes browser,country -v"
    )]
    Create {
        /// Project name: 1–64 bytes of a-z, 0-9, `_` and `-`.
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// List every project.
    #[command(
        after_help = "Examples:\n  sessiondb-ctl projects list\n  sessiondb-ctl --json projects list"
    )]
    List,
    /// Show one project's settings and experiments.
    #[command(after_help = "Examples:\n  sessiondb-ctl projects show shop")]
    Show {
        /// Project name.
        name: String,
    },
    /// Change some settings of a project (bucket_ms and hll_precision are
    /// fixed at creation).
    #[command(
        after_help = "Examples:\n  sessiondb-ctl projects configure shop --time-zone Europe/Paris --midnight-split true"
    )]
    Configure {
        /// Project name.
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Issue a new ingest key for a project (printed once; only its hash is
    /// kept). The old key keeps working for the grace period.
    #[command(
        after_help = "Examples:\n  sessiondb-ctl projects rotate-key shop\n  sessiondb-ctl projects rotate-key shop --grace-ms 0"
    )]
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
    /// Range start: a date (2026-12-04), a date and time (2026-12-04T10:00,
    /// UTC unless it ends in Z or an offset such as +02:00) or ms since the
    /// epoch; widened down to the start of its bucket. Default: the first
    /// bucket with data.
    #[arg(long, value_name = "TIME", value_parser = parse_time_ms, conflicts_with = "since")]
    pub from: Option<i64>,
    /// Range end (exclusive), written like --from; widened up to the end of
    /// its bucket. Default: the end of the current bucket.
    #[arg(long, value_name = "TIME", value_parser = parse_time_ms)]
    pub to: Option<i64>,
    /// Range start as a duration before the node's clock: 30m, 24h, 7d
    /// (units ms, s, m, h, d, w); widened down to the start of its bucket.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub since: Option<i64>,
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
