//! Fused losses with their backward: cross-entropy with integer targets and
//! `ignore_index`, mean squared error, binary cross-entropy with logits, and
//! the Barlow Twins redundancy-reduction loss.
//!
//! Per-row or per-element terms are computed in parallel when allowed; they
//! are always added in a fixed order ([`deterministic_sum`]), so the loss has
//! the same bits whatever the thread count.
use crate::autograd::Backward;
use crate::kernels::elementwise::zip_map;
use crate::kernels::fast_math as fm;
use crate::kernels::matmul::{Layout, gemm};
use crate::ops::softmax::max_and_log_sum;
use crate::ops::unary::sigmoid;
use crate::ops::{for_each_row_mut, for_each_row_with_cost};
use crate::parallel::{current_parallelism, deterministic_map_sum, deterministic_sum};
use crate::shape::Shape;
use crate::tensor::{IndexTensor, Tensor};

/// Targets equal to this are not scored (PyTorch's default `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// How per-element losses are combined, as PyTorch's `reduction=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// Per-element losses, in the input's shape.
    None,
    /// Their mean (a scalar).
    Mean,
    /// Their sum (a scalar).
    Sum,
}

impl Tensor {
    /// Mean cross-entropy of `self` (logits, `(rows, classes)`) against
    /// integer `targets` (`rows`), skipping rows whose target is
    /// `ignore_index`; as `torch.nn.functional.cross_entropy`. With every
    /// row ignored the loss is NaN, as in PyTorch.
    ///
    /// # Panics
    /// When shapes do not match, or a target is outside `0..classes` and is
    /// not `ignore_index`.
    #[track_caller]
    pub fn cross_entropy(&self, targets: &IndexTensor, ignore_index: i64) -> Tensor {
        assert_eq!(
            self.rank(),
            2,
            "cross_entropy: logits must be (rows, classes), got {:?}",
            self.shape()
        );
        let (rows, classes) = (self.dim(0), self.dim(1));
        assert_eq!(
            targets.numel(),
            rows,
            "cross_entropy: {rows} rows but {} targets",
            targets.numel()
        );
        let t = targets.data();
        for &target in t {
            assert!(
                target == ignore_index || (0..classes as i64).contains(&target),
                "cross_entropy: target {target} outside 0..{classes}"
            );
        }
        let counted = t.iter().filter(|&&target| target != ignore_index).count();
        let logits = self.data();
        let par = current_parallelism();
        // Per row: the maximum and ln sum exp(x - max), kept for the backward.
        let mut row_statistics = vec![0.0; 2 * rows];
        for_each_row_with_cost(par, &mut row_statistics, 2, classes, |r, s| {
            let (max, log_sum) = max_and_log_sum(&logits[r * classes..(r + 1) * classes]);
            s[0] = max;
            s[1] = log_sum;
        });
        let losses: Vec<f32> = (0..rows)
            .map(|r| {
                if t[r] == ignore_index {
                    0.0
                } else {
                    let (max, log_sum) = (row_statistics[2 * r], row_statistics[2 * r + 1]);
                    log_sum - (logits[r * classes + t[r] as usize] - max)
                }
            })
            .collect();
        let loss = deterministic_sum(par, &losses) / counted as f32;
        Tensor::from_op(
            Shape::SCALAR,
            vec![loss],
            &[self],
            CrossEntropyBackward {
                targets: targets.clone(),
                ignore_index,
                counted,
                row_statistics,
            },
        )
    }

    /// Mean squared error `mean((self - target)^2)`, as
    /// `torch.nn.functional.mse_loss`. Both inputs get gradients.
    ///
    /// # Panics
    /// When the shapes differ.
    #[track_caller]
    pub fn mse_loss(&self, target: &Tensor) -> Tensor {
        assert_eq!(
            self.shape(),
            target.shape(),
            "mse_loss: input and target shapes differ"
        );
        let (x, y) = (self.data(), target.data());
        let total = deterministic_map_sum(current_parallelism(), x.len(), |range| {
            x[range.clone()]
                .iter()
                .zip(&y[range])
                .map(|(a, b)| (a - b) * (a - b))
                .sum()
        });
        Tensor::from_op(
            Shape::SCALAR,
            vec![total / x.len() as f32],
            &[self, target],
            MseBackward,
        )
    }

    /// Binary cross-entropy of logits `self` against probabilities `targets`
    /// (same shape), in the stable form
    /// `max(x, 0) - x y + ln(1 + e^-|x|)`, as
    /// `torch.nn.functional.binary_cross_entropy_with_logits`.
    ///
    /// # Panics
    /// When the shapes differ.
    #[track_caller]
    pub fn binary_cross_entropy_with_logits(
        &self,
        targets: &Tensor,
        reduction: Reduction,
    ) -> Tensor {
        assert_eq!(
            self.shape(),
            targets.shape(),
            "binary_cross_entropy_with_logits: logits and targets shapes differ"
        );
        let par = current_parallelism();
        // `ln(1 + e^-|x|)` through the vectorizing `exp` and `ln` of
        // `fast_math` (libm's `expf` and `log1pf` are a call per element:
        // 17% of the VAE's training step), inlined into the wide loop.
        let per_element = zip_map(
            par,
            self.data(),
            targets.data(),
            #[inline(always)]
            |x, y| x.max(0.0) - x * y + fm::softplus(-x.abs()),
        );
        let n = per_element.len() as f32;
        let (shape, data) = match reduction {
            Reduction::None => (self.shape(), per_element),
            Reduction::Sum => (Shape::SCALAR, vec![deterministic_sum(par, &per_element)]),
            Reduction::Mean => (
                Shape::SCALAR,
                vec![deterministic_sum(par, &per_element) / n],
            ),
        };
        Tensor::from_op(
            shape,
            data,
            &[self, targets],
            BceWithLogitsBackward(reduction),
        )
    }
}

struct CrossEntropyBackward {
    targets: IndexTensor,
    ignore_index: i64,
    counted: usize,
    /// Per row: maximum, then ln sum exp(x - max).
    row_statistics: Vec<f32>,
}

impl Backward for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let logits = &inputs[0];
        let classes = logits.dim(1);
        let scale = grad.item() / self.counted as f32;
        let (x, t) = (logits.data(), self.targets.data());
        let mut g = vec![0.0; logits.numel()];
        for_each_row_mut(current_parallelism(), &mut g, classes, |r, out| {
            if t[r] == self.ignore_index {
                return;
            }
            let (max, log_sum) = (self.row_statistics[2 * r], self.row_statistics[2 * r + 1]);
            let row = &x[r * classes..(r + 1) * classes];
            crate::kernels::elementwise::wide!(|| {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = fm::exp((v - max) - log_sum) * scale;
                }
            });
            out[t[r] as usize] -= scale;
        });
        vec![Some(Tensor::from_vec(logits.shape(), g))]
    }
}

struct MseBackward;

impl Backward for MseBackward {
    fn name(&self) -> &'static str {
        "mse_loss"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let (x, y) = (&inputs[0], &inputs[1]);
        let scale = 2.0 * grad.item() / x.numel() as f32;
        let par = current_parallelism();
        let gx = zip_map(par, x.data(), y.data(), move |a, b| scale * (a - b));
        let gy = y
            .requires_grad()
            .then(|| Tensor::from_vec(y.shape(), gx.iter().map(|v| -v).collect()));
        vec![
            x.requires_grad().then(|| Tensor::from_vec(x.shape(), gx)),
            gy,
        ]
    }
}

struct BceWithLogitsBackward(Reduction);

impl Backward for BceWithLogitsBackward {
    fn name(&self) -> &'static str {
        "binary_cross_entropy_with_logits"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        // d/dx = sigmoid(x) - y; d/dy = -x; times the upstream gradient.
        let (x, y) = (&inputs[0], &inputs[1]);
        let par = current_parallelism();
        let upstream: Option<f32> = match self.0 {
            Reduction::None => None,
            Reduction::Sum => Some(grad.item()),
            Reduction::Mean => Some(grad.item() / x.numel() as f32),
        };
        let gx = x.requires_grad().then(|| {
            let local = zip_map(par, x.data(), y.data(), |x, y| sigmoid(x) - y);
            let data = match upstream {
                Some(s) => local.into_iter().map(|v| v * s).collect(),
                None => zip_map(par, &local, grad.data(), |d, g| d * g),
            };
            Tensor::from_vec(x.shape(), data)
        });
        let gy = y.requires_grad().then(|| {
            let data = match upstream {
                Some(s) => x.data().iter().map(|v| -v * s).collect(),
                None => zip_map(par, x.data(), grad.data(), |x, g| -x * g),
            };
            Tensor::from_vec(y.shape(), data)
        });
        vec![gx, gy]
    }
}

/// Added to the batch variance before the square root in
/// [`barlow_twins_loss`] (as `BatchNorm1d`'s default).
pub const BARLOW_TWINS_EPS: f32 = 1e-5;

/// Per column of an `(rows, cols)` matrix: mean, and `1 / sqrt(var + eps)`
/// with the biased variance; rows are added in index order.
fn column_standardization(z: &[f32], rows: usize, cols: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let mut mean = vec![0.0; cols];
    for row in z.chunks_exact(cols) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows as f32);
    let mut var = vec![0.0; cols];
    for row in z.chunks_exact(cols) {
        for ((s, &v), &m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (v - m) * (v - m);
        }
    }
    let inv_std = var
        .iter()
        .map(|&s| 1.0 / (s / rows as f32 + eps).sqrt())
        .collect();
    (mean, inv_std)
}

/// `(z - mean) * inv_std` column by column.
fn standardized(z: &[f32], cols: usize, mean: &[f32], inv_std: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; z.len()];
    for_each_row_mut(current_parallelism(), &mut out, cols, |r, row| {
        let zs = &z[r * cols..(r + 1) * cols];
        for (((o, &v), &m), &s) in row.iter_mut().zip(zs).zip(mean).zip(inv_std) {
            *o = (v - m) * s;
        }
    });
    out
}

/// Backward of column standardization: given `dzn`, the standardized `zn`
/// and `inv_std`, `dz = inv_std * (dzn - mean(dzn) - zn * mean(dzn * zn))`
/// with means over rows (added in row order).
fn standardization_backward(
    dzn: &[f32],
    zn: &[f32],
    rows: usize,
    cols: usize,
    inv_std: &[f32],
) -> Vec<f32> {
    let mut mean_d = vec![0.0; cols];
    let mut mean_dz = vec![0.0; cols];
    for (d_row, z_row) in dzn.chunks_exact(cols).zip(zn.chunks_exact(cols)) {
        for (((a, b), &d), &z) in mean_d
            .iter_mut()
            .zip(mean_dz.iter_mut())
            .zip(d_row)
            .zip(z_row)
        {
            *a += d;
            *b += d * z;
        }
    }
    let inv_rows = 1.0 / rows as f32;
    mean_d.iter_mut().for_each(|v| *v *= inv_rows);
    mean_dz.iter_mut().for_each(|v| *v *= inv_rows);
    let mut out = vec![0.0; dzn.len()];
    for_each_row_mut(current_parallelism(), &mut out, cols, |r, row| {
        let (ds, zs) = (
            &dzn[r * cols..(r + 1) * cols],
            &zn[r * cols..(r + 1) * cols],
        );
        for (j, o) in row.iter_mut().enumerate() {
            *o = inv_std[j] * (ds[j] - mean_d[j] - zs[j] * mean_dz[j]);
        }
    });
    out
}

/// The Barlow Twins loss (Zbontar et al. 2021) of two `(batch, dim)`
/// embeddings, fused: each is standardized per column over the batch
/// (biased variance, eps `1e-5`, as `BatchNorm1d(affine=False)` in training),
/// `c = z1n^T z2n / batch`, and the loss is
/// `sum_i (1 - c_ii)^2 + lambda * sum_{i != j} c_ij^2`, as the reference
/// model's `BarlowTwins.loss`.
///
/// # Panics
/// When the shapes differ or are not matrices.
#[track_caller]
pub fn barlow_twins_loss(z1: &Tensor, z2: &Tensor, lambda: f32) -> Tensor {
    assert!(
        z1.rank() == 2 && z1.shape() == z2.shape(),
        "barlow_twins_loss: embeddings must be two (batch, dim) matrices, got {:?} and {:?}",
        z1.shape(),
        z2.shape()
    );
    let (rows, cols) = (z1.dim(0), z1.dim(1));
    let (mean1, inv_std1) = column_standardization(z1.data(), rows, cols, BARLOW_TWINS_EPS);
    let (mean2, inv_std2) = column_standardization(z2.data(), rows, cols, BARLOW_TWINS_EPS);
    let zn1 = standardized(z1.data(), cols, &mean1, &inv_std1);
    let zn2 = standardized(z2.data(), cols, &mean2, &inv_std2);
    let mut c = vec![0.0; cols * cols];
    gemm(
        &mut c,
        false,
        &zn1,
        Layout::Transposed,
        &zn2,
        Layout::AsIs,
        (cols, rows, cols),
        1.0 / rows as f32,
        current_parallelism(),
    );
    let mut on_diagonal = 0.0f32;
    let mut off_diagonal = 0.0f32;
    for (i, row) in c.chunks_exact(cols).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            if i == j {
                on_diagonal += (1.0 - v) * (1.0 - v);
            } else {
                off_diagonal += v * v;
            }
        }
    }
    let loss = on_diagonal + lambda * off_diagonal;
    Tensor::from_op(
        Shape::SCALAR,
        vec![loss],
        &[z1, z2],
        BarlowTwinsBackward {
            lambda,
            zn1,
            zn2,
            inv_std1,
            inv_std2,
            c,
        },
    )
}

struct BarlowTwinsBackward {
    lambda: f32,
    zn1: Vec<f32>,
    zn2: Vec<f32>,
    inv_std1: Vec<f32>,
    inv_std2: Vec<f32>,
    c: Vec<f32>,
}

impl Backward for BarlowTwinsBackward {
    fn name(&self) -> &'static str {
        "barlow_twins_loss"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let (rows, cols) = (inputs[0].dim(0), inputs[0].dim(1));
        let g = grad.item();
        let par = current_parallelism();
        // dL/dc: -2 (1 - c_ii) on the diagonal, 2 lambda c_ij elsewhere.
        let dc: Vec<f32> = self
            .c
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                if k / cols == k % cols {
                    -2.0 * (1.0 - v) * g
                } else {
                    2.0 * self.lambda * v * g
                }
            })
            .collect();
        let alpha = 1.0 / rows as f32;
        let g1 = inputs[0].requires_grad().then(|| {
            // dzn1 (rows x cols) = zn2 dc^T / rows
            let mut dzn = vec![0.0; rows * cols];
            gemm(
                &mut dzn,
                false,
                &self.zn2,
                Layout::AsIs,
                &dc,
                Layout::Transposed,
                (rows, cols, cols),
                alpha,
                par,
            );
            let dz = standardization_backward(&dzn, &self.zn1, rows, cols, &self.inv_std1);
            Tensor::from_vec(inputs[0].shape(), dz)
        });
        let g2 = inputs[1].requires_grad().then(|| {
            // dzn2 (rows x cols) = zn1 dc / rows
            let mut dzn = vec![0.0; rows * cols];
            gemm(
                &mut dzn,
                false,
                &self.zn1,
                Layout::AsIs,
                &dc,
                Layout::AsIs,
                (rows, cols, cols),
                alpha,
                par,
            );
            let dz = standardization_backward(&dzn, &self.zn2, rows, cols, &self.inv_std2);
            Tensor::from_vec(inputs[1].shape(), dz)
        });
        vec![g1, g2]
    }
}
