use std::cell::Cell;

use proptest::prelude::*;
use sha2::{Digest as _, Sha256};

use super::*;

/// The CT reference vectors, vendored from transparency-dev/merkle
/// (see tests/data/README.md).
const VECTORS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/ct_merkle_vectors.json"
));

#[derive(serde::Deserialize)]
struct Vectors {
    leaves: Vec<String>,
    roots: Vec<String>,
    inclusion: Vec<InclusionVector>,
    consistency: Vec<ConsistencyVector>,
}

#[derive(serde::Deserialize)]
struct InclusionVector {
    index: u64,
    size: u64,
    proof: Vec<String>,
}

#[derive(serde::Deserialize)]
struct ConsistencyVector {
    old: u64,
    new: u64,
    proof: Vec<String>,
}

fn vectors() -> Vectors {
    serde_json::from_str(VECTORS).expect("vendored vectors parse")
}

fn h(text: &str) -> Hash {
    hex::decode(text)
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

fn hs(texts: &[String]) -> Vec<Hash> {
    texts.iter().map(|t| h(t)).collect()
}

fn entries(v: &Vectors) -> Vec<Vec<u8>> {
    v.leaves
        .iter()
        .map(|t| hex::decode(t).expect("hex"))
        .collect()
}

/// A second implementation, written straight from the definitions of RFC 9162
/// §2.1 over the entries themselves (recursion on slices, its own hashing), to
/// check the optimised code against something that shares none of it.
mod naive {
    use super::*;

    fn sha(parts: &[&[u8]]) -> Hash {
        let mut all = Vec::new();
        for p in parts {
            all.extend_from_slice(p);
        }
        Sha256::digest(&all).into()
    }

    fn k(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    pub fn mth(d: &[Vec<u8>]) -> Hash {
        match d.len() {
            0 => sha(&[]),
            1 => sha(&[&[0], &d[0]]),
            n => {
                let k = k(n);
                sha(&[&[1], &mth(&d[..k]), &mth(&d[k..])])
            }
        }
    }

    pub fn path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        let n = d.len();
        if n == 1 {
            return vec![];
        }
        let k = k(n);
        if m < k {
            let mut p = path(m, &d[..k]);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = path(m - k, &d[k..]);
            p.push(mth(&d[..k]));
            p
        }
    }

    pub fn proof(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        if m == 0 || m == d.len() {
            vec![]
        } else {
            subproof(m, d, true)
        }
    }

    fn subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![mth(d)] };
        }
        let k = k(n);
        if m <= k {
            let mut p = subproof(m, &d[..k], b);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = subproof(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }
}

fn tree_of(entries: &[Vec<u8>]) -> MemoryTree {
    let mut tree = MemoryTree::new();
    for e in entries {
        tree.append(leaf_hash(e));
    }
    tree
}

fn test_entries(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("entry {i}").into_bytes()).collect()
}

#[test]
fn roots_match_the_ct_reference_vectors() {
    let v = vectors();
    let entries = entries(&v);
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    let tree = tree_of(&entries);
    assert_eq!(v.roots.len(), 9);
    for (size, expected) in v.roots.iter().enumerate() {
        let expected = h(expected);
        assert_eq!(root(&leaves[..size]), expected, "slice root at size {size}");
        assert_eq!(
            root_at(&tree, size as u64),
            Ok(expected),
            "tree root at size {size}"
        );
        assert_eq!(
            naive::mth(&entries[..size]),
            expected,
            "naive root at size {size}"
        );
    }
    assert_eq!(tree.root(), h(&v.roots[8]));
    assert_eq!(empty_root(), h(&v.roots[0]));
}

#[test]
fn inclusion_proofs_match_the_ct_reference_vectors() {
    let v = vectors();
    let entries = entries(&v);
    let tree = tree_of(&entries);
    for case in &v.inclusion {
        let expected = hs(&case.proof);
        let got = inclusion_proof_at(&tree, case.index, case.size).expect("in range");
        assert_eq!(got, expected, "proof of {} in {}", case.index, case.size);
        let size = case.size as usize;
        assert_eq!(naive::path(case.index as usize, &entries[..size]), expected);
        let leaf = leaf_hash(&entries[case.index as usize]);
        let root = h(&v.roots[size]);
        assert_eq!(
            verify_inclusion(case.index, case.size, &leaf, &expected, &root),
            Ok(())
        );
    }
}

#[test]
fn consistency_proofs_match_the_ct_reference_vectors() {
    let v = vectors();
    let entries = entries(&v);
    let tree = tree_of(&entries);
    for case in &v.consistency {
        let expected = hs(&case.proof);
        let got = consistency_proof_at(&tree, case.old, case.new).expect("in range");
        assert_eq!(got, expected, "proof {} -> {}", case.old, case.new);
        assert_eq!(
            naive::proof(case.old as usize, &entries[..case.new as usize]),
            expected
        );
        let (old_root, new_root) = (
            h(&v.roots[case.old as usize]),
            h(&v.roots[case.new as usize]),
        );
        assert_eq!(
            verify_consistency(case.old, case.new, &old_root, &new_root, &expected),
            Ok(())
        );
    }
}

#[test]
fn optimised_code_agrees_with_the_naive_definitions_up_to_70_leaves() {
    let entries = test_entries(70);
    let tree = tree_of(&entries);
    for n in 0..=entries.len() {
        let root = naive::mth(&entries[..n]);
        assert_eq!(root_at(&tree, n as u64), Ok(root), "root at {n}");
        for m in 0..n {
            assert_eq!(
                inclusion_proof_at(&tree, m as u64, n as u64),
                Ok(naive::path(m, &entries[..n]))
            );
        }
        for m in 0..=n {
            assert_eq!(
                consistency_proof_at(&tree, m as u64, n as u64),
                Ok(naive::proof(m, &entries[..n])),
                "consistency {m} -> {n}"
            );
        }
    }
}

#[test]
fn slices_and_memory_trees_agree() {
    let entries = test_entries(37);
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    let tree = tree_of(&entries);
    assert_eq!(root(&leaves[..]), tree.root());
    assert_eq!(inclusion_proof(&leaves[..], 17), inclusion_proof(&tree, 17));
    assert_eq!(
        consistency_proof(&leaves[..], 13),
        consistency_proof(&tree, 13)
    );
}

#[test]
fn out_of_range_requests_are_errors_not_panics() {
    let tree = tree_of(&test_entries(5));
    assert_eq!(
        inclusion_proof(&tree, 5),
        Err(ProofError::OutOfRange { index: 5, size: 5 })
    );
    assert_eq!(
        inclusion_proof_at(&tree, 0, 6),
        Err(ProofError::OutOfRange { index: 6, size: 5 })
    );
    assert_eq!(
        consistency_proof_at(&tree, 4, 3),
        Err(ProofError::OutOfRange { index: 4, size: 3 })
    );
    assert_eq!(
        root_at(&tree, 6),
        Err(ProofError::OutOfRange { index: 6, size: 5 })
    );
    let empty = MemoryTree::new();
    assert_eq!(empty.root(), empty_root());
    assert_eq!(
        inclusion_proof(&empty, 0),
        Err(ProofError::OutOfRange { index: 0, size: 0 })
    );
}

#[test]
fn trivial_consistency_cases() {
    let tree = tree_of(&test_entries(5));
    let r = tree.root();
    let e = empty_root();
    assert_eq!(verify_consistency(5, 5, &r, &r, &[]), Ok(()));
    assert_eq!(
        verify_consistency(5, 5, &e, &r, &[]),
        Err(ProofError::Mismatch)
    );
    assert_eq!(
        verify_consistency(5, 5, &r, &r, &[r]),
        Err(ProofError::WrongLength)
    );
    assert_eq!(verify_consistency(0, 5, &e, &r, &[]), Ok(()));
    assert_eq!(
        verify_consistency(0, 5, &r, &r, &[]),
        Err(ProofError::Mismatch)
    );
    assert_eq!(
        verify_consistency(6, 5, &r, &r, &[]),
        Err(ProofError::OutOfRange { index: 6, size: 5 })
    );
    assert_eq!(
        verify_consistency(3, 5, &e, &r, &[]),
        Err(ProofError::WrongLength)
    );
}

#[test]
fn tampered_reference_proofs_are_refused() {
    // After transparency-dev/merkle's corruptInclusionProof /
    // corruptConsistencyProof: every mutation of a good proof must fail.
    let v = vectors();
    let entries = entries(&v);
    let some = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    for case in v.inclusion.iter().filter(|c| !c.proof.is_empty()) {
        let (i, n, proof) = (case.index, case.size, hs(&case.proof));
        let leaf = leaf_hash(&entries[i as usize]);
        let root = h(&v.roots[n as usize]);
        let mut bad: Vec<(u64, u64, Hash, Vec<Hash>, Hash)> = vec![
            (i.wrapping_sub(1), n, leaf, proof.clone(), root),
            (i + 1, n, leaf, proof.clone(), root),
            (i ^ 2, n, leaf, proof.clone(), root),
            (i, n * 2, leaf, proof.clone(), root),
            (i, n / 2, leaf, proof.clone(), root),
            (i, n, leaf_hash(b"WrongLeaf"), proof.clone(), root),
            (i, n, leaf, proof.clone(), empty_root()),
            (i, n, leaf, proof.clone(), some),
            (i, n, leaf, [proof.clone(), vec![root]].concat(), root),
            (i, n, leaf, [vec![root], proof.clone()].concat(), root),
            (i, n, leaf, proof[..proof.len() - 1].to_vec(), root),
        ];
        for k in 0..proof.len() {
            let mut p = proof.clone();
            p[k][0] ^= 8;
            bad.push((i, n, leaf, p, root));
        }
        for (i2, n2, leaf2, p2, root2) in bad {
            if (i2, n2, leaf2, &p2, root2) == (i, n, leaf, &proof, root) {
                continue;
            }
            assert!(
                verify_inclusion(i2, n2, &leaf2, &p2, &root2).is_err(),
                "inclusion {i}/{n} accepted a tampered probe ({i2}/{n2})"
            );
        }
    }
    for case in v.consistency.iter().filter(|c| !c.proof.is_empty()) {
        let (m, n, proof) = (case.old, case.new, hs(&case.proof));
        let (r1, r2) = (h(&v.roots[m as usize]), h(&v.roots[n as usize]));
        let mut bad: Vec<(u64, u64, Hash, Hash, Vec<Hash>)> = vec![
            (m - 1, n, r1, r2, proof.clone()),
            (m + 1, n, r1, r2, proof.clone()),
            (m ^ 2, n, r1, r2, proof.clone()),
            (m, n * 2, r1, r2, proof.clone()),
            (m, n / 2, r1, r2, proof.clone()),
            (m, n, some, r2, proof.clone()),
            (m, n, r1, some, proof.clone()),
            (m, n, r2, r1, proof.clone()),
            (m, n, r1, r2, vec![]),
            (m, n, r1, r2, [proof.clone(), vec![r1]].concat()),
            (m, n, r1, r2, [proof.clone(), vec![r2]].concat()),
            (m, n, r1, r2, [vec![r1], proof.clone()].concat()),
            (m, n, r1, r2, [vec![r2], proof.clone()].concat()),
            (m, n, r1, r2, [vec![proof[0]], proof.clone()].concat()),
            (m, n, r1, r2, proof[..proof.len() - 1].to_vec()),
        ];
        for k in 0..proof.len() {
            let mut p = proof.clone();
            p[k][0] ^= 16;
            bad.push((m, n, r1, r2, p));
        }
        for (m2, n2, a, b, p2) in bad {
            assert!(
                verify_consistency(m2, n2, &a, &b, &p2).is_err(),
                "consistency {m}->{n} accepted a tampered probe ({m2}->{n2})"
            );
        }
    }
}

/// Counts how many subtree hashes a proof reads from its source.
struct Counting<'a> {
    tree: &'a MemoryTree,
    reads: Cell<u64>,
}

impl HashSource for Counting<'_> {
    fn size(&self) -> u64 {
        self.tree.size()
    }

    fn leaf(&self, index: u64) -> Hash {
        self.subtree(index, 0)
    }

    fn subtree(&self, start: u64, level: u32) -> Hash {
        self.reads.set(self.reads.get() + 1);
        self.tree.subtree(start, level)
    }
}

#[test]
fn proofs_read_a_logarithmic_number_of_subtrees() {
    const N: u64 = 100_003;
    let mut tree = MemoryTree::new();
    for i in 0..N {
        tree.append(leaf_hash(&i.to_be_bytes()));
    }
    let counting = Counting {
        tree: &tree,
        reads: Cell::new(0),
    };
    // ceil(log2 N) = 17; a proof holds at most that many nodes and each
    // ragged node costs at most that many reads once per proof.
    let bound = 2 * 17 + 2;
    for index in [0, 1, N / 2, 65_535, 65_536, N - 2, N - 1] {
        counting.reads.set(0);
        inclusion_proof(&counting, index).expect("in range");
        assert!(
            counting.reads.get() <= bound,
            "inclusion {index}: {} reads",
            counting.reads.get()
        );
    }
    for old in [1, 2, 3, 1000, 65_536, 65_537, N - 1] {
        counting.reads.set(0);
        consistency_proof(&counting, old).expect("in range");
        assert!(
            counting.reads.get() <= bound,
            "consistency {old}: {} reads",
            counting.reads.get()
        );
    }
    counting.reads.set(0);
    root(&counting);
    assert!(counting.reads.get() <= 17);
}

fn leaves_of(n: u64, seed: u64) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&[seed.to_be_bytes(), i.to_be_bytes()].concat()))
        .collect()
}

proptest! {
    #[test]
    fn inclusion_verifies_and_binds_index_and_leaf(size in 1u64..=300, pick in any::<u64>(), seed in any::<u64>()) {
        let leaves = leaves_of(size, seed);
        let index = pick % size;
        let root = root(&leaves[..]);
        let proof = inclusion_proof(&leaves[..], index).expect("in range");
        let leaf = leaves[index as usize];
        prop_assert_eq!(verify_inclusion(index, size, &leaf, &proof, &root), Ok(()));
        prop_assert!(verify_inclusion(index, size, &leaf_hash(b"not in the log"), &proof, &root).is_err());
        for wrong in [index.wrapping_add(1), index.wrapping_sub(1), index ^ 1, index ^ 2] {
            if wrong != index {
                prop_assert!(verify_inclusion(wrong, size, &leaf, &proof, &root).is_err());
            }
        }
        if size > 1 {
            let other = (index + 1) % size;
            prop_assert!(verify_inclusion(index, size, &leaves[other as usize], &proof, &root).is_err());
        }
    }

    #[test]
    fn every_index_of_a_tree_verifies(size in 1u64..=300, seed in any::<u64>()) {
        let mut tree = MemoryTree::new();
        for leaf in leaves_of(size, seed) {
            tree.append(leaf);
        }
        let root = tree.root();
        for index in 0..size {
            let proof = inclusion_proof(&tree, index).expect("in range");
            prop_assert_eq!(verify_inclusion(index, size, &tree.leaf(index), &proof, &root), Ok(()));
        }
    }

    #[test]
    fn consistency_verifies_and_detects_a_fork(new in 1u64..=300, pick in any::<u64>(), changed in any::<u64>(), seed in any::<u64>()) {
        let leaves = leaves_of(new, seed);
        let old = pick % (new + 1);
        let new_root = root(&leaves[..]);
        let old_root = root(&leaves[..old as usize]);
        let proof = consistency_proof(&leaves[..], old).expect("in range");
        prop_assert_eq!(verify_consistency(old, new, &old_root, &new_root, &proof), Ok(()));
        if old > 0 {
            // The log forked: one leaf of the old tree was rewritten.
            let mut forked = leaves[..old as usize].to_vec();
            forked[(changed % old) as usize][0] ^= 1;
            let forked_root = root(&forked[..]);
            prop_assert!(verify_consistency(old, new, &forked_root, &new_root, &proof).is_err());
            // ...and the new tree built on the fork is not consistent with the old one either.
            let mut forked_new = leaves.clone();
            forked_new[(changed % old) as usize][0] ^= 1;
            let forked_proof = consistency_proof(&forked_new[..], old).expect("in range");
            prop_assert!(verify_consistency(old, new, &old_root, &root(&forked_new[..]), &forked_proof).is_err());
        }
    }

    #[test]
    fn consistency_holds_for_all_old_sizes(new in 1u64..=300, seed in any::<u64>()) {
        let mut tree = MemoryTree::new();
        for leaf in leaves_of(new, seed) {
            tree.append(leaf);
        }
        let new_root = tree.root();
        for old in 0..=new {
            let old_root = root_at(&tree, old).expect("in range");
            let proof = consistency_proof(&tree, old).expect("in range");
            prop_assert_eq!(verify_consistency(old, new, &old_root, &new_root, &proof), Ok(()));
        }
    }
}

/// A store that writes exactly the nodes `completed_by` names holds every
/// complete subtree, so its lookups agree with `MemoryTree` at every size.
#[test]
fn completed_by_names_every_complete_subtree_once() {
    use std::collections::HashMap;
    let mut nodes: HashMap<(u32, u64), Hash> = HashMap::new();
    let mut tree = MemoryTree::new();
    for i in 0..300u64 {
        let leaf = leaf_hash(&i.to_be_bytes());
        tree.append(leaf);
        nodes.insert((0, i), leaf);
        for (level, position) in completed_by(i) {
            let left = nodes[&(level - 1, 2 * position)];
            let right = nodes[&(level - 1, 2 * position + 1)];
            assert!(
                nodes
                    .insert((level, position), node_hash(&left, &right))
                    .is_none(),
                "({level}, {position}) written twice"
            );
        }
        let size = i + 1;
        for level in 0..=63 - size.leading_zeros() {
            for position in 0..size >> level {
                assert_eq!(
                    nodes.get(&(level, position)),
                    Some(&tree.subtree(position << level, level)),
                    "size {size}: ({level}, {position})"
                );
            }
        }
    }
}

/// A tree of `n` leaves kept as the store keeps it: every complete subtree
/// on hand, so proofs over thousands of leaves are cheap.
fn big_tree(n: u64, seed: u64) -> MemoryTree {
    let mut tree = MemoryTree::new();
    for leaf in leaves_of(n, seed) {
        tree.append(leaf);
    }
    tree
}

/// Sizes up to a few thousand, weighted to powers of two and their neighbours.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        1u64..=5000,
        (0u32..=12).prop_flat_map(|k| {
            let p = 1u64 << k;
            prop::sample::select(vec![p.saturating_sub(1).max(1), p, p + 1])
        }),
    ]
}

/// An index of every class: first, last, either side of a power of two,
/// where the left subtree ends, and anywhere.
fn index_in(size: u64, class: u8, pick: u64) -> u64 {
    let split_at = if size > 1 { split(size) } else { 0 };
    let p = 1u64 << (pick % 13);
    let candidate = match class % 6 {
        0 => 0,
        1 => size - 1,
        2 => p - 1,
        3 => p,
        4 => split_at.saturating_sub(pick % 2),
        _ => pick,
    };
    candidate % size
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn inclusion_holds_for_thousands_of_leaves_and_every_index_class(
        size in size(), class in any::<u8>(), pick in any::<u64>(), seed in any::<u64>(), flip in any::<prop::sample::Index>(),
    ) {
        let tree = big_tree(size, seed);
        let root = tree.root();
        let index = index_in(size, class, pick);
        let leaf = tree.leaf(index);
        let proof = inclusion_proof(&tree, index).expect("in range");
        prop_assert_eq!(verify_inclusion(index, size, &leaf, &proof, &root), Ok(()));
        // The proof is as long as the path: no more, no fewer hashes.
        prop_assert!(verify_inclusion(index, size, &leaf, &proof[..proof.len().saturating_sub(1)], &root).is_err() || proof.is_empty());
        let mut longer = proof.clone();
        longer.push(leaf);
        prop_assert_eq!(verify_inclusion(index, size, &leaf, &longer, &root), Err(ProofError::WrongLength));
        // Any one bit of any hash of the proof changed breaks it.
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = flip.index(proof.len() * 256);
            bad[i / 256][(i % 256) / 8] ^= 1 << (i % 8);
            prop_assert!(verify_inclusion(index, size, &leaf, &bad, &root).is_err());
        }
        // An older tree's proof, read from the same store, checks against the older root.
        let old = index + 1 + pick % (size - index);
        let proof_then = inclusion_proof_at(&tree, index, old).expect("in range");
        prop_assert_eq!(verify_inclusion(index, old, &leaf, &proof_then, &root_at(&tree, old).unwrap()), Ok(()));
    }

    #[test]
    fn consistency_holds_between_any_two_sizes_of_thousands(
        new in size(), pick_old in any::<u64>(), pick_mid in any::<u64>(), seed in any::<u64>(), flip in any::<prop::sample::Index>(),
    ) {
        let tree = big_tree(new, seed);
        let old = pick_old % (new + 1);
        let mid = old + pick_mid % (new - old + 1);
        let (old_root, mid_root, new_root) = (root_at(&tree, old).unwrap(), root_at(&tree, mid).unwrap(), tree.root());
        let proof = consistency_proof(&tree, old).expect("in range");
        prop_assert_eq!(verify_consistency(old, new, &old_root, &new_root, &proof), Ok(()));
        let proof_mid = consistency_proof_at(&tree, old, mid).expect("in range");
        prop_assert_eq!(verify_consistency(old, mid, &old_root, &mid_root, &proof_mid), Ok(()));
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = flip.index(proof.len() * 256);
            bad[i / 256][(i % 256) / 8] ^= 1 << (i % 8);
            prop_assert!(verify_consistency(old, new, &old_root, &new_root, &bad).is_err());
            prop_assert!(verify_consistency(old, new, &old_root, &new_root, &proof[1..]).is_err());
        }
        // Sizes the other way round are out of range, not a panic.
        if old < new {
            prop_assert!(verify_consistency(new, old, &new_root, &old_root, &proof).is_err());
        }
    }

    #[test]
    fn a_forked_log_fails_at_every_size_it_forked_below(
        new in 2u64..=3000, pick_old in any::<u64>(), pick_fork in any::<u64>(), seed in any::<u64>(),
    ) {
        let honest = leaves_of(new, seed);
        let old = 1 + pick_old % (new - 1);
        let fork_at = pick_fork % old;
        let mut forked = honest.clone();
        forked[fork_at as usize] = leaf_hash(b"rewritten history");
        let (honest_tree, forked_tree) = {
            let mut a = MemoryTree::new();
            let mut b = MemoryTree::new();
            honest.iter().for_each(|l| { a.append(*l); });
            forked.iter().for_each(|l| { b.append(*l); });
            (a, b)
        };
        let old_root = root_at(&honest_tree, old).unwrap();
        // The forked log cannot prove it extends the head the auditor kept...
        let proof = consistency_proof(&forked_tree, old).expect("in range");
        prop_assert!(verify_consistency(old, new, &old_root, &forked_tree.root(), &proof).is_err());
        // ...nor that the honest leaf is in it.
        let inclusion = inclusion_proof(&forked_tree, fork_at).expect("in range");
        prop_assert!(verify_inclusion(fork_at, new, &honest[fork_at as usize], &inclusion, &forked_tree.root()).is_err());
        // While a log that only grew after `old`, whatever it appended, is consistent.
        let mut grown = MemoryTree::new();
        honest[..old as usize].iter().for_each(|l| { grown.append(*l); });
        for i in old..new {
            grown.append(leaf_hash(&[b"other", &i.to_be_bytes()[..]].concat()));
        }
        let grown_proof = consistency_proof(&grown, old).expect("in range");
        prop_assert_eq!(verify_consistency(old, new, &old_root, &grown.root(), &grown_proof), Ok(()));
    }
}

/// A sparse tree fed with exactly the subtrees it asked for gives the same
/// roots and proofs as the whole tree, after one fetch.
#[test]
fn a_sparse_tree_names_what_it_needs_and_then_agrees_with_the_whole_tree() {
    let mut whole = MemoryTree::new();
    for i in 0..37u32 {
        whole.append(leaf_hash(&i.to_be_bytes()));
    }
    for size in [1u64, 2, 5, 16, 31, 37] {
        let compute = |t: &SparseTree| {
            (
                root_at(t, size).unwrap(),
                inclusion_proof_at(t, size - 1, size).unwrap(),
                consistency_proof_at(t, size / 2, size).unwrap(),
            )
        };
        let mut sparse = SparseTree::new(37);
        let missing = sparse.evaluate(compute).unwrap_err();
        assert!(missing.len() as u32 <= 3 * 64, "{missing:?}");
        for (level, position) in missing {
            sparse.insert((level, position), whole.subtree(position << level, level));
        }
        let got = sparse.evaluate(compute).expect("one fetch is enough");
        assert_eq!(
            got,
            (
                root_at(&whole, size).unwrap(),
                inclusion_proof_at(&whole, size - 1, size).unwrap(),
                consistency_proof_at(&whole, size / 2, size).unwrap(),
            ),
            "size {size}"
        );
    }
}
