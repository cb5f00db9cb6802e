//! Reductions (sum, mean) and their backward. Every reduction adds in an
//! order fixed by the shape alone (see [`crate::parallel`]).
use crate::autograd::Backward;
use crate::parallel::{current_parallelism, deterministic_sum};
use crate::shape::Shape;
use crate::tensor::Tensor;

impl Tensor {
    /// Sum of all elements, as a scalar tensor.
    pub fn sum_all(&self) -> Tensor {
        let s = deterministic_sum(current_parallelism(), self.data());
        Tensor::from_op(
            Shape::SCALAR,
            vec![s],
            &[self],
            FillBackward { factor: 1.0 },
        )
    }

    /// Mean of all elements, as a scalar tensor.
    pub fn mean_all(&self) -> Tensor {
        let n = self.numel() as f32;
        let s = deterministic_sum(current_parallelism(), self.data()) / n;
        Tensor::from_op(
            Shape::SCALAR,
            vec![s],
            &[self],
            FillBackward { factor: 1.0 / n },
        )
    }
}

/// Backward of a full reduction: every input element gets `factor * grad`.
struct FillBackward {
    factor: f32,
}

impl Backward for FillBackward {
    fn name(&self) -> &'static str {
        "sum_all"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let value = grad.item() * self.factor;
        vec![Some(Tensor::full(inputs[0].shape(), value))]
    }
}
