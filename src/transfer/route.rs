//! The route a transfer takes: a path prefix on the border listener and the
//! local upstream that serves it.

use crate::category::Category;

/// A path prefix on the border listener served by a local upstream.
///
/// `/v1/data/subscriber/x?y` under prefix `/v1/data/subscriber` and upstream
/// `http://127.0.0.1:8081/base` goes to `http://127.0.0.1:8081/base/x?y`.
#[derive(Clone, Debug)]
pub struct Route {
    pub prefix: String,
    pub upstream: http::Uri,
    pub category: Category,
    /// Seal the payload with age to the grant's recipient (the default);
    /// `false`: pass it through as the data service sent it, for payloads
    /// it already encrypts end to end to the requester.
    pub seal: bool,
    /// Query parameters the data service takes besides `from` and `to`
    /// (which every route takes: the period the gateway checks). Each is
    /// passed on at most once, decoded and re-encoded; any other parameter
    /// is refused, so the upstream never acts on something the gateway did
    /// not read.
    pub parameters: Vec<String>,
}

impl Route {
    /// The rest of `path` after this route's prefix, if the prefix matches on
    /// a segment boundary (`/v1/data` matches `/v1/data/x`, not `/v1/database`).
    pub fn strip<'p>(&self, path: &'p str) -> Option<&'p str> {
        let rest = path.strip_prefix(self.prefix.as_str())?;
        (rest.is_empty() || rest.starts_with('/') || self.prefix == "/").then_some(rest)
    }
}
