//! Normalizations over the last axis, forward and backward each fused into
//! one pass per row: layer norm (as `torch.nn.LayerNorm`) and RMS norm (as
//! the reference model's `RMSNorm`).
//!
//! Rows are independent and run in parallel when allowed; the weight and
//! bias gradients are sums over rows, taken in fixed groups of rows whose
//! partial sums are combined in index order, so every bit is the same
//! whatever the thread count.
use crate::autograd::Backward;
use crate::kernels::elementwise::wide;
use crate::ops::{for_each_row_mut, for_each_row_with_cost, sum_over_rows};
use crate::parallel::{CHUNK, current_parallelism, for_each_chunk_mut};
use crate::tensor::Tensor;

/// Rows whose per-row sums run interleaved: independent chains, each
/// added in column order as one row at a time would (the same bits), that
/// the CPU overlaps.
const ROW_GROUP: usize = 8;

/// `S` sums per row for rows `r0..r0 + k` (`k <= ROW_GROUP`) of `d`
/// columns: `init + term(r, 0)[q] + term(r, 1)[q] + ...` in column order,
/// the rows' chains interleaved.
#[inline(always)]
fn row_group_sums<const S: usize>(
    (r0, k): (usize, usize),
    d: usize,
    init: f32,
    term: impl Fn(usize, usize) -> [f32; S],
) -> [[f32; S]; ROW_GROUP] {
    let mut sums = [[init; S]; ROW_GROUP];
    if k == ROW_GROUP {
        for j in 0..d {
            for (i, s) in sums.iter_mut().enumerate() {
                let t = term(r0 + i, j);
                for q in 0..S {
                    s[q] += t[q];
                }
            }
        }
    } else {
        for (i, s) in sums.iter_mut().enumerate().take(k) {
            for j in 0..d {
                let t = term(r0 + i, j);
                for q in 0..S {
                    s[q] += t[q];
                }
            }
        }
    }
    sums
}

/// Rows of `d` columns per chunk of row-group work: about [`CHUNK`]
/// elements, a whole number of [`ROW_GROUP`]s.
fn rows_per_chunk(d: usize) -> usize {
    (CHUNK / d.max(1)).max(1).next_multiple_of(ROW_GROUP)
}

/// Runs `f(r0, rows)` over the groups of [`ROW_GROUP`] rows of `out`
/// (rows of `row_len`), in parallel chunks of `rows_per_chunk(cost)` rows
/// when `par` allows; `r0` is the group's first row.
fn for_each_row_group(
    par: faer::Par,
    out: &mut [f32],
    row_len: usize,
    cost: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    if row_len == 0 {
        return;
    }
    let chunk_rows = rows_per_chunk(cost);
    for_each_chunk_mut(par, out, chunk_rows * row_len, |c, chunk| {
        for (g, rows) in chunk.chunks_mut(ROW_GROUP * row_len).enumerate() {
            f(c * chunk_rows + g * ROW_GROUP, rows);
        }
    });
}

/// One row of the layer norm: `((x - mean) * inv_std) * w + b`.
#[inline(always)]
fn layer_norm_row(out: &mut [f32], x: &[f32], (mean, inv_std): (f32, f32), w: &[f32], b: &[f32]) {
    for (((o, &v), &w), &b) in out.iter_mut().zip(x).zip(w).zip(b) {
        let normalized = (v - mean) * inv_std;
        *o = normalized * w + b;
    }
}

/// One row of the layer norm's input gradient:
/// `inv_std * (dn - mean_dn - n * mean_dn_n)`, `dn = g * w`,
/// `n = (x - mean) * inv_std`.
#[inline(always)]
fn layer_norm_grad_row(
    out: &mut [f32],
    (x, g, w): (&[f32], &[f32], &[f32]),
    (mean, inv_std): (f32, f32),
    (mean_dn, mean_dn_n): (f32, f32),
) {
    for (((o, &v), &gv), &w) in out.iter_mut().zip(x).zip(g).zip(w) {
        let dn = gv * w;
        let n = (v - mean) * inv_std;
        *o = inv_std * (dn - mean_dn - n * mean_dn_n);
    }
}

/// PyTorch's default `eps` for `LayerNorm` (and the reference `RMSNorm`).
pub const NORM_EPS: f32 = 1e-5;

#[track_caller]
fn check_affine(what: &str, x: &Tensor, parameter: Option<&Tensor>, name: &str) {
    if let Some(p) = parameter {
        assert_eq!(
            p.dims(),
            [x.dim(-1)],
            "{what}: {name} must be ({}), got {:?}",
            x.dim(-1),
            p.shape()
        );
    }
}

impl Tensor {
    /// Layer normalization over the last axis: `(x - mean) / sqrt(var + eps)`
    /// (biased variance) times `weight` plus `bias` where given, as
    /// `torch.nn.functional.layer_norm(x, (d,), weight, bias, eps)`.
    ///
    /// # Panics
    /// On a scalar, or when `weight` or `bias` is not `(d)`.
    #[track_caller]
    pub fn layer_norm(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f32) -> Tensor {
        check_affine("layer_norm", self, weight, "weight");
        check_affine("layer_norm", self, bias, "bias");
        let d = self.dim(-1);
        let rows = self.numel() / d.max(1);
        let x = self.data();
        let (w, b) = (weight.map(Tensor::data), bias.map(Tensor::data));
        let mut out = vec![0.0; self.numel()];
        // Per row: mean and 1 / std, interleaved, kept for the backward.
        // The sums start where `Iterator::sum` starts (the same bits).
        let sum_start: f32 = std::iter::empty::<f32>().sum();
        let mut statistics = vec![0.0; 2 * rows];
        for_each_row_group(current_parallelism(), &mut statistics, 2, d, |r0, s| {
            let group = (r0, s.len() / 2);
            let sums = row_group_sums(group, d, sum_start, |r, j| [x[r * d + j]]);
            let means: [f32; ROW_GROUP] = std::array::from_fn(|i| sums[i][0] / d as f32);
            let squares = row_group_sums(group, d, sum_start, |r, j| {
                let (v, mean) = (x[r * d + j], means[r - r0]);
                [(v - mean) * (v - mean)]
            });
            for (i, s) in s.chunks_exact_mut(2).enumerate() {
                let var = squares[i][0] / d as f32;
                s[0] = means[i];
                s[1] = 1.0 / (var + eps).sqrt();
            }
        });
        // absent weight and bias: times 1 and plus 0, as before
        let ones = vec![1.0f32; if w.is_some() { 0 } else { d }];
        let zeros = vec![0.0f32; if b.is_some() { 0 } else { d }];
        let (w, b) = (w.unwrap_or(&ones[..]), b.unwrap_or(&zeros[..]));
        for_each_row_mut(current_parallelism(), &mut out, d, |r, row| {
            let stats = (statistics[2 * r], statistics[2 * r + 1]);
            let xs = &x[r * d..(r + 1) * d];
            wide!(layer_norm_row(row, xs, stats, w, b));
        });
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        Tensor::from_op(
            self.shape(),
            out,
            &inputs,
            LayerNormBackward {
                has_weight: weight.is_some(),
                has_bias: bias.is_some(),
                statistics,
            },
        )
    }

    /// RMS normalization over the last axis:
    /// `x / sqrt(mean(x^2) + eps) * weight`, as the reference `RMSNorm`.
    ///
    /// # Panics
    /// On a scalar, or when `weight` is not `(d)`.
    #[track_caller]
    pub fn rms_norm(&self, weight: &Tensor, eps: f32) -> Tensor {
        check_affine("rms_norm", self, Some(weight), "weight");
        let d = self.dim(-1);
        let rows = self.numel() / d.max(1);
        let (x, w) = (self.data(), weight.data());
        let mut inv_rms = vec![0.0; rows];
        for_each_row_with_cost(current_parallelism(), &mut inv_rms, 1, d, |r, s| {
            let xs = &x[r * d..(r + 1) * d];
            let mean_square = xs.iter().map(|&v| v * v).sum::<f32>() / d as f32;
            s[0] = 1.0 / (mean_square + eps).sqrt();
        });
        let mut out = vec![0.0; self.numel()];
        for_each_row_mut(current_parallelism(), &mut out, d, |r, row| {
            let scale = inv_rms[r];
            let xs = &x[r * d..(r + 1) * d];
            for ((o, &v), &w) in row.iter_mut().zip(xs).zip(w) {
                *o = v * scale * w;
            }
        });
        Tensor::from_op(
            self.shape(),
            out,
            &[self, weight],
            RmsNormBackward { inv_rms },
        )
    }
}

struct LayerNormBackward {
    has_weight: bool,
    has_bias: bool,
    /// Per row: mean, then 1 / std.
    statistics: Vec<f32>,
}

impl Backward for LayerNormBackward {
    fn name(&self) -> &'static str {
        "layer_norm"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let x_tensor = &inputs[0];
        let d = x_tensor.dim(-1);
        let rows = x_tensor.numel() / d.max(1);
        let (x, g) = (x_tensor.data(), grad.data());
        let weight = self.has_weight.then(|| &inputs[1]);
        let bias = self.has_bias.then(|| &inputs[1 + self.has_weight as usize]);
        let w = weight.map(Tensor::data);
        let stats = &self.statistics;
        let par = current_parallelism();
        let gx = x_tensor.requires_grad().then(|| {
            // dx = inv_std * (dn - mean(dn) - n * mean(dn * n)), dn = g * w
            let ones = vec![1.0f32; if w.is_some() { 0 } else { d }];
            let w = w.unwrap_or(&ones[..]);
            let mut out = vec![0.0; x.len()];
            for_each_row_group(par, &mut out, d, d, |r0, group_rows| {
                let group = (r0, group_rows.len() / d);
                let sums = row_group_sums(group, d, 0.0, |r, j| {
                    let (mean, inv_std) = (stats[2 * r], stats[2 * r + 1]);
                    let dn = g[r * d + j] * w[j];
                    [dn, dn * (x[r * d + j] - mean) * inv_std]
                });
                for (i, row) in group_rows.chunks_exact_mut(d).enumerate() {
                    let r = r0 + i;
                    let (sum_dn, sum_dn_n) = (sums[i][0], sums[i][1]);
                    let means = (sum_dn / d as f32, sum_dn_n / d as f32);
                    let inputs = (&x[r * d..(r + 1) * d], &g[r * d..(r + 1) * d], w);
                    let row_stats = (stats[2 * r], stats[2 * r + 1]);
                    wide!(layer_norm_grad_row(row, inputs, row_stats, means));
                }
            });
            Tensor::from_vec(x_tensor.shape(), out)
        });
        let need_weight = weight.is_some_and(Tensor::requires_grad);
        let need_bias = bias.is_some_and(Tensor::requires_grad);
        let mut gw = None;
        let mut gb = None;
        if need_weight || need_bias {
            // [dweight | dbias] = sums over rows of [g * n | g]
            let sums = sum_over_rows(par, rows, d, 2 * d, |r, partial| {
                let (mean, inv_std) = (stats[2 * r], stats[2 * r + 1]);
                let (xs, gs) = (&x[r * d..(r + 1) * d], &g[r * d..(r + 1) * d]);
                let (pw, pb) = partial.split_at_mut(d);
                for (((pw, pb), &v), &gv) in pw.iter_mut().zip(pb.iter_mut()).zip(xs).zip(gs) {
                    *pw += gv * (v - mean) * inv_std;
                    *pb += gv;
                }
            });
            if let Some(weight) = weight.filter(|_| need_weight) {
                gw = Some(Tensor::from_vec(weight.shape(), sums[..d].to_vec()));
            }
            if let Some(bias) = bias.filter(|_| need_bias) {
                gb = Some(Tensor::from_vec(bias.shape(), sums[d..].to_vec()));
            }
        }
        let mut grads = vec![gx];
        if self.has_weight {
            grads.push(gw);
        }
        if self.has_bias {
            grads.push(gb);
        }
        grads
    }
}

struct RmsNormBackward {
    inv_rms: Vec<f32>,
}

impl Backward for RmsNormBackward {
    fn name(&self) -> &'static str {
        "rms_norm"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let (x_tensor, weight) = (&inputs[0], &inputs[1]);
        let d = x_tensor.dim(-1);
        let rows = x_tensor.numel() / d.max(1);
        let (x, w, g) = (x_tensor.data(), weight.data(), grad.data());
        let inv_rms = &self.inv_rms;
        let par = current_parallelism();
        let gx = x_tensor.requires_grad().then(|| {
            // dx = r u - x r^3 mean(u x), u = g w, r = 1 / rms
            let mut out = vec![0.0; x.len()];
            for_each_row_mut(par, &mut out, d, |r, row| {
                let scale = inv_rms[r];
                let (xs, gs) = (&x[r * d..(r + 1) * d], &g[r * d..(r + 1) * d]);
                let dot: f32 = xs
                    .iter()
                    .zip(gs)
                    .zip(w)
                    .map(|((&v, &gv), &wv)| gv * wv * v)
                    .sum();
                let correction = scale * scale * scale * dot / d as f32;
                for (((o, &v), &gv), &wv) in row.iter_mut().zip(xs).zip(gs).zip(w) {
                    *o = scale * gv * wv - v * correction;
                }
            });
            Tensor::from_vec(x_tensor.shape(), out)
        });
        let gw = weight.requires_grad().then(|| {
            let sums = sum_over_rows(par, rows, d, d, |r, partial| {
                let scale = inv_rms[r];
                let (xs, gs) = (&x[r * d..(r + 1) * d], &g[r * d..(r + 1) * d]);
                for ((p, &v), &gv) in partial.iter_mut().zip(xs).zip(gs) {
                    *p += gv * v * scale;
                }
            });
            Tensor::from_vec(weight.shape(), sums)
        });
        vec![gx, gw]
    }
}
