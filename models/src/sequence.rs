//! The sequence models of the reference's `SequenceModel`: token embedding,
//! a backbone over (batch, time, d_model), and a linear head scored by
//! next-token cross-entropy with `ignore_index = -100`. The backbones
//! (LSTM, GRU, QRNN, S4D, Mamba) live in their own modules; every
//! recurrence runs through one fused `ops` op per layer, never a
//! per-time-step graph.
use ops::ops::IGNORE_INDEX;
use ops::ops::index::embedding;
use ops::{IndexTensor, ParameterSet, Tensor, init};

use crate::config::ConfigReader;
use crate::{Batch, Model, ModelError};
use crate::{mamba, qrnn, recurrent, s4d};

/// Which backbone a [`SequenceModel`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backbone {
    /// `nn.LSTM(d_model, d_model, n_layers, batch_first=True)`.
    Lstm,
    /// `nn.GRU(d_model, d_model, n_layers, batch_first=True)`.
    Gru,
    /// QRNN layers with fo-pooling and a causal window of 2.
    Qrnn,
    /// Pre-norm residual S4D-Real layers.
    S4d,
    /// Mamba layers (RMSNorm residual) and a final RMSNorm.
    Mamba,
}

impl Backbone {
    /// The model kind (as in job specs and fixtures).
    pub fn kind(self) -> &'static str {
        match self {
            Backbone::Lstm => "lstm",
            Backbone::Gru => "gru",
            Backbone::Qrnn => "qrnn",
            Backbone::S4d => "s4d",
            Backbone::Mamba => "mamba",
        }
    }

    /// The backbone of model kind `kind`, if it is a sequence model.
    pub fn from_kind(kind: &str) -> Option<Backbone> {
        [
            Backbone::Lstm,
            Backbone::Gru,
            Backbone::Qrnn,
            Backbone::S4d,
            Backbone::Mamba,
        ]
        .into_iter()
        .find(|b| b.kind() == kind)
    }
}

/// Sizes of a sequence model: the reference constructor's arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequenceConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Width of the backbone.
    pub d_model: usize,
    /// Number of layers.
    pub n_layers: usize,
    /// States per channel (S4D, Mamba).
    pub d_state: usize,
}

/// `SequenceModel(kind, vocab, d_model, n_layers, d_state)` of the reference.
#[derive(Debug)]
pub struct SequenceModel {
    backbone: Backbone,
    config: SequenceConfig,
    params: ParameterSet,
}

impl SequenceModel {
    /// A model with PyTorch's default initialization (distributions) drawn
    /// under `seed`, parameters in `state_dict` order.
    pub fn new(backbone: Backbone, config: SequenceConfig, seed: u64) -> SequenceModel {
        let mut params = ParameterSet::new();
        init::embedding(&mut params, seed, "embed", config.vocab, config.d_model);
        match backbone {
            Backbone::Lstm => recurrent::init_lstm(&mut params, seed, &config),
            Backbone::Gru => recurrent::init_gru(&mut params, seed, &config),
            Backbone::Qrnn => qrnn::init(&mut params, seed, &config),
            Backbone::S4d => s4d::init(&mut params, seed, &config),
            Backbone::Mamba => mamba::init(&mut params, seed, &config),
        }
        init::linear(
            &mut params,
            seed,
            "head",
            config.d_model,
            config.vocab,
            true,
        );
        SequenceModel {
            backbone,
            config,
            params,
        }
    }

    /// From `{"kind", "vocab", "d_model", "n_layers", "d_state"}` (`kind`
    /// must agree with `backbone` when present; `d_state` defaults to 8).
    pub fn from_config(
        backbone: Backbone,
        config: &serde_json::Value,
        seed: u64,
    ) -> Result<SequenceModel, ModelError> {
        let c = ConfigReader::new(backbone.kind(), config)?;
        if config.get("kind").is_some() {
            let kind = c.string("kind")?;
            if kind != backbone.kind() {
                return Err(ModelError::BadConfig {
                    kind: backbone.kind().to_string(),
                    field: "kind".into(),
                    reason: format!("says `{kind}`"),
                });
            }
        }
        let sizes = SequenceConfig {
            vocab: c.size("vocab")?,
            d_model: c.size("d_model")?,
            n_layers: c.size("n_layers")?,
            d_state: c.size_or("d_state", 8)?,
        };
        Ok(SequenceModel::new(backbone, sizes, seed))
    }

    /// The backbone.
    pub fn backbone(&self) -> Backbone {
        self.backbone
    }

    /// The sizes.
    pub fn config(&self) -> SequenceConfig {
        self.config
    }

    /// The backbone's output (batch, time, d_model) for `tokens` (batch, time).
    ///
    /// # Panics
    /// When a token is outside the vocabulary (checked by [`Model::loss`]).
    pub fn hidden(&self, tokens: &IndexTensor) -> Tensor {
        let embed = self.params.get("embed.weight");
        let p = &self.params;
        let c = &self.config;
        match self.backbone {
            Backbone::Lstm => recurrent::lstm_forward(p, c, embedding(embed, tokens)),
            Backbone::Gru => recurrent::gru_forward(p, c, embedding(embed, tokens)),
            Backbone::Qrnn => qrnn::forward(p, c, embed, tokens),
            Backbone::S4d => s4d::forward(p, c, embedding(embed, tokens)),
            Backbone::Mamba => mamba::forward(p, c, embedding(embed, tokens)),
        }
    }

    /// Next-token logits (batch, time, vocab).
    pub fn logits(&self, tokens: &IndexTensor) -> Tensor {
        self.hidden(tokens).linear(
            self.params.get("head.weight"),
            Some(self.params.get("head.bias")),
        )
    }
}

/// The integer input `name`: (batch, time) values in `0..vocab`, or also
/// `IGNORE_INDEX` when `allow_ignored`.
fn token_matrix<'a>(
    batch: &'a Batch,
    kind: &str,
    name: &str,
    vocab: usize,
    allow_ignored: bool,
) -> Result<&'a IndexTensor, ModelError> {
    let t = batch.index(kind, name)?;
    let bad = |expected: String| ModelError::BadInput {
        kind: kind.to_string(),
        name: name.to_string(),
        expected,
        found: t.dims().to_vec(),
    };
    if t.dims().len() != 2 || t.numel() == 0 {
        return Err(bad("(batch >= 1, time >= 1) tokens".into()));
    }
    if let Some(&v) = t
        .data()
        .iter()
        .find(|&&v| !((0..vocab as i64).contains(&v) || (allow_ignored && v == IGNORE_INDEX)))
    {
        return Err(bad(format!("tokens in 0..{vocab}, found {v}")));
    }
    Ok(t)
}

impl Model for SequenceModel {
    fn kind(&self) -> &'static str {
        self.backbone.kind()
    }

    fn parameters(&self) -> &ParameterSet {
        &self.params
    }

    fn parameters_mut(&mut self) -> &mut ParameterSet {
        &mut self.params
    }

    fn loss(&self, _objective: usize, batch: &Batch) -> Result<Tensor, ModelError> {
        let kind = self.kind();
        let vocab = self.config.vocab;
        let tokens = token_matrix(batch, kind, "tokens", vocab, false)?;
        let targets = token_matrix(batch, kind, "targets", vocab, true)?;
        if targets.dims() != tokens.dims() {
            return Err(ModelError::BadInput {
                kind: kind.to_string(),
                name: "targets".into(),
                expected: format!("the shape of tokens {:?}", tokens.dims()),
                found: targets.dims().to_vec(),
            });
        }
        let logits = self.logits(tokens);
        let rows = tokens.numel();
        Ok(logits
            .reshape([rows, vocab])
            .cross_entropy(&targets.reshape([rows]), IGNORE_INDEX))
    }
}
