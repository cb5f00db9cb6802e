//! Fused losses: cross-entropy with integer targets and `ignore_index`.
use crate::autograd::Backward;
use crate::shape::Shape;
use crate::tensor::{IndexTensor, Tensor};

/// Targets equal to this are not scored (PyTorch's default `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Per-row log-sum-exp of an (rows, classes) matrix, computed stably.
fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    max + sum.ln()
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
        let logits = self.data();
        let mut total = 0.0f32;
        let mut counted = 0usize;
        for (r, &t) in targets.data().iter().enumerate() {
            if t == ignore_index {
                continue;
            }
            assert!(
                (0..classes as i64).contains(&t),
                "cross_entropy: target {t} outside 0..{classes}"
            );
            let row = &logits[r * classes..(r + 1) * classes];
            total += log_sum_exp(row) - row[t as usize];
            counted += 1;
        }
        let loss = total / counted as f32;
        Tensor::from_op(
            Shape::SCALAR,
            vec![loss],
            &[self],
            CrossEntropyBackward {
                targets: targets.clone(),
                ignore_index,
                counted,
            },
        )
    }
}

struct CrossEntropyBackward {
    targets: IndexTensor,
    ignore_index: i64,
    counted: usize,
}

impl Backward for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let logits = &inputs[0];
        let classes = logits.dim(1);
        let scale = grad.item() / self.counted as f32;
        let mut g = vec![0.0; logits.numel()];
        for (r, &t) in self.targets.data().iter().enumerate() {
            if t == self.ignore_index {
                continue;
            }
            let row = &logits.data()[r * classes..(r + 1) * classes];
            let lse = log_sum_exp(row);
            let out = &mut g[r * classes..(r + 1) * classes];
            for (o, &x) in out.iter_mut().zip(row) {
                *o = (x - lse).exp() * scale;
            }
            out[t as usize] -= scale;
        }
        vec![Some(Tensor::from_vec(logits.shape(), g))]
    }
}
