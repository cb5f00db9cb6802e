//! The variational autoencoder (Kingma & Welling 2013): Bernoulli decoder
//! on `x` in [0, 1], Gaussian posterior, reparameterization with the noise
//! `eps` given in the batch, closed-form KL.
//!
//! `loss = mean over the batch of [sum_d BCEWithLogits(logits, x)
//! - 0.5 * sum_z (1 + logvar - mu^2 - exp(logvar))]`, `z = mu + exp(logvar / 2) * eps`.
use ops::ops::loss::Reduction;
use ops::{ParameterSet, Tensor, init};

use crate::config::ConfigReader;
use crate::inputs::float_matrix;
use crate::{Batch, Model, ModelError};

/// `VAE(d, d_hidden, d_latent)` of the reference.
#[derive(Debug)]
pub struct Vae {
    params: ParameterSet,
    d: usize,
    d_latent: usize,
}

/// The terms of the loss, per sample.
#[derive(Clone, Debug)]
pub struct VaeTerms {
    /// Reconstruction: summed binary cross-entropy, `(batch)`.
    pub reconstruction: Tensor,
    /// KL divergence from the prior, `(batch)`.
    pub kl: Tensor,
}

impl Vae {
    /// The model kind.
    pub const KIND: &'static str = "vae";

    /// A model with PyTorch's default initialization drawn under `seed`.
    pub fn new(d: usize, d_hidden: usize, d_latent: usize, seed: u64) -> Vae {
        let mut params = ParameterSet::new();
        init::linear(&mut params, seed, "enc", d, d_hidden, true);
        init::linear(&mut params, seed, "enc_mu", d_hidden, d_latent, true);
        init::linear(&mut params, seed, "enc_logvar", d_hidden, d_latent, true);
        init::linear(&mut params, seed, "dec1", d_latent, d_hidden, true);
        init::linear(&mut params, seed, "dec2", d_hidden, d, true);
        Vae {
            params,
            d,
            d_latent,
        }
    }

    /// From `{"d", "d_hidden", "d_latent"}`.
    pub fn from_config(config: &serde_json::Value, seed: u64) -> Result<Vae, ModelError> {
        let c = ConfigReader::new(Self::KIND, config)?;
        Ok(Vae::new(
            c.size("d")?,
            c.size("d_hidden")?,
            c.size("d_latent")?,
            seed,
        ))
    }

    /// The posterior's mean and log-variance for `x` `(batch, d)`.
    pub fn encode(&self, x: &Tensor) -> (Tensor, Tensor) {
        let h = self.params.linear(x, "enc").relu();
        (
            self.params.linear(&h, "enc_mu"),
            self.params.linear(&h, "enc_logvar"),
        )
    }

    /// Decoder logits for latent codes `z`.
    pub fn decode(&self, z: &Tensor) -> Tensor {
        self.params
            .linear(&self.params.linear(z, "dec1").relu(), "dec2")
    }

    /// Reconstruction and KL terms per sample, with posterior noise `eps`
    /// `(batch, d_latent)`.
    pub fn terms(&self, x: &Tensor, eps: &Tensor) -> VaeTerms {
        let (mu, logvar) = self.encode(x);
        let z = mu.add(&logvar.scale(0.5).exp().mul(eps));
        let logits = self.decode(&z);
        let reconstruction = logits
            .binary_cross_entropy_with_logits(x, Reduction::None)
            .sum_axis(-1, false);
        let kl = logvar
            .add_scalar(1.0)
            .sub(&mu.square())
            .sub(&logvar.exp())
            .sum_axis(-1, false)
            .scale(-0.5);
        VaeTerms { reconstruction, kl }
    }
}

impl Model for Vae {
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
        let eps = crate::inputs::float_like(batch, Self::KIND, "eps", &[x.dim(0), self.d_latent])?;
        let terms = self.terms(x, eps);
        Ok(terms.reconstruction.add(&terms.kl).mean_all())
    }
}
