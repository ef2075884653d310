//! The admin console (`docs/console.md`): static assets embedded in the
//! binary, served under `/console/`, and the token-guarded data calls under
//! `/console/api/` that the page makes.
//!
//! The assets are plain HTML, CSS and JavaScript with no build step and no
//! third-party code; they hold no data, so they load without a token and
//! show the login screen until a token works. Every data call goes through
//! `/console/api/*`, which reuses the public handlers behind
//! `auth::require_admin`.

use super::{admin, auth, projects, query};
use actix_web::http::header;
use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse};

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const CHARTS_JS: &str = include_str!("console/charts.js");
const STYLE_CSS: &str = include_str!("console/style.css");

/// Scripts and styles come from this node only; nothing is fetched from
/// anywhere else and the page cannot be framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

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
        );
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
