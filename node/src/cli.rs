//! Command line and configuration file of the `sessiondb` binary.
//!
//! Exit codes: 0 success; 1 the node failed at run time (the message says
//! why); 2 bad usage or configuration (clap's convention).

use crate::admin_token::{
    self, AdminToken, AdminTokenOpened, AdminTokenSource, AdminTokens, ClusterSecret, SecretKind,
    ADMIN_TOKEN_KIND,
};
use crate::clock::{ManualClock, SharedClock, SystemClock};
use crate::cluster_startup::{self, ClusterStartup};
use crate::engine::EngineConfig;
use crate::placement::{Placement, PlacementHandle, PlacementNetwork, RaftConfig};
use crate::server::{self, Secrets, ServerConfig};
use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Deserialize;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Exit code for run-time failures.
pub const EXIT_RUNTIME_ERROR: u8 = 1;
/// Exit code for bad usage or configuration.
pub const EXIT_USAGE: u8 = 2;

/// SessionDB: a clustered, in-memory counting database for experiments.
#[derive(Debug, Parser)]
#[command(name = "sessiondb", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node. With no options: a single-node cluster on
    /// 127.0.0.1:7070 with data under ./data.
    Serve(ServeArgs),
}

#[derive(Debug, Clone, Parser)]
pub struct ServeArgs {
    /// TOML configuration file; flags given on the command line win.
    #[arg(long, env = "SESSIONDB_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to serve HTTP on; port 0 picks a free port.
    #[arg(long, env = "SESSIONDB_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the node's data.
    #[arg(long, env = "SESSIONDB_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Virtual shards (fixed when the cluster is created).
    #[arg(long)]
    pub shards: Option<u32>,
    /// Segment actors holding the aggregates.
    #[arg(long)]
    pub segment_actors: Option<usize>,
    /// This node's id in the cluster.
    #[arg(long)]
    pub node_id: Option<u64>,
    /// Threads serving HTTP.
    #[arg(long)]
    pub http_workers: Option<usize>,
    /// Run on a manual clock starting at this time (ms since the epoch),
    /// settable with POST /v1/admin/clock. For tests.
    #[arg(long)]
    pub manual_clock: Option<i64>,
    /// Feed a synthetic experiment (project `demo`) to watch results move.
    #[arg(long)]
    pub demo: bool,
    /// Testing only: make the log's fsync fail after this many successful
    /// ones, to exercise the disk-error path (docs/durability.md).
    #[arg(long, hide = true)]
    pub fault_log_sync_after: Option<u64>,
    /// Testing only: make every fsync of the log wait this long first, a
    /// slow disk for the chaos tests (docs/reliability.md).
    #[arg(long, hide = true)]
    pub fault_log_sync_delay_ms: Option<u64>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Admin token for projects, queries, the console, /metrics and
    /// /v1/admin/* (16–256 visible ASCII characters). Without one, the node
    /// generates a token at its first start and prints it once; it keeps
    /// only the token's hash, in <data-dir>/admin-token.
    #[arg(long, env = "SESSIONDB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// How long an ingest key or admin token stays valid after a rotation
    /// replaced it, unless the rotation says otherwise (default 24 h).
    #[arg(long, env = "SESSIONDB_KEY_ROTATION_GRACE_MS")]
    pub key_rotation_grace_ms: Option<i64>,
    /// Secret every node of the cluster shares, sent on node-to-node calls
    /// (16–256 visible ASCII characters). Without one, the node generates
    /// one at its first start and keeps it in <data-dir>/cluster-secret;
    /// give the other nodes the same secret.
    #[arg(long, env = "SESSIONDB_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Join the cluster of the node at this URL (http://host:port) instead
    /// of bootstrapping a new one. Ignored once the node is a member.
    #[arg(long, env = "SESSIONDB_JOIN")]
    pub join: Option<String>,
    /// The address (host:port) other nodes reach this node at. Default: the
    /// listen address, with the bound port when listening on port 0.
    #[arg(long, env = "SESSIONDB_ADVERTISE")]
    pub advertise: Option<String>,
    /// Joining nodes become voters while the cluster has fewer voters than
    /// this; the rest stay learners. Read by the leader.
    #[arg(long)]
    pub voters_max: Option<usize>,
    /// Testing only: the placement Raft election timeout (the heartbeat is a
    /// fifth of it), so multi-node tests fail over fast.
    #[arg(long, hide = true)]
    pub raft_election_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The configuration file: every field optional, same names as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub shards: Option<u32>,
    pub segment_actors: Option<usize>,
    pub node_id: Option<u64>,
    pub http_workers: Option<usize>,
    pub admin_token: Option<String>,
    pub key_rotation_grace_ms: Option<i64>,
    pub cluster_secret: Option<String>,
    pub join: Option<String>,
    pub advertise: Option<String>,
    pub voters_max: Option<usize>,
}

/// Default of `--voters-max`.
pub const VOTERS_MAX_DEFAULT: usize = 3;

/// Flags over file over defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub engine: EngineConfig,
    pub server: ServerConfig,
    /// The configured admin token; `None`: use or create the token file.
    pub admin_token: Option<AdminToken>,
    /// Default grace period of key and token rotations.
    pub key_rotation_grace_ms: i64,
    /// The configured cluster secret; `None`: use or create its file.
    pub cluster_secret: Option<ClusterSecret>,
    /// `--join`, as a base URL.
    pub join: Option<String>,
    /// `--advertise`; `None`: the bound listen address.
    pub advertise: Option<String>,
    pub voters_max: usize,
    pub raft: RaftConfig,
}

impl NodeConfig {
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<NodeConfig> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read configuration file {}", path.display())
                })?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("invalid configuration file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let admin_token = args
            .admin_token
            .clone()
            .or(file.admin_token)
            .map(|text| AdminToken::parse(&text))
            .transpose()
            .context("invalid --admin-token / SESSIONDB_ADMIN_TOKEN / admin_token")?;
        let key_rotation_grace_ms = args
            .key_rotation_grace_ms
            .or(file.key_rotation_grace_ms)
            .map(crate::keys::check_grace_ms)
            .transpose()
            .context("invalid --key-rotation-grace-ms / key_rotation_grace_ms")?
            .unwrap_or(crate::keys::KEY_ROTATION_GRACE_MS_DEFAULT);
        let cluster_secret = args
            .cluster_secret
            .clone()
            .or(file.cluster_secret)
            .map(|text| ClusterSecret::parse(&text))
            .transpose()
            .context("invalid --cluster-secret / SESSIONDB_CLUSTER_SECRET / cluster_secret")?;
        let voters_max = args
            .voters_max
            .or(file.voters_max)
            .unwrap_or(VOTERS_MAX_DEFAULT);
        if voters_max == 0 {
            anyhow::bail!("--voters-max must be at least 1");
        }
        let raft = match args.raft_election_timeout_ms {
            Some(timeout_ms) => RaftConfig::with_election_timeout_ms(timeout_ms),
            None => RaftConfig::default(),
        };
        raft.to_openraft()
            .context("invalid --raft-election-timeout-ms")?;
        let engine_defaults = EngineConfig::default();
        let server_defaults = ServerConfig::default();
        Ok(NodeConfig {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:7070".parse().expect("valid")),
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("data")),
            engine: EngineConfig {
                shards: args
                    .shards
                    .or(file.shards)
                    .unwrap_or(engine_defaults.shards),
                segment_actors: args
                    .segment_actors
                    .or(file.segment_actors)
                    .unwrap_or(engine_defaults.segment_actors),
                ..engine_defaults
            },
            server: ServerConfig {
                node_id: args
                    .node_id
                    .or(file.node_id)
                    .unwrap_or(server_defaults.node_id),
                http_workers: args
                    .http_workers
                    .or(file.http_workers)
                    .unwrap_or(server_defaults.http_workers),
                ..server_defaults
            },
            admin_token,
            key_rotation_grace_ms,
            cluster_secret,
            join: args
                .join
                .clone()
                .or(file.join)
                .map(|text| cluster_startup::join_url(&text)),
            advertise: args.advertise.clone().or(file.advertise),
            voters_max,
            raft,
        })
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_logging(args.log_format);
            match serve(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    report(&error);
                    ExitCode::from(EXIT_RUNTIME_ERROR)
                }
            }
        }
    }
}

/// One line for the error, then its causes.
fn report(error: &anyhow::Error) {
    eprintln!("error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SESSIONDB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = NodeConfig::resolve(&args)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let listener = TcpListener::bind(config.listen).with_context(|| {
        format!(
            "cannot listen on {} (hint: is another node running? use --listen 127.0.0.1:0 for any free port)",
            config.listen
        )
    })?;
    listener.set_nonblocking(true)?;
    let clock: SharedClock = match args.manual_clock {
        Some(start_ms) => Arc::new(ManualClock::new(start_ms)),
        None => Arc::new(SystemClock),
    };
    let (admin_tokens, admin_token_opened) =
        AdminTokens::open(config.admin_token.clone(), &config.data_dir, clock.clone())?;
    log_admin_token(&admin_token_opened);
    let (cluster_secret, cluster_secret_source) = admin_token::resolve_secret(
        config.cluster_secret.clone(),
        &config.data_dir,
        admin_token::CLUSTER_SECRET_KIND,
    )?;
    log_secret_source(admin_token::CLUSTER_SECRET_KIND, &cluster_secret_source);
    let address = listener.local_addr()?;
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| address.to_string());
    if config.advertise.is_none() && address.ip().is_unspecified() {
        tracing::warn!(%address, "listening on all interfaces without --advertise: other nodes cannot reach this address");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let log_config = crate::log::LogConfig {
            fault: fault_plan(args.fault_log_sync_after, args.fault_log_sync_delay_ms),
            ..crate::log::LogConfig::default()
        };
        let (engine, recovery) = crate::engine::durability::open(
            config.engine.clone(),
            clock,
            &config.data_dir,
            log_config,
        )
        .await
        .with_context(|| format!("cannot recover the data in {}", config.data_dir.display()))?;
        let placement = start_placement(&config, cluster_secret.clone()).await?;
        // Roles before serving: a joining node owns nothing until placement
        // says so; a restarted node takes its roles from the stored map.
        if config.join.is_some() && !placement.view().current().is_initialized() {
            for shard in 0..config.engine.shards {
                let role = crate::engine::handoff::ShardRole::Elsewhere { owner: 0, epoch: 0 };
                engine.set_shard_role(shard, role)?;
            }
        }
        let node_id = config.server.node_id;
        cluster_startup::apply_roles(&engine, &placement.view().current(), node_id);
        tokio::spawn(cluster_startup::follow_placement(
            engine.clone(),
            placement.view().clone(),
            node_id,
        ));
        // Tests and scripts read this exact line to find the port.
        println!("sessiondb listening on http://{address}");
        tracing::info!(
            recovery_ms = recovery.duration_ms,
            records_replayed = recovery.records_replayed,
            %address,
            data_dir = %config.data_dir.display(),
            shards = config.engine.shards,
            "node started"
        );
        if args.demo {
            tokio::spawn(crate::demo::run(engine.clone()));
        }
        // Joining needs this node's endpoints up (the leader replicates to
        // it before admitting it), so it runs beside the server; a failure
        // to take a place in the cluster stops the node.
        let (failure_sender, failure_receiver) = tokio::sync::oneshot::channel();
        let startup = ClusterStartup {
            join: config.join.clone(),
            advertise,
            shards: config.engine.shards,
            secret: cluster_secret.clone(),
        };
        let membership = {
            let placement = placement.clone();
            tokio::spawn(async move {
                if let Err(error) = cluster_startup::take_place(&placement, &startup).await {
                    let _ = failure_sender.send(error);
                }
            })
        };
        let failure = std::sync::Arc::new(std::sync::Mutex::new(None));
        let shutdown = {
            let failure = std::sync::Arc::clone(&failure);
            async move {
                tokio::select! {
                    () = shutdown_signal() => {}
                    Ok(error) = failure_receiver => {
                        *failure.lock().expect("not poisoned") = Some(error);
                    }
                }
            }
        };
        let secrets = Secrets {
            admin_tokens,
            cluster_secret,
            key_rotation_grace_ms: config.key_rotation_grace_ms,
        };
        let served = server::run(
            config.server,
            engine,
            placement.clone(),
            secrets,
            listener,
            shutdown,
        )
        .await;
        membership.abort();
        placement.shutdown().await;
        served?;
        if let Some(error) = failure.lock().expect("not poisoned").take() {
            return Err(error);
        }
        tracing::info!("node stopped");
        Ok(())
    })
}

/// Opens the placement store under the data directory and starts its Raft
/// node over HTTP.
async fn start_placement(
    config: &NodeConfig,
    cluster_secret: ClusterSecret,
) -> anyhow::Result<PlacementHandle> {
    let node_id = config.server.node_id;
    let mut placement = Placement::open(&config.data_dir, node_id).with_context(|| {
        format!(
            "cannot open the placement store in {}",
            config.data_dir.display()
        )
    })?;
    placement.raft_config = config.raft.clone();
    let network = PlacementNetwork::new(cluster_secret, &config.raft)
        .map_err(anyhow::Error::msg)
        .context("cannot build the placement transport")?;
    let (raft, view) = placement
        .start(network)
        .await
        .context("cannot start the placement Raft node")?;
    Ok(PlacementHandle::new(raft, view, node_id, config.voters_max))
}

/// Where a secret came from; the path only, never the secret.
/// Logs where the admin token came from (never the token), and shows a
/// generated token once, on stdout beside the listening line: the only time
/// the node has it in plaintext.
fn log_admin_token(opened: &AdminTokenOpened) {
    let label = ADMIN_TOKEN_KIND.label;
    match opened {
        AdminTokenOpened::File(path) => {
            tracing::info!(path = %path.display(), "{label}: hashes read from file")
        }
        AdminTokenOpened::Configured(path) => {
            tracing::info!(path = %path.display(), "{label}: configured; its hash is stored in file")
        }
        AdminTokenOpened::Migrated(path) => tracing::warn!(
            path = %path.display(),
            "{label}: the file held the token in plaintext; it now holds only its hash (keep your copy of the token)"
        ),
        AdminTokenOpened::Generated { path, token } => {
            tracing::info!(path = %path.display(), "{label}: generated; shown once on stdout, its hash is stored in file");
            // Scripts and tests read this exact prefix.
            println!("{GENERATED_ADMIN_TOKEN_PREFIX}{}", token.expose());
        }
    }
}

/// Start of the stdout line that shows a generated admin token.
pub const GENERATED_ADMIN_TOKEN_PREFIX: &str =
    "sessiondb generated admin token (shown once, only its hash is stored): ";

fn log_secret_source(kind: SecretKind, source: &AdminTokenSource) {
    let label = kind.label;
    match source {
        AdminTokenSource::Configured => tracing::info!("{label}: configured"),
        AdminTokenSource::File(path) => {
            tracing::info!(path = %path.display(), "{label}: read from file")
        }
        AdminTokenSource::Generated(path) => {
            tracing::info!(path = %path.display(), "{label}: generated and stored in file")
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown requested");
}

/// The log's fault plan from the hidden testing flags; `None` (no check
/// per operation) when neither is given.
fn fault_plan(
    sync_fails_after: Option<u64>,
    sync_delay_ms: Option<u64>,
) -> Option<Arc<crate::log::FaultPlan>> {
    if sync_fails_after.is_none() && sync_delay_ms.is_none() {
        return None;
    }
    let plan = crate::log::FaultPlan::new();
    if let Some(successes) = sync_fails_after {
        plan.fail_sync_after(successes);
    }
    if let Some(delay_ms) = sync_delay_ms {
        plan.delay_syncs_ms(delay_ms);
    }
    Some(Arc::new(plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_defaults_apply() {
        let args = ServeArgs::parse_from(["serve", "--shards", "16"]);
        let config = NodeConfig::resolve(&args).unwrap();
        assert_eq!(config.engine.shards, 16);
        assert_eq!(config.listen, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("data"));
        assert_eq!(config.admin_token, None);
    }

    #[test]
    fn admin_token_flag_is_checked() {
        let args = ServeArgs::parse_from(["serve", "--admin-token", "0123456789abcdef"]);
        let config = NodeConfig::resolve(&args).unwrap();
        assert!(config.admin_token.unwrap().matches(b"0123456789abcdef"));
        let args = ServeArgs::parse_from(["serve", "--admin-token", "short"]);
        let error = NodeConfig::resolve(&args).unwrap_err();
        assert!(format!("{error:#}").contains("16 to 256"), "{error:#}");
    }

    #[test]
    fn the_file_can_carry_the_admin_token() {
        let file = toml::from_str::<FileConfig>("admin_token = \"0123456789abcdef\"").unwrap();
        assert_eq!(file.admin_token.as_deref(), Some("0123456789abcdef"));
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let error = toml::from_str::<FileConfig>("shardz = 3").unwrap_err();
        assert!(error.to_string().contains("shardz"));
    }
}
