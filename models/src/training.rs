//! One training step: for each objective of the model in order, loss,
//! backward, and an optimizer step on that objective's parameters (one
//! optimizer per objective). For a GAN this is a discriminator step, then
//! a generator step on the same batch, as in the reference fixtures.
//!
//! The pieces are also available apart ([`objective_gradients`] and
//! [`Trainer::apply`]) for the data-parallel worker, which all-reduces each
//! objective's gradients between the two.
use ops::{OpsError, Optimizer, OptimizerConfig, Tensor};

use crate::{Batch, Model, ModelError};

/// The loss of objective `objective` on `batch` and its gradients, in
/// parameter order (`None` for parameters the objective does not train or
/// does not reach).
pub fn objective_gradients(
    model: &dyn Model,
    objective: usize,
    batch: &Batch,
) -> Result<(f32, Vec<Option<Tensor>>), ModelError> {
    let prefix = model.objectives()[objective].parameter_prefix;
    let loss = model.loss(objective, batch)?;
    let grads = loss.backward();
    let gradients = model
        .parameters()
        .iter()
        .map(|(name, p)| {
            if name.starts_with(prefix) {
                grads.get(p).cloned()
            } else {
                None
            }
        })
        .collect();
    Ok((loss.item(), gradients))
}

/// The optimizers of a model's objectives, and the training step.
#[derive(Clone, Debug)]
pub struct Trainer {
    optimizers: Vec<Optimizer>,
}

impl Trainer {
    /// One optimizer with `config` per objective of `model`, over that
    /// objective's parameters.
    pub fn new(model: &dyn Model, config: &OptimizerConfig) -> Trainer {
        Trainer {
            optimizers: model
                .objectives()
                .iter()
                .map(|o| Optimizer::with_prefix(config.clone(), o.parameter_prefix))
                .collect(),
        }
    }

    /// The optimizers, in objective order.
    pub fn optimizers(&self) -> &[Optimizer] {
        &self.optimizers
    }

    /// Sets every optimizer's learning rate (for schedules).
    pub fn set_lr(&mut self, lr: f64) {
        for optimizer in &mut self.optimizers {
            optimizer.set_lr(lr);
        }
    }

    /// One step: for each objective in order, its loss on `batch` (with the
    /// parameters as updated by the objectives before it), backward, and
    /// its optimizer's update. Returns the losses, in objective order, each
    /// measured before its update.
    pub fn step(&mut self, model: &mut dyn Model, batch: &Batch) -> Result<Vec<f32>, ModelError> {
        let mut losses = Vec::with_capacity(self.optimizers.len());
        for objective in 0..self.optimizers.len() {
            let (loss, gradients) = objective_gradients(model, objective, batch)?;
            self.apply(model, objective, &gradients);
            losses.push(loss);
        }
        Ok(losses)
    }

    /// Applies objective `objective`'s optimizer with `gradients` (in
    /// parameter order, e.g. all-reduced across workers).
    pub fn apply(&mut self, model: &mut dyn Model, objective: usize, gradients: &[Option<Tensor>]) {
        self.optimizers[objective].step_with_gradients(model.parameters_mut(), gradients);
    }

    /// Every optimizer's state, as `<parameter>/<field>` tensors (the
    /// objectives' parameter sets are disjoint, so names do not collide).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.optimizers
            .iter()
            .flat_map(|o| o.state_tensors())
            .collect()
    }

    /// Restores the state that [`Trainer::state_tensors`] exported.
    pub fn load_state_tensors(
        &mut self,
        model: &dyn Model,
        tensors: &[(String, Tensor)],
    ) -> Result<(), OpsError> {
        for optimizer in &mut self.optimizers {
            optimizer.load_state_tensors(model.parameters(), tensors)?;
        }
        Ok(())
    }
}
