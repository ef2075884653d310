//! Command line and configuration file of the `sessiondb` binary.
//!
//! Exit codes: 0 success; 1 the node failed at run time (the message says
//! why); 2 bad usage or configuration (clap's convention); 3 an actor of
//! the engine failed and the node stopped (`EXIT_ACTOR_FAILED`; restart it:
//! recovery replays the log, `docs/operations.md`, "Actor failures").

use crate::admin_token::{
    self, AdminToken, AdminTokenOpened, AdminTokenSource, AdminTokens, ClusterSecret, SecretKind,
    ADMIN_TOKEN_KIND,
};
use crate::clock::{ManualClock, SharedClock, SystemClock};
use crate::cluster::identity::{self, IdentityOpened, NodeIdentity};
use crate::cluster::peer::{PeerClient, PeerTransport};
use crate::cluster::placement::{Placement, PlacementHandle, PlacementNetwork, RaftConfig};
use crate::cluster::startup::{self, ClusterStartup};
use crate::cluster::Cluster;
use crate::engine::EngineConfig;
use crate::limits;
use crate::server::{self, Secrets, ServerConfig};
use crate::tls::TlsFiles;
use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Deserialize;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Exit code for run-time failures.
pub const EXIT_RUNTIME_ERROR: u8 = 1;
/// Exit code for bad usage or configuration.
pub const EXIT_USAGE: u8 = 2;
/// Exit code after an actor of the engine failed (`engine::supervisor`).
pub const EXIT_ACTOR_FAILED: u8 = 3;

/// The default `--log-level`: the node's INFO, dependencies' warnings.
pub const DEFAULT_LOG_FILTER: &str =
    "info,openraft=warn,sled=warn,actix_server=warn,actix_web=warn";

/// The node stopped because an actor failed; `main` exits with
/// `EXIT_ACTOR_FAILED`.
#[derive(Debug, thiserror::Error)]
#[error("the node stopped because an actor failed: {0}; restart it (recovery replays the log)")]
pub struct ActorFailed(pub crate::engine::supervisor::ActorFailure);

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
    /// Virtual shards (fixed when the cluster is created; default 256). A
    /// joining or restarted node takes the cluster's count when this is not
    /// given and refuses to start when it disagrees.
    #[arg(long)]
    pub shards: Option<u32>,
    /// Aggregate actors holding the aggregates (the flag keeps its
    /// historical name).
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
    /// Testing only: every fsync of the log takes this much longer (a slow
    /// disk), to fill the ingest queues in overload tests.
    #[arg(long, hide = true)]
    pub fault_log_sync_delay_ms: Option<u64>,
    /// Testing only: start a new log segment before this many bytes
    /// (default 64 MiB; a record may then take at most half of it), so
    /// that a short test sees segments created and removed by checkpoints
    /// (docs/durability.md).
    #[arg(long, hide = true, value_parser = clap::value_parser!(u64).range(65_536..))]
    pub log_segment_bytes_max: Option<u64>,
    /// Testing only: serve `POST /v1/admin/fault/shard-panic/{shard}`,
    /// which makes a shard actor panic, to exercise supervision
    /// (docs/operations.md, "Actor failures").
    #[arg(long, hide = true)]
    pub fault_actor_panic: bool,
    /// Log format: `text` for people (coloured only when stderr is a
    /// terminal), `json` (one object per line) for log collectors.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter: a level (`error`, `warn`, `info`, `debug`, `trace`) or
    /// per-module directives (`info,sessiondb_node::placement=debug`).
    /// The default keeps dependencies' INFO chatter (openraft dumps whole
    /// Raft states at INFO) out of the node's own lines.
    #[arg(long, env = "SESSIONDB_LOG", default_value = DEFAULT_LOG_FILTER)]
    pub log_level: String,
    /// Most open HTTP connections, over all workers; more wait in the
    /// accept queue until one closes (docs/operations.md, Limits).
    #[arg(long)]
    pub connections_max: Option<usize>,
    /// Most requests one credential (bearer token or basic-auth user; else
    /// the client's IP address) may have in flight; beyond it `429`.
    #[arg(long)]
    pub requests_in_flight_per_credential_max: Option<usize>,
    /// Most cell-buckets (time buckets × cells) one results or time-series
    /// query may read; beyond it `422 query_too_expensive`.
    #[arg(long)]
    pub query_cost_max: Option<u64>,
    /// How long an ingest request waits for room in the ingest queues
    /// before the node answers `503 overloaded`.
    #[arg(long)]
    pub ingest_queue_wait_ms: Option<u64>,
    /// Take a checkpoint once the log grew by this many bytes since the
    /// last one (besides every minute), which bounds recovery's replay
    /// (docs/durability.md, "Checkpoints"); 0 turns it off.
    #[arg(long)]
    pub checkpoint_log_bytes_max: Option<u64>,
    /// Events per second each project may send (token bucket holding one
    /// second's worth); beyond it `429 rate_limited`. Default: no limit.
    #[arg(long)]
    pub project_events_per_second_max: Option<u64>,
    /// PEM certificate chain: serve HTTPS (with --tls-key and --tls-ca)
    /// and call the other members over HTTPS.
    #[arg(long, env = "SESSIONDB_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SESSIONDB_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate of the CA that signed the members' certificates;
    /// other members are verified against it.
    #[arg(long, env = "SESSIONDB_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Admin token for projects, queries, the console, /metrics and
    /// /v1/admin/* (16–256 visible ASCII characters). Without one, the node
    /// generates a token at its first start and prints it once; it keeps
    /// only the token's hash, in <data-dir>/admin-token.
    #[arg(long, env = "SESSIONDB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Read-only token for /metrics, /v1/status, GET /v1/cluster and the
    /// GETs of /v1/projects (results, time series), e.g. for Prometheus and
    /// dashboards (16–256 visible ASCII characters, not the admin token).
    /// The node keeps only its hash, in memory.
    #[arg(long, env = "SESSIONDB_VIEWER_TOKEN", hide_env_values = true)]
    pub viewer_token: Option<String>,
    /// Origins (`https://shop.example`, comma-separated) whose pages may
    /// send events to the ingest paths from a browser. Default: none.
    #[arg(long, env = "SESSIONDB_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,
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
    pub viewer_token: Option<String>,
    pub cors_allowed_origins: Option<Vec<String>>,
    pub key_rotation_grace_ms: Option<i64>,
    pub cluster_secret: Option<String>,
    pub join: Option<String>,
    pub advertise: Option<String>,
    pub voters_max: Option<usize>,
    pub connections_max: Option<usize>,
    pub requests_in_flight_per_credential_max: Option<usize>,
    pub query_cost_max: Option<u64>,
    pub ingest_queue_wait_ms: Option<u64>,
    pub checkpoint_log_bytes_max: Option<u64>,
    pub project_events_per_second_max: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
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
    /// The read-only viewer token, if configured.
    pub viewer_token: Option<AdminToken>,
    /// Default grace period of key and token rotations.
    pub key_rotation_grace_ms: i64,
    /// The configured cluster secret; `None`: use or create its file.
    pub cluster_secret: Option<ClusterSecret>,
    /// `--join` as given: a base URL or `host:port`
    /// (`PeerClient::base_url` completes it with the scheme TLS implies).
    pub join: Option<String>,
    /// `--advertise`; `None`: the bound listen address.
    pub advertise: Option<String>,
    pub voters_max: usize,
    pub raft: RaftConfig,
    /// `--shards` as given; `None`: the cluster's count, or the default
    /// for a new cluster (`engine.shards` holds the default then).
    pub shards_configured: Option<u32>,
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
        let viewer_token = args
            .viewer_token
            .clone()
            .or(file.viewer_token)
            .map(|text| AdminToken::parse(&text))
            .transpose()
            .context("invalid --viewer-token / SESSIONDB_VIEWER_TOKEN / viewer_token")?;
        let cors_allowed_origins = if args.cors_allowed_origins.is_empty() {
            file.cors_allowed_origins.unwrap_or_default()
        } else {
            args.cors_allowed_origins.clone()
        };
        let cors_allowed_origins = crate::http::cors::parse_origins(&cors_allowed_origins)
            .context("invalid --cors-allowed-origins / cors_allowed_origins")?;
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
        let tls = match (
            args.tls_cert.clone().or(file.tls_cert),
            args.tls_key.clone().or(file.tls_key),
            args.tls_ca.clone().or(file.tls_ca),
        ) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles { cert, key, ca }),
            _ => anyhow::bail!(
                "TLS needs all of --tls-cert, --tls-key and --tls-ca (the CA verifies the other members)"
            ),
        };
        let connections_max = args
            .connections_max
            .or(file.connections_max)
            .unwrap_or(limits::CONNECTIONS_MAX_DEFAULT);
        let requests_in_flight_per_credential_max = args
            .requests_in_flight_per_credential_max
            .or(file.requests_in_flight_per_credential_max)
            .unwrap_or(limits::REQUESTS_IN_FLIGHT_PER_CREDENTIAL_MAX_DEFAULT);
        let query_cost_max = args
            .query_cost_max
            .or(file.query_cost_max)
            .unwrap_or(limits::QUERY_COST_MAX_DEFAULT);
        let project_events_per_second_max = args
            .project_events_per_second_max
            .or(file.project_events_per_second_max);
        for (flag, value) in [
            ("--connections-max", connections_max as u64),
            (
                "--requests-in-flight-per-credential-max",
                requests_in_flight_per_credential_max as u64,
            ),
            ("--query-cost-max", query_cost_max),
            (
                "--project-events-per-second-max",
                project_events_per_second_max.unwrap_or(1),
            ),
        ] {
            if value == 0 {
                anyhow::bail!("{flag} must be at least 1");
            }
        }
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
                aggregate_actors: args
                    .segment_actors
                    .or(file.segment_actors)
                    .unwrap_or(engine_defaults.aggregate_actors),
                ingest_queue_wait_ms: args
                    .ingest_queue_wait_ms
                    .or(file.ingest_queue_wait_ms)
                    .unwrap_or(engine_defaults.ingest_queue_wait_ms),
                checkpoint_log_bytes_max: args
                    .checkpoint_log_bytes_max
                    .or(file.checkpoint_log_bytes_max)
                    .unwrap_or(engine_defaults.checkpoint_log_bytes_max),
                query_cost_max,
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
                connections_max,
                requests_in_flight_per_credential_max,
                project_events_per_second_max,
                tls,
                fault_routes: args.fault_actor_panic,
                demo: args.demo,
                cors_allowed_origins,
            },
            admin_token,
            viewer_token,
            key_rotation_grace_ms,
            cluster_secret,
            join: args.join.clone().or(file.join),
            advertise: args.advertise.clone().or(file.advertise),
            voters_max,
            raft,
            shards_configured: args.shards.or(file.shards),
        })
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            if let Err(error) = init_logging(args.log_format, &args.log_level) {
                eprintln!("error: invalid --log-level / SESSIONDB_LOG: {error}");
                return ExitCode::from(EXIT_USAGE);
            }
            match serve(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    report(&error);
                    if error.downcast_ref::<ActorFailed>().is_some() {
                        ExitCode::from(EXIT_ACTOR_FAILED)
                    } else {
                        ExitCode::from(EXIT_RUNTIME_ERROR)
                    }
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

fn init_logging(format: LogFormat, level: &str) -> Result<(), String> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).map_err(|error| error.to_string())?;
    // Colour codes only for a person at a terminal: a log file or a
    // collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = NodeConfig::resolve(&args)?;
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
    // Every credential is classified as one class only.
    if let Some(viewer) = &config.viewer_token {
        let bytes = viewer.expose().as_bytes();
        if admin_tokens.matches(bytes) || cluster_secret.matches(bytes) {
            anyhow::bail!("--viewer-token is the admin token or the cluster secret: give the read-only token its own value");
        }
    }
    let viewer_token = config.viewer_token.as_ref().map(AdminToken::hash);
    // The one client of node-to-node calls: the scheme and CA of the
    // node's TLS settings, the cluster secret, one connect timeout.
    let transport = match &config.server.tls {
        Some(files) => PeerTransport::https(&files.ca).context("invalid --tls-ca")?,
        None => PeerTransport::Http,
    };
    let connect_timeout = std::time::Duration::from_millis(config.raft.rpc_connect_timeout_ms);
    let peers = PeerClient::new(transport, cluster_secret.clone(), connect_timeout)?;
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
        // Placement's store first: the shard count of a cluster this node
        // is (or joins) a member of is the cluster's, not a flag's.
        let mut placement_store = Placement::open(&config.data_dir, config.server.node_id)
            .with_context(|| {
                format!(
                    "cannot open the placement store in {}",
                    config.data_dir.display()
                )
            })?;
        placement_store.raft_config = config.raft.clone();
        let (node_identity, identity_opened) = NodeIdentity::open(
            &config.data_dir,
            &placement_store.view.current(),
            config.server.node_id,
        )?;
        if identity_opened == IdentityOpened::Created {
            tracing::info!(incarnation = %node_identity.incarnation, "identity of this data directory written");
        }
        config.engine.shards =
            cluster_shards(&config, &placement_store, &node_identity, &peers).await?;
        let defaults = crate::log::LogConfig::default();
        let segment_bytes_max = args
            .log_segment_bytes_max
            .map(|bytes| usize::try_from(bytes).unwrap_or(usize::MAX));
        let log_config = crate::log::LogConfig {
            fault: fault_plan(args.fault_log_sync_after, args.fault_log_sync_delay_ms),
            segment_bytes_max: segment_bytes_max.unwrap_or(defaults.segment_bytes_max),
            record_bytes_max: segment_bytes_max.map_or(defaults.record_bytes_max, |bytes| {
                defaults.record_bytes_max.min(bytes / 2)
            }),
            ..defaults
        };
        let (engine, recovery) = crate::engine::durability::open(
            config.engine.clone(),
            clock,
            &config.data_dir,
            log_config,
        )
        .await
        .with_context(|| format!("cannot recover the data in {}", config.data_dir.display()))?;
        let placement = start_placement(&config, placement_store, peers.clone()).await?;
        // Roles before serving: a joining node owns nothing until placement
        // says so; a restarted node takes its roles from the stored map.
        if config.join.is_some() && !placement.view().current().is_initialized() {
            for shard in 0..config.engine.shards {
                let role = crate::engine::handoff::ShardRole::Elsewhere { owner: 0, epoch: 0 };
                engine.set_shard_role(shard, role)?;
            }
        }
        let node_id = config.server.node_id;
        startup::apply_roles(&engine, &placement.view().current(), node_id);
        tokio::spawn(startup::follow_placement(
            engine.clone(),
            placement.view().clone(),
            node_id,
            config.data_dir.clone(),
            node_identity.clone(),
        ));
        // Tests and scripts read this exact line to find the port.
        let scheme = if config.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        println!("sessiondb listening on {scheme}://{address}");
        let start = StartBlock {
            base_url: format!("{scheme}://{address}"),
            data_dir: &config.data_dir,
            admin_token: &admin_token_opened,
            node_id,
            join: config.join.as_deref(),
            shards: config.engine.shards,
        };
        println!("{}", start.render());
        tracing::info!(
            recovery_ms = recovery.duration_ms,
            records_replayed = recovery.records_replayed,
            %address,
            data_dir = %config.data_dir.display(),
            shards = config.engine.shards,
            "node started"
        );
        // Joining needs this node's endpoints up (the leader replicates to
        // it before admitting it), so it runs beside the server; a failure
        // to take a place in the cluster stops the node.
        let (failure_sender, failure_receiver) = tokio::sync::oneshot::channel();
        let startup = ClusterStartup {
            join: config.join.clone(),
            advertise,
            shards: config.engine.shards,
            peers: peers.clone(),
            identity: node_identity.clone(),
        };
        let membership = {
            let placement = placement.clone();
            tokio::spawn(async move {
                if let Err(error) = startup::take_place(&placement, &startup).await {
                    let _ = failure_sender.send(error);
                }
            })
        };
        let failure = std::sync::Arc::new(std::sync::Mutex::new(None));
        let shutdown = {
            let failure = std::sync::Arc::clone(&failure);
            let engine = engine.clone();
            async move {
                tokio::select! {
                    () = shutdown_signal() => {}
                    Ok(error) = failure_receiver => {
                        *failure.lock().expect("not poisoned") = Some(error);
                    }
                    actor_failure = engine.failed() => {
                        // Ready already answers 503 and work is refused;
                        // stay up a moment so load balancers see it.
                        let delay = std::time::Duration::from_millis(limits::ACTOR_FAILURE_STOP_DELAY_MS);
                        tracing::error!(failure = %actor_failure, delay_ms = limits::ACTOR_FAILURE_STOP_DELAY_MS, "the node stops after an actor failure");
                        tokio::time::sleep(delay).await;
                        *failure.lock().expect("not poisoned") = Some(anyhow::Error::new(ActorFailed(actor_failure)));
                    }
                }
            }
        };
        let secrets = Secrets {
            admin_tokens,
            cluster_secret,
            key_rotation_grace_ms: config.key_rotation_grace_ms,
            viewer_token,
        };
        let mut cluster = Cluster::new(node_id, engine.clone(), placement.clone(), peers);
        cluster.incarnation = Some(node_identity.incarnation);
        let served = server::run(config.server, engine, cluster, secrets, listener, shutdown).await;
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

/// The shard count this node runs with (`docs/cluster.md`, "Node
/// identity"): a member's store's, else — joining with an empty store —
/// the cluster's as the `--join` member says, after checking that the
/// cluster does not know this node id with another data directory; else
/// (a new cluster) `--shards` or the default. A `--shards` that disagrees
/// with the cluster's stops the node.
async fn cluster_shards(
    config: &NodeConfig,
    store: &Placement,
    node_identity: &NodeIdentity,
    peers: &PeerClient,
) -> anyhow::Result<u32> {
    let state = store.view.current();
    let default = config.engine.shards;
    if state.is_initialized() {
        if let Some(url) = &config.join {
            identity::check_member_once(peers, url, config.server.node_id, node_identity)
                .await
                .context("cannot rejoin the cluster")?;
        }
        let source = "of the cluster this data directory belongs to";
        return Ok(identity::resolve_shards(
            config.shards_configured,
            Some(state.shard_count()),
            default,
            source,
        )?);
    }
    let Some(url) = &config.join else {
        return Ok(identity::resolve_shards(
            config.shards_configured,
            None,
            default,
            "",
        )?);
    };
    let fresh = state.members().is_empty();
    let cluster =
        identity::check_before_join(peers, url, config.server.node_id, node_identity, fresh)
            .await
            .context("cannot join the cluster")?;
    let source = format!("of the cluster {url} is in");
    Ok(identity::resolve_shards(
        config.shards_configured,
        Some(cluster.shards),
        default,
        &source,
    )?)
}

/// Starts the placement Raft node of the opened store over HTTP.
async fn start_placement(
    config: &NodeConfig,
    placement: Placement,
    peers: PeerClient,
) -> anyhow::Result<PlacementHandle> {
    let node_id = config.server.node_id;
    let network = PlacementNetwork::new(peers, &config.raft).with_view(placement.view.clone());
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

/// What a node prints on stdout under its listening line: where to go next,
/// where its data is and where its admin token comes from, so that the
/// first start needs no reading of logs.
struct StartBlock<'a> {
    base_url: String,
    data_dir: &'a Path,
    admin_token: &'a AdminTokenOpened,
    node_id: u64,
    join: Option<&'a str>,
    shards: u32,
}

impl StartBlock<'_> {
    fn render(&self) -> String {
        let data_dir = std::path::absolute(self.data_dir).unwrap_or_else(|_| self.data_dir.into());
        let cluster = match self.join {
            Some(target) => format!("node {}, joining the cluster at {target}", self.node_id),
            None => format!("node {}, {} shards", self.node_id, self.shards),
        };
        [
            format!("  console      {}/console/", self.base_url),
            format!("  data dir     {}", data_dir.display()),
            format!("  admin token  {}", admin_token_origin(self.admin_token)),
            format!("  cluster      {cluster}"),
            "  stop         Ctrl-C or SIGTERM (acknowledged events are already on disk)"
                .to_string(),
        ]
        .join("\n")
    }
}

/// Where the admin token a user signs in with comes from, in one line.
fn admin_token_origin(opened: &AdminTokenOpened) -> String {
    match opened {
        AdminTokenOpened::Generated { path, .. } => format!(
            "printed once above; keep it ({} holds only its hash)",
            path.display()
        ),
        AdminTokenOpened::Configured(_) => {
            "the one given by --admin-token / SESSIONDB_ADMIN_TOKEN".to_string()
        }
        AdminTokenOpened::File(path) | AdminTokenOpened::Migrated(path) => format!(
            "printed at the first start; lost? stop the node, delete {} and start again",
            path.display()
        ),
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
    fn the_start_block_says_where_to_go_and_where_the_token_comes_from() {
        let file = PathBuf::from("/srv/data/admin-token");
        let generated = AdminTokenOpened::Generated {
            path: file.clone(),
            token: AdminToken::generate(),
        };
        let block = StartBlock {
            base_url: "http://127.0.0.1:7070".to_string(),
            data_dir: Path::new("/srv/data"),
            admin_token: &generated,
            node_id: 1,
            join: None,
            shards: 256,
        };
        let text = block.render();
        assert!(
            text.contains("console      http://127.0.0.1:7070/console/"),
            "{text}"
        );
        assert!(text.contains("data dir     /srv/data"), "{text}");
        assert!(text.contains("printed once above"), "{text}");
        assert!(text.contains("node 1, 256 shards"), "{text}");
        // The block never shows the token itself.
        if let AdminTokenOpened::Generated { token, .. } = &generated {
            assert!(!text.contains(token.expose()), "{text}");
        }

        let earlier = AdminTokenOpened::File(file);
        let joining = StartBlock {
            admin_token: &earlier,
            join: Some("10.0.0.5:7070"),
            ..block
        };
        let text = joining.render();
        assert!(
            text.contains("lost? stop the node, delete /srv/data/admin-token"),
            "{text}"
        );
        assert!(
            text.contains("joining the cluster at 10.0.0.5:7070"),
            "{text}"
        );
    }

    #[test]
    fn flags_override_file_and_defaults_apply() {
        let args = ServeArgs::parse_from(["serve", "--shards", "16"]);
        let config = NodeConfig::resolve(&args).unwrap();
        assert_eq!(config.engine.shards, 16);
        assert_eq!(config.shards_configured, Some(16));
        // Without the flag the default stands in, and the node knows it
        // was not given (a joiner then takes the cluster's count).
        let config = NodeConfig::resolve(&ServeArgs::parse_from(["serve"])).unwrap();
        assert_eq!(config.shards_configured, None);
        assert_eq!(config.engine.shards, EngineConfig::default().shards);
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
    fn viewer_token_and_allowed_origins_are_checked() {
        let args = ServeArgs::parse_from([
            "serve",
            "--viewer-token",
            "viewer-0123456789",
            "--cors-allowed-origins",
            "https://shop.example,http://localhost:8080",
        ]);
        let config = NodeConfig::resolve(&args).unwrap();
        assert!(config.viewer_token.unwrap().matches(b"viewer-0123456789"));
        assert_eq!(
            config.server.cors_allowed_origins,
            ["https://shop.example", "http://localhost:8080"]
        );
        let args = ServeArgs::parse_from(["serve", "--viewer-token", "short"]);
        let error = NodeConfig::resolve(&args).unwrap_err();
        assert!(format!("{error:#}").contains("--viewer-token"), "{error:#}");
        let args = ServeArgs::parse_from(["serve", "--cors-allowed-origins", "shop.example"]);
        let error = NodeConfig::resolve(&args).unwrap_err();
        assert!(format!("{error:#}").contains("not an origin"), "{error:#}");
        let file = toml::from_str::<FileConfig>(
            "viewer_token = \"viewer-0123456789\"\ncors_allowed_origins = [\"https://a.example\"]",
        )
        .unwrap();
        assert_eq!(file.viewer_token.as_deref(), Some("viewer-0123456789"));
        assert_eq!(file.cors_allowed_origins.unwrap(), ["https://a.example"]);
    }

    #[test]
    fn the_file_can_carry_the_admin_token() {
        let file = toml::from_str::<FileConfig>("admin_token = \"0123456789abcdef\"").unwrap();
        assert_eq!(file.admin_token.as_deref(), Some("0123456789abcdef"));
    }

    #[test]
    fn limits_have_defaults_flags_and_file_keys() {
        let args = ServeArgs::parse_from(["serve"]);
        let config = NodeConfig::resolve(&args).unwrap();
        assert_eq!(
            config.server.connections_max,
            limits::CONNECTIONS_MAX_DEFAULT
        );
        assert_eq!(
            config.server.requests_in_flight_per_credential_max,
            limits::REQUESTS_IN_FLIGHT_PER_CREDENTIAL_MAX_DEFAULT
        );
        assert_eq!(config.server.project_events_per_second_max, None);
        assert_eq!(config.engine.query_cost_max, limits::QUERY_COST_MAX_DEFAULT);
        assert_eq!(
            config.engine.ingest_queue_wait_ms,
            limits::INGEST_QUEUE_WAIT_MS_DEFAULT
        );
        let file = toml::from_str::<FileConfig>(
            "connections_max = 10\nrequests_in_flight_per_credential_max = 3\n\
             query_cost_max = 99\ningest_queue_wait_ms = 7\nproject_events_per_second_max = 5",
        )
        .unwrap();
        assert_eq!(file.connections_max, Some(10));
        assert_eq!(file.requests_in_flight_per_credential_max, Some(3));
        assert_eq!(file.query_cost_max, Some(99));
        assert_eq!(file.ingest_queue_wait_ms, Some(7));
        assert_eq!(file.project_events_per_second_max, Some(5));
        let args = ServeArgs::parse_from(["serve", "--query-cost-max", "0"]);
        let error = NodeConfig::resolve(&args).unwrap_err();
        assert!(format!("{error:#}").contains("--query-cost-max must be at least 1"));
    }

    #[test]
    fn the_checkpoint_volume_has_a_default_a_flag_and_a_file_key() {
        let args = ServeArgs::parse_from(["serve"]);
        let config = NodeConfig::resolve(&args).unwrap();
        assert_eq!(
            config.engine.checkpoint_log_bytes_max,
            limits::CHECKPOINT_LOG_BYTES_MAX_DEFAULT
        );
        let args = ServeArgs::parse_from(["serve", "--checkpoint-log-bytes-max", "0"]);
        let config = NodeConfig::resolve(&args).unwrap();
        assert_eq!(config.engine.checkpoint_log_bytes_max, 0, "0 turns it off");
        let file = toml::from_str::<FileConfig>("checkpoint_log_bytes_max = 4096").unwrap();
        assert_eq!(file.checkpoint_log_bytes_max, Some(4096));
    }

    #[test]
    fn tls_needs_all_three_files() {
        let args = ServeArgs::parse_from(["serve", "--tls-cert", "a.pem", "--tls-key", "a.key"]);
        let error = NodeConfig::resolve(&args).unwrap_err();
        assert!(format!("{error:#}").contains("--tls-ca"), "{error:#}");
        let args = ServeArgs::parse_from([
            "serve",
            "--tls-cert",
            "a.pem",
            "--tls-key",
            "a.key",
            "--tls-ca",
            "ca.pem",
        ]);
        let tls = NodeConfig::resolve(&args).unwrap().server.tls.unwrap();
        assert_eq!(tls.ca, PathBuf::from("ca.pem"));
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let error = toml::from_str::<FileConfig>("shardz = 3").unwrap_err();
        assert!(error.to_string().contains("shardz"));
    }
}
