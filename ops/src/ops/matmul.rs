//! Matrix products and the linear layer (`x W^T + b`), with their backward.
use crate::autograd::Backward;
use crate::kernels::elementwise::wide;
use crate::kernels::matmul::{Layout, gemm};
use crate::parallel::{current_parallelism, for_each_chunk_mut};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// The (rows, cols) of the last two dimensions as read with `layout`, and
/// the number of matrices before them.
fn matrix_dims(t: &Tensor, layout: Layout, what: &str) -> (usize, usize, usize) {
    assert!(
        t.rank() >= 2,
        "matmul: {what} must have at least 2 dimensions, got {:?}",
        t.shape()
    );
    let (r, c) = (t.dim(-2), t.dim(-1));
    let batch = t.numel() / (r * c).max(1);
    match layout {
        Layout::AsIs => (batch, r, c),
        Layout::Transposed => (batch, c, r),
    }
}

/// `op(a) @ op(b)` over the last two dimensions, where `op` transposes an
/// operand read [`Layout::Transposed`] (a view, no copy). Leading dimensions
/// are batch dimensions: equal on both sides, or `b` a single matrix shared
/// by every batch entry.
///
/// # Panics
/// When the shapes do not fit.
#[track_caller]
pub fn matmul_with(a: &Tensor, a_layout: Layout, b: &Tensor, b_layout: Layout) -> Tensor {
    let (batch_a, m, k) = matrix_dims(a, a_layout, "left operand");
    let (batch_b, k2, n) = matrix_dims(b, b_layout, "right operand");
    assert_eq!(
        k,
        k2,
        "matmul: inner dimensions differ: {:?} and {:?}",
        a.shape(),
        b.shape()
    );
    assert!(
        batch_b == 1 && b.rank() == 2 || a.dims()[..a.rank() - 2] == b.dims()[..b.rank() - 2],
        "matmul: batch dimensions differ: {:?} and {:?}",
        a.shape(),
        b.shape()
    );
    let mut dims = a.dims().to_vec();
    let rank = dims.len();
    dims[rank - 2] = m;
    dims[rank - 1] = n;
    let out_shape = Shape::new(&dims);
    let mut out = vec![0.0; out_shape.numel()];
    product(
        &mut out,
        false,
        a,
        a_layout,
        b,
        b_layout,
        (batch_a, batch_b, m, k, n),
    );
    Tensor::from_op(
        out_shape,
        out,
        &[a, b],
        MatmulBackward { a_layout, b_layout },
    )
}

/// `dst (+)= op(a) @ op(b)` per batch entry; `b` may be one shared matrix.
#[allow(clippy::too_many_arguments)]
fn product(
    dst: &mut [f32],
    accumulate: bool,
    a: &Tensor,
    a_layout: Layout,
    b: &Tensor,
    b_layout: Layout,
    (batch_a, batch_b, m, k, n): (usize, usize, usize, usize, usize),
) {
    let par = current_parallelism();
    if batch_b == 1 && a_layout == Layout::AsIs {
        // A shared right operand: one product over all rows of `a`.
        gemm(
            dst,
            accumulate,
            a.data(),
            a_layout,
            b.data(),
            b_layout,
            (batch_a * m, k, n),
            1.0,
            par,
        );
        return;
    }
    for i in 0..batch_a {
        let j = if batch_b == 1 { 0 } else { i };
        gemm(
            &mut dst[i * m * n..(i + 1) * m * n],
            accumulate,
            &a.data()[i * m * k..(i + 1) * m * k],
            a_layout,
            &b.data()[j * k * n..(j + 1) * k * n],
            b_layout,
            (m, k, n),
            1.0,
            par,
        );
    }
}

struct MatmulBackward {
    a_layout: Layout,
    b_layout: Layout,
}

impl Backward for MatmulBackward {
    fn name(&self) -> &'static str {
        "matmul"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let (batch_a, m, k) = matrix_dims(a, self.a_layout, "left operand");
        let (batch_b, _, n) = matrix_dims(b, self.b_layout, "right operand");
        let par = current_parallelism();
        let g = grad.data();
        let ga = a.requires_grad().then(|| {
            let mut out = vec![0.0; a.numel()];
            for i in 0..batch_a {
                let j = if batch_b == 1 { 0 } else { i };
                let gi = &g[i * m * n..(i + 1) * m * n];
                let bj = &b.data()[j * k * n..(j + 1) * k * n];
                let dst = &mut out[i * m * k..(i + 1) * m * k];
                match self.a_layout {
                    // dA (m x k) = dC (m x n) op(B)^T
                    Layout::AsIs => gemm(
                        dst,
                        false,
                        gi,
                        Layout::AsIs,
                        bj,
                        self.b_layout.flip(),
                        (m, n, k),
                        1.0,
                        par,
                    ),
                    // dA stored (k x m) = op(B) (k x n) dC^T
                    Layout::Transposed => gemm(
                        dst,
                        false,
                        bj,
                        self.b_layout,
                        gi,
                        Layout::Transposed,
                        (k, n, m),
                        1.0,
                        par,
                    ),
                }
            }
            Tensor::from_vec(a.shape(), out)
        });
        let gb = b.requires_grad().then(|| {
            let mut out = vec![0.0; b.numel()];
            if batch_b == 1 && self.a_layout == Layout::AsIs {
                let rows = batch_a * m;
                match self.b_layout {
                    // dB (k x n) = A^T (k x rows) dC (rows x n)
                    Layout::AsIs => gemm(
                        &mut out,
                        false,
                        a.data(),
                        Layout::Transposed,
                        g,
                        Layout::AsIs,
                        (k, rows, n),
                        1.0,
                        par,
                    ),
                    // dB stored (n x k) = dC^T (n x rows) A (rows x k)
                    Layout::Transposed => gemm(
                        &mut out,
                        false,
                        g,
                        Layout::Transposed,
                        a.data(),
                        Layout::AsIs,
                        (n, rows, k),
                        1.0,
                        par,
                    ),
                }
            } else {
                for i in 0..batch_a {
                    let j = if batch_b == 1 { 0 } else { i };
                    let gi = &g[i * m * n..(i + 1) * m * n];
                    let ai = &a.data()[i * m * k..(i + 1) * m * k];
                    let accumulate = batch_b == 1 && i > 0;
                    let dst = &mut out[j * k * n..(j + 1) * k * n];
                    match self.b_layout {
                        Layout::AsIs => gemm(
                            dst,
                            accumulate,
                            ai,
                            self.a_layout.flip(),
                            gi,
                            Layout::AsIs,
                            (k, m, n),
                            1.0,
                            par,
                        ),
                        Layout::Transposed => gemm(
                            dst,
                            accumulate,
                            gi,
                            Layout::Transposed,
                            ai,
                            self.a_layout,
                            (n, m, k),
                            1.0,
                            par,
                        ),
                    }
                }
            }
            Tensor::from_vec(b.shape(), out)
        });
        vec![ga, gb]
    }
}

impl Tensor {
    /// Matrix product over the last two dimensions (see [`matmul_with`]).
    #[track_caller]
    pub fn matmul(&self, other: &Tensor) -> Tensor {
        matmul_with(self, Layout::AsIs, other, Layout::AsIs)
    }

    /// The linear layer of PyTorch: `self @ weight^T + bias`, with `self` of
    /// shape `(..., in)`, `weight` `(out, in)` and `bias` `(out)`. The
    /// transpose is a view; the bias is added in the same pass.
    ///
    /// # Panics
    /// When the shapes do not fit.
    #[track_caller]
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let (shape, out) = linear_forward(self, weight, bias);
        match bias {
            Some(bias) => Tensor::from_op(shape, out, &[self, weight, bias], LinearBackward),
            None => Tensor::from_op(shape, out, &[self, weight], LinearBackward),
        }
    }
}

/// The values of [`Tensor::linear`] and their shape, without recording
/// the op: for ops that fuse a linear layer with what follows it (whose
/// backward is then [`LinearBackward`] over the same inputs).
#[track_caller]
pub(crate) fn linear_forward(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> (Shape, Vec<f32>) {
    assert_eq!(
        weight.rank(),
        2,
        "linear: weight must be (out, in), got {:?}",
        weight.shape()
    );
    let (out_features, in_features) = (weight.dim(0), weight.dim(1));
    assert_eq!(
        input.dim(-1),
        in_features,
        "linear: input {:?} does not end in {in_features} features (weight {:?})",
        input.shape(),
        weight.shape()
    );
    let rows = input.numel() / in_features.max(1);
    let out_shape = input.shape().with_dim(-1, out_features);
    // The product accumulates onto the bias rows (no zeroing first).
    let mut out = match bias {
        Some(bias) => {
            assert_eq!(
                bias.dims(),
                [out_features],
                "linear: bias must be ({out_features})"
            );
            bias.data().repeat(rows)
        }
        None => vec![0.0; rows * out_features],
    };
    gemm(
        &mut out,
        bias.is_some(),
        input.data(),
        Layout::AsIs,
        weight.data(),
        Layout::Transposed,
        (rows, in_features, out_features),
        1.0,
        current_parallelism(),
    );
    (out_shape, out)
}

/// Backward of [`Tensor::linear`]; its inputs are `[input, weight]` or
/// `[input, weight, bias]`. It never reads its op's output.
pub(crate) struct LinearBackward;

impl Backward for LinearBackward {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let (x, w) = (&inputs[0], &inputs[1]);
        let (out_features, in_features) = (w.dim(0), w.dim(1));
        let rows = x.numel() / in_features.max(1);
        let par = current_parallelism();
        let g = grad.data();
        let gx = x.requires_grad().then(|| {
            // dX (rows x in) = dY (rows x out) W (out x in)
            let mut out = vec![0.0; x.numel()];
            gemm(
                &mut out,
                false,
                g,
                Layout::AsIs,
                w.data(),
                Layout::AsIs,
                (rows, out_features, in_features),
                1.0,
                par,
            );
            Tensor::from_vec(x.shape(), out)
        });
        let gw = w.requires_grad().then(|| {
            // dW (out x in) = dY^T (out x rows) X (rows x in)
            let mut out = vec![0.0; w.numel()];
            gemm(
                &mut out,
                false,
                g,
                Layout::Transposed,
                x.data(),
                Layout::AsIs,
                (out_features, rows, in_features),
                1.0,
                par,
            );
            Tensor::from_vec(w.shape(), out)
        });
        let mut grads = vec![gx, gw];
        if let Some(bias) = inputs.get(2) {
            grads.push(bias.requires_grad().then(|| {
                // One block of columns per thread, each column summed over
                // the rows in row order by one thread: no sum is cut, so the
                // bits are the same for any block width, and the width may
                // follow the thread count (a block per thread, not
                // narrower: each block streams the rows once).
                let block_columns = out_features.div_ceil(par.degree()).next_multiple_of(16);
                let mut out = vec![0.0; out_features];
                for_each_chunk_mut(par, &mut out, block_columns, |block, sums| {
                    let first = block * block_columns;
                    wide!(|| {
                        for row in g.chunks_exact(out_features) {
                            for (o, &v) in sums.iter_mut().zip(&row[first..]) {
                                *o += v;
                            }
                        }
                    });
                });
                Tensor::from_vec(bias.shape(), out)
            }));
        }
        grads
    }
}
