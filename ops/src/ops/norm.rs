//! Normalizations over the last axis, forward and backward each fused into
//! one pass per row: layer norm (as `torch.nn.LayerNorm`) and RMS norm (as
//! the reference model's `RMSNorm`).
//!
//! Rows are independent and run in parallel when allowed; the weight and
//! bias gradients are sums over rows, taken in fixed groups of rows whose
//! partial sums are combined in index order, so every bit is the same
//! whatever the thread count.
use crate::autograd::Backward;
use crate::ops::{for_each_row_mut, for_each_row_with_cost, sum_over_rows};
use crate::parallel::current_parallelism;
use crate::tensor::Tensor;

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
            let mean = xs.iter().sum::<f32>() / d as f32;
            let var = xs.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            s[0] = mean;
            s[1] = 1.0 / (var + eps).sqrt();
        });
        for_each_row_mut(current_parallelism(), &mut out, d, |r, row| {
            let (mean, inv_std) = (statistics[2 * r], statistics[2 * r + 1]);
            let xs = &x[r * d..(r + 1) * d];
            for (j, (o, &v)) in row.iter_mut().zip(xs).enumerate() {
                let normalized = (v - mean) * inv_std;
                *o = normalized * w.map_or(1.0, |w| w[j]) + b.map_or(0.0, |b| b[j]);
            }
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
            let mut out = vec![0.0; x.len()];
            for_each_row_mut(par, &mut out, d, |r, row| {
                let (mean, inv_std) = (stats[2 * r], stats[2 * r + 1]);
                let (xs, gs) = (&x[r * d..(r + 1) * d], &g[r * d..(r + 1) * d]);
                let mut sum_dn = 0.0;
                let mut sum_dn_n = 0.0;
                for (j, (&v, &gv)) in xs.iter().zip(gs).enumerate() {
                    let dn = gv * w.map_or(1.0, |w| w[j]);
                    sum_dn += dn;
                    sum_dn_n += dn * (v - mean) * inv_std;
                }
                let (mean_dn, mean_dn_n) = (sum_dn / d as f32, sum_dn_n / d as f32);
                for (j, (o, (&v, &gv))) in row.iter_mut().zip(xs.iter().zip(gs)).enumerate() {
                    let dn = gv * w.map_or(1.0, |w| w[j]);
                    let n = (v - mean) * inv_std;
                    *o = inv_std * (dn - mean_dn - n * mean_dn_n);
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
