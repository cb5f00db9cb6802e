//! The plain classifier: `fc2(relu(fc1(x)))` with cross-entropy.
use ops::{ParameterSet, Tensor, init};

use crate::config::ConfigReader;
use crate::inputs::{float_matrix, labels};
use crate::{Batch, Model, ModelError};

/// `MLP(d_in, d_hidden, n_classes)` of the reference.
#[derive(Debug)]
pub struct Mlp {
    params: ParameterSet,
    d_in: usize,
    n_classes: usize,
}

impl Mlp {
    /// The model kind.
    pub const KIND: &'static str = "mlp";

    /// A model with PyTorch's default initialization drawn under `seed`.
    pub fn new(d_in: usize, d_hidden: usize, n_classes: usize, seed: u64) -> Mlp {
        let mut params = ParameterSet::new();
        init::linear(&mut params, seed, "fc1", d_in, d_hidden, true);
        init::linear(&mut params, seed, "fc2", d_hidden, n_classes, true);
        Mlp {
            params,
            d_in,
            n_classes,
        }
    }

    /// From `{"d_in", "d_hidden", "n_classes"}`.
    pub fn from_config(config: &serde_json::Value, seed: u64) -> Result<Mlp, ModelError> {
        let c = ConfigReader::new(Self::KIND, config)?;
        Ok(Mlp::new(
            c.size("d_in")?,
            c.size("d_hidden")?,
            c.size("n_classes")?,
            seed,
        ))
    }

    /// Class logits `(batch, n_classes)` of `x` `(batch, d_in)`.
    pub fn logits(&self, x: &Tensor) -> Tensor {
        let p = &self.params;
        x.linear(p.get("fc1.weight"), Some(p.get("fc1.bias")))
            .relu()
            .linear(p.get("fc2.weight"), Some(p.get("fc2.bias")))
    }
}

impl Model for Mlp {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn parameters(&self) -> &ParameterSet {
        &self.params
    }

    fn parameters_mut(&mut self) -> &mut ParameterSet {
        &mut self.params
    }

    fn loss(&self, _objective: usize, batch: &Batch) -> Result<Tensor, ModelError> {
        let x = float_matrix(batch, Self::KIND, "x", self.d_in)?;
        let label = labels(batch, Self::KIND, "label", x.dim(0), self.n_classes)?;
        Ok(self.logits(x).cross_entropy(label, ops::ops::IGNORE_INDEX))
    }
}
