//! Rate-limit checks per request, against what the same key work costs in
//! the plainest shared map.
//!
//! - `ratelimit/check_request/hot_key`: one peer and one grant, admitted.
//! - `ratelimit/check_request/10k_keys`: peers and grants rotating among
//!   10 000 of each, admitted.
//! - `ratelimit/check_request/refused`: an exhausted grant under a fresh
//!   peer: both keys checked, the peer refunded.
//! - `baseline/hashmap_insert_lookup`: a `Mutex<HashMap<String, u64>>`
//!   finding (or inserting) and bumping the same two keys, rotating as in
//!   `10k_keys`.

use std::collections::HashMap;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Mutex;

use criterion::{Criterion, criterion_group, criterion_main};
use xborder::ratelimit::{Key, Limits, RateLimiter};

const KEYS: usize = 10_000;

/// Limits no benchmark loop can reach, so that every request is admitted.
fn generous() -> Limits {
    let max = NonZeroU32::MAX;
    Limits::new(max, max, max, max).expect("valid limits")
}

fn request_keys(i: usize) -> [Key; 2] {
    [
        Key::Peer(format!("spiffe://fi.example/agency/unit-{i}")),
        Key::Grant(format!("0b9a4d62-5f1c-4e8a-9c11-{i:012}")),
    ]
}

fn check_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit/check_request");

    let limiter = RateLimiter::new(generous());
    let hot = request_keys(0);
    group.bench_function("hot_key", |b| {
        b.iter(|| limiter.check_request(black_box(&hot)).expect("admitted"));
    });

    let limiter = RateLimiter::new(generous());
    let keys: Vec<[Key; 2]> = (0..KEYS).map(request_keys).collect();
    let mut i = 0;
    group.bench_function("10k_keys", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            limiter
                .check_request(black_box(&keys[i]))
                .expect("admitted")
        });
    });

    // Grant exhausted by one request; it comes back once a second, so about
    // one iteration a second is admitted.
    let one = NonZeroU32::MIN;
    let limiter = RateLimiter::new(Limits {
        requests_per_second: one,
        request_burst: one,
        ..generous()
    });
    limiter
        .check_request(&hot)
        .expect("the first request is admitted");
    let refused = [
        Key::Peer("spiffe://fi.example/agency/late".into()),
        hot[1].clone(),
    ];
    group.bench_function("refused", |b| {
        b.iter(|| limiter.check_request(black_box(&refused)));
    });
    group.finish();
}

fn baseline(c: &mut Criterion) {
    let map: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    let keys: Vec<[String; 2]> = (0..KEYS)
        .map(|i| {
            request_keys(i).map(|key| match key {
                Key::Peer(id) | Key::Grant(id) => id,
            })
        })
        .collect();
    let mut i = 0;
    c.bench_function("baseline/hashmap_insert_lookup", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            let mut map = map.lock().expect("not poisoned");
            for key in black_box(&keys[i]) {
                match map.get_mut(key) {
                    Some(count) => *count += 1,
                    None => {
                        map.insert(key.clone(), 1);
                    }
                }
            }
        });
    });
}

criterion_group!(benches, check_request, baseline);
criterion_main!(benches);
