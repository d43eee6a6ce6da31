//! The audit log over HTTP: signed tree heads, entries and proofs on the
//! admin listener, and a grantee's proof that its receipt is in the log on
//! the border.
//!
//! | endpoint (admin) | answers |
//! |---|---|
//! | `GET /v1/audit/checkpoint` | the signed tree head (C2SP checkpoint), `text/plain` |
//! | `GET /v1/audit/vkey` | the verifier key (C2SP vkey), `text/plain` |
//! | `GET /v1/audit/entries?start=&limit=` | entries' exact bytes, one per line, `application/x-ndjson` |
//! | `GET /v1/audit/proofs/inclusion?index=[&size=]` | an inclusion proof, JSON |
//! | `GET /v1/audit/proofs/consistency?old=[&new=]` | a consistency proof, JSON |
//!
//! Sizes default to the log's current size; hashes are standard base64, as
//! in checkpoints. The transparency report (`GET /v1/reports/transparency`)
//! is computed here too, from the log's entries.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::Services;
use super::api::json;
use crate::audit::entry::Entry;
use crate::audit::merkle::Hash;
use crate::error::Problem;
use crate::identity::PeerIdentity;
use crate::report::{self, Epsilon, Publication, ReportQuery, ReportQueryError};
use crate::store::MAX_AUDIT_PAGE;
use crate::transfer::receipt::TransferId;
use crate::wire::{Body, ConsistencyProof, InclusionProof, ReceiptInclusion};

/// Serves `GET /v1/audit/...` on the admin listener; `segments` follow `/v1/audit`.
pub(super) async fn admin(
    services: &Services,
    segments: &[&str],
    query: Option<&str>,
) -> Result<Response<Body>, Problem> {
    let store = &services.store;
    match segments {
        ["checkpoint"] => {
            let (size, root) = store.audit_head().await?;
            Ok(text(services.log_key.sign(size, root)))
        }
        ["vkey"] => Ok(text(format!("{}\n", services.log_key.vkey()))),
        ["entries"] => {
            let start = number(query, "start")?.unwrap_or(0);
            let limit = number(query, "limit")?.unwrap_or(1000).min(MAX_AUDIT_PAGE);
            let entries = store.audit_entries(start, limit).await?;
            let mut body = Vec::with_capacity(entries.iter().map(|e| e.len() + 1).sum());
            for entry in entries {
                body.extend_from_slice(&entry);
                body.push(b'\n');
            }
            Ok(with_type(body, "application/x-ndjson"))
        }
        ["proofs", "inclusion"] => {
            let index = number(query, "index")?
                .ok_or_else(|| Problem::InvalidQuery("index", "required".into()))?;
            let size = match number(query, "size")? {
                Some(size) => size,
                None => store.audit_head().await?.0,
            };
            let proof = store.inclusion_proof(index, size).await?;
            Ok(json(
                StatusCode::OK,
                &InclusionProof {
                    index,
                    size,
                    proof: encode(&proof),
                },
            ))
        }
        ["proofs", "consistency"] => {
            let old = number(query, "old")?
                .ok_or_else(|| Problem::InvalidQuery("old", "required".into()))?;
            let new = match number(query, "new")? {
                Some(new) => new,
                None => store.audit_head().await?.0,
            };
            let proof = store.consistency_proof(old, new).await?;
            Ok(json(
                StatusCode::OK,
                &ConsistencyProof {
                    old,
                    new,
                    proof: encode(&proof),
                },
            ))
        }
        _ => Err(Problem::RouteNotFound),
    }
}

/// `GET /v1/reports/transparency` on admin: the report computed from the
/// whole log, published with the deployment's defaults unless the query
/// says otherwise (see [`crate::report`]).
pub(super) async fn transparency_report(
    services: &Services,
    query: Option<&str>,
) -> Result<Response<Body>, Problem> {
    let query = ReportQuery::parse(query.unwrap_or("")).map_err(query_problem)?;
    let store = &services.store;
    // Decisions and transfers join on earlier entries (a transfer's grant, a
    // request's decision), so the report reads the log from the start.
    let mut entries = Vec::new();
    loop {
        let page = store
            .audit_entries(entries.len() as u64, MAX_AUDIT_PAGE)
            .await?;
        if page.is_empty() {
            break;
        }
        for line in page {
            let entry = Entry::parse(&line).map_err(|e| Problem::Internal(Box::new(e)))?;
            entries.push(entry);
        }
    }
    let settings = services.config.reports;
    let defaults = Publication {
        k: settings.k_anonymity,
        epsilon: settings.epsilon.and_then(Epsilon::new),
    };
    let (content_type, body) =
        report::render(entries, &query, services.clock.now(), &defaults).map_err(query_problem)?;
    Ok(with_type(body.into_bytes(), content_type))
}

/// A report query's field errors, under their own code when ε was out of range.
fn query_problem(e: ReportQueryError) -> Problem {
    if e.epsilon_out_of_range() {
        Problem::EpsilonOutOfRange(e.0)
    } else {
        Problem::InvalidRequest(e.0)
    }
}

/// `GET /v1/transfers/{id}/inclusion` on the border: the grantee's proof
/// that its receipt's entry is in the log, under a fresh signed tree head.
pub(super) async fn receipt_inclusion(
    services: &Services,
    peer: &PeerIdentity,
    id: &str,
) -> Result<Response<Body>, Problem> {
    let id: TransferId = id.parse().map_err(|_| Problem::TransferNotFound)?;
    let store = &services.store;
    let (receipt, _) = store
        .transfer_receipt(id)
        .await?
        // Someone else's transfer is as unknown as a missing one.
        .filter(|(receipt, _)| receipt.grantee == peer.spiffe_id.as_str())
        .ok_or(Problem::TransferNotFound)?;
    let index = receipt
        .audit_index
        .ok_or_else(|| Problem::Internal("a closed transfer without its audit index".into()))?;
    let (size, root) = store.audit_head().await?;
    let entry = store
        .audit_entries(index, 1)
        .await?
        .pop()
        .ok_or_else(|| Problem::Internal("a receipt's audit entry is missing".into()))?;
    let proof = store.inclusion_proof(index, size).await?;
    let entry = String::from_utf8(entry)
        .map_err(|_| Problem::Internal("an audit entry is not UTF-8".into()))?;
    Ok(json(
        StatusCode::OK,
        &ReceiptInclusion {
            index,
            entry,
            checkpoint: services.log_key.sign(size, root),
            proof: encode(&proof),
        },
    ))
}

fn encode(proof: &[Hash]) -> Vec<String> {
    proof.iter().map(|h| STANDARD.encode(h)).collect()
}

fn number(query: Option<&str>, name: &'static str) -> Result<Option<u64>, Problem> {
    crate::wire::query_param(query, name)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| Problem::InvalidQuery(name, format!("`{v}` is not a whole number")))
        })
        .transpose()
}

fn text(body: String) -> Response<Body> {
    with_type(body.into_bytes(), "text/plain; charset=utf-8")
}

fn with_type(body: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(crate::wire::full(Bytes::from(body)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
