//! One data-parallel training step, without I/O: the gradients of each
//! hosted virtual rank flattened into one buffer per rank (the loss rides
//! along as the last value, so one all-reduce also averages the loss), and
//! the mean gradients rebuilt from the all-reduced buffer.
//!
//! The buffer layout depends on the model and the objective only: every
//! parameter the objective trains, in `state_dict` order, a gradient the
//! loss does not reach counted as zeros. So all virtual ranks agree on it
//! without talking.
use models::{Batch, Model, ModelError, training::objective_gradients};
use ops::{ParameterSet, Tensor};
use rayon::prelude::*;

/// Number of values in an objective's gradient buffer: the elements of the
/// parameters it trains, plus one for the loss.
pub fn buffer_len(parameters: &ParameterSet, prefix: &str) -> usize {
    parameters
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, tensor)| tensor.numel())
        .sum::<usize>()
        + 1
}

/// The gradients (in parameter order, `None` for untrained or unreached
/// parameters) and the loss as one buffer.
pub fn flatten_gradients(
    parameters: &ParameterSet,
    prefix: &str,
    gradients: &[Option<Tensor>],
    loss: f32,
) -> Vec<f32> {
    let mut buffer = Vec::with_capacity(buffer_len(parameters, prefix));
    for ((name, tensor), gradient) in parameters.iter().zip(gradients) {
        if !name.starts_with(prefix) {
            continue;
        }
        match gradient {
            Some(gradient) => buffer.extend_from_slice(gradient.data()),
            None => buffer.extend(std::iter::repeat_n(0.0, tensor.numel())),
        }
    }
    buffer.push(loss);
    buffer
}

/// The mean gradients (the all-reduced sum divided by the number of virtual
/// ranks) in parameter order, and the mean loss.
///
/// # Panics
/// When `summed` does not have the objective's buffer length.
#[track_caller]
pub fn mean_gradients(
    parameters: &ParameterSet,
    prefix: &str,
    summed: &[f32],
    virtual_ranks: usize,
) -> (Vec<Option<Tensor>>, f32) {
    assert_eq!(
        summed.len(),
        buffer_len(parameters, prefix),
        "gradient buffer length"
    );
    let scale = 1.0 / virtual_ranks as f32;
    let mut offset = 0;
    let gradients = parameters
        .iter()
        .map(|(name, tensor)| {
            if !name.starts_with(prefix) {
                return None;
            }
            let values = summed[offset..offset + tensor.numel()]
                .iter()
                .map(|v| v * scale)
                .collect();
            offset += tensor.numel();
            Some(Tensor::from_vec(tensor.shape(), values))
        })
        .collect();
    (gradients, summed[offset] * scale)
}

/// The gradient buffers of objective `objective`, one per micro-batch (one
/// per hosted virtual rank, in rank order). Ranks are computed in parallel
/// when rayon has threads; each rank's result does not depend on it.
pub fn rank_gradients(
    model: &dyn Model,
    objective: usize,
    micro_batches: &[Batch],
) -> Result<Vec<Vec<f32>>, ModelError> {
    let prefix = model.objectives()[objective].parameter_prefix;
    let one = |batch: &Batch| -> Result<Vec<f32>, ModelError> {
        let (loss, gradients) = objective_gradients(model, objective, batch)?;
        Ok(flatten_gradients(
            model.parameters(),
            prefix,
            &gradients,
            loss,
        ))
    };
    if micro_batches.len() > 1 && rayon::current_num_threads() > 1 {
        micro_batches.par_iter().map(one).collect()
    } else {
        micro_batches.iter().map(one).collect()
    }
}
