//! Rate limits on the border.
//!
//! Two limits, each keyed per peer SPIFFE ID and per grant, with values set
//! per jurisdiction pair ([`Limits`]; the caller keeps one [`RateLimiter`]
//! per pair):
//!
//! - requests per second: a request over the limit is refused (429, with
//!   `Retry-After` from [`RetryAfter::header_seconds`]);
//! - bytes per second: a transfer over the limit is shaped: it waits, it is
//!   never refused.
//!
//! Both are GCRA over governor's concurrent map of per-key states: requests
//! through governor's limiter, bytes by reservation (first come, first
//! served; governor only polls). Around them this module adds what governor
//! leaves to its user: a refusal that consumes no key's budget, a clock that
//! follows tokio's (so shaping can be tested on paused time), and a hard
//! bound on the number of keys held.

use std::convert::Infallible;
use std::num::NonZeroU32;
use std::ops::Add;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Duration;

use governor::Quota;
use governor::clock::{Clock, ReasonablyRealtime, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{NotKeyed, StateStore};

/// The transfer pipeline's chunk; a byte burst below it would split chunks.
pub const CHUNK_BYTES: u32 = 64 * 1024;

/// Most keys one limit holds (per jurisdiction pair, per limit).
///
/// Keys are verified identities and grant ids, but nothing bounds how many a
/// flood can present between two periodic [`RateLimiter::forget_idle`] calls.
/// An entry costs roughly 150 bytes with a 60-byte SPIFFE ID, so the cap
/// keeps a limit under ~15 MB. At the cap a new key first triggers a sweep of
/// idle keys (at most once per [`SWEEP_INTERVAL`]); if every held key is
/// still active, a request under a new key is refused (fail closed) and a
/// transfer under a new key waits. We do not evict active keys: an evicted
/// key would come back with a fresh burst, so a flood would weaken exactly
/// the limits it is flooding. Concurrent callers can overshoot the cap by at
/// most their number.
pub const MAX_KEYS: usize = 100_000;

/// Least time between two sweeps triggered by the cap. A sweep walks every
/// key; without this a flood at the cap would walk 100 000 keys per request.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// Finest byte-limit granularity governor can hold exactly: it keeps one
/// cell's cost in whole nanoseconds, so 64 MiB/s at one byte per cell (14.9 ns,
/// kept as 14 ns) would let 6% too much through. Bytes are counted in units of
/// the largest power of two not above `bytes_per_second / CELLS_PER_SECOND`
/// (at least one byte), which keeps a cell at 0.5–1 µs and the rounding under
/// 0.2%; a power of two divides 64 KiB chunks and power-of-two bursts exactly.
/// A call to `shape` is charged whole units, rounded up.
const CELLS_PER_SECOND: u32 = 1_000_000;

/// Limits for one jurisdiction pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Sustained requests per second, per key.
    pub requests_per_second: NonZeroU32,
    /// Requests a key may make at once after being idle.
    pub request_burst: NonZeroU32,
    /// Sustained bytes per second, per key.
    pub bytes_per_second: NonZeroU32,
    /// Bytes a key may move at once after being idle; at least [`CHUNK_BYTES`].
    pub byte_burst: NonZeroU32,
}

impl Limits {
    /// Validated limits; the error names the offending field.
    pub fn new(
        requests_per_second: NonZeroU32,
        request_burst: NonZeroU32,
        bytes_per_second: NonZeroU32,
        byte_burst: NonZeroU32,
    ) -> Result<Self, String> {
        if byte_burst.get() < CHUNK_BYTES {
            return Err(format!(
                "byte_burst must be at least {CHUNK_BYTES} bytes (one 64 KiB chunk), got {byte_burst}"
            ));
        }
        Ok(Self {
            requests_per_second,
            request_burst,
            bytes_per_second,
            byte_burst,
        })
    }

    fn request_quota(&self) -> Quota {
        Quota::per_second(self.requests_per_second).allow_burst(self.request_burst)
    }

    /// The byte quota in cells, and the bytes per cell.
    fn byte_quota(&self) -> (Quota, u32) {
        let bps = self.bytes_per_second.get();
        let unit = 1 << (bps / CELLS_PER_SECOND).max(1).ilog2();
        // Both at least 1 with validated limits: unit <= bps, and
        // unit <= 2^12 < CHUNK_BYTES <= byte_burst.
        let rate = NonZeroU32::new(bps / unit).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(self.byte_burst.get() / unit).unwrap_or(NonZeroU32::MIN);
        (Quota::per_second(rate).allow_burst(burst), unit)
    }
}

impl Default for Limits {
    fn default() -> Self {
        const fn nz(n: u32) -> NonZeroU32 {
            match NonZeroU32::new(n) {
                Some(n) => n,
                None => NonZeroU32::MIN,
            }
        }
        Self {
            requests_per_second: nz(50),
            request_burst: nz(100),
            bytes_per_second: nz(64 << 20),
            byte_burst: nz(4 << 20),
        }
    }
}

/// What a limit is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// A peer, by SPIFFE ID.
    Peer(String),
    /// A grant, by grant id.
    Grant(String),
}

/// How long to wait before retrying a refused request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header: rounded up, at least 1.
    pub fn header_seconds(&self) -> u64 {
        let whole = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        whole.max(1)
    }
}

/// The request and byte limits of one jurisdiction pair.
///
/// Generic over the clock: [`TokioClock`] in the gateway (it follows paused
/// tokio time), `governor::clock::FakeRelativeClock` in tests that step time
/// by hand.
pub struct RateLimiter<C: Clock = TokioClock> {
    limits: Limits,
    requests: RequestLimit<C>,
    bytes: ByteLimit<C>,
}

impl RateLimiter {
    pub fn new(limits: Limits) -> Self {
        Self::with_clock(limits, TokioClock)
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    pub fn with_clock(limits: Limits, clock: C) -> Self {
        Self {
            limits,
            requests: RequestLimit::new(limits.request_quota(), clock.clone()),
            bytes: ByteLimit::new(&limits, clock),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Admits one request for every key, or says how long to wait before
    /// retrying: the longest wait among the keys.
    ///
    /// A refusal consumes no key's budget: each key is charged as it is
    /// checked, and if any key refuses, the keys that admitted are refunded.
    /// So a peer hammering an exhausted grant does not drain its own peer
    /// budget, and a peer over its own limit does not drain a grant it shares.
    /// Between charge and refund a concurrent request may see the charge and
    /// be refused: the error is always towards refusing, never towards
    /// admitting too much. A key listed twice is charged twice.
    pub fn check_request(&self, keys: &[Key]) -> Result<(), RetryAfter> {
        let requests = &self.requests;
        // Keys before the first refusal were all admitted (charged); after
        // it, each admitted key is refunded at once.
        let mut wait: Option<Duration> = None;
        for (i, key) in keys.iter().enumerate() {
            let refused = if !requests
                .cells
                .has_room_for(key, || requests.limiter.retain_recent())
            {
                Some(requests.idle_after.max(SWEEP_INTERVAL))
            } else {
                match requests.limiter.check_key(key) {
                    Ok(()) => None,
                    Err(not_until) => {
                        Some(not_until.wait_time_from(requests.limiter.clock().now()))
                    }
                }
            };
            match (refused, wait) {
                (None, None) => {}
                (None, Some(_)) => requests.cells.refund(key, requests.cell),
                (Some(this), None) => {
                    for earlier in &keys[..i] {
                        requests.cells.refund(earlier, requests.cell);
                    }
                    wait = Some(this);
                }
                (Some(this), Some(longest)) => wait = Some(longest.max(this)),
            }
        }
        wait.map_or(Ok(()), |wait| Err(RetryAfter(wait)))
    }

    /// Drops state for keys not seen recently: keys whose state is no
    /// different from a fresh key's. Call it periodically.
    pub fn forget_idle(&self) {
        self.requests.limiter.retain_recent();
        self.requests.limiter.shrink_to_fit();
        self.bytes.sweep();
        self.bytes.cells.map.shrink_to_fit();
    }

    /// Number of keys held across both limits (a key in both counts twice).
    pub fn keys_held(&self) -> usize {
        self.requests.cells.map.len() + self.bytes.cells.map.len()
    }
}

impl<C: ReasonablyRealtime + Clone> RateLimiter<C> {
    /// Waits until `n` bytes may pass for every key.
    ///
    /// Each call reserves its bytes at once, so waiting transfers are served
    /// in the order they asked, and a transfer cannot be starved by others
    /// that happen to wake up first. `n` may exceed the byte burst: it is
    /// reserved one chunk ([`CHUNK_BYTES`], or the burst if smaller) at a
    /// time, so that a large call takes turns with other transfers' chunks
    /// rather than holding every key for its whole length. Each key is
    /// charged for a piece at once and the piece waits for the latest of
    /// them, so a key can be charged a little before its bytes pass, never
    /// for more than pass.
    ///
    /// Cancel-safe: a call dropped while waiting gives back the piece it had
    /// reserved. Sleeps on tokio's timer, hence the bound: the clock must
    /// advance with it (real time, or [`TokioClock`] on paused time; not a
    /// hand-stepped fake clock).
    pub async fn shape(&self, keys: &[Key], n: u32) {
        let bytes = &self.bytes;
        let mut cells = n.div_ceil(bytes.unit);
        while cells > 0 {
            let piece = cells.min(bytes.piece);
            for key in keys {
                while !bytes.cells.has_room_for(key, || bytes.sweep()) {
                    tokio::time::sleep(bytes.idle_after.max(SWEEP_INTERVAL)).await;
                }
            }
            let cost = bytes.cell * u64::from(piece);
            let mut reserved = Reservation {
                cells: &bytes.cells,
                keys: &keys[..0],
                cost,
            };
            let mut ready = Nanos::from(0);
            for (i, key) in keys.iter().enumerate() {
                ready = ready.max(bytes.reserve(key, cost));
                reserved.keys = &keys[..=i];
            }
            let wait = ready.saturating_sub(bytes.cells.now());
            if wait > Nanos::from(0) {
                tokio::time::sleep(Duration::from(wait)).await;
            }
            reserved.keys = &[];
            cells -= piece;
        }
    }
}

/// Requests: governor's limiter over shared cells.
struct RequestLimit<C: Clock> {
    limiter: governor::RateLimiter<Key, Shared<C>, C, NoOpMiddleware<C::Instant>>,
    cells: Arc<Cells<C>>,
    /// One request's cost: what a refund gives back.
    cell: Nanos,
    /// The longest a key's state can take to become idle (forgettable):
    /// a full burst plus one cell.
    idle_after: Duration,
}

impl<C: Clock + Clone> RequestLimit<C> {
    fn new(quota: Quota, clock: C) -> Self {
        let cells = Arc::new(Cells::new(clock.clone()));
        let interval = quota.replenish_interval();
        Self {
            limiter: governor::RateLimiter::new(quota, Shared(Arc::clone(&cells)), clock),
            cells,
            // As governor's GCRA does: a rate above 10^9/s costs 1 ns a cell.
            cell: Nanos::from(interval.max(Duration::from_nanos(1))),
            idle_after: quota.burst_size_replenished_in() + interval,
        }
    }
}

/// Bytes: GCRA by reservation over the same kind of cells.
///
/// governor only answers "now or not yet", so waiters would poll, and
/// whichever wakes first would win: under contention one transfer can starve
/// another. Here a call moves the key's theoretical arrival time (GCRA's
/// state, the same as governor keeps) forward by its cost at once, and
/// sleeps until that time less the burst: the same admission time governor
/// would compute for a lone caller, in first-come order for many.
struct ByteLimit<C: Clock> {
    cells: Arc<Cells<C>>,
    /// Bytes per cell.
    unit: u32,
    /// The most cells one reservation takes: a chunk, or the burst.
    piece: u32,
    /// One cell's cost.
    cell: Nanos,
    /// The burst's cost: how far ahead of now a key's state may run while
    /// a caller still passes at once.
    burst: Nanos,
    idle_after: Duration,
}

impl<C: Clock> ByteLimit<C> {
    fn new(limits: &Limits, clock: C) -> Self {
        let (quota, unit) = limits.byte_quota();
        let interval = quota.replenish_interval().max(Duration::from_nanos(1));
        let burst = quota.burst_size().get();
        Self {
            cells: Arc::new(Cells::new(clock)),
            unit,
            piece: (CHUNK_BYTES / unit).min(burst),
            cell: Nanos::from(interval),
            burst: Nanos::from(interval) * u64::from(burst),
            idle_after: quota.burst_size_replenished_in() + interval,
        }
    }

    /// Charges `cost` to `key` and returns when it may pass (in the cells'
    /// time).
    fn reserve(&self, key: &Key, cost: Nanos) -> Nanos {
        let now = self.cells.now();
        let reserved: Result<Nanos, Infallible> = self.cells.measure_and_replace(key, |tat| {
            let next = tat.map_or(now, |tat| tat.max(now)) + cost;
            Ok((next, next))
        });
        let Ok(next) = reserved;
        next.saturating_sub(self.burst)
    }

    /// Forgets keys whose state is no different from a fresh key's, by
    /// governor's rule (`governor::RateLimiter::retain_recent`).
    fn sweep(&self) {
        self.cells
            .retain(self.cells.now().saturating_sub(self.cell));
    }
}

/// Gives back a shaped piece if the call waiting for it is dropped.
struct Reservation<'a, C: Clock> {
    cells: &'a Cells<C>,
    /// The keys charged and not yet passed.
    keys: &'a [Key],
    cost: Nanos,
}

impl<C: Clock> Drop for Reservation<'_, C> {
    fn drop(&mut self) {
        for key in self.keys {
            self.cells.refund(key, self.cost);
        }
    }
}

/// governor's concurrent map of per-key GCRA states, with what the cap needs.
struct Cells<C: Clock> {
    map: DashMapStateStore<Key>,
    /// The map's length, kept without locking: `DashMap::len` locks every
    /// shard, too slow to ask per request. Bumped on every insert, reset by
    /// every sweep; concurrent first uses of one key may count it twice,
    /// which only brings a sweep forward.
    estimate: AtomicUsize,
    clock: C,
    origin: C::Instant,
    last_sweep: Mutex<Option<C::Instant>>,
}

impl<C: Clock> Cells<C> {
    fn new(clock: C) -> Self {
        Self {
            map: DashMapStateStore::default(),
            estimate: AtomicUsize::new(0),
            origin: clock.now(),
            clock,
            last_sweep: Mutex::new(None),
        }
    }

    /// Time since these cells were made, the scale of states kept by
    /// [`ByteLimit`] (governor keeps its own for requests).
    fn now(&self) -> Nanos {
        self.clock.now().duration_since(self.origin)
    }

    /// Updates `key`'s state as governor's stores do, adding the key if new.
    fn measure_and_replace<T, E>(
        &self,
        key: &Key,
        f: impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    ) -> Result<T, E> {
        if let Some(state) = self.map.get(key) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        self.estimate.fetch_add(1, Ordering::Relaxed);
        let state = self.map.entry(key.clone()).or_default();
        state.measure_and_replace(&NotKeyed::NonKey, f)
    }

    /// Whether `key` may be charged: it is held already, or there is room
    /// for it (one atomic load while well under the cap). At the cap, runs
    /// `sweep` first, at most once per [`SWEEP_INTERVAL`], and without
    /// shrinking the map: a map at the cap will fill again.
    fn has_room_for(&self, key: &Key, sweep: impl FnOnce()) -> bool {
        if self.estimate.load(Ordering::Relaxed) < MAX_KEYS || self.map.contains_key(key) {
            return true;
        }
        let len = self.map.len();
        if len < MAX_KEYS {
            self.estimate.store(len, Ordering::Relaxed);
            return true;
        }
        let guard = match self.last_sweep.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            // Another caller is sweeping.
            Err(TryLockError::WouldBlock) => None,
        };
        if let Some(mut last) = guard {
            let now = self.clock.now();
            let interval = Nanos::from(SWEEP_INTERVAL);
            if last.is_none_or(|at| now.duration_since(at) >= interval) {
                *last = Some(now);
                sweep();
            }
        }
        self.map.len() < MAX_KEYS
    }

    fn retain(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&self.map, drop_below);
        self.estimate.store(self.map.len(), Ordering::Relaxed);
    }

    /// Gives back `cost` charged to `key`. GCRA charges by moving the key's
    /// theoretical arrival time later by the cost; moving it back is exact
    /// whatever else happened in between.
    fn refund(&self, key: &Key, cost: Nanos) {
        if let Some(state) = self.map.get(key) {
            let _: Result<(), ()> = state.measure_and_replace(&NotKeyed::NonKey, |tat| match tat {
                Some(tat) => Ok(((), tat.saturating_sub(cost))),
                None => Err(()),
            });
        }
    }
}

/// The cells as governor's limiter holds them: it does not lend its store
/// out, and the cap and refunds need it.
struct Shared<C: Clock>(Arc<Cells<C>>);

impl<C: Clock> StateStore for Shared<C> {
    type Key = Key;

    fn measure_and_replace<T, F, E>(&self, key: &Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl<C: Clock> ShrinkableKeyedStateStore<Key> for Shared<C> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0.retain(drop_below);
    }

    fn shrink_to_fit(&self) {
        self.0.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.0.map.len()
    }

    fn is_empty(&self) -> bool {
        self.0.map.is_empty()
    }
}

/// A governor clock that reads tokio's clock, so limits follow paused and
/// advanced time in tests (`#[tokio::test(start_paused = true)]`). Outside a
/// runtime, or with time not paused, it is the monotonic clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioClock;

/// An instant of [`TokioClock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokioInstant(tokio::time::Instant);

impl Clock for TokioClock {
    type Instant = TokioInstant;

    fn now(&self) -> TokioInstant {
        TokioInstant(tokio::time::Instant::now())
    }
}

impl ReasonablyRealtime for TokioClock {}

impl Add<Nanos> for TokioInstant {
    type Output = Self;

    fn add(self, d: Nanos) -> Self {
        Self(self.0 + Duration::from(d))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_duration_since(earlier.0))
    }

    fn saturating_sub(&self, d: Nanos) -> Self {
        self.0.checked_sub(Duration::from(d)).map_or(*self, Self)
    }
}

#[cfg(test)]
mod tests;
