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
//! [`Tally`], and a cut (set under the same lock) stops it handing out any
//! more, so the pieces still queued at a cut are neither sent nor counted.
//! What the connection took may still sit in its write buffers (hyper's,
//! rustls's, HTTP/2's per stream), which a reset would throw away: so the
//! body answers the cut only once the connection's writes have settled
//! ([`Writes`]): flushed, and quiet for [`CUT_QUIET`]. A reader that
//! stopped reading never lets them settle; after [`CUT_WAIT_MAX`] the
//! response is reset all the same, and what was still buffered is lost
//! although counted as sent.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use hyper::body::Frame;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::quota::{self, ByteQuotas};
use super::receipt::{Incomplete, Receipt, TransferId};
use super::seal::{Digests, Piece, Sealer, Tally, Wrapper};
use crate::clock::Timestamp;
use crate::grant::{Cause, Grant, GrantId};
use crate::metrics::{CODE_OK, TransferMetrics};
use crate::ratelimit::{Key, RateLimiter};
use crate::review::{GrantEnded, Review};
use crate::server::{Body, BoxError};
use crate::store::StoreError;

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

/// How long a connection's writes must have been flushed and quiet before a
/// cut response is reset: the HTTP/2 connection task writes a stream's
/// queued frames one by one, flushing between them.
pub const CUT_QUIET: std::time::Duration = std::time::Duration::from_millis(10);

/// The longest a cut waits for the connection's writes to settle.
pub const CUT_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection's I/O stream reports its writes here: [`wrote`](Self::wrote)
/// when bytes go in, [`flushed`](Self::flushed) when they reached the socket.
pub struct WriteState(watch::Sender<bool>);

/// Watches whether a connection has writes not yet flushed: a cut response
/// waits for them to settle, so the bytes the connection took leave before
/// the reset.
#[derive(Clone)]
pub struct Writes(watch::Receiver<bool>);

impl Writes {
    pub fn channel() -> (WriteState, Self) {
        let (tx, rx) = watch::channel(false);
        (WriteState(tx), Self(rx))
    }

    /// Resolves once the writes were flushed and nothing was written for
    /// [`CUT_QUIET`], or after [`CUT_WAIT_MAX`].
    async fn settled(mut self) {
        let deadline = tokio::time::Instant::now() + CUT_WAIT_MAX;
        loop {
            let dirty = *self.0.borrow_and_update();
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                changed = self.0.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(CUT_QUIET), if !dirty => return,
            }
        }
    }
}

impl WriteState {
    pub fn wrote(&self) {
        self.0
            .send_if_modified(|dirty| !std::mem::replace(dirty, true));
    }

    /// Notifies only a change: hyper flushes on every turn of its loop,
    /// and a wake-up per flush would keep a waiting cut spinning it.
    pub fn flushed(&self) {
        self.0
            .send_if_modified(|dirty| std::mem::replace(dirty, false));
    }
}

/// What every transfer shares.
pub struct Movers {
    pub review: Arc<Review>,
    pub quotas: ByteQuotas,
    pub metrics: TransferMetrics,
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

#[derive(Debug, thiserror::Error)]
#[error("transfer cut: {0}")]
struct Cut(&'static str);

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

/// What a transfer's task and its response body share.
struct Outgoing {
    /// What the connection took from the body.
    tally: Tally,
    /// Set by the task to cut the response: the body answers this error at
    /// its next poll, ahead of any piece still queued, and hands out nothing more.
    cut: Option<&'static str>,
    /// The body handed out the last piece and ended cleanly.
    drained: bool,
}

impl Movers {
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
        let (tx, frames) = mpsc::channel::<Piece>(2);
        let (wake_tx, wake) = oneshot::channel::<()>();
        let (drained_tx, mut drained) = oneshot::channel::<()>();
        let outgoing = Arc::new(Mutex::new(Outgoing {
            tally: Tally::new(recipient.is_some()),
            cut: None,
            drained: false,
        }));
        let counter = self.quotas.counter(transfer.grant.id, used_bytes);
        let movers = self.clone();
        let shared = Arc::clone(&outgoing);
        tokio::spawn(async move {
            let wrapper = match &recipient {
                Some(recipient) => Sealer::new(recipient).map(Wrapper::Seal),
                None => Ok(Wrapper::Pass),
            };
            let queued = match wrapper {
                Ok(wrapper) => {
                    movers
                        .pump(
                            &transfer, upstream, wrapper, &counter, &limiter, &keys, &mut ended,
                            &tx,
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
                movers.exhaust(transfer.grant.id).await;
            }
            let (end, digests) = match queued {
                // Everything is queued after a clean end; it has crossed once
                // the body hands out the last piece, and a grant that ends
                // before then still cuts what is left.
                End::Finished | End::Exhausted => {
                    drop(tx);
                    let end = tokio::select! {
                        biased;
                        _ = &mut drained => End::ClientGone,
                        cause = ended_cause(&mut ended, transfer.grant.id, &movers.review) => End::GrantEnded(cause),
                    };
                    let mut out = lock(&shared);
                    let end = if out.drained { queued } else { end };
                    out.cut = end.cut();
                    (end, out.tally.digests())
                }
                // The cut is set before the queue closes: a body that found
                // the queue closed first would end the response cleanly.
                cut => {
                    let digests = {
                        let mut out = lock(&shared);
                        out.cut = cut.cut();
                        out.tally.digests()
                    };
                    drop(tx);
                    (cut, digests)
                }
            };
            // Reaches the body at its next poll, ahead of any piece still queued.
            let _ = wake_tx.send(());
            movers.close(transfer, end, digests).await;
        });
        SealedBody {
            frames,
            outgoing,
            wake: Some(wake),
            drained: Some(drained_tx),
            writes,
            settled: None,
            over: false,
        }
        .boxed()
    }

    /// The per-chunk loop: returns how it ended. After a clean end (finished,
    /// or cut exactly at the byte quota) everything to send is queued.
    #[allow(clippy::too_many_arguments)]
    async fn pump(
        &self,
        transfer: &Transfer,
        mut upstream: Body,
        mut sealer: Wrapper,
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

/// The response body of a transfer: the pieces from the transfer's task,
/// each counted as the connection takes it, or the cut, which is delivered
/// before any piece still queued so the client's stream is reset rather
/// than ended cleanly.
struct SealedBody {
    frames: mpsc::Receiver<Piece>,
    outgoing: Arc<Mutex<Outgoing>>,
    /// Wakes a waiting body when the task sets the cut.
    wake: Option<oneshot::Receiver<()>>,
    /// Dropped when the body has handed out its last piece, or is dropped.
    drained: Option<oneshot::Sender<()>>,
    writes: Option<Writes>,
    /// After the cut: resolves once the connection's writes settled.
    settled: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>>,
    /// The body ended (cleanly or cut): nothing more comes out.
    over: bool,
}

impl hyper::body::Body for SealedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.over {
            return Poll::Ready(None);
        }
        if let Some(wake) = this.wake.as_mut()
            && Pin::new(wake).poll(cx).is_ready()
        {
            this.wake = None;
        }
        let mut out = lock(&this.outgoing);
        if let Some(why) = out.cut {
            drop(out);
            this.frames.close();
            // What the connection took may still be in its buffers: reset
            // only once they are flushed, so those bytes reach the peer.
            if let Some(writes) = this.writes.take() {
                this.settled = Some(Box::pin(writes.settled()));
            }
            if let Some(settled) = this.settled.as_mut() {
                if settled.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.settled = None;
            }
            this.over = true;
            return Poll::Ready(Some(Err(Box::new(Cut(why)))));
        }
        match this.frames.poll_recv(cx) {
            Poll::Ready(Some(piece)) => Poll::Ready(Some(Ok(Frame::data(out.tally.take(piece))))),
            Poll::Ready(None) => {
                out.drained = true;
                drop(out);
                this.over = true;
                this.drained = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The shared state holds counts only; a panic elsewhere cannot leave it
/// half-updated in a way that matters, so a poisoned lock is still usable.
fn lock(outgoing: &Mutex<Outgoing>) -> MutexGuard<'_, Outgoing> {
    outgoing.lock().unwrap_or_else(PoisonError::into_inner)
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
