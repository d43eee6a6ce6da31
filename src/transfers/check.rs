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
//!
//! What the upstream receives is what was checked, read once (`Resource`):
//! each path segment percent-decoded once (so `%2B372…` names the granted
//! `+372…`) and re-encoded in one canonical form, empty segments refused;
//! the query rebuilt from the parameters the gateway read, each once: the
//! period checked, then the route's own `parameters`. A repeated or unknown
//! parameter is refused, so a data service that reads the last `from`, or
//! decodes `fr%6Fm`, cannot serve a period the grant does not cover.

use http::HeaderMap;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use prometheus::Histogram;

use crate::clock::Timestamp;
use crate::error::Problem;
use crate::grant::token::{TokenError, bearer};
use crate::grant::{Grant, GrantId, GrantState};
use crate::identity::PeerIdentity;
use crate::request::{FieldError, Period};
use crate::review::Review;
use crate::transfer::Route;

/// What a transfer that passed every check may take.
#[derive(Clone, Debug)]
pub struct Authorized {
    pub grant: Grant,
    pub target: String,
    pub period: Period,
    /// The path (after the route's prefix) and query to call the upstream
    /// with: exactly what the checks read, in canonical form.
    pub upstream: String,
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
        .await?
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
    let resource = Resource::read(route, path)?;
    if !grant.scope.targets.contains(&resource.target) {
        return Err(Problem::ScopeTarget);
    }
    let query = Query::read(route, query)?;
    let period = query.period(&grant.scope.period)?;
    if !grant.scope.period.contains(&period) {
        return Err(Problem::ScopePeriod);
    }
    if review.still_allowed(&grant).is_err() {
        return Err(Problem::PolicyWithdrawn);
    }
    Ok(Authorized {
        upstream: format!("{}?{}", resource.rest, query.canonical(&period)),
        target: resource.target,
        period,
        grant,
    })
}

/// The target a path names on `route`, decoded (for a refusal's audit entry).
pub(crate) fn target(route: &Route, path: &str) -> Result<String, Problem> {
    Resource::read(route, path).map(|r| r.target)
}

/// RFC 3986's unreserved characters: kept as they are everywhere.
const UNRESERVED: AsciiSet = NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Bytes kept as they are in a canonical path segment: the unreserved ones,
/// sub-delims, `:` and `@` (`pchar`).
const SEGMENT: &AsciiSet = &UNRESERVED
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// Bytes kept as they are in a canonical query value: the unreserved ones
/// and the sub-delims and separators a query may carry as they are; `&`,
/// `=` and `+` (which form decoding reads as a space) are encoded.
const QUERY_VALUE: &AsciiSet = &UNRESERVED
    .remove(b'!')
    .remove(b'$')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b',')
    .remove(b';')
    .remove(b':')
    .remove(b'@')
    .remove(b'/')
    .remove(b'?');

/// The path after a route's prefix, read once.
struct Resource {
    /// The first segment, percent-decoded once.
    target: String,
    /// Every segment decoded once and re-encoded with [`SEGMENT`], from the
    /// leading `/`: what the upstream's path gets.
    rest: String,
}

impl Resource {
    fn read(route: &Route, path: &str) -> Result<Self, Problem> {
        let rest = route.strip(path).unwrap_or_default();
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Err(Problem::TargetRequired);
        }
        let mut target = None;
        let mut canonical = String::with_capacity(rest.len() + 1);
        for raw in rest.split('/') {
            // `//T` or `T/`: an upstream may collapse or keep the empty
            // segment, and so read another resource than the one checked.
            if raw.is_empty() {
                return Err(Problem::BadPath);
            }
            let segment = percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| Problem::BadPath)?;
            if segment == "."
                || segment == ".."
                || segment.contains('/')
                || segment.chars().any(char::is_control)
            {
                return Err(Problem::BadPath);
            }
            canonical.push('/');
            canonical.extend(utf8_percent_encode(&segment, SEGMENT));
            target.get_or_insert_with(|| segment.into_owned());
        }
        Ok(Self {
            target: target.ok_or(Problem::TargetRequired)?,
            rest: canonical,
        })
    }
}

/// A transfer's query, read once: the period's bounds and the route's own
/// parameters, each decoded once and given at most once.
struct Query {
    from: Option<String>,
    to: Option<String>,
    /// In the order of the route's `parameters`.
    parameters: Vec<(String, String)>,
}

impl Query {
    fn read(route: &Route, query: Option<&str>) -> Result<Self, Problem> {
        let mut read = Self {
            from: None,
            to: None,
            parameters: Vec::new(),
        };
        let pairs = query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty());
        for pair in pairs {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode_str(name)
                .decode_utf8()
                .map_err(|_| Problem::QueryParameterUnknown)?;
            let value = percent_decode_str(value).decode_utf8().map_err(|_| {
                Problem::InvalidRequest(vec![FieldError {
                    field: name.to_string(),
                    problem: "not UTF-8 once percent-decoded".into(),
                }])
            })?;
            let slot = match name.as_ref() {
                "from" => &mut read.from,
                "to" => &mut read.to,
                other if route.parameters.iter().any(|p| p == other) => {
                    if read.parameters.iter().any(|(n, _)| n == other) {
                        return Err(Problem::QueryParameterRepeated(other.to_owned()));
                    }
                    read.parameters.push((other.to_owned(), value.into_owned()));
                    continue;
                }
                _ => return Err(Problem::QueryParameterUnknown),
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(Problem::QueryParameterRepeated(name.into_owned()));
            }
        }
        read.parameters
            .sort_by_key(|(name, _)| route.parameters.iter().position(|p| p == name));
        Ok(read)
    }

    /// The period asked for; the grant's bounds where the query says nothing.
    fn period(&self, granted: &Period) -> Result<Period, Problem> {
        let bound = |name: &str, text: Option<&str>, default: Timestamp| match text {
            None => Ok(default),
            Some(text) => Timestamp::parse(text).map_err(|e| FieldError {
                field: name.to_owned(),
                problem: format!("not an RFC 3339 time: {e}"),
            }),
        };
        let from = bound("from", self.from.as_deref(), granted.from);
        let to = bound("to", self.to.as_deref(), granted.to);
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

    /// The query the upstream gets: the `period` checked (always both
    /// bounds, so a data service need not know the grant's), then the
    /// route's parameters.
    fn canonical(&self, period: &Period) -> String {
        let mut query = format!(
            "from={}&to={}",
            utf8_percent_encode(&period.from.to_string(), QUERY_VALUE),
            utf8_percent_encode(&period.to.to_string(), QUERY_VALUE),
        );
        for (name, value) in &self.parameters {
            query.push('&');
            query.push_str(name);
            query.push('=');
            query.extend(utf8_percent_encode(value, QUERY_VALUE));
        }
        query
    }
}
