//! RFC 9162 §2.1 Merkle tree hashing, inclusion and consistency proofs.
//!
//! Everything here works on leaf hashes, never on entries, and does no I/O.
//! The algorithms read the tree through [`HashSource`], which can hand out
//! the hash of any complete subtree; a source that keeps those (like
//! [`MemoryTree`], or the store later) makes the root and every proof
//! O(log n) hash work instead of O(n).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use sha2::{Digest as _, Sha256};

/// A SHA-256 tree hash: a leaf hash, an interior node hash or a root.
pub type Hash = [u8; 32];

/// A proof that does not check out. The reasons are for logs and tests; an
/// auditor only needs to know that the log could not prove its claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// A leaf index at or past the tree size, or an old size past the new.
    #[error("{index} is out of range for a tree of size {size}")]
    OutOfRange { index: u64, size: u64 },
    /// The proof has more or fewer hashes than the tree shape calls for.
    #[error("proof has the wrong number of hashes")]
    WrongLength,
    /// The proof leads to a different root.
    #[error("proof does not lead to the expected root")]
    Mismatch,
}

/// The hashes of a tree of `size()` leaves, as the proof algorithms need them.
///
/// Only [`HashSource::leaf`] and [`HashSource::size`] are required; the
/// default [`HashSource::subtree`] rebuilds a subtree from its leaves, which
/// is O(2^level). A source that stores tree levels overrides it with a
/// lookup, and every function of this module is then O(log n).
pub trait HashSource {
    /// Number of leaves.
    fn size(&self) -> u64;

    /// The leaf hash at `index`; callers keep `index < size()`.
    fn leaf(&self, index: u64) -> Hash;

    /// The hash of the complete subtree of `2^level` leaves that starts at
    /// `start`. Callers keep `start` a multiple of `2^level` and
    /// `start + 2^level <= size()`.
    fn subtree(&self, start: u64, level: u32) -> Hash {
        if level == 0 {
            return self.leaf(start);
        }
        let half = 1u64 << (level - 1);
        node_hash(
            &self.subtree(start, level - 1),
            &self.subtree(start + half, level - 1),
        )
    }
}

/// A plain list of leaf hashes: every subtree is recomputed, O(n). Fine for
/// small trees, tests and verifiers holding a handful of leaves.
impl HashSource for [Hash] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn leaf(&self, index: u64) -> Hash {
        self[usize::try_from(index).expect("leaf index below size() fits in usize")]
    }
}

/// A whole tree in memory, every level kept: `levels[k][j]` is the hash of
/// the complete subtree of leaves `[j·2^k, (j+1)·2^k)`. Appending updates at
/// most log2(n) nodes; every subtree lookup is O(1).
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a leaf hash (see [`leaf_hash`]) and returns its index.
    pub fn append(&mut self, leaf: Hash) -> u64 {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let index = self.levels[0].len() as u64 - 1;
        // A level of even length just completed a pair: hash it one level up.
        let mut level = 0;
        while self.levels[level].len().is_multiple_of(2) {
            let nodes = &self.levels[level];
            let parent = node_hash(&nodes[nodes.len() - 2], &nodes[nodes.len() - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(parent);
            level += 1;
        }
        index
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// The root hash of the whole tree.
    pub fn root(&self) -> Hash {
        root(self)
    }
}

impl HashSource for MemoryTree {
    fn size(&self) -> u64 {
        MemoryTree::size(self)
    }

    fn leaf(&self, index: u64) -> Hash {
        self.subtree(index, 0)
    }

    fn subtree(&self, start: u64, level: u32) -> Hash {
        let position = usize::try_from(start >> level).expect("subtree index fits in usize");
        self.levels[level as usize][position]
    }
}

/// A subtree's place: `(level, position)`, position counted in subtrees of
/// that level (level 0: the leaves).
pub type SubtreeKey = (u32, u64);

/// A tree read from storage that cannot be read synchronously (a database
/// behind a network): it holds the subtree hashes fetched so far and notes
/// the ones asked for that it lacks. Which subtrees an algorithm of this
/// module reads depends on sizes and indices only, never on hash values, so
/// one [`SparseTree::evaluate`] names all it needs; fetch them, insert them,
/// and the second evaluation succeeds.
#[derive(Debug, Default)]
pub struct SparseTree {
    size: u64,
    known: HashMap<SubtreeKey, Hash>,
    missing: RefCell<BTreeSet<SubtreeKey>>,
}

impl SparseTree {
    /// A tree of `size` leaves of which no hash is known yet.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            ..Self::default()
        }
    }

    /// Records the hash of the subtree at `key`.
    pub fn insert(&mut self, key: SubtreeKey, hash: Hash) {
        self.known.insert(key, hash);
    }

    /// Runs `compute` over the known hashes: its value if it read only
    /// those, otherwise the subtrees it lacked (nothing else is trustworthy).
    pub fn evaluate<T>(&self, compute: impl FnOnce(&Self) -> T) -> Result<T, Vec<SubtreeKey>> {
        self.missing.borrow_mut().clear();
        let value = compute(self);
        let missing = std::mem::take(&mut *self.missing.borrow_mut());
        if missing.is_empty() {
            Ok(value)
        } else {
            Err(missing.into_iter().collect())
        }
    }
}

impl HashSource for SparseTree {
    fn size(&self) -> u64 {
        self.size
    }

    fn leaf(&self, index: u64) -> Hash {
        self.subtree(index, 0)
    }

    fn subtree(&self, start: u64, level: u32) -> Hash {
        let key = (level, start >> level);
        match self.known.get(&key) {
            Some(hash) => *hash,
            None => {
                self.missing.borrow_mut().insert(key);
                [0; 32]
            }
        }
    }
}

/// The complete subtrees that appending leaf `index` completes, lowest
/// first, as `(level, position)` (position counted in subtrees of that
/// level): the node at `(level, p)` is the node hash of `(level - 1, 2p)` and
/// `(level - 1, 2p + 1)`, level 0 being the leaves. A store that keeps every
/// complete subtree writes exactly these after each append, amortised one.
pub fn completed_by(index: u64) -> impl Iterator<Item = (u32, u64)> {
    (1..=index.trailing_ones()).map(move |level| (level, index >> level))
}

/// SHA-256(0x00 ‖ entry): the hash of one log entry.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(entry);
    hasher.finalize().into()
}

/// SHA-256(0x01 ‖ left ‖ right): the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree, SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// MTH of RFC 9162 §2.1.1 over the whole source.
pub fn root<S: HashSource + ?Sized>(source: &S) -> Hash {
    root_at(source, source.size()).expect("the full size is in range")
}

/// MTH of the first `size` leaves: the root the log had at that size.
pub fn root_at<S: HashSource + ?Sized>(source: &S, size: u64) -> Result<Hash, ProofError> {
    check_size(source, size)?;
    Ok(if size == 0 {
        empty_root()
    } else {
        range_hash(source, 0, size)
    })
}

/// The inclusion proof (RFC 9162 §2.1.3.1) of leaf `index` in the whole tree.
pub fn inclusion_proof<S: HashSource + ?Sized>(
    source: &S,
    index: u64,
) -> Result<Vec<Hash>, ProofError> {
    inclusion_proof_at(source, index, source.size())
}

/// The inclusion proof of leaf `index` in the tree of the first `size` leaves.
pub fn inclusion_proof_at<S: HashSource + ?Sized>(
    source: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError> {
    check_size(source, size)?;
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    // PATH(m, D[start:end]), unrolled top-down; the RFC lists the
    // siblings bottom-up, hence the reverse at the end.
    let (mut start, mut end) = (0, size);
    let mut proof = Vec::new();
    while end - start > 1 {
        let k = split(end - start);
        if index < start + k {
            proof.push(range_hash(source, start + k, end));
            end = start + k;
        } else {
            proof.push(source.subtree(start, k.trailing_zeros()));
            start += k;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The consistency proof (RFC 9162 §2.1.4.1) from the tree of the first
/// `old_size` leaves to the whole tree. Empty when `old_size` is 0 or the
/// whole size.
pub fn consistency_proof<S: HashSource + ?Sized>(
    source: &S,
    old_size: u64,
) -> Result<Vec<Hash>, ProofError> {
    consistency_proof_at(source, old_size, source.size())
}

/// The consistency proof from size `old_size` to size `new_size`.
pub fn consistency_proof_at<S: HashSource + ?Sized>(
    source: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, ProofError> {
    check_size(source, new_size)?;
    if old_size > new_size {
        return Err(ProofError::OutOfRange {
            index: old_size,
            size: new_size,
        });
    }
    let mut proof = Vec::new();
    if old_size == 0 || old_size == new_size {
        return Ok(proof);
    }
    // SUBPROOF(m, D[start:end], b), unrolled top-down; `m` counts the old
    // leaves inside [start, end), `whole` is the RFC's b.
    let (mut start, mut end, mut m, mut whole) = (0, new_size, old_size, true);
    loop {
        let n = end - start;
        if m == n {
            if !whole {
                proof.push(range_hash(source, start, end));
            }
            break;
        }
        let k = split(n);
        if m <= k {
            proof.push(range_hash(source, start + k, end));
            end = start + k;
        } else {
            proof.push(source.subtree(start, k.trailing_zeros()));
            start += k;
            m -= k;
            whole = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Checks an inclusion proof (RFC 9162 §2.1.3.2): `leaf` is leaf `index` of
/// the tree of `tree_size` leaves whose root is `root`.
pub fn verify_inclusion(
    index: u64,
    tree_size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= tree_size {
        return Err(ProofError::OutOfRange {
            index,
            size: tree_size,
        });
    }
    let (mut fn_, mut sn) = (index, tree_size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    equal_or(&r, root, ProofError::Mismatch)
}

/// Checks a consistency proof (RFC 9162 §2.1.4.2): the tree of `new_size`
/// leaves with root `new_root` extends the tree of `old_size` leaves with
/// root `old_root`. Equal sizes need an empty proof and equal roots; size 0
/// needs an empty proof and the empty-tree root.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::OutOfRange {
            index: old_size,
            size: new_size,
        });
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        let expected = if old_size == 0 {
            empty_root()
        } else {
            *new_root
        };
        return equal_or(old_root, &expected, ProofError::Mismatch);
    }
    // When the old tree is a complete subtree its root is the proof's
    // implicit first node.
    let (first, rest) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        let (first, rest) = proof.split_first().ok_or(ProofError::WrongLength)?;
        (*first, rest)
    };
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (first, first);
    for c in rest {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    equal_or(&fr, old_root, ProofError::Mismatch)?;
    equal_or(&sr, new_root, ProofError::Mismatch)
}

fn check_size<S: HashSource + ?Sized>(source: &S, size: u64) -> Result<(), ProofError> {
    if size > source.size() {
        return Err(ProofError::OutOfRange {
            index: size,
            size: source.size(),
        });
    }
    Ok(())
}

/// MTH(D[start:end]) for a subtree of the RFC's recursion (so `start` is a
/// multiple of the largest power of two below the length): the complete
/// subtrees down the right edge, one lookup each, joined bottom-up.
fn range_hash<S: HashSource + ?Sized>(source: &S, start: u64, end: u64) -> Hash {
    let n = end - start;
    if n.is_power_of_two() {
        return source.subtree(start, n.trailing_zeros());
    }
    let k = split(n);
    node_hash(
        &source.subtree(start, k.trailing_zeros()),
        &range_hash(source, start + k, end),
    )
}

/// The largest power of two strictly below `n` (`n >= 2`): where RFC 9162
/// splits a tree of `n` leaves.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2, "only trees of two or more leaves split");
    1 << (63 - (n - 1).leading_zeros())
}

/// Whether two hashes are equal, compared without an early exit, for
/// verifiers outside this module (see [`equal_or`]).
pub fn same_hash(a: &Hash, b: &Hash) -> bool {
    equal_or(a, b, ProofError::Mismatch).is_ok()
}

/// Hash comparison without an early exit (STYLE rule 7; these hashes are
/// public, but one rule everywhere is easier to audit than exceptions).
fn equal_or(a: &Hash, b: &Hash, error: ProofError) -> Result<(), ProofError> {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    if diff == 0 { Ok(()) } else { Err(error) }
}

#[cfg(test)]
mod tests;
