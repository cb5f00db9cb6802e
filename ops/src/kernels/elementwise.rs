//! Elementwise kernels on slices.
//!
//! The loops are compiled twice, for the baseline target and for AVX-512
//! (picked at run time by [`wide!`]): plain arithmetic without fused
//! multiply-adds, so both give the same bits, the wide one 4x fewer
//! instructions.
use std::mem::MaybeUninit;

use faer::Par;

use crate::parallel::{CHUNK, for_each_chunk_mut};

/// Calls `$f(args...)` (an `#[inline(always)]` function, generic over the
/// closures it takes), or runs `|| { block }`, compiled for AVX-512F when
/// the CPU has it, else as it is (the block is inlined; what it calls
/// should be `#[inline(always)]` to be compiled wide too). `$f` must not contain anything whose result depends on the
/// target features (no `mul_add`, no explicit intrinsics): then both give
/// the same bits.
macro_rules! wide {
    (|| $body:block) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            #[inline]
            fn avx512<R>(f: impl FnOnce() -> R) -> R {
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
    let mut out = Vec::with_capacity(a.len());
    for_each_chunk_mut(
        par,
        &mut out.spare_capacity_mut()[..a.len()],
        CHUNK,
        |i, d| {
            let src = &a[i * CHUNK..i * CHUNK + d.len()];
            wide!(map_chunk_uninit(d, src, &f));
        },
    );
    #[allow(unsafe_code)]
    // SAFETY: the chunks cover `0..a.len()` and `map_chunk_uninit` writes
    // every element of its chunk (its source has the chunk's length).
    unsafe {
        out.set_len(a.len());
    }
    out
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
    let mut out = Vec::with_capacity(a.len());
    for_each_chunk_mut(
        par,
        &mut out.spare_capacity_mut()[..a.len()],
        CHUNK,
        |i, d| {
            let start = i * CHUNK;
            let (sa, sb) = (&a[start..start + d.len()], &b[start..start + d.len()]);
            wide!(zip_map_chunk_uninit(d, sa, sb, &f));
        },
    );
    #[allow(unsafe_code)]
    // SAFETY: the chunks cover `0..a.len()` and `zip_map_chunk_uninit`
    // writes every element of its chunk (its sources have the chunk's length).
    unsafe {
        out.set_len(a.len());
    }
    out
}
