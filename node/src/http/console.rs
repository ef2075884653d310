//! The admin console (`docs/console.md`): static assets embedded in the
//! binary, served under `/console/`, and the token-guarded data calls under
//! `/console/api/` that the page makes.
//!
//! The assets are plain HTML, CSS and JavaScript with no build step and no
//! third-party code; they hold no data, so they load without a token and
//! show the login screen until a token works. Every data call goes through
//! `/console/api/*`, which reuses the public handlers behind
//! `auth::require_admin`, or to the admin endpoints themselves
//! (`/v1/cluster`, the cluster operations, the checkpoint).
//!
//! `GET /console/api/members` is the console's own: the serving node asks
//! every member for its status and per-project event counters over
//! `GET /v1/internal/console/node` (cluster secret), each within
//! `MEMBER_CHECK_TIMEOUT_MS`, and reports who answered. That answer is the
//! members' health as this node sees it, and the numbers the page turns
//! into rates.

use super::{admin, auth, projects, query, AppState};
use actix_web::http::header;
use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use sessiondb_protocol as wire;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const CHARTS_JS: &str = include_str!("console/charts.js");
const STYLE_CSS: &str = include_str!("console/style.css");

/// Scripts and styles come from this node only; nothing is fetched from
/// anywhere else and the page cannot be framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// How long the serving node waits for one member's report before it calls
/// the member unreachable. Short: the page polls every second, and a dead
/// member must not hold the overview up.
pub const MEMBER_CHECK_TIMEOUT_MS: u64 = 1_000;

/// One member's numbers, as `GET /v1/internal/console/node` answers them.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeReport {
    status: wire::NodeStatus,
    /// Accepted events per project on that node since it started.
    project_events: Vec<ProjectEvents>,
    /// Accepted events of projects beyond the counters' bound.
    project_events_overflow: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProjectEvents {
    project: String,
    events: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum Health {
    Ok,
    Unreachable,
}

/// One member in `GET /console/api/members`.
#[derive(Debug, Serialize)]
struct MemberReport {
    node_id: u64,
    address: String,
    health: Health,
    /// How long the member took to answer (0 for the serving node itself).
    check_ms: u64,
    /// Why the member counts as unreachable.
    error: Option<String>,
    /// `None` when the member did not answer.
    report: Option<NodeReport>,
}

/// `GET /console/api/members`.
#[derive(Debug, Serialize)]
struct MembersReport {
    /// The node that checked.
    node_id: u64,
    check_timeout_ms: u64,
    members: Vec<MemberReport>,
}

/// Registers the console's routes.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/console", web::get().to(redirect_to_index))
        .route("/console/", web::get().to(index))
        .route("/console/app.js", web::get().to(app_js))
        .route("/console/charts.js", web::get().to(charts_js))
        .route("/console/style.css", web::get().to(style_css))
        .service(
            web::scope("/console/api")
                .wrap(from_fn(auth::require_admin))
                .route("/status", web::get().to(admin::status))
                .route("/members", web::get().to(members))
                .route("/projects", web::get().to(projects::list))
                .route("/projects/{name}", web::get().to(projects::show))
                .route(
                    "/projects/{project}/experiments/{experiment}/results",
                    web::get().to(query::results),
                )
                .route(
                    "/projects/{project}/experiments/{experiment}/timeseries",
                    web::get().to(query::time_series),
                ),
        )
        .service(
            web::resource("/v1/internal/console/node")
                .wrap(from_fn(auth::require_cluster_secret))
                .route(web::get().to(node_report)),
        );
}

async fn local_report(state: &AppState) -> NodeReport {
    NodeReport {
        status: admin::node_status(state).await,
        project_events: state
            .project_events
            .snapshot()
            .into_iter()
            .map(|(project, events)| ProjectEvents {
                project: project.to_string(),
                events,
            })
            .collect(),
        project_events_overflow: state.project_events.overflow_events(),
    }
}

async fn node_report(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(local_report(&state).await)
}

fn member_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(MEMBER_CHECK_TIMEOUT_MS))
            .timeout(Duration::from_millis(MEMBER_CHECK_TIMEOUT_MS))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

/// Asks one other member for its report, within `MEMBER_CHECK_TIMEOUT_MS`.
async fn remote_report(state: &AppState, address: &str) -> Result<NodeReport, String> {
    let url = format!("http://{address}/v1/internal/console/node");
    let call = async {
        let response = member_client()
            .get(&url)
            .bearer_auth(state.cluster_secret.expose())
            .send()
            .await
            .map_err(|error| format!("{url}: {error}"))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(format!("{url}: answered {status}"));
        }
        response
            .json::<NodeReport>()
            .await
            .map_err(|error| format!("{url}: {error}"))
    };
    tokio::time::timeout(Duration::from_millis(MEMBER_CHECK_TIMEOUT_MS), call)
        .await
        .map_err(|_| format!("{url}: no answer within {MEMBER_CHECK_TIMEOUT_MS} ms"))?
}

/// Every member of the placement membership, checked at once.
async fn members(state: web::Data<AppState>) -> HttpResponse {
    let placement = state.placement.report();
    let checks = placement.members.into_iter().map(|(node_id, member)| {
        let state = &state;
        async move {
            let started = Instant::now();
            let answer = if node_id == state.node_id {
                Ok(local_report(state).await)
            } else {
                remote_report(state, &member.address).await
            };
            let check_ms = if node_id == state.node_id {
                0
            } else {
                u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
            };
            let (health, error, report) = match answer {
                Ok(report) => (Health::Ok, None, Some(report)),
                Err(error) => (Health::Unreachable, Some(error), None),
            };
            MemberReport {
                node_id,
                address: member.address,
                health,
                check_ms,
                error,
                report,
            }
        }
    });
    let members = futures::future::join_all(checks).await;
    HttpResponse::Ok().json(MembersReport {
        node_id: state.node_id,
        check_timeout_ms: MEMBER_CHECK_TIMEOUT_MS,
        members,
    })
}

async fn redirect_to_index() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/console/"))
        .finish()
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        // Assets change with the binary; revalidating is cheap.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn charts_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", CHARTS_JS)
}

async fn style_css() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}
