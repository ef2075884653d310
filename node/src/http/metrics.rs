//! `GET /metrics` (admin or viewer token): the node's metrics in the Prometheus text
//! exposition format 0.0.4. Every family is listed in `docs/operations.md`
//! ("Metrics reference"); each subsystem registers its own in a registry
//! built for the scrape (`crate::metrics`).

use super::AppState;
use crate::metrics::{self, Registry};
use actix_web::{web, HttpResponse};

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let status = state.engine.status().await;
    let mut registry = Registry::default();
    state.engine.register_metrics(&mut registry, &status);
    state.project_events.register_metrics(&mut registry);
    state.admission.register_metrics(&mut registry);
    state.cors.register_metrics(&mut registry);
    state.cluster.register_metrics(&mut registry);
    metrics::register_process(&mut registry, status.live_visitors);
    HttpResponse::Ok()
        .content_type(metrics::CONTENT_TYPE)
        .body(metrics::encode(&registry))
}
