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

use crate::kernels::fast_math::{sigmoid, tanh};
use crate::kernels::matmul::{Layout, gemm};

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
    let mut dst = vec![0.0; rows * out];
    for row in dst.chunks_exact_mut(out.max(1)) {
        row.copy_from_slice(bias);
    }
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

/// What an LSTM forward keeps for its backward.
#[derive(Debug)]
pub struct LstmCache {
    /// Gate activations `[i f g o]` per (batch, time): (batch, time, 4 hidden).
    pub gates: Vec<f32>,
    /// Cell states (batch, time, hidden).
    pub cells: Vec<f32>,
}

/// One LSTM layer: returns the hidden states (batch, time, hidden) and the
/// cache for [`lstm_backward`]. Initial hidden and cell states are zero.
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
    let projected = project(par, x, weights.w_ih, &bias, batch * time, input);
    let mut output = vec![0.0; batch * time * hidden];
    let mut cache = LstmCache {
        gates: vec![0.0; batch * time * g4],
        cells: vec![0.0; batch * time * hidden],
    };
    let mut h = vec![0.0f32; batch * hidden];
    let mut c = vec![0.0f32; batch * hidden];
    let mut step = vec![0.0f32; batch * g4];
    for t in 0..time {
        for b in 0..batch {
            let src = (b * time + t) * g4;
            step[b * g4..(b + 1) * g4].copy_from_slice(&projected[src..src + g4]);
        }
        if t > 0 {
            gemm(
                &mut step,
                true,
                &h,
                Layout::AsIs,
                weights.w_hh,
                Layout::Transposed,
                (batch, hidden, g4),
                1.0,
                par,
            );
        }
        for b in 0..batch {
            let pre = &step[b * g4..(b + 1) * g4];
            let row = (b * time + t) * hidden;
            let act = &mut cache.gates[(b * time + t) * g4..(b * time + t + 1) * g4];
            let (c, h) = (
                &mut c[b * hidden..(b + 1) * hidden],
                &mut h[b * hidden..(b + 1) * hidden],
            );
            let (cells, out) = (
                &mut cache.cells[row..row + hidden],
                &mut output[row..row + hidden],
            );
            lstm_cell_forward(pre, c, h, act, cells, out);
        }
    }
    (output, cache)
}

/// Backward of [`lstm_forward`] through time, given the gradient of the
/// hidden states `grad_output` (batch, time, hidden).
#[track_caller]
pub fn lstm_backward(
    par: Par,
    grad_output: &[f32],
    x: &[f32],
    output: &[f32],
    cache: &LstmCache,
    weights: RecurrentWeights<'_>,
    dims: RecurrentDims,
) -> RecurrentGrads {
    let (batch, time, _, hidden) = dims;
    assert_eq!(
        grad_output.len(),
        batch * time * hidden,
        "lstm: gradient length"
    );
    let g4 = 4 * hidden;
    let mut d_pre = vec![0.0f32; batch * time * g4];
    let mut dh_next = vec![0.0f32; batch * hidden];
    let mut dc_next = vec![0.0f32; batch * hidden];
    let mut step = vec![0.0f32; batch * g4];
    let zeros = vec![0.0f32; hidden];
    for t in (0..time).rev() {
        for b in 0..batch {
            let row = (b * time + t) * hidden;
            let act = &cache.gates[(b * time + t) * g4..(b * time + t + 1) * g4];
            let d = &mut step[b * g4..(b + 1) * g4];
            let zeros_or_prev = if t > 0 {
                &cache.cells[row - hidden..row]
            } else {
                &zeros[..]
            };
            lstm_cell_backward(
                act,
                &cache.cells[row..row + hidden],
                zeros_or_prev,
                &grad_output[row..row + hidden],
                &dh_next[b * hidden..(b + 1) * hidden],
                &mut dc_next[b * hidden..(b + 1) * hidden],
                d,
            );
            d_pre[(b * time + t) * g4..(b * time + t + 1) * g4].copy_from_slice(d);
        }
        if t > 0 {
            gemm(
                &mut dh_next,
                false,
                &step,
                Layout::AsIs,
                weights.w_hh,
                Layout::AsIs,
                (batch, g4, hidden),
                1.0,
                par,
            );
        }
    }
    finish_grads(par, &d_pre, &d_pre, x, output, weights, 4, dims)
}

/// One LSTM step of one batch entry: pre-activations `pre` `[i f g o]`
/// to the new cell and hidden states (a separate function so that its
/// slices are known not to alias, and the loop vectorizes).
#[inline(never)]
fn lstm_cell_forward(
    pre: &[f32],
    c: &mut [f32],
    h: &mut [f32],
    act: &mut [f32],
    cells: &mut [f32],
    out: &mut [f32],
) {
    let hidden = c.len();
    let (pi, rest) = pre[..4 * hidden].split_at(hidden);
    let (pf, rest) = rest.split_at(hidden);
    let (pg, po) = rest.split_at(hidden);
    let (ai, rest) = act[..4 * hidden].split_at_mut(hidden);
    let (af, rest) = rest.split_at_mut(hidden);
    let (ag, ao) = rest.split_at_mut(hidden);
    let (h, cells, out) = (&mut h[..hidden], &mut cells[..hidden], &mut out[..hidden]);
    for j in 0..hidden {
        let i = sigmoid(pi[j]);
        let f = sigmoid(pf[j]);
        let gg = tanh(pg[j]);
        let o = sigmoid(po[j]);
        let cell = f * c[j] + i * gg;
        let value = o * tanh(cell);
        c[j] = cell;
        h[j] = value;
        ai[j] = i;
        af[j] = f;
        ag[j] = gg;
        ao[j] = o;
        cells[j] = cell;
        out[j] = value;
    }
}

/// One LSTM backward step of one batch entry: pre-activation gradients
/// into `d`, the cell gradient carried to the previous step into `dc_next`.
#[inline(never)]
fn lstm_cell_backward(
    act: &[f32],
    cell: &[f32],
    c_prev: &[f32],
    grad_out: &[f32],
    dh_next: &[f32],
    dc_next: &mut [f32],
    d: &mut [f32],
) {
    let hidden = dc_next.len();
    let (ai, rest) = act[..4 * hidden].split_at(hidden);
    let (af, rest) = rest.split_at(hidden);
    let (ag, ao) = rest.split_at(hidden);
    let (di, rest) = d[..4 * hidden].split_at_mut(hidden);
    let (df, rest) = rest.split_at_mut(hidden);
    let (dg, d_o) = rest.split_at_mut(hidden);
    let (cell, c_prev) = (&cell[..hidden], &c_prev[..hidden]);
    let (grad_out, dh_next) = (&grad_out[..hidden], &dh_next[..hidden]);
    for j in 0..hidden {
        let (i, f, gg, o) = (ai[j], af[j], ag[j], ao[j]);
        let tc = tanh(cell[j]);
        let dh = grad_out[j] + dh_next[j];
        let dc = dh * o * (1.0 - tc * tc) + dc_next[j];
        dc_next[j] = dc * f;
        di[j] = dc * gg * i * (1.0 - i);
        df[j] = dc * c_prev[j] * f * (1.0 - f);
        dg[j] = dc * i * (1.0 - gg * gg);
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
