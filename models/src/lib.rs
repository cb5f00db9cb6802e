//! The model zoo of "The Missing Bits", with PyTorch's parameter names and math.
//!
//! Every model is a [`Model`]: named parameters (the reference module's
//! `state_dict` keys, see `../shared/reference/models.py`), and one or more
//! objectives, each a scalar loss of a [`Batch`] together with the
//! parameters that objective trains (a GAN has two). Random draws (VAE
//! noise, GAN latents, masks, views) are inputs in the batch, never drawn
//! inside a loss. `models` depends on `ops` only.
#![forbid(unsafe_code)]

pub mod autoencoder;
pub mod barlow_twins;
pub mod batch;
pub mod bench;
pub mod config;
pub mod error;
pub mod gan;
pub mod gcn;
pub mod inputs;
pub mod mae;
pub mod mamba;
pub mod mlp;
pub mod qrnn;
pub mod recurrent;
pub mod registry;
pub mod s4d;
pub mod sequence;
pub mod training;
pub mod vae;

pub use batch::Batch;
pub use error::ModelError;
pub use registry::build;
pub use training::Trainer;

use ops::{ParameterSet, Tensor};

/// One scalar loss of a model and the parameters it trains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Objective {
    /// The loss's name, as reported in metrics (`loss`, `d_loss`, `g_loss`).
    pub name: &'static str,
    /// The objective trains the parameters whose names start with this
    /// prefix (empty: all of them).
    pub parameter_prefix: &'static str,
}

/// The single objective of most models: `loss`, over every parameter.
pub const SINGLE_OBJECTIVE: Objective = Objective {
    name: "loss",
    parameter_prefix: "",
};

/// A trainable model.
pub trait Model: Send + Sync {
    /// The model's kind, as in job specs and fixtures (`mlp`, `lstm`, ...).
    fn kind(&self) -> &'static str;

    /// The parameters, in `state_dict` order.
    fn parameters(&self) -> &ParameterSet;

    /// The parameters, for optimizers and checkpoint loading.
    fn parameters_mut(&mut self) -> &mut ParameterSet;

    /// The objectives, optimized one after the other in each step, each
    /// with its own optimizer (a GAN: discriminator, then generator).
    fn objectives(&self) -> Vec<Objective> {
        vec![SINGLE_OBJECTIVE]
    }

    /// The loss of objective `objective` (an index into
    /// [`Model::objectives`]) on `batch`.
    fn loss(&self, objective: usize, batch: &Batch) -> Result<Tensor, ModelError>;
}
