//! Elementwise kernels on slices.
use faer::Par;

use crate::parallel::{CHUNK, for_each_chunk_mut};

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
        for (o, &x) in d.iter_mut().zip(src) {
            *o = f(x);
        }
    });
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
        for ((o, &x), &y) in d.iter_mut().zip(sa).zip(sb) {
            *o = f(x, y);
        }
    });
}

/// `f(a[i])` as a new vector.
pub fn map(par: Par, a: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) -> Vec<f32> {
    let mut out = vec![0.0; a.len()];
    map_into(par, &mut out, a, f);
    out
}

/// `f(a[i], b[i])` as a new vector.
#[track_caller]
pub fn zip_map(
    par: Par,
    a: &[f32],
    b: &[f32],
    f: impl Fn(f32, f32) -> f32 + Sync + Send,
) -> Vec<f32> {
    let mut out = vec![0.0; a.len()];
    zip_map_into(par, &mut out, a, b, f);
    out
}
