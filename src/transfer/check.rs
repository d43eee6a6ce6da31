//! The checks every transfer passes, in the order of DESIGN.md: peer identity
//! (verified by TLS before we get here), token signature and claims, binding
//! to the presented certificate, grant state, scope (category, target,
//! period), policy. Rate limits come last, at the border. Each refusal is a
//! [`Problem`] with its own code.
//!
//! A route names its target in the first path segment after its prefix:
//! `/v1/data/subscriber/+3725550123/...` asks about `+3725550123`. The period
//! asked for is the query's `from` and `to` (RFC 3339); either left out means
//! the grant's own bound.

use http::HeaderMap;
use http::header::AUTHORIZATION;
use prometheus::Histogram;

use crate::clock::Timestamp;
use crate::config::Route;
use crate::error::Problem;
use crate::grant::token::TokenError;
use crate::grant::{Grant, GrantId, GrantState};
use crate::identity::PeerIdentity;
use crate::request::{FieldError, Period};
use crate::review::Review;

/// What a transfer that passed every check may take.
#[derive(Clone, Debug)]
pub struct Authorized {
    pub grant: Grant,
    pub target: String,
    pub period: Period,
}

/// What a peer asked of a route: the request's headers, path and query.
#[derive(Clone, Copy, Debug)]
pub struct Asked<'a> {
    pub headers: &'a HeaderMap,
    pub route: &'a Route,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

/// Checks what `peer` asked; the token's verification is timed into
/// `verify_seconds`. Once the token names its grant, `grant_id` holds it,
/// so a refusal after that point can say which grant it refused.
pub async fn authorize(
    review: &Review,
    verify_seconds: &Histogram,
    peer: &PeerIdentity,
    asked: Asked<'_>,
    grant_id: &mut Option<GrantId>,
) -> Result<Authorized, Problem> {
    let Asked {
        headers,
        route,
        path,
        query,
    } = asked;
    let token = bearer(headers).ok_or(Problem::TokenMissing)?;
    let now = review.now();
    let timer = verify_seconds.start_timer();
    let claims = review.tokens.verify(token, &peer.thumbprint, now);
    timer.observe_duration();
    let claims = claims?;
    if claims.sub != peer.spiffe_id.as_str() {
        return Err(TokenError::NotBound.into());
    }
    let id = claims.grant_id()?;
    *grant_id = Some(id);
    let grant = review
        .store
        .grant(id)
        .await
        .map_err(|e| Problem::StoreUnavailable(Box::new(e)))?
        // A well-signed token for a grant the store does not know: treat as revoked.
        .ok_or(Problem::GrantRevoked)?;
    match grant.state {
        // The scheduler ends it on time; this closes the gap of a late wake-up.
        GrantState::Active if now >= grant.expires_at => return Err(Problem::GrantExpired),
        GrantState::Active => {}
        GrantState::Expired => return Err(Problem::GrantExpired),
        GrantState::Exhausted => return Err(Problem::GrantExhausted),
        GrantState::Revoked => return Err(Problem::GrantRevoked),
    }
    if !grant.scope.categories.contains(&route.category) {
        return Err(Problem::ScopeCategory(route.category.to_string()));
    }
    let target = target(route, path)?;
    if !grant.scope.targets.iter().any(|t| t == target) {
        return Err(Problem::ScopeTarget);
    }
    let period = period(query, &grant.scope.period)?;
    if !grant.scope.period.contains(&period) {
        return Err(Problem::ScopePeriod);
    }
    if review.still_allowed(&grant).is_err() {
        return Err(Problem::PolicyWithdrawn);
    }
    Ok(Authorized {
        target: target.to_owned(),
        period,
        grant,
    })
}

/// The first path segment after the route's prefix.
pub(crate) fn target<'p>(route: &Route, path: &'p str) -> Result<&'p str, Problem> {
    let rest = route.strip(path).unwrap_or_default();
    match rest.trim_start_matches('/').split('/').next() {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err(Problem::TargetRequired),
    }
}

/// The period the query asks for; the grant's bounds where it says nothing.
fn period(query: Option<&str>, granted: &Period) -> Result<Period, Problem> {
    let bound = |name: &str, default: Timestamp| match crate::server::query_param(query, name) {
        None => Ok(default),
        Some(text) => Timestamp::parse(text).map_err(|e| FieldError {
            field: name.to_owned(),
            problem: format!("not an RFC 3339 time: {e}"),
        }),
    };
    let (from, to) = (bound("from", granted.from), bound("to", granted.to));
    let errors: Vec<FieldError> = [&from, &to]
        .iter()
        .filter_map(|r| r.as_ref().err().cloned())
        .collect();
    match (from, to) {
        (Ok(from), Ok(to)) if from < to => Ok(Period { from, to }),
        (Ok(_), Ok(_)) => Err(Problem::InvalidRequest(vec![FieldError {
            field: "from".into(),
            problem: "`from` must be before `to`".into(),
        }])),
        _ => Err(Problem::InvalidRequest(errors)),
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}
