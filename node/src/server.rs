//! The process around the engine: HTTP listener, shutdown.

use crate::admin_token::{AdminTokens, ClusterSecret};
use crate::engine::Engine;
use crate::http::{self, error::ApiError, AppState};
use crate::placement::PlacementHandle;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpServer};
use std::future::Future;
use std::net::TcpListener;

/// How the HTTP server is sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub node_id: u64,
    /// Threads serving HTTP.
    pub http_workers: usize,
    /// Most open connections per worker; more wait in the accept queue.
    pub connections_per_worker_max: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            node_id: 1,
            http_workers: 2,
            connections_per_worker_max: 1_024,
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
}

/// Serves the API on `listener` until `shutdown` completes, then stops
/// accepting, lets requests in flight finish, and stops the engine.
pub async fn run(
    config: ServerConfig,
    engine: Engine,
    placement: PlacementHandle,
    secrets: Secrets,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState {
        engine: engine.clone(),
        node_id: config.node_id,
        admin_tokens: secrets.admin_tokens,
        key_rotation_grace_ms: secrets.key_rotation_grace_ms,
        mover: crate::shard_moves::ShardMover::new(
            placement.clone(),
            secrets.cluster_secret.clone(),
        ),
        cluster_secret: secrets.cluster_secret,
        placement,
        project_events: Default::default(),
    };
    state.mover.spawn_stale_move_recovery();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .configure(http::configure)
            .default_service(web::to(not_found))
    })
    .workers(config.http_workers)
    .max_connections(config.connections_per_worker_max)
    .disable_signals()
    .shutdown_timeout(10)
    .listen(listener)?
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
        "not_found",
        "no such endpoint; see docs/api.md",
    ))
}
