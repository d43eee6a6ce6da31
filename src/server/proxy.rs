//! Reverse proxy from a border route to its local upstream, streaming both
//! ways: request and response bodies are passed through frame by frame,
//! never collected.
//!
//! Hop-by-hop headers are dropped in both directions. The upstream learns who
//! is asking from `x-xborder-*` headers that only the gateway sets: any the
//! peer sent are removed first, so the data service can trust them.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::Problem;
use crate::identity::PeerIdentity;
use crate::transfer::Route;
use crate::transfer::receipt::TransferId;
use crate::wire::{
    Body, CATEGORY_HEADER, CONTENT_TYPE_HEADER, JURISDICTION_HEADER, PEER_HEADER, RECEIPT_HEADER,
    TRANSFER_HEADER,
};

/// Upstream response headers that may reach the peer. Anything else (cookies,
/// server banners, internal hostnames, lengths of the plaintext) stays home.
const RESPONSE_ALLOW_LIST: [HeaderName; 4] = [
    header::CONTENT_LANGUAGE,
    header::LAST_MODIFIED,
    header::CACHE_CONTROL,
    header::CONTENT_DISPOSITION,
];
const GATEWAY_HEADER_PREFIX: &str = "x-xborder-";

/// Idle connections kept per upstream after a burst.
const MAX_IDLE_PER_UPSTREAM: usize = 32;

/// A pooled HTTP client for the local upstreams.
pub(crate) struct Upstream {
    client: Client<HttpConnector, Incoming>,
}

impl Upstream {
    /// A client whose idle pooled connections close after `idle` (the
    /// gateway's `timeouts.idle`) and number at most [`MAX_IDLE_PER_UPSTREAM`].
    pub fn new(connect_timeout: Duration, idle: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            // Without a timer hyper-util never reaps idle connections: a
            // burst of transfers would leave one socket each behind for good.
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(idle)
            .pool_max_idle_per_host(MAX_IDLE_PER_UPSTREAM)
            .build(connector);
        Self { client }
    }

    /// Sends `request` to `route`'s upstream at `rest` (the path after the
    /// route's prefix, and the query, as the checks read them: never the
    /// peer's own spelling) and streams back its response.
    pub async fn forward(
        &self,
        route: &Route,
        rest: &str,
        peer: &PeerIdentity,
        request: Request<Incoming>,
        extra: &[(&'static str, String)],
    ) -> Result<Response<Body>, Problem> {
        let (mut parts, body) = request.into_parts();
        parts.uri = upstream_uri(&route.upstream, rest)?;
        parts.version = http::Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.retain_not_prefixed(GATEWAY_HEADER_PREFIX);
        parts.headers.remove(header::HOST);
        let headers = &mut parts.headers;
        headers.insert(
            HeaderName::from_static(PEER_HEADER),
            header_value(peer.spiffe_id.as_str())?,
        );
        headers.insert(
            HeaderName::from_static(JURISDICTION_HEADER),
            header_value(peer.jurisdiction.as_str())?,
        );
        headers.insert(
            HeaderName::from_static(CATEGORY_HEADER),
            header_value(route.category.as_str())?,
        );
        for (name, value) in extra {
            headers.insert(HeaderName::from_static(name), header_value(value)?);
        }

        let response = self
            .client
            .request(Request::from_parts(parts, body))
            .await
            .map_err(|e| Problem::UpstreamUnavailable(Box::new(e)))?;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(
            parts,
            body.map_err(Into::into).boxed(),
        ))
    }
}

/// The response to the peer for a sealed transfer: the upstream's status,
/// its allow-listed headers, the body as age ciphertext.
pub(super) fn sealed_response(
    upstream: http::response::Parts,
    body: Body,
    transfer: TransferId,
) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = upstream.status;
    let headers = response.headers_mut();
    for name in RESPONSE_ALLOW_LIST {
        if let Some(value) = upstream.headers.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    if let Some(value) = upstream.headers.get(header::CONTENT_TYPE) {
        headers.insert(HeaderName::from_static(CONTENT_TYPE_HEADER), value.clone());
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(id) = HeaderValue::from_str(&transfer.to_string()) {
        headers.insert(HeaderName::from_static(TRANSFER_HEADER), id);
    }
    if let Ok(url) = HeaderValue::from_str(&format!("/v1/transfers/{transfer}/receipt")) {
        headers.insert(HeaderName::from_static(RECEIPT_HEADER), url);
    }
    response
}

fn header_value(value: &str) -> Result<HeaderValue, Problem> {
    HeaderValue::from_str(value).map_err(|e| Problem::Internal(Box::new(e)))
}

/// `base` with `rest` (a path, perhaps with a query) appended to its path.
fn upstream_uri(base: &Uri, rest: &str) -> Result<Uri, Problem> {
    let base_path = base.path().trim_end_matches('/');
    let mut path_and_query = format!("{base_path}{rest}");
    if path_and_query.is_empty() || path_and_query.starts_with('?') {
        path_and_query.insert(0, '/');
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|e| Problem::Internal(Box::new(e)))?,
    );
    Uri::from_parts(parts).map_err(|e| Problem::Internal(Box::new(e)))
}

/// Removes the headers RFC 9110 §7.6.1 says a proxy must not forward.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

trait RetainNotPrefixed {
    fn retain_not_prefixed(&mut self, prefix: &str);
}

impl RetainNotPrefixed for HeaderMap {
    fn retain_not_prefixed(&mut self, prefix: &str) {
        let doomed: Vec<HeaderName> = self
            .keys()
            .filter(|k| k.as_str().starts_with(prefix))
            .cloned()
            .collect();
        for name in doomed {
            self.remove(name);
        }
    }
}

/// Whether `path` is free of dot segments and encoded separators, which an
/// upstream might resolve differently from our prefix match.
pub(super) fn is_canonical(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let encoded = ["%2e", "%2f", "%5c", "%00"]
        .iter()
        .any(|e| lower.contains(e));
    !encoded && !path.contains('\\') && !path.split('/').any(|s| s == "." || s == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_paths_join_prefix_rest_and_query() {
        let base: Uri = "http://127.0.0.1:8081/subscriber".parse().unwrap();
        assert_eq!(
            upstream_uri(&base, "/x?a=1").unwrap(),
            "http://127.0.0.1:8081/subscriber/x?a=1"
        );
        assert_eq!(
            upstream_uri(&base, "").unwrap(),
            "http://127.0.0.1:8081/subscriber"
        );
        let root: Uri = "http://127.0.0.1:8081".parse().unwrap();
        assert_eq!(upstream_uri(&root, "").unwrap(), "http://127.0.0.1:8081/");
        assert_eq!(
            upstream_uri(&root, "?a=1").unwrap(),
            "http://127.0.0.1:8081/?a=1"
        );
    }

    #[test]
    fn dot_segments_and_encoded_separators_are_not_canonical() {
        assert!(is_canonical("/v1/data/subscriber/x"));
        for bad in [
            "/v1/data/../admin",
            "/v1/data/%2e%2e/x",
            "/v1/data%2Fx",
            "/a/./b",
            "/a\\b",
        ] {
            assert!(!is_canonical(bad), "{bad}");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }
}
