//! The LSTM and GRU backbones: stacked `torch.nn.LSTM` / `torch.nn.GRU`
//! layers (`batch_first`, zero initial states), parameters named
//! `rnn.weight_ih_l{k}`, `rnn.weight_hh_l{k}`, `rnn.bias_ih_l{k}`,
//! `rnn.bias_hh_l{k}`, each layer one fused op.
use ops::ops::recurrent::{gru_layer, lstm_layer};
use ops::{ParameterSet, Tensor, init};

use crate::sequence::SequenceConfig;

fn init_layers(params: &mut ParameterSet, seed: u64, config: &SequenceConfig, gates: usize) {
    let h = config.d_model;
    for layer in 0..config.n_layers {
        for (name, shape) in [
            (format!("rnn.weight_ih_l{layer}"), vec![gates * h, h]),
            (format!("rnn.weight_hh_l{layer}"), vec![gates * h, h]),
            (format!("rnn.bias_ih_l{layer}"), vec![gates * h]),
            (format!("rnn.bias_hh_l{layer}"), vec![gates * h]),
        ] {
            let value = init::recurrent(seed, &name, ops::Shape::new(&shape), h);
            params.insert(name, value);
        }
    }
}

/// Inserts the LSTM's parameters (all `U(-1/sqrt(H), 1/sqrt(H))`).
pub(crate) fn init_lstm(params: &mut ParameterSet, seed: u64, config: &SequenceConfig) {
    init_layers(params, seed, config, 4);
}

/// Inserts the GRU's parameters (all `U(-1/sqrt(H), 1/sqrt(H))`).
pub(crate) fn init_gru(params: &mut ParameterSet, seed: u64, config: &SequenceConfig) {
    init_layers(params, seed, config, 3);
}

fn forward(
    params: &ParameterSet,
    config: &SequenceConfig,
    mut h: Tensor,
    layer_op: fn(&Tensor, &Tensor, &Tensor, &Tensor, &Tensor) -> Tensor,
) -> Tensor {
    for layer in 0..config.n_layers {
        h = layer_op(
            &h,
            params.get(&format!("rnn.weight_ih_l{layer}")),
            params.get(&format!("rnn.weight_hh_l{layer}")),
            params.get(&format!("rnn.bias_ih_l{layer}")),
            params.get(&format!("rnn.bias_hh_l{layer}")),
        );
    }
    h
}

/// The LSTM stack over `h` (batch, time, d_model).
pub(crate) fn lstm_forward(params: &ParameterSet, config: &SequenceConfig, h: Tensor) -> Tensor {
    forward(params, config, h, lstm_layer)
}

/// The GRU stack over `h` (batch, time, d_model).
pub(crate) fn gru_forward(params: &ParameterSet, config: &SequenceConfig, h: Tensor) -> Tensor {
    forward(params, config, h, gru_layer)
}
