//! Moving one transfer: the upstream's response body, sealed to the grant's
//! recipient as it flows, counted against the byte quota, shaped by the rate
//! limits, cut the moment its grant ends, and closed with a signed receipt.
//!
//! Each transfer runs as its own task feeding the response body through a
//! channel of two frames, so memory per transfer is bounded (two ciphertext
//! frames plus the sealer's one age chunk) whatever the payload's size, and
//! the task notices a revocation or a vanished client at once, not at the
//! next upstream chunk.
//!
//! The receipt counts what the connection took from the body, not what was
//! sealed: the body feeds each piece it hands out to the transfer's
//! [`Tally`](super::seal::Tally), and a cut (set under the same lock) stops it handing out any
//! more, so the pieces still queued at a cut are neither sent nor counted
//! (see `body`).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use http_body_util::BodyExt;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::metrics::{CODE_OK, TransferMetrics};
use crate::clock::Timestamp;
use crate::grant::GrantEnded;
use crate::grant::{Cause, Grant, GrantId};
use crate::ratelimit::{Key, RateLimiter};
use crate::review::Review;
use crate::store::StoreError;
use crate::transfer::quota::{self, ByteQuotas};
use crate::transfer::receipt::{Incomplete, Receipt, TransferId};
use crate::transfer::seal::{Digests, Envelope, Piece, Sealer};
use crate::wire::Body;

/// What the gateway knows of a transfer when it starts.
pub struct Transfer {
    pub id: TransferId,
    pub grant: Grant,
    pub route: String,
    pub category: String,
    pub target: String,
    pub started_at: Timestamp,
    /// When it was opened, on tokio's monotonic clock: its duration's start.
    pub opened: tokio::time::Instant,
    /// Sealed with age by the gateway (`false`: a pass-through route).
    pub sealed: bool,
}

/// Everything a transfer needs to start streaming.
pub struct Start {
    pub transfer: Transfer,
    pub upstream: Body,
    /// The grant's recipient on a sealing route; `None` on a pass-through route.
    pub recipient: Option<age::x25519::Recipient>,
    /// The grant's byte count in the store when the transfer opened.
    pub used_bytes: u64,
    pub limiter: Arc<RateLimiter>,
    pub keys: Vec<Key>,
    /// Subscribed before the transfer was opened, so no ending of the grant
    /// can slip between the checks and the stream.
    pub ended: broadcast::Receiver<GrantEnded>,
    /// The writes of the connection the response goes out on, if known.
    pub writes: Option<Writes>,
}

mod body;

pub use body::{WriteState, Writes};

/// What every transfer shares.
pub struct Transfers {
    pub review: Arc<Review>,
    pub quotas: ByteQuotas,
    pub metrics: TransferMetrics,
    /// Cancelled when the drain's grace period is over, just before the
    /// connections still open are dropped: their transfers' receipts say
    /// `shutting_down`.
    pub closing: CancellationToken,
    /// Every transfer's task, so the drain can wait for their receipts.
    pub tasks: TaskTracker,
}

/// How a transfer ended.
#[derive(Clone, Copy)]
enum End {
    /// The upstream's body ended: everything crossed.
    Finished,
    /// The byte quota was reached mid-body: cut exactly at it.
    Exhausted,
    /// The grant ended while streaming.
    GrantEnded(Cause),
    UpstreamFailed,
    ClientGone,
}

impl End {
    /// Why the response is cut, for an end that is not a clean one.
    fn cut(&self) -> Option<&'static str> {
        match self {
            Self::Finished | Self::Exhausted => None,
            Self::GrantEnded(_) => Some("the grant ended"),
            Self::UpstreamFailed => Some("the upstream failed"),
            Self::ClientGone => Some("the client went away"),
        }
    }
}

impl Transfers {
    /// Starts moving a transfer; returns the response body.
    pub fn start(self: &Arc<Self>, start: Start) -> Body {
        let Start {
            transfer,
            upstream,
            recipient,
            used_bytes,
            limiter,
            keys,
            mut ended,
            writes,
        } = start;
        let (mut outlet, body) = body::response(recipient.is_some(), writes);
        let counter = self.quotas.counter(transfer.grant.id, used_bytes);
        let transfers = self.clone();
        self.tasks.spawn(async move {
            let envelope = match &recipient {
                Some(recipient) => Sealer::new(recipient).map(Envelope::Seal),
                None => Ok(Envelope::Pass),
            };
            let queued = match envelope {
                Ok(envelope) => {
                    transfers
                        .pump(
                            &transfer,
                            upstream,
                            envelope,
                            &counter,
                            &limiter,
                            &keys,
                            &mut ended,
                            outlet.queue(),
                        )
                        .await
                }
                Err(e) => {
                    tracing::error!(transfer_id = %transfer.id, error = %e, "cannot start sealing");
                    End::UpstreamFailed
                }
            };
            // The grant's bytes are used up now, not when the client has
            // read the last of them: later transfers are refused at once.
            if let End::Exhausted = queued {
                transfers.exhaust(transfer.grant.id).await;
            }
            let (end, digests) = match queued {
                // Everything is queued after a clean end; it has crossed once
                // the body hands out the last piece, and a grant that ends
                // before then still cuts what is left.
                End::Finished | End::Exhausted => {
                    outlet.close_queue();
                    let mut end = tokio::select! {
                        biased;
                        () = outlet.drained() => End::ClientGone,
                        cause = ended_cause(&mut ended, transfer.grant.id, &transfers.review) => End::GrantEnded(cause),
                    };
                    let digests = outlet.end(|drained| {
                        if drained {
                            end = queued;
                        }
                        end.cut()
                    });
                    (end, digests)
                }
                cut => (cut, outlet.end(|_| cut.cut())),
            };
            transfers.close(transfer, end, digests).await;
        });
        body
    }

    /// The per-chunk loop: returns how it ended. After a clean end (finished,
    /// or cut exactly at the byte quota) everything to send is queued.
    #[allow(clippy::too_many_arguments)]
    async fn pump(
        &self,
        transfer: &Transfer,
        mut upstream: Body,
        mut sealer: Envelope,
        counter: &AtomicU64,
        limiter: &RateLimiter,
        keys: &[Key],
        ended: &mut broadcast::Receiver<GrantEnded>,
        tx: &mpsc::Sender<Piece>,
    ) -> End {
        let grant = transfer.grant.id;
        let max_bytes = transfer.grant.quotas.max_bytes;
        let end = loop {
            let frame = tokio::select! {
                biased;
                cause = ended_cause(ended, grant, &self.review) => break End::GrantEnded(cause),
                _ = tx.closed() => break End::ClientGone,
                frame = upstream.frame() => frame,
            };
            let data = match frame {
                None => break End::Finished,
                Some(Err(_)) => break End::UpstreamFailed,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    // Trailers carry nothing we forward.
                    Err(_) => continue,
                },
            };
            let allowed = quota::take(counter, max_bytes, data.len() as u64) as usize;
            if allowed > 0 {
                tokio::select! {
                    biased;
                    cause = ended_cause(ended, grant, &self.review) => break End::GrantEnded(cause),
                        _ = tx.closed() => break End::ClientGone,
                    () = limiter.shape(keys, u32::try_from(allowed).unwrap_or(u32::MAX)) => {}
                }
                let sealed = match sealer.update(data.slice(..allowed)) {
                    Ok(sealed) => sealed,
                    Err(e) => {
                        tracing::error!(transfer_id = %transfer.id, error = %e, "sealing failed");
                        break End::UpstreamFailed;
                    }
                };
                // A client that stops reading must not keep a revocation waiting.
                if !sealed.is_empty() {
                    tokio::select! {
                        biased;
                        cause = ended_cause(ended, grant, &self.review) => break End::GrantEnded(cause),
                                sent = tx.send(sealed) => if sent.is_err() { break End::ClientGone },
                    }
                }
            }
            if allowed < data.len() {
                break End::Exhausted;
            }
        };
        match end {
            // A clean end, and the cut exactly at the byte limit, close the age
            // stream: what crossed decrypts, and the receipt says whether it was all.
            End::Finished | End::Exhausted => match sealer.finish() {
                Ok(tail) => {
                    if !tail.is_empty() && tx.send(tail).await.is_err() {
                        return End::ClientGone;
                    }
                    end
                }
                Err(e) => {
                    tracing::error!(transfer_id = %transfer.id, error = %e, "sealing failed at the end");
                    End::UpstreamFailed
                }
            },
            // Anything else leaves the age stream truncated, which decryptors
            // reject, and the response is reset so the client sees the cut.
            End::GrantEnded(_) | End::UpstreamFailed | End::ClientGone => {
                sealer.abort();
                end
            }
        }
    }

    /// Signs the receipt, closes the transfer in the store, counts it, and
    /// writes its access line.
    async fn close(&self, transfer: Transfer, end: End, digests: Digests) {
        let review = &self.review;
        let incomplete = match end {
            End::Finished => None,
            End::Exhausted => Some(Incomplete::Exhausted),
            End::GrantEnded(Cause::Expired) => Some(Incomplete::Expired),
            End::GrantEnded(Cause::Exhausted) => Some(Incomplete::Exhausted),
            End::GrantEnded(Cause::ValidationMissed) => Some(Incomplete::ValidationMissed),
            End::GrantEnded(Cause::Manual) => Some(Incomplete::Revoked),
            End::UpstreamFailed => Some(Incomplete::UpstreamFailed),
            // The end of the drain's grace period drops the connections
            // still open: those transfers lost their client because we
            // stopped. Told apart here, once, not in the per-chunk loop.
            End::ClientGone if self.closing.is_cancelled() => Some(Incomplete::ShuttingDown),
            End::ClientGone => Some(Incomplete::ClientGone),
        };
        let receipt = Receipt {
            transfer_id: transfer.id,
            grant_id: transfer.grant.id,
            grantee: transfer.grant.grantee.to_string(),
            route: transfer.route,
            category: transfer.category,
            target: transfer.target,
            plaintext_sha256: hex::encode(digests.plaintext_sha256),
            ciphertext_sha256: hex::encode(digests.ciphertext_sha256),
            plaintext_bytes: digests.plaintext_bytes,
            ciphertext_bytes: digests.ciphertext_bytes,
            started_at: transfer.started_at,
            ended_at: review.now(),
            complete: incomplete.is_none(),
            incomplete,
            audit_index: None,
            encrypted: transfer.sealed,
        };
        close_durably(review, &receipt).await;
        let duration = transfer.opened.elapsed();
        let jurisdiction = &transfer.grant.grantee_jurisdiction;
        self.metrics.closed(
            jurisdiction,
            receipt.incomplete,
            receipt.plaintext_bytes,
            receipt.ciphertext_bytes,
            duration,
        );
        // The access line: one per transfer. Never the target, the token or the receipt's JWS.
        tracing::info!(
            transfer_id = %receipt.transfer_id,
            peer = %transfer.grant.grantee,
            jurisdiction = %jurisdiction,
            grant_id = %receipt.grant_id,
            code = receipt.incomplete.map_or(CODE_OK, Incomplete::as_str),
            plaintext_bytes = receipt.plaintext_bytes,
            ciphertext_bytes = receipt.ciphertext_bytes,
            duration_ms = duration.as_millis() as u64,
            "transfer closed"
        );
        // The grant is over: its counter is no longer needed.
        if let End::GrantEnded(_) = end {
            self.quotas.forget(transfer.grant.id);
        }
    }

    /// Closes a transfer that never got a body from its upstream.
    pub async fn abandon(&self, transfer: Transfer) {
        self.close(transfer, End::UpstreamFailed, nothing()).await;
    }

    /// Ends a grant whose byte quota is used up.
    pub async fn exhaust(&self, grant: GrantId) {
        self.quotas.forget(grant);
        if let Err(e) = self.review.end(grant, Cause::Exhausted, None, None).await {
            tracing::error!(grant_id = %grant, error = %e, "cannot end the exhausted grant");
        }
    }
}

/// The digests of a transfer of which nothing is known (a failure of ours).
fn nothing() -> Digests {
    Digests {
        plaintext_sha256: [0; 32],
        ciphertext_sha256: [0; 32],
        plaintext_bytes: 0,
        ciphertext_bytes: 0,
    }
}

/// Resolves when `grant` ends, with the cause.
async fn ended_cause(
    ended: &mut broadcast::Receiver<GrantEnded>,
    grant: GrantId,
    review: &Review,
) -> Cause {
    loop {
        match ended.recv().await {
            // Exhaustion is enforced by the byte counter, exactly; transfers
            // already streaming under the grant end at the limit, not here.
            Ok(e) if e.id == grant && e.cause != Cause::Exhausted => return e.cause,
            Ok(_) => continue,
            // Missed announcements: ask the store whether ours was among them.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                if let Ok(Some(g)) = review.store.grant(grant).await
                    && let Some(ending) = g.ending
                    && ending.cause != Cause::Exhausted
                {
                    return ending.cause;
                }
            }
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// The longest wait between two attempts to write a receipt.
const CLOSE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Writes the transfer's receipt and audit entry, trying again while the
/// store is unavailable (a database away, a full disk): a transfer that
/// moved bytes is never left without its receipt while this gateway runs.
/// A stop in the meantime leaves it open, and the next start closes it as
/// interrupted.
async fn close_durably(review: &Review, receipt: &Receipt) {
    let mut wait = std::time::Duration::from_millis(100);
    loop {
        match review
            .store
            .close_transfer(receipt.clone(), review.receipt_signer())
            .await
        {
            Ok(_) => return,
            Err(e @ StoreError::Backend(_)) => {
                tracing::warn!(transfer_id = %receipt.transfer_id, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot write the transfer's receipt yet; will retry");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(CLOSE_RETRY_MAX);
            }
            // Closed already (by a replica that judged this one gone), or
            // gone from the store: nothing a retry would change.
            Err(e) => {
                tracing::error!(transfer_id = %receipt.transfer_id, error = %e, "cannot close the transfer");
                return;
            }
        }
    }
}
