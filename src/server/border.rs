//! The `border` listener's routes: foreign peers reach local upstreams here.
//!
//! Later issues add filing requests and checking grant tokens; today a
//! configured route is proxied for any verified peer.

use http::{Request, Response};
use hyper::body::Incoming;

use super::{Body, Shared, proxy};
use crate::error::Problem;
use crate::identity::PeerIdentity;

pub(super) async fn handle(
    shared: &Shared,
    peer: &PeerIdentity,
    request: Request<Incoming>,
) -> Response<Body> {
    match route(shared, peer, request).await {
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

async fn route(
    shared: &Shared,
    peer: &PeerIdentity,
    request: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    let path = request.uri().path();
    if !proxy::is_canonical(path) {
        return Err(Problem::BadPath);
    }
    // Longest prefix wins, so `/v1/data/x/y` can be routed apart from `/v1/data/x`.
    let route = shared
        .config
        .routes
        .iter()
        .filter(|r| r.strip(path).is_some())
        .max_by_key(|r| r.prefix.len())
        .ok_or(Problem::RouteNotFound)?;
    shared.upstream.forward(route, peer, request).await
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
