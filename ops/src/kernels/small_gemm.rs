//! Small dense products `C += A B` on row-major slices, for the per-time-step
//! products of the recurrent layers (e.g. 32x64 times 64x256), where a
//! general GEMM's set-up costs as much as the arithmetic.
//!
//! Every element of `C` is one chain of fused multiply-adds over `k` in
//! increasing order, starting from its old value:
//! `c = fma(a[i][k-1], b[k-1][j], ... fma(a[i][0], b[0][j], c))`. The
//! register-blocked AVX-512 and AVX2 paths and the portable path all
//! compute exactly that chain, so the result has the same bits on every CPU
//! and whatever the blocking (checked by the tests below). Products run on
//! the calling thread.

/// Shape of a product: `C (m x n) += A (m x k) B (k x n)`.
pub type SmallDims = (usize, usize, usize);

/// `c (m x n) += a (m x k) * b (k x n)`, all row-major and contiguous; see
/// the module documentation for the exact arithmetic.
///
/// # Panics
/// When a slice's length does not match its dimensions.
#[track_caller]
pub fn gemm_add(c: &mut [f32], a: &[f32], b: &[f32], (m, k, n): SmallDims) {
    assert_eq!(c.len(), m * n, "gemm_add: destination is not {m}x{n}");
    assert_eq!(a.len(), m * k, "gemm_add: left operand is not {m}x{k}");
    assert_eq!(b.len(), k * n, "gemm_add: right operand is not {k}x{n}");
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            #[allow(unsafe_code)]
            // SAFETY: the CPU has AVX-512F (detected just above), the only
            // requirement of `avx512::gemm_add`'s target features; the
            // lengths were checked above.
            unsafe {
                avx512::gemm_add(c, a, b, (m, k, n));
            }
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            #[allow(unsafe_code)]
            // SAFETY: the CPU has AVX2 and FMA (detected just above), the
            // target features of `avx2::gemm_add`; the lengths were checked
            // above.
            unsafe {
                avx2::gemm_add(c, a, b, (m, k, n));
            }
            return;
        }
    }
    gemm_add_portable(c, a, b, (m, k, n));
}

/// [`gemm_add`] by its definition, one element at a time: what every
/// path of [`gemm_add`] must reproduce bit for bit (for tests).
///
/// # Panics
/// When a slice's length does not match its dimensions.
#[track_caller]
pub fn gemm_add_reference(c: &mut [f32], a: &[f32], b: &[f32], (m, k, n): SmallDims) {
    assert!(c.len() == m * n && a.len() == m * k && b.len() == k * n);
    for i in 0..m {
        for j in 0..n {
            let mut value = c[i * n + j];
            for p in 0..k {
                value = a[i * k + p].mul_add(b[p * n + j], value);
            }
            c[i * n + j] = value;
        }
    }
}

/// The portable path, row by row: `c[i][..] += a[i][p] * b[p][..]` for
/// `p` in order, each as a fused multiply-add.
#[inline(always)]
fn gemm_add_portable(c: &mut [f32], a: &[f32], b: &[f32], (_, k, n): SmallDims) {
    for (c_row, a_row) in c.chunks_exact_mut(n).zip(a.chunks_exact(k)) {
        for (&a_ip, b_row) in a_row.iter().zip(b.chunks_exact(n)) {
            for (c, &b) in c_row.iter_mut().zip(b_row) {
                *c = a_ip.mul_add(b, *c);
            }
        }
    }
}

/// A register-blocked `c += a b` for one x86-64 vector width: blocks of up
/// to `$rows` rows by two or one vectors of columns held in registers for
/// the whole `k` loop, remaining rows in smaller blocks and remaining
/// columns scalar; every element one FMA chain over `k` in order.
#[cfg(target_arch = "x86_64")]
macro_rules! register_blocked {
    (
        $module:ident, $features:literal, $vector:ident, $lanes:literal, $rows:literal,
        $load:ident, $store:ident, $broadcast:ident, $fmadd:ident
    ) => {
        #[allow(unsafe_code)]
        mod $module {
            use std::arch::x86_64::{$broadcast, $fmadd, $load, $store, $vector};

            use super::SmallDims;

            /// Rows per register block.
            const MR: usize = $rows;
            /// Lanes of one vector.
            const W: usize = $lanes;

            /// `c += a b`, blocks of up to `MR` rows.
            ///
            /// # Safety
            /// The CPU must support the module's target features, and `c`,
            /// `a`, `b` must hold `m n`, `m k`, `k n` elements.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn gemm_add(
                c: &mut [f32],
                a: &[f32],
                b: &[f32],
                (m, k, n): SmallDims,
            ) {
                debug_assert!(c.len() == m * n && a.len() == m * k && b.len() == k * n);
                let mut i = 0;
                while i + MR <= m {
                    // SAFETY: rows i..i + MR exist; the caller's guarantees
                    // carry over.
                    unsafe { rows::<MR>(c, a, b, i, (m, k, n)) };
                    i += MR;
                }
                while i + 2 <= m {
                    // SAFETY: as above, rows i..i + 2.
                    unsafe { rows::<2>(c, a, b, i, (m, k, n)) };
                    i += 2;
                }
                while i < m {
                    // SAFETY: as above, row i.
                    unsafe { rows::<1>(c, a, b, i, (m, k, n)) };
                    i += 1;
                }
            }

            /// Rows `i0..i0 + R` of the product.
            ///
            /// # Safety
            /// The module's target features; `i0 + R <= m`; slice lengths
            /// as in [`gemm_add`].
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn rows<const R: usize>(
                c: &mut [f32],
                a: &[f32],
                b: &[f32],
                i0: usize,
                (m, k, n): SmallDims,
            ) {
                debug_assert!(i0 + R <= m);
                let (cp, ap, bp) = (c.as_mut_ptr(), a.as_ptr(), b.as_ptr());
                let mut j = 0;
                while j + 2 * W <= n {
                    // SAFETY: every pointer below stays inside its slice:
                    // rows i0..i0 + R < m of `c` and `a`, columns
                    // j..j + 2 W <= n of `c` and `b`, p < k. Unaligned loads
                    // and stores are used.
                    unsafe {
                        let mut acc = [[$broadcast(0.0); 2]; R];
                        for (r, acc) in acc.iter_mut().enumerate() {
                            let row = cp.add((i0 + r) * n + j);
                            acc[0] = $load(row);
                            acc[1] = $load(row.add(W));
                        }
                        for p in 0..k {
                            let b_row = bp.add(p * n + j);
                            let (b0, b1): ($vector, $vector) = ($load(b_row), $load(b_row.add(W)));
                            for (r, acc) in acc.iter_mut().enumerate() {
                                let av = $broadcast(*ap.add((i0 + r) * k + p));
                                acc[0] = $fmadd(av, b0, acc[0]);
                                acc[1] = $fmadd(av, b1, acc[1]);
                            }
                        }
                        for (r, acc) in acc.iter().enumerate() {
                            let row = cp.add((i0 + r) * n + j);
                            $store(row, acc[0]);
                            $store(row.add(W), acc[1]);
                        }
                    }
                    j += 2 * W;
                }
                while j + W <= n {
                    // SAFETY: as above, columns j..j + W <= n.
                    unsafe {
                        let mut acc = [$broadcast(0.0); R];
                        for (r, acc) in acc.iter_mut().enumerate() {
                            *acc = $load(cp.add((i0 + r) * n + j));
                        }
                        for p in 0..k {
                            let b0 = $load(bp.add(p * n + j));
                            for (r, acc) in acc.iter_mut().enumerate() {
                                let av = $broadcast(*ap.add((i0 + r) * k + p));
                                *acc = $fmadd(av, b0, *acc);
                            }
                        }
                        for (r, acc) in acc.iter().enumerate() {
                            $store(cp.add((i0 + r) * n + j), *acc);
                        }
                    }
                    j += W;
                }
                for r in 0..R {
                    let (c_row, a_row) =
                        (&mut c[(i0 + r) * n..(i0 + r + 1) * n], &a[(i0 + r) * k..]);
                    for (col, c) in c_row.iter_mut().enumerate().skip(j) {
                        let mut value = *c;
                        for p in 0..k {
                            value = a_row[p].mul_add(b[p * n + col], value);
                        }
                        *c = value;
                    }
                }
            }
        }
    };
}

// 16 accumulators of the 32 vector registers.
#[cfg(target_arch = "x86_64")]
register_blocked!(
    avx512,
    "avx512f",
    __m512,
    16,
    8,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps
);

// 12 accumulators, two row vectors and a broadcast: 15 of the 16 registers.
#[cfg(target_arch = "x86_64")]
register_blocked!(
    avx2,
    "avx2,fma",
    __m256,
    8,
    6,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps
);
