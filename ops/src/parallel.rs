//! The parallelism that tensor ops use, and deterministic chunked reductions.
//!
//! Kernels take a [`Par`] explicitly. Tensor-level ops read it from a
//! thread-local setting ([`set_parallelism`], [`with_parallelism`]), `Par::Seq`
//! by default. Whatever the setting, results are bit-identical: parallel
//! loops split work into chunks whose boundaries depend on the problem size
//! only, never on the thread count, and reductions combine chunk results in
//! index order. (A split over outputs that one thread each computes whole,
//! in the sequential order, cuts no sum and may follow the thread count.)
use std::cell::Cell;

use faer::Par;
use rayon::prelude::*;

thread_local! {
    static PARALLELISM: Cell<Par> = const { Cell::new(Par::Seq) };
}

/// The parallelism tensor ops on this thread use.
pub fn current_parallelism() -> Par {
    PARALLELISM.with(|p| p.get())
}

/// Sets the parallelism tensor ops on this thread use.
pub fn set_parallelism(par: Par) {
    PARALLELISM.with(|p| p.set(par));
}

/// Runs `f` with tensor ops on this thread using `par`.
pub fn with_parallelism<R>(par: Par, f: impl FnOnce() -> R) -> R {
    struct Restore(Par);
    impl Drop for Restore {
        fn drop(&mut self) {
            PARALLELISM.with(|p| p.set(self.0));
        }
    }
    let _restore = Restore(PARALLELISM.with(|p| p.replace(par)));
    f()
}

/// Whether `par` allows more than one thread.
pub fn is_parallel(par: Par) -> bool {
    match par {
        Par::Seq => false,
        Par::Rayon(n) => n.get() > 1,
    }
}

/// Elements per chunk of parallel elementwise loops and reductions. Fixed,
/// so that chunk boundaries never depend on the thread count.
pub const CHUNK: usize = 1 << 14;

/// Applies `f(chunk_index, chunk)` to consecutive `chunk`-sized pieces of
/// `dst`, in parallel when `par` allows and there is more than one chunk.
pub fn for_each_chunk_mut<T: Send>(
    par: Par,
    dst: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    let chunk = chunk.max(1);
    if is_parallel(par) && dst.len() > chunk {
        dst.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        dst.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// A vector of `len` elements written chunk by chunk, never zeroed first:
/// `fill(chunk_index, chunk)` over consecutive `chunk`-sized pieces of its
/// uninitialized buffer, as [`for_each_chunk_mut`].
///
/// # Safety
/// `fill` must write every element of every chunk it is given: the vector
/// takes them all as initialized.
#[allow(unsafe_code)]
pub(crate) unsafe fn filled_by_chunks(
    par: Par,
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    for_each_chunk_mut(par, &mut out.spare_capacity_mut()[..len], chunk, fill);
    #[allow(unsafe_code)]
    // SAFETY: the chunks cover `0..len`, and the caller's `fill` wrote every
    // element of each.
    unsafe {
        out.set_len(len);
    }
    out
}

/// Sum of `values` in a fixed order: sequential sums of [`CHUNK`]-sized
/// pieces (computed in parallel when `par` allows), then those partial sums
/// added in index order. Same bits for every `par`.
pub fn deterministic_sum(par: Par, values: &[f32]) -> f32 {
    deterministic_map_sum(par, values.len(), |range| values[range].iter().sum::<f32>())
}

/// Sum over `0..len` of `piece(range)` for fixed ranges of [`CHUNK`]
/// elements, the partial results added in index order.
pub fn deterministic_map_sum(
    par: Par,
    len: usize,
    piece: impl Fn(std::ops::Range<usize>) -> f32 + Sync + Send,
) -> f32 {
    let chunks = len.div_ceil(CHUNK);
    let range = |i: usize| i * CHUNK..((i + 1) * CHUNK).min(len);
    if is_parallel(par) && chunks > 1 {
        let partial: Vec<f32> = (0..chunks)
            .into_par_iter()
            .map(|i| piece(range(i)))
            .collect();
        partial.iter().sum()
    } else {
        (0..chunks).map(|i| piece(range(i))).sum()
    }
}
