//! The HTTP edge (`docs/api.md`): the public API's handlers and the server
//! side of the internal routes (`/v1/internal/*`, which other members call
//! through `cluster::peer::PeerClient`). Handlers convert wire types
//! (`sessiondb_protocol`) to internal ones and back and map errors to
//! answers; the work is the cluster's (`cluster::Cluster`) or the engine's.

pub mod admin;
pub mod admission;
mod audit;
mod auth;
mod body;
mod cluster;
mod compat;
mod console;
pub mod cors;
pub mod error;
pub mod ingest;
mod metrics;
mod projects;
mod query;
mod shard_map;
mod shards;
mod weights;

/// The pure body → events mappings of the compatible formats (fuzz targets).
pub use compat::optimizely::map_batch as map_optimizely_batch;
pub use compat::segment_io::map_batch as map_segment_batch;

use crate::admin_token::{AdminTokens, ClusterSecret};
use crate::cluster::Cluster;
use crate::engine::Engine;
use actix_web::web;
use error::ApiError;
use sessiondb_protocol::ErrorCode;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The request limits (`admission`).
    pub admission: std::sync::Arc<admission::Admission>,
    pub engine: Engine,
    pub node_id: u64,
    /// The admin token's hashes (`auth::require_admin`; `docs/security.md`
    /// lists what it guards).
    pub admin_tokens: AdminTokens,
    /// Default grace period of a rotation (`--key-rotation-grace-ms`).
    pub key_rotation_grace_ms: i64,
    /// Guards `/v1/internal/*` and `POST /v1/cluster/join`
    /// (`auth::require_cluster_secret`).
    pub cluster_secret: ClusterSecret,
    /// Placement, peers, the query coordinator, the leader path and the
    /// shard mover (`cluster`).
    pub cluster: Cluster,
    /// Accepted events per project (`project_rates`), counted by ingest.
    pub project_events: std::sync::Arc<crate::project_rates::ProjectEventCounters>,
    /// The read-only viewer token's hash, when one is configured
    /// (`--viewer-token`; `auth::require_viewer_or_admin`).
    pub viewer_token: Option<crate::keys::KeyHash>,
    /// The origins whose pages may send events (`cors`).
    pub cors: std::sync::Arc<cors::Cors>,
}

/// Bodies of small JSON requests (projects, clock) are far below this.
const SMALL_BODY_BYTES_MAX: usize = 64 * 1024;

/// Registers every route and the JSON error handlers.
pub fn configure(config: &mut web::ServiceConfig) {
    let json = web::JsonConfig::default()
        .limit(SMALL_BODY_BYTES_MAX)
        .error_handler(|error, _| {
            ApiError::bad_request(ErrorCode::MalformedJson, error.to_string()).into()
        });
    let query = web::QueryConfig::default().error_handler(|error, _| {
        ApiError::bad_request(ErrorCode::InvalidQuery, error.to_string()).into()
    });
    let path = web::PathConfig::default().error_handler(|error, _| {
        ApiError::bad_request(ErrorCode::InvalidPath, error.to_string()).into()
    });
    config
        .app_data(json)
        .app_data(query)
        .app_data(path)
        .route("/v1/health", web::get().to(admin::health))
        .route("/v1/ready", web::get().to(admin::ready))
        .service(
            web::resource("/v1/status")
                .wrap(actix_web::middleware::from_fn(
                    auth::require_viewer_or_admin,
                ))
                .route(web::get().to(admin::status)),
        )
        .service(
            web::resource("/metrics")
                .wrap(actix_web::middleware::from_fn(
                    auth::require_viewer_or_admin,
                ))
                .route(web::get().to(metrics::metrics)),
        )
        .service(
            web::scope("/v1/admin")
                .wrap(actix_web::middleware::from_fn(auth::require_admin))
                .route("/clock", web::post().to(admin::set_clock))
                .route("/token/rotate", web::post().to(admin::rotate_admin_token))
                .route("/checkpoint", web::post().to(admin::checkpoint)),
        )
        .configure(cluster::configure)
        .configure(audit::configure)
        .configure(query::configure)
        .configure(projects::configure_internal)
        .configure(shards::configure)
        .configure(shard_map::configure)
        .configure(console::configure)
        .configure(configure_ingest)
        .service(
            // Project administration (the admin token) and reads (the
            // viewer token too).
            web::scope("/v1/projects")
                .wrap(actix_web::middleware::from_fn(auth::require_admin_to_write))
                .route("", web::post().to(projects::create))
                .route("", web::get().to(projects::list))
                .route("/{name}", web::get().to(projects::show))
                .route("/{name}", web::patch().to(projects::configure))
                .route(
                    "/{name}/ingest-key/rotate",
                    web::post().to(projects::rotate_ingest_key),
                )
                .route(
                    "/{project}/experiments/{experiment}/results",
                    web::get().to(query::results),
                )
                .route(
                    "/{project}/experiments/{experiment}/timeseries",
                    web::get().to(query::time_series),
                )
                .service(
                    web::resource("/{project}/experiments/{experiment}/weights")
                        .route(web::get().to(weights::show))
                        .route(web::put().to(weights::set))
                        .route(web::delete().to(weights::clear)),
                ),
        );
}

/// The ingest paths, the only ones a page on another origin may call
/// (`cors`).
fn configure_ingest(config: &mut web::ServiceConfig) {
    let ingest_paths: [(&str, actix_web::Route); 6] = [
        ("/v1/events", web::post().to(ingest::post_events)),
        (
            "/optimizely/v1/events",
            web::post().to(compat::optimizely::post_events),
        ),
        ("/v1/batch", web::post().to(compat::segment_io::post_batch)),
        ("/v1/track", web::post().to(compat::segment_io::post_track)),
        ("/v1/page", web::post().to(compat::segment_io::post_page)),
        (
            "/v1/identify",
            web::post().to(compat::segment_io::post_identify),
        ),
    ];
    for (path, route) in ingest_paths {
        config.service(
            web::resource(path)
                .wrap(actix_web::middleware::from_fn(cors::allow_listed_origins))
                .route(route),
        );
    }
}
