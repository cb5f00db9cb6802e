//! Shared helpers of the learning tests and of the `learning` example:
//! data (digits, selective copying, a block-model graph), splits, training
//! loops and scores. Every draw is keyed by (seed, step, sample) through
//! the counter-based generator.
#![allow(dead_code, unreachable_pub)]

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int64Type};
use datasets::generate::{Generator, GeneratorOptions};
use models::sequence::{Backbone, SequenceConfig, SequenceModel};
use models::{Batch, Model, Trainer};
use ops::rng::{RandomStream, stream_id};
use ops::{IndexTensor, LearningRateSchedule, OptimizerConfig, Tensor, no_grad};

/// Pixels of one digit image.
pub const PIXELS: usize = 64;

/// The 8x8 digits of `data/digits.parquet`: pixels scaled to [0, 1]
/// (row-major, 64 per image) and labels.
pub fn digits() -> (Vec<f32>, Vec<i64>) {
    let bytes = bytes_of(datasets::generate::DIGITS_PARQUET);
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for batch in reader {
        let batch = batch.unwrap();
        let list = batch.column_by_name("pixels").unwrap().as_fixed_size_list();
        pixels.extend(
            list.values()
                .as_primitive::<Float32Type>()
                .values()
                .iter()
                .map(|p| p / 16.0),
        );
        let label = batch.column_by_name("label").unwrap();
        labels.extend_from_slice(label.as_primitive::<Int64Type>().values());
    }
    (pixels, labels)
}

fn bytes_of(data: &'static [u8]) -> bytes::Bytes {
    bytes::Bytes::from_static(data)
}

/// `0..n` in a fixed random order (from `seed`), split at `train_fraction`.
pub fn split(n: usize, seed: u64, train_fraction: f32) -> (Vec<usize>, Vec<usize>) {
    let order = shuffled(n, seed, 0);
    let cut = (n as f32 * train_fraction).round() as usize;
    (order[..cut].to_vec(), order[cut..].to_vec())
}

/// `0..n` ordered by random keys drawn for (seed, epoch).
pub fn shuffled(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut keys = vec![0u32; n];
    RandomStream::new(seed, stream_id(&[epoch])).fill_u32(0, &mut keys);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (keys[i], i));
    order
}

/// The rows `index` of a row-major `(n, width)` matrix, as a tensor.
pub fn rows(values: &[f32], width: usize, index: &[usize]) -> Tensor {
    let data = index
        .iter()
        .flat_map(|&i| values[i * width..(i + 1) * width].iter().copied())
        .collect();
    Tensor::from_vec([index.len(), width], data)
}

/// The labels `index`.
pub fn labels_of(labels: &[i64], index: &[usize]) -> IndexTensor {
    IndexTensor::from_vec([index.len()], index.iter().map(|&i| labels[i]).collect())
}

/// Index of the largest entry of each row of `(n, classes)` scores.
pub fn argmax_rows(scores: &Tensor, classes: usize) -> Vec<i64> {
    scores
        .data()
        .chunks_exact(classes)
        .map(|row| {
            (0..classes)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap() as i64
        })
        .collect()
}

/// Fraction of `predicted` equal to `expected`.
pub fn accuracy(predicted: &[i64], expected: &[i64]) -> f32 {
    assert_eq!(predicted.len(), expected.len());
    let correct = predicted
        .iter()
        .zip(expected)
        .filter(|(a, b)| a == b)
        .count();
    correct as f32 / expected.len() as f32
}

/// Trains a linear classifier (softmax regression, AdamW) on features
/// `(n, d)` and returns its accuracy on the test features.
pub fn linear_probe(
    train: (&Tensor, &IndexTensor),
    test: (&Tensor, &IndexTensor),
    classes: usize,
    epochs: u64,
    seed: u64,
) -> f32 {
    let d = train.0.dim(1);
    let mut params = ops::ParameterSet::new();
    ops::init::linear(&mut params, seed, "probe", d, classes, true);
    let mut optimizer = ops::Optimizer::with_prefix(OptimizerConfig::adamw(1e-2), "");
    // Standardize with the training split's statistics.
    let (mean, std) = column_statistics(train.0);
    let standardize = |x: &Tensor| {
        let data = x
            .data()
            .chunks_exact(d)
            .flat_map(|row| {
                row.iter()
                    .zip(&mean)
                    .zip(&std)
                    .map(|((v, m), s)| (v - m) / s)
            })
            .collect();
        Tensor::from_vec([x.dim(0), d], data)
    };
    let (train_x, test_x) = (standardize(train.0), standardize(test.0));
    let train_y = train.1.data();
    let n = train_x.dim(0);
    for epoch in 0..epochs {
        let order = shuffled(n, seed, epoch + 1);
        for chunk in order.chunks(64) {
            let x = rows(train_x.data(), d, chunk);
            let y = labels_of(train_y, chunk);
            let loss = params.linear(&x, "probe").cross_entropy(&y, -100);
            let grads = loss.backward();
            let gradients: Vec<Option<Tensor>> =
                params.iter().map(|(_, p)| grads.get(p).cloned()).collect();
            optimizer.step_with_gradients(&mut params, &gradients);
        }
    }
    let logits = no_grad(|| params.linear(&test_x, "probe"));
    accuracy(&argmax_rows(&logits, classes), test.1.data())
}

/// Per-column mean and standard deviation (at least 1e-3) of `(n, d)`.
pub fn column_statistics(x: &Tensor) -> (Vec<f32>, Vec<f32>) {
    let (n, d) = (x.dim(0), x.dim(1));
    let mut mean = vec![0.0f32; d];
    for row in x.data().chunks_exact(d) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f32);
    let mut var = vec![0.0f32; d];
    for row in x.data().chunks_exact(d) {
        for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (v - m) * (v - m);
        }
    }
    let std = var
        .iter()
        .map(|s| (s / n as f32).sqrt().max(1e-3))
        .collect();
    (mean, std)
}

/// Selective copying sequences: `(tokens, targets)`, each `(rows, length)`,
/// from the `selective-copy` generator with `seed` (one fresh set per
/// training step: the step goes into the seed).
pub fn selective_copy(rows: usize, seed: u64, length: usize) -> (IndexTensor, IndexTensor) {
    let tables = Generator::SelectiveCopy
        .generate(&GeneratorOptions {
            rows: Some(rows as u64),
            seed,
            length: Some(length),
            vocab: Some(COPY_VOCAB),
            data_tokens: Some(COPY_DATA_TOKENS),
            skip: 0,
        })
        .unwrap();
    let batch = &tables[0].batch;
    let column = |name: &str| -> Vec<i64> {
        let list = batch.column_by_name(name).unwrap().as_list::<i32>();
        list.values().as_primitive::<Int64Type>().values().to_vec()
    };
    (
        IndexTensor::from_vec([rows, length], column("tokens")),
        IndexTensor::from_vec([rows, length], column("targets")),
    )
}

/// Vocabulary of the selective copying task.
pub const COPY_VOCAB: usize = 16;
/// Data tokens to copy.
pub const COPY_DATA_TOKENS: usize = 16;

/// A budget for a sequence model on selective copying.
#[derive(Clone, Copy, Debug)]
pub struct CopyBudget {
    pub length: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub d_state: usize,
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    pub warmup: u64,
}

/// Trains `backbone` on selective copying under `budget` and returns the
/// accuracy on the data tokens of `test_rows` held-out sequences. Calls
/// `progress(step, loss)` every `every` steps.
pub fn train_selective_copy(
    backbone: Backbone,
    budget: &CopyBudget,
    seed: u64,
    test_rows: usize,
    mut progress: impl FnMut(u64, f32, &SequenceModel),
    every: u64,
) -> (SequenceModel, f32) {
    let config = SequenceConfig {
        vocab: COPY_VOCAB,
        d_model: budget.d_model,
        n_layers: budget.n_layers,
        d_state: budget.d_state,
    };
    let mut model = SequenceModel::new(backbone, config, seed);
    let mut trainer = Trainer::new(&model, &OptimizerConfig::adamw(budget.lr));
    let schedule = LearningRateSchedule::WarmupCosine {
        warmup_steps: budget.warmup,
        total_steps: budget.steps,
        min_factor: 0.01,
    };
    for step in 0..budget.steps {
        trainer.set_lr(schedule.lr(budget.lr, step));
        let (tokens, targets) =
            selective_copy(budget.batch, stream_id(&[seed, step]), budget.length);
        let batch = Batch::new()
            .with_index("tokens", tokens)
            .with_index("targets", targets);
        let losses = trainer.step(&mut model, &batch).unwrap();
        if (step + 1) % every == 0 {
            progress(step + 1, losses[0], &model);
        }
    }
    let accuracy = copy_accuracy(&model, test_rows, budget.length);
    (model, accuracy)
}

/// The test set of selective copying: its seed is no training step's.
pub fn copy_test_set(rows: usize, length: usize) -> (IndexTensor, IndexTensor) {
    selective_copy(rows, u64::MAX, length)
}

/// Accuracy on the data tokens (the scored positions) of the test set.
pub fn copy_accuracy(model: &SequenceModel, rows: usize, length: usize) -> f32 {
    let (tokens, targets) = copy_test_set(rows, length);
    let logits = no_grad(|| model.logits(&tokens));
    let predicted = argmax_rows(&logits, COPY_VOCAB);
    let (mut correct, mut scored) = (0, 0);
    for (p, &t) in predicted.iter().zip(targets.data()) {
        if t != -100 {
            scored += 1;
            correct += usize::from(*p == t);
        }
    }
    correct as f32 / scored as f32
}

/// Does the model run in `no_grad` without recording? Used to name the
/// parameters count in reports.
pub fn parameter_count(model: &dyn Model) -> usize {
    model.parameters().iter().map(|(_, p)| p.numel()).sum()
}

/// Modes of the ring of Gaussians.
pub const RING_MODES: usize = 8;
/// Radius of the ring.
pub const RING_RADIUS: f32 = 2.0;
/// Standard deviation of each mode, per coordinate.
pub const RING_SPREAD: f32 = 0.2;

/// Centre of mode `k` of the ring.
pub fn mode_center(k: usize) -> (f32, f32) {
    let angle = std::f32::consts::TAU * k as f32 / RING_MODES as f32;
    (RING_RADIUS * angle.cos(), RING_RADIUS * angle.sin())
}

/// `n` points of the ring of 8 Gaussians, drawn for (seed, step, sample).
pub fn ring_batch(seed: u64, step: u64, n: usize) -> Tensor {
    let stream = RandomStream::new(seed, stream_id(&[1, step]));
    let mut noise = vec![0.0; 2 * n];
    stream.fill_normal(0, 0.0, RING_SPREAD, &mut noise);
    let mut which = vec![0u32; n];
    stream.derive(&[2]).fill_u32(0, &mut which);
    let mut data = Vec::with_capacity(2 * n);
    for i in 0..n {
        let (cx, cy) = mode_center(which[i] as usize % RING_MODES);
        data.push(cx + noise[2 * i]);
        data.push(cy + noise[2 * i + 1]);
    }
    Tensor::from_vec([n, 2], data)
}

/// A GAN budget on the ring.
#[derive(Clone, Copy, Debug)]
pub struct GanBudget {
    pub d_latent: usize,
    pub d_hidden: usize,
    pub batch: usize,
    pub steps: u64,
    pub lr: f64,
    pub beta1: f64,
    pub min_factor: f64,
}

/// Samples of a GAN on the ring: the fraction within 3 sd of a mode, and
/// the count of those near each mode.
#[derive(Clone, Debug)]
pub struct RingScore {
    pub near_fraction: f32,
    pub per_mode: [usize; RING_MODES],
    pub samples: usize,
}

/// Scores points `(n, 2)` against the ring's modes.
pub fn ring_score(points: &Tensor) -> RingScore {
    let mut per_mode = [0usize; RING_MODES];
    let mut near = 0;
    for point in points.data().chunks_exact(2) {
        let (k, distance) = (0..RING_MODES)
            .map(|k| {
                let (cx, cy) = mode_center(k);
                (
                    k,
                    ((point[0] - cx).powi(2) + (point[1] - cy).powi(2)).sqrt(),
                )
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        if distance < 3.0 * RING_SPREAD {
            near += 1;
            per_mode[k] += 1;
        }
    }
    let samples = points.dim(0);
    RingScore {
        near_fraction: near as f32 / samples as f32,
        per_mode,
        samples,
    }
}

/// Trains a GAN on the ring under `budget` and scores 2,000 samples.
pub fn train_gan_ring(budget: &GanBudget, seed: u64) -> (models::gan::Gan, RingScore) {
    let mut gan = models::gan::Gan::new(budget.d_latent, budget.d_hidden, 2, seed);
    let config = OptimizerConfig::Adam {
        lr: budget.lr,
        betas: (budget.beta1, 0.999),
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let mut trainer = Trainer::new(&gan, &config);
    let schedule = LearningRateSchedule::WarmupCosine {
        warmup_steps: 0,
        total_steps: budget.steps,
        min_factor: budget.min_factor,
    };
    for step in 0..budget.steps {
        trainer.set_lr(schedule.lr(budget.lr, step));
        let z = RandomStream::new(seed, stream_id(&[2, step])).normal_tensor(
            [budget.batch, budget.d_latent],
            0.0,
            1.0,
        );
        let batch = Batch::new()
            .with_float("x", ring_batch(seed, step, budget.batch))
            .with_float("z", z);
        trainer.step(&mut gan, &batch).unwrap();
    }
    let z =
        RandomStream::new(seed, stream_id(&[3])).normal_tensor([2000, budget.d_latent], 0.0, 1.0);
    let samples = no_grad(|| gan.generate(&z));
    let score = ring_score(&samples);
    (gan, score)
}
