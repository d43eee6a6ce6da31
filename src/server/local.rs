//! The `local` listener: our own apps call foreign gateways through it.
//!
//! Plain HTTP on loopback (the sidecar's side of the pod). A request for
//! `/{CC}/rest…` is relayed to the border of the gateway configured as
//! `[peers.CC]`, over mTLS with our client identity; headers and bodies pass
//! as they are, so the app names its grant by sending `Authorization: Bearer
//! <token>`. A transfer's ciphertext is relayed as it comes, hashed on the
//! way, and never decrypted (only the recipient's age identity can); when it
//! ends, the relay fetches the foreign gateway's receipt, checks its signature
//! against that gateway's published keys and its hash and size against what
//! was relayed, and keeps the verdict for the app at `GET /v1/relayed/{id}`.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::api::{self, json};
use crate::client::BorderClient;
use crate::config::Peer;
use crate::error::Problem;
use crate::identity::Jurisdiction;
use crate::wire::{Body, BoxError, TRANSFER_HEADER};

/// Verdicts kept for apps to read; the oldest go first.
const VERDICTS_KEPT: usize = 10_000;

pub(crate) struct Relay {
    pub client: BorderClient,
    pub peers: std::collections::BTreeMap<Jurisdiction, Peer>,
    verdicts: Mutex<(HashMap<String, Verdict>, VecDeque<String>)>,
}

/// What the relay concluded about one relayed transfer.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub transfer_id: String,
    pub peer: String,
    pub relayed_bytes: u64,
    pub relayed_sha256: String,
    /// The receipt verified and matches what was relayed.
    pub verified: bool,
    pub problem: Option<String>,
    pub receipt: Option<crate::transfer::receipt::Receipt>,
}

impl Relay {
    pub fn new(
        client: BorderClient,
        peers: std::collections::BTreeMap<Jurisdiction, Peer>,
    ) -> Self {
        Self {
            client,
            peers,
            verdicts: Mutex::default(),
        }
    }

    fn keep(&self, verdict: Verdict) {
        let mut guard = self.verdicts.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *guard;
        order.push_back(verdict.transfer_id.clone());
        map.insert(verdict.transfer_id.clone(), verdict);
        while order.len() > VERDICTS_KEPT {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    fn verdict(&self, id: &str) -> Option<Verdict> {
        let guard = self.verdicts.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.get(id).cloned()
    }
}

pub(super) async fn serve(listener: TcpListener, relay: Arc<Relay>, stop: CancellationToken) {
    super::serve_plain(listener, "local", stop, move |request| {
        handle(relay.clone(), request)
    })
    .await;
}

async fn handle(relay: Arc<Relay>, request: Request<Incoming>) -> Response<Body> {
    match relay_request(relay, request).await {
        Ok(response) => response,
        Err(problem) => {
            tracing::info!(listener = "local", code = problem.code(), reason = %problem, "relay refused");
            problem.response()
        }
    }
}

async fn relay_request(
    relay: Arc<Relay>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Problem> {
    let path = request.uri().path().to_owned();
    if let Some(segments) = api::segments(&path, "/v1/relayed") {
        return match segments.as_slice() {
            [id] => relay
                .verdict(id)
                .map(|v| json(StatusCode::OK, &v))
                .ok_or(Problem::TransferNotFound),
            _ => Err(Problem::RouteNotFound),
        };
    }
    let (cc, rest) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .ok_or(Problem::RouteNotFound)?;
    let jurisdiction: Jurisdiction = cc.parse().map_err(|_| Problem::RouteNotFound)?;
    let peer = relay
        .peers
        .get(&jurisdiction)
        .ok_or(Problem::RouteNotFound)?
        .clone();
    let token = crate::grant::token::bearer(request.headers()).map(str::to_owned);

    let (mut parts, body) = request.into_parts();
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    parts.uri = path_and_query
        .parse::<Uri>()
        .map_err(|e| Problem::Internal(Box::new(e)))?;
    super::proxy::strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(http::header::HOST);
    let outbound =
        Request::from_parts(parts, body.map_err(|e| -> BoxError { Box::new(e) }).boxed());

    let unavailable = |e: crate::client::ClientError| Problem::UpstreamUnavailable(Box::new(e));
    let mut conn = connect(&relay.client, &peer).await.map_err(unavailable)?;
    let response = conn.send(outbound).await.map_err(unavailable)?;
    let (mut parts, body) = response.into_parts();
    super::proxy::strip_hop_by_hop(&mut parts.headers);
    let transfer = parts
        .headers
        .get(TRANSFER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match (transfer, token) {
        (Some(transfer), Some(token)) => Hashing {
            inner: body.map_err(|e| -> BoxError { Box::new(e) }).boxed(),
            hash: Sha256::new(),
            bytes: 0,
            on_end: Some(Box::new(move |bytes, sha256| {
                tokio::spawn(verify(
                    relay,
                    peer,
                    jurisdiction,
                    transfer,
                    token,
                    bytes,
                    sha256,
                ));
            })),
        }
        .boxed(),
        _ => body.map_err(|e| -> BoxError { Box::new(e) }).boxed(),
    };
    Ok(Response::from_parts(parts, body))
}

/// Connects to `peer`'s border, resolving its name now.
async fn connect(
    client: &BorderClient,
    peer: &Peer,
) -> Result<crate::client::Connection, crate::client::ClientError> {
    let resolve = |source| crate::client::ClientError::Resolve {
        name: peer.border.clone(),
        source,
    };
    let addr = tokio::net::lookup_host(peer.border.as_str())
        .await
        .map_err(resolve)?
        .next()
        .ok_or_else(|| {
            resolve(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no address",
            ))
        })?;
    client.connect(addr, &peer.server_name).await
}

/// Fetches and checks the receipt of a relayed transfer.
async fn verify(
    relay: Arc<Relay>,
    peer: Peer,
    jurisdiction: Jurisdiction,
    transfer: String,
    token: String,
    bytes: u64,
    sha256: String,
) {
    let checked = async {
        let issuer = crate::fetch::token_issuer(&token)?;
        let mut conn = connect(&relay.client, &peer).await?;
        let receipt = crate::fetch::receipt(&mut conn, &transfer, &token, &issuer).await?;
        if receipt.ciphertext_sha256 != sha256 || receipt.ciphertext_bytes != bytes {
            return Err(crate::fetch::FetchError::Mismatch {
                got: sha256.clone(),
                got_bytes: bytes,
                want: receipt.ciphertext_sha256.clone(),
                want_bytes: receipt.ciphertext_bytes,
            });
        }
        Ok(receipt)
    }
    .await;
    let verdict = match checked {
        Ok(receipt) => {
            tracing::info!(transfer_id = %transfer, peer = %jurisdiction, bytes, complete = receipt.complete, "relayed transfer's receipt verified");
            Verdict {
                transfer_id: transfer,
                peer: jurisdiction.to_string(),
                relayed_bytes: bytes,
                relayed_sha256: sha256,
                verified: true,
                problem: None,
                receipt: Some(receipt),
            }
        }
        Err(e) => {
            tracing::warn!(transfer_id = %transfer, peer = %jurisdiction, reason = %e, "relayed transfer's receipt does not verify");
            Verdict {
                transfer_id: transfer,
                peer: jurisdiction.to_string(),
                relayed_bytes: bytes,
                relayed_sha256: sha256,
                verified: false,
                problem: Some(e.to_string()),
                receipt: None,
            }
        }
    };
    relay.keep(verdict);
}

type OnEnd = Box<dyn FnOnce(u64, String) + Send + Sync>;

/// A body that hashes what passes through and reports at its end.
struct Hashing {
    inner: Body,
    hash: Sha256,
    bytes: u64,
    on_end: Option<OnEnd>,
}

impl hyper::body::Body for Hashing {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    self.hash.update(data);
                    self.bytes += n;
                }
            }
            // The end, clean or cut: check what the receipt says either way.
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                if let Some(on_end) = self.on_end.take() {
                    let digest = std::mem::take(&mut self.hash).finalize();
                    on_end(self.bytes, hex::encode(digest));
                }
            }
            Poll::Pending => {}
        }
        polled
    }
}
