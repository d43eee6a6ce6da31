//! The one mapping from errors to what a client sees: RFC 9457 problem+json.
//!
//! Every error the servers can answer with is a [`Problem`] variant; the
//! `match` in [`Problem::status_code`] is exhaustive, so a new failure forces
//! a decision on its status, its stable `code` and whose fault it is. Internal
//! causes reach the client as a generic title; detail goes to the log.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::grant::token::TokenError;
use crate::policy::Finding;
use crate::report::Epsilon;
use crate::request::{FieldError, RequestId};
use crate::store::StoreError;
use crate::wire::Body;

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
    #[error(
        "the path is not in canonical form (dot segments, empty segments, encoded separators or control characters)"
    )]
    BadPath,
    /// With the methods the resource takes, for the `Allow` header.
    #[error("this method is not allowed here; allowed: {0}")]
    MethodNotAllowed(&'static str),
    #[error("this identity is not an administrator of this gateway")]
    NotAdmin,
    #[error("this action needs the {0} role")]
    RoleRequired(&'static str),
    #[error("the body is not valid JSON for this endpoint: {0}")]
    InvalidJson(String),
    #[error("the body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("the request has invalid fields")]
    InvalidRequest(Vec<FieldError>),
    #[error("epsilon must lie within {} ≤ ε ≤ {}", Epsilon::MIN, Epsilon::MAX)]
    EpsilonOutOfRange(Vec<FieldError>),
    #[error("the request is refused by policy")]
    PolicyRefused {
        request_id: RequestId,
        findings: Vec<Finding>,
    },
    #[error("no such request")]
    RequestNotFound,
    #[error("no such grant")]
    GrantNotFound,
    #[error("{0}")]
    StateConflict(String),
    #[error("{0}")]
    LifetimeExceedsPolicy(String),
    #[error("{0}")]
    DeferralExceedsPolicy(String),
    #[error("a grant token is required: Authorization: Bearer <token>")]
    TokenMissing,
    #[error("the grant token is refused")]
    Token(#[from] TokenError),
    #[error("the grant has been revoked")]
    GrantRevoked,
    #[error("the grant has expired")]
    GrantExpired,
    #[error("the grant's quota is used up")]
    GrantExhausted,
    #[error("the grant does not cover the category `{0}`")]
    ScopeCategory(String),
    #[error("the grant does not cover this target")]
    ScopeTarget,
    #[error("the period asked for is not inside the grant's")]
    ScopePeriod,
    #[error("the path must name a target after the route's prefix")]
    TargetRequired,
    /// A transfer's query names a parameter its route does not take. The
    /// name is the peer's and stays out of the answer.
    #[error(
        "the query has a parameter this route does not take (every route takes `from` and `to`)"
    )]
    QueryParameterUnknown,
    #[error("the query parameter `{0}` is given more than once")]
    QueryParameterRepeated(String),
    #[error("too many requests; retry after {0} s")]
    RateLimited(u64),
    #[error("the transfer is still open; its receipt comes when it ends")]
    TransferOpen,
    #[error("no such transfer")]
    TransferNotFound,
    #[error("the pair's policy no longer allows this grant")]
    PolicyWithdrawn,
    #[error("the query parameter `{0}` is missing or invalid: {1}")]
    InvalidQuery(&'static str, String),
    #[error("{index} is out of range for the audit log's {size} entries")]
    AuditOutOfRange { index: u64, size: u64 },
    #[error("the upstream service is unreachable")]
    UpstreamUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the gateway cannot reach its store")]
    StoreUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Problem {
    /// HTTP status, stable machine code, and fault.
    pub fn status_code(&self) -> (StatusCode, &'static str, Fault) {
        use Fault::*;
        match self {
            Self::RouteNotFound => (StatusCode::NOT_FOUND, "route_not_found", Downstream),
            Self::BadPath => (StatusCode::BAD_REQUEST, "bad_path", Downstream),
            Self::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                Downstream,
            ),
            Self::NotAdmin => (StatusCode::FORBIDDEN, "not_admin", Downstream),
            Self::RoleRequired(_) => (StatusCode::FORBIDDEN, "role_required", Downstream),
            Self::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json", Downstream),
            Self::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", Downstream),
            Self::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request", Downstream),
            Self::EpsilonOutOfRange(_) => {
                (StatusCode::BAD_REQUEST, "epsilon_out_of_range", Downstream)
            }
            Self::PolicyRefused { .. } => (StatusCode::FORBIDDEN, "policy_refused", Downstream),
            Self::RequestNotFound => (StatusCode::NOT_FOUND, "request_not_found", Downstream),
            Self::GrantNotFound => (StatusCode::NOT_FOUND, "grant_not_found", Downstream),
            Self::StateConflict(_) => (StatusCode::CONFLICT, "state_conflict", Downstream),
            Self::LifetimeExceedsPolicy(_) => (
                StatusCode::BAD_REQUEST,
                "lifetime_exceeds_policy",
                Downstream,
            ),
            Self::DeferralExceedsPolicy(_) => (
                StatusCode::BAD_REQUEST,
                "deferral_exceeds_policy",
                Downstream,
            ),
            Self::TokenMissing => (StatusCode::UNAUTHORIZED, "token_missing", Downstream),
            Self::Token(e) => {
                let (status, fault) = match e {
                    TokenError::Malformed
                    | TokenError::Algorithm(_)
                    | TokenError::UnknownKey
                    | TokenError::Signature
                    | TokenError::Expired
                    | TokenError::NotYetValid
                    | TokenError::Audience
                    | TokenError::Issuer => (StatusCode::UNAUTHORIZED, Downstream),
                    // Authenticated, but by another certificate than the
                    // token's: the token is fine, the presenter is not.
                    TokenError::NotBound => (StatusCode::FORBIDDEN, Downstream),
                    TokenError::Signing(_) => (StatusCode::INTERNAL_SERVER_ERROR, Internal),
                };
                (status, e.code(), fault)
            }
            Self::GrantRevoked => (StatusCode::FORBIDDEN, "grant_revoked", Downstream),
            Self::GrantExpired => (StatusCode::FORBIDDEN, "grant_expired", Downstream),
            Self::GrantExhausted => (StatusCode::FORBIDDEN, "grant_exhausted", Downstream),
            Self::ScopeCategory(_) => (StatusCode::FORBIDDEN, "scope_category", Downstream),
            Self::ScopeTarget => (StatusCode::FORBIDDEN, "scope_target", Downstream),
            Self::ScopePeriod => (StatusCode::FORBIDDEN, "scope_period", Downstream),
            Self::TargetRequired => (StatusCode::BAD_REQUEST, "target_required", Downstream),
            Self::QueryParameterUnknown => (
                StatusCode::BAD_REQUEST,
                "query_parameter_unknown",
                Downstream,
            ),
            Self::QueryParameterRepeated(_) => (
                StatusCode::BAD_REQUEST,
                "query_parameter_repeated",
                Downstream,
            ),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", Downstream),
            Self::TransferOpen => (StatusCode::CONFLICT, "transfer_open", Downstream),
            Self::TransferNotFound => (StatusCode::NOT_FOUND, "transfer_not_found", Downstream),
            Self::PolicyWithdrawn => (StatusCode::FORBIDDEN, "policy_withdrawn", Downstream),
            Self::InvalidQuery(..) => (StatusCode::BAD_REQUEST, "invalid_query", Downstream),
            Self::AuditOutOfRange { .. } => {
                (StatusCode::NOT_FOUND, "audit_out_of_range", Downstream)
            }
            Self::UpstreamUnavailable(_) => {
                (StatusCode::BAD_GATEWAY, "upstream_unavailable", Upstream)
            }
            Self::StoreUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                Internal,
            ),
            Self::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down", Internal),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", Internal),
        }
    }

    pub fn code(&self) -> &'static str {
        self.status_code().1
    }

    /// Members beyond the RFC 9457 basics that help the client act.
    fn extensions(&self) -> Vec<(&'static str, Value)> {
        match self {
            Self::InvalidRequest(errors) => vec![("errors", json!(errors))],
            Self::EpsilonOutOfRange(errors) => vec![
                ("errors", json!(errors)),
                ("minimum", json!(Epsilon::MIN)),
                ("maximum", json!(Epsilon::MAX)),
            ],
            Self::PolicyRefused {
                request_id,
                findings,
            } => {
                vec![
                    ("request_id", json!(request_id)),
                    ("findings", json!(findings)),
                ]
            }
            Self::Token(e) => vec![("detail", json!(e.to_string()))],
            Self::AuditOutOfRange { size, .. } => vec![("size", json!(size))],
            // The title says it all; or the cause is ours and stays in the log.
            Self::RouteNotFound
            | Self::BadPath
            | Self::MethodNotAllowed(_)
            | Self::NotAdmin
            | Self::RoleRequired(_)
            | Self::InvalidJson(_)
            | Self::BodyTooLarge(_)
            | Self::RequestNotFound
            | Self::GrantNotFound
            | Self::StateConflict(_)
            | Self::LifetimeExceedsPolicy(_)
            | Self::DeferralExceedsPolicy(_)
            | Self::TokenMissing
            | Self::GrantRevoked
            | Self::GrantExpired
            | Self::GrantExhausted
            | Self::ScopeCategory(_)
            | Self::ScopeTarget
            | Self::ScopePeriod
            | Self::TargetRequired
            | Self::QueryParameterUnknown
            | Self::QueryParameterRepeated(_)
            | Self::RateLimited(_)
            | Self::TransferOpen
            | Self::TransferNotFound
            | Self::PolicyWithdrawn
            | Self::InvalidQuery(..)
            | Self::UpstreamUnavailable(_)
            | Self::StoreUnavailable(_)
            | Self::ShuttingDown
            | Self::Internal(_) => Vec::new(),
        }
    }

    /// The problem+json response. The title never carries an internal cause.
    pub fn response(&self) -> Response<Body> {
        let (status, code, fault) = self.status_code();
        let title = if fault == Fault::Internal && status == StatusCode::INTERNAL_SERVER_ERROR {
            "internal error".to_owned()
        } else {
            self.to_string()
        };
        let mut body = json!({
            "type": format!("https://xborder.dev/problems/{code}"),
            "title": title,
            "status": status.as_u16(),
            "code": code,
        });
        for (name, value) in self.extensions() {
            body[name] = value;
        }
        let mut response = Response::new(crate::wire::full(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Self::RateLimited(seconds) = self
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if let Self::MethodNotAllowed(allow) = self {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<crate::review::ReviewError> for Problem {
    fn from(e: crate::review::ReviewError) -> Self {
        use crate::review::ReviewError as E;
        match e {
            E::Invalid(errors) => Self::InvalidRequest(errors),
            E::Refused(request) => Self::PolicyRefused {
                request_id: request.id,
                findings: request
                    .findings
                    .into_iter()
                    .filter(|f| f.verdict == crate::policy::Verdict::Fail)
                    .collect(),
            },
            E::RequestNotFound => Self::RequestNotFound,
            E::GrantNotFound => Self::GrantNotFound,
            E::Conflict(why) => Self::StateConflict(why),
            e @ E::LifetimeExceedsPolicy { .. } => Self::LifetimeExceedsPolicy(e.to_string()),
            e @ E::DeferralExceedsPolicy { .. } => Self::DeferralExceedsPolicy(e.to_string()),
            E::Token(e) => Self::Internal(Box::new(e)),
            E::Store(e) => e.into(),
        }
    }
}

/// The one conversion from store errors. Reads that find nothing return
/// `None`, so `NotFound` here means a record vanished between a caller's read
/// and its write: a conflict with a concurrent change, like `Conflict`.
impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Backend(_) => Self::StoreUnavailable(Box::new(e)),
            StoreError::Conflict(why) => Self::StateConflict(why),
            StoreError::NotFound => Self::StateConflict(e.to_string()),
            StoreError::QuotaExhausted { .. } => Self::GrantExhausted,
            StoreError::OutOfRange { index, size } => Self::AuditOutOfRange { index, size },
        }
    }
}

/// An error and its causes on one line, each cause once: a cause whose text
/// the previous one already contains (an error that prints its source, as
/// many do) is skipped, so `UnknownIssuer` is not said three times. The one
/// place that prints an error chain, for the CLI and the client.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut previous = out.clone();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !previous.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        previous = text;
        source = cause.source();
    }
    out
}
