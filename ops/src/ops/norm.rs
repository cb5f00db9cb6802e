//! Normalizations over the last axis, forward and backward each fused into
//! one pass per row: layer norm (as `torch.nn.LayerNorm`) and RMS norm (as
//! the reference model's `RMSNorm`).
//!
//! Rows are independent and run in parallel when allowed. Per-row sums
//! (mean, variance, the gradient's two means) are [`lane_sum`]s, in an
//! order fixed by the row length; the weight and bias gradients are sums
//! over rows, taken in fixed groups of rows whose partial sums are combined
//! in index order. So every bit is the same whatever the thread count.
use crate::autograd::Backward;
use crate::kernels::elementwise::{lane_sum, wide};
use crate::ops::{for_each_row_mut, for_each_row_with_cost, sum_over_rows};
use crate::parallel::current_parallelism;
use crate::tensor::Tensor;

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
        let mut statistics = vec![0.0; 2 * rows];
        for_each_row_with_cost(current_parallelism(), &mut statistics, 2, d, |r, s| {
            let xs = &x[r * d..(r + 1) * d];
            let (mean, var) = wide!(|| {
                let mean = lane_sum([xs], |[v]| v) / d as f32;
                let squares = lane_sum([xs], |[v]| (v - mean) * (v - mean));
                (mean, squares / d as f32)
            });
            s[0] = mean;
            s[1] = 1.0 / (var + eps).sqrt();
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
            let sum_squares = wide!(|| { lane_sum([xs], |[v]| v * v) });
            let mean_square = sum_squares / d as f32;
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
            for_each_row_mut(par, &mut out, d, |r, row| {
                let (mean, inv_std) = (stats[2 * r], stats[2 * r + 1]);
                let (xs, gs) = (&x[r * d..(r + 1) * d], &g[r * d..(r + 1) * d]);
                wide!(|| {
                    let sum_dn = lane_sum([gs, w], |[gv, wv]| gv * wv);
                    let sum_dn_n =
                        lane_sum([xs, gs, w], |[v, gv, wv]| gv * wv * (v - mean) * inv_std);
                    let means = (sum_dn / d as f32, sum_dn_n / d as f32);
                    layer_norm_grad_row(row, (xs, gs, w), (mean, inv_std), means);
                });
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
                let dot = wide!(|| { lane_sum([xs, gs, w], |[v, gv, wv]| gv * wv * v) });
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
