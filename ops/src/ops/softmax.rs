//! Softmax and log-softmax over the last axis, fused and numerically stable
//! (the row maximum is subtracted first), with their backward. Rows are
//! independent, so the parallel split never changes the bits.
use crate::autograd::Backward;
use crate::kernels::fast_math as fm;
use crate::ops::for_each_row_mut;
use crate::parallel::current_parallelism;
use crate::tensor::Tensor;

/// `(max, ln sum exp(x - max))` of a row (the vectorizing
/// [`fm::exp`], the sum in index order); `(-inf, -inf)` for an empty or
/// all `-inf` row.
pub(crate) fn max_and_log_sum(row: &[f32]) -> (f32, f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return (max, f32::NEG_INFINITY);
    }
    // exps of up to PIECE values at a time (a loop that vectorizes), added
    // in index order: the same bits at every width
    const PIECE: usize = 64;
    let sum = crate::kernels::elementwise::wide!(|| {
        let mut sum = 0.0f32;
        let mut exps = [0.0f32; PIECE];
        for piece in row.chunks(PIECE) {
            let exps = &mut exps[..piece.len()];
            for (e, &x) in exps.iter_mut().zip(piece) {
                *e = fm::exp(x - max);
            }
            for &e in exps.iter() {
                sum += e;
            }
        }
        sum
    });
    (max, sum.ln())
}

impl Tensor {
    /// `exp(x) / sum(exp(x))` over the last axis, as `torch.softmax(x, -1)`.
    ///
    /// # Panics
    /// On a scalar.
    #[track_caller]
    pub fn softmax(&self) -> Tensor {
        let n = self.dim(-1);
        let x = self.data();
        let mut out = vec![0.0; self.numel()];
        for_each_row_mut(current_parallelism(), &mut out, n, |r, row| {
            let xs = &x[r * n..(r + 1) * n];
            let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for (o, &v) in row.iter_mut().zip(xs) {
                *o = (v - max).exp();
                sum += *o;
            }
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|o| *o *= inv);
        });
        Tensor::from_op(self.shape(), out, &[self], SoftmaxBackward)
    }

    /// `x - ln sum exp(x)` over the last axis, as `torch.log_softmax(x, -1)`.
    ///
    /// # Panics
    /// On a scalar.
    #[track_caller]
    pub fn log_softmax(&self) -> Tensor {
        let n = self.dim(-1);
        let x = self.data();
        let mut out = vec![0.0; self.numel()];
        for_each_row_mut(current_parallelism(), &mut out, n, |r, row| {
            let xs = &x[r * n..(r + 1) * n];
            let (max, log_sum) = max_and_log_sum(xs);
            for (o, &v) in row.iter_mut().zip(xs) {
                *o = (v - max) - log_sum;
            }
        });
        Tensor::from_op(self.shape(), out, &[self], LogSoftmaxBackward)
    }
}

struct SoftmaxBackward;

impl Backward for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "softmax"
    }

    fn backward(&self, inputs: &[Tensor], output: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        // dx = y * (g - sum(g * y))
        let n = output.dim(-1);
        let (y, g) = (output.data(), grad.data());
        let mut out = vec![0.0; y.len()];
        for_each_row_mut(current_parallelism(), &mut out, n, |r, row| {
            let (ys, gs) = (&y[r * n..(r + 1) * n], &g[r * n..(r + 1) * n]);
            let dot: f32 = ys.iter().zip(gs).map(|(y, g)| y * g).sum();
            for ((o, &y), &g) in row.iter_mut().zip(ys).zip(gs) {
                *o = y * (g - dot);
            }
        });
        vec![Some(Tensor::from_vec(inputs[0].shape(), out))]
    }
}

struct LogSoftmaxBackward;

impl Backward for LogSoftmaxBackward {
    fn name(&self) -> &'static str {
        "log_softmax"
    }

    fn backward(&self, inputs: &[Tensor], output: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        // dx = g - exp(y) * sum(g)
        let n = output.dim(-1);
        let (y, g) = (output.data(), grad.data());
        let mut out = vec![0.0; y.len()];
        for_each_row_mut(current_parallelism(), &mut out, n, |r, row| {
            let (ys, gs) = (&y[r * n..(r + 1) * n], &g[r * n..(r + 1) * n]);
            let total: f32 = gs.iter().sum();
            for ((o, &y), &g) in row.iter_mut().zip(ys).zip(gs) {
                *o = g - y.exp() * total;
            }
        });
        vec![Some(Tensor::from_vec(inputs[0].shape(), out))]
    }
}
