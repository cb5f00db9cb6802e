//! Sparse (CSR) times dense matrix products, differentiable with respect
//! to the dense operand (the sparse matrix, a graph's adjacency, is constant).
use std::sync::Arc;

use crate::autograd::Backward;
use crate::kernels::sparse::{CsrMatrix, csr_matmul};
use crate::parallel::current_parallelism;
use crate::tensor::Tensor;

/// A constant sparse matrix with its transpose, ready for products and
/// their backward.
#[derive(Clone, Debug)]
pub struct SparseMatrix {
    matrix: Arc<CsrMatrix>,
    transpose: Arc<CsrMatrix>,
}

impl SparseMatrix {
    /// Wraps a CSR matrix (its transpose is built once, here).
    pub fn new(matrix: CsrMatrix) -> SparseMatrix {
        let transpose = Arc::new(matrix.transpose());
        SparseMatrix {
            matrix: Arc::new(matrix),
            transpose,
        }
    }

    /// The matrix.
    pub fn csr(&self) -> &CsrMatrix {
        &self.matrix
    }

    /// `self @ dense`, with `dense` of shape (cols, n); the result is
    /// (rows, n). Parallel over rows; each row adds its nonzeros in column
    /// order, so the bits do not depend on the thread count.
    ///
    /// # Panics
    /// When `dense` is not a (cols, n) matrix.
    #[track_caller]
    pub fn matmul(&self, dense: &Tensor) -> Tensor {
        assert!(
            dense.rank() == 2 && dense.dim(0) == self.matrix.cols(),
            "sparse matmul: dense operand must be ({}, n), got {:?}",
            self.matrix.cols(),
            dense.shape()
        );
        let n = dense.dim(1);
        let mut out = vec![0.0; self.matrix.rows() * n];
        csr_matmul(
            current_parallelism(),
            &mut out,
            &self.matrix,
            dense.data(),
            n,
        );
        Tensor::from_op(
            [self.matrix.rows(), n],
            out,
            &[dense],
            SparseMatmulBackward {
                transpose: self.transpose.clone(),
            },
        )
    }
}

struct SparseMatmulBackward {
    transpose: Arc<CsrMatrix>,
}

impl Backward for SparseMatmulBackward {
    fn name(&self) -> &'static str {
        "sparse_matmul"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let dense = &inputs[0];
        let n = dense.dim(1);
        let mut g = vec![0.0; dense.numel()];
        csr_matmul(
            current_parallelism(),
            &mut g,
            &self.transpose,
            grad.data(),
            n,
        );
        vec![Some(Tensor::from_vec(dense.shape(), g))]
    }
}
