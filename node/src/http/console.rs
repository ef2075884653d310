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
//! every member at once for its status and per-project event counters
//! (`PeerClient::member_report`, served here as
//! `GET /v1/internal/console/node`), each within
//! `MEMBER_REPORT_WAIT_MS`, and reports who answered. That answer is the
//! members' health as this node sees it, and the numbers the page turns
//! into rates.

use super::{admin, auth, projects, query, AppState};
use crate::cluster::peer::{
    MemberReport, ProjectEvents, MEMBER_REPORT_PATH, MEMBER_REPORT_WAIT_MS,
};
use actix_web::http::header;
use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse};
use serde::Serialize;

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const CHARTS_JS: &str = include_str!("console/charts.js");
const STYLE_CSS: &str = include_str!("console/style.css");

/// Scripts and styles come from this node only; nothing is fetched from
/// anywhere else and the page cannot be framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum Health {
    Ok,
    Unreachable,
}

/// One member in `GET /console/api/members`.
#[derive(Debug, Serialize)]
struct MemberHealth {
    node_id: u64,
    address: String,
    health: Health,
    /// How long the member took to answer (0 for the serving node itself).
    check_ms: u64,
    /// Why the member counts as unreachable.
    error: Option<String>,
    /// `None` when the member did not answer.
    report: Option<MemberReport>,
}

/// `GET /console/api/members`.
#[derive(Debug, Serialize)]
struct MembersReport {
    /// The node that checked.
    node_id: u64,
    check_timeout_ms: u64,
    members: Vec<MemberHealth>,
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
            web::resource(MEMBER_REPORT_PATH)
                .wrap(from_fn(auth::require_cluster_secret))
                .route(web::get().to(node_report)),
        );
}

async fn local_report(state: &AppState) -> MemberReport {
    MemberReport {
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

/// Every member of the placement membership, checked at once.
async fn members(state: web::Data<AppState>) -> HttpResponse {
    let placement = state.cluster.placement.report();
    let others: Vec<(u64, String)> = placement
        .members
        .iter()
        .filter(|(node_id, _)| **node_id != state.node_id)
        .map(|(node_id, member)| (*node_id, member.address.clone()))
        .collect();
    let (local, remote) = futures::join!(
        local_report(&state),
        state
            .cluster
            .peers
            .ask_every(&others, |peers, peer| async move {
                peers.member_report(&peer).await
            })
    );
    let mut remote = remote.into_iter();
    let mut local = Some(local);
    let members = placement
        .members
        .into_iter()
        .map(|(node_id, member)| {
            let (check_ms, answer) = if node_id == state.node_id {
                (0, local.take().ok_or_else(|| "reported twice".to_string()))
            } else {
                let checked = remote.next().expect("one answer per other member");
                let check_ms = u64::try_from(checked.elapsed.as_millis()).unwrap_or(u64::MAX);
                (check_ms, checked.answer.map_err(|error| error.to_string()))
            };
            let (health, error, report) = match answer {
                Ok(report) => (Health::Ok, None, Some(report)),
                Err(error) => (Health::Unreachable, Some(error), None),
            };
            MemberHealth {
                node_id,
                address: member.address,
                health,
                check_ms,
                error,
                report,
            }
        })
        .collect();
    HttpResponse::Ok().json(MembersReport {
        node_id: state.node_id,
        check_timeout_ms: MEMBER_REPORT_WAIT_MS,
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
