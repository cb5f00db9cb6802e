//! The QRNN backbone (Bradbury et al. 2016): per layer,
//! `[z f o] = proj([x_{t-1}, x_t])`, then fo-pooling
//! `c_t = f_t c_{t-1} + (1 - f_t) z_t`, `h_t = o_t c_t`, fused in one op.
use ops::ops::conv::causal_window;
use ops::ops::scan::qrnn_fo_pool;
use ops::{ParameterSet, Tensor, init};

use crate::sequence::SequenceConfig;

/// The reference's causal window.
const WINDOW: usize = 2;

/// Inserts `layers.{k}.proj` (`nn.Linear(2 d_model, 3 d_model)`).
pub(crate) fn init(params: &mut ParameterSet, seed: u64, config: &SequenceConfig) {
    let d = config.d_model;
    for layer in 0..config.n_layers {
        init::linear(
            params,
            seed,
            &format!("layers.{layer}.proj"),
            WINDOW * d,
            3 * d,
            true,
        );
    }
}

/// The QRNN stack over `h` (batch, time, d_model).
pub(crate) fn forward(params: &ParameterSet, config: &SequenceConfig, mut h: Tensor) -> Tensor {
    for layer in 0..config.n_layers {
        let gates = causal_window(&h, WINDOW).linear(
            params.get(&format!("layers.{layer}.proj.weight")),
            Some(params.get(&format!("layers.{layer}.proj.bias"))),
        );
        h = qrnn_fo_pool(&gates);
    }
    h
}
