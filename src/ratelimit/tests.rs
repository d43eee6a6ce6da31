use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::FakeRelativeClock;

use super::*;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn peer(name: &str) -> Key {
    Key::Peer(format!("spiffe://fi.example/{name}"))
}

fn grant(id: &str) -> Key {
    Key::Grant(id.to_owned())
}

/// 50 requests/s, burst 100: one cell every 20 ms.
fn fake() -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    (
        RateLimiter::with_clock(Limits::default(), clock.clone()),
        clock,
    )
}

fn admitted(limiter: &RateLimiter<FakeRelativeClock>, keys: &[Key], times: u32) -> u32 {
    (0..times)
        .filter(|_| limiter.check_request(keys).is_ok())
        .count() as u32
}

fn close_to(actual: Duration, expected: Duration, tolerance: Duration) -> bool {
    actual.abs_diff(expected) <= tolerance
}

#[test]
fn limits_validate_the_byte_burst_and_default_sensibly() {
    let err = Limits::new(nz(10), nz(10), nz(1 << 20), nz(1000)).unwrap_err();
    assert!(err.contains("byte_burst"), "{err}");
    let ok = Limits::new(nz(10), nz(20), nz(1 << 20), nz(CHUNK_BYTES)).unwrap();
    assert_eq!(ok.byte_burst.get(), 65_536);

    let d = Limits::default();
    assert_eq!(
        Limits::new(
            d.requests_per_second,
            d.request_burst,
            d.bytes_per_second,
            d.byte_burst
        ),
        Ok(d)
    );
    assert_eq!(
        (d.requests_per_second.get(), d.request_burst.get()),
        (50, 100)
    );
    assert_eq!(
        (d.bytes_per_second.get(), d.byte_burst.get()),
        (64 << 20, 4 << 20)
    );
}

#[test]
fn a_burst_passes_then_the_next_request_waits_one_cell() {
    let (limiter, clock) = fake();
    let keys = [peer("a"), grant("g1")];
    assert_eq!(admitted(&limiter, &keys, 100), 100);

    let RetryAfter(wait) = limiter.check_request(&keys).unwrap_err();
    assert!(
        close_to(wait, Duration::from_millis(20), Duration::from_micros(10)),
        "{wait:?}"
    );

    clock.advance(Duration::from_millis(19));
    assert!(limiter.check_request(&keys).is_err());
    clock.advance(Duration::from_millis(1));
    assert_eq!(limiter.check_request(&keys), Ok(()));
    assert!(
        limiter.check_request(&keys).is_err(),
        "one cell back, one cell used"
    );

    // After a full second at 50/s, 50 more pass.
    clock.advance(Duration::from_secs(1));
    assert_eq!(admitted(&limiter, &keys, 60), 50);
}

#[test]
fn keys_are_independent_and_a_grant_limits_every_peer_sharing_it() {
    let (limiter, _clock) = fake();
    assert_eq!(admitted(&limiter, &[peer("a")], 150), 100);
    assert_eq!(
        admitted(&limiter, &[peer("b")], 150),
        100,
        "peer a's exhaustion is its own"
    );
    assert_eq!(admitted(&limiter, &[grant("g1")], 150), 100);

    // Two peers with budget left share grant g2: together they get its burst.
    let (limiter, _clock) = fake();
    let a = admitted(&limiter, &[peer("a"), grant("g2")], 60);
    let b = admitted(&limiter, &[peer("b"), grant("g2")], 60);
    assert_eq!((a, b), (60, 40));
}

#[test]
fn a_refusal_consumes_no_keys_budget() {
    let (limiter, _clock) = fake();
    // Peer a exhausts grant g: later requests of peer b under g are refused...
    assert_eq!(admitted(&limiter, &[peer("a"), grant("g")], 100), 100);
    assert_eq!(admitted(&limiter, &[peer("b"), grant("g")], 1000), 0);
    // ...without costing peer b anything under another grant.
    assert_eq!(admitted(&limiter, &[peer("b"), grant("h")], 200), 100);

    // And the other way round: peer c, over its own limit, does not drain
    // grant k, whichever order the keys come in.
    assert_eq!(admitted(&limiter, &[peer("c")], 100), 100);
    assert_eq!(admitted(&limiter, &[grant("k"), peer("c")], 1000), 0);
    assert_eq!(admitted(&limiter, &[peer("c"), grant("k")], 1000), 0);
    assert_eq!(admitted(&limiter, &[peer("d"), grant("k")], 200), 100);
}

#[test]
fn concurrent_refusals_neither_over_admit_nor_leak_budget() {
    let (limiter, _clock) = fake();
    let peers: Vec<Key> = (0..4).map(|i| peer(&i.to_string())).collect();
    // Four threads race for grant g's 100 cells; the grant comes first, so
    // every refusal by a peer is a charge to g and a refund.
    let admitted_under_g: u32 = std::thread::scope(|s| {
        let threads: Vec<_> = peers
            .iter()
            .map(|p| {
                let keys = [grant("g"), p.clone()];
                let limiter = &limiter;
                s.spawn(move || admitted(limiter, &keys, 1000))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    assert_eq!(admitted_under_g, 100);
    // The peers paid for exactly those 100 requests between them.
    let left: u32 = peers
        .iter()
        .enumerate()
        .map(|(i, p)| admitted(&limiter, &[p.clone(), grant(&format!("h{i}"))], 100))
        .sum();
    assert_eq!(left, 300);
}

#[test]
fn a_refusal_reports_the_longest_wait_among_the_keys() {
    let (limiter, clock) = fake();
    assert_eq!(admitted(&limiter, &[peer("a")], 100), 100); // a: next cell at 20 ms
    clock.advance(Duration::from_millis(10));
    assert_eq!(admitted(&limiter, &[grant("g")], 100), 100); // g: next cell at 30 ms

    let RetryAfter(wait) = limiter.check_request(&[peer("a"), grant("g")]).unwrap_err();
    assert!(
        close_to(wait, Duration::from_millis(20), Duration::from_micros(10)),
        "{wait:?}"
    );
    let RetryAfter(wait) = limiter.check_request(&[grant("g"), peer("a")]).unwrap_err();
    assert!(
        close_to(wait, Duration::from_millis(20), Duration::from_micros(10)),
        "{wait:?}"
    );
    let RetryAfter(wait) = limiter.check_request(&[peer("a")]).unwrap_err();
    assert!(
        close_to(wait, Duration::from_millis(10), Duration::from_micros(10)),
        "{wait:?}"
    );
}

#[test]
fn no_keys_admits() {
    let (limiter, _clock) = fake();
    assert_eq!(limiter.check_request(&[]), Ok(()));
    assert_eq!(limiter.keys_held(), 0);
}

#[test]
fn a_flood_of_keys_stays_under_the_cap() {
    let (limiter, clock) = fake();
    let held = [peer("held")];
    assert_eq!(limiter.check_request(&held), Ok(()));

    // Time stands still: nothing is idle, so new keys beyond the cap are
    // refused rather than evicting active ones.
    let mut refused = 0;
    for i in 0..200_000 {
        if let Err(retry) = limiter.check_request(&[peer(&i.to_string())]) {
            assert!(retry.0 >= SWEEP_INTERVAL && retry.header_seconds() >= 1);
            refused += 1;
        }
        assert!(limiter.keys_held() <= MAX_KEYS);
    }
    assert_eq!(limiter.keys_held(), MAX_KEYS);
    assert_eq!(refused, 200_000 - (MAX_KEYS - 1));
    assert_eq!(
        limiter.check_request(&held),
        Ok(()),
        "keys already held keep working"
    );

    // Once the flood's keys are idle, the next new key sweeps them itself.
    clock.advance(Duration::from_millis(100));
    assert_eq!(limiter.check_request(&[peer("newcomer")]), Ok(()));
    assert!(limiter.keys_held() <= 2, "{}", limiter.keys_held());

    // forget_idle drops the rest once they are idle too.
    clock.advance(Duration::from_secs(3));
    limiter.forget_idle();
    assert_eq!(limiter.keys_held(), 0);
}

#[test]
fn forget_idle_keeps_keys_that_are_still_limited() {
    let (limiter, clock) = fake();
    assert_eq!(admitted(&limiter, &[peer("busy")], 100), 100);
    assert_eq!(admitted(&limiter, &[peer("idle")], 1), 1);
    clock.advance(Duration::from_millis(500));
    limiter.forget_idle();
    assert_eq!(limiter.keys_held(), 1);
    // Forgetting lost nothing: busy is still limited (75 of 100 back).
    assert_eq!(admitted(&limiter, &[peer("busy")], 100), 25);
}

#[test]
fn header_seconds_round_up_and_are_at_least_one() {
    let secs = |d: Duration| RetryAfter(d).header_seconds();
    assert_eq!(secs(Duration::ZERO), 1);
    assert_eq!(secs(Duration::from_millis(20)), 1);
    assert_eq!(secs(Duration::from_secs(1)), 1);
    assert_eq!(secs(Duration::from_millis(1001)), 2);
    assert_eq!(secs(Duration::from_secs(7)), 7);
    assert_eq!(secs(Duration::new(7, 1)), 8);
}

fn shaping(bytes_per_second: u32, byte_burst: u32) -> RateLimiter {
    let limits = Limits::new(nz(50), nz(100), nz(bytes_per_second), nz(byte_burst)).unwrap();
    RateLimiter::new(limits)
}

/// Shaped times are exact but for governor's whole-nanosecond cell cost
/// (953 ns a byte at 1 MiB/s, not 953.67) and tokio's millisecond timer.
const SLACK: Duration = Duration::from_millis(2);

#[tokio::test(start_paused = true)]
async fn shaping_one_mebibyte_at_one_mebibyte_per_second_takes_a_second_less_the_burst() {
    let limiter = shaping(1 << 20, CHUNK_BYTES);
    let keys = [peer("a"), grant("g")];
    let start = tokio::time::Instant::now();
    limiter.shape(&keys, 1 << 20).await;
    // 16 pieces of 64 KiB: the first passes at once, 15 wait 62.5 ms each.
    let took = start.elapsed();
    assert!(
        close_to(took, Duration::from_micros(937_500), SLACK),
        "{took:?}"
    );

    // The budget is spent: the next chunk waits a full 62.5 ms.
    let start = tokio::time::Instant::now();
    limiter.shape(&keys, CHUNK_BYTES).await;
    let took = start.elapsed();
    assert!(
        close_to(took, Duration::from_micros(62_500), SLACK),
        "{took:?}"
    );

    tokio::time::advance(Duration::from_millis(63)).await;
    limiter.forget_idle();
    assert_eq!(limiter.keys_held(), 0);
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_a_transfer_under_a_new_key_waits_for_room() {
    let limiter = shaping(64 << 20, 4 << 20);
    for i in 0..MAX_KEYS {
        limiter.shape(&[peer(&i.to_string())], 1).await;
    }
    assert_eq!(limiter.keys_held(), MAX_KEYS);
    let start = tokio::time::Instant::now();
    limiter.shape(&[peer("newcomer")], CHUNK_BYTES).await;
    let took = start.elapsed();
    assert!(close_to(took, SWEEP_INTERVAL, SLACK), "{took:?}");
    assert_eq!(limiter.keys_held(), 1);
}

#[tokio::test(start_paused = true)]
async fn shaping_in_chunks_holds_the_rate_and_a_grant_is_shared_across_peers() {
    let limiter = Arc::new(shaping(1 << 20, CHUNK_BYTES));
    let start = tokio::time::Instant::now();
    // Two peers, one grant, 1 MiB each in 64 KiB chunks: 2 MiB through the
    // grant at 1 MiB/s, less the burst.
    let transfers = ["a", "b"].map(|name| {
        let limiter = Arc::clone(&limiter);
        tokio::spawn(async move {
            let keys = [peer(name), grant("g")];
            for _ in 0..16 {
                limiter.shape(&keys, CHUNK_BYTES).await;
            }
            start.elapsed()
        })
    });
    let [a, b] = transfers;
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    // First come, first served: the two alternate, so they end within a
    // chunk or two of each other (62.5 ms a chunk).
    let (first, last) = (a.min(b), a.max(b));
    assert!(
        close_to(last, Duration::from_micros(1_937_500), SLACK),
        "{a:?} {b:?}"
    );
    assert!(last - first <= Duration::from_millis(126), "{a:?} {b:?}");
    assert_eq!(limiter.keys_held(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_large_shape_takes_turns_with_chunked_transfers() {
    // Burst 256 KiB, more than a chunk: a large call still goes chunk by
    // chunk, so it neither holds the grant for its whole length nor waits
    // behind every chunk of the other transfer.
    let limiter = Arc::new(shaping(1 << 20, 4 * CHUNK_BYTES));
    let start = tokio::time::Instant::now();
    let large = {
        let limiter = Arc::clone(&limiter);
        tokio::spawn(async move {
            limiter.shape(&[peer("a"), grant("g")], 1 << 20).await;
            start.elapsed()
        })
    };
    let chunked = {
        let limiter = Arc::clone(&limiter);
        tokio::spawn(async move {
            for _ in 0..16 {
                limiter.shape(&[peer("b"), grant("g")], CHUNK_BYTES).await;
            }
            start.elapsed()
        })
    };
    let (large, chunked) = (large.await.unwrap(), chunked.await.unwrap());
    // 2 MiB through g at 1 MiB/s less the 256 KiB burst: 1.75 s, shared.
    // The large call took the burst before the other started; after that the
    // two alternate, so both run to near the end.
    let (first, last) = (large.min(chunked), large.max(chunked));
    assert!(
        close_to(last, Duration::from_millis(1750), SLACK),
        "{large:?} {chunked:?}"
    );
    assert!(
        first >= Duration::from_millis(1400),
        "{large:?} {chunked:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_shape_dropped_while_waiting_gives_its_reservation_back() {
    let limiter = shaping(1 << 20, CHUNK_BYTES);
    let keys = [peer("a"), grant("g")];
    limiter.shape(&keys, CHUNK_BYTES).await; // the burst is spent
    let cut = tokio::time::timeout(Duration::from_millis(10), limiter.shape(&keys, 1 << 20));
    assert!(cut.await.is_err(), "the transfer was cut while waiting");
    // Only the spent burst stands in the way, not the cut transfer's chunk.
    let start = tokio::time::Instant::now();
    limiter.shape(&keys, CHUNK_BYTES).await;
    let took = start.elapsed();
    assert!(
        close_to(took, Duration::from_micros(52_500), SLACK),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn shaping_never_refuses_and_small_amounts_within_the_burst_pass_at_once() {
    let limiter = shaping(64 << 20, 4 << 20);
    let start = tokio::time::Instant::now();
    for _ in 0..64 {
        limiter.shape(&[peer("a")], CHUNK_BYTES).await;
    }
    assert_eq!(start.elapsed(), Duration::ZERO, "4 MiB burst");
    limiter.shape(&[peer("a")], 0).await;
    limiter.shape(&[], 1 << 30).await;
    assert_eq!(start.elapsed(), Duration::ZERO);

    // 64 MiB more at 64 MiB/s: a second, though each chunk's wait (0.98 ms)
    // is below the timer's resolution.
    let start = tokio::time::Instant::now();
    for _ in 0..1024 {
        limiter.shape(&[peer("a")], CHUNK_BYTES).await;
    }
    let took = start.elapsed();
    assert!(close_to(took, Duration::from_secs(1), SLACK), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn the_tokio_clock_follows_paused_time_for_requests_too() {
    let limiter = RateLimiter::new(Limits::default());
    let keys = [peer("a")];
    for _ in 0..100 {
        assert_eq!(limiter.check_request(&keys), Ok(()));
    }
    let RetryAfter(wait) = limiter.check_request(&keys).unwrap_err();
    tokio::time::sleep(wait).await;
    assert_eq!(limiter.check_request(&keys), Ok(()));
}
