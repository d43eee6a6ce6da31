//! The `ops` listener: plain HTTP for orchestrator probes and Prometheus.
//!
//! `/healthz` answers while the process serves; `/readyz` once every listener
//! is bound (true by construction: it runs inside `Gateway::serve`, on listeners already bound),
//! the data directory is writable and the store answers; `/metrics` is the registry.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Services;
use crate::error::Problem;
use crate::grant::GrantState;
use crate::metrics;
use crate::wire::{Body, full};

pub(super) async fn serve(listener: TcpListener, services: Arc<Services>, stop: CancellationToken) {
    super::serve_plain(listener, "ops", stop, move |request| {
        let services = services.clone();
        async move { handle(&services, request).await }
    })
    .await;
}

async fn handle(services: &Services, request: Request<Incoming>) -> Response<Body> {
    if request.method() != Method::GET {
        return Problem::RouteNotFound.response();
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".to_owned()),
        "/readyz" => {
            if services.draining.is_cancelled() {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting down\n".to_owned(),
                );
            }
            if let Err(e) = data_dir_writable(&services.config.data_dir) {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("data_dir not writable: {e}\n"),
                );
            }
            // A shared store that cannot be reached: transfers are refused
            // (fail closed), so the orchestrator should route elsewhere.
            match services.store.ready().await {
                Ok(()) => text(StatusCode::OK, "ready\n".to_owned()),
                Err(e) => {
                    tracing::warn!(error = %e, "not ready: the store cannot be reached");
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store unavailable\n".to_owned(),
                    )
                }
            }
        }
        "/metrics" => {
            refresh(services).await;
            let mut response = text(StatusCode::OK, metrics::render(&services.registry));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => Problem::RouteNotFound.response(),
    }
}

/// Sets the gauges read from the store and the TLS snapshot: one read of
/// each per scrape, so a hot reload or a decision shows at the next one.
async fn refresh(services: &Services) {
    let expiries = services.tls.borrow().expiries.clone();
    services.certificate_metrics.set(&expiries);
    let store = &services.store;
    match store.audit_head().await {
        Ok((size, _)) => services.audit_metrics.entries.set(size as i64),
        Err(e) => tracing::warn!(error = %e, "cannot read the audit log's size for the metrics"),
    }
    match (
        store.requests(None).await,
        store.grants(Some(GrantState::Active)).await,
    ) {
        (Ok(requests), Ok(grants)) => {
            services
                .store_metrics
                .set(&requests, grants.len(), services.clock.now());
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot read the store for the metrics; serving the last values")
        }
    }
    match store.notice_counts().await {
        Ok(counts) => services.notice_metrics.set(counts),
        Err(e) => {
            tracing::warn!(error = %e, "cannot count notices for the metrics; serving the last values")
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
}

fn data_dir_writable(dir: &std::path::Path) -> std::io::Result<()> {
    tempfile::Builder::new()
        .prefix(".readyz-")
        .tempfile_in(dir)
        .map(drop)
}
