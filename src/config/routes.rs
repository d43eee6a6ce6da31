//! `[[routes]]`: which path prefixes the border listener forwards to which
//! local upstream, under which data category and query parameters. The
//! `Route` type itself belongs to `crate::transfer`; only its checks are here.

use super::{Route, Validator, raw};
use crate::category::Category;

/// Paths the gateway serves itself; routes may not shadow them.
const RESERVED_PREFIXES: [&str; 3] = ["/v1/requests", "/v1/transfers", "/v1/keys"];

impl Validator<'_> {
    pub(super) fn routes(&mut self, raw: Vec<raw::Route>) -> Vec<Route> {
        let mut routes: Vec<Route> = Vec::new();
        for (i, route) in raw.into_iter().enumerate() {
            let key = |field: &str| format!("routes[{i}].{field}");
            let prefix = route.prefix;
            let prefix_ok = prefix.starts_with('/')
                && (prefix == "/" || !prefix.ends_with('/'))
                && !prefix.split('/').any(|s| s == "." || s == "..")
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#' && b != b'%');
            if !prefix_ok {
                self.errors.push(
                    key("prefix"),
                    format!("`{prefix}` is not a path prefix (starts with `/`, no trailing `/`, no `..`, `?`, `%`)"),
                );
            } else if let Some(reserved) = RESERVED_PREFIXES
                .iter()
                .find(|r| r.starts_with(prefix.as_str()) || prefix.starts_with(*r))
            {
                self.errors.push(
                    key("prefix"),
                    format!("`{prefix}` overlaps `{reserved}`, which the gateway serves itself"),
                );
            } else if routes.iter().any(|r| r.prefix == prefix) {
                self.errors
                    .push(key("prefix"), format!("`{prefix}` is already routed"));
            }
            let upstream = match route.upstream.parse::<http::Uri>() {
                Ok(uri)
                    if uri.scheme_str() == Some("http")
                        && uri.host().is_some()
                        && uri.query().is_none() =>
                {
                    Some(uri)
                }
                Ok(_) => {
                    self.errors.push(key("upstream"), format!("`{}` is not an http:// URL with a host and no query (upstreams are local, plain HTTP)", route.upstream));
                    None
                }
                Err(e) => {
                    self.errors.push(
                        key("upstream"),
                        format!("`{}` is not a URL: {e}", route.upstream),
                    );
                    None
                }
            };
            let category = self.parse::<Category>(&key("category"), &route.category);
            let mut parameters: Vec<String> = Vec::new();
            for name in route.parameters {
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if !valid {
                    self.errors.push(
                        key("parameters"),
                        format!(
                            "`{name}` is not a parameter name (letters, digits, `-`, `_`, `.`)"
                        ),
                    );
                } else if name == "from" || name == "to" {
                    self.errors.push(
                        key("parameters"),
                        format!("`{name}` is the period every route takes; do not list it"),
                    );
                } else if parameters.contains(&name) {
                    self.errors
                        .push(key("parameters"), format!("`{name}` is listed twice"));
                } else {
                    parameters.push(name);
                }
            }
            if let (Some(upstream), Some(category)) = (upstream, category) {
                routes.push(Route {
                    prefix,
                    upstream,
                    category,
                    seal: route.seal.unwrap_or(true),
                    parameters,
                });
            }
        }
        routes
    }
}
