//! The one mapping from errors to what a client sees: RFC 9457 problem+json.
//!
//! Every error the servers can answer with is a [`Problem`] variant; the
//! `match` in [`Problem::status_code`] is exhaustive, so a new failure forces
//! a decision on its status, its stable `code` and whose fault it is. Internal
//! causes reach the client as a generic title; detail goes to the log.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::server::Body;

/// Who caused a failure: decides 4xx vs 5xx and the log level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The peer sent something we refuse.
    Downstream,
    /// The local data service failed.
    Upstream,
    /// Our own fault.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("no route serves this path")]
    RouteNotFound,
    #[error("the path is not in canonical form (dot segments or encoded separators)")]
    BadPath,
    #[error("this identity is not an administrator of this gateway")]
    NotAdmin,
    #[error("the upstream service is unreachable")]
    UpstreamUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Problem {
    /// HTTP status, stable machine code, and fault.
    pub fn status_code(&self) -> (StatusCode, &'static str, Fault) {
        match self {
            Self::RouteNotFound => (StatusCode::NOT_FOUND, "route_not_found", Fault::Downstream),
            Self::BadPath => (StatusCode::BAD_REQUEST, "bad_path", Fault::Downstream),
            Self::NotAdmin => (StatusCode::FORBIDDEN, "not_admin", Fault::Downstream),
            Self::UpstreamUnavailable(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                Fault::Upstream,
            ),
            Self::ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                Fault::Internal,
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                Fault::Internal,
            ),
        }
    }

    pub fn code(&self) -> &'static str {
        self.status_code().1
    }

    /// The problem+json response. The title never carries an internal cause.
    pub fn response(&self) -> Response<Body> {
        let (status, code, _) = self.status_code();
        let body = serde_json::json!({
            "type": format!("https://xborder.dev/problems/{code}"),
            "title": self.to_string(),
            "status": status.as_u16(),
            "code": code,
        });
        let mut response = Response::new(crate::server::full(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}
