//! What crosses the wire and is shared by servers and clients alike: the
//! response body type, the `x-xborder-*` header names, the proof shapes the
//! APIs answer with, and query-string reading.
//!
//! A leaf: it knows HTTP and serde, nothing of the gateway's concepts, so the
//! domain, the services, the servers and the clients can all speak it.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use serde::{Deserialize, Serialize};

/// The body type of every response the gateway writes.
pub type Body = BoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// The value of `name` in a query string.
pub fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Headers set for the upstream from the verified peer identity.
pub const PEER_HEADER: &str = "x-xborder-peer";
pub const JURISDICTION_HEADER: &str = "x-xborder-jurisdiction";
pub const CATEGORY_HEADER: &str = "x-xborder-category";
pub const GRANT_HEADER: &str = "x-xborder-grant";
pub const LEGAL_BASIS_HEADER: &str = "x-xborder-legal-basis";
pub const TARGET_HEADER: &str = "x-xborder-target";
pub const PERIOD_FROM_HEADER: &str = "x-xborder-period-from";
pub const PERIOD_TO_HEADER: &str = "x-xborder-period-to";
/// On responses: the transfer's id, where its receipt is, and the content
/// type of the sealed plaintext.
pub const TRANSFER_HEADER: &str = "x-xborder-transfer";
pub const RECEIPT_HEADER: &str = "x-xborder-receipt";
pub const CONTENT_TYPE_HEADER: &str = "x-xborder-content-type";

/// An inclusion proof as the admin API answers it.
#[derive(Debug, Serialize, Deserialize)]
pub struct InclusionProof {
    pub index: u64,
    pub size: u64,
    pub proof: Vec<String>,
}

/// A consistency proof as the admin API answers it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub old: u64,
    pub new: u64,
    pub proof: Vec<String>,
}

/// A receipt's entry, the checkpoint it is proven against and the proof.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReceiptInclusion {
    pub index: u64,
    /// The entry's exact bytes (UTF-8 JSON).
    pub entry: String,
    /// The signed tree head of the size the proof is for.
    pub checkpoint: String,
    pub proof: Vec<String>,
}
