//! Branch-free `exp`, `tanh`, `sigmoid`, `softplus` and `erf` for f32 that
//! vectorize when applied along a slice (libm's are scalar calls): the
//! sequence kernels spend most of their time in them.
//!
//! `exp` is Cephes' `expf`: range reduction `x = n ln 2 + r` with a
//! two-constant `ln 2`, a degree-6 polynomial for `exp(r)`, and the scale
//! `2^n` built from its bits; within 2 ulp of the exact value on
//! [-87, 88] (the input is clamped to that range, so results below
//! `exp(-87) ~ 1.6e-38` are not flushed to zero). Being plain arithmetic,
//! the results are the same on every x86-64 CPU, unlike libm's, which
//! picks an FMA or non-FMA path at run time.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
const ROUND: f32 = 12_582_912.0;
const LN2_HIGH: f32 = 0.693_359_4;
const LN2_LOW: f32 = -2.121_944_4e-4;

/// `e^x`.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HIGH - n * LN2_LOW;
    let z = r * r;
    let p = (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 0.166_666_65)
        * r
        + 0.5)
        * z
        + r
        + 1.0;
    // n sits in the low mantissa bits of `shifted`
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    p * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `tanh(x)`, as `(1 - e^-2|x|) / (1 + e^-2|x|)` with the sign of `x`
/// (absolute error below 1e-7).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let e = exp(-2.0 * x.abs());
    ((1.0 - e) / (1.0 + e)).copysign(x)
}

/// `ln(x)` for positive normal `x` (Cephes' `logf`: the mantissa in
/// [sqrt(1/2), sqrt(2)) and a degree-9 polynomial; within 2 ulp).
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut exponent = ((bits >> 23) & 0xff) as f32 - 126.0;
    // mantissa in [0.5, 1)
    let mut m = f32::from_bits((bits & 0x807f_ffff) | 0x3f00_0000);
    let small = m < std::f32::consts::FRAC_1_SQRT_2;
    exponent = if small { exponent - 1.0 } else { exponent };
    m = if small { m + m - 1.0 } else { m - 1.0 };
    let z = m * m;
    let mut y =
        ((((((((7.037_683_6e-2 * m - 0.115_146_1) * m + 0.116_769_98) * m - 0.124_201_41) * m
            + 0.142_493_23)
            * m
            - 0.166_680_57)
            * m
            + 0.200_007_15)
            * m
            - 0.249_999_94)
            * m
            + 0.333_333_3)
            * m
            * z;
    y += LN2_LOW * exponent;
    y -= 0.5 * z;
    m + y + LN2_HIGH * exponent
}

/// PyTorch's softplus (beta 1, threshold 20): `x` above 20, else
/// `ln(1 + e^x)`, through the accurate `log1p` identity
/// `log1p(e) = ln(u) e / (u - 1)` with `u = 1 + e` (Goldberg 1991).
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    let e = exp(x);
    let u = 1.0 + e;
    let log1p = if u == 1.0 { e } else { ln(u) * (e / (u - 1.0)) };
    if x > 20.0 { x } else { log1p }
}

/// `erf(x)` within 3e-7 absolute (Abramowitz and Stegun 7.1.26:
/// `1 - t (a1 + t (a2 + ... a5 t)) e^{-x^2}` with `t = 1 / (1 + p |x|)`,
/// the sign of `x` restored). Absolute, not relative, accuracy: right for
/// `1 + erf` (GELU's CDF), not for `erf` of tiny arguments on its own.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    (1.0 - poly * exp(-a * a)).copysign(x)
}
