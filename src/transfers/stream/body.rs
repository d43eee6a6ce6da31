//! A transfer's response body: the pieces its task queues, each counted in
//! the transfer's [`Tally`] as the connection takes it, and the cut, which
//! is answered ahead of any piece still queued so the client's stream is
//! reset rather than ended cleanly, and the pieces it drops are neither
//! sent nor counted.
//!
//! What the connection took may still sit in its write buffers (hyper's,
//! rustls's, HTTP/2's per stream), which a reset would throw away: so the
//! body answers the cut only once the connection's writes have settled
//! ([`Writes`]): flushed, and quiet for [`CUT_QUIET`]. A reader that
//! stopped reading never lets them settle; after [`CUT_WAIT_MAX`] the
//! response is reset all the same, and what was still buffered is lost
//! although counted as sent.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use tokio::sync::{mpsc, oneshot, watch};

use crate::transfer::seal::{Digests, Piece, Tally};
use crate::wire::{Body, BoxError};

/// How long a connection's writes must have been flushed and quiet before a
/// cut response is reset: the HTTP/2 connection task writes a stream's
/// queued frames one by one, flushing between them.
pub(super) const CUT_QUIET: std::time::Duration = std::time::Duration::from_millis(10);

/// The longest a cut waits for the connection's writes to settle.
pub(super) const CUT_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection's I/O stream reports its writes here: [`wrote`](Self::wrote)
/// when bytes go in, [`flushed`](Self::flushed) when they reached the socket.
/// Only changes reach the watch, so the write path takes no lock while the
/// state stays as it is.
pub struct WriteState {
    watch: watch::Sender<bool>,
    /// The watch's value, kept by its one writer.
    dirty: bool,
}

/// Watches whether a connection has writes not yet flushed: a cut response
/// waits for them to settle, so the bytes the connection took leave before
/// the reset.
#[derive(Clone)]
pub struct Writes(watch::Receiver<bool>);

impl Writes {
    pub fn channel() -> (WriteState, Self) {
        let (watch, rx) = watch::channel(false);
        let state = WriteState {
            watch,
            dirty: false,
        };
        (state, Self(rx))
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
    pub fn wrote(&mut self) {
        self.set(true);
    }

    /// hyper flushes on every turn of its loop: a wake-up per flush would
    /// keep a waiting cut spinning it, so only a change is sent.
    pub fn flushed(&mut self) {
        self.set(false);
    }

    fn set(&mut self, dirty: bool) {
        if self.dirty != dirty {
            self.dirty = dirty;
            self.watch.send_replace(dirty);
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

/// The transfer task's end of its response body.
pub(super) struct Outlet {
    /// `None` once the queue is closed.
    queue: Option<mpsc::Sender<Piece>>,
    outgoing: Arc<Mutex<Outgoing>>,
    wake: oneshot::Sender<()>,
    drained: oneshot::Receiver<()>,
}

/// A response body and its outlet: pieces of a sealed payload (`sealed`)
/// or of one passed through, on a connection whose `writes` a cut waits for.
pub(super) fn response(sealed: bool, writes: Option<Writes>) -> (Outlet, Body) {
    let (queue, frames) = mpsc::channel::<Piece>(2);
    let (wake_tx, wake) = oneshot::channel::<()>();
    let (drained_tx, drained) = oneshot::channel::<()>();
    let outgoing = Arc::new(Mutex::new(Outgoing {
        tally: Tally::new(sealed),
        cut: None,
        drained: false,
    }));
    let body = SealedBody {
        frames,
        outgoing: Arc::clone(&outgoing),
        wake: Some(wake),
        drained: Some(drained_tx),
        writes,
        settled: None,
        over: false,
    };
    let outlet = Outlet {
        queue: Some(queue),
        outgoing,
        wake: wake_tx,
        drained,
    };
    (outlet, body.boxed())
}

impl Outlet {
    /// Where the task queues pieces, two at most, until it closes the queue.
    pub fn queue(&self) -> &mpsc::Sender<Piece> {
        self.queue
            .as_ref()
            .expect("the queue is open until the task closes it, after the pump")
    }

    /// No more pieces: the body ends once it handed out those queued.
    pub fn close_queue(&mut self) {
        self.queue = None;
    }

    /// Resolves when the body handed out its last piece, or was dropped.
    pub async fn drained(&mut self) {
        let _ = (&mut self.drained).await;
    }

    /// Ends the response: `cut`, told whether the body has drained, says
    /// why it is cut (`None`: it is not). The cut is set before the queue
    /// closes, since a body that found the queue closed first would end the
    /// response cleanly. Returns the digests of what left.
    pub fn end(mut self, cut: impl FnOnce(bool) -> Option<&'static str>) -> Digests {
        let digests = {
            let mut out = lock(&self.outgoing);
            out.cut = cut(out.drained);
            out.tally.digests()
        };
        self.close_queue();
        // Reaches the body at its next poll, ahead of any piece still queued.
        let _ = self.wake.send(());
        digests
    }
}

#[derive(Debug, thiserror::Error)]
#[error("transfer cut: {0}")]
struct Cut(&'static str);

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
