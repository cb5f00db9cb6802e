//! Differentiable linear recurrences: the generic scan
//! `h_t = a_t * h_{t-1} + b_t`, QRNN fo-pooling, the S4D layer's diagonal
//! state space, and Mamba's selective scan. Kernels in
//! [`crate::kernels::scan`]; every backward is itself a (reverse) scan run
//! inside one op, never a per-time-step graph.
use crate::autograd::Backward;
use crate::kernels::elementwise::wide;
use crate::kernels::scan::{
    Direction, FoPoolForward, SelectiveInputs, fo_pool_backward, fo_pool_forward,
    fo_pool_forward_of, linear_scan as scan_kernel, s4d_backward, s4d_forward,
    selective_scan_backward, selective_scan_forward,
};
use crate::ops::index::{CausalPairEmbeddingBackward, causal_pair_embedding_lookup, pair_lookup};
use crate::ops::matmul::{LinearBackward, linear_forward};
use crate::parallel::current_parallelism;
use crate::shape::Shape;
use crate::tensor::{IndexTensor, Tensor};

/// (batch, time, channels) of a rank-3 tensor.
#[track_caller]
fn dims3(t: &Tensor, op: &str, what: &str) -> (usize, usize, usize) {
    assert_eq!(
        t.rank(),
        3,
        "{op}: {what} must be (batch, time, channels), got {:?}",
        t.shape()
    );
    (t.dim(0), t.dim(1), t.dim(2))
}

#[track_caller]
fn expect_dims(t: &Tensor, dims: &[usize], op: &str, what: &str) {
    assert_eq!(
        t.dims(),
        dims,
        "{op}: {what} must have shape {dims:?}, got {:?}",
        t.shape()
    );
}

/// The linear recurrence `h_t = a_t * h_{t-1} + b_t` over (batch, time,
/// channels), elementwise per channel, with `h_{-1}` = `initial`
/// (batch, channels) or zero. Returns every `h_t` (batch, time, channels).
///
/// Parallel over batch entries, and across time in fixed chunks when the
/// batch is small; the same bits whatever the thread count.
///
/// # Panics
/// When the shapes do not fit.
#[track_caller]
pub fn linear_scan(a: &Tensor, b: &Tensor, initial: Option<&Tensor>) -> Tensor {
    let dims = dims3(a, "linear_scan", "a");
    expect_dims(b, a.dims(), "linear_scan", "b");
    if let Some(init) = initial {
        expect_dims(init, &[dims.0, dims.2], "linear_scan", "initial state");
    }
    let mut out = vec![0.0; a.numel()];
    scan_kernel(
        current_parallelism(),
        &mut out,
        a.data(),
        b.data(),
        initial.map(Tensor::data),
        dims,
        Direction::Forward,
    );
    match initial {
        Some(init) => Tensor::from_op(a.shape(), out, &[a, b, init], LinearScanBackward),
        None => Tensor::from_op(a.shape(), out, &[a, b], LinearScanBackward),
    }
}

struct LinearScanBackward;

impl Backward for LinearScanBackward {
    fn name(&self) -> &'static str {
        "linear_scan"
    }

    fn backward(&self, inputs: &[Tensor], output: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let (batch, time, channels) = dims3(a, "linear_scan", "a");
        let par = current_parallelism();
        let seq = time * channels;
        // g_t = dL/dh_t + a_{t+1} g_{t+1}: a reverse scan whose coefficient at
        // t is a_{t+1} (and anything at T-1, where the carried state is zero).
        let mut shifted = vec![0.0f32; a.numel()];
        for bi in 0..batch {
            let base = bi * seq;
            if time > 1 {
                shifted[base..base + seq - channels]
                    .copy_from_slice(&a.data()[base + channels..base + seq]);
            }
        }
        let mut g = vec![0.0f32; a.numel()];
        scan_kernel(
            par,
            &mut g,
            &shifted,
            grad.data(),
            None,
            (batch, time, channels),
            Direction::Reverse,
        );
        let initial = inputs.get(2);
        let h = output.data();
        let ga = a.requires_grad().then(|| {
            let mut ga = vec![0.0f32; a.numel()];
            for bi in 0..batch {
                for t in 0..time {
                    let row = bi * seq + t * channels;
                    for c in 0..channels {
                        let prev = if t > 0 {
                            h[row - channels + c]
                        } else {
                            initial.map_or(0.0, |i| i.data()[bi * channels + c])
                        };
                        ga[row + c] = g[row + c] * prev;
                    }
                }
            }
            Tensor::from_vec(a.shape(), ga)
        });
        let gi = initial.filter(|i| i.requires_grad()).map(|init| {
            let mut gi = vec![0.0f32; init.numel()];
            if time > 0 {
                for bi in 0..batch {
                    for c in 0..channels {
                        gi[bi * channels + c] = a.data()[bi * seq + c] * g[bi * seq + c];
                    }
                }
            }
            Tensor::from_vec(init.shape(), gi)
        });
        let gb = b.requires_grad().then(|| Tensor::from_vec(b.shape(), g));
        let mut grads = vec![ga, gb];
        if initial.is_some() {
            grads.push(gi);
        }
        grads
    }
}

/// QRNN fo-pooling (Bradbury et al. 2016): `gates` (batch, time, 3 hidden)
/// holds the pre-activations `[z f o]`; with `z = tanh`, `f, o = sigmoid`,
/// `c_t = f_t c_{t-1} + (1 - f_t) z_t` (`c_{-1} = 0`), returns `h_t = o_t c_t`
/// (batch, time, hidden). Activations, scan and output gate in one op.
///
/// # Panics
/// When the last dimension is not a multiple of 3.
#[track_caller]
pub fn qrnn_fo_pool(gates: &Tensor) -> Tensor {
    let (batch, time, hidden) = fo_pool_dims(gates.shape());
    let forward = fo_pool_forward(
        current_parallelism(),
        gates.data().to_vec(),
        (batch, time, hidden),
        Tensor::records_op(&[gates]),
    );
    Tensor::from_op(
        [batch, time, hidden],
        forward.h,
        &[gates],
        FoPoolBackward {
            activations: forward.activations,
        },
    )
}

/// [`qrnn_fo_pool`] of `input.linear(weight, bias)` as one op: the gates
/// are activated in the buffer the projection wrote, and neither they nor
/// a second buffer for their activations outlive the forward (QRNN's
/// second and later layers, over the causal window of the layer below).
///
/// # Panics
/// When the shapes do not fit.
#[track_caller]
pub fn qrnn_fo_pool_of_linear(input: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let (shape, gates) = linear_forward(input, weight, bias);
    match bias {
        Some(bias) => fo_pool_after(shape, gates, &[input, weight, bias], LinearBackward),
        None => fo_pool_after(shape, gates, &[input, weight], LinearBackward),
    }
}

/// [`qrnn_fo_pool`] of [`causal_pair_embedding`]`(previous, current,
/// tokens)` as one op, as [`qrnn_fo_pool_of_linear`] (QRNN's first layer,
/// whose window projection is a lookup in two per-token tables).
///
/// # Panics
/// When the shapes do not fit or a token is out of range.
///
/// [`causal_pair_embedding`]: crate::ops::index::causal_pair_embedding
#[track_caller]
pub fn qrnn_fo_pool_of_pair_embedding(
    previous: &Tensor,
    current: &Tensor,
    tokens: &IndexTensor,
) -> Tensor {
    let (shape, lookup) = causal_pair_embedding_lookup(previous, current, tokens);
    let dims = fo_pool_dims(shape);
    let time = dims.1;
    let tables = (previous.data(), current.data());
    // Each batch entry's gates are looked up just before it is pooled.
    let forward = fo_pool_forward_of(
        current_parallelism(),
        dims,
        Tensor::records_op(&[previous, current]),
        |b, gates| {
            let positions = &lookup.positions()[b * time..(b + 1) * time];
            wide!(pair_lookup(gates, positions, tables));
        },
    );
    pooled(shape, forward, &[previous, current], lookup)
}

/// (batch, time, hidden) of fo-pooling over gates of `shape` (batch, time,
/// 3 hidden).
#[track_caller]
fn fo_pool_dims(shape: Shape) -> (usize, usize, usize) {
    assert_eq!(
        shape.rank(),
        3,
        "qrnn_fo_pool: gates must be (batch, time, 3 hidden), got {shape:?}"
    );
    assert_eq!(
        shape.dim(2) % 3,
        0,
        "qrnn_fo_pool: gates must end in 3 * hidden features, got {shape:?}"
    );
    (shape.dim(0), shape.dim(1), shape.dim(2) / 3)
}

/// Fo-pooling over `gates` of `shape`, computed by an op over `inputs`
/// whose backward is `producer`, recorded as one op.
#[track_caller]
fn fo_pool_after<P: Backward + OutputUnused>(
    shape: Shape,
    gates: Vec<f32>,
    inputs: &[&Tensor],
    producer: P,
) -> Tensor {
    let forward = fo_pool_forward(
        current_parallelism(),
        gates,
        fo_pool_dims(shape),
        Tensor::records_op(inputs),
    );
    pooled(shape, forward, inputs, producer)
}

/// The output of fo-pooling over gates of `shape` that an op over `inputs`
/// with backward `producer` made, recorded as one op.
fn pooled<P: Backward + OutputUnused>(
    shape: Shape,
    forward: FoPoolForward,
    inputs: &[&Tensor],
    producer: P,
) -> Tensor {
    let (batch, time, hidden) = fo_pool_dims(shape);
    Tensor::from_op(
        [batch, time, hidden],
        forward.h,
        inputs,
        FoPoolAfterBackward {
            producer,
            gates_shape: shape,
            pool: FoPoolBackward {
                activations: forward.activations,
            },
        },
    )
}

/// A backward that never reads the output of its op, so that it can run
/// under a fused op whose output is another tensor.
pub(crate) trait OutputUnused {}

impl OutputUnused for LinearBackward {}
impl OutputUnused for CausalPairEmbeddingBackward {}

/// Backward of [`fo_pool_after`]: fo-pooling's, then its producer's on the
/// gates' gradient.
struct FoPoolAfterBackward<P> {
    producer: P,
    gates_shape: Shape,
    pool: FoPoolBackward,
}

impl<P: Backward + OutputUnused> Backward for FoPoolAfterBackward<P> {
    fn name(&self) -> &'static str {
        "qrnn_fo_pool"
    }

    fn backward(&self, inputs: &[Tensor], output: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let grad_gates = Tensor::from_vec(self.gates_shape, self.pool.gates_gradient(output, grad));
        self.producer.backward(inputs, output, &grad_gates)
    }
}

/// What the backward of [`qrnn_fo_pool`] keeps from its forward: the
/// activated gates.
struct FoPoolBackward {
    activations: Vec<f32>,
}

impl FoPoolBackward {
    /// The gradient with respect to the gates, given the `output` (batch,
    /// time, hidden) and its gradient.
    fn gates_gradient(&self, output: &Tensor, grad: &Tensor) -> Vec<f32> {
        let (batch, time, hidden) = dims3(output, "qrnn_fo_pool", "output");
        fo_pool_backward(
            current_parallelism(),
            &self.activations,
            grad.data(),
            (batch, time, hidden),
        )
    }
}

impl Backward for FoPoolBackward {
    fn name(&self) -> &'static str {
        "qrnn_fo_pool"
    }

    fn backward(&self, inputs: &[Tensor], output: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let grad_gates = self.gates_gradient(output, grad);
        vec![Some(Tensor::from_vec(inputs[0].shape(), grad_gates))]
    }
}

/// The discretized S4D-Real coefficients (zero-order hold) of one layer.
struct S4dCoefficients {
    dt: Vec<f32>,
    a: Vec<f32>,
    da: Vec<f32>,
    db: Vec<f32>,
}

fn s4d_coefficients(log_dt: &[f32], a_log: &[f32], b: &[f32], states: usize) -> S4dCoefficients {
    let dt: Vec<f32> = log_dt.iter().map(|v| v.exp()).collect();
    let a: Vec<f32> = a_log.iter().map(|v| -v.exp()).collect();
    let da: Vec<f32> = a
        .iter()
        .enumerate()
        .map(|(i, &a)| (dt[i / states] * a).exp())
        .collect();
    let db: Vec<f32> = da
        .iter()
        .zip(&a)
        .zip(b)
        .map(|((&da, &a), &b)| (da - 1.0) / a * b)
        .collect();
    S4dCoefficients { dt, a, da, db }
}

/// The S4D-Real state space of Gu et al. (diagonal, zero-order hold) over
/// `u` (batch, time, channels H), with parameters as in the reference:
/// `log_dt` (H), `a_log`, `b`, `c` (H, N), `d` (H). Per channel h and state n:
/// `dt = exp(log_dt[h])`, `A = -exp(a_log[h,n])`, `dA = exp(dt A)`,
/// `dB = (dA - 1) / A * b[h,n]`, `s_t = dA s_{t-1} + dB u_t`, and the output
/// `y_t[h] = sum_n c[h,n] s_t[h,n] + d[h] u_t[h]` (batch, time, H), computed
/// without materializing the (batch, time, H, N) states.
///
/// # Panics
/// When the shapes do not fit.
#[track_caller]
pub fn s4d_scan(
    u: &Tensor,
    log_dt: &Tensor,
    a_log: &Tensor,
    b: &Tensor,
    c: &Tensor,
    d: &Tensor,
) -> Tensor {
    let (batch, time, channels) = dims3(u, "s4d_scan", "u");
    assert_eq!(a_log.rank(), 2, "s4d_scan: A_log must be (H, N)");
    let states = a_log.dim(1);
    expect_dims(log_dt, &[channels], "s4d_scan", "log_dt");
    for (t, what) in [(a_log, "A_log"), (b, "B"), (c, "C")] {
        expect_dims(t, &[channels, states], "s4d_scan", what);
    }
    expect_dims(d, &[channels], "s4d_scan", "D");
    let coef = s4d_coefficients(log_dt.data(), a_log.data(), b.data(), states);
    let y = s4d_forward(
        current_parallelism(),
        u.data(),
        &coef.da,
        &coef.db,
        c.data(),
        d.data(),
        (batch, time, channels, states),
    );
    Tensor::from_op(
        u.shape(),
        y,
        &[u, log_dt, a_log, b, c, d],
        S4dBackward { coef },
    )
}

struct S4dBackward {
    coef: S4dCoefficients,
}

impl Backward for S4dBackward {
    fn name(&self) -> &'static str {
        "s4d_scan"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let [u, log_dt, a_log, b, c, d] = inputs else {
            unreachable!("s4d_scan has six inputs")
        };
        let (batch, time, channels) = dims3(u, "s4d_scan", "u");
        let states = a_log.dim(1);
        let S4dCoefficients { dt, a, da, db } = &self.coef;
        let g = s4d_backward(
            current_parallelism(),
            grad.data(),
            u.data(),
            da,
            db,
            c.data(),
            d.data(),
            (batch, time, channels, states),
        );
        // through dB = (dA - 1) / A * B and dA = exp(dt A)
        let mut g_b = vec![0.0f32; channels * states];
        let mut g_a_log = vec![0.0f32; channels * states];
        let mut g_log_dt = vec![0.0f32; channels];
        for h in 0..channels {
            let mut g_dt = 0.0f32;
            for n in 0..states {
                let i = h * states + n;
                let (ai, dai, bi) = (a[i], da[i], b.data()[i]);
                let factor = (dai - 1.0) / ai;
                g_b[i] = g.db[i] * factor;
                let g_da = g.da[i] + g.db[i] * bi / ai;
                let g_a = g_da * dai * dt[h] - g.db[i] * bi * factor / ai;
                g_dt += g_da * dai * ai;
                g_a_log[i] = g_a * ai;
            }
            g_log_dt[h] = g_dt * dt[h];
        }
        vec![
            Some(Tensor::from_vec(u.shape(), g.u)),
            Some(Tensor::from_vec(log_dt.shape(), g_log_dt)),
            Some(Tensor::from_vec(a_log.shape(), g_a_log)),
            Some(Tensor::from_vec(b.shape(), g_b)),
            Some(Tensor::from_vec(c.shape(), g.c)),
            Some(Tensor::from_vec(d.shape(), g.d)),
        ]
    }
}

/// Mamba's selective scan (Gu & Dao 2023), fused: with `x`, `delta`
/// (batch, time, D), `a` (D, N), `b`, `c` (batch, time, N) and `d` (D),
/// per channel d and state n
/// `h_t = exp(delta_t[d] a[d,n]) h_{t-1} + delta_t[d] b_t[n] x_t[d]` and
/// `y_t[d] = sum_n c_t[n] h_t[d,n] + d[d] x_t[d]` (batch, time, D). When
/// `delta_softplus`, `delta` is replaced by `softplus(delta)` first (as
/// PyTorch's `F.softplus`). The states are never stored for the whole
/// sequence batch: the backward recomputes them one (batch entry, channel
/// block) at a time.
///
/// # Panics
/// When the shapes do not fit.
#[track_caller]
pub fn selective_scan(
    x: &Tensor,
    delta: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    d: &Tensor,
    delta_softplus: bool,
) -> Tensor {
    let (batch, time, channels) = dims3(x, "selective_scan", "x");
    assert_eq!(a.rank(), 2, "selective_scan: A must be (D, N)");
    let states = a.dim(1);
    expect_dims(delta, x.dims(), "selective_scan", "delta");
    expect_dims(a, &[channels, states], "selective_scan", "A");
    expect_dims(b, &[batch, time, states], "selective_scan", "B");
    expect_dims(c, &[batch, time, states], "selective_scan", "C");
    expect_dims(d, &[channels], "selective_scan", "D");
    let mut y = vec![0.0; x.numel()];
    selective_scan_forward(
        current_parallelism(),
        &mut y,
        selective_inputs(x, delta, a, b, c, d, delta_softplus),
        (batch, time, channels, states),
    );
    Tensor::from_op(
        x.shape(),
        y,
        &[x, delta, a, b, c, d],
        SelectiveScanBackward { delta_softplus },
    )
}

fn selective_inputs<'a>(
    x: &'a Tensor,
    delta: &'a Tensor,
    a: &'a Tensor,
    b: &'a Tensor,
    c: &'a Tensor,
    d: &'a Tensor,
    softplus: bool,
) -> SelectiveInputs<'a> {
    SelectiveInputs {
        x: x.data(),
        delta: delta.data(),
        a: a.data(),
        b: b.data(),
        c: c.data(),
        d: d.data(),
        softplus,
    }
}

struct SelectiveScanBackward {
    delta_softplus: bool,
}

impl Backward for SelectiveScanBackward {
    fn name(&self) -> &'static str {
        "selective_scan"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let [x, delta, a, b, c, d] = inputs else {
            unreachable!("selective_scan has six inputs")
        };
        let (batch, time, channels) = dims3(x, "selective_scan", "x");
        let states = a.dim(1);
        let g = selective_scan_backward(
            current_parallelism(),
            grad.data(),
            selective_inputs(x, delta, a, b, c, d, self.delta_softplus),
            (batch, time, channels, states),
        );
        vec![
            Some(Tensor::from_vec(x.shape(), g.x)),
            Some(Tensor::from_vec(delta.shape(), g.delta)),
            Some(Tensor::from_vec(a.shape(), g.a)),
            Some(Tensor::from_vec(b.shape(), g.b)),
            Some(Tensor::from_vec(c.shape(), g.c)),
            Some(Tensor::from_vec(d.shape(), g.d)),
        ]
    }
}
