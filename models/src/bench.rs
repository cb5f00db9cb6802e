//! The models of `bench/bench_configs.json` with their inputs, for
//! `shoal bench models`: the same configurations and input recipes as the
//! PyTorch anchor (`pytorch_bench.py`), the random inputs drawn from the
//! counter-based generator. Timing is the caller's (this crate has no clock).
use ops::rng::RandomStream;
use ops::{IndexTensor, Tensor};

use crate::{Batch, Model, ModelError, registry};

/// A model ready to be stepped on one batch.
pub struct BenchCase {
    /// The model, freshly initialized.
    pub model: Box<dyn Model>,
    /// The batch every step uses.
    pub batch: Batch,
    /// Samples per step (batch size; GCN: nodes).
    pub samples: usize,
}

impl std::fmt::Debug for BenchCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchCase")
            .field("kind", &self.model.kind())
            .field("samples", &self.samples)
            .finish()
    }
}

fn bad(kind: &str, field: &str, reason: &str) -> ModelError {
    ModelError::BadConfig {
        kind: kind.to_string(),
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

fn size(kind: &str, object: &serde_json::Value, field: &str) -> Result<usize, ModelError> {
    object
        .get(field)
        .and_then(|v| v.as_u64())
        .filter(|&n| (1..=1 << 24).contains(&n))
        .map(|n| n as usize)
        .ok_or_else(|| bad(kind, field, "expected an integer from 1 to 16777216"))
}

/// Draws for one input: its own stream under `seed`.
struct Draw {
    seed: u64,
    next: u64,
}

impl Draw {
    fn stream(&mut self) -> RandomStream {
        self.next += 1;
        RandomStream::new(self.seed, self.next)
    }

    fn normal(&mut self, shape: [usize; 2], std: f32) -> Tensor {
        self.stream().normal_tensor(shape, 0.0, std)
    }

    fn uniform(&mut self, shape: [usize; 2]) -> Tensor {
        self.stream().uniform_tensor(shape, 0.0, 1.0)
    }

    fn integers(&mut self, n: usize, below: usize) -> Vec<i64> {
        let stream = self.stream();
        let mut words = vec![0u32; n];
        stream.fill_u32(0, &mut words);
        words
            .iter()
            .map(|&w| ((w as u64 * below as u64) >> 32) as i64)
            .collect()
    }
}

/// The model called `name` in the benchmark configurations, with the
/// configuration `spec` (`{"config": ..., "batch": ..., ...}`) and inputs
/// drawn under `seed`.
pub fn case(name: &str, spec: &serde_json::Value, seed: u64) -> Result<BenchCase, ModelError> {
    let config = spec
        .get("config")
        .ok_or_else(|| bad(name, "config", "missing"))?;
    let model = registry::build(name, config, seed)?;
    let mut draw = Draw { seed, next: 0 };
    let c = |field: &str| size(name, config, field);
    let (batch, samples) = match name {
        "mlp" => {
            let b = size(name, spec, "batch")?;
            let labels = draw.integers(b, c("n_classes")?);
            let batch = Batch::new()
                .with_float("x", draw.normal([b, c("d_in")?], 1.0))
                .with_index("label", IndexTensor::from_vec([b], labels));
            (batch, b)
        }
        "lstm" | "gru" | "qrnn" | "s4d" | "mamba" => {
            let (b, t) = (size(name, spec, "batch")?, size(name, spec, "seq_len")?);
            let tokens = draw.integers(b * t, c("vocab")?);
            // targets = tokens rolled left by one along time
            let targets: Vec<i64> = (0..b * t)
                .map(|i| tokens[i / t * t + (i % t + 1) % t])
                .collect();
            let batch = Batch::new()
                .with_index("tokens", IndexTensor::from_vec([b, t], tokens))
                .with_index("targets", IndexTensor::from_vec([b, t], targets));
            (batch, b)
        }
        "autoencoder" => {
            let (b, d) = (size(name, spec, "batch")?, c("d")?);
            let batch = Batch::new()
                .with_float("x", draw.uniform([b, d]))
                .with_float("noise", draw.normal([b, d], 0.1));
            (batch, b)
        }
        "vae" => {
            let b = size(name, spec, "batch")?;
            let batch = Batch::new()
                .with_float("x", draw.uniform([b, c("d")?]))
                .with_float("eps", draw.normal([b, c("d_latent")?], 1.0));
            (batch, b)
        }
        "gan" => {
            let b = size(name, spec, "batch")?;
            let batch = Batch::new()
                .with_float("x", draw.normal([b, c("d_data")?], 1.0))
                .with_float("z", draw.normal([b, c("d_latent")?], 1.0));
            (batch, b)
        }
        "gcn" => {
            let (n, e) = (size(name, spec, "nodes")?, size(name, spec, "edges")?);
            let src = draw.integers(e, n);
            let dst = draw.integers(e, n);
            let both_src: Vec<i64> = src.iter().chain(&dst).copied().collect();
            let both_dst: Vec<i64> = dst.iter().chain(&src).copied().collect();
            let labels = draw.integers(n, c("n_classes")?);
            let mask: Vec<i64> = draw.integers(n, 2);
            let batch = Batch::new()
                .with_float("x", draw.normal([n, c("d_in")?], 1.0))
                .with_index("src", IndexTensor::from_vec([2 * e], both_src))
                .with_index("dst", IndexTensor::from_vec([2 * e], both_dst))
                .with_index("label", IndexTensor::from_vec([n], labels))
                .with_index("train_mask", IndexTensor::from_vec([n], mask));
            (batch, n)
        }
        "barlow_twins" => {
            let (b, d) = (size(name, spec, "batch")?, c("d_in")?);
            let x = draw.normal([b, d], 1.0);
            let view1 = x.add(&draw.normal([b, d], 0.1));
            let view2 = x.add(&draw.normal([b, d], 0.1));
            let batch = Batch::new()
                .with_float("view1", view1)
                .with_float("view2", view2);
            (batch, b)
        }
        "mae" => {
            let (b, d) = (size(name, spec, "batch")?, c("d")?);
            let mask = draw.stream().bernoulli_tensor([b, d], 0.75);
            let batch = Batch::new()
                .with_float("x", draw.uniform([b, d]))
                .with_float("mask", mask);
            (batch, b)
        }
        other => {
            return Err(ModelError::UnknownModel {
                kind: other.to_string(),
                known: registry::KINDS.join(", "),
            });
        }
    };
    Ok(BenchCase {
        model,
        batch,
        samples,
    })
}
