//! Tensors, deterministic kernels, reverse-mode autodiff, optimizers and checkpoints.
//!
//! `ops` is the numerical floor of shoal: it knows nothing of models, data
//! files, networks or clocks. Everything here is a pure function of its
//! inputs, and every kernel gives the same bits whatever the thread count
//! (see `ARCHITECTURE.md`, "Determinism").
//!
//! - [`Tensor`]: f32, contiguous, row-major, up to four dimensions, cheap to
//!   clone (the data is shared); [`IndexTensor`] for integer indices.
//! - [`autograd`]: an op is recorded only when one of its inputs requires a
//!   gradient and gradients are enabled; [`Tensor::backward`] walks the graph
//!   in reverse topological order. Each op's backward sits next to its
//!   forward, in the op family's module under [`ops`](crate::ops).
//! - [`rng`] (counter-based Philox random numbers), [`init`] (PyTorch's
//!   default initializations), [`optim`] (SGD, Adam, AdamW, clipping,
//!   schedules), [`checkpoint`] (safetensors files of parameters and
//!   optimizer state: the one place in `ops` that writes files).
//! - [`kernels`]: free functions on slices with an explicit destination and
//!   [`Par`], used by the differentiable ops and usable on their own.
#![deny(unsafe_code)]

pub mod autograd;
pub mod checkpoint;
pub mod error;
pub mod gradcheck;
pub mod init;
pub mod kernels;
pub mod ops;
pub mod optim;
pub mod parallel;
pub mod parameters;
pub mod rng;
pub mod shape;
pub mod tensor;

pub use autograd::{GradStore, is_grad_enabled, no_grad};
pub use error::OpsError;
pub use faer::Par;
pub use optim::{LearningRateSchedule, Optimizer, OptimizerConfig};
pub use parallel::{current_parallelism, set_parallelism, with_parallelism};
pub use parameters::ParameterSet;
pub use rng::RandomStream;
pub use shape::Shape;
pub use tensor::{IndexTensor, Tensor, TensorId};
