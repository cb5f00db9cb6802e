//! PyTorch's default parameter initializations, drawn from the
//! counter-based generator.
//!
//! The distributions are PyTorch's (`nn.Linear`, `nn.Embedding`, `nn.LSTM`,
//! `nn.GRU`, `nn.Conv1d`, norms); the values are not (PyTorch draws from a
//! sequential Mersenne Twister). Each parameter draws from its own stream,
//! derived from the seed and the parameter's name, so a parameter's initial
//! value does not depend on the order in which a model creates them.
use crate::parameters::ParameterSet;
use crate::rng::{RandomStream, stream_id};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// The stream that parameter `name` is initialized from under `seed`.
pub fn stream_for(seed: u64, name: &str) -> RandomStream {
    // FNV-1a over the name, then mixed with a tag for "initialization".
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01B3);
    }
    RandomStream::new(seed, stream_id(&[0x1A17, hash]))
}

/// `1 / sqrt(fan_in)`: the bound of `kaiming_uniform_(a = sqrt(5))`, which
/// PyTorch uses for `nn.Linear` and `nn.Conv1d` weights, and of their biases.
pub fn fan_in_bound(fan_in: usize) -> f32 {
    if fan_in == 0 {
        0.0
    } else {
        1.0 / (fan_in as f32).sqrt()
    }
}

/// `U(-bound, bound)` for parameter `name`.
pub fn uniform(seed: u64, name: &str, shape: impl Into<Shape>, bound: f32) -> Tensor {
    stream_for(seed, name)
        .uniform_tensor(shape, -bound, bound)
        .as_parameter()
}

/// `U(low, high)` for parameter `name`.
pub fn uniform_range(
    seed: u64,
    name: &str,
    shape: impl Into<Shape>,
    low: f32,
    high: f32,
) -> Tensor {
    stream_for(seed, name)
        .uniform_tensor(shape, low, high)
        .as_parameter()
}

/// `N(mean, std^2)` for parameter `name`.
pub fn normal(seed: u64, name: &str, shape: impl Into<Shape>, mean: f32, std: f32) -> Tensor {
    stream_for(seed, name)
        .normal_tensor(shape, mean, std)
        .as_parameter()
}

/// Inserts an `nn.Linear(in_features, out_features, bias)` as
/// `<prefix>.weight` (out, in) and `<prefix>.bias` (out), both
/// `U(-1/sqrt(in), 1/sqrt(in))`.
pub fn linear(
    params: &mut ParameterSet,
    seed: u64,
    prefix: &str,
    in_features: usize,
    out_features: usize,
    bias: bool,
) {
    let bound = fan_in_bound(in_features);
    let weight = format!("{prefix}.weight");
    params.insert(
        weight.clone(),
        uniform(seed, &weight, [out_features, in_features], bound),
    );
    if bias {
        let bias = format!("{prefix}.bias");
        params.insert(bias.clone(), uniform(seed, &bias, [out_features], bound));
    }
}

/// Inserts an `nn.Embedding(vocab, dim)` as `<prefix>.weight`, `N(0, 1)`.
pub fn embedding(params: &mut ParameterSet, seed: u64, prefix: &str, vocab: usize, dim: usize) {
    let name = format!("{prefix}.weight");
    params.insert(name.clone(), normal(seed, &name, [vocab, dim], 0.0, 1.0));
}

/// `U(-1/sqrt(hidden), 1/sqrt(hidden))`: every weight and bias of
/// `nn.LSTM` and `nn.GRU`.
pub fn recurrent(seed: u64, name: &str, shape: impl Into<Shape>, hidden: usize) -> Tensor {
    uniform(seed, name, shape, fan_in_bound(hidden))
}

/// A parameter filled with `value` (norm weights: 1; norm biases: 0).
pub fn constant(shape: impl Into<Shape>, value: f32) -> Tensor {
    Tensor::full(shape, value).as_parameter()
}
