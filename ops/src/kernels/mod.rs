//! Kernels: free functions on slices with an explicit destination and
//! parallelism, in the style of faer. The differentiable ops in
//! [`crate::ops`] are built on them; they can be called directly when no
//! graph is wanted.
pub mod conv;
pub mod elementwise;
pub mod fast_math;
pub mod matmul;
pub mod recurrent;
pub mod scan;
pub mod small_gemm;
pub mod sparse;
pub mod vector_state;
