//! Model inputs from data: turns the arrays `datasets` read for a
//! micro-batch into a `models::Batch`, adding the random draws a model's
//! loss takes as inputs (denoising noise, VAE noise, GAN latents, masks,
//! augmented views).
//!
//! Every draw comes from the counter-based generator keyed by (job seed,
//! purpose, epoch, sample id): a sample gets the same noise whichever
//! virtual rank, worker or step position reads it, which is what makes a
//! run independent of the number of workers.
use datasets::read::{Batch as DataBatch, FloatArray, IntArray};
use models::Batch;
use ops::rng::{RandomStream, stream_id};
use ops::{IndexTensor, Tensor};

use crate::WorkerError;

/// How a task's random inputs are drawn (job spec settings with defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct DrawSettings {
    /// Multiplies every float input read from the data (e.g. 1/16 to bring
    /// the digits' pixels into [0, 1]).
    pub input_scale: f32,
    /// Standard deviation of the denoising autoencoder's input noise.
    pub noise_std: f32,
    /// Probability that the masked autoencoder hides an entry.
    pub mask_ratio: f32,
    /// Standard deviation of the Gaussian noise of each Barlow Twins view.
    pub view_noise_std: f32,
}

impl Default for DrawSettings {
    fn default() -> DrawSettings {
        DrawSettings {
            input_scale: 1.0,
            noise_std: 0.1,
            mask_ratio: 0.75,
            view_noise_std: 0.1,
        }
    }
}

/// Purposes of random draws: part of each stream's key.
mod purpose {
    pub(super) const DENOISING_NOISE: u64 = 1;
    pub(super) const VAE_NOISE: u64 = 2;
    pub(super) const GAN_LATENT: u64 = 3;
    pub(super) const MASK: u64 = 4;
    pub(super) const VIEW_ONE: u64 = 5;
    pub(super) const VIEW_TWO: u64 = 6;
}

fn float_input<'a>(data: &'a DataBatch, name: &str) -> Result<&'a FloatArray, WorkerError> {
    data.floats.get(name).ok_or_else(|| WorkerError::Input {
        reason: format!("the data has no float input `{name}`"),
    })
}

fn int_input<'a>(data: &'a DataBatch, name: &str) -> Result<&'a IntArray, WorkerError> {
    data.ints.get(name).ok_or_else(|| WorkerError::Input {
        reason: format!("the data has no integer input `{name}`"),
    })
}

fn float_tensor(array: &FloatArray, scale: f32) -> Result<Tensor, WorkerError> {
    check_rank(&array.shape)?;
    let values = if scale == 1.0 {
        array.values.clone()
    } else {
        array.values.iter().map(|v| v * scale).collect()
    };
    Ok(Tensor::from_vec(array.shape.as_slice(), values))
}

fn index_tensor(array: &IntArray) -> Result<IndexTensor, WorkerError> {
    check_rank(&array.shape)?;
    Ok(IndexTensor::from_vec(
        array.shape.as_slice(),
        array.values.clone(),
    ))
}

fn check_rank(shape: &[usize]) -> Result<(), WorkerError> {
    if shape.is_empty() || shape.len() > ops::shape::MAX_RANK {
        return Err(WorkerError::Input {
            reason: format!("an input of shape {shape:?} cannot become a tensor"),
        });
    }
    Ok(())
}

/// `width` draws per sample, from the stream keyed by (seed, purpose, epoch,
/// sample): `fill(stream, out)` fills one sample's row.
fn per_sample(
    seed: u64,
    purpose: u64,
    epoch: u64,
    samples: &[u64],
    width: usize,
    fill: impl Fn(&RandomStream, &mut [f32]),
) -> Tensor {
    let mut values = vec![0.0; samples.len() * width];
    for (row, &sample) in values.chunks_exact_mut(width.max(1)).zip(samples) {
        let stream = RandomStream::new(seed, stream_id(&[purpose, epoch, sample]));
        fill(&stream, row);
    }
    Tensor::from_vec([samples.len(), width], values)
}

fn gaussian(
    seed: u64,
    purpose: u64,
    epoch: u64,
    samples: &[u64],
    width: usize,
    std: f32,
) -> Tensor {
    per_sample(seed, purpose, epoch, samples, width, |stream, row| {
        stream.fill_normal(0, 0.0, std, row)
    })
}

fn config_usize(config: &serde_json::Value, kind: &str, field: &str) -> Result<usize, WorkerError> {
    config
        .get(field)
        .and_then(serde_json::Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| WorkerError::Input {
            reason: format!("model `{kind}` needs the integer config field `{field}`"),
        })
}

/// The inputs of model `kind` (with constructor `config`) for the samples
/// of `data`, read in epoch `epoch` of a job seeded with `seed`.
pub fn model_batch(
    kind: &str,
    config: &serde_json::Value,
    data: &DataBatch,
    seed: u64,
    epoch: u64,
    settings: &DrawSettings,
) -> Result<Batch, WorkerError> {
    let samples = &data.samples;
    let scale = settings.input_scale;
    Ok(match kind {
        "mlp" => Batch::new()
            .with_float("x", float_tensor(float_input(data, "x")?, scale)?)
            .with_index("label", index_tensor(int_input(data, "label")?)?),
        "lstm" | "gru" | "qrnn" | "s4d" | "mamba" => Batch::new()
            .with_index("tokens", index_tensor(int_input(data, "tokens")?)?)
            .with_index("targets", index_tensor(int_input(data, "targets")?)?),
        "autoencoder" => {
            let x = float_tensor(float_input(data, "x")?, scale)?;
            let noise = gaussian(
                seed,
                purpose::DENOISING_NOISE,
                epoch,
                samples,
                x.dim(-1),
                settings.noise_std,
            );
            Batch::new().with_float("x", x).with_float("noise", noise)
        }
        "vae" => {
            let x = float_tensor(float_input(data, "x")?, scale)?;
            let latent = config_usize(config, kind, "d_latent")?;
            let eps = gaussian(seed, purpose::VAE_NOISE, epoch, samples, latent, 1.0);
            Batch::new().with_float("x", x).with_float("eps", eps)
        }
        "gan" => {
            let x = float_tensor(float_input(data, "x")?, scale)?;
            let latent = config_usize(config, kind, "d_latent")?;
            let z = gaussian(seed, purpose::GAN_LATENT, epoch, samples, latent, 1.0);
            Batch::new().with_float("x", x).with_float("z", z)
        }
        "mae" => {
            let x = float_tensor(float_input(data, "x")?, scale)?;
            let ratio = settings.mask_ratio;
            let mask = per_sample(seed, purpose::MASK, epoch, samples, x.dim(-1), |s, row| {
                s.fill_bernoulli(0, ratio, row)
            });
            Batch::new().with_float("x", x).with_float("mask", mask)
        }
        "barlow_twins" => {
            let x = float_tensor(float_input(data, "x")?, scale)?;
            let width = x.dim(-1);
            let std = settings.view_noise_std;
            let view = |purpose| x.add(&gaussian(seed, purpose, epoch, samples, width, std));
            let (view1, view2) = (view(purpose::VIEW_ONE), view(purpose::VIEW_TWO));
            Batch::new()
                .with_float("view1", view1)
                .with_float("view2", view2)
        }
        other => {
            return Err(WorkerError::Input {
                reason: format!(
                    "model `{other}` cannot be trained from micro-batches of samples by this worker"
                ),
            });
        }
    })
}
