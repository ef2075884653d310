//! The process around the engine: HTTP listener, shutdown.

use crate::admin_token::{AdminTokens, ClusterSecret};
use crate::cluster::Cluster;
use crate::engine::Engine;
use crate::http::admission::Admission;
use crate::http::{self, error::ApiError, AppState};
use crate::limits;
use crate::tls::TlsFiles;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpServer};
use sessiondb_protocol::ErrorCode;
use std::future::Future;
use std::net::TcpListener;

/// How the HTTP server is sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub node_id: u64,
    /// Threads serving HTTP.
    pub http_workers: usize,
    /// Most open connections over all workers; more wait in the accept
    /// queue.
    pub connections_max: usize,
    /// Requests in flight per credential (`http::admission`).
    pub requests_in_flight_per_credential_max: usize,
    /// Events per second per project; `None`: no limit.
    pub project_events_per_second_max: Option<u64>,
    /// `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Serve the hidden fault route (`--fault-actor-panic`; testing only).
    pub fault_routes: bool,
    /// Feed the `--demo` workload through this server's ingest path.
    pub demo: bool,
    /// Origins whose pages may send events (`--cors-allowed-origins`,
    /// checked by `http::cors::parse_origins`).
    pub cors_allowed_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            node_id: 1,
            http_workers: 2,
            connections_max: limits::CONNECTIONS_MAX_DEFAULT,
            requests_in_flight_per_credential_max:
                limits::REQUESTS_IN_FLIGHT_PER_CREDENTIAL_MAX_DEFAULT,
            project_events_per_second_max: None,
            tls: None,
            fault_routes: false,
            demo: false,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// The secrets that guard the node's endpoints (`http::auth`).
#[derive(Debug, Clone)]
pub struct Secrets {
    pub admin_tokens: AdminTokens,
    pub cluster_secret: ClusterSecret,
    /// Default grace period of a rotation (`--key-rotation-grace-ms`).
    pub key_rotation_grace_ms: i64,
    /// The read-only viewer token's hash (`--viewer-token`), if any.
    pub viewer_token: Option<crate::keys::KeyHash>,
}

/// Serves the API on `listener` until `shutdown` completes, then stops
/// accepting, lets requests in flight finish, and stops the engine.
pub async fn run(
    config: ServerConfig,
    engine: Engine,
    cluster: Cluster,
    secrets: Secrets,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let admission = std::sync::Arc::new(Admission::new(
        config.requests_in_flight_per_credential_max,
        config.project_events_per_second_max,
    ));
    let state = AppState {
        admission,
        engine: engine.clone(),
        node_id: config.node_id,
        admin_tokens: secrets.admin_tokens,
        key_rotation_grace_ms: secrets.key_rotation_grace_ms,
        cluster_secret: secrets.cluster_secret,
        cluster,
        project_events: Default::default(),
        viewer_token: secrets.viewer_token,
        cors: std::sync::Arc::new(http::cors::Cors::new(config.cors_allowed_origins)),
    };
    state.cluster.mover.spawn_stale_move_recovery();
    if config.demo {
        tokio::spawn(crate::demo::run(state.clone()));
    }
    let fault_routes = config.fault_routes;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            // Before the API: `/v1/admin` is a scope there, which would
            // answer 404 for a path it does not know.
            .configure(|routes| {
                if fault_routes {
                    http::admin::configure_faults(routes);
                }
            })
            .configure(http::configure)
            .default_service(web::to(not_found))
            .wrap(actix_web::middleware::from_fn(
                http::admission::limit_in_flight,
            ))
    })
    .workers(config.http_workers)
    // actix-web counts connections per worker; the setting is a total.
    .max_connections(config.connections_max.div_ceil(config.http_workers.max(1)))
    .disable_signals()
    .shutdown_timeout(limits::SHUTDOWN_WAIT_SECONDS);
    let server = match &config.tls {
        Some(files) => {
            let tls = crate::tls::server_config(files)
                .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
            server.listen_rustls_0_23(listener, tls)?
        }
        None => server.listen(listener)?,
    }
    .run();
    let handle = server.handle();
    tokio::spawn(async move {
        shutdown.await;
        handle.stop(true).await;
    });
    let result = server.await;
    engine.shutdown();
    result
}

async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such endpoint; see docs/api.md",
    ))
}
