//! Reductions (sum, mean, biased variance; overall or over one axis) and
//! their backward. Every reduction adds in an order fixed by the shape alone
//! (see [`crate::parallel`]): over an axis, each output element is the sum of
//! its inputs in index order, whatever the thread count.
use faer::Par;

use crate::autograd::Backward;
use crate::ops::for_each_row_mut;
use crate::parallel::{CHUNK, current_parallelism, deterministic_sum, for_each_chunk_mut};
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

    /// Sum over `axis` (negative counts from the end); the axis is kept with
    /// size 1 when `keepdim` is true, as `torch.sum(x, axis, keepdim)`.
    #[track_caller]
    pub fn sum_axis(&self, axis: isize, keepdim: bool) -> Tensor {
        self.axis_reduction(axis, keepdim, 1.0)
    }

    /// Mean over `axis`, as `torch.mean(x, axis, keepdim)`.
    #[track_caller]
    pub fn mean_axis(&self, axis: isize, keepdim: bool) -> Tensor {
        let n = self.dim(axis);
        self.axis_reduction(axis, keepdim, 1.0 / n as f32)
    }

    /// Biased variance over `axis` (divides by the axis size), as
    /// `torch.var(x, axis, unbiased=False, keepdim)`: what batch
    /// normalization uses in training.
    #[track_caller]
    pub fn var_axis(&self, axis: isize, keepdim: bool) -> Tensor {
        let shape = self.shape();
        let (outer, n, inner) = shape.split_at_axis(axis);
        let par = current_parallelism();
        let mean = axis_sums(par, self.data(), (outer, n, inner), 1.0 / n as f32);
        let x = self.data();
        let mut out = vec![0.0; outer * inner];
        for_each_row_mut(par, &mut out, inner, |o, row| {
            for j in 0..n {
                let base = (o * n + j) * inner;
                let m = &mean[o * inner..(o + 1) * inner];
                for ((r, &v), &m) in row.iter_mut().zip(&x[base..base + inner]).zip(m) {
                    let d = v - m;
                    *r += d * d;
                }
            }
            let scale = 1.0 / n as f32;
            row.iter_mut().for_each(|r| *r *= scale);
        });
        Tensor::from_op(
            reduced_shape(&shape, axis, keepdim),
            out,
            &[self],
            VarianceBackward { axis, mean },
        )
    }

    fn axis_reduction(&self, axis: isize, keepdim: bool, factor: f32) -> Tensor {
        let shape = self.shape();
        let split = shape.split_at_axis(axis);
        let out = axis_sums(current_parallelism(), self.data(), split, factor);
        Tensor::from_op(
            reduced_shape(&shape, axis, keepdim),
            out,
            &[self],
            AxisSumBackward { axis, factor },
        )
    }
}

/// The shape after reducing `axis`: kept with size 1, or removed.
fn reduced_shape(shape: &Shape, axis: isize, keepdim: bool) -> Shape {
    if keepdim {
        shape.with_dim(axis, 1)
    } else {
        let a = shape.axis(axis);
        let dims: Vec<usize> = shape
            .dims()
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != a)
            .map(|(_, &d)| d)
            .collect();
        Shape::new(&dims)
    }
}

/// `factor * sum_j x[o, j, i]` for an `(outer, n, inner)` view, each output
/// summed over `j` in index order.
fn axis_sums(
    par: Par,
    x: &[f32],
    (outer, n, inner): (usize, usize, usize),
    factor: f32,
) -> Vec<f32> {
    let mut out = vec![0.0; outer * inner];
    if inner == 1 {
        // Reducing the last axis: a contiguous row per output element.
        for_each_chunk_mut(par, &mut out, CHUNK, |c, chunk| {
            for (r, o) in chunk.iter_mut().enumerate() {
                let row = c * CHUNK + r;
                *o = x[row * n..(row + 1) * n].iter().sum::<f32>() * factor;
            }
        });
        return out;
    }
    for_each_row_mut(par, &mut out, inner, |o, row| {
        for j in 0..n {
            let base = (o * n + j) * inner;
            for (r, &v) in row.iter_mut().zip(&x[base..base + inner]) {
                *r += v;
            }
        }
        if factor != 1.0 {
            row.iter_mut().for_each(|r| *r *= factor);
        }
    });
    out
}

/// `g[o, i]` repeated along the reduced axis, times `factor`.
fn broadcast_along(
    par: Par,
    g: &[f32],
    (outer, n, inner): (usize, usize, usize),
    factor: f32,
) -> Vec<f32> {
    let mut out = vec![0.0; outer * n * inner];
    for_each_row_mut(par, &mut out, inner, |row_index, row| {
        let o = row_index / n;
        for (r, &v) in row.iter_mut().zip(&g[o * inner..(o + 1) * inner]) {
            *r = v * factor;
        }
    });
    out
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

struct AxisSumBackward {
    axis: isize,
    factor: f32,
}

impl Backward for AxisSumBackward {
    fn name(&self) -> &'static str {
        "sum_axis"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let shape = inputs[0].shape();
        let split = shape.split_at_axis(self.axis);
        let g = broadcast_along(current_parallelism(), grad.data(), split, self.factor);
        vec![Some(Tensor::from_vec(shape, g))]
    }
}

struct VarianceBackward {
    axis: isize,
    mean: Vec<f32>,
}

impl Backward for VarianceBackward {
    fn name(&self) -> &'static str {
        "var_axis"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        // d var / d x_j = 2 (x_j - mean) / n
        let shape = inputs[0].shape();
        let (_, n, inner) = shape.split_at_axis(self.axis);
        let scale = 2.0 / n as f32;
        let (x, g, mean) = (inputs[0].data(), grad.data(), &self.mean);
        let mut out = vec![0.0; shape.numel()];
        for_each_row_mut(current_parallelism(), &mut out, inner, |row_index, row| {
            let o = row_index / n;
            let xs = &x[row_index * inner..(row_index + 1) * inner];
            let ms = &mean[o * inner..(o + 1) * inner];
            let gs = &g[o * inner..(o + 1) * inner];
            for (((r, &x), &m), &g) in row.iter_mut().zip(xs).zip(ms).zip(gs) {
                *r = scale * (x - m) * g;
            }
        });
        vec![Some(Tensor::from_vec(shape, out))]
    }
}
