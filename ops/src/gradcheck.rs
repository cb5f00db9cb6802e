//! Finite-difference gradient checking, for tests of every op and model.
//!
//! The function under test is reduced to a scalar with fixed pseudo-random
//! weights (so every output element matters), its gradient is taken by
//! [`Tensor::backward`], and each input element is compared with a central
//! difference computed without the graph.
use crate::autograd::no_grad;
use crate::tensor::Tensor;

/// Step and tolerances of a finite-difference check.
#[derive(Clone, Copy, Debug)]
pub struct GradCheck {
    /// Half the width of the central difference.
    pub eps: f32,
    /// Allowed relative error.
    pub rtol: f32,
    /// Allowed absolute error.
    pub atol: f32,
}

impl Default for GradCheck {
    fn default() -> GradCheck {
        GradCheck {
            eps: 1e-2,
            rtol: 2e-2,
            atol: 2e-3,
        }
    }
}

/// Fixed weights in [-1, 1) that turn an output into a scalar.
fn projection_weight(i: usize) -> f32 {
    let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let h = (h ^ (h >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn projected(output: &Tensor) -> f64 {
    output
        .data()
        .iter()
        .enumerate()
        .map(|(i, &v)| v as f64 * projection_weight(i) as f64)
        .sum()
}

/// Compares the autodiff gradients of `f` with central differences at
/// `inputs`. Returns a description of every mismatch, or `Ok` when all agree.
pub fn check_gradients(
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> Tensor,
    config: GradCheck,
) -> Result<(), String> {
    let params: Vec<Tensor> = inputs.iter().map(Tensor::as_parameter).collect();
    let output = f(&params);
    let weights: Vec<f32> = (0..output.numel()).map(projection_weight).collect();
    let seed = Tensor::from_vec(output.shape(), weights);
    let grads = output.backward_with(seed);
    let mut errors = Vec::new();
    for (which, input) in inputs.iter().enumerate() {
        let analytic = grads
            .get(&params[which])
            .map(|g| g.data().to_vec())
            .unwrap_or_else(|| vec![0.0; input.numel()]);
        for i in 0..input.numel() {
            let evaluate = |delta: f32| {
                let mut data = input.data().to_vec();
                data[i] += delta;
                let mut moved: Vec<Tensor> = inputs.to_vec();
                moved[which] = Tensor::from_vec(input.shape(), data);
                no_grad(|| projected(&f(&moved)))
            };
            let numeric =
                ((evaluate(config.eps) - evaluate(-config.eps)) / (2.0 * config.eps as f64)) as f32;
            let a = analytic[i];
            // Written so that a NaN on either side counts as a mismatch.
            let agrees = (a - numeric).abs() <= config.atol + config.rtol * numeric.abs();
            if !agrees {
                errors.push(format!(
                    "input {which} element {i}: autodiff {a}, finite difference {numeric}"
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}
