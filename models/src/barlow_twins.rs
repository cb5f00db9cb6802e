//! Barlow Twins (Zbontar et al. 2021): two views of each sample (made by
//! the data pipeline's augmentations) through a backbone and a projector;
//! the loss drives the cross-correlation of the standardized projections
//! to the identity.
use ops::ops::loss::barlow_twins_loss;
use ops::{ParameterSet, Tensor, init};

use crate::config::ConfigReader;
use crate::inputs::{float_like, float_matrix};
use crate::{Batch, Model, ModelError};

/// Weight of the off-diagonal terms.
pub const LAMBDA: f32 = 0.0051;

/// `BarlowTwins(d_in, d_hidden, d_proj)` of the reference.
#[derive(Debug)]
pub struct BarlowTwins {
    params: ParameterSet,
    d_in: usize,
}

impl BarlowTwins {
    /// The model kind.
    pub const KIND: &'static str = "barlow_twins";

    /// A model with PyTorch's default initialization drawn under `seed`.
    pub fn new(d_in: usize, d_hidden: usize, d_proj: usize, seed: u64) -> BarlowTwins {
        let mut params = ParameterSet::new();
        init::linear(&mut params, seed, "backbone.fc1", d_in, d_hidden, true);
        init::linear(&mut params, seed, "backbone.fc2", d_hidden, d_hidden, true);
        init::linear(&mut params, seed, "projector.fc1", d_hidden, d_proj, true);
        // No bias: the standardization removes it (as in the original).
        init::linear(&mut params, seed, "projector.fc2", d_proj, d_proj, false);
        BarlowTwins { params, d_in }
    }

    /// From `{"d_in", "d_hidden", "d_proj"}`.
    pub fn from_config(config: &serde_json::Value, seed: u64) -> Result<BarlowTwins, ModelError> {
        let c = ConfigReader::new(Self::KIND, config)?;
        Ok(BarlowTwins::new(
            c.size("d_in")?,
            c.size("d_hidden")?,
            c.size("d_proj")?,
            seed,
        ))
    }

    /// The backbone's features (what a downstream probe uses).
    pub fn embed(&self, x: &Tensor) -> Tensor {
        let h = self.params.linear(x, "backbone.fc1").relu();
        self.params.linear(&h, "backbone.fc2")
    }

    /// The projection the loss is computed on.
    pub fn project(&self, x: &Tensor) -> Tensor {
        let h = self.embed(x).relu();
        let h = self.params.linear(&h, "projector.fc1").relu();
        self.params.linear(&h, "projector.fc2")
    }
}

impl Model for BarlowTwins {
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
        let view1 = float_matrix(batch, Self::KIND, "view1", self.d_in)?;
        let view2 = float_like(batch, Self::KIND, "view2", view1.dims())?;
        Ok(barlow_twins_loss(
            &self.project(view1),
            &self.project(view2),
            LAMBDA,
        ))
    }
}
