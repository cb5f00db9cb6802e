//! The pure part of the ring all-reduce over virtual ranks: who holds what,
//! which chunk each worker starts, adds to, owns and forwards, and a
//! single-process reference that adds in the same documented order.
//!
//! # Summation order
//!
//! The buffer is cut into buckets of `bucket_elements` values (the last one
//! shorter), and each bucket into V chunks ([`chunk_range`]: the first
//! `len % V` chunks one value longer). For chunk `c` of every bucket, each
//! value is summed along the ring of virtual ranks starting at rank
//! `s = (c + 1) mod V`:
//!
//! ```text
//! sum = ((g[s] + g[s+1]) + g[s+2]) + ... + g[s+V-1]      (indices mod V)
//! ```
//!
//! one IEEE f32 addition at a time, left to right, ending at virtual rank `c`,
//! which owns the chunk. The order depends on V (and the bucket size) only,
//! never on how many workers host the virtual ranks: hops between virtual
//! ranks of one worker are additions in memory, hops across workers carry
//! the partial sum over the network, and the additions are the same.
use std::ops::Range;

/// How V virtual ranks are spread over the workers of a ring: each worker
/// hosts a contiguous, non-empty range, in ring order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingLayout {
    virtual_ranks: usize,
    hosted: Vec<Range<usize>>,
}

impl RingLayout {
    /// Worker `i` hosts `counts[i]` consecutive virtual ranks.
    ///
    /// # Panics
    /// If a count is zero or there are no workers.
    #[track_caller]
    pub fn new(counts: &[usize]) -> Self {
        assert!(!counts.is_empty(), "a ring needs at least one worker");
        let mut hosted = Vec::with_capacity(counts.len());
        let mut start = 0;
        for &count in counts {
            assert!(
                count > 0,
                "every worker must host at least one virtual rank"
            );
            hosted.push(start..start + count);
            start += count;
        }
        Self {
            virtual_ranks: start,
            hosted,
        }
    }

    /// V virtual ranks over `workers` workers, as evenly as possible (the
    /// first `V % workers` workers host one more).
    ///
    /// # Panics
    /// If `workers` is zero or exceeds `virtual_ranks`.
    #[track_caller]
    pub fn even(virtual_ranks: usize, workers: usize) -> Self {
        assert!(
            workers > 0 && workers <= virtual_ranks,
            "cannot spread {virtual_ranks} virtual ranks over {workers} workers"
        );
        let counts: Vec<usize> = (0..workers)
            .map(|worker| virtual_ranks / workers + usize::from(worker < virtual_ranks % workers))
            .collect();
        Self::new(&counts)
    }

    /// Number of virtual ranks V.
    pub fn virtual_ranks(&self) -> usize {
        self.virtual_ranks
    }

    /// Number of workers W.
    pub fn workers(&self) -> usize {
        self.hosted.len()
    }

    /// Virtual ranks hosted by `worker`.
    pub fn hosted(&self, worker: usize) -> Range<usize> {
        self.hosted[worker].clone()
    }

    /// The worker hosting virtual rank `rank`.
    pub fn worker_of(&self, rank: usize) -> usize {
        self.hosted
            .iter()
            .position(|range| range.contains(&rank))
            .unwrap_or_else(|| panic!("virtual rank {rank} is outside 0..{}", self.virtual_ranks))
    }
}

/// Elements of chunk `chunk` of a bucket of `len` values cut into
/// `virtual_ranks` chunks (relative to the bucket's start).
pub fn chunk_range(len: usize, virtual_ranks: usize, chunk: usize) -> Range<usize> {
    let base = len / virtual_ranks;
    let longer = len % virtual_ranks;
    let start = chunk * base + chunk.min(longer);
    start..start + base + usize::from(chunk < longer)
}

/// Virtual rank where the sum of chunk `chunk` starts.
pub fn chain_start(virtual_ranks: usize, chunk: usize) -> usize {
    (chunk + 1) % virtual_ranks
}

/// A run of values that travels as one message: part of one chunk of one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Elements of the whole buffer.
    pub range: Range<usize>,
    /// Chunk index within its bucket (which fixes the summation order).
    pub chunk: usize,
}

/// Cuts a buffer of `len` values into buckets, chunks and pieces of at most
/// `piece_elements` values, in buffer order; empty chunks yield no piece.
///
/// # Panics
/// If `bucket_elements`, `piece_elements` or `virtual_ranks` is zero.
#[track_caller]
pub fn pieces(
    len: usize,
    bucket_elements: usize,
    piece_elements: usize,
    virtual_ranks: usize,
) -> Vec<Piece> {
    assert!(bucket_elements > 0 && piece_elements > 0 && virtual_ranks > 0);
    let mut out = Vec::new();
    let mut bucket_start = 0;
    while bucket_start < len {
        let bucket_len = bucket_elements.min(len - bucket_start);
        for chunk in 0..virtual_ranks {
            let range = chunk_range(bucket_len, virtual_ranks, chunk);
            let mut start = bucket_start + range.start;
            let end = bucket_start + range.end;
            while start < end {
                let piece_end = end.min(start.saturating_add(piece_elements));
                out.push(Piece {
                    range: start..piece_end,
                    chunk,
                });
                start = piece_end;
            }
        }
        bucket_start += bucket_len;
    }
    out
}

/// What one worker does for one chunk index, in a ring of two or more workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRole {
    /// The sum starts here: fold these local virtual ranks (in order) from
    /// scratch and send the partial sum to the next worker.
    pub start: Option<Range<usize>>,
    /// A partial sum arrives from the previous worker: add these local virtual
    /// ranks to it, in order (always starting at the first hosted rank).
    pub entering: Option<Range<usize>>,
    /// The sum ends here (after `entering`): send the final value on.
    pub owns: bool,
    /// Not the owner: the final value arrives from the previous worker, and
    /// is passed on unless the next worker is the owner.
    pub forward_final: bool,
}

/// The role of `worker` for chunk `chunk` (needs at least two workers).
///
/// # Panics
/// With a single worker: everything is local then (see [`reference_all_reduce`]).
#[track_caller]
pub fn chunk_role(layout: &RingLayout, worker: usize, chunk: usize) -> ChunkRole {
    let workers = layout.workers();
    assert!(
        workers >= 2,
        "chunk roles describe rings of two or more workers"
    );
    let hosted = layout.hosted(worker);
    let start_rank = chain_start(layout.virtual_ranks(), chunk);
    let owner = layout.worker_of(chunk);
    let start = hosted
        .contains(&start_rank)
        .then_some(start_rank..hosted.end);
    let owns = owner == worker;
    let entering = (start_rank != hosted.start).then(|| {
        if owns {
            hosted.start..chunk + 1
        } else {
            hosted.clone()
        }
    });
    ChunkRole {
        start,
        entering,
        owns,
        forward_final: !owns && (worker + 1) % workers != owner,
    }
}

/// The all-reduced buffer computed in one process, adding in the documented
/// order; `gradients[r]` is virtual rank r's buffer.
///
/// # Panics
/// If the buffers differ in length, there are none, or `bucket_elements` is zero.
#[track_caller]
pub fn reference_all_reduce(gradients: &[&[f32]], bucket_elements: usize) -> Vec<f32> {
    let virtual_ranks = gradients.len();
    assert!(virtual_ranks > 0, "no gradients to reduce");
    let len = gradients[0].len();
    assert!(
        gradients.iter().all(|gradient| gradient.len() == len),
        "gradients differ in length"
    );
    let mut out = vec![0.0f32; len];
    for piece in pieces(len, bucket_elements, usize::MAX, virtual_ranks) {
        let start = chain_start(virtual_ranks, piece.chunk);
        for index in piece.range {
            let mut sum = gradients[start][index];
            for step in 1..virtual_ranks {
                sum += gradients[(start + step) % virtual_ranks][index];
            }
            out[index] = sum;
        }
    }
    out
}
