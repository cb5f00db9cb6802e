//! Differentiable ops, one module per op family. Each family defines its
//! forward as `Tensor` methods (or free functions) and its backward as a
//! [`Backward`](crate::autograd::Backward) implementation beside it.
pub mod binary;
pub mod dropout;
pub mod loss;
pub mod matmul;
pub mod reduce;
pub mod unary;

pub use loss::IGNORE_INDEX;
