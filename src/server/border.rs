//! The `border` listener: foreign peers file requests, read their status and
//! the grant token, and pull data through the routes under a grant.

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::api::{self, json};
use super::{Services, proxy};
use crate::audit::entry::Event;
use crate::error::Problem;
use crate::grant::{GrantId, GrantState};
use crate::identity::PeerIdentity;
use crate::ratelimit::Key;
use crate::request::{Request as FiledRequest, RequestBody, RequestId};
use crate::store::StoreError;
use crate::transfer::Route;
use crate::transfer::receipt::{TransferId, TransferOpen};
use crate::transfers::check;
use crate::transfers::stream::{Start, Transfer, Writes};
use crate::wire::Body;

pub(super) async fn handle(
    services: &Services,
    peer: &PeerIdentity,
    request: Request<Incoming>,
) -> Response<Body> {
    match dispatch(services, peer, request).await {
        Ok(response) => response,
        Err(refusal) => {
            let Refusal {
                problem,
                route,
                grant_id,
                counted,
                category,
                target,
            } = refusal;
            let (status, code, fault) = problem.status_code();
            if route.is_some() && !counted {
                services
                    .transfers
                    .metrics
                    .refused(&peer.jurisdiction, &problem);
                // The denial stands either way; a log that cannot take it is
                // an operator's emergency, said loudly by the recorder.
                let names = &services.review.pseudonyms;
                services
                    .audit
                    .record(Event::TransferDenied {
                        peer: peer.spiffe_id.to_string(),
                        jurisdiction: peer.jurisdiction.to_string(),
                        code: code.to_owned(),
                        grant: grant_id,
                        category,
                        target: target.map(|t| names.target(&t)),
                    })
                    .await;
            }
            // Never the token, the target or the Authorization header: the
            // route's prefix and the grant id say which transfer it was.
            tracing::info!(
                listener = "border",
                spiffe_id = %peer.spiffe_id,
                jurisdiction = %peer.jurisdiction,
                route = route.as_deref(),
                grant_id = grant_id.map(tracing::field::display),
                status = status.as_u16(),
                code,
                ?fault,
                reason = %Reason(&problem),
                "request refused"
            );
            problem.response()
        }
    }
}

/// A refusal on the border, with what the log line and the metrics need.
struct Refusal {
    problem: Problem,
    /// The route's prefix, when the path matched one: a refused transfer.
    route: Option<String>,
    grant_id: Option<GrantId>,
    /// Already counted: the transfer was opened, so its close counts it.
    counted: bool,
    /// The route's category and the path's target, for the audit entry.
    category: Option<String>,
    target: Option<String>,
}

impl From<Problem> for Refusal {
    fn from(problem: Problem) -> Self {
        Self {
            problem,
            route: None,
            grant_id: None,
            counted: false,
            category: None,
            target: None,
        }
    }
}

async fn dispatch(
    services: &Services,
    peer: &PeerIdentity,
    request: Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let path = request.uri().path().to_owned();
    if !proxy::is_canonical(&path) {
        return Err(Problem::BadPath.into());
    }
    if let Some(segments) = api::segments(&path, "/v1/transfers") {
        return match (request.method(), segments.as_slice()) {
            (&Method::GET, [id, "receipt"]) => receipt(services, peer, id).await,
            (&Method::GET, [id, "inclusion"]) => {
                super::audit::receipt_inclusion(services, peer, id).await
            }
            _ => Err(Problem::RouteNotFound),
        }
        .map_err(Refusal::from);
    }
    if path == "/v1/keys" && request.method() == Method::GET {
        return Ok(json(StatusCode::OK, &services.review.tokens.jwks()));
    }
    if path == "/v1/audit/vkey" && request.method() == Method::GET {
        return super::audit::admin(services, &["vkey"], None)
            .await
            .map_err(Refusal::from);
    }
    if let Some(segments) = api::segments(&path, "/v1/requests") {
        return match (request.method(), segments.as_slice()) {
            (&Method::POST, []) => file(services, peer, request).await,
            (&Method::GET, [id]) => status(services, peer, id).await,
            (_, []) => Err(Problem::MethodNotAllowed("POST")),
            (_, [_]) => Err(Problem::MethodNotAllowed("GET")),
            _ => Err(Problem::RouteNotFound),
        }
        .map_err(Refusal::from);
    }
    // Longest prefix wins, so `/v1/data/x/y` can be routed apart from `/v1/data/x`.
    let route = services
        .config
        .routes
        .iter()
        .filter(|r| r.strip(&path).is_some())
        .max_by_key(|r| r.prefix.len())
        .ok_or(Problem::RouteNotFound)?;
    let mut grant_id = None;
    transfer(services, peer, request, route, &path, &mut grant_id)
        .await
        .map_err(|problem| Refusal {
            counted: matches!(problem, TransferProblem::Opened(_)),
            problem: problem.into_inner(),
            route: Some(route.prefix.clone()),
            grant_id,
            category: Some(route.category.to_string()),
            target: check::target(route, &path).ok(),
        })
}

/// A problem of a transfer, and whether it came after the transfer was
/// opened (then its close counts and logs it).
enum TransferProblem {
    Refused(Problem),
    Opened(Problem),
}

impl TransferProblem {
    fn into_inner(self) -> Problem {
        match self {
            Self::Refused(p) | Self::Opened(p) => p,
        }
    }
}

impl From<Problem> for TransferProblem {
    fn from(problem: Problem) -> Self {
        Self::Refused(problem)
    }
}

/// What a data route takes (the `Allow` header of a refusal).
const TRANSFER_METHODS: &str = "GET, POST";

/// A transfer on `route`: the checks, the rate limits, the opening in the
/// store, the upstream call, and the sealed stream.
async fn transfer(
    services: &Services,
    peer: &PeerIdentity,
    request: Request<Incoming>,
    route: &Route,
    path: &str,
    grant_id: &mut Option<GrantId>,
) -> Result<Response<Body>, TransferProblem> {
    // A transfer reads (GET) or asks with a body (POST). Anything else would
    // be relayed, sealed, counted and receipted as a transfer although no
    // grant covers writing to or probing the data service.
    if !matches!(*request.method(), Method::GET | Method::POST) {
        return Err(Problem::MethodNotAllowed(TRANSFER_METHODS).into());
    }
    let query = request.uri().query().map(str::to_owned);
    let review = &services.review;
    let authorized = check::authorize(
        review,
        &services.transfers.metrics.token_verification,
        peer,
        check::Asked {
            headers: request.headers(),
            route,
            path,
            query: query.as_deref(),
        },
        grant_id,
    )
    .await?;
    let grant = authorized.grant;

    // Rate limits come last: a request refused for any other reason costs nothing.
    let keys = vec![
        Key::Peer(peer.spiffe_id.to_string()),
        Key::Grant(grant.id.to_string()),
    ];
    let limiter = services
        .limiters
        .get(&(grant.holder.clone(), grant.grantee_jurisdiction.clone()))
        .ok_or(Problem::PolicyWithdrawn)?
        .clone();
    limiter
        .check_request(&keys)
        .map_err(|retry| Problem::RateLimited(retry.header_seconds()))?;

    // A pass-through route's data service encrypts end to end itself.
    let recipient = if route.seal {
        let recipient: age::x25519::Recipient = grant
            .scope
            .recipient
            .parse()
            .map_err(|e: &str| Problem::Internal(e.into()))?;
        Some(recipient)
    } else {
        None
    };
    // The byte quota may already be spent by this process's other transfers.
    let counter = services
        .transfers
        .quotas
        .counter(grant.id, grant.used_bytes);
    if grant
        .quotas
        .max_bytes
        .is_some_and(|max| counter.load(std::sync::atomic::Ordering::Acquire) >= max)
    {
        services.transfers.exhaust(grant.id).await;
        return Err(Problem::GrantExhausted.into());
    }
    // A transfer that reached us as the drain began would likely be cut at
    // the end of the grace period; another replica can serve it whole.
    if services.draining.is_cancelled() {
        return Err(Problem::ShuttingDown.into());
    }
    // Subscribed before opening, so no ending of the grant slips past the stream.
    let ended = review.ended.subscribe();
    let open = TransferOpen {
        id: TransferId::new(),
        grant_id: grant.id,
        grantee: peer.spiffe_id.to_string(),
        route: route.prefix.clone(),
        category: route.category.to_string(),
        target: authorized.target.clone(),
        started_at: services.clock.now(),
    };
    let opened = tokio::time::Instant::now();
    let used_bytes = match services.store.open_transfer(&open).await {
        Ok(used) => used,
        Err(StoreError::QuotaExhausted { .. }) => {
            services.transfers.exhaust(grant.id).await;
            return Err(Problem::GrantExhausted.into());
        }
        // The grant ended between the checks and the opening (here or on
        // another replica): say how it ended, as the checks would have.
        Err(StoreError::Conflict(_) | StoreError::NotFound) => {
            let problem = match services.store.grant(open.grant_id).await {
                Ok(Some(g)) if g.state == GrantState::Exhausted => Problem::GrantExhausted,
                Ok(Some(g)) if g.state == GrantState::Expired => Problem::GrantExpired,
                _ => Problem::GrantRevoked,
            };
            return Err(problem.into());
        }
        Err(e @ (StoreError::Backend(_) | StoreError::OutOfRange { .. })) => {
            return Err(Problem::from(e).into());
        }
    };
    let transfer = Transfer {
        id: open.id,
        grant,
        route: open.route,
        category: open.category,
        target: open.target,
        started_at: open.started_at,
        opened,
        sealed: route.seal,
    };

    let mut request = request;
    request.headers_mut().remove(http::header::AUTHORIZATION);
    let writes = request.extensions_mut().remove::<Writes>();
    let gateway_headers = [
        (crate::wire::GRANT_HEADER, transfer.grant.id.to_string()),
        (
            crate::wire::LEGAL_BASIS_HEADER,
            transfer.grant.scope.legal_basis.clone(),
        ),
        (crate::wire::TARGET_HEADER, transfer.target.clone()),
        (
            crate::wire::PERIOD_FROM_HEADER,
            authorized.period.from.to_string(),
        ),
        (
            crate::wire::PERIOD_TO_HEADER,
            authorized.period.to.to_string(),
        ),
    ];
    let upstream = match services
        .upstream
        .forward(route, &authorized.upstream, peer, request, &gateway_headers)
        .await
    {
        Ok(response) => response,
        Err(problem) => {
            services.transfers.abandon(transfer).await;
            return Err(TransferProblem::Opened(problem));
        }
    };
    let (parts, body) = upstream.into_parts();
    let id = transfer.id;
    let body = services.transfers.start(Start {
        transfer,
        upstream: body,
        recipient,
        used_bytes,
        limiter,
        keys,
        ended,
        writes,
    });
    Ok(proxy::sealed_response(parts, body, id))
}

/// The receipt of a finished transfer, for its grantee only.
async fn receipt(
    services: &Services,
    peer: &PeerIdentity,
    id: &str,
) -> Result<Response<Body>, Problem> {
    let id: TransferId = id.parse().map_err(|_| Problem::TransferNotFound)?;
    let store = &services.store;
    // Open first: a transfer that closes between the two reads is then
    // answered "still open" (retry), never "unknown".
    let open = store
        .open_transfers()
        .await?
        .iter()
        .any(|open| open.id == id && open.grantee == peer.spiffe_id.as_str());
    if open {
        return Err(Problem::TransferOpen);
    }
    match store.transfer_receipt(id).await? {
        Some((receipt, jws)) if receipt.grantee == peer.spiffe_id.as_str() => Ok(json(
            StatusCode::OK,
            &json!({ "receipt": receipt, "jws": jws }),
        )),
        _ => Err(Problem::TransferNotFound),
    }
}

async fn file(
    services: &Services,
    peer: &PeerIdentity,
    request: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    let body: RequestBody = api::json_body(request).await?;
    let filed = services.review.file(peer, body).await?;
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
async fn status(
    services: &Services,
    peer: &PeerIdentity,
    id: &str,
) -> Result<Response<Body>, Problem> {
    let id: RequestId = id.parse().map_err(|_| Problem::RequestNotFound)?;
    let store = &services.store;
    let request = store
        .request(id)
        .await?
        .filter(|r| r.requester == peer.spiffe_id)
        .ok_or(Problem::RequestNotFound)?;
    let grant = match request.grant_id {
        Some(grant_id) => store.grant(grant_id).await?,
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

/// Why a request was refused, for the log line: the problem and its
/// sources, except where they may quote what a peer sent (a body's values,
/// which may be targets; a token's header), which the code names instead.
pub(super) struct Reason<'a>(pub &'a Problem);

impl std::fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Problem::InvalidJson(_) => {
                f.write_str("the body is not valid JSON for this endpoint (details withheld)")
            }
            Problem::Token(crate::grant::token::TokenError::Algorithm(_)) => {
                f.write_str("the grant token's algorithm is not accepted")
            }
            other => ErrorChain(other).fmt(f),
        }
    }
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
