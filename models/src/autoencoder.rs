//! The denoising autoencoder: reconstruct `x` from `x + noise` (mean squared error).
use ops::{ParameterSet, Tensor, init};

use crate::config::ConfigReader;
use crate::inputs::{float_like, float_matrix};
use crate::{Batch, Model, ModelError};

/// `Autoencoder(d, d_hidden, d_latent)` of the reference.
#[derive(Debug)]
pub struct Autoencoder {
    params: ParameterSet,
    d: usize,
}

impl Autoencoder {
    /// The model kind.
    pub const KIND: &'static str = "autoencoder";

    /// A model with PyTorch's default initialization drawn under `seed`.
    pub fn new(d: usize, d_hidden: usize, d_latent: usize, seed: u64) -> Autoencoder {
        let mut params = ParameterSet::new();
        init::linear(&mut params, seed, "enc1", d, d_hidden, true);
        init::linear(&mut params, seed, "enc2", d_hidden, d_latent, true);
        init::linear(&mut params, seed, "dec1", d_latent, d_hidden, true);
        init::linear(&mut params, seed, "dec2", d_hidden, d, true);
        Autoencoder { params, d }
    }

    /// From `{"d", "d_hidden", "d_latent"}`.
    pub fn from_config(config: &serde_json::Value, seed: u64) -> Result<Autoencoder, ModelError> {
        let c = ConfigReader::new(Self::KIND, config)?;
        Ok(Autoencoder::new(
            c.size("d")?,
            c.size("d_hidden")?,
            c.size("d_latent")?,
            seed,
        ))
    }

    /// The latent code of `x` `(batch, d)`.
    pub fn encode(&self, x: &Tensor) -> Tensor {
        self.params
            .linear(&self.params.linear(x, "enc1").relu(), "enc2")
    }

    /// The reconstruction of latent codes `z`.
    pub fn decode(&self, z: &Tensor) -> Tensor {
        self.params
            .linear(&self.params.linear(z, "dec1").relu(), "dec2")
    }
}

impl Model for Autoencoder {
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
        let x = float_matrix(batch, Self::KIND, "x", self.d)?;
        let noise = float_like(batch, Self::KIND, "noise", x.dims())?;
        let reconstruction = self.decode(&self.encode(&x.add(noise)));
        Ok(reconstruction.mse_loss(x))
    }
}
