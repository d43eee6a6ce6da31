//! Cost of the audit log's Merkle tree, in units of the hash it is made of.
//!
//! - `primitive/sha256_64B`: one SHA-256 of 64 bytes, the baseline.
//! - `append/10M`: appending ten million leaf hashes to a `MemoryTree`
//!   (throughput in hashes/s; about one node hash per append, amortised).
//! - `inclusion/{prove,verify}` and `consistency/{prove,verify}` at
//!   10,000,000 entries, cycling through indices and old sizes.
//!
//! At the end it prints each proof operation as "≈ k hashes" from
//! criterion's medians: O(log n) means k in the tens at this size.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use sha2::{Digest as _, Sha256};
use xborder::audit::merkle::{
    MemoryTree, consistency_proof, inclusion_proof, leaf_hash, root_at, verify_consistency,
    verify_inclusion,
};

const N: u64 = 10_000_000;

/// Median seconds per iteration, by benchmark, read back from criterion.
type Medians = RefCell<BTreeMap<&'static str, f64>>;

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let medians = Medians::default();
    let leaves: Vec<[u8; 32]> = (0..N).map(|i| leaf_hash(&i.to_be_bytes())).collect();

    time(&mut c, &medians, "primitive/sha256_64B", || {
        let block = [7u8; 64];
        move || black_box(Sha256::digest(black_box(block)))
    });

    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(N));
    group.sample_size(10);
    group.bench_function("10M", |b| {
        b.iter(|| {
            let mut tree = MemoryTree::new();
            for leaf in &leaves {
                tree.append(*leaf);
            }
            black_box(tree.root())
        })
    });
    group.finish();

    let mut tree = MemoryTree::new();
    for leaf in &leaves {
        tree.append(*leaf);
    }
    let root = tree.root();
    // Spread the probes over the tree, including the ragged right edge.
    let indices: Vec<u64> = (0..1024u64)
        .map(|i| (i * 977_123 + 13) % N)
        .chain([N - 1, N - 2])
        .collect();
    let inclusion: Vec<(u64, Vec<[u8; 32]>)> = indices
        .iter()
        .map(|&i| (i, inclusion_proof(&tree, i).expect("in range")))
        .collect();
    let consistency: Vec<(u64, [u8; 32], Vec<[u8; 32]>)> = indices
        .iter()
        .map(|&old| {
            let old = old.max(1);
            (
                old,
                root_at(&tree, old).expect("in range"),
                consistency_proof(&tree, old).expect("in range"),
            )
        })
        .collect();

    time(&mut c, &medians, "inclusion/prove_10M", || {
        let mut k = 0;
        let tree = &tree;
        let indices = &indices;
        move || {
            k = (k + 1) % indices.len();
            black_box(inclusion_proof(tree, indices[k]).expect("in range"))
        }
    });
    time(&mut c, &medians, "inclusion/verify_10M", || {
        let mut k = 0;
        let (inclusion, leaves) = (&inclusion, &leaves);
        move || {
            k = (k + 1) % inclusion.len();
            let (index, proof) = &inclusion[k];
            verify_inclusion(*index, N, &leaves[*index as usize], proof, &root).expect("valid")
        }
    });
    time(&mut c, &medians, "consistency/prove_10M", || {
        let mut k = 0;
        let (tree, consistency) = (&tree, &consistency);
        move || {
            k = (k + 1) % consistency.len();
            black_box(consistency_proof(tree, consistency[k].0).expect("in range"))
        }
    });
    time(&mut c, &medians, "consistency/verify_10M", || {
        let mut k = 0;
        let consistency = &consistency;
        move || {
            k = (k + 1) % consistency.len();
            let (old, old_root, proof) = &consistency[k];
            verify_consistency(*old, N, old_root, &root, proof).expect("valid")
        }
    });
    time(&mut c, &medians, "root/10M", || {
        let tree = &tree;
        move || black_box(tree.root())
    });

    c.final_summary();
    let medians = medians.borrow();
    let hash = medians["primitive/sha256_64B"];
    let avg_len =
        inclusion.iter().map(|(_, p)| p.len()).sum::<usize>() as f64 / inclusion.len() as f64;
    println!(
        "\naudit at {N} entries, in SHA-256(64 B) units ({:.1} ns each); inclusion proofs average {avg_len:.1} hashes:",
        hash * 1e9
    );
    for (name, secs) in medians.iter() {
        println!(
            "  {name:<24} {:>10.1} ns  ≈ {:>6.1} hashes",
            secs * 1e9,
            secs / hash
        );
    }
}

/// Benchmarks `make()`'s routine and records its median time per call.
fn time<F, R>(c: &mut Criterion, medians: &Medians, name: &'static str, make: impl FnOnce() -> F)
where
    F: FnMut() -> R,
{
    let mut routine = make();
    let mut samples = Vec::new();
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(routine());
            }
            let elapsed = start.elapsed();
            samples.push(elapsed.as_secs_f64() / iters as f64);
            elapsed
        })
    });
    samples.sort_by(f64::total_cmp);
    let median = samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN);
    medians.borrow_mut().insert(name, median);
}
