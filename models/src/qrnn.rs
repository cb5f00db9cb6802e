//! The QRNN backbone (Bradbury et al. 2016): per layer,
//! `[z f o] = proj([x_{t-1}, x_t])`, then fo-pooling
//! `c_t = f_t c_{t-1} + (1 - f_t) z_t`, `h_t = o_t c_t`: the projection and
//! the pooling are one op, so the gates are activated in the buffer the
//! projection wrote and never outlive the forward as a tensor of their own.
//!
//! The first layer's input is the token embedding, so its projection of
//! the window `[E[tok_{t-1}], E[tok_t]]` equals
//! `(E W_prev^T)[tok_{t-1}] + (E W_cur^T + bias)[tok_t]`, `W_prev` and `W_cur`
//! the halves of `proj.weight`: two (vocabulary, 3 d_model) tables and a
//! lookup, instead of a (batch * time)-row product, when the vocabulary
//! has fewer entries than the batch has tokens. The lookup is fused with
//! the pooling too.
use ops::ops::conv::causal_window;
use ops::ops::index::embedding;
use ops::ops::scan::{qrnn_fo_pool_of_linear, qrnn_fo_pool_of_pair_embedding};
use ops::{IndexTensor, ParameterSet, Tensor, init};

use crate::sequence::SequenceConfig;

/// The reference's causal window (the first layer's table lookup assumes
/// a window of two tokens).
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

/// The first layer's output: fo-pooling over its gates
/// `proj([E[tok_{t-1}], E[tok_t]])` (batch, time, 3 d_model), looked up in
/// per-token tables (see the module documentation).
fn first_layer_from_tables(
    embed: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    tokens: &IndexTensor,
    d_model: usize,
) -> Tensor {
    let previous = embed.linear(&weight.narrow(1, 0, d_model), None);
    let current = embed.linear(&weight.narrow(1, d_model, d_model), Some(bias));
    qrnn_fo_pool_of_pair_embedding(&previous, &current, tokens)
}

/// The QRNN stack over the embedding `embed` of `tokens` (batch, time):
/// (batch, time, d_model).
pub(crate) fn forward(
    params: &ParameterSet,
    config: &SequenceConfig,
    embed: &Tensor,
    tokens: &IndexTensor,
) -> Tensor {
    let mut h: Option<Tensor> = None;
    for layer in 0..config.n_layers {
        let weight = params.get(&format!("layers.{layer}.proj.weight"));
        let bias = params.get(&format!("layers.{layer}.proj.bias"));
        h = Some(match &h {
            None if config.vocab < tokens.numel() => {
                first_layer_from_tables(embed, weight, bias, tokens, config.d_model)
            }
            None => {
                let window = causal_window(&embedding(embed, tokens), WINDOW);
                qrnn_fo_pool_of_linear(&window, weight, Some(bias))
            }
            Some(h) => qrnn_fo_pool_of_linear(&causal_window(h, WINDOW), weight, Some(bias)),
        });
    }
    h.unwrap_or_else(|| embedding(embed, tokens))
}
