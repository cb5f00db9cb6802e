//! Fused LSTM and GRU layers over (batch, time, features), exactly as
//! `torch.nn.LSTM` / `torch.nn.GRU` with `batch_first=True` (gate order
//! i, f, g, o for the LSTM; r, z, n for the GRU, with
//! `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`).
//!
//! The input projection of all time steps is one GEMM; each step is one
//! small GEMM `h_{t-1} W_hh^T` plus a fused gate kernel. The backward runs
//! backpropagation through time inside the kernel (one small GEMM per
//! step for the hidden-state gradient) and finishes with three large GEMMs
//! for the weight and input gradients. Every product goes through faer,
//! whose results do not depend on the thread count; bias gradients are
//! column sums in row order.
use faer::Par;

use crate::kernels::elementwise::wide;
use crate::kernels::fast_math::{sigmoid, tanh};
use crate::kernels::matmul::{Layout, gemm};
use crate::kernels::scan::for_each_item;
use crate::kernels::small_gemm::gemm_add;

/// Dimensions of a recurrent layer: batch, time, input features, hidden size.
pub type RecurrentDims = (usize, usize, usize, usize);

/// The weights of one layer, named as PyTorch's.
#[derive(Clone, Copy, Debug)]
pub struct RecurrentWeights<'a> {
    /// `weight_ih_lK`: (gates * hidden, input).
    pub w_ih: &'a [f32],
    /// `weight_hh_lK`: (gates * hidden, hidden).
    pub w_hh: &'a [f32],
    /// `bias_ih_lK`: (gates * hidden).
    pub b_ih: &'a [f32],
    /// `bias_hh_lK`: (gates * hidden).
    pub b_hh: &'a [f32],
}

impl RecurrentWeights<'_> {
    #[track_caller]
    fn check(&self, gates: usize, (_, _, input, hidden): RecurrentDims) {
        assert_eq!(
            self.w_ih.len(),
            gates * hidden * input,
            "recurrent: weight_ih"
        );
        assert_eq!(
            self.w_hh.len(),
            gates * hidden * hidden,
            "recurrent: weight_hh"
        );
        assert_eq!(self.b_ih.len(), gates * hidden, "recurrent: bias_ih");
        assert_eq!(self.b_hh.len(), gates * hidden, "recurrent: bias_hh");
    }
}

/// Gradients of a recurrent layer.
#[derive(Debug)]
pub struct RecurrentGrads {
    /// With respect to the input (batch, time, input).
    pub x: Vec<f32>,
    /// With respect to `weight_ih`.
    pub w_ih: Vec<f32>,
    /// With respect to `weight_hh`.
    pub w_hh: Vec<f32>,
    /// With respect to `bias_ih`.
    pub b_ih: Vec<f32>,
    /// With respect to `bias_hh`.
    pub b_hh: Vec<f32>,
}

/// `x (rows x input) W^T + bias`, with `W` (out x input): the input
/// projection of every time step at once.
fn project(par: Par, x: &[f32], w: &[f32], bias: &[f32], rows: usize, input: usize) -> Vec<f32> {
    let out = bias.len();
    // The product accumulates onto the bias rows (no zeroing first).
    let mut dst = bias.repeat(rows);
    gemm(
        &mut dst,
        true,
        x,
        Layout::AsIs,
        w,
        Layout::Transposed,
        (rows, input, out),
        1.0,
        par,
    );
    dst
}

/// Column sums of a (rows x cols) matrix, rows added in order.
fn column_sums(m: &[f32], cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; cols];
    for row in m.chunks_exact(cols.max(1)) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
    out
}

/// The hidden states shifted one step later in time (zero at `t = 0`):
/// row (b, t) holds `h_{t-1}` of batch entry b.
fn previous_states(output: &[f32], batch: usize, time: usize, hidden: usize) -> Vec<f32> {
    let mut prev = vec![0.0; output.len()];
    for b in 0..batch {
        let base = b * time * hidden;
        if time > 1 {
            prev[base + hidden..base + time * hidden]
                .copy_from_slice(&output[base..base + (time - 1) * hidden]);
        }
    }
    prev
}

/// The weight, bias and input gradients from the pre-activation gradients
/// of every step: `d_in` (rows x gates*hidden) for the input projection,
/// `d_rec` for the recurrent one.
#[allow(clippy::too_many_arguments)]
fn finish_grads(
    par: Par,
    d_in: &[f32],
    d_rec: &[f32],
    x: &[f32],
    output: &[f32],
    weights: RecurrentWeights<'_>,
    gates: usize,
    (batch, time, input, hidden): RecurrentDims,
) -> RecurrentGrads {
    let rows = batch * time;
    let g = gates * hidden;
    let mut w_ih = vec![0.0; g * input];
    gemm(
        &mut w_ih,
        false,
        d_in,
        Layout::Transposed,
        x,
        Layout::AsIs,
        (g, rows, input),
        1.0,
        par,
    );
    let prev = previous_states(output, batch, time, hidden);
    let mut w_hh = vec![0.0; g * hidden];
    gemm(
        &mut w_hh,
        false,
        d_rec,
        Layout::Transposed,
        &prev,
        Layout::AsIs,
        (g, rows, hidden),
        1.0,
        par,
    );
    let mut dx = vec![0.0; rows * input];
    gemm(
        &mut dx,
        false,
        d_in,
        Layout::AsIs,
        weights.w_ih,
        Layout::AsIs,
        (rows, g, input),
        1.0,
        par,
    );
    RecurrentGrads {
        x: dx,
        w_ih,
        w_hh,
        b_ih: column_sums(d_in, g),
        b_hh: column_sums(d_rec, g),
    }
}

/// Batch entries per block of the LSTM: the blocks' recurrences are
/// independent and run in parallel when `Par` allows. A constant: the
/// blocking depends on the batch size only, and each element's arithmetic
/// does not depend on it anyway (row by row kernels).
pub const LSTM_BATCH_BLOCK: usize = 16;

/// The batch blocks of the LSTM: `(first, end)` entries.
fn batch_blocks(batch: usize) -> Vec<(usize, usize)> {
    (0..batch.div_ceil(LSTM_BATCH_BLOCK))
        .map(|k| {
            (
                k * LSTM_BATCH_BLOCK,
                ((k + 1) * LSTM_BATCH_BLOCK).min(batch),
            )
        })
        .collect()
}

/// What an LSTM forward keeps for its backward, in blocked time-major
/// order: block `(b0, b1)` of [`LSTM_BATCH_BLOCK`] entries takes rows
/// `b0 * time..b1 * time`, in which row `t * (b1 - b0) + (b - b0)` holds
/// step `t` of batch entry `b` (plain time-major for one block).
#[derive(Debug)]
pub struct LstmCache {
    /// The input: (rows, input).
    pub x: Vec<f32>,
    /// Gate activations `[i f g o]`: (rows, 4 hidden).
    pub gates: Vec<f32>,
    /// Cell states: (rows, hidden).
    pub cells: Vec<f32>,
    /// `tanh` of the cell states: (rows, hidden).
    pub tanh_cells: Vec<f32>,
    /// Hidden states: (rows, hidden).
    pub hidden: Vec<f32>,
}

/// (batch, time, width) to the blocked time-major order of [`LstmCache`],
/// or back when `back`.
fn reorder(src: &[f32], (batch, time, width): (usize, usize, usize), back: bool) -> Vec<f32> {
    debug_assert_eq!(src.len(), batch * time * width);
    // Rows are appended in the destination's order (nothing is zeroed first).
    let mut dst = Vec::with_capacity(src.len());
    for (b0, b1) in batch_blocks(batch) {
        let blocked = |b: usize, t: usize| (b0 * time + t * (b1 - b0) + (b - b0)) * width;
        let plain = |b: usize, t: usize| (b * time + t) * width;
        if back {
            for b in b0..b1 {
                for t in 0..time {
                    let from = blocked(b, t);
                    dst.extend_from_slice(&src[from..from + width]);
                }
            }
        } else {
            for t in 0..time {
                for b in b0..b1 {
                    let from = plain(b, t);
                    dst.extend_from_slice(&src[from..from + width]);
                }
            }
        }
    }
    dst
}

/// `buf` (rows, width) cut into the row ranges of the batch blocks.
fn block_pieces<'a>(
    mut buf: &'a mut [f32],
    blocks: &[(usize, usize)],
    time: usize,
    width: usize,
) -> Vec<&'a mut [f32]> {
    blocks
        .iter()
        .map(|&(b0, b1)| {
            let (piece, rest) = std::mem::take(&mut buf).split_at_mut((b1 - b0) * time * width);
            buf = rest;
            piece
        })
        .collect()
}

/// (outer, inner, width) to (inner, outer, width): swaps the two outer
/// axes of a row-major array.
fn swap_outer(src: &[f32], outer: usize, inner: usize, width: usize) -> Vec<f32> {
    debug_assert_eq!(src.len(), outer * inner * width);
    let mut dst = vec![0.0; src.len()];
    for o in 0..outer {
        for i in 0..inner {
            let from = (o * inner + i) * width;
            let to = (i * outer + o) * width;
            dst[to..to + width].copy_from_slice(&src[from..from + width]);
        }
    }
    dst
}

/// One LSTM layer: returns the hidden states (batch, time, hidden) and the
/// cache for [`lstm_backward`]. Initial hidden and cell states are zero.
///
/// The layer runs time-major inside, in independent blocks of
/// [`LSTM_BATCH_BLOCK`] batch entries (in parallel when `par` allows):
/// the input projection of every step is one GEMM into the gate buffer,
/// each step adds `h_{t-1} W_hh^T` for all four gates with one
/// [`gemm_add`] and applies the gate nonlinearities and the cell update in
/// place, in one pass. The result does not depend on `par`.
///
/// # Panics
/// When a slice's length does not match the dimensions.
#[track_caller]
pub fn lstm_forward(
    par: Par,
    x: &[f32],
    weights: RecurrentWeights<'_>,
    dims: RecurrentDims,
) -> (Vec<f32>, LstmCache) {
    let (batch, time, input, hidden) = dims;
    weights.check(4, dims);
    assert_eq!(x.len(), batch * time * input, "lstm: input length");
    let g4 = 4 * hidden;
    let mut bias = weights.b_ih.to_vec();
    for (b, &v) in bias.iter_mut().zip(weights.b_hh) {
        *b += v;
    }
    let x = reorder(x, (batch, time, input), false);
    let mut gates = project(par, &x, weights.w_ih, &bias, batch * time, input);
    // W_hh^T (hidden x 4 hidden), so that a step's product is row-major
    let w_hh_t = swap_outer(weights.w_hh, g4, hidden, 1);
    let n = batch * time * hidden;
    let (mut cells, mut tanh_cells, mut states) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let blocks = batch_blocks(batch);
    let items: Vec<_> = block_pieces(&mut gates, &blocks, time, g4)
        .into_iter()
        .zip(block_pieces(&mut cells, &blocks, time, hidden))
        .zip(block_pieces(&mut tanh_cells, &blocks, time, hidden))
        .zip(block_pieces(&mut states, &blocks, time, hidden))
        .collect();
    for_each_item(par, items, |(((gates, cells), tanh_cells), states)| {
        lstm_block_forward(gates, cells, tanh_cells, states, &w_hh_t, time, hidden);
    });
    let output = reorder(&states, (batch, time, hidden), true);
    let cache = LstmCache {
        x,
        gates,
        cells,
        tanh_cells,
        hidden: states,
    };
    (output, cache)
}

/// The time loop of one batch block: `gates` (time, rows, 4 hidden) holds
/// the input projections and receives the activations; `cells`,
/// `tanh_cells`, `states` (time, rows, hidden).
fn lstm_block_forward(
    gates: &mut [f32],
    cells: &mut [f32],
    tanh_cells: &mut [f32],
    states: &mut [f32],
    w_hh_t: &[f32],
    time: usize,
    hidden: usize,
) {
    let g4 = 4 * hidden;
    let rows = states.len() / (time * hidden).max(1);
    let step_len = rows * hidden;
    let zeros = vec![0.0; step_len];
    for t in 0..time {
        let pre = &mut gates[t * rows * g4..(t + 1) * rows * g4];
        let (done, now) = states.split_at_mut(t * step_len);
        if t > 0 {
            let h_prev = &done[(t - 1) * step_len..];
            gemm_add(pre, h_prev, w_hh_t, (rows, hidden, g4));
        }
        let (cells_done, cells_now) = cells.split_at_mut(t * step_len);
        let c_prev = if t > 0 {
            &cells_done[(t - 1) * step_len..]
        } else {
            &zeros[..]
        };
        lstm_step_forward(
            pre,
            c_prev,
            &mut cells_now[..step_len],
            &mut tanh_cells[t * step_len..(t + 1) * step_len],
            &mut now[..step_len],
            hidden,
        );
    }
}

/// Backward of [`lstm_forward`] through time, given the gradient of the
/// hidden states `grad_output` (batch, time, hidden).
///
/// Each step computes the pre-activation gradients of all gates in one
/// pass and adds their product with `W_hh` to the previous step's hidden
/// gradient ([`gemm_add`]), block by block as the forward; the weight
/// gradients are then GEMMs over all time steps, the bias gradients one
/// column sum.
#[track_caller]
pub fn lstm_backward(
    par: Par,
    grad_output: &[f32],
    cache: &LstmCache,
    weights: RecurrentWeights<'_>,
    dims: RecurrentDims,
) -> RecurrentGrads {
    let (batch, time, input, hidden) = dims;
    assert_eq!(
        grad_output.len(),
        batch * time * hidden,
        "lstm: gradient length"
    );
    let g4 = 4 * hidden;
    let rows = batch * time;
    let blocks = batch_blocks(batch);
    // dh; step t's entry gains the recurrent part during step t + 1
    let mut dh = reorder(grad_output, (batch, time, hidden), false);
    let mut d_pre = vec![0.0f32; rows * g4];
    let items: Vec<_> = block_pieces(&mut d_pre, &blocks, time, g4)
        .into_iter()
        .zip(block_pieces(&mut dh, &blocks, time, hidden))
        .zip(&blocks)
        .collect();
    for_each_item(par, items, |((d_pre, dh), &(b0, b1))| {
        let (h0, h1) = (b0 * time * hidden, b1 * time * hidden);
        lstm_block_backward(
            d_pre,
            dh,
            &cache.gates[b0 * time * g4..b1 * time * g4],
            &cache.cells[h0..h1],
            &cache.tanh_cells[h0..h1],
            weights.w_hh,
            time,
            hidden,
        );
    });
    let mut w_ih = vec![0.0; g4 * input];
    gemm(
        &mut w_ih,
        false,
        &d_pre,
        Layout::Transposed,
        &cache.x,
        Layout::AsIs,
        (g4, rows, input),
        1.0,
        par,
    );
    // per block, step t's gate gradients meet h_{t-1}: the block's rows
    // from its first step on against its states up to the last step
    let mut w_hh = vec![0.0; g4 * hidden];
    for (k, &(b0, b1)) in blocks.iter().enumerate() {
        let (bk, pairs) = (b1 - b0, (b1 - b0) * time.saturating_sub(1));
        let d = &d_pre[(b0 * time + bk) * g4..(b0 * time + bk + pairs) * g4];
        let h = &cache.hidden[b0 * time * hidden..(b0 * time + pairs) * hidden];
        gemm(
            &mut w_hh,
            k > 0,
            d,
            Layout::Transposed,
            h,
            Layout::AsIs,
            (g4, pairs, hidden),
            1.0,
            par,
        );
    }
    let mut dx = vec![0.0; rows * input];
    gemm(
        &mut dx,
        false,
        &d_pre,
        Layout::AsIs,
        weights.w_ih,
        Layout::AsIs,
        (rows, g4, input),
        1.0,
        par,
    );
    let bias = column_sums(&d_pre, g4);
    RecurrentGrads {
        x: reorder(&dx, (batch, time, input), true),
        w_ih,
        w_hh,
        b_ih: bias.clone(),
        b_hh: bias,
    }
}

/// The reverse time loop of one batch block: `d_pre` (time, rows,
/// 4 hidden) receives the gate gradients; `dh` (time, rows, hidden) holds
/// the output gradient and gains the recurrent part.
#[allow(clippy::too_many_arguments)]
fn lstm_block_backward(
    d_pre: &mut [f32],
    dh: &mut [f32],
    gates: &[f32],
    cells: &[f32],
    tanh_cells: &[f32],
    w_hh: &[f32],
    time: usize,
    hidden: usize,
) {
    let g4 = 4 * hidden;
    let rows = dh.len() / (time * hidden).max(1);
    let step_len = rows * hidden;
    let mut dc = vec![0.0f32; step_len];
    let zeros = vec![0.0f32; step_len];
    for t in (0..time).rev() {
        let span = t * step_len..(t + 1) * step_len;
        let c_prev = if t > 0 {
            &cells[(t - 1) * step_len..t * step_len]
        } else {
            &zeros[..]
        };
        let d = &mut d_pre[t * rows * g4..(t + 1) * rows * g4];
        lstm_step_backward(
            &gates[t * rows * g4..(t + 1) * rows * g4],
            &tanh_cells[span.clone()],
            c_prev,
            &dh[span],
            &mut dc,
            d,
            hidden,
        );
        if t > 0 {
            gemm_add(
                &mut dh[(t - 1) * step_len..t * step_len],
                d,
                w_hh,
                (rows, g4, hidden),
            );
        }
    }
}

/// One LSTM step for every batch entry: `pre` (batch, 4 hidden) holds
/// the pre-activations `[i f g o]` and receives the activations; the new
/// cell states, their `tanh` and the hidden states go to `cells`,
/// `tanh_cells` and `h` (batch, hidden). Compiled for the widest vectors
/// the CPU has ([`wide!`]: plain arithmetic, the same bits either way).
fn lstm_step_forward(
    pre: &mut [f32],
    c_prev: &[f32],
    cells: &mut [f32],
    tanh_cells: &mut [f32],
    h: &mut [f32],
    hidden: usize,
) {
    wide!(lstm_step_forward_body(
        pre, c_prev, cells, tanh_cells, h, hidden
    ));
}

#[inline(always)]
fn lstm_step_forward_body(
    pre: &mut [f32],
    c_prev: &[f32],
    cells: &mut [f32],
    tanh_cells: &mut [f32],
    h: &mut [f32],
    hidden: usize,
) {
    let rows = pre
        .chunks_exact_mut(4 * hidden)
        .zip(c_prev.chunks_exact(hidden))
        .zip(cells.chunks_exact_mut(hidden))
        .zip(tanh_cells.chunks_exact_mut(hidden))
        .zip(h.chunks_exact_mut(hidden));
    for ((((pre, c_prev), cells), tanh_cells), h) in rows {
        let (pi, rest) = pre.split_at_mut(hidden);
        let (pf, rest) = rest.split_at_mut(hidden);
        let (pg, po) = rest.split_at_mut(hidden);
        lstm_row_forward(pi, pf, pg, po, c_prev, cells, tanh_cells, h);
    }
}

/// [`lstm_step_forward_body`] for one batch entry: a function of its own
/// so that its slices are known not to alias (arguments are `noalias`,
/// also when inlined) and the loop vectorizes.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn lstm_row_forward(
    pi: &mut [f32],
    pf: &mut [f32],
    pg: &mut [f32],
    po: &mut [f32],
    c_prev: &[f32],
    cells: &mut [f32],
    tanh_cells: &mut [f32],
    h: &mut [f32],
) {
    let hidden = h.len();
    let (pi, pf, pg, po) = (
        &mut pi[..hidden],
        &mut pf[..hidden],
        &mut pg[..hidden],
        &mut po[..hidden],
    );
    let (c_prev, cells, tanh_cells) = (
        &c_prev[..hidden],
        &mut cells[..hidden],
        &mut tanh_cells[..hidden],
    );
    for j in 0..hidden {
        let i = sigmoid(pi[j]);
        let f = sigmoid(pf[j]);
        let gg = tanh(pg[j]);
        let o = sigmoid(po[j]);
        let cell = f * c_prev[j] + i * gg;
        let tc = tanh(cell);
        pi[j] = i;
        pf[j] = f;
        pg[j] = gg;
        po[j] = o;
        cells[j] = cell;
        tanh_cells[j] = tc;
        h[j] = o * tc;
    }
}

/// One LSTM backward step for every batch entry: from the activations
/// `act` (batch, 4 hidden), `tanh` of the cell states, the previous cell
/// states and the hidden-state gradient `dh` (batch, hidden), the gate
/// pre-activation gradients into `d` (batch, 4 hidden); `dc` carries the
/// cell gradient from the next step in and to the previous step out.
fn lstm_step_backward(
    act: &[f32],
    tanh_cells: &[f32],
    c_prev: &[f32],
    dh: &[f32],
    dc: &mut [f32],
    d: &mut [f32],
    hidden: usize,
) {
    wide!(lstm_step_backward_body(
        act, tanh_cells, c_prev, dh, dc, d, hidden
    ));
}

#[inline(always)]
fn lstm_step_backward_body(
    act: &[f32],
    tanh_cells: &[f32],
    c_prev: &[f32],
    dh: &[f32],
    dc: &mut [f32],
    d: &mut [f32],
    hidden: usize,
) {
    let rows = act
        .chunks_exact(4 * hidden)
        .zip(tanh_cells.chunks_exact(hidden))
        .zip(c_prev.chunks_exact(hidden))
        .zip(dh.chunks_exact(hidden))
        .zip(dc.chunks_exact_mut(hidden))
        .zip(d.chunks_exact_mut(4 * hidden));
    for (((((act, tanh_cells), c_prev), dh), dc), d) in rows {
        let (ai, rest) = act.split_at(hidden);
        let (af, rest) = rest.split_at(hidden);
        let (ag, ao) = rest.split_at(hidden);
        let (di, rest) = d.split_at_mut(hidden);
        let (df, rest) = rest.split_at_mut(hidden);
        let (dg, d_o) = rest.split_at_mut(hidden);
        lstm_row_backward(
            (ai, af, ag, ao),
            (tanh_cells, c_prev, dh),
            dc,
            di,
            df,
            dg,
            d_o,
        );
    }
}

/// [`lstm_step_backward_body`] for one batch entry (a function of its own
/// for `noalias` arguments, as [`lstm_row_forward`]).
#[inline(always)]
#[allow(clippy::type_complexity)]
fn lstm_row_backward(
    (ai, af, ag, ao): (&[f32], &[f32], &[f32], &[f32]),
    (tanh_cells, c_prev, dh): (&[f32], &[f32], &[f32]),
    dc: &mut [f32],
    di: &mut [f32],
    df: &mut [f32],
    dg: &mut [f32],
    d_o: &mut [f32],
) {
    let hidden = dc.len();
    let (ai, af, ag, ao) = (&ai[..hidden], &af[..hidden], &ag[..hidden], &ao[..hidden]);
    let (di, df, dg, d_o) = (
        &mut di[..hidden],
        &mut df[..hidden],
        &mut dg[..hidden],
        &mut d_o[..hidden],
    );
    let (tanh_cells, c_prev, dh) = (&tanh_cells[..hidden], &c_prev[..hidden], &dh[..hidden]);
    for j in 0..hidden {
        let (i, f, gg, o) = (ai[j], af[j], ag[j], ao[j]);
        let tc = tanh_cells[j];
        let dh = dh[j];
        let dcell = dh * o * (1.0 - tc * tc) + dc[j];
        dc[j] = dcell * f;
        di[j] = dcell * gg * i * (1.0 - i);
        df[j] = dcell * c_prev[j] * f * (1.0 - f);
        dg[j] = dcell * i * (1.0 - gg * gg);
        d_o[j] = dh * tc * o * (1.0 - o);
    }
}

/// What a GRU forward keeps for its backward: `[r z n (W_hn h + b_hn)]`
/// per (batch, time): (batch, time, 4 hidden).
#[derive(Debug)]
pub struct GruCache {
    /// Reset and update gates, candidate, and the recurrent part of the
    /// candidate's pre-activation.
    pub gates: Vec<f32>,
}

/// One GRU layer: returns the hidden states (batch, time, hidden) and the
/// cache for [`gru_backward`]. The initial hidden state is zero.
///
/// # Panics
/// When a slice's length does not match the dimensions.
#[track_caller]
pub fn gru_forward(
    par: Par,
    x: &[f32],
    weights: RecurrentWeights<'_>,
    dims: RecurrentDims,
) -> (Vec<f32>, GruCache) {
    let (batch, time, input, hidden) = dims;
    weights.check(3, dims);
    assert_eq!(x.len(), batch * time * input, "gru: input length");
    let g3 = 3 * hidden;
    let projected = project(par, x, weights.w_ih, weights.b_ih, batch * time, input);
    let mut output = vec![0.0; batch * time * hidden];
    let mut cache = GruCache {
        gates: vec![0.0; batch * time * 4 * hidden],
    };
    let mut h = vec![0.0f32; batch * hidden];
    let mut step = vec![0.0f32; batch * g3];
    for t in 0..time {
        for row in step.chunks_exact_mut(g3.max(1)) {
            row.copy_from_slice(weights.b_hh);
        }
        if t > 0 {
            gemm(
                &mut step,
                true,
                &h,
                Layout::AsIs,
                weights.w_hh,
                Layout::Transposed,
                (batch, hidden, g3),
                1.0,
                par,
            );
        }
        for b in 0..batch {
            let gi = &projected[(b * time + t) * g3..(b * time + t + 1) * g3];
            let gh = &step[b * g3..(b + 1) * g3];
            let row = (b * time + t) * hidden;
            let saved =
                &mut cache.gates[(b * time + t) * 4 * hidden..(b * time + t + 1) * 4 * hidden];
            for j in 0..hidden {
                let r = sigmoid(gi[j] + gh[j]);
                let z = sigmoid(gi[hidden + j] + gh[hidden + j]);
                let n = tanh(gi[2 * hidden + j] + r * gh[2 * hidden + j]);
                let out = (1.0 - z) * n + z * h[b * hidden + j];
                h[b * hidden + j] = out;
                output[row + j] = out;
                saved[j] = r;
                saved[hidden + j] = z;
                saved[2 * hidden + j] = n;
                saved[3 * hidden + j] = gh[2 * hidden + j];
            }
        }
    }
    (output, cache)
}

/// Backward of [`gru_forward`] through time, given the gradient of the
/// hidden states `grad_output` (batch, time, hidden).
#[track_caller]
pub fn gru_backward(
    par: Par,
    grad_output: &[f32],
    x: &[f32],
    output: &[f32],
    cache: &GruCache,
    weights: RecurrentWeights<'_>,
    dims: RecurrentDims,
) -> RecurrentGrads {
    let (batch, time, _, hidden) = dims;
    assert_eq!(
        grad_output.len(),
        batch * time * hidden,
        "gru: gradient length"
    );
    let g3 = 3 * hidden;
    let mut d_in = vec![0.0f32; batch * time * g3];
    let mut d_rec = vec![0.0f32; batch * time * g3];
    let mut dh_next = vec![0.0f32; batch * hidden];
    let mut step = vec![0.0f32; batch * g3];
    for t in (0..time).rev() {
        for b in 0..batch {
            let row = (b * time + t) * hidden;
            let saved = &cache.gates[(b * time + t) * 4 * hidden..(b * time + t + 1) * 4 * hidden];
            let d = &mut step[b * g3..(b + 1) * g3];
            let di = &mut d_in[(b * time + t) * g3..(b * time + t + 1) * g3];
            for j in 0..hidden {
                let (r, z, n, ghn) = (
                    saved[j],
                    saved[hidden + j],
                    saved[2 * hidden + j],
                    saved[3 * hidden + j],
                );
                let h_prev = if t > 0 { output[row - hidden + j] } else { 0.0 };
                let dh = grad_output[row + j] + dh_next[b * hidden + j];
                let dn = dh * (1.0 - z);
                let dz = dh * (h_prev - n);
                let dn_pre = dn * (1.0 - n * n);
                let dr_pre = dn_pre * ghn * r * (1.0 - r);
                let dz_pre = dz * z * (1.0 - z);
                di[j] = dr_pre;
                di[hidden + j] = dz_pre;
                di[2 * hidden + j] = dn_pre;
                d[j] = dr_pre;
                d[hidden + j] = dz_pre;
                d[2 * hidden + j] = dn_pre * r;
                dh_next[b * hidden + j] = dh * z;
            }
            d_rec[(b * time + t) * g3..(b * time + t + 1) * g3].copy_from_slice(d);
        }
        if t > 0 {
            gemm(
                &mut dh_next,
                true,
                &step,
                Layout::AsIs,
                weights.w_hh,
                Layout::AsIs,
                (batch, g3, hidden),
                1.0,
                par,
            );
        }
    }
    finish_grads(par, &d_in, &d_rec, x, output, weights, 3, dims)
}
