//! Differentiable ops, one module per op family. Each family defines its
//! forward as `Tensor` methods (or free functions) and its backward as a
//! [`Backward`](crate::autograd::Backward) implementation beside it.
pub mod binary;
pub mod conv;
pub mod dropout;
pub mod index;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod recurrent;
pub mod reduce;
pub mod scan;
pub mod shape;
pub mod softmax;
pub mod sparse;
pub mod unary;

pub use loss::{IGNORE_INDEX, Reduction, barlow_twins_loss};
pub use shape::{concat, stack};

use faer::Par;

use crate::parallel::{CHUNK, for_each_chunk_mut};

/// Runs `f(row_index, row)` on each `row_len`-long row of `out`, in parallel
/// over groups of rows whose size depends on `row_len` only (never on the
/// thread count) when `par` allows. Each row is computed by one thread, in
/// a fixed order, so the results do not depend on `par`.
pub(crate) fn for_each_row_mut(
    par: Par,
    out: &mut [f32],
    row_len: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    for_each_row_with_cost(par, out, row_len, row_len, f);
}

/// Like [`for_each_row_mut`], for rows that each cost about `cost`
/// elements of work (a per-row statistic of a long input row): groups hold
/// about [`CHUNK`] elements of work.
pub(crate) fn for_each_row_with_cost(
    par: Par,
    out: &mut [f32],
    row_len: usize,
    cost: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    if row_len == 0 {
        return;
    }
    let rows_per_chunk = (CHUNK / cost.max(1)).max(1);
    for_each_chunk_mut(par, out, rows_per_chunk * row_len, |c, chunk| {
        for (r, row) in chunk.chunks_exact_mut(row_len).enumerate() {
            f(c * rows_per_chunk + r, row);
        }
    });
}

/// Sums over rows of `0..rows` of per-row contributions of width `width`:
/// `add(row, partial)` adds row `row`'s contribution into `partial`. Rows
/// are taken in fixed groups (sized by `cols` only); the groups' partial
/// sums are added in index order.
pub(crate) fn sum_over_rows(
    par: Par,
    rows: usize,
    cols: usize,
    width: usize,
    add: impl Fn(usize, &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    let rows_per_group = (CHUNK / cols.max(1)).max(1);
    let groups = rows.div_ceil(rows_per_group);
    let mut partials = vec![0.0; groups * width];
    if width == 0 {
        return partials;
    }
    for_each_chunk_mut(par, &mut partials, width, |group, partial| {
        let start = group * rows_per_group;
        for r in start..(start + rows_per_group).min(rows) {
            add(r, partial);
        }
    });
    let mut total = vec![0.0; width];
    for partial in partials.chunks_exact(width) {
        for (t, &p) in total.iter_mut().zip(partial) {
            *t += p;
        }
    }
    total
}
