//! JSON in and out for the API endpoints of the border and admin listeners.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Problem;
use crate::wire::{Body, full};

/// API bodies are small: a request for data, an approval.
pub const MAX_BODY: usize = 64 * 1024;

/// Reads and parses a JSON body of at most [`MAX_BODY`] bytes.
pub async fn json_body<T: DeserializeOwned>(request: Request<Incoming>) -> Result<T, Problem> {
    let bytes = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Problem::BodyTooLarge(MAX_BODY)
            } else {
                Problem::InvalidJson(format!("the body could not be read: {e}"))
            }
        })?
        .to_bytes();
    parse_json(&bytes)
}

pub fn parse_json<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Problem> {
    serde_json::from_slice(bytes).map_err(|e| Problem::InvalidJson(e.to_string()))
}

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut response = Response::new(full(bytes));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => Problem::Internal(Box::new(e)).response(),
    }
}

/// The path's segments after `prefix`, if it starts with it.
pub fn segments<'p>(path: &'p str, prefix: &str) -> Option<Vec<&'p str>> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let rest = rest.strip_prefix('/')?;
    Some(rest.split('/').collect())
}
