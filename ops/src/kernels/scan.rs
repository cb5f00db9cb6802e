//! Linear recurrences over time on (batch, time, channels) slices: the
//! generic scan `h_t = a_t * h_{t-1} + b_t`, and the fused scans that QRNN
//! (fo-pooling), S4D (diagonal state space) and Mamba (selective scan) stand
//! on, each with its backward.
//!
//! Parallelism and determinism: every (batch, channel) sequence is
//! independent, so the work is split into units of one batch entry and a
//! fixed block of channels ([`CHANNEL_BLOCK`]); each output element is
//! computed by the same sequence of operations whatever thread runs it.
//! Parameter gradients (summed over the batch) are reduced from per-unit
//! partial sums added in unit order. The generic scan, when the batch is
//! small ([`uses_time_chunks`]), is also split across time in chunks of
//! [`TIME_CHUNK`] steps: a local scan per chunk, a sequential carry
//! propagation across chunks, then a fix-up pass. Whether it is chunked
//! depends on the shape only, never on the thread count.
use faer::Par;
use rayon::prelude::*;

use crate::kernels::vector_state::clear_upper_vector_state;
use crate::parallel::is_parallel;

/// Channels per unit of work in the fused scans.
pub const CHANNEL_BLOCK: usize = 32;

/// Time steps per chunk of the chunked generic scan.
pub const TIME_CHUNK: usize = 64;

/// Below this batch size, long generic scans are chunked across time.
pub const FEW_BATCHES: usize = 4;

/// Whether [`linear_scan`] splits a (batch, time) problem into time chunks:
/// a function of the shape only, so results never depend on the thread count.
pub fn uses_time_chunks(batch: usize, time: usize) -> bool {
    batch < FEW_BATCHES && time > TIME_CHUNK
}

/// Direction of a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `h_t = a_t * h_{t-1} + b_t`, from `t = 0`; `h_{-1}` is the initial state.
    Forward,
    /// `h_t = a_t * h_{t+1} + b_t`, from `t = T - 1`; `h_T` is the initial state
    /// (the backward of a forward scan).
    Reverse,
}

/// `f(unit)` for `units` units, in parallel when `par` allows; the results
/// in unit order.
pub(crate) fn map_units<R: Send>(
    par: Par,
    units: usize,
    f: impl Fn(usize) -> R + Sync + Send,
) -> Vec<R> {
    let f = |unit| {
        clear_upper_vector_state();
        f(unit)
    };
    if is_parallel(par) && units > 1 {
        (0..units).into_par_iter().map(f).collect()
    } else {
        (0..units).map(f).collect()
    }
}

/// Runs `f(index, item)` over `items`, in parallel when `par` allows.
pub(crate) fn for_each_item<T: Send>(par: Par, items: Vec<T>, f: impl Fn(T) + Sync + Send) {
    let f = |item| {
        clear_upper_vector_state();
        f(item)
    };
    if is_parallel(par) && items.len() > 1 {
        items.into_par_iter().for_each(f);
    } else {
        items.into_iter().for_each(f);
    }
}

/// The channel blocks of `channels` channels: `(start, end)` per block.
pub(crate) fn channel_blocks(channels: usize) -> Vec<(usize, usize)> {
    (0..channels.div_ceil(CHANNEL_BLOCK).max(1))
        .map(|i| (i * CHANNEL_BLOCK, ((i + 1) * CHANNEL_BLOCK).min(channels)))
        .collect()
}

/// `dst = scan(a, b)` over (batch, time, channels), all row-major: in
/// [`Direction::Forward`] `h_t = a_t * h_{t-1} + b_t` with `h_{-1}` the
/// `initial` state (batch, channels) or zero.
///
/// # Panics
/// When a slice's length does not match the dimensions.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn linear_scan(
    par: Par,
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    initial: Option<&[f32]>,
    (batch, time, channels): (usize, usize, usize),
    direction: Direction,
) {
    let n = batch * time * channels;
    assert_eq!(dst.len(), n, "linear_scan: destination length");
    assert_eq!(a.len(), n, "linear_scan: coefficient length");
    assert_eq!(b.len(), n, "linear_scan: input length");
    if let Some(init) = initial {
        assert_eq!(init.len(), batch * channels, "linear_scan: initial state");
    }
    if n == 0 {
        return;
    }
    let seq = time * channels;
    let time_of = move |step: usize| match direction {
        Direction::Forward => step,
        Direction::Reverse => time - 1 - step,
    };
    // One piece: batch entry `bi`, scan steps `steps`, whose times start at
    // `t_lo` in memory; `out` holds times t_lo.. of that batch entry.
    // Returns the product of the coefficients over the piece.
    let local_scan = |bi: usize,
                      steps: std::ops::Range<usize>,
                      t_lo: usize,
                      out: &mut [f32],
                      start: Option<&[f32]>,
                      want_product: bool| {
        let mut h = match start {
            Some(s) => s.to_vec(),
            None => vec![0.0; channels],
        };
        let mut product = if want_product {
            vec![1.0; channels]
        } else {
            Vec::new()
        };
        for step in steps {
            let t = time_of(step);
            let src = bi * seq + t * channels;
            let (a_t, b_t) = (&a[src..src + channels], &b[src..src + channels]);
            let o = &mut out[(t - t_lo) * channels..(t - t_lo + 1) * channels];
            for c in 0..channels {
                h[c] = a_t[c] * h[c] + b_t[c];
                o[c] = h[c];
            }
            if want_product {
                for (p, &x) in product.iter_mut().zip(a_t) {
                    *p *= x;
                }
            }
        }
        product
    };
    let initial_of = |bi: usize| initial.map(|s| &s[bi * channels..(bi + 1) * channels]);

    if !uses_time_chunks(batch, time) {
        let pieces: Vec<(usize, &mut [f32])> = dst.chunks_mut(seq).enumerate().collect();
        for_each_item(par, pieces, |(bi, out)| {
            local_scan(bi, 0..time, 0, out, initial_of(bi), false);
        });
        return;
    }

    // Chunked: pieces of TIME_CHUNK scan steps. Chunk k covers steps
    // [k L, min((k+1) L, T)); its times in memory are [t_lo, t_hi).
    let chunks = time.div_ceil(TIME_CHUNK);
    let step_range = |k: usize| k * TIME_CHUNK..((k + 1) * TIME_CHUNK).min(time);
    let time_range = |k: usize| {
        let s = step_range(k);
        match direction {
            Direction::Forward => (s.start, s.end),
            Direction::Reverse => (time - s.end, time - s.start),
        }
    };
    // (chunk, t_lo, t_hi) in memory order
    let mut layout: Vec<(usize, usize, usize)> = (0..chunks)
        .map(|k| {
            let (lo, hi) = time_range(k);
            (k, lo, hi)
        })
        .collect();
    if direction == Direction::Reverse {
        layout.reverse();
    }
    // 1. local scans, chunk 0 from the initial state, the others from zero.
    let products: Vec<(usize, usize, Vec<f32>)> = {
        let pieces = split_time_pieces(dst, seq, channels, &layout);
        let run = |(bi, k, out): (usize, usize, &mut [f32])| {
            let start = if k == 0 { initial_of(bi) } else { None };
            let product = local_scan(bi, step_range(k), time_range(k).0, out, start, k > 0);
            (bi, k, product)
        };
        if is_parallel(par) {
            pieces.into_par_iter().map(run).collect()
        } else {
            pieces.into_iter().map(run).collect()
        }
    };
    let mut product_of = vec![Vec::new(); batch * chunks];
    for (bi, k, p) in products {
        product_of[bi * chunks + k] = p;
    }
    // 2. carries: the state entering chunk k, sequentially per batch entry.
    let mut carries = vec![Vec::new(); batch * chunks];
    for bi in 0..batch {
        let end_of = |k: usize| {
            let t = time_of(step_range(k).end - 1);
            bi * seq + t * channels
        };
        let mut carry = dst[end_of(0)..end_of(0) + channels].to_vec();
        for k in 1..chunks {
            carries[bi * chunks + k] = carry.clone();
            let end = end_of(k);
            let p = &product_of[bi * chunks + k];
            for c in 0..channels {
                carry[c] = p[c] * carry[c] + dst[end + c];
            }
        }
    }
    // 3. fix-up: h_t += (a_{start} ... a_t) * carry.
    let pieces = split_time_pieces(dst, seq, channels, &layout);
    for_each_item(par, pieces, |(bi, k, out)| {
        if k == 0 {
            return;
        }
        let carry = &carries[bi * chunks + k];
        let t_lo = time_range(k).0;
        let mut product = vec![1.0f32; channels];
        for step in step_range(k) {
            let t = time_of(step);
            let src = bi * seq + t * channels;
            let o = &mut out[(t - t_lo) * channels..(t - t_lo + 1) * channels];
            for c in 0..channels {
                product[c] *= a[src + c];
                o[c] += product[c] * carry[c];
            }
        }
    });
}

/// `dst` cut into one piece per (batch entry, time chunk): `(batch, chunk,
/// piece)`, the chunks of each entry laid out as in `layout`
/// (`(chunk, t_lo, t_hi)` in memory order).
fn split_time_pieces<'a>(
    dst: &'a mut [f32],
    seq: usize,
    channels: usize,
    layout: &[(usize, usize, usize)],
) -> Vec<(usize, usize, &'a mut [f32])> {
    let mut pieces = Vec::with_capacity(dst.len() / seq.max(1) * layout.len());
    for (bi, mut rest) in dst.chunks_mut(seq).enumerate() {
        for &(k, t_lo, t_hi) in layout {
            let (piece, tail) = rest.split_at_mut((t_hi - t_lo) * channels);
            pieces.push((bi, k, piece));
            rest = tail;
        }
    }
    pieces
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// QRNN fo-pooling forward over (batch, time, hidden): `gates` holds the
/// pre-activations `[z f o]` (batch, time, 3 hidden); with `z = tanh`,
/// `f, o = sigmoid`, `c_t = f_t c_{t-1} + (1 - f_t) z_t` (`c_{-1} = 0`) and
/// `h_t = o_t c_t`. Writes `h` and the cell states `c`.
///
/// # Panics
/// When a slice's length does not match the dimensions.
#[track_caller]
pub fn fo_pool_forward(
    par: Par,
    h: &mut [f32],
    c: &mut [f32],
    gates: &[f32],
    (batch, time, hidden): (usize, usize, usize),
) {
    assert_eq!(h.len(), batch * time * hidden, "fo_pool: output length");
    assert_eq!(c.len(), batch * time * hidden, "fo_pool: cell length");
    assert_eq!(
        gates.len(),
        batch * time * 3 * hidden,
        "fo_pool: gates length"
    );
    let seq = time * hidden;
    if seq == 0 {
        return;
    }
    type Piece<'a> = (usize, (&'a mut [f32], &'a mut [f32]));
    let pieces: Vec<Piece<'_>> = h
        .chunks_mut(seq)
        .zip(c.chunks_mut(seq))
        .enumerate()
        .collect();
    for_each_item(par, pieces, |(bi, (h, c))| {
        let mut state = vec![0.0f32; hidden];
        for t in 0..time {
            let g = &gates[(bi * time + t) * 3 * hidden..(bi * time + t + 1) * 3 * hidden];
            let (z, rest) = g.split_at(hidden);
            let (f, o) = rest.split_at(hidden);
            let row = t * hidden..(t + 1) * hidden;
            let (h_t, c_t) = (&mut h[row.clone()], &mut c[row]);
            for j in 0..hidden {
                let (zj, fj, oj) = (z[j].tanh(), sigmoid(f[j]), sigmoid(o[j]));
                state[j] = fj * state[j] + (1.0 - fj) * zj;
                c_t[j] = state[j];
                h_t[j] = oj * state[j];
            }
        }
    });
}

/// Backward of [`fo_pool_forward`]: the gradient with respect to `gates`
/// (pre-activations), given `gates`, the cell states `c` and the gradient
/// `grad_h` of the output.
///
/// # Panics
/// When a slice's length does not match the dimensions.
#[track_caller]
pub fn fo_pool_backward(
    par: Par,
    grad_gates: &mut [f32],
    gates: &[f32],
    c: &[f32],
    grad_h: &[f32],
    (batch, time, hidden): (usize, usize, usize),
) {
    let n = batch * time * hidden;
    assert_eq!(grad_gates.len(), 3 * n, "fo_pool_backward: gradient length");
    assert_eq!(gates.len(), 3 * n, "fo_pool_backward: gates length");
    assert_eq!(c.len(), n, "fo_pool_backward: cell length");
    assert_eq!(grad_h.len(), n, "fo_pool_backward: output gradient length");
    if n == 0 {
        return;
    }
    let pieces: Vec<(usize, &mut [f32])> = grad_gates
        .chunks_mut(time * 3 * hidden)
        .enumerate()
        .collect();
    for_each_item(par, pieces, |(bi, dg)| {
        // dc_next = f_{t+1} * dc_{t+1}
        let mut carried = vec![0.0f32; hidden];
        for t in (0..time).rev() {
            let base = (bi * time + t) * 3 * hidden;
            let g = &gates[base..base + 3 * hidden];
            let row = (bi * time + t) * hidden;
            let c_t = &c[row..row + hidden];
            let dh = &grad_h[row..row + hidden];
            let out = &mut dg[t * 3 * hidden..(t + 1) * 3 * hidden];
            for j in 0..hidden {
                let (z, f, o) = (
                    g[j].tanh(),
                    sigmoid(g[hidden + j]),
                    sigmoid(g[2 * hidden + j]),
                );
                let c_prev = if t > 0 { c[row - hidden + j] } else { 0.0 };
                let d_o = dh[j] * c_t[j];
                let dc = dh[j] * o + carried[j];
                let df = dc * (c_prev - z);
                let dz = dc * (1.0 - f);
                carried[j] = dc * f;
                out[j] = dz * (1.0 - z * z);
                out[hidden + j] = df * f * (1.0 - f);
                out[2 * hidden + j] = d_o * o * (1.0 - o);
            }
        }
    });
}

/// Dimensions of an S4D scan: batch, time, channels (H), states per channel (N).
pub type S4dDims = (usize, usize, usize, usize);

/// S4D forward: per channel `h` and state `n`,
/// `s_t = dA[h,n] s_{t-1} + dB[h,n] u_t[h]` (`s_{-1} = 0`) and
/// `y_t[h] = sum_n C[h,n] s_t[h,n] + D[h] u_t[h]`, without materializing the
/// states. `u`, `y`: (batch, time, channels); `da`, `db`, `c`: (channels, states).
///
/// # Panics
/// When a slice's length does not match the dimensions.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn s4d_forward(
    par: Par,
    y: &mut [f32],
    u: &[f32],
    da: &[f32],
    db: &[f32],
    c: &[f32],
    d: &[f32],
    (batch, time, channels, states): S4dDims,
) {
    assert_eq!(y.len(), batch * time * channels, "s4d: output length");
    assert_eq!(u.len(), y.len(), "s4d: input length");
    for (x, what) in [(da, "dA"), (db, "dB"), (c, "C")] {
        assert_eq!(x.len(), channels * states, "s4d: {what} length");
    }
    assert_eq!(d.len(), channels, "s4d: D length");
    let blocks = channel_blocks(channels);
    let units = batch * blocks.len();
    let results = map_units(par, units, |unit| {
        let (bi, (h0, h1)) = (unit / blocks.len(), blocks[unit % blocks.len()]);
        let width = h1 - h0;
        let mut s = vec![0.0f32; width * states];
        let mut out = vec![0.0f32; time * width];
        for t in 0..time {
            let u_t = &u[(bi * time + t) * channels..(bi * time + t + 1) * channels];
            for (j, h) in (h0..h1).enumerate() {
                let s = &mut s[j * states..(j + 1) * states];
                let (da, db, c) = (
                    &da[h * states..(h + 1) * states],
                    &db[h * states..(h + 1) * states],
                    &c[h * states..(h + 1) * states],
                );
                let x = u_t[h];
                let mut acc = 0.0f32;
                for n in 0..states {
                    s[n] = da[n] * s[n] + db[n] * x;
                    acc += c[n] * s[n];
                }
                out[t * width + j] = acc + d[h] * x;
            }
        }
        out
    });
    for (unit, out) in results.into_iter().enumerate() {
        let (bi, (h0, h1)) = (unit / blocks.len(), blocks[unit % blocks.len()]);
        let width = h1 - h0;
        for t in 0..time {
            let row = (bi * time + t) * channels;
            y[row + h0..row + h1].copy_from_slice(&out[t * width..(t + 1) * width]);
        }
    }
}

/// Gradients of [`s4d_forward`].
#[derive(Debug)]
pub struct S4dGrads {
    /// With respect to `u` (batch, time, channels).
    pub u: Vec<f32>,
    /// With respect to `dA` (channels, states).
    pub da: Vec<f32>,
    /// With respect to `dB` (channels, states).
    pub db: Vec<f32>,
    /// With respect to `C` (channels, states).
    pub c: Vec<f32>,
    /// With respect to `D` (channels).
    pub d: Vec<f32>,
}

/// Backward of [`s4d_forward`] given the output gradient `grad_y`; the
/// states are recomputed one unit (batch entry, channel block) at a time.
/// Parameter gradients are summed over the batch in batch order.
///
/// # Panics
/// When a slice's length does not match the dimensions.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn s4d_backward(
    par: Par,
    grad_y: &[f32],
    u: &[f32],
    da: &[f32],
    db: &[f32],
    c: &[f32],
    d: &[f32],
    (batch, time, channels, states): S4dDims,
) -> S4dGrads {
    assert_eq!(
        grad_y.len(),
        batch * time * channels,
        "s4d: gradient length"
    );
    assert_eq!(u.len(), grad_y.len(), "s4d: input length");
    let blocks = channel_blocks(channels);
    let units = batch * blocks.len();
    struct Unit {
        du: Vec<f32>,
        dda: Vec<f32>,
        ddb: Vec<f32>,
        dc: Vec<f32>,
        dd: Vec<f32>,
    }
    let results = map_units(par, units, |unit| {
        let (bi, (h0, h1)) = (unit / blocks.len(), blocks[unit % blocks.len()]);
        let width = h1 - h0;
        let ws = width * states;
        // states s_t for every t of this unit
        let mut all = vec![0.0f32; time * ws];
        for t in 0..time {
            let u_t = &u[(bi * time + t) * channels..(bi * time + t + 1) * channels];
            let (prev, cur) = all.split_at_mut(t * ws);
            let cur = &mut cur[..ws];
            let prev = if t > 0 {
                Some(&prev[(t - 1) * ws..])
            } else {
                None
            };
            for (j, h) in (h0..h1).enumerate() {
                let x = u_t[h];
                for n in 0..states {
                    let p = prev.map_or(0.0, |p| p[j * states + n]);
                    cur[j * states + n] = da[h * states + n] * p + db[h * states + n] * x;
                }
            }
        }
        let mut r = Unit {
            du: vec![0.0; time * width],
            dda: vec![0.0; ws],
            ddb: vec![0.0; ws],
            dc: vec![0.0; ws],
            dd: vec![0.0; width],
        };
        let mut ds = vec![0.0f32; ws];
        for t in (0..time).rev() {
            let row = (bi * time + t) * channels;
            for (j, h) in (h0..h1).enumerate() {
                let g = grad_y[row + h];
                let x = u[row + h];
                let mut du = d[h] * g;
                r.dd[j] += g * x;
                for n in 0..states {
                    let k = j * states + n;
                    let hn = h * states + n;
                    let s_t = all[t * ws + k];
                    let s_prev = if t > 0 { all[(t - 1) * ws + k] } else { 0.0 };
                    let gs = ds[k] + c[hn] * g;
                    r.dc[k] += g * s_t;
                    r.ddb[k] += gs * x;
                    r.dda[k] += gs * s_prev;
                    du += gs * db[hn];
                    ds[k] = gs * da[hn];
                }
                r.du[t * width + j] = du;
            }
        }
        r
    });
    let mut grads = S4dGrads {
        u: vec![0.0; batch * time * channels],
        da: vec![0.0; channels * states],
        db: vec![0.0; channels * states],
        c: vec![0.0; channels * states],
        d: vec![0.0; channels],
    };
    for (unit, r) in results.into_iter().enumerate() {
        let (bi, (h0, h1)) = (unit / blocks.len(), blocks[unit % blocks.len()]);
        let width = h1 - h0;
        for t in 0..time {
            let row = (bi * time + t) * channels;
            grads.u[row + h0..row + h1].copy_from_slice(&r.du[t * width..(t + 1) * width]);
        }
        let range = h0 * states..h1 * states;
        for (dst, src) in [
            (&mut grads.da[range.clone()], &r.dda),
            (&mut grads.db[range.clone()], &r.ddb),
            (&mut grads.c[range], &r.dc),
        ] {
            for (a, b) in dst.iter_mut().zip(src) {
                *a += b;
            }
        }
        for (a, b) in grads.d[h0..h1].iter_mut().zip(&r.dd) {
            *a += b;
        }
    }
    grads
}

/// Dimensions of a selective scan: batch, time, channels (D), states (N).
pub type SelectiveDims = (usize, usize, usize, usize);

/// Inputs of a selective scan (Mamba), all row-major.
#[derive(Clone, Copy, Debug)]
pub struct SelectiveInputs<'a> {
    /// The sequence `x` (batch, time, channels).
    pub x: &'a [f32],
    /// Step sizes (batch, time, channels), before softplus when `softplus`.
    pub delta: &'a [f32],
    /// The diagonal state matrix `A` (channels, states), usually negative.
    pub a: &'a [f32],
    /// Input projections `B_t` (batch, time, states).
    pub b: &'a [f32],
    /// Output projections `C_t` (batch, time, states).
    pub c: &'a [f32],
    /// Skip weights `D` (channels).
    pub d: &'a [f32],
    /// Whether `delta` goes through softplus first (as PyTorch's
    /// `F.softplus`: identity above 20).
    pub softplus: bool,
}

impl SelectiveInputs<'_> {
    #[track_caller]
    fn check(&self, (batch, time, channels, states): SelectiveDims) {
        let btd = batch * time * channels;
        assert_eq!(self.x.len(), btd, "selective_scan: x length");
        assert_eq!(self.delta.len(), btd, "selective_scan: delta length");
        assert_eq!(self.a.len(), channels * states, "selective_scan: A length");
        assert_eq!(
            self.b.len(),
            batch * time * states,
            "selective_scan: B length"
        );
        assert_eq!(
            self.c.len(),
            batch * time * states,
            "selective_scan: C length"
        );
        assert_eq!(self.d.len(), channels, "selective_scan: D length");
    }

    #[inline]
    fn step(&self, i: usize) -> f32 {
        let v = self.delta[i];
        if self.softplus { softplus(v) } else { v }
    }
}

/// PyTorch's softplus (beta 1, threshold 20).
#[inline]
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

/// Selective scan forward (Mamba, Gu & Dao 2023): per channel `d`, state `n`,
/// `h_t = exp(delta_t[d] A[d,n]) h_{t-1} + delta_t[d] B_t[n] x_t[d]`
/// (`h_{-1} = 0`) and `y_t[d] = sum_n C_t[n] h_t[d,n] + D[d] x_t[d]`,
/// without materializing the (batch, time, channels, states) states.
///
/// # Panics
/// When a slice's length does not match the dimensions.
#[track_caller]
pub fn selective_scan_forward(
    par: Par,
    y: &mut [f32],
    inputs: SelectiveInputs<'_>,
    dims: SelectiveDims,
) {
    let (batch, time, channels, states) = dims;
    inputs.check(dims);
    assert_eq!(
        y.len(),
        batch * time * channels,
        "selective_scan: output length"
    );
    let blocks = channel_blocks(channels);
    let units = batch * blocks.len();
    let SelectiveInputs { x, a, b, c, d, .. } = inputs;
    let results = map_units(par, units, |unit| {
        let (bi, (d0, d1)) = (unit / blocks.len(), blocks[unit % blocks.len()]);
        let width = d1 - d0;
        let mut h = vec![0.0f32; width * states];
        let mut decay = vec![0.0f32; states];
        let mut out = vec![0.0f32; time * width];
        for t in 0..time {
            let row = (bi * time + t) * channels;
            let bt = &b[(bi * time + t) * states..(bi * time + t + 1) * states];
            let ct = &c[(bi * time + t) * states..(bi * time + t + 1) * states];
            for (j, ch) in (d0..d1).enumerate() {
                let dt = inputs.step(row + ch);
                let xv = x[row + ch];
                let a_row = &a[ch * states..(ch + 1) * states];
                for n in 0..states {
                    decay[n] = dt * a_row[n];
                }
                exp_in_place(&mut decay);
                let h = &mut h[j * states..(j + 1) * states];
                let mut acc = 0.0f32;
                for n in 0..states {
                    h[n] = decay[n] * h[n] + dt * bt[n] * xv;
                    acc += ct[n] * h[n];
                }
                out[t * width + j] = acc + d[ch] * xv;
            }
        }
        out
    });
    for (unit, out) in results.into_iter().enumerate() {
        let (bi, (d0, d1)) = (unit / blocks.len(), blocks[unit % blocks.len()]);
        let width = d1 - d0;
        for t in 0..time {
            let row = (bi * time + t) * channels;
            y[row + d0..row + d1].copy_from_slice(&out[t * width..(t + 1) * width]);
        }
    }
}

/// Gradients of [`selective_scan_forward`].
#[derive(Debug)]
pub struct SelectiveGrads {
    /// With respect to `x` (batch, time, channels).
    pub x: Vec<f32>,
    /// With respect to `delta` (batch, time, channels), before softplus when
    /// the forward applied it.
    pub delta: Vec<f32>,
    /// With respect to `A` (channels, states).
    pub a: Vec<f32>,
    /// With respect to `B` (batch, time, states).
    pub b: Vec<f32>,
    /// With respect to `C` (batch, time, states).
    pub c: Vec<f32>,
    /// With respect to `D` (channels).
    pub d: Vec<f32>,
}

/// Backward of [`selective_scan_forward`] given the output gradient: the
/// states are recomputed one unit (batch entry, channel block) at a time;
/// gradients summed over channels (`B`, `C`) are added over blocks in block
/// order, those summed over the batch (`A`, `D`) in batch order.
///
/// # Panics
/// When a slice's length does not match the dimensions.
#[track_caller]
pub fn selective_scan_backward(
    par: Par,
    grad_y: &[f32],
    inputs: SelectiveInputs<'_>,
    dims: SelectiveDims,
) -> SelectiveGrads {
    let (batch, time, channels, states) = dims;
    inputs.check(dims);
    assert_eq!(
        grad_y.len(),
        batch * time * channels,
        "selective_scan: gradient length"
    );
    let blocks = channel_blocks(channels);
    let units = batch * blocks.len();
    let SelectiveInputs { x, a, b, c, d, .. } = inputs;
    struct Unit {
        dx: Vec<f32>,
        ddelta: Vec<f32>,
        da: Vec<f32>,
        dd: Vec<f32>,
        db: Vec<f32>,
        dc: Vec<f32>,
    }
    let results = map_units(par, units, |unit| {
        let (bi, (d0, d1)) = (unit / blocks.len(), blocks[unit % blocks.len()]);
        let width = d1 - d0;
        let ws = width * states;
        let mut decay = vec![0.0f32; states];
        // states h_t for every t of this unit
        let mut all = vec![0.0f32; time * ws];
        for t in 0..time {
            let row = (bi * time + t) * channels;
            let bt = &b[(bi * time + t) * states..(bi * time + t + 1) * states];
            let (prev, cur) = all.split_at_mut(t * ws);
            let cur = &mut cur[..ws];
            for (j, ch) in (d0..d1).enumerate() {
                let dt = inputs.step(row + ch);
                let xv = x[row + ch];
                let a_row = &a[ch * states..(ch + 1) * states];
                for n in 0..states {
                    decay[n] = dt * a_row[n];
                }
                exp_in_place(&mut decay);
                for n in 0..states {
                    let p = if t > 0 {
                        prev[(t - 1) * ws + j * states + n]
                    } else {
                        0.0
                    };
                    cur[j * states + n] = decay[n] * p + dt * bt[n] * xv;
                }
            }
        }
        let mut r = Unit {
            dx: vec![0.0; time * width],
            ddelta: vec![0.0; time * width],
            da: vec![0.0; ws],
            dd: vec![0.0; width],
            db: vec![0.0; time * states],
            dc: vec![0.0; time * states],
        };
        let mut gh = vec![0.0f32; ws];
        for t in (0..time).rev() {
            let row = (bi * time + t) * channels;
            let bt = &b[(bi * time + t) * states..(bi * time + t + 1) * states];
            let ct = &c[(bi * time + t) * states..(bi * time + t + 1) * states];
            let db_t = &mut r.db[t * states..(t + 1) * states];
            let dc_t = &mut r.dc[t * states..(t + 1) * states];
            for (j, ch) in (d0..d1).enumerate() {
                let g = grad_y[row + ch];
                let raw = inputs.delta[row + ch];
                let dt = inputs.step(row + ch);
                let xv = x[row + ch];
                let a_row = &a[ch * states..(ch + 1) * states];
                for n in 0..states {
                    decay[n] = dt * a_row[n];
                }
                exp_in_place(&mut decay);
                let mut dxv = d[ch] * g;
                let mut ddt = 0.0f32;
                r.dd[j] += g * xv;
                let h_t = &all[t * ws + j * states..t * ws + (j + 1) * states];
                let gh = &mut gh[j * states..(j + 1) * states];
                let da = &mut r.da[j * states..(j + 1) * states];
                for n in 0..states {
                    let h_prev = if t > 0 {
                        all[(t - 1) * ws + j * states + n]
                    } else {
                        0.0
                    };
                    let total = gh[n] + ct[n] * g;
                    dc_t[n] += g * h_t[n];
                    let through_decay = total * decay[n] * h_prev;
                    da[n] += through_decay * dt;
                    ddt += through_decay * a_row[n] + total * bt[n] * xv;
                    db_t[n] += total * dt * xv;
                    dxv += total * dt * bt[n];
                    gh[n] = total * decay[n];
                }
                r.dx[t * width + j] = dxv;
                r.ddelta[t * width + j] = if inputs.softplus && raw <= 20.0 {
                    ddt / (1.0 + (-raw).exp())
                } else {
                    ddt
                };
            }
        }
        r
    });
    let mut grads = SelectiveGrads {
        x: vec![0.0; batch * time * channels],
        delta: vec![0.0; batch * time * channels],
        a: vec![0.0; channels * states],
        b: vec![0.0; batch * time * states],
        c: vec![0.0; batch * time * states],
        d: vec![0.0; channels],
    };
    for (unit, r) in results.into_iter().enumerate() {
        let (bi, (d0, d1)) = (unit / blocks.len(), blocks[unit % blocks.len()]);
        let width = d1 - d0;
        for t in 0..time {
            let row = (bi * time + t) * channels;
            grads.x[row + d0..row + d1].copy_from_slice(&r.dx[t * width..(t + 1) * width]);
            grads.delta[row + d0..row + d1].copy_from_slice(&r.ddelta[t * width..(t + 1) * width]);
        }
        let bt = bi * time * states..(bi + 1) * time * states;
        for (acc, v) in grads.b[bt.clone()].iter_mut().zip(&r.db) {
            *acc += v;
        }
        for (acc, v) in grads.c[bt].iter_mut().zip(&r.dc) {
            *acc += v;
        }
        for (acc, v) in grads.a[d0 * states..d1 * states].iter_mut().zip(&r.da) {
            *acc += v;
        }
        for (acc, v) in grads.d[d0..d1].iter_mut().zip(&r.dd) {
            *acc += v;
        }
    }
    grads
}

/// `v[i] = exp(v[i])`.
#[inline]
fn exp_in_place(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = x.exp();
    }
}
