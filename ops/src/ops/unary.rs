//! Elementwise functions of one tensor and their derivatives.
//!
//! Each function is a [`Unary`]: its value and its derivative, written in
//! terms of the input `x` and the output `y` (so `exp`'s derivative is `y`).
//! Functions with a scalar parameter (`pow`, `leaky_relu`) are a
//! [`ParameterizedUnary`]. Forward and backward are one pass each, in
//! parallel chunks when the tensor is large (see [`crate::parallel`]).
use faer::Par;

use crate::autograd::Backward;
use crate::kernels::elementwise::map;
use crate::kernels::fast_math as fm;
use crate::parallel::{CHUNK, current_parallelism, filled_by_chunks};
use crate::tensor::Tensor;

/// An elementwise function with its derivative.
#[derive(Clone, Copy)]
pub struct Unary {
    /// Name for errors and debugging.
    pub name: &'static str,
    /// The value at `x`.
    pub forward: fn(f32) -> f32,
    /// The derivative at `x`, given `x` and the value `y`.
    pub derivative: fn(f32, f32) -> f32,
}

/// An elementwise function of `x` and a fixed scalar parameter `p`.
#[derive(Clone, Copy)]
pub struct ParameterizedUnary {
    /// Name for errors and debugging.
    pub name: &'static str,
    /// The value at `x` for parameter `p`: `forward(x, p)`.
    pub forward: fn(f32, f32) -> f32,
    /// The derivative at `x`, given `x`, the value `y` and `p`.
    pub derivative: fn(f32, f32, f32) -> f32,
}

/// `max(x, 0)`; derivative 0 at 0, as PyTorch.
pub const RELU: Unary = Unary {
    name: "relu",
    forward: |x| if x > 0.0 { x } else { 0.0 },
    derivative: |x, _| if x > 0.0 { 1.0 } else { 0.0 },
};

/// `-x`.
pub const NEG: Unary = Unary {
    name: "neg",
    forward: |x| -x,
    derivative: |_, _| -1.0,
};

/// `e^x`.
pub const EXP: Unary = Unary {
    name: "exp",
    forward: f32::exp,
    derivative: |_, y| y,
};

/// Natural logarithm.
pub const LOG: Unary = Unary {
    name: "log",
    forward: f32::ln,
    derivative: |x, _| 1.0 / x,
};

/// Square root.
pub const SQRT: Unary = Unary {
    name: "sqrt",
    forward: f32::sqrt,
    derivative: |_, y| 0.5 / y,
};

/// `1 / sqrt(x)`.
pub const RSQRT: Unary = Unary {
    name: "rsqrt",
    forward: |x| 1.0 / x.sqrt(),
    derivative: |_, y| -0.5 * y * y * y,
};

/// Hyperbolic tangent.
pub const TANH: Unary = Unary {
    name: "tanh",
    forward: f32::tanh,
    derivative: |_, y| 1.0 - y * y,
};

/// `1 / (1 + e^-x)`, computed without overflow for large `|x|`.
pub const SIGMOID: Unary = Unary {
    name: "sigmoid",
    forward: sigmoid,
    derivative: |_, y| y * (1.0 - y),
};

/// `x * sigmoid(x)` (also called swish).
pub const SILU: Unary = Unary {
    name: "silu",
    forward: |x| x * sigmoid(x),
    derivative: |x, _| {
        let s = sigmoid(x);
        s * (1.0 + x * (1.0 - s))
    },
};

/// `ln(1 + e^x)`, linear above 20, as PyTorch's default
/// (`beta = 1`, `threshold = 20`).
pub const SOFTPLUS: Unary = Unary {
    name: "softplus",
    forward: |x| {
        if x > SOFTPLUS_THRESHOLD {
            x
        } else {
            x.exp().ln_1p()
        }
    },
    derivative: |x, _| {
        if x > SOFTPLUS_THRESHOLD {
            1.0
        } else {
            sigmoid(x)
        }
    },
};

/// Above this input, softplus is the identity (PyTorch's default threshold).
pub const SOFTPLUS_THRESHOLD: f32 = 20.0;

/// The exact GELU, `x * Phi(x) = x/2 * (1 + erf(x / sqrt 2))`, as
/// PyTorch's default (`approximate='none'`), with a vectorizable `erf`
/// accurate to 3e-7 ([`fm::erf`]).
pub const GELU: Unary = Unary {
    name: "gelu",
    forward: |x| 0.5 * x * (1.0 + fm::erf(x * std::f32::consts::FRAC_1_SQRT_2)),
    derivative: |x, _| {
        // Phi(x) + x * phi(x)
        const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
        let cdf = 0.5 * (1.0 + fm::erf(x * std::f32::consts::FRAC_1_SQRT_2));
        cdf + x * FRAC_1_SQRT_2PI * fm::exp(-0.5 * x * x)
    },
};

/// `|x|`; derivative `sign(x)`, 0 at 0, as PyTorch.
pub const ABS: Unary = Unary {
    name: "abs",
    forward: f32::abs,
    derivative: |x, _| {
        if x > 0.0 {
            1.0
        } else if x < 0.0 {
            -1.0
        } else {
            0.0
        }
    },
};

/// `x^p` for a scalar exponent `p`; `x * x` exactly for `p = 2`.
pub const POW: ParameterizedUnary = ParameterizedUnary {
    name: "pow",
    forward: |x, p| if p == 2.0 { x * x } else { x.powf(p) },
    derivative: |x, _, p| {
        if p == 0.0 {
            0.0
        } else if p == 2.0 {
            2.0 * x
        } else {
            p * x.powf(p - 1.0)
        }
    },
};

/// `x` where positive, `p * x` elsewhere (derivative `p` at 0, as PyTorch).
pub const LEAKY_RELU: ParameterizedUnary = ParameterizedUnary {
    name: "leaky_relu",
    forward: |x, p| if x > 0.0 { x } else { p * x },
    derivative: |x, _, p| if x > 0.0 { 1.0 } else { p },
};

/// `1 / (1 + e^-x)` without overflow: `e^x / (1 + e^x)` for negative `x`.
/// Branch-free, with [`fm::exp`] (no libm call), so that loops over it
/// vectorize.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    let e = fm::exp(-x.abs());
    let (numerator, denominator) = (if x >= 0.0 { 1.0 } else { e }, 1.0 + e);
    numerator / denominator
}

/// `dst[i] = f(x[i], y[i], g[i])` in fixed chunks, in parallel when `par`
/// allows: the fused backward of an elementwise function.
fn backward_map(
    par: Par,
    x: &[f32],
    y: &[f32],
    g: &[f32],
    f: impl Fn(f32, f32, f32) -> f32 + Sync + Send,
) -> Vec<f32> {
    assert_eq!(x.len(), y.len(), "unary backward: lengths differ");
    assert_eq!(x.len(), g.len(), "unary backward: lengths differ");
    let fill = |i, d: &mut [std::mem::MaybeUninit<f32>]| {
        let start = i * CHUNK;
        let end = start + d.len();
        let (x, y, g) = (&x[start..end], &y[start..end], &g[start..end]);
        crate::kernels::elementwise::wide!(backward_chunk(d, x, y, g, &f));
    };
    #[allow(unsafe_code)]
    // SAFETY: `backward_chunk` writes every element of its chunk (its
    // sources have the chunk's length).
    unsafe {
        filled_by_chunks(par, x.len(), CHUNK, fill)
    }
}

#[inline(always)]
fn backward_chunk(
    d: &mut [std::mem::MaybeUninit<f32>],
    x: &[f32],
    y: &[f32],
    g: &[f32],
    f: &impl Fn(f32, f32, f32) -> f32,
) {
    assert!(
        x.len() == d.len() && y.len() == d.len() && g.len() == d.len(),
        "unary backward: chunk lengths differ"
    );
    for (((o, &x), &y), &g) in d.iter_mut().zip(x).zip(y).zip(g) {
        o.write(f(x, y, g));
    }
}

/// Applies the constant [`Unary`] `$f` to `$tensor` with its functions
/// called directly, not through a pointer per element: the compiler
/// inlines them and vectorizes the loops (a call per element costs more
/// than `relu` itself).
macro_rules! apply_const_unary {
    ($tensor:expr, $f:expr) => {{
        const F: Unary = $f;
        $tensor.apply_inlined_unary(F.name, |x| (F.forward)(x), |x, y| (F.derivative)(x, y))
    }};
}

/// [`apply_const_unary!`] for the constant [`ParameterizedUnary`] `$f` with
/// parameter `$p`.
macro_rules! apply_const_parameterized_unary {
    ($tensor:expr, $f:expr, $p:expr) => {{
        const F: ParameterizedUnary = $f;
        let p: f32 = $p;
        $tensor.apply_inlined_unary(
            F.name,
            move |x| (F.forward)(x, p),
            move |x, y| (F.derivative)(x, y, p),
        )
    }};
}

/// The backward of an elementwise function whose derivative is known at
/// compile time (see `apply_const_unary!` and
/// `apply_const_parameterized_unary!`).
struct InlinedUnaryBackward<D> {
    name: &'static str,
    derivative: D,
}

impl<D: Fn(f32, f32) -> f32 + Copy + Send + Sync + 'static> Backward for InlinedUnaryBackward<D> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn backward(&self, inputs: &[Tensor], output: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let derivative = self.derivative;
        let g = backward_map(
            current_parallelism(),
            inputs[0].data(),
            output.data(),
            grad.data(),
            move |x, y, g| derivative(x, y) * g,
        );
        vec![Some(Tensor::from_vec(inputs[0].shape(), g))]
    }
}

impl Tensor {
    /// [`Tensor::apply_unary`] with the function and its derivative as
    /// closures, inlined into the loops.
    fn apply_inlined_unary(
        &self,
        name: &'static str,
        forward: impl Fn(f32) -> f32 + Copy + Send + Sync,
        derivative: impl Fn(f32, f32) -> f32 + Copy + Send + Sync + 'static,
    ) -> Tensor {
        let data = map(current_parallelism(), self.data(), forward);
        Tensor::from_op(
            self.shape(),
            data,
            &[self],
            InlinedUnaryBackward { name, derivative },
        )
    }

    /// Applies an elementwise [`Unary`] function.
    pub fn apply_unary(&self, function: Unary) -> Tensor {
        let data = map(current_parallelism(), self.data(), function.forward);
        Tensor::from_op(self.shape(), data, &[self], UnaryBackward(function))
    }

    /// Applies an elementwise [`ParameterizedUnary`] function with parameter `p`.
    pub fn apply_parameterized_unary(&self, function: ParameterizedUnary, p: f32) -> Tensor {
        let forward = function.forward;
        let data = map(current_parallelism(), self.data(), move |x| forward(x, p));
        Tensor::from_op(
            self.shape(),
            data,
            &[self],
            ParameterizedUnaryBackward { function, p },
        )
    }

    /// `max(x, 0)`.
    pub fn relu(&self) -> Tensor {
        apply_const_unary!(self, RELU)
    }

    /// `-x`.
    pub fn neg(&self) -> Tensor {
        self.scale(-1.0)
    }

    /// `e^x`.
    pub fn exp(&self) -> Tensor {
        apply_const_unary!(self, EXP)
    }

    /// Natural logarithm.
    pub fn log(&self) -> Tensor {
        apply_const_unary!(self, LOG)
    }

    /// Square root.
    pub fn sqrt(&self) -> Tensor {
        apply_const_unary!(self, SQRT)
    }

    /// `1 / sqrt(x)`.
    pub fn rsqrt(&self) -> Tensor {
        apply_const_unary!(self, RSQRT)
    }

    /// `x^exponent` elementwise (NaN for negative `x` and a non-integer
    /// exponent, as PyTorch).
    pub fn pow(&self, exponent: f32) -> Tensor {
        apply_const_parameterized_unary!(self, POW, exponent)
    }

    /// `x * x`.
    pub fn square(&self) -> Tensor {
        self.pow(2.0)
    }

    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Tensor {
        apply_const_unary!(self, TANH)
    }

    /// The logistic sigmoid (numerically stable).
    pub fn sigmoid(&self) -> Tensor {
        apply_const_unary!(self, SIGMOID)
    }

    /// `x` where positive, `negative_slope * x` elsewhere.
    pub fn leaky_relu(&self, negative_slope: f32) -> Tensor {
        apply_const_parameterized_unary!(self, LEAKY_RELU, negative_slope)
    }

    /// The exact (erf) GELU, as `torch.nn.functional.gelu`.
    pub fn gelu(&self) -> Tensor {
        apply_const_unary!(self, GELU)
    }

    /// `x * sigmoid(x)`, as `torch.nn.functional.silu`.
    pub fn silu(&self) -> Tensor {
        apply_const_unary!(self, SILU)
    }

    /// `ln(1 + e^x)` (linear above 20), as `torch.nn.functional.softplus`.
    pub fn softplus(&self) -> Tensor {
        apply_const_unary!(self, SOFTPLUS)
    }

    /// `|x|`.
    pub fn abs(&self) -> Tensor {
        apply_const_unary!(self, ABS)
    }

    /// `x * factor`.
    pub fn scale(&self, factor: f32) -> Tensor {
        let data = map(current_parallelism(), self.data(), move |x| x * factor);
        Tensor::from_op(self.shape(), data, &[self], ScaleBackward(factor))
    }

    /// `x + constant`.
    pub fn add_scalar(&self, constant: f32) -> Tensor {
        let data = map(current_parallelism(), self.data(), move |x| x + constant);
        Tensor::from_op(self.shape(), data, &[self], ScaleBackward(1.0))
    }
}

struct UnaryBackward(Unary);

impl Backward for UnaryBackward {
    fn name(&self) -> &'static str {
        self.0.name
    }

    fn backward(&self, inputs: &[Tensor], output: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let derivative = self.0.derivative;
        let g = backward_map(
            current_parallelism(),
            inputs[0].data(),
            output.data(),
            grad.data(),
            move |x, y, g| derivative(x, y) * g,
        );
        vec![Some(Tensor::from_vec(inputs[0].shape(), g))]
    }
}

struct ParameterizedUnaryBackward {
    function: ParameterizedUnary,
    p: f32,
}

impl Backward for ParameterizedUnaryBackward {
    fn name(&self) -> &'static str {
        self.function.name
    }

    fn backward(&self, inputs: &[Tensor], output: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let (derivative, p) = (self.function.derivative, self.p);
        let g = backward_map(
            current_parallelism(),
            inputs[0].data(),
            output.data(),
            grad.data(),
            move |x, y, g| derivative(x, y, p) * g,
        );
        vec![Some(Tensor::from_vec(inputs[0].shape(), g))]
    }
}

struct ScaleBackward(f32);

impl Backward for ScaleBackward {
    fn name(&self) -> &'static str {
        "scale"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let factor = self.0;
        if factor == 1.0 {
            // add_scalar: the gradient passes through unchanged (shared, no copy).
            return vec![Some(Tensor::from_shared(
                inputs[0].shape(),
                grad.shared_data().clone(),
            ))];
        }
        let g = map(current_parallelism(), grad.data(), move |g| g * factor);
        vec![Some(Tensor::from_vec(inputs[0].shape(), g))]
    }
}
