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

use crate::kernels::elementwise::{lane_sum, wide};
use crate::kernels::fast_math as fm;
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

/// What [`fo_pool_forward`] returns: the output `h`, and the activated
/// gates when the backward needs them (else empty).
#[derive(Debug)]
pub struct FoPoolForward {
    /// `h_t = o_t c_t`, (batch, time, hidden).
    pub h: Vec<f32>,
    /// The activated gates `[tanh z, sigmoid f, sigmoid o]`, (batch, time,
    /// 3 hidden): the backward needs no transcendental function again, and
    /// recomputes the cell states from them. They are the buffer of the
    /// gates the forward was given, overwritten.
    pub activations: Vec<f32>,
}

/// QRNN fo-pooling forward over (batch, time, hidden): `gates` holds the
/// pre-activations `[z f o]` (batch, time, 3 hidden); with `z = tanh`,
/// `f, o = sigmoid`, `c_t = f_t c_{t-1} + (1 - f_t) z_t` (`c_{-1} = 0`) and
/// `h_t = o_t c_t`. Returns `h`, and with `for_backward` the activated
/// gates.
///
/// The gates are taken by value and activated in place: the activations
/// the backward keeps reuse their buffer, which the caller has just
/// written (a projection or a table lookup), instead of a fresh one. The
/// cell states are not kept: the backward recomputes them one batch entry
/// at a time (two operations per element), which costs less than writing
/// them out here and reading them back there.
///
/// # Panics
/// When a slice's length does not match the dimensions.
#[track_caller]
pub fn fo_pool_forward(
    par: Par,
    gates: Vec<f32>,
    dims: (usize, usize, usize),
    for_backward: bool,
) -> FoPoolForward {
    let (batch, time, hidden) = dims;
    assert_eq!(
        gates.len(),
        batch * time * 3 * hidden,
        "fo_pool: gates length"
    );
    fo_pool_forward_with(
        par,
        gates,
        dims,
        for_backward,
        None::<fn(usize, &mut [f32])>,
    )
}

/// [`fo_pool_forward`] over gates that `fill(b, gates)` writes, one batch
/// entry `b` (time, 3 hidden) at a time, just before that entry is pooled:
/// the gates of a lookup then go through the cache once, instead of to
/// memory and back. `fill` must write every element of its piece (it is
/// given zeros).
#[track_caller]
pub fn fo_pool_forward_of(
    par: Par,
    dims: (usize, usize, usize),
    for_backward: bool,
    fill: impl Fn(usize, &mut [f32]) + Sync + Send,
) -> FoPoolForward {
    let (batch, time, hidden) = dims;
    let gates = Vec::with_capacity(batch * time * 3 * hidden);
    fo_pool_forward_with(par, gates, dims, for_backward, Some(fill))
}

/// [`fo_pool_forward`] and [`fo_pool_forward_of`]: `gates` holds all the
/// gates when `fill` is `None`, and is empty with room for them when not.
fn fo_pool_forward_with<Fill: Fn(usize, &mut [f32]) + Sync + Send>(
    par: Par,
    mut gates: Vec<f32>,
    (batch, time, hidden): (usize, usize, usize),
    for_backward: bool,
    fill: Option<Fill>,
) -> FoPoolForward {
    let (n, seq) = (batch * time * hidden, time * hidden);
    if n == 0 {
        return FoPoolForward {
            h: Vec::new(),
            activations: Vec::new(),
        };
    }
    debug_assert_eq!(gates.len(), if fill.is_some() { 0 } else { 3 * n });
    #[allow(unsafe_code)]
    // SAFETY: shortening a vector of `f32` drops nothing and leaves the
    // values in place: without `fill`, the pieces below see the caller's
    // gates as (initialized) spare capacity.
    unsafe {
        gates.set_len(0);
    }
    let mut h = Vec::with_capacity(n);
    let pieces: Vec<_> = h.spare_capacity_mut()[..n]
        .chunks_mut(seq)
        .zip(gates.spare_capacity_mut()[..3 * n].chunks_mut(3 * seq))
        .enumerate()
        .collect();
    for_each_item(par, pieces, |(b, (h, gates))| {
        if fill.is_some() {
            for g in gates.iter_mut() {
                g.write(0.0);
            }
        }
        #[allow(unsafe_code)]
        // SAFETY: every element of the piece is initialized: with `fill`,
        // zeroed just above; without, the caller's gates (see above).
        let gates = unsafe { &mut *(std::ptr::from_mut::<[Uninit]>(gates) as *mut [f32]) };
        if let Some(fill) = &fill {
            fill(b, gates);
        }
        wide!(fo_pool_forward_piece(h, gates, hidden));
    });
    #[allow(unsafe_code)]
    // SAFETY: the pieces cover `0..n` of `h` and `0..3 n` of `gates`;
    // `fo_pool_forward_piece` writes every element of its piece of `h`
    // ((time, hidden) rows, one per (time, 3 hidden) row of gates, each row
    // whole), and every element of `gates` was initialized (see above).
    unsafe {
        h.set_len(n);
        gates.set_len(3 * n);
    }
    FoPoolForward {
        h,
        activations: if for_backward { gates } else { Vec::new() },
    }
}

/// An output element not written yet.
type Uninit = std::mem::MaybeUninit<f32>;

/// [`fo_pool_forward`] for one batch entry: `h` (time, hidden) from
/// `gates` (time, 3 hidden), activated in place.
#[inline(always)]
fn fo_pool_forward_piece(h: &mut [Uninit], gates: &mut [f32], hidden: usize) {
    assert!(gates.len() == 3 * h.len(), "fo_pool: piece lengths");
    let mut state = vec![0.0f32; hidden];
    for (g, h_t) in gates
        .chunks_exact_mut(3 * hidden)
        .zip(h.chunks_exact_mut(hidden))
    {
        let (z, rest) = g.split_at_mut(hidden);
        let (f, o) = rest.split_at_mut(hidden);
        fo_pool_forward_row((z, f, o), &mut state, h_t);
    }
}

/// One time step of [`fo_pool_forward_piece`] (a function of its own so
/// that its slices are known not to alias, also when inlined): activates
/// `z`, `f`, `o` in place, then steps the state.
#[inline(always)]
fn fo_pool_forward_row(
    (z, f, o): (&mut [f32], &mut [f32], &mut [f32]),
    state: &mut [f32],
    h: &mut [Uninit],
) {
    let hidden = state.len();
    let (z, f, o, h) = (
        &mut z[..hidden],
        &mut f[..hidden],
        &mut o[..hidden],
        &mut h[..hidden],
    );
    // One stream per loop: a loop activating the three in place did not
    // vectorize, nor did one that also stepped the state.
    for v in z.iter_mut() {
        *v = fm::tanh(*v);
    }
    for v in f.iter_mut() {
        *v = fm::sigmoid(*v);
    }
    for v in o.iter_mut() {
        *v = fm::sigmoid(*v);
    }
    for j in 0..hidden {
        let s = cell_step(f[j], z[j], state[j]);
        state[j] = s;
        h[j].write(o[j] * s);
    }
}

/// The cell update `c_t = f_t c_{t-1} + (1 - f_t) z_t`: one function for the
/// forward and the backward's recomputation, so that both give the same
/// bits.
#[inline(always)]
fn cell_step(f: f32, z: f32, previous: f32) -> f32 {
    f * previous + (1.0 - f) * z
}

/// Backward of [`fo_pool_forward`]: the gradient with respect to `gates`
/// (pre-activations), given the activated gates kept by the forward and the
/// gradient `grad_h` of the output.
///
/// # Panics
/// When a slice's length does not match the dimensions.
#[track_caller]
pub fn fo_pool_backward(
    par: Par,
    activations: &[f32],
    grad_h: &[f32],
    (batch, time, hidden): (usize, usize, usize),
) -> Vec<f32> {
    let n = batch * time * hidden;
    assert_eq!(
        activations.len(),
        3 * n,
        "fo_pool_backward: activations length"
    );
    assert_eq!(grad_h.len(), n, "fo_pool_backward: output gradient length");
    if n == 0 {
        return Vec::new();
    }
    let mut grad_gates = Vec::with_capacity(3 * n);
    let pieces: Vec<(usize, &mut [Uninit])> = grad_gates.spare_capacity_mut()[..3 * n]
        .chunks_mut(time * 3 * hidden)
        .enumerate()
        .collect();
    for_each_item(par, pieces, |(bi, dg)| {
        let (seq, gate_seq) = (time * hidden, time * 3 * hidden);
        let activations = &activations[bi * gate_seq..(bi + 1) * gate_seq];
        let grad_h = &grad_h[bi * seq..(bi + 1) * seq];
        wide!(fo_pool_backward_piece(dg, activations, grad_h, hidden));
    });
    #[allow(unsafe_code)]
    // SAFETY: the pieces cover `0..3 n`, and `fo_pool_backward_piece` writes
    // every (time, 3 hidden) row of its piece whole.
    unsafe {
        grad_gates.set_len(3 * n);
    }
    grad_gates
}

/// [`fo_pool_backward`] for one batch entry: `dg`, `activations` (time,
/// 3 hidden), `grad_h` (time, hidden). First the cell states, recomputed
/// forward in time (which also brings the entry's activations into the
/// cache), then the gradient, backward in time.
#[inline(always)]
fn fo_pool_backward_piece(dg: &mut [Uninit], activations: &[f32], grad_h: &[f32], hidden: usize) {
    let time = grad_h.len() / hidden;
    assert!(
        dg.len() == 3 * grad_h.len() && activations.len() == dg.len(),
        "fo_pool_backward: piece lengths"
    );
    let mut c = vec![0.0f32; time * hidden];
    let zeros = vec![0.0f32; hidden];
    for (t, act) in activations.chunks_exact(3 * hidden).enumerate() {
        let (z, rest) = act.split_at(hidden);
        let (done, rest_of_c) = c.split_at_mut(t * hidden);
        let previous = if t > 0 {
            &done[(t - 1) * hidden..]
        } else {
            &zeros[..]
        };
        recompute_cells_row(
            (&z[..hidden], &rest[..hidden]),
            previous,
            &mut rest_of_c[..hidden],
        );
    }
    // dc carried from t+1: f_{t+1} * dc_{t+1}
    let mut carried = vec![0.0f32; hidden];
    for t in (0..time).rev() {
        let act = &activations[t * 3 * hidden..(t + 1) * 3 * hidden];
        let (z, rest) = act.split_at(hidden);
        let (f, o) = rest.split_at(hidden);
        let row = t * hidden;
        let c_t = &c[row..row + hidden];
        let c_prev = if t > 0 {
            &c[row - hidden..row]
        } else {
            &zeros[..]
        };
        let dh = &grad_h[row..row + hidden];
        let out = &mut dg[t * 3 * hidden..(t + 1) * 3 * hidden];
        let (dz_out, rest) = out.split_at_mut(hidden);
        let (df_out, do_out) = rest.split_at_mut(hidden);
        fo_pool_backward_row(
            (z, f, &o[..hidden]),
            (c_t, c_prev, dh),
            &mut carried,
            dz_out,
            df_out,
            &mut do_out[..hidden],
        );
    }
}

/// One time step of the cell states' recomputation in
/// [`fo_pool_backward_piece`] (a function of its own so that its slices
/// are known not to alias, also when inlined).
#[inline(always)]
fn recompute_cells_row((z, f): (&[f32], &[f32]), previous: &[f32], c: &mut [f32]) {
    let hidden = c.len();
    let (z, f, previous) = (&z[..hidden], &f[..hidden], &previous[..hidden]);
    for j in 0..hidden {
        c[j] = cell_step(f[j], z[j], previous[j]);
    }
}

/// One time step of [`fo_pool_backward_piece`] (a function of its own so
/// that its slices are known not to alias, also when inlined): `z`, `f`,
/// `o` are the activated gates.
#[allow(clippy::type_complexity)]
#[inline(always)]
fn fo_pool_backward_row(
    (z, f, o): (&[f32], &[f32], &[f32]),
    (c_t, c_prev, dh): (&[f32], &[f32], &[f32]),
    carried: &mut [f32],
    dz_out: &mut [Uninit],
    df_out: &mut [Uninit],
    do_out: &mut [Uninit],
) {
    let hidden = carried.len();
    let (z, f, o) = (&z[..hidden], &f[..hidden], &o[..hidden]);
    let (c_t, c_prev, dh) = (&c_t[..hidden], &c_prev[..hidden], &dh[..hidden]);
    let (dz_out, df_out, do_out) = (
        &mut dz_out[..hidden],
        &mut df_out[..hidden],
        &mut do_out[..hidden],
    );
    for j in 0..hidden {
        let (zj, fj, oj) = (z[j], f[j], o[j]);
        let d_o = dh[j] * c_t[j];
        let dc = dh[j] * oj + carried[j];
        let df = dc * (c_prev[j] - zj);
        let dz = dc * (1.0 - fj);
        carried[j] = dc * fj;
        dz_out[j].write(dz * (1.0 - zj * zj));
        df_out[j].write(df * fj * (1.0 - fj));
        do_out[j].write(d_o * oj * (1.0 - oj));
    }
}

/// Dimensions of an S4D scan: batch, time, channels (H), states per channel (N).
pub type S4dDims = (usize, usize, usize, usize);

/// The (states, width) transpose of rows `c0..c1` of a (channels, states)
/// matrix: the layout the scans use, so that inner loops run over channels.
fn block_transpose(m: &[f32], states: usize, (c0, c1): (usize, usize)) -> Vec<f32> {
    let width = c1 - c0;
    let mut out = vec![0.0; states * width];
    for (j, ch) in (c0..c1).enumerate() {
        for n in 0..states {
            out[n * width + j] = m[ch * states + n];
        }
    }
    out
}

/// Adds the first `c1 - c0` lanes of the (states, stride) rows `block`
/// into rows `c0..c1` of the (channels, states) matrix `m`.
fn add_block_transposed(
    m: &mut [f32],
    block: &[f32],
    (states, stride): (usize, usize),
    (c0, c1): (usize, usize),
) {
    for (j, ch) in (c0..c1).enumerate() {
        for n in 0..states {
            m[ch * states + n] += block[n * stride + j];
        }
    }
}

/// Lanes of one S4D unit: a channel block padded to [`CHANNEL_BLOCK`]
/// channels (the padding lanes compute zeros and are never written out).
type Lanes = [f32; CHANNEL_BLOCK];

/// Row `i` of a buffer of [`Lanes`] rows.
#[inline(always)]
fn lanes(buf: &[f32], i: usize) -> &Lanes {
    buf[i * CHANNEL_BLOCK..(i + 1) * CHANNEL_BLOCK]
        .try_into()
        .expect("a row of CHANNEL_BLOCK lanes")
}

/// The (states, [`CHANNEL_BLOCK`]) transpose of rows `c0..c1` of a
/// (channels, states) matrix, zero-padded past `c1 - c0` lanes.
fn block_transpose_padded(m: &[f32], states: usize, (c0, c1): (usize, usize)) -> Vec<f32> {
    let mut out = vec![0.0; states * CHANNEL_BLOCK];
    for (j, ch) in (c0..c1).enumerate() {
        for n in 0..states {
            out[n * CHANNEL_BLOCK + j] = m[ch * states + n];
        }
    }
    out
}

/// Channels `c0..c1` of batch entry `bi` of a (batch, time, channels)
/// tensor as (time, [`CHANNEL_BLOCK`]) rows, zero-padded.
fn gather_block_padded(
    x: &[f32],
    bi: usize,
    (c0, c1): (usize, usize),
    (time, channels): (usize, usize),
) -> Vec<f32> {
    let padding = [0.0f32; CHANNEL_BLOCK];
    let mut out = Vec::with_capacity(time * CHANNEL_BLOCK);
    for t in 0..time {
        let src = (bi * time + t) * channels;
        if c1 - c0 == CHANNEL_BLOCK {
            // a copy of known length: inlined, where a call to copy 128
            // bytes cost as much as the copy
            let row: &Lanes = x[src + c0..src + c1].try_into().expect("a full block");
            out.extend_from_slice(row);
        } else {
            out.extend_from_slice(&x[src + c0..src + c1]);
            out.extend_from_slice(&padding[c1 - c0..]);
        }
    }
    out
}

/// The (batch, time, channels) tensor whose unit `bi * blocks.len() + k`
/// (batch entry `bi`, channel block `k`) is the first `c1 - c0` lanes of
/// the (time, [`CHANNEL_BLOCK`]) rows `units[..]`, built row by row.
fn interleave_units(
    units: &[&[f32]],
    blocks: &[(usize, usize)],
    (batch, time, channels): (usize, usize, usize),
) -> Vec<f32> {
    let mut out = Vec::with_capacity(batch * time * channels);
    for bi in 0..batch {
        let row_units = &units[bi * blocks.len()..(bi + 1) * blocks.len()];
        for t in 0..time {
            for (unit, &(c0, c1)) in row_units.iter().zip(blocks) {
                if c1 - c0 == CHANNEL_BLOCK {
                    // a copy of known length, inlined (as in `gather_block_padded`)
                    out.extend_from_slice(lanes(unit, t));
                } else {
                    let at = t * CHANNEL_BLOCK;
                    out.extend_from_slice(&unit[at..at + c1 - c0]);
                }
            }
        }
    }
    out
}

/// States `n0..n0 + G` of the S4D forward over a whole unit: per state,
/// `s = dA s + dB x` along time (kept in registers), and `out_t += C s_t`
/// state after state, as the state-by-state order of the per-step loop.
#[inline(always)]
fn s4d_forward_states<const G: usize>(
    out: &mut [f32],
    xs: &[f32],
    [da, db, c]: [&[f32]; 3],
    n0: usize,
) {
    let da: [&Lanes; G] = std::array::from_fn(|g| lanes(da, n0 + g));
    let db: [&Lanes; G] = std::array::from_fn(|g| lanes(db, n0 + g));
    let c: [&Lanes; G] = std::array::from_fn(|g| lanes(c, n0 + g));
    let mut s = [[0.0f32; CHANNEL_BLOCK]; G];
    for (o, x) in out
        .chunks_exact_mut(CHANNEL_BLOCK)
        .zip(xs.chunks_exact(CHANNEL_BLOCK))
    {
        let o: &mut Lanes = o.try_into().expect("a row of lanes");
        let x: &Lanes = x.try_into().expect("a row of lanes");
        for g in 0..G {
            s4d_forward_step(&mut s[g], o, x, [da[g], db[g], c[g]]);
        }
    }
}

/// One state at one time step: `s = dA s + dB x; out += C s` (a function
/// of its own so that its references are known not to alias, also when
/// inlined: the lanes vectorize).
#[inline(always)]
fn s4d_forward_step(s: &mut Lanes, out: &mut Lanes, x: &Lanes, [da, db, c]: [&Lanes; 3]) {
    for j in 0..CHANNEL_BLOCK {
        s[j] = da[j] * s[j] + db[j] * x[j];
        out[j] += c[j] * s[j];
    }
}

/// `s = dA s + dB x` for one state's lanes; a copy of `s` into `store`.
#[inline(always)]
fn s4d_state_step(s: &mut Lanes, store: &mut [f32], x: &Lanes, da: &Lanes, db: &Lanes) {
    for j in 0..CHANNEL_BLOCK {
        s[j] = da[j] * s[j] + db[j] * x[j];
    }
    store[..CHANNEL_BLOCK].copy_from_slice(s);
}

/// Running gradients of one state's lanes in the S4D backward: the
/// carried state gradient and the sums for `C`, `dB` and `dA`.
#[derive(Clone, Copy)]
struct S4dStateGrads {
    ds: Lanes,
    dc: Lanes,
    ddb: Lanes,
    dda: Lanes,
}

/// One state at one time step of the S4D backward, given the output
/// gradient `gy`, the input `x`, the states `s_prev`, `s_t` and the
/// coefficients `[C, dA, dB]`; adds into `du`.
#[inline(always)]
fn s4d_backward_step(
    r: &mut S4dStateGrads,
    du: &mut Lanes,
    [gy, x, s_prev, s_t]: [&Lanes; 4],
    [c, da, db]: [&Lanes; 3],
) {
    for j in 0..CHANNEL_BLOCK {
        let gs = r.ds[j] + c[j] * gy[j];
        r.dc[j] += gy[j] * s_t[j];
        r.ddb[j] += gs * x[j];
        r.dda[j] += gs * s_prev[j];
        du[j] += gs * db[j];
        r.ds[j] = gs * da[j];
    }
}

/// `d[j] * values[t, j]` for every time step `t` of a unit's (time, lanes)
/// values: the `D` term of the S4D forward and backward.
#[inline(always)]
fn scaled_by_lanes(values: &[f32], d: &Lanes) -> Vec<f32> {
    let mut out = Vec::with_capacity(values.len());
    for row in values.chunks_exact(CHANNEL_BLOCK) {
        out.extend(row.iter().zip(d).map(|(&v, &dd)| dd * v));
    }
    out
}

/// The S4D forward of one unit: `xs` (time, lanes) in, (time, lanes) out.
#[inline(always)]
fn s4d_forward_unit(xs: &[f32], coef: [&[f32]; 3], d: &Lanes, states: usize) -> Vec<f32> {
    // y_t starts at D u_t (written once, nothing to clear first)
    let mut out = scaled_by_lanes(xs, d);
    let mut n = 0;
    while n + 4 <= states {
        s4d_forward_states::<4>(&mut out, xs, coef, n);
        n += 4;
    }
    while n < states {
        s4d_forward_states::<1>(&mut out, xs, coef, n);
        n += 1;
    }
    out
}

/// S4D forward: per channel `h` and state `n`,
/// `s_t = dA[h,n] s_{t-1} + dB[h,n] u_t[h]` (`s_{-1} = 0`) and
/// `y_t[h] = sum_n C[h,n] s_t[h,n] + D[h] u_t[h]`, without materializing the
/// states; returns `y`. `u`, `y`: (batch, time, channels); `da`, `db`, `c`: (channels, states).
///
/// Each unit (batch entry, channel block) runs state by state along time,
/// the state in registers; `y_t` starts at `D u_t` and adds `C s_t` in
/// state order.
///
/// # Panics
/// When a slice's length does not match the dimensions.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn s4d_forward(
    par: Par,
    u: &[f32],
    da: &[f32],
    db: &[f32],
    c: &[f32],
    d: &[f32],
    (batch, time, channels, states): S4dDims,
) -> Vec<f32> {
    assert_eq!(u.len(), batch * time * channels, "s4d: input length");
    for (x, what) in [(da, "dA"), (db, "dB"), (c, "C")] {
        assert_eq!(x.len(), channels * states, "s4d: {what} length");
    }
    assert_eq!(d.len(), channels, "s4d: D length");
    if u.is_empty() {
        return Vec::new();
    }
    let blocks = channel_blocks(channels);
    let transposed: Vec<[Vec<f32>; 4]> = blocks
        .iter()
        .map(|&b| {
            [
                block_transpose_padded(da, states, b),
                block_transpose_padded(db, states, b),
                block_transpose_padded(c, states, b),
                block_transpose_padded(d, 1, b),
            ]
        })
        .collect();
    let units = batch * blocks.len();
    let results = map_units(par, units, |unit| {
        let (bi, block) = (unit / blocks.len(), unit % blocks.len());
        let [da, db, c, d] = &transposed[block];
        let xs = gather_block_padded(u, bi, blocks[block], (time, channels));
        wide!(s4d_forward_unit(&xs, [da, db, c], lanes(d, 0), states))
    });
    let units: Vec<&[f32]> = results.iter().map(Vec::as_slice).collect();
    interleave_units(&units, &blocks, (batch, time, channels))
}

/// Gradients of one S4D unit, (time, lanes) and (states, lanes) rows.
struct S4dUnitGrads {
    du: Vec<f32>,
    dda: Vec<f32>,
    ddb: Vec<f32>,
    dc: Vec<f32>,
    dd: Lanes,
}

/// States `n0..n0 + G` of the S4D backward over a whole unit: recomputes
/// their states along time into `states_buf`, then runs the reverse scan
/// `gs = ds + C g; ds = dA gs` with the parameter gradients in registers,
/// adding `dB gs` into `du` state after state.
#[inline(always)]
fn s4d_backward_states<const G: usize>(
    grads: &mut S4dUnitGrads,
    xs: &[f32],
    gys: &[f32],
    [da, db, c]: [&[f32]; 3],
    n0: usize,
    states_buf: &mut Vec<f32>,
) {
    const W: usize = CHANNEL_BLOCK;
    let time = xs.len() / W;
    let da: [&Lanes; G] = std::array::from_fn(|g| lanes(da, n0 + g));
    let db: [&Lanes; G] = std::array::from_fn(|g| lanes(db, n0 + g));
    let c: [&Lanes; G] = std::array::from_fn(|g| lanes(c, n0 + g));
    // s_{t-1} of state g at (t * G + g) * W (s_{-1} = 0)
    // rows 1..=time are all written below: only s_{-1} needs clearing
    states_buf.resize((time + 1) * G * W, 0.0);
    states_buf[..G * W].fill(0.0);
    let mut s = [[0.0f32; W]; G];
    for (t, x) in xs.chunks_exact(W).enumerate() {
        let x: &Lanes = x.try_into().expect("a row of lanes");
        let row = &mut states_buf[(t + 1) * G * W..(t + 2) * G * W];
        for g in 0..G {
            s4d_state_step(&mut s[g], &mut row[g * W..], x, da[g], db[g]);
        }
    }
    let zero = [0.0f32; W];
    let mut r = [S4dStateGrads {
        ds: zero,
        dc: zero,
        ddb: zero,
        dda: zero,
    }; G];
    for t in (0..time).rev() {
        let (x, gy) = (lanes(xs, t), lanes(gys, t));
        let du: &mut Lanes = (&mut grads.du[t * W..(t + 1) * W])
            .try_into()
            .expect("a row of lanes");
        for g in 0..G {
            let s_prev = lanes(states_buf, t * G + g);
            let s_t = lanes(states_buf, (t + 1) * G + g);
            s4d_backward_step(&mut r[g], du, [gy, x, s_prev, s_t], [c[g], da[g], db[g]]);
        }
    }
    for (g, r) in r.iter().enumerate() {
        let at = (n0 + g) * W..(n0 + g + 1) * W;
        grads.dc[at.clone()].copy_from_slice(&r.dc);
        grads.ddb[at.clone()].copy_from_slice(&r.ddb);
        grads.dda[at].copy_from_slice(&r.dda);
    }
}

/// The S4D backward of one unit given its inputs `xs` and output gradient
/// `gys` (time, lanes).
#[inline(always)]
fn s4d_backward_unit(
    xs: &[f32],
    gys: &[f32],
    coef: [&[f32]; 3],
    d: &Lanes,
    states: usize,
) -> S4dUnitGrads {
    const W: usize = CHANNEL_BLOCK;
    let time = xs.len() / W;
    let mut grads = S4dUnitGrads {
        // du starts at D gy (written once, nothing to clear first)
        du: scaled_by_lanes(gys, d),
        dda: vec![0.0; states * W],
        ddb: vec![0.0; states * W],
        dc: vec![0.0; states * W],
        dd: [0.0; W],
    };
    for t in (0..time).rev() {
        let (x, gy) = (lanes(xs, t), lanes(gys, t));
        for j in 0..W {
            grads.dd[j] += gy[j] * x[j];
        }
    }
    let mut states_buf = Vec::new();
    let mut n = 0;
    while n + 2 <= states {
        s4d_backward_states::<2>(&mut grads, xs, gys, coef, n, &mut states_buf);
        n += 2;
    }
    while n < states {
        s4d_backward_states::<1>(&mut grads, xs, gys, coef, n, &mut states_buf);
        n += 1;
    }
    grads
}

/// Writes per-unit (time, width) outputs back into (batch, time, channels).
fn scatter_blocks(
    dst: &mut [f32],
    results: &[Vec<f32>],
    blocks: &[(usize, usize)],
    (_, time, channels): (usize, usize, usize),
) {
    for (unit, out) in results.iter().enumerate() {
        let (bi, (c0, c1)) = (unit / blocks.len(), blocks[unit % blocks.len()]);
        let width = c1 - c0;
        for t in 0..time {
            let row = (bi * time + t) * channels;
            dst[row + c0..row + c1].copy_from_slice(&out[t * width..(t + 1) * width]);
        }
    }
}

/// Read-only inputs of one state's lanes in the selective-scan backward.
struct SelectiveLanes<'a> {
    g: &'a [f32],
    x: &'a [f32],
    dt: &'a [f32],
    h_prev: &'a [f32],
    h_t: &'a [f32],
    decay: &'a [f32],
    a: &'a [f32],
    b: f32,
    c: f32,
}

#[allow(clippy::too_many_arguments)]
/// One state's lanes of the selective-scan backward at one time step (the
/// outputs are separate parameters, so that they are known not to alias
/// and the loop vectorizes).
#[inline(always)]
fn selective_backward_lanes(
    l: SelectiveLanes<'_>,
    gh: &mut [f32],
    da: &mut [f32],
    ddt: &mut [f32],
    dx: &mut [f32],
    dc_terms: &mut [f32],
    db_terms: &mut [f32],
) {
    let w = gh.len();
    let (g, x, dt) = (&l.g[..w], &l.x[..w], &l.dt[..w]);
    let (h_prev, h_t, decay, a) = (&l.h_prev[..w], &l.h_t[..w], &l.decay[..w], &l.a[..w]);
    let (da, ddt, dx) = (&mut da[..w], &mut ddt[..w], &mut dx[..w]);
    let (dc_terms, db_terms) = (&mut dc_terms[..w], &mut db_terms[..w]);
    let (bn, cn) = (l.b, l.c);
    for j in 0..w {
        let total = gh[j] + cn * g[j];
        dc_terms[j] = g[j] * h_t[j];
        let through_decay = total * decay[j] * h_prev[j];
        da[j] += through_decay * dt[j];
        ddt[j] += through_decay * a[j] + total * bn * x[j];
        db_terms[j] = total * dt[j] * x[j];
        dx[j] += total * dt[j] * bn;
        gh[j] = total * decay[j];
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
/// states are recomputed one unit (batch entry, channel block) at a time,
/// a pair of states at a time along the whole sequence. Parameter
/// gradients are summed over the batch in batch order.
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
    for (x, what) in [(da, "dA"), (db, "dB"), (c, "C")] {
        assert_eq!(x.len(), channels * states, "s4d: {what} length");
    }
    assert_eq!(d.len(), channels, "s4d: D length");
    let blocks = channel_blocks(channels);
    let transposed: Vec<[Vec<f32>; 4]> = blocks
        .iter()
        .map(|&b| {
            [
                block_transpose_padded(da, states, b),
                block_transpose_padded(db, states, b),
                block_transpose_padded(c, states, b),
                block_transpose_padded(d, 1, b),
            ]
        })
        .collect();
    let units = batch * blocks.len();
    let results = map_units(par, units, |unit| {
        let (bi, block) = (unit / blocks.len(), unit % blocks.len());
        let [da, db, c, d] = &transposed[block];
        let xs = gather_block_padded(u, bi, blocks[block], (time, channels));
        let gys = gather_block_padded(grad_y, bi, blocks[block], (time, channels));
        wide!(s4d_backward_unit(
            &xs,
            &gys,
            [da, db, c],
            lanes(d, 0),
            states
        ))
    });
    let dus: Vec<&[f32]> = results.iter().map(|r| r.du.as_slice()).collect();
    let mut grads = S4dGrads {
        u: interleave_units(&dus, &blocks, (batch, time, channels)),
        da: vec![0.0; channels * states],
        db: vec![0.0; channels * states],
        c: vec![0.0; channels * states],
        d: vec![0.0; channels],
    };
    for (unit, r) in results.iter().enumerate() {
        let block = blocks[unit % blocks.len()];
        for (m, rows) in [
            (&mut grads.da, &r.dda),
            (&mut grads.db, &r.ddb),
            (&mut grads.c, &r.dc),
        ] {
            add_block_transposed(m, rows, (states, CHANNEL_BLOCK), block);
        }
        for (a, b) in grads.d[block.0..block.1].iter_mut().zip(&r.dd) {
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

    /// The step sizes of channels `c0..c1` at `row` (a (batch, time) row
    /// offset), after softplus when asked.
    fn steps(&self, row: usize, (c0, c1): (usize, usize), out: &mut [f32]) {
        let raw = &self.delta[row + c0..row + c1];
        if self.softplus {
            wide!(softplus_into(out, raw));
        } else {
            out.copy_from_slice(raw);
        }
    }
}

/// `out[i] = softplus(raw[i])` (called through [`wide!`]).
#[inline(always)]
fn softplus_into(out: &mut [f32], raw: &[f32]) {
    for (o, &v) in out.iter_mut().zip(raw) {
        *o = fm::softplus(v);
    }
}

/// PyTorch's softplus (beta 1, threshold 20).
#[inline]
pub fn softplus(x: f32) -> f32 {
    fm::softplus(x)
}

/// One forward step of a selective-scan unit: updates the (states, width)
/// state `h` and, when given, stores the decays; returns `y` into `out`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn selective_step(
    h: &mut [f32],
    decay_out: Option<&mut [f32]>,
    a_t: &[f32],
    dt: &[f32],
    xv: &[f32],
    bt: &[f32],
    ct: Option<&[f32]>,
    acc: &mut [f32],
    width: usize,
) {
    acc.fill(0.0);
    let mut decay_out = decay_out;
    for (n, &bn) in bt.iter().enumerate() {
        let range = n * width..(n + 1) * width;
        let cn = ct.map_or(0.0, |c| c[n]);
        let hn = &mut h[range.clone()];
        let an = &a_t[range.clone()];
        match decay_out.as_deref_mut() {
            Some(store) => {
                for (((((h, &a), &dt), &x), acc), dec) in hn
                    .iter_mut()
                    .zip(an)
                    .zip(dt)
                    .zip(xv)
                    .zip(acc.iter_mut())
                    .zip(store[range].iter_mut())
                {
                    let e = fm::exp(dt * a);
                    *dec = e;
                    *h = e * *h + dt * bn * x;
                    *acc += cn * *h;
                }
            }
            None => {
                for ((((h, &a), &dt), &x), acc) in
                    hn.iter_mut().zip(an).zip(dt).zip(xv).zip(acc.iter_mut())
                {
                    let e = fm::exp(dt * a);
                    *h = e * *h + dt * bn * x;
                    *acc += cn * *h;
                }
            }
        }
    }
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
    let a_blocks: Vec<Vec<f32>> = blocks
        .iter()
        .map(|&b| block_transpose(inputs.a, states, b))
        .collect();
    let units = batch * blocks.len();
    let SelectiveInputs { x, b, c, d, .. } = inputs;
    let results = map_units(par, units, |unit| {
        wide!(|| {
            let (bi, block) = (unit / blocks.len(), unit % blocks.len());
            let (d0, d1) = blocks[block];
            let width = d1 - d0;
            let mut h = vec![0.0f32; states * width];
            let mut dt = vec![0.0f32; width];
            let mut acc = vec![0.0f32; width];
            let mut out = vec![0.0f32; time * width];
            for t in 0..time {
                let row = (bi * time + t) * channels;
                let srow = (bi * time + t) * states;
                inputs.steps(row, (d0, d1), &mut dt);
                let xv = &x[row + d0..row + d1];
                selective_step(
                    &mut h,
                    None,
                    &a_blocks[block],
                    &dt,
                    xv,
                    &b[srow..srow + states],
                    Some(&c[srow..srow + states]),
                    &mut acc,
                    width,
                );
                for (((o, &a), &xv), &dd) in out[t * width..(t + 1) * width]
                    .iter_mut()
                    .zip(&acc)
                    .zip(xv)
                    .zip(&d[d0..d1])
                {
                    *o = a + dd * xv;
                }
            }
            out
        })
    });
    scatter_blocks(y, &results, &blocks, (batch, time, channels));
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
    let a_blocks: Vec<Vec<f32>> = blocks
        .iter()
        .map(|&b| block_transpose(inputs.a, states, b))
        .collect();
    let units = batch * blocks.len();
    let SelectiveInputs { x, b, c, d, .. } = inputs;
    struct Unit {
        dx: Vec<f32>,
        ddelta: Vec<f32>,
        da: Vec<f32>,
        dd: Vec<f32>,
        db: Vec<f32>,
        dc: Vec<f32>,
    }
    let results = map_units(par, units, |unit| {
        wide!(|| {
            let (bi, block) = (unit / blocks.len(), unit % blocks.len());
            let (d0, d1) = blocks[block];
            let a_t = &a_blocks[block];
            let width = d1 - d0;
            let ws = width * states;
            // states h_{t-1} at t * ws (h_{-1} = 0), and the decays of step t
            let mut all = vec![0.0f32; (time + 1) * ws];
            let mut decays = vec![0.0f32; time * ws];
            let mut dts = vec![0.0f32; time * width];
            let mut acc = vec![0.0f32; width];
            for t in 0..time {
                let row = (bi * time + t) * channels;
                let srow = (bi * time + t) * states;
                let dt = &mut dts[t * width..(t + 1) * width];
                inputs.steps(row, (d0, d1), dt);
                let (prev, cur) = all.split_at_mut((t + 1) * ws);
                let cur = &mut cur[..ws];
                cur.copy_from_slice(&prev[t * ws..]);
                selective_step(
                    cur,
                    Some(&mut decays[t * ws..(t + 1) * ws]),
                    a_t,
                    dt,
                    &x[row + d0..row + d1],
                    &b[srow..srow + states],
                    None,
                    &mut acc,
                    width,
                );
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
            let mut ddt = vec![0.0f32; width];
            let mut dc_terms = vec![0.0f32; width];
            let mut db_terms = vec![0.0f32; width];
            for t in (0..time).rev() {
                let row = (bi * time + t) * channels;
                let srow = (bi * time + t) * states;
                let (bt, ct) = (&b[srow..srow + states], &c[srow..srow + states]);
                let g = &grad_y[row + d0..row + d1];
                let xv = &x[row + d0..row + d1];
                let dt = &dts[t * width..(t + 1) * width];
                let dx = &mut r.dx[t * width..(t + 1) * width];
                for (((dx, dd), (&g, &xv)), &dskip) in dx
                    .iter_mut()
                    .zip(r.dd.iter_mut())
                    .zip(g.iter().zip(xv))
                    .zip(&d[d0..d1])
                {
                    *dx = dskip * g;
                    *dd += g * xv;
                }
                ddt.fill(0.0);
                let h_prev_all = &all[t * ws..(t + 1) * ws];
                let h_t_all = &all[(t + 1) * ws..(t + 2) * ws];
                for n in 0..states {
                    let range = n * width..(n + 1) * width;
                    let (bn, cn) = (bt[n], ct[n]);
                    selective_backward_lanes(
                        SelectiveLanes {
                            g,
                            x: xv,
                            dt,
                            h_prev: &h_prev_all[range.clone()],
                            h_t: &h_t_all[range.clone()],
                            decay: &decays[t * ws + n * width..t * ws + (n + 1) * width],
                            a: &a_t[range.clone()],
                            b: bn,
                            c: cn,
                        },
                        &mut gh[range.clone()],
                        &mut r.da[range],
                        &mut ddt,
                        dx,
                        &mut dc_terms,
                        &mut db_terms,
                    );
                    r.dc[t * states + n] = lane_sum([&dc_terms[..]], |[x]| x);
                    r.db[t * states + n] = lane_sum([&db_terms[..]], |[x]| x);
                }
                let raw = &inputs.delta[row + d0..row + d1];
                for ((out, &ddt), &raw) in r.ddelta[t * width..(t + 1) * width]
                    .iter_mut()
                    .zip(&ddt)
                    .zip(raw)
                {
                    *out = if inputs.softplus && raw <= 20.0 {
                        ddt * fm::sigmoid(raw)
                    } else {
                        ddt
                    };
                }
            }
            r
        })
    });
    let mut grads = SelectiveGrads {
        x: vec![0.0; batch * time * channels],
        delta: vec![0.0; batch * time * channels],
        a: vec![0.0; channels * states],
        b: vec![0.0; batch * time * states],
        c: vec![0.0; batch * time * states],
        d: vec![0.0; channels],
    };
    for (unit, r) in results.iter().enumerate() {
        let (bi, block) = (unit / blocks.len(), blocks[unit % blocks.len()]);
        let (d0, d1) = block;
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
        add_block_transposed(&mut grads.a, &r.da, (states, block.1 - block.0), block);
        for (acc, v) in grads.d[d0..d1].iter_mut().zip(&r.dd) {
            *acc += v;
        }
    }
    grads
}
