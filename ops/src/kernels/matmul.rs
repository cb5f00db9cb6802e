//! Matrix products on row-major slices, through faer.
//!
//! Transposed operands are faer views of the same memory: no copy is made.
//! faer's f32 GEMM gives the same bits for `Par::Seq` and `Par::rayon(n)`
//! (checked by `tests/determinism.rs`), which shoal's reproducibility
//! relies on.
use faer::{Accum, MatMut, MatRef, Par};

/// How an operand is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// As stored: an (rows, cols) row-major matrix.
    AsIs,
    /// Transposed: the slice stores the (cols, rows) matrix row-major.
    Transposed,
}

impl Layout {
    /// The other layout.
    pub fn flip(self) -> Layout {
        match self {
            Layout::AsIs => Layout::Transposed,
            Layout::Transposed => Layout::AsIs,
        }
    }
}

/// A (rows x cols) view of `data` read with `layout`.
#[track_caller]
pub fn view(data: &[f32], rows: usize, cols: usize, layout: Layout) -> MatRef<'_, f32> {
    match layout {
        Layout::AsIs => MatRef::from_row_major_slice(data, rows, cols),
        Layout::Transposed => MatRef::from_row_major_slice(data, cols, rows).transpose(),
    }
}

/// Below this many multiply-adds (m*n*k), a product runs on one thread:
/// splitting small products costs more than it saves (see STACK notes:
/// faer at 64^3 is 8x slower with two threads).
pub const PARALLEL_THRESHOLD: usize = 192 * 192 * 192;

/// `dst (m x n) = alpha * op(a) (m x k) * op(b) (k x n)`, added to `dst`
/// when `accumulate` is true.
///
/// # Panics
/// When a slice's length does not match its dimensions.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn gemm(
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_layout: Layout,
    b: &[f32],
    b_layout: Layout,
    (m, k, n): (usize, usize, usize),
    alpha: f32,
    par: Par,
) {
    assert_eq!(dst.len(), m * n, "gemm: destination is not {m}x{n}");
    assert_eq!(a.len(), m * k, "gemm: left operand is not {m}x{k}");
    assert_eq!(b.len(), k * n, "gemm: right operand is not {k}x{n}");
    if m == 0 || n == 0 {
        return;
    }
    let accum = if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    let par = if m * n * k < PARALLEL_THRESHOLD {
        Par::Seq
    } else {
        par
    };
    let lhs = view(a, m, k, a_layout);
    let rhs = view(b, k, n, b_layout);
    let out = MatMut::from_row_major_slice_mut(dst, m, n);
    faer::linalg::matmul::matmul(out, accum, lhs, rhs, alpha, par);
    // faer's wide-vector kernels may leave the upper register state dirty,
    // which slows every libm call after them (see `vector_state`).
    if crate::parallel::is_parallel(par) {
        crate::kernels::vector_state::clear_upper_vector_state_everywhere();
    } else {
        crate::kernels::vector_state::clear_upper_vector_state();
    }
}
