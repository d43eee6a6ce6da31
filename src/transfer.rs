//! Transfers across the border: the checks every one passes before anything
//! moves, in the order of DESIGN.md: peer identity (already verified by TLS),
//! token signature and claims, binding to the presented certificate, grant
//! state, scope, policy. Each refusal is a [`Problem`] with its own code.

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::config::Route;
use crate::error::Problem;
use crate::grant::token::TokenError;
use crate::grant::{Grant, GrantState};
use crate::identity::PeerIdentity;
use crate::review::Review;

/// Checks `peer`'s grant token for a transfer on `route`; returns the grant.
pub async fn authorize(
    review: &Review,
    peer: &PeerIdentity,
    headers: &HeaderMap,
    route: &Route,
) -> Result<Grant, Problem> {
    let token = bearer(headers).ok_or(Problem::TokenMissing)?;
    let now = review.now();
    let claims = review.tokens.verify(token, &peer.thumbprint, now)?;
    if claims.sub != peer.spiffe_id.as_str() {
        return Err(TokenError::NotBound.into());
    }
    let id = claims.grant_id()?;
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
    if review.still_allowed(&grant).is_err() {
        return Err(Problem::PolicyWithdrawn);
    }
    Ok(grant)
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}
