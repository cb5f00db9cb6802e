//! Causal ops over (batch, time, channels): the depthwise 1-D convolution
//! of Mamba, and the causal window of QRNN (the last `k` time steps side by
//! side), with their backward.
use crate::autograd::Backward;
use crate::kernels::conv::{causal_conv1d_backward, causal_conv1d_forward};
use crate::kernels::elementwise::wide;
use crate::parallel::{current_parallelism, filled_by_chunks};
use crate::tensor::Tensor;

/// Causal depthwise convolution: `x` (batch, time, C), `weight` (C, 1, K)
/// and `bias` (C) as PyTorch's `Conv1d(C, C, K, groups=C, padding=K-1)`
/// applied to `x` transposed to (batch, C, time), truncated to the first
/// `time` outputs: `y[b,t,c] = bias[c] + sum_k weight[c,0,k] x[b,t+k-K+1,c]`.
///
/// # Panics
/// When the shapes do not fit.
#[track_caller]
pub fn causal_depthwise_conv1d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    assert_eq!(
        x.rank(),
        3,
        "causal_depthwise_conv1d: x must be (batch, time, channels), got {:?}",
        x.shape()
    );
    let (batch, time, channels) = (x.dim(0), x.dim(1), x.dim(2));
    assert!(
        weight.rank() == 3 && weight.dim(0) == channels && weight.dim(1) == 1,
        "causal_depthwise_conv1d: weight must be ({channels}, 1, K), got {:?}",
        weight.shape()
    );
    let kernel = weight.dim(2);
    assert!(kernel > 0, "causal_depthwise_conv1d: empty kernel");
    if let Some(bias) = bias {
        assert_eq!(
            bias.dims(),
            [channels],
            "causal_depthwise_conv1d: bias must be ({channels})"
        );
    }
    let mut y = vec![0.0; x.numel()];
    causal_conv1d_forward(
        current_parallelism(),
        &mut y,
        x.data(),
        weight.data(),
        bias.map(Tensor::data),
        (batch, time, channels, kernel),
    );
    match bias {
        Some(bias) => Tensor::from_op(x.shape(), y, &[x, weight, bias], CausalConvBackward),
        None => Tensor::from_op(x.shape(), y, &[x, weight], CausalConvBackward),
    }
}

struct CausalConvBackward;

impl Backward for CausalConvBackward {
    fn name(&self) -> &'static str {
        "causal_depthwise_conv1d"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let (x, weight) = (&inputs[0], &inputs[1]);
        let dims = (x.dim(0), x.dim(1), x.dim(2), weight.dim(2));
        let (dx, dw, db) = causal_conv1d_backward(
            current_parallelism(),
            grad.data(),
            x.data(),
            weight.data(),
            dims,
        );
        let mut grads = vec![
            Some(Tensor::from_vec(x.shape(), dx)),
            Some(Tensor::from_vec(weight.shape(), dw)),
        ];
        if let Some(bias) = inputs.get(2) {
            grads.push(Some(Tensor::from_vec(bias.shape(), db)));
        }
        grads
    }
}

/// The causal window of QRNN: `x` (batch, time, D) to (batch, time,
/// window D) whose row t is `[x_{t-window+1}, ..., x_t]` (oldest first,
/// zeros before `t = 0`), as the reference's padded concatenation.
///
/// # Panics
/// When `x` is not rank 3 or `window` is 0.
#[track_caller]
pub fn causal_window(x: &Tensor, window: usize) -> Tensor {
    assert_eq!(
        x.rank(),
        3,
        "causal_window: x must be (batch, time, features), got {:?}",
        x.shape()
    );
    assert!(window > 0, "causal_window: window must be positive");
    let (batch, time, features) = (x.dim(0), x.dim(1), x.dim(2));
    let wide = window * features;
    let data = x.data();
    // One batch entry per piece, in parallel when allowed: copies only,
    // straight into the new buffer (zeros where the window reaches before
    // the first step).
    let fill = |b, out: &mut [std::mem::MaybeUninit<f32>]| {
        let x = &data[b * time * features..(b + 1) * time * features];
        for (t, row) in out.chunks_exact_mut(wide.max(1)).enumerate() {
            for (i, part) in row.chunks_exact_mut(features.max(1)).enumerate() {
                match (t + i).checked_sub(window - 1) {
                    Some(src) => {
                        for (o, &v) in part.iter_mut().zip(&x[src * features..]) {
                            o.write(v);
                        }
                    }
                    None => {
                        for o in part {
                            o.write(0.0);
                        }
                    }
                }
            }
        }
    };
    #[allow(unsafe_code)]
    // SAFETY: each piece is `time` rows of `window` parts of `features`,
    // and every part is copied or zeroed whole.
    let out = unsafe {
        filled_by_chunks(
            current_parallelism(),
            batch * time * wide,
            time * wide,
            fill,
        )
    };
    Tensor::from_op(
        [batch, time, wide],
        out,
        &[x],
        CausalWindowBackward { window },
    )
}

struct CausalWindowBackward {
    window: usize,
}

impl Backward for CausalWindowBackward {
    fn name(&self) -> &'static str {
        "causal_window"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let x = &inputs[0];
        let (time, features) = (x.dim(1), x.dim(2));
        let window = self.window;
        let wide = window * features;
        let g = grad.data();
        // One batch entry per piece, in parallel when allowed. Row `s` of
        // `dx` sums part `i` of the gradient's row `s + window - 1 - i` for
        // each `i` that lands inside the sequence, from zero, in ascending
        // row order (the order of a loop over the gradient's rows adding
        // each part where it belongs).
        let fill = |b, dx: &mut [std::mem::MaybeUninit<f32>]| {
            let g = &g[b * time * wide..(b + 1) * time * wide];
            wide!(|| {
                let mut sums = vec![0.0f32; features];
                for (s, out) in dx.chunks_exact_mut(features.max(1)).enumerate() {
                    sums.fill(0.0);
                    for i in (0..window).rev() {
                        let t = s + window - 1 - i;
                        if t < time {
                            let part = &g[t * wide + i * features..][..features];
                            for (sum, &v) in sums.iter_mut().zip(part) {
                                *sum += v;
                            }
                        }
                    }
                    for (o, &sum) in out.iter_mut().zip(&sums) {
                        o.write(sum);
                    }
                }
            });
        };
        #[allow(unsafe_code)]
        // SAFETY: each piece (one batch entry, `time * features`) is written
        // row by row, each row whole.
        let dx =
            unsafe { filled_by_chunks(current_parallelism(), x.numel(), time * features, fill) };
        vec![Some(Tensor::from_vec(x.shape(), dx))]
    }
}
