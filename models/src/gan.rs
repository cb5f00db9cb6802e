//! The GAN (Goodfellow et al. 2014) with the non-saturating generator loss
//! and two objectives, each with its own optimizer: the discriminator's
//! `d_loss = BCE(D(x), 1) + BCE(D(G(z).detach()), 0)` over
//! `discriminator.*`, then the generator's `g_loss = BCE(D(G(z)), 1)` over
//! `generator.*`. The latents `z` are batch inputs.
use ops::ops::loss::Reduction;
use ops::{ParameterSet, Tensor, init};

use crate::config::ConfigReader;
use crate::inputs::float_matrix;
use crate::{Batch, Model, ModelError, Objective};

/// `GAN(d_latent, d_hidden, d_data)` of the reference.
#[derive(Debug)]
pub struct Gan {
    params: ParameterSet,
    d_latent: usize,
    d_data: usize,
}

/// The discriminator's objective.
pub const DISCRIMINATOR: Objective = Objective {
    name: "d_loss",
    parameter_prefix: "discriminator.",
};

/// The generator's objective.
pub const GENERATOR: Objective = Objective {
    name: "g_loss",
    parameter_prefix: "generator.",
};

/// Slope of the discriminator's leaky ReLU.
const NEGATIVE_SLOPE: f32 = 0.2;

impl Gan {
    /// The model kind.
    pub const KIND: &'static str = "gan";

    /// A model with PyTorch's default initialization drawn under `seed`.
    pub fn new(d_latent: usize, d_hidden: usize, d_data: usize, seed: u64) -> Gan {
        let mut params = ParameterSet::new();
        init::linear(&mut params, seed, "generator.fc1", d_latent, d_hidden, true);
        init::linear(&mut params, seed, "generator.fc2", d_hidden, d_data, true);
        init::linear(
            &mut params,
            seed,
            "discriminator.fc1",
            d_data,
            d_hidden,
            true,
        );
        init::linear(&mut params, seed, "discriminator.fc2", d_hidden, 1, true);
        Gan {
            params,
            d_latent,
            d_data,
        }
    }

    /// From `{"d_latent", "d_hidden", "d_data"}`.
    pub fn from_config(config: &serde_json::Value, seed: u64) -> Result<Gan, ModelError> {
        let c = ConfigReader::new(Self::KIND, config)?;
        Ok(Gan::new(
            c.size("d_latent")?,
            c.size("d_hidden")?,
            c.size("d_data")?,
            seed,
        ))
    }

    /// Samples `G(z)` for latents `z` `(batch, d_latent)`.
    pub fn generate(&self, z: &Tensor) -> Tensor {
        self.params.linear(
            &self.params.linear(z, "generator.fc1").relu(),
            "generator.fc2",
        )
    }

    /// Discriminator logits `(batch)` of points `x` `(batch, d_data)`.
    pub fn discriminate(&self, x: &Tensor) -> Tensor {
        let h = self
            .params
            .linear(x, "discriminator.fc1")
            .leaky_relu(NEGATIVE_SLOPE);
        self.params.linear(&h, "discriminator.fc2").squeeze(-1)
    }
}

fn bce(logits: &Tensor, target: f32) -> Tensor {
    logits.binary_cross_entropy_with_logits(&Tensor::full(logits.shape(), target), Reduction::Mean)
}

impl Model for Gan {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn parameters(&self) -> &ParameterSet {
        &self.params
    }

    fn parameters_mut(&mut self) -> &mut ParameterSet {
        &mut self.params
    }

    fn objectives(&self) -> Vec<Objective> {
        vec![DISCRIMINATOR, GENERATOR]
    }

    fn loss(&self, objective: usize, batch: &Batch) -> Result<Tensor, ModelError> {
        let x = float_matrix(batch, Self::KIND, "x", self.d_data)?;
        let z = float_matrix(batch, Self::KIND, "z", self.d_latent)?;
        let fake = self.generate(z);
        match objective {
            0 => {
                let real = bce(&self.discriminate(x), 1.0);
                let fake = bce(&self.discriminate(&fake.detach()), 0.0);
                Ok(real.add(&fake))
            }
            1 => Ok(bce(&self.discriminate(&fake), 1.0)),
            other => panic!("gan: no objective {other} (it has 2)"),
        }
    }
}
