//! Shape ops: reshape (shares data), squeeze/unsqueeze, transpose of two axes
//! (copies), concat/stack, narrow, split/chunk, and zero padding along an
//! axis; each with its backward.
use std::sync::Arc;

use crate::autograd::Backward;
use crate::ops::binary::padded_dims;
use crate::shape::{MAX_RANK, Shape};
use crate::tensor::Tensor;

impl Tensor {
    /// The same data with another shape of the same element count (no copy).
    ///
    /// # Panics
    /// When the element counts differ.
    #[track_caller]
    pub fn reshape(&self, shape: impl Into<Shape>) -> Tensor {
        let shape = shape.into();
        assert_eq!(
            shape.numel(),
            self.numel(),
            "reshape: {:?} has {} elements, {shape:?} needs {}",
            self.shape(),
            self.numel(),
            shape.numel()
        );
        Tensor::from_op_shared(shape, self.shared_data().clone(), &[self], ReshapeBackward)
    }

    /// Inserts a dimension of size 1 at `axis` (`0..=rank`; negative counts
    /// from the end, `-1` appends), as `torch.unsqueeze`.
    #[track_caller]
    pub fn unsqueeze(&self, axis: isize) -> Tensor {
        let rank = self.rank() as isize;
        let at = if axis < 0 { axis + rank + 1 } else { axis };
        assert!(
            (0..=rank).contains(&at),
            "unsqueeze: axis {axis} out of range for {:?}",
            self.shape()
        );
        let mut dims = self.dims().to_vec();
        dims.insert(at as usize, 1);
        self.reshape(Shape::new(&dims))
    }

    /// Removes dimension `axis`, which must have size 1.
    #[track_caller]
    pub fn squeeze(&self, axis: isize) -> Tensor {
        let a = self.shape().axis(axis);
        assert_eq!(
            self.dims()[a],
            1,
            "squeeze: axis {axis} of {:?} is not 1",
            self.shape()
        );
        let mut dims = self.dims().to_vec();
        dims.remove(a);
        self.reshape(Shape::new(&dims))
    }

    /// Swaps two axes, copying into a new contiguous tensor (as
    /// `torch.transpose(x, a, b).contiguous()`). For a matrix product with a
    /// transposed operand, prefer
    /// [`matmul_with`](crate::ops::matmul::matmul_with), which copies nothing.
    #[track_caller]
    pub fn transpose_copy(&self, axis_a: isize, axis_b: isize) -> Tensor {
        let shape = self.shape();
        let (a, b) = (shape.axis(axis_a), shape.axis(axis_b));
        let mut permutation: Vec<usize> = (0..shape.rank()).collect();
        permutation.swap(a, b);
        let (out_shape, data) = permute(self.data(), &shape, &permutation);
        Tensor::from_op(out_shape, data, &[self], TransposeBackward { a, b })
    }

    /// A copy of `length` entries of `axis` starting at `start`, as
    /// `torch.narrow`.
    ///
    /// # Panics
    /// When the range does not fit the axis.
    #[track_caller]
    pub fn narrow(&self, axis: isize, start: usize, length: usize) -> Tensor {
        let shape = self.shape();
        let (outer, n, inner) = shape.split_at_axis(axis);
        assert!(
            start + length <= n,
            "narrow: {start}..{} outside axis {axis} of {shape:?}",
            start + length
        );
        let x = self.data();
        let mut out = Vec::with_capacity(outer * length * inner);
        for o in 0..outer {
            let base = (o * n + start) * inner;
            out.extend_from_slice(&x[base..base + length * inner]);
        }
        Tensor::from_op(
            shape.with_dim(axis, length),
            out,
            &[self],
            NarrowBackward { axis, start },
        )
    }

    /// Pieces of the given sizes along `axis` (which must add up to its
    /// size), as `torch.split(x, sizes, axis)`. Each piece is its own op.
    #[track_caller]
    pub fn split(&self, sizes: &[usize], axis: isize) -> Vec<Tensor> {
        let n = self.dim(axis);
        assert_eq!(
            sizes.iter().sum::<usize>(),
            n,
            "split: sizes {sizes:?} do not add up to axis {axis} of {:?}",
            self.shape()
        );
        let mut start = 0;
        sizes
            .iter()
            .map(|&size| {
                let piece = self.narrow(axis, start, size);
                start += size;
                piece
            })
            .collect()
    }

    /// `chunks` pieces along `axis`, each of `ceil(size / chunks)` entries
    /// but the last, as `torch.chunk` (fewer pieces when the size is small).
    #[track_caller]
    pub fn chunk(&self, chunks: usize, axis: isize) -> Vec<Tensor> {
        assert!(chunks > 0, "chunk: zero chunks");
        let n = self.dim(axis);
        let size = n.div_ceil(chunks).max(1);
        let mut sizes = Vec::new();
        let mut left = n;
        while left > 0 {
            let s = size.min(left);
            sizes.push(s);
            left -= s;
        }
        if sizes.is_empty() {
            sizes.push(0);
        }
        self.split(&sizes, axis)
    }

    /// Pads `axis` with `before` zeros in front and `after` zeros behind (as
    /// `torch.nn.functional.pad` with zeros): the causal window of a
    /// convolution over time pads `before = window - 1`.
    #[track_caller]
    pub fn pad_axis(&self, axis: isize, before: usize, after: usize) -> Tensor {
        let shape = self.shape();
        let (outer, n, inner) = shape.split_at_axis(axis);
        let padded = n + before + after;
        let x = self.data();
        let mut out = vec![0.0; outer * padded * inner];
        for o in 0..outer {
            let dst = (o * padded + before) * inner;
            out[dst..dst + n * inner].copy_from_slice(&x[o * n * inner..(o + 1) * n * inner]);
        }
        Tensor::from_op(
            shape.with_dim(axis, padded),
            out,
            &[self],
            PadBackward {
                axis,
                before,
                length: n,
            },
        )
    }
}

/// Joins tensors along `axis`; all other dimensions must agree, as
/// `torch.cat`.
///
/// # Panics
/// When `tensors` is empty or the shapes do not fit.
#[track_caller]
pub fn concat(tensors: &[&Tensor], axis: isize) -> Tensor {
    assert!(!tensors.is_empty(), "concat: no tensors");
    let first = tensors[0].shape();
    let a = first.axis(axis);
    for t in tensors {
        let fits = t.rank() == first.rank()
            && t.dims()
                .iter()
                .zip(first.dims())
                .enumerate()
                .all(|(i, (x, y))| i == a || x == y);
        assert!(
            fits,
            "concat along axis {axis}: shapes {:?} and {:?} differ elsewhere",
            first,
            t.shape()
        );
    }
    let sizes: Vec<usize> = tensors.iter().map(|t| t.dims()[a]).collect();
    let total: usize = sizes.iter().sum();
    let out_shape = first.with_dim(axis, total);
    let (outer, _, inner) = out_shape.split_at_axis(axis);
    let mut out = Vec::with_capacity(out_shape.numel());
    for o in 0..outer {
        for (t, &size) in tensors.iter().zip(&sizes) {
            out.extend_from_slice(&t.data()[o * size * inner..(o + 1) * size * inner]);
        }
    }
    Tensor::from_op(out_shape, out, tensors, ConcatBackward { axis, sizes })
}

/// Stacks same-shaped tensors along a new axis `axis`, as `torch.stack`.
#[track_caller]
pub fn stack(tensors: &[&Tensor], axis: isize) -> Tensor {
    let expanded: Vec<Tensor> = tensors.iter().map(|t| t.unsqueeze(axis)).collect();
    let refs: Vec<&Tensor> = expanded.iter().collect();
    // A negative axis names the same position after the unsqueeze.
    concat(&refs, axis)
}

/// Copies `data` (of `shape`) with its axes reordered: output axis `i` is
/// input axis `permutation[i]`.
fn permute(data: &[f32], shape: &Shape, permutation: &[usize]) -> (Shape, Vec<f32>) {
    let rank = shape.rank();
    let in_strides = shape.strides();
    let out_dims: Vec<usize> = permutation.iter().map(|&p| shape.dims()[p]).collect();
    let out_shape = Shape::new(&out_dims);
    // Padded to MAX_RANK on the left: strides of the input per output axis.
    let mut strides = [0; MAX_RANK];
    for (i, &p) in permutation.iter().enumerate() {
        strides[MAX_RANK - rank + i] = in_strides[p];
    }
    let d = padded_dims(&out_shape);
    let mut out = Vec::with_capacity(out_shape.numel());
    for i0 in 0..d[0] {
        for i1 in 0..d[1] {
            for i2 in 0..d[2] {
                let base = i0 * strides[0] + i1 * strides[1] + i2 * strides[2];
                out.extend((0..d[3]).map(|i3| data[base + i3 * strides[3]]));
            }
        }
    }
    (out_shape, out)
}

struct ReshapeBackward;

impl Backward for ReshapeBackward {
    fn name(&self) -> &'static str {
        "reshape"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let data: Arc<Vec<f32>> = grad.shared_data().clone();
        vec![Some(Tensor::from_shared(inputs[0].shape(), data))]
    }
}

struct TransposeBackward {
    a: usize,
    b: usize,
}

impl Backward for TransposeBackward {
    fn name(&self) -> &'static str {
        "transpose_copy"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let mut permutation: Vec<usize> = (0..grad.rank()).collect();
        permutation.swap(self.a, self.b);
        let (shape, data) = permute(grad.data(), &grad.shape(), &permutation);
        debug_assert_eq!(shape, inputs[0].shape());
        vec![Some(Tensor::from_vec(shape, data))]
    }
}

struct NarrowBackward {
    axis: isize,
    start: usize,
}

impl Backward for NarrowBackward {
    fn name(&self) -> &'static str {
        "narrow"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let shape = inputs[0].shape();
        let (outer, n, inner) = shape.split_at_axis(self.axis);
        let length = grad.dim(self.axis);
        let g = grad.data();
        let mut out = vec![0.0; shape.numel()];
        for o in 0..outer {
            let dst = (o * n + self.start) * inner;
            out[dst..dst + length * inner]
                .copy_from_slice(&g[o * length * inner..(o + 1) * length * inner]);
        }
        vec![Some(Tensor::from_vec(shape, out))]
    }
}

struct PadBackward {
    axis: isize,
    before: usize,
    length: usize,
}

impl Backward for PadBackward {
    fn name(&self) -> &'static str {
        "pad_axis"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let (outer, padded, inner) = grad.shape().split_at_axis(self.axis);
        let g = grad.data();
        let mut out = Vec::with_capacity(inputs[0].numel());
        for o in 0..outer {
            let src = (o * padded + self.before) * inner;
            out.extend_from_slice(&g[src..src + self.length * inner]);
        }
        vec![Some(Tensor::from_vec(inputs[0].shape(), out))]
    }
}

struct ConcatBackward {
    axis: isize,
    sizes: Vec<usize>,
}

impl Backward for ConcatBackward {
    fn name(&self) -> &'static str {
        "concat"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let (outer, total, inner) = grad.shape().split_at_axis(self.axis);
        let g = grad.data();
        let mut start = 0;
        inputs
            .iter()
            .zip(&self.sizes)
            .map(|(input, &size)| {
                let offset = start;
                start += size;
                input.requires_grad().then(|| {
                    let mut out = Vec::with_capacity(input.numel());
                    for o in 0..outer {
                        let src = (o * total + offset) * inner;
                        out.extend_from_slice(&g[src..src + size * inner]);
                    }
                    Tensor::from_vec(input.shape(), out)
                })
            })
            .collect()
    }
}
