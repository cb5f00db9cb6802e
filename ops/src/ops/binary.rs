//! Broadcasting binary arithmetic (add, sub, mul, div) and its backward.
use crate::autograd::Backward;
use crate::kernels::elementwise::zip_map;
use crate::parallel::current_parallelism;
use crate::shape::{MAX_RANK, Shape};
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryKind {
    fn apply(self, x: f32, y: f32) -> f32 {
        match self {
            BinaryKind::Add => x + y,
            BinaryKind::Sub => x - y,
            BinaryKind::Mul => x * y,
            BinaryKind::Div => x / y,
        }
    }
}

/// Strides (in elements) with which `input` is read when broadcast to
/// `output`, padded on the left to [`MAX_RANK`] dimensions: 0 on broadcast
/// dimensions.
pub(crate) fn broadcast_strides(input: &Shape, _output: &Shape) -> [usize; MAX_RANK] {
    let mut strides = [0; MAX_RANK];
    let in_strides = input.strides();
    let offset_in = MAX_RANK - input.rank();
    for i in 0..input.rank() {
        if input.dims()[i] != 1 {
            strides[offset_in + i] = in_strides[i];
        }
    }
    strides
}

/// `output` padded on the left with ones to [`MAX_RANK`] dimensions.
pub(crate) fn padded_dims(shape: &Shape) -> [usize; MAX_RANK] {
    let mut dims = [1; MAX_RANK];
    dims[MAX_RANK - shape.rank()..].copy_from_slice(shape.dims());
    dims
}

/// Calls `f(out_index, a_offset, b_offset)` for every element of `out`, in
/// row-major order.
fn for_each_broadcast(
    out: &Shape,
    a: [usize; MAX_RANK],
    b: [usize; MAX_RANK],
    mut f: impl FnMut(usize, usize, usize),
) {
    let d = padded_dims(out);
    let mut index = 0;
    for i0 in 0..d[0] {
        for i1 in 0..d[1] {
            for i2 in 0..d[2] {
                let base_a = i0 * a[0] + i1 * a[1] + i2 * a[2];
                let base_b = i0 * b[0] + i1 * b[1] + i2 * b[2];
                for i3 in 0..d[3] {
                    f(index, base_a + i3 * a[3], base_b + i3 * b[3]);
                    index += 1;
                }
            }
        }
    }
}

/// Sums `grad` (of shape `from`) down to `to`, over the broadcast
/// dimensions, in row-major order of `from` (deterministic).
pub(crate) fn sum_to_shape(grad: &[f32], from: &Shape, to: &Shape) -> Vec<f32> {
    if from == to {
        return grad.to_vec();
    }
    let mut out = vec![0.0; to.numel()];
    let strides = broadcast_strides(to, from);
    for_each_broadcast(from, strides, [0; MAX_RANK], |i, o, _| {
        out[o] += grad[i];
    });
    out
}

fn binary(kind: BinaryKind, a: &Tensor, b: &Tensor) -> Tensor {
    let shape = Shape::broadcast(&a.shape(), &b.shape()).unwrap_or_else(|| {
        panic!(
            "{kind:?}: shapes {:?} and {:?} do not broadcast",
            a.shape(),
            b.shape()
        )
    });
    let data = if a.shape() == b.shape() {
        zip_map(current_parallelism(), a.data(), b.data(), move |x, y| {
            kind.apply(x, y)
        })
    } else {
        let mut out = vec![0.0; shape.numel()];
        let (ad, bd) = (a.data(), b.data());
        for_each_broadcast(
            &shape,
            broadcast_strides(&a.shape(), &shape),
            broadcast_strides(&b.shape(), &shape),
            |i, ia, ib| out[i] = kind.apply(ad[ia], bd[ib]),
        );
        out
    };
    Tensor::from_op(shape, data, &[a, b], BinaryBackward(kind))
}

struct BinaryBackward(BinaryKind);

impl Backward for BinaryBackward {
    fn name(&self) -> &'static str {
        match self.0 {
            BinaryKind::Add => "add",
            BinaryKind::Sub => "sub",
            BinaryKind::Mul => "mul",
            BinaryKind::Div => "div",
        }
    }

    fn backward(&self, inputs: &[Tensor], output: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let out_shape = output.shape();
        let g = grad.data();
        // Gradient of each input at the output's shape, then summed down.
        let (ga, gb): (Option<Vec<f32>>, Option<Vec<f32>>) = match self.0 {
            BinaryKind::Add => (Some(g.to_vec()), Some(g.to_vec())),
            BinaryKind::Sub => (Some(g.to_vec()), Some(g.iter().map(|x| -x).collect())),
            BinaryKind::Mul => (
                a.requires_grad()
                    .then(|| times_broadcast(g, &out_shape, b, |g, y| g * y)),
                b.requires_grad()
                    .then(|| times_broadcast(g, &out_shape, a, |g, x| g * x)),
            ),
            BinaryKind::Div => (
                a.requires_grad()
                    .then(|| times_broadcast(g, &out_shape, b, |g, y| g / y)),
                b.requires_grad().then(|| {
                    // d(x/y)/dy = -(x/y)/y = -out/y
                    let out = output.data();
                    let mut r = times_broadcast(g, &out_shape, b, |g, y| -g / y);
                    for (r, o) in r.iter_mut().zip(out) {
                        *r *= o;
                    }
                    r
                }),
            ),
        };
        vec![
            ga.filter(|_| a.requires_grad())
                .map(|v| Tensor::from_vec(a.shape(), sum_to_shape(&v, &out_shape, &a.shape()))),
            gb.filter(|_| b.requires_grad())
                .map(|v| Tensor::from_vec(b.shape(), sum_to_shape(&v, &out_shape, &b.shape()))),
        ]
    }
}

/// `f(g[i], other broadcast to out[i])` over the output shape.
fn times_broadcast(
    g: &[f32],
    out: &Shape,
    other: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync + Send,
) -> Vec<f32> {
    if other.shape() == *out {
        return zip_map(current_parallelism(), g, other.data(), f);
    }
    let mut r = vec![0.0; out.numel()];
    let od = other.data();
    for_each_broadcast(
        out,
        [0; MAX_RANK],
        broadcast_strides(&other.shape(), out),
        |i, _, io| r[i] = f(g[i], od[io]),
    );
    r
}

impl Tensor {
    /// `self + other`, broadcasting (numpy rules).
    #[track_caller]
    pub fn add(&self, other: &Tensor) -> Tensor {
        binary(BinaryKind::Add, self, other)
    }

    /// `self - other`, broadcasting.
    #[track_caller]
    pub fn sub(&self, other: &Tensor) -> Tensor {
        binary(BinaryKind::Sub, self, other)
    }

    /// `self * other` elementwise, broadcasting.
    #[track_caller]
    pub fn mul(&self, other: &Tensor) -> Tensor {
        binary(BinaryKind::Mul, self, other)
    }

    /// `self / other` elementwise, broadcasting.
    #[track_caller]
    pub fn div(&self, other: &Tensor) -> Tensor {
        binary(BinaryKind::Div, self, other)
    }
}
