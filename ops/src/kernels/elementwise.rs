//! Elementwise kernels on slices.
//!
//! The loops are compiled three times, for the baseline target, AVX2 and
//! AVX-512 (picked at run time by [`wide!`]): plain arithmetic without
//! fused multiply-adds, so all give the same bits, the wide ones 2x and 4x
//! fewer instructions.
use std::mem::MaybeUninit;

use faer::Par;

use crate::parallel::{CHUNK, filled_by_chunks, for_each_chunk_mut};

/// Calls `$f(args...)` (an `#[inline(always)]` function, generic over the
/// closures it takes), or runs `|| { block }`, compiled for the widest
/// vectors the CPU has: AVX-512F (16 lanes), else AVX2 (8 lanes), else the
/// baseline target (SSE2 on x86-64, 4 lanes). The block is inlined; what
/// it calls should be `#[inline(always)]` to be compiled wide too. `$f`
/// must not contain anything whose result depends on the target features
/// (no `mul_add`, no explicit intrinsics): then every build gives the same
/// bits (no build enables FMA, and the compiler neither contracts `a * b +
/// c` nor reorders float sums).
macro_rules! wide {
    (|| $body:block) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            #[inline]
            fn avx512<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            #[target_feature(enable = "avx2")]
            #[inline]
            fn avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                #[allow(unsafe_code)]
                // SAFETY: the CPU has AVX-512F (detected just above), the
                // only target feature of `avx512`.
                unsafe {
                    avx512(
                        #[inline(always)]
                        || $body,
                    )
                }
            } else if std::arch::is_x86_feature_detected!("avx2") {
                #[allow(unsafe_code)]
                // SAFETY: the CPU has AVX2 (detected just above), the only
                // target feature of `avx2`.
                unsafe {
                    avx2(
                        #[inline(always)]
                        || $body,
                    )
                }
            } else {
                $body
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $body
        }
    }};
    ($f:ident($($arg:expr),* $(,)?)) => {
        $crate::kernels::elementwise::wide!(|| { $f($($arg),*) })
    };
}
pub(crate) use wide;

/// `dst[i] += src[i]`.
///
/// # Panics
/// When the lengths differ.
#[track_caller]
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "add_assign: lengths differ");
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// `dst[i] = f(a[i])`, in parallel chunks when `par` allows.
#[track_caller]
pub fn map_into(par: Par, dst: &mut [f32], a: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) {
    assert_eq!(dst.len(), a.len(), "map_into: lengths differ");
    for_each_chunk_mut(par, dst, CHUNK, |i, d| {
        let src = &a[i * CHUNK..i * CHUNK + d.len()];
        wide!(map_chunk(d, src, &f));
    });
}

#[inline(always)]
fn map_chunk(d: &mut [f32], a: &[f32], f: &impl Fn(f32) -> f32) {
    for (o, &x) in d.iter_mut().zip(a) {
        *o = f(x);
    }
}

#[inline(always)]
fn zip_map_chunk(d: &mut [f32], a: &[f32], b: &[f32], f: &impl Fn(f32, f32) -> f32) {
    for ((o, &x), &y) in d.iter_mut().zip(a).zip(b) {
        *o = f(x, y);
    }
}

/// `dst[i] = f(a[i], b[i])`, in parallel chunks when `par` allows.
#[track_caller]
pub fn zip_map_into(
    par: Par,
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    f: impl Fn(f32, f32) -> f32 + Sync + Send,
) {
    assert_eq!(dst.len(), a.len(), "zip_map_into: lengths differ");
    assert_eq!(dst.len(), b.len(), "zip_map_into: lengths differ");
    for_each_chunk_mut(par, dst, CHUNK, |i, d| {
        let start = i * CHUNK;
        let (sa, sb) = (&a[start..start + d.len()], &b[start..start + d.len()]);
        wide!(zip_map_chunk(d, sa, sb, &f));
    });
}

/// `f(a[i])` as a new vector (written once, never zeroed first).
pub fn map(par: Par, a: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) -> Vec<f32> {
    let fill = |i, d: &mut [MaybeUninit<f32>]| {
        let src = &a[i * CHUNK..i * CHUNK + d.len()];
        wide!(map_chunk_uninit(d, src, &f));
    };
    #[allow(unsafe_code)]
    // SAFETY: `map_chunk_uninit` writes every element of its chunk (its
    // source has the chunk's length).
    unsafe {
        filled_by_chunks(par, a.len(), CHUNK, fill)
    }
}

#[inline(always)]
fn map_chunk_uninit(d: &mut [MaybeUninit<f32>], a: &[f32], f: &impl Fn(f32) -> f32) {
    assert_eq!(d.len(), a.len(), "map: chunk lengths differ");
    for (o, &x) in d.iter_mut().zip(a) {
        o.write(f(x));
    }
}

#[inline(always)]
fn zip_map_chunk_uninit(
    d: &mut [MaybeUninit<f32>],
    a: &[f32],
    b: &[f32],
    f: &impl Fn(f32, f32) -> f32,
) {
    assert_eq!(d.len(), a.len(), "zip_map: chunk lengths differ");
    assert_eq!(d.len(), b.len(), "zip_map: chunk lengths differ");
    for ((o, &x), &y) in d.iter_mut().zip(a).zip(b) {
        o.write(f(x, y));
    }
}

/// `f(a[i], b[i])` as a new vector (written once, never zeroed first).
#[track_caller]
pub fn zip_map(
    par: Par,
    a: &[f32],
    b: &[f32],
    f: impl Fn(f32, f32) -> f32 + Sync + Send,
) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "zip_map: lengths differ");
    let fill = |i, d: &mut [MaybeUninit<f32>]| {
        let start = i * CHUNK;
        let (sa, sb) = (&a[start..start + d.len()], &b[start..start + d.len()]);
        wide!(zip_map_chunk_uninit(d, sa, sb, &f));
    };
    #[allow(unsafe_code)]
    // SAFETY: `zip_map_chunk_uninit` writes every element of its chunk (its
    // sources have the chunk's length).
    unsafe {
        filled_by_chunks(par, a.len(), CHUNK, fill)
    }
}

/// Lanes of [`lane_sum`]: one 512-bit vector, two 256-bit ones.
pub(crate) const SUM_LANES: usize = 16;

/// The sum over the columns `j` of the `I` equally long `inputs` of
/// `term([inputs[0][j], ..])`, in an order fixed by the length alone (the
/// same bits whatever the thread count, and in every build of [`wide!`]):
/// each full group of [`SUM_LANES`] columns adds column `j` into lane
/// `j % SUM_LANES`, group after group; the lanes are then folded in
/// halves (lane `l` takes lane `l + 8`, then `l + 4`, `l + 2`, `l + 1`),
/// and the columns past the last full group are added last, in order.
/// The lanes are independent chains the CPU overlaps (and vectorizes),
/// where one running sum would wait on each addition. (Two sums over the
/// same columns vectorize better as two calls than as one pass.)
#[inline(always)]
pub(crate) fn lane_sum<const I: usize>(inputs: [&[f32]; I], term: impl Fn([f32; I]) -> f32) -> f32 {
    let len = inputs.first().map_or(0, |x| x.len());
    assert!(
        inputs.iter().all(|x| x.len() == len),
        "lane_sum: lengths differ"
    );
    let full = len - len % SUM_LANES;
    let mut lanes = [0.0f32; SUM_LANES];
    for start in (0..full).step_by(SUM_LANES) {
        let group: [&[f32; SUM_LANES]; I] = std::array::from_fn(|i| {
            inputs[i][start..start + SUM_LANES]
                .try_into()
                .expect("a full group of lanes")
        });
        for (l, lane) in lanes.iter_mut().enumerate() {
            *lane += term(std::array::from_fn(|i| group[i][l]));
        }
    }
    let mut width = SUM_LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
    }
    (full..len).fold(lanes[0], |sum, j| {
        sum + term(std::array::from_fn(|i| inputs[i][j]))
    })
}

#[cfg(test)]
mod tests {
    use super::{SUM_LANES, lane_sum};
    use crate::kernels::fast_math;

    /// Values spread over the range the activations see, and past it.
    fn inputs() -> Vec<f32> {
        (0..4099)
            .map(|i| (i as f32 - 2049.0) * 0.0137 + (i % 7) as f32 * 1e-3)
            .collect()
    }

    #[inline(always)]
    fn activations(x: &[f32], y: &mut [f32]) {
        for (out, &v) in y.chunks_exact_mut(6).zip(x) {
            out[0] = fast_math::exp(v.min(80.0));
            out[1] = fast_math::sigmoid(v);
            out[2] = fast_math::tanh(v);
            out[3] = fast_math::ln(v.abs() + 1e-3);
            out[4] = fast_math::softplus(v);
            out[5] = fast_math::erf(v) * v + v * v * 0.5 - 1.0;
        }
    }

    /// The widest build `wide!` picks on this CPU gives the bits of the
    /// baseline build, so a run is reproducible across machines.
    #[test]
    fn wide_build_gives_the_baseline_bits() {
        let x = inputs();
        let mut baseline = vec![0.0f32; 6 * x.len()];
        activations(&x, &mut baseline);
        let mut widest = vec![0.0f32; 6 * x.len()];
        wide!(activations(&x, &mut widest));
        for (index, (b, w)) in baseline.iter().zip(&widest).enumerate() {
            assert_eq!(b.to_bits(), w.to_bits(), "value {index}: {b} vs {w}");
        }
    }

    /// [`lane_sum`] by its documentation, one addition at a time.
    fn lane_sum_by_definition(x: &[f32]) -> f32 {
        let full = x.len() - x.len() % SUM_LANES;
        let mut lanes = [0.0f32; SUM_LANES];
        for (j, &v) in x[..full].iter().enumerate() {
            lanes[j % SUM_LANES] += v;
        }
        for width in [8, 4, 2, 1] {
            for l in 0..width {
                lanes[l] += lanes[l + width];
            }
        }
        x[full..].iter().fold(lanes[0], |sum, &v| sum + v)
    }

    /// Lengths around the lane groups, values of mixed magnitudes (so that
    /// another order of the additions would round differently).
    #[test]
    fn lane_sum_adds_in_the_documented_order_in_every_build() {
        let x: Vec<f32> = inputs().iter().map(|v| v.exp2() - 1.0 / 3.0).collect();
        for len in [
            0, 1, 2, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256, 257, 4099,
        ] {
            let x = &x[x.len() - len..];
            let expected = lane_sum_by_definition(x);
            let baseline = lane_sum([x], |[v]| v);
            let widest = wide!(|| { lane_sum([x], |[v]| v) });
            assert_eq!(baseline.to_bits(), expected.to_bits(), "length {len}");
            assert_eq!(
                widest.to_bits(),
                expected.to_bits(),
                "length {len}, widest build"
            );
            let squares: Vec<f32> = x.iter().map(|v| v * v).collect();
            let sum_squares = wide!(|| { lane_sum([x, x], |[a, b]| a * b) });
            let expected_squares = lane_sum_by_definition(&squares);
            assert_eq!(
                sum_squares.to_bits(),
                expected_squares.to_bits(),
                "length {len}, two inputs"
            );
        }
    }
}
