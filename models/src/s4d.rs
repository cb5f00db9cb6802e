//! The S4D backbone: pre-norm residual layers
//! `x + out_proj(gelu(ssm(layer_norm(x))))` with a diagonal real state
//! space discretized by zero-order hold (S4D-Real), the scan fused in one op.
use ops::ops::scan::s4d_scan;
use ops::{ParameterSet, Tensor, init};

use crate::sequence::SequenceConfig;

/// `nn.LayerNorm`'s default epsilon.
const LAYER_NORM_EPS: f32 = 1e-5;

/// Inserts each layer's parameters in `state_dict` order: `log_dt`
/// `U(log 0.001, log 0.1)`, `A_log = log(1..=N)` per channel, `B = 1`,
/// `C ~ N(0, 0.5^2)`, `D = 1`, the norm, then `out_proj`.
pub(crate) fn init(params: &mut ParameterSet, seed: u64, config: &SequenceConfig) {
    let (h, n) = (config.d_model, config.d_state);
    for layer in 0..config.n_layers {
        let p = format!("layers.{layer}");
        let name = format!("{p}.log_dt");
        let log_dt = init::uniform_range(seed, &name, [h], 0.001f32.ln(), 0.1f32.ln());
        params.insert(name, log_dt);
        params.insert(format!("{p}.A_log"), state_log_ladder(h, n));
        params.insert(format!("{p}.B"), init::constant([h, n], 1.0));
        let name = format!("{p}.C");
        let c = init::normal(seed, &name, [h, n], 0.0, 0.5);
        params.insert(name, c);
        params.insert(format!("{p}.D"), init::constant([h], 1.0));
        params.insert(format!("{p}.norm.weight"), init::constant([h], 1.0));
        params.insert(format!("{p}.norm.bias"), init::constant([h], 0.0));
        init::linear(params, seed, &format!("{p}.out_proj"), h, h, true);
    }
}

/// `log(1..=states)` repeated for each of `channels` rows: the S4D-Real
/// and Mamba initialization of `A_log`.
pub(crate) fn state_log_ladder(channels: usize, states: usize) -> Tensor {
    let row: Vec<f32> = (1..=states).map(|i| (i as f32).ln()).collect();
    Tensor::parameter([channels, states], row.repeat(channels))
}

/// The S4D stack over `h` (batch, time, d_model).
pub(crate) fn forward(params: &ParameterSet, config: &SequenceConfig, mut h: Tensor) -> Tensor {
    for layer in 0..config.n_layers {
        let p = |name: &str| params.get(&format!("layers.{layer}.{name}"));
        let u = h.layer_norm(Some(p("norm.weight")), Some(p("norm.bias")), LAYER_NORM_EPS);
        let y = s4d_scan(&u, p("log_dt"), p("A_log"), p("B"), p("C"), p("D"));
        h = h.add(
            &y.gelu()
                .linear(p("out_proj.weight"), Some(p("out_proj.bias"))),
        );
    }
    h
}
