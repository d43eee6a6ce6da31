//! Requests, review and grants over real TLS and a real SQLite file, one
//! story a module: a request filed, reviewed and approved, by two distinct
//! approvers for content ([`approval`]); requests refused at filing
//! ([`filing`]); every token refusal with its code ([`tokens`]); and grants
//! ending on time: sunsets, emergencies, restarts ([`sunsets`]). The admin
//! and pull helpers they share are here.

use http::{Method, StatusCode};
use serde_json::Value;

use crate::support::*;

mod approval;
mod filing;
mod sunsets;
mod tokens;

async fn approve(
    world: &World,
    admin_addr: std::net::SocketAddr,
    who: &str,
    id: &str,
    terms: Value,
) -> (StatusCode, Value) {
    send_json(
        &admin(world, who),
        admin_addr,
        Method::POST,
        &format!("/v1/requests/{id}/approve"),
        Some(&terms),
        None,
    )
    .await
}

async fn admin_get(world: &World, admin_addr: std::net::SocketAddr, path: &str) -> Value {
    let (status, body) = send_json(
        &admin(world, "rita"),
        admin_addr,
        Method::GET,
        path,
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

async fn token_of(
    world: &World,
    border: std::net::SocketAddr,
    cert: &xborder::pki::Issued,
    id: &str,
) -> Value {
    let (status, view) = send_json(
        &world.client(Some(cert)),
        border,
        Method::GET,
        &format!("/v1/requests/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view
}

/// GET a subscriber record with `token`; the status and problem code (if any).
async fn pull(
    world: &World,
    border: std::net::SocketAddr,
    cert: &xborder::pki::Issued,
    token: &str,
    route: &str,
) -> (StatusCode, String) {
    let (status, body) = send_json(
        &world.client(Some(cert)),
        border,
        Method::GET,
        &format!("/v1/data/{route}/+3725550123"),
        None,
        Some(token),
    )
    .await;
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}
