//! The `admin` listener: our own reviewers and operators.
//!
//! Connections need a certificate from our own jurisdiction's CA; requests
//! need a SPIFFE ID listed in `admin.identities`. Review, revocation and
//! audit endpoints come with their issues; `GET /v1/whoami` shows how the
//! gateway sees the caller.

use http::{Method, Request, Response, header};
use hyper::body::Incoming;

use super::{Body, Shared, full};
use crate::error::Problem;
use crate::identity::PeerIdentity;

pub(super) async fn handle(
    shared: &Shared,
    peer: &PeerIdentity,
    request: Request<Incoming>,
) -> Response<Body> {
    if !shared.config.admins.contains(&peer.spiffe_id) {
        tracing::warn!(listener = "admin", spiffe_id = %peer.spiffe_id, "request refused: not an administrator");
        return Problem::NotAdmin.response();
    }
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/v1/whoami") => {
            let body = serde_json::json!({
                "spiffe_id": peer.spiffe_id.as_str(),
                "jurisdiction": peer.jurisdiction.as_str(),
                "x5t#S256": peer.thumbprint.x5t_s256(),
            });
            let mut response = Response::new(full(body.to_string()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
        _ => Problem::RouteNotFound.response(),
    }
}
