//! Elementwise functions of one tensor and their derivatives.
//!
//! Each function is a [`Unary`]: its value and its derivative, written in
//! terms of the input `x` and the output `y` (so `exp`'s derivative is `y`).
use crate::autograd::Backward;
use crate::kernels::elementwise::{map, zip_map};
use crate::parallel::current_parallelism;
use crate::tensor::Tensor;

/// An elementwise function with its derivative.
#[derive(Clone, Copy)]
pub struct Unary {
    /// Name for errors and debugging.
    pub name: &'static str,
    /// The value at `x`.
    pub forward: fn(f32) -> f32,
    /// The derivative at `x`, given `x` and the value `y`.
    pub derivative: fn(f32, f32) -> f32,
}

/// `max(x, 0)`; derivative 0 at 0, as PyTorch.
pub const RELU: Unary = Unary {
    name: "relu",
    forward: |x| if x > 0.0 { x } else { 0.0 },
    derivative: |x, _| if x > 0.0 { 1.0 } else { 0.0 },
};

impl Tensor {
    /// Applies an elementwise [`Unary`] function.
    pub fn apply_unary(&self, function: Unary) -> Tensor {
        let data = map(current_parallelism(), self.data(), function.forward);
        Tensor::from_op(self.shape(), data, &[self], UnaryBackward(function))
    }

    /// `max(x, 0)`.
    pub fn relu(&self) -> Tensor {
        self.apply_unary(RELU)
    }

    /// `x * factor`.
    pub fn scale(&self, factor: f32) -> Tensor {
        let data = map(current_parallelism(), self.data(), move |x| x * factor);
        Tensor::from_op(self.shape(), data, &[self], ScaleBackward(factor))
    }

    /// `x + constant`.
    pub fn add_scalar(&self, constant: f32) -> Tensor {
        let data = map(current_parallelism(), self.data(), move |x| x + constant);
        Tensor::from_op(self.shape(), data, &[self], ScaleBackward(1.0))
    }
}

struct UnaryBackward(Unary);

impl Backward for UnaryBackward {
    fn name(&self) -> &'static str {
        self.0.name
    }

    fn backward(&self, inputs: &[Tensor], output: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let derivative = self.0.derivative;
        let x = inputs[0].data();
        let y = output.data();
        let local = zip_map(current_parallelism(), x, y, derivative);
        let g = zip_map(current_parallelism(), &local, grad.data(), |d, g| d * g);
        vec![Some(Tensor::from_vec(inputs[0].shape(), g))]
    }
}

struct ScaleBackward(f32);

impl Backward for ScaleBackward {
    fn name(&self) -> &'static str {
        "scale"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let factor = self.0;
        let g = map(current_parallelism(), grad.data(), move |g| g * factor);
        vec![Some(Tensor::from_vec(inputs[0].shape(), g))]
    }
}
