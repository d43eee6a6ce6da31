//! The `border` listener: foreign peers file requests, read their status and
//! the grant token, and pull data through the routes under a grant.

use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::api::{self, json};
use super::{Body, Shared, proxy};
use crate::error::Problem;
use crate::identity::PeerIdentity;
use crate::request::{Request as FiledRequest, RequestBody, RequestId};
use crate::transfer;

pub(super) async fn handle(
    shared: &Shared,
    peer: &PeerIdentity,
    request: Request<Incoming>,
) -> Response<Body> {
    match dispatch(shared, peer, request).await {
        Ok(response) => response,
        Err(problem) => {
            let (status, code, fault) = problem.status_code();
            tracing::info!(
                listener = "border",
                spiffe_id = %peer.spiffe_id,
                status = status.as_u16(),
                code,
                ?fault,
                reason = %ErrorChain(&problem),
                "request refused"
            );
            problem.response()
        }
    }
}

async fn dispatch(
    shared: &Shared,
    peer: &PeerIdentity,
    request: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    let path = request.uri().path().to_owned();
    if !proxy::is_canonical(&path) {
        return Err(Problem::BadPath);
    }
    if let Some(segments) = api::segments(&path, "/v1/requests") {
        return match (request.method(), segments.as_slice()) {
            (&Method::POST, []) => file(shared, peer, request).await,
            (&Method::GET, [id]) => status(shared, peer, id).await,
            (_, [] | [_]) => Err(Problem::MethodNotAllowed),
            _ => Err(Problem::RouteNotFound),
        };
    }
    // Longest prefix wins, so `/v1/data/x/y` can be routed apart from `/v1/data/x`.
    let route = shared
        .config
        .routes
        .iter()
        .filter(|r| r.strip(&path).is_some())
        .max_by_key(|r| r.prefix.len())
        .ok_or(Problem::RouteNotFound)?;
    let grant = transfer::authorize(&shared.review, peer, request.headers(), route).await?;
    let mut request = request;
    let headers = request.headers_mut();
    headers.remove(http::header::AUTHORIZATION);
    let grant_headers = [
        (proxy::GRANT_HEADER, grant.id.to_string()),
        (proxy::LEGAL_BASIS_HEADER, grant.scope.legal_basis.clone()),
    ];
    let mut response = shared
        .upstream
        .forward(route, peer, request, &grant_headers)
        .await?;
    if let Ok(value) = HeaderValue::from_str(&grant.id.to_string()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-xborder-grant"), value);
    }
    Ok(response)
}

async fn file(
    shared: &Shared,
    peer: &PeerIdentity,
    request: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    let body: RequestBody = api::json_body(request).await?;
    let filed = shared.review.file(peer, body).await?;
    let mut response = json(StatusCode::CREATED, &requester_view(&filed, None));
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/requests/{}", filed.id)) {
        response
            .headers_mut()
            .insert(http::header::LOCATION, location);
    }
    Ok(response)
}

/// Only the requester that filed a request may read it; to anyone else it
/// does not exist.
async fn status(shared: &Shared, peer: &PeerIdentity, id: &str) -> Result<Response<Body>, Problem> {
    let id: RequestId = id.parse().map_err(|_| Problem::RequestNotFound)?;
    let store = &shared.review.store;
    let unavailable = |e| Problem::StoreUnavailable(Box::new(e));
    let request = store
        .request(id)
        .await
        .map_err(unavailable)?
        .filter(|r| r.requester == peer.spiffe_id)
        .ok_or(Problem::RequestNotFound)?;
    let grant = match request.grant_id {
        Some(grant_id) => store.grant(grant_id).await.map_err(unavailable)?,
        None => None,
    };
    Ok(json(
        StatusCode::OK,
        &requester_view(&request, grant.as_ref()),
    ))
}

/// What the requester sees of its request: state, findings, deadline, and
/// the grant token once approved.
fn requester_view(
    request: &FiledRequest,
    grant: Option<&crate::grant::Grant>,
) -> serde_json::Value {
    json!({
        "id": request.id,
        "state": request.state,
        "requester": request.requester,
        "filed_at": request.filed_at,
        "deadline": request.deadline,
        "findings": request.findings,
        "decided_at": request.decided_at,
        "reason": request.reason,
        "grant": grant.map(|g| json!({
            "id": g.id,
            "state": g.state,
            "issued_at": g.issued_at,
            "expires_at": g.expires_at,
            "validation_due": g.validation_due,
            "quotas": g.quotas,
            "token": g.token,
        })),
    })
}

/// An error with its sources, for the log line.
pub(super) struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
