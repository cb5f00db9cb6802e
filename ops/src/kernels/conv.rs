//! Causal depthwise 1-D convolution over (batch, time, channels) and its
//! backward: PyTorch's `Conv1d(C, C, K, groups=C, padding=K-1)` on the
//! (batch, channels, time) transpose, truncated to the first `T` outputs.
//!
//! Parallel over batch entries; weight and bias gradients are per-entry
//! partial sums added in batch order (deterministic).
use faer::Par;

use crate::kernels::scan::{for_each_item, map_units};

/// `y[b,t,c] = bias[c] + sum_k w[c,k] x[b, t + k - (K-1), c]` (zero before
/// `t = 0`), with `weight` of shape (channels, K).
///
/// # Panics
/// When a slice's length does not match the dimensions.
#[track_caller]
pub fn causal_conv1d_forward(
    par: Par,
    y: &mut [f32],
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    (batch, time, channels, kernel): (usize, usize, usize, usize),
) {
    let seq = time * channels;
    assert_eq!(y.len(), batch * seq, "causal_conv1d: output length");
    assert_eq!(x.len(), batch * seq, "causal_conv1d: input length");
    assert_eq!(
        weight.len(),
        channels * kernel,
        "causal_conv1d: weight length"
    );
    if let Some(bias) = bias {
        assert_eq!(bias.len(), channels, "causal_conv1d: bias length");
    }
    if seq == 0 {
        return;
    }
    // weight transposed to (K, channels) so the inner loop runs over channels
    let wt = transpose(weight, channels, kernel);
    let pieces: Vec<(usize, &mut [f32])> = y.chunks_mut(seq).enumerate().collect();
    for_each_item(par, pieces, |(bi, out)| {
        let xb = &x[bi * seq..(bi + 1) * seq];
        for t in 0..time {
            let o = &mut out[t * channels..(t + 1) * channels];
            match bias {
                Some(bias) => o.copy_from_slice(bias),
                None => o.fill(0.0),
            }
            for k in 0..kernel {
                let Some(src) = (t + k).checked_sub(kernel - 1) else {
                    continue;
                };
                let xs = &xb[src * channels..(src + 1) * channels];
                let w = &wt[k * channels..(k + 1) * channels];
                for c in 0..channels {
                    o[c] += w[c] * xs[c];
                }
            }
        }
    });
}

/// Gradients of [`causal_conv1d_forward`]: (input, weight (channels, K),
/// bias (channels)).
#[track_caller]
pub fn causal_conv1d_backward(
    par: Par,
    grad_y: &[f32],
    x: &[f32],
    weight: &[f32],
    (batch, time, channels, kernel): (usize, usize, usize, usize),
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let seq = time * channels;
    assert_eq!(grad_y.len(), batch * seq, "causal_conv1d: gradient length");
    assert_eq!(x.len(), batch * seq, "causal_conv1d: input length");
    let wt = transpose(weight, channels, kernel);
    let per_entry = map_units(par, batch, |bi| {
        let xb = &x[bi * seq..(bi + 1) * seq];
        let gb = &grad_y[bi * seq..(bi + 1) * seq];
        let mut dx = vec![0.0f32; seq];
        let mut dw = vec![0.0f32; kernel * channels];
        let mut dbias = vec![0.0f32; channels];
        for t in 0..time {
            let g = &gb[t * channels..(t + 1) * channels];
            for c in 0..channels {
                dbias[c] += g[c];
            }
            for k in 0..kernel {
                let Some(src) = (t + k).checked_sub(kernel - 1) else {
                    continue;
                };
                let xs = &xb[src * channels..(src + 1) * channels];
                let w = &wt[k * channels..(k + 1) * channels];
                let dw = &mut dw[k * channels..(k + 1) * channels];
                let dxs = &mut dx[src * channels..(src + 1) * channels];
                for c in 0..channels {
                    dw[c] += g[c] * xs[c];
                    dxs[c] += g[c] * w[c];
                }
            }
        }
        (dx, dw, dbias)
    });
    let mut dx = Vec::with_capacity(batch * seq);
    let mut dw_t = vec![0.0f32; kernel * channels];
    let mut dbias = vec![0.0f32; channels];
    for (x, w, b) in per_entry {
        dx.extend_from_slice(&x);
        for (acc, v) in dw_t.iter_mut().zip(&w) {
            *acc += v;
        }
        for (acc, v) in dbias.iter_mut().zip(&b) {
            *acc += v;
        }
    }
    (dx, transpose(&dw_t, kernel, channels), dbias)
}

/// The (cols, rows) transpose of a (rows, cols) row-major matrix.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = m[r * cols + c];
        }
    }
    out
}
