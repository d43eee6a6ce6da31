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
//! Both are governor's GCRA over a concurrent map of per-key cells. Around it
//! this module adds what governor leaves to its user: a refusal that consumes
//! no key's budget, a clock that follows tokio's (so shaping can be tested on
//! paused time), and a hard bound on the number of keys held.

use std::num::NonZeroU32;
use std::ops::Add;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Duration;

use governor::clock::{Clock, ReasonablyRealtime, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{NotKeyed, StateStore};
use governor::{InsufficientCapacity, Jitter, Quota};

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

/// Random extra wait for a shaped transfer, so that transfers waiting on the
/// same key do not all wake at the same instant.
const SHAPE_JITTER: Duration = Duration::from_millis(1);

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
    requests: Limit<C>,
    bytes: Limit<C>,
    /// Bytes per cell of the byte limit.
    byte_unit: u32,
    clock: C,
}

impl RateLimiter {
    pub fn new(limits: Limits) -> Self {
        Self::with_clock(limits, TokioClock)
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    pub fn with_clock(limits: Limits, clock: C) -> Self {
        let (byte_quota, byte_unit) = limits.byte_quota();
        Self {
            limits,
            requests: Limit::new(limits.request_quota(), clock.clone()),
            bytes: Limit::new(byte_quota, clock.clone()),
            byte_unit,
            clock,
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
        // Keys before the first refusal were all admitted (charged); after
        // it, each admitted key is refunded at once.
        let mut wait: Option<Duration> = None;
        for (i, key) in keys.iter().enumerate() {
            let refused = if !self.requests.has_room_for(key) {
                Some(self.requests.time_to_idle())
            } else {
                match self.requests.limiter.check_key(key) {
                    Ok(()) => None,
                    Err(not_until) => Some(not_until.wait_time_from(self.clock.now())),
                }
            };
            match (refused, wait) {
                (None, None) => {}
                (None, Some(_)) => self.requests.refund(key),
                (Some(this), None) => {
                    keys[..i].iter().for_each(|k| self.requests.refund(k));
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
        for limit in [&self.requests, &self.bytes] {
            limit.limiter.retain_recent();
            limit.limiter.shrink_to_fit();
        }
    }

    /// Number of keys held across both limits (a key in both counts twice).
    pub fn keys_held(&self) -> usize {
        self.requests.cells.map.len() + self.bytes.cells.map.len()
    }
}

impl<C: ReasonablyRealtime + Clone> RateLimiter<C> {
    /// Waits until `n` bytes may pass for every key.
    ///
    /// `n` may exceed the byte burst: it passes in burst-sized pieces. Each
    /// piece is charged to the keys one after the other, so a key may be
    /// charged while the piece still waits on the next key; the bytes do pass
    /// in the end, so the totals are right. Sleeps on tokio's timer, hence the
    /// bound: the clock must advance with it (real time, or [`TokioClock`] on
    /// paused time; not a hand-stepped fake clock, which would wait forever).
    pub async fn shape(&self, keys: &[Key], n: u32) {
        let burst = self.bytes.burst;
        let mut cells = n.div_ceil(self.byte_unit);
        while let Some(piece) = NonZeroU32::new(cells.min(burst.get())) {
            for key in keys {
                self.wait_for_bytes(key, piece).await;
            }
            cells -= piece.get();
        }
    }

    async fn wait_for_bytes(&self, key: &Key, cells: NonZeroU32) {
        let jitter = Jitter::up_to(SHAPE_JITTER);
        loop {
            if !self.bytes.has_room_for(key) {
                tokio::time::sleep(jitter + self.bytes.time_to_idle()).await;
                continue;
            }
            match self.bytes.limiter.check_key_n(key, cells) {
                Ok(Ok(())) => return,
                Ok(Err(not_until)) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    tokio::time::sleep(jitter + wait).await;
                }
                // `shape` never asks for more than the burst, so this cannot
                // happen; letting the bytes pass beats waiting forever.
                Err(InsufficientCapacity(_)) => return,
            }
        }
    }
}

/// One limit: governor's limiter and a second handle on its cells.
struct Limit<C: Clock> {
    limiter: governor::RateLimiter<Key, Shared, C, NoOpMiddleware<C::Instant>>,
    cells: Arc<Cells>,
    /// One cell's cost: what a refund gives back.
    cell: Nanos,
    burst: NonZeroU32,
    /// The longest a key's state can take to become idle (forgettable):
    /// a full burst plus one cell.
    idle_after: Duration,
    last_sweep: Mutex<Option<C::Instant>>,
}

impl<C: Clock> Limit<C> {
    fn new(quota: Quota, clock: C) -> Self {
        let cells = Arc::new(Cells::default());
        let interval = quota.replenish_interval();
        Self {
            limiter: governor::RateLimiter::new(quota, Shared(Arc::clone(&cells)), clock),
            cells,
            cell: Nanos::from(interval),
            burst: quota.burst_size(),
            idle_after: quota.burst_size_replenished_in() + interval,
            last_sweep: Mutex::new(None),
        }
    }

    /// Whether `key` may be charged: it is held already, or there is room
    /// for it. One atomic load while the map is well under the cap.
    fn has_room_for(&self, key: &Key) -> bool {
        self.cells.estimate.load(Ordering::Relaxed) < MAX_KEYS
            || self.cells.map.contains_key(key)
            || self.make_room()
    }

    /// Whether a new key may be added; at the cap, sweeps idle keys first
    /// (at most once per [`SWEEP_INTERVAL`], and without shrinking: a map
    /// at the cap will fill again).
    fn make_room(&self) -> bool {
        let len = self.cells.map.len();
        if len < MAX_KEYS {
            self.cells.estimate.store(len, Ordering::Relaxed);
            return true;
        }
        let guard = match self.last_sweep.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            // Another caller is sweeping.
            Err(TryLockError::WouldBlock) => None,
        };
        if let Some(mut last) = guard {
            let now = self.limiter.clock().now();
            let interval = Nanos::from(SWEEP_INTERVAL);
            if last.is_none_or(|at| now.duration_since(at) >= interval) {
                *last = Some(now);
                self.limiter.retain_recent();
            }
        }
        self.cells.map.len() < MAX_KEYS
    }

    fn time_to_idle(&self) -> Duration {
        self.idle_after.max(SWEEP_INTERVAL)
    }

    /// Gives back one cell charged to `key`. GCRA charges a cell by moving
    /// the key's theoretical arrival time one cell later; moving it back is
    /// exact whatever else happened in between.
    fn refund(&self, key: &Key) {
        if let Some(state) = self.cells.map.get(key) {
            let cell = self.cell;
            let _: Result<(), ()> = state.measure_and_replace(&NotKeyed::NonKey, |tat| match tat {
                Some(tat) => Ok(((), tat.saturating_sub(cell))),
                None => Err(()),
            });
        }
    }
}

/// governor's concurrent map of per-key states, and an estimate of its
/// length: `DashMap::len` locks every shard, too slow to ask per request.
#[derive(Default)]
struct Cells {
    map: DashMapStateStore<Key>,
    /// Bumped on every insert, reset to the map's length by every sweep;
    /// concurrent first uses of one key may count it twice, which only
    /// brings a sweep forward.
    estimate: AtomicUsize,
}

/// The cells as governor's limiter holds them: it does not lend its store
/// out, and [`Limit`] needs to look up, refund and count keys.
struct Shared(Arc<Cells>);

impl StateStore for Shared {
    type Key = Key;

    fn measure_and_replace<T, F, E>(&self, key: &Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.0.map.get(key) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        self.0.estimate.fetch_add(1, Ordering::Relaxed);
        let state = self.0.map.entry(key.clone()).or_default();
        state.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl ShrinkableKeyedStateStore<Key> for Shared {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&self.0.map, drop_below);
        self.0.estimate.store(self.0.map.len(), Ordering::Relaxed);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&self.0.map);
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
