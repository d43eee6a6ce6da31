//! The `admin` listener: our own reviewers, approvers and operators.
//!
//! Connections need a certificate from our own jurisdiction's CA; requests
//! need a SPIFFE ID listed in `admin.identities`, and each action a role:
//!
//! | endpoint | role |
//! |---|---|
//! | `GET /v1/whoami` | any |
//! | `GET /v1/requests[?state=]`, `GET /v1/requests/{id}` | any |
//! | `POST /v1/requests/{id}/approve`, `.../deny` | approver |
//! | `GET /v1/grants[?state=]`, `GET /v1/grants/{id}` | any |
//! | `POST /v1/grants/{id}/validate` | approver |
//! | `POST /v1/grants/{id}/revoke` | approver or operator |
//! | `GET /v1/notices[?state=pending\|delivered]` | reviewer, approver or operator |
//! | `GET /v1/audit/...` (see [`super::audit`]) | any |
//! | `GET /v1/reports/transparency?from=&to=[&format=&k=&epsilon=]` | any |
//!
//! "any" is any role; the `auditor` role reads the audit log and reports
//! only, never a request, grant or notice (those hold targets in clear).

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::Services;
use super::api::{self, json};
use super::border::Reason;
use crate::error::Problem;
use crate::grant::{Grant, GrantId, GrantState, Quotas};
use crate::identity::PeerIdentity;
use crate::identity::Role;
use crate::notice::NoticeState;
use crate::request::{Request as FiledRequest, RequestId, RequestState};
use crate::review::Terms;
use crate::store::Approved;
use crate::wire::Body;

pub(super) async fn handle(
    services: &Services,
    peer: &PeerIdentity,
    request: Request<Incoming>,
) -> Response<Body> {
    let Some(roles) = services.config.admins.get(&peer.spiffe_id) else {
        tracing::warn!(listener = "admin", spiffe_id = %peer.spiffe_id, "request refused: not an administrator");
        return Problem::NotAdmin.response();
    };
    match dispatch(services, peer, roles, request).await {
        Ok(response) => response,
        Err(problem) => {
            let (status, code, _) = problem.status_code();
            tracing::info!(listener = "admin", spiffe_id = %peer.spiffe_id, status = status.as_u16(), code, reason = %Reason(&problem), "admin request refused");
            problem.response()
        }
    }
}

async fn dispatch(
    services: &Services,
    peer: &PeerIdentity,
    roles: &[Role],
    request: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let method = request.method().clone();
    let review = &services.review;
    let need = |wanted: &[Role], name: &'static str| {
        if roles.iter().any(|r| wanted.contains(r)) {
            Ok(())
        } else {
            Err(Problem::RoleRequired(name))
        }
    };

    if path == "/v1/whoami" {
        return Ok(json(
            StatusCode::OK,
            &json!({
                "spiffe_id": peer.spiffe_id.as_str(),
                "jurisdiction": peer.jurisdiction.as_str(),
                "x5t#S256": peer.thumbprint.x5t_s256(),
                "roles": roles,
            }),
        ));
    }
    if path == crate::report::ADMIN_PATH {
        if method != Method::GET {
            return Err(Problem::MethodNotAllowed("GET"));
        }
        return super::audit::transparency_report(services, query.as_deref()).await;
    }
    if let Some(segments) = api::segments(&path, "/v1/audit") {
        if method != Method::GET {
            return Err(Problem::MethodNotAllowed("GET"));
        }
        return super::audit::admin(services, &segments, query.as_deref()).await;
    }
    let staff = [Role::Reviewer, Role::Approver, Role::Operator];
    let staff_only = "reviewer, approver or operator";
    if let Some(segments) = api::segments(&path, "/v1/requests") {
        need(&staff, staff_only)?;
        return match (&method, segments.as_slice()) {
            (&Method::GET, []) => {
                let state = match crate::wire::query_param(query.as_deref(), "state") {
                    Some(s) => Some(s.parse::<RequestState>().map_err(Problem::StateConflict)?),
                    None => None,
                };
                let now = services.clock.now();
                let list = services.store.requests(state).await?;
                let views: Vec<_> = list.iter().map(|r| request_view(r, now)).collect();
                Ok(json(StatusCode::OK, &json!({ "requests": views })))
            }
            (&Method::GET, [id]) => {
                let id: RequestId = id.parse().map_err(|_| Problem::RequestNotFound)?;
                let request = review
                    .store
                    .request(id)
                    .await?
                    .ok_or(Problem::RequestNotFound)?;
                Ok(json(
                    StatusCode::OK,
                    &request_view(&request, services.clock.now()),
                ))
            }
            (&Method::POST, [id, "approve"]) => {
                need(&[Role::Approver], "approver")?;
                let id: RequestId = id.parse().map_err(|_| Problem::RequestNotFound)?;
                let body: ApproveBody = api::json_body(request).await?;
                let terms = body.terms()?;
                match review.approve(id, &peer.spiffe_id, terms).await? {
                    Approved::Pending {
                        approvals,
                        required,
                    } => Ok(json(
                        StatusCode::ACCEPTED,
                        &json!({ "state": "pending", "approvals": approvals, "required": required }),
                    )),
                    Approved::Granted(grant) => Ok(json(
                        StatusCode::OK,
                        &json!({ "state": "approved", "grant": grant_view(&grant) }),
                    )),
                }
            }
            (&Method::POST, [id, "deny"]) => {
                need(&[Role::Approver], "approver")?;
                let id: RequestId = id.parse().map_err(|_| Problem::RequestNotFound)?;
                let body: ReasonBody = api::json_body(request).await?;
                let request = review.deny(id, &peer.spiffe_id, &body.reason()?).await?;
                Ok(json(
                    StatusCode::OK,
                    &request_view(&request, services.clock.now()),
                ))
            }
            _ => Err(Problem::RouteNotFound),
        };
    }
    if let Some(segments) = api::segments(&path, "/v1/grants") {
        need(&staff, staff_only)?;
        return match (&method, segments.as_slice()) {
            (&Method::GET, []) => {
                let state = match crate::wire::query_param(query.as_deref(), "state") {
                    Some(s) => Some(s.parse::<GrantState>().map_err(Problem::StateConflict)?),
                    None => None,
                };
                let list = services.store.grants(state).await?;
                let views: Vec<_> = list.iter().map(grant_view).collect();
                Ok(json(StatusCode::OK, &json!({ "grants": views })))
            }
            (&Method::GET, [id]) => {
                let id: GrantId = id.parse().map_err(|_| Problem::GrantNotFound)?;
                let grant = review
                    .store
                    .grant(id)
                    .await?
                    .ok_or(Problem::GrantNotFound)?;
                Ok(json(StatusCode::OK, &grant_view(&grant)))
            }
            (&Method::POST, [id, "validate"]) => {
                need(&[Role::Approver], "approver")?;
                let id: GrantId = id.parse().map_err(|_| Problem::GrantNotFound)?;
                let grant = review.validate(id, &peer.spiffe_id).await?;
                Ok(json(StatusCode::OK, &grant_view(&grant)))
            }
            (&Method::POST, [id, "revoke"]) => {
                need(&[Role::Approver, Role::Operator], "approver or operator")?;
                let id: GrantId = id.parse().map_err(|_| Problem::GrantNotFound)?;
                let body: ReasonBody = api::json_body(request).await?;
                let grant = review.revoke(id, &peer.spiffe_id, &body.reason()?).await?;
                Ok(json(StatusCode::OK, &grant_view(&grant)))
            }
            _ => Err(Problem::RouteNotFound),
        };
    }
    if let Some(segments) = api::segments(&path, "/v1/notices") {
        need(&staff, staff_only)?;
        return match (&method, segments.as_slice()) {
            (&Method::GET, []) => {
                let state = match crate::wire::query_param(query.as_deref(), "state") {
                    Some(s) => Some(s.parse::<NoticeState>().map_err(Problem::StateConflict)?),
                    None => None,
                };
                let list = services.store.notices(state).await?;
                Ok(json(StatusCode::OK, &json!({ "notices": list })))
            }
            _ => Err(Problem::RouteNotFound),
        };
    }
    Err(Problem::RouteNotFound)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// e.g. "7d"; absent: the longest the policy allows.
    lifetime: Option<String>,
    max_bytes: Option<u64>,
    max_transfers: Option<u64>,
    /// e.g. "30d", or "0s" for at once; absent: the longest the policy allows.
    notify_after: Option<String>,
}

impl ApproveBody {
    fn terms(&self) -> Result<Terms, Problem> {
        let lifetime = match &self.lifetime {
            Some(text) => Some(
                crate::clock::parse_duration(text)
                    .map_err(|e| Problem::InvalidRequest(vec![field_error("lifetime", e)]))?,
            ),
            None => None,
        };
        let notify_after = match &self.notify_after {
            Some(text) => Some(
                parse_deferral(text)
                    .map_err(|e| Problem::InvalidRequest(vec![field_error("notify_after", e)]))?,
            ),
            None => None,
        };
        Ok(Terms {
            lifetime: lifetime.map(|d: Duration| d),
            quotas: Quotas {
                max_bytes: self.max_bytes,
                max_transfers: self.max_transfers,
            },
            notify_after,
        })
    }
}

/// A deferral as `lifetime` is written; unlike a lifetime it may be zero.
fn parse_deferral(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write e.g. \"30d\", or \"0s\" for at once")
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

impl ReasonBody {
    fn reason(&self) -> Result<String, Problem> {
        let reason = self.reason.trim();
        if reason.is_empty() || reason.len() > crate::request::MAX_TEXT_LEN {
            return Err(Problem::InvalidRequest(vec![field_error(
                "reason",
                "a reason of 1 to 4096 bytes is required".into(),
            )]));
        }
        Ok(reason.to_owned())
    }
}

fn field_error(field: &str, problem: String) -> crate::request::FieldError {
    crate::request::FieldError {
        field: field.to_owned(),
        problem,
    }
}

/// A request as reviewers see it, with its overdue flag.
fn request_view(request: &FiledRequest, now: crate::clock::Timestamp) -> serde_json::Value {
    let mut view = serde_json::to_value(request).unwrap_or_default();
    view["overdue"] = json!(request.is_overdue(now));
    view
}

/// A grant as reviewers see it: everything but the bearer token.
fn grant_view(grant: &Grant) -> serde_json::Value {
    let mut view = serde_json::to_value(grant).unwrap_or_default();
    if let Some(map) = view.as_object_mut() {
        map.remove("token");
    }
    view
}
