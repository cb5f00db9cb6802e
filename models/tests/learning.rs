//! Learning at small scale (issue 3), on data generated in the test: the
//! models learn what they should, within seconds.
//!
//! The ring of 8 Gaussians has radius 2 and standard deviation 0.2 per
//! coordinate (the 3-sd discs around the modes are disjoint).
mod common;

use models::{Batch, Model, Trainer};
use ops::rng::{RandomStream, stream_id};
use ops::{OptimizerConfig, Tensor, no_grad};

#[test]
fn gan_covers_the_eight_modes_of_a_ring() {
    let budget = common::GanBudget {
        d_latent: 4,
        d_hidden: 128,
        batch: 128,
        steps: 3000,
        lr: 2e-3,
        beta1: 0.5,
        min_factor: 0.01,
    };
    let (gan, score) = common::train_gan_ring(&budget, 3);
    let (fraction, per_mode, n) = (score.near_fraction, score.per_mode, score.samples);
    eprintln!("within 3 sd: {fraction}, per mode {per_mode:?}");
    // Every mode gets at least 4% of the samples (12.5% each when even).
    assert!(
        per_mode.iter().all(|&c| c >= n / 25),
        "a mode is missed: {per_mode:?}"
    );
    assert!(fraction >= 0.8, "only {fraction} of samples near a mode");
    assert_eq!(gan.parameters().len(), 8);
}

#[test]
fn mlp_learns_digits() {
    let (pixels, labels) = common::digits();
    let n = labels.len();
    assert_eq!(n, 1797);
    let (train, test) = common::split(n, 1, 0.8);
    let (train, test) = (&train[..], &test[..]);
    let rows = |idx: &[usize]| {
        let x: Vec<f32> = idx
            .iter()
            .flat_map(|&i| pixels[i * 64..(i + 1) * 64].to_vec())
            .collect();
        let y: Vec<i64> = idx.iter().map(|&i| labels[i]).collect();
        (
            Tensor::from_vec([idx.len(), 64], x),
            ops::IndexTensor::from_vec([idx.len()], y),
        )
    };
    let mut mlp = models::mlp::Mlp::new(64, 256, 10, 5);
    let mut trainer = Trainer::new(&mlp, &OptimizerConfig::adamw(1e-2));
    let batch_size = 64;
    let mut train = train.to_vec();
    for epoch in 0..30 {
        // a fresh order each epoch, from the counter-based generator
        let mut keys = vec![0u32; n];
        RandomStream::new(1, stream_id(&[epoch])).fill_u32(0, &mut keys);
        train.sort_by_key(|&i| keys[i]);
        for chunk in train.chunks(batch_size) {
            let (x, y) = rows(chunk);
            let batch = Batch::new().with_float("x", x).with_index("label", y);
            trainer.step(&mut mlp, &batch).unwrap();
        }
    }
    let (x, y) = rows(test);
    let logits = no_grad(|| mlp.logits(&x));
    let correct = logits
        .data()
        .chunks_exact(10)
        .zip(y.data())
        .filter(|(row, label)| {
            let best = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            best as i64 == **label
        })
        .count();
    let accuracy = correct as f32 / test.len() as f32;
    eprintln!("digits test accuracy {accuracy}");
    assert!(accuracy >= 0.95, "test accuracy {accuracy}");
}

/// Binary cross-entropy of `x` in [0, 1] under probability `p`, in nats.
fn cross_entropy(p: f32, x: f32) -> f32 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    -(x * p.ln() + (1.0 - x) * (1.0 - p).ln())
}

/// The negative ELBO per image of `vae` on `x`, its posterior noise drawn
/// under `seed` (a Monte Carlo estimate with one draw per image).
fn negative_elbo(vae: &models::vae::Vae, x: &Tensor, seed: u64) -> f32 {
    let eps = RandomStream::new(seed, stream_id(&[4])).normal_tensor([x.dim(0), 8], 0.0, 1.0);
    let terms = no_grad(|| vae.terms(x, &eps));
    let total: f32 = terms
        .reconstruction
        .data()
        .iter()
        .zip(terms.kl.data())
        .map(|(r, k)| r + k)
        .sum();
    total / x.dim(0) as f32
}

#[test]
fn vae_elbo_on_digits_beats_independent_pixels() {
    let (pixels, labels) = common::digits();
    let (train, test) = common::split(labels.len(), 1, 0.8);
    let (d_latent, seed) = (8, 7);
    let mut vae = models::vae::Vae::new(common::PIXELS, 128, d_latent, seed);
    let test_x = common::rows(&pixels, common::PIXELS, &test);
    let untrained = negative_elbo(&vae, &test_x, seed);
    let mut trainer = Trainer::new(&vae, &OptimizerConfig::adamw(3e-3));
    let mut step = 0u64;
    for epoch in 0..40 {
        let order = common::shuffled(train.len(), seed, epoch);
        for chunk in order.chunks(64) {
            let index: Vec<usize> = chunk.iter().map(|&i| train[i]).collect();
            let x = common::rows(&pixels, common::PIXELS, &index);
            // the posterior noise of (seed, step, sample)
            let eps = RandomStream::new(seed, stream_id(&[5, step])).normal_tensor(
                [index.len(), d_latent],
                0.0,
                1.0,
            );
            let batch = Batch::new().with_float("x", x).with_float("eps", eps);
            trainer.step(&mut vae, &batch).unwrap();
            step += 1;
        }
    }
    let trained = negative_elbo(&vae, &test_x, seed);
    // Baseline: independent pixels, each with its training mean.
    let train_x = common::rows(&pixels, common::PIXELS, &train);
    let (mean, _) = common::column_statistics(&train_x);
    let independent: f32 = test_x
        .data()
        .chunks_exact(common::PIXELS)
        .map(|row| {
            row.iter()
                .zip(&mean)
                .map(|(&x, &p)| cross_entropy(p, x))
                .sum::<f32>()
        })
        .sum::<f32>()
        / test.len() as f32;
    eprintln!(
        "digits test ELBO (nats per image): VAE {:.2}, untrained VAE {:.2}, independent pixels {:.2}",
        -trained, -untrained, -independent
    );
    assert!(
        trained < independent,
        "VAE -ELBO {trained} is no better than independent pixels' {independent}"
    );
    assert!(trained < untrained);
}

/// Masks hiding each pixel with probability `ratio`, drawn for (seed, step,
/// sample).
fn masks(seed: u64, step: u64, rows: usize, ratio: f32) -> Tensor {
    RandomStream::new(seed, stream_id(&[6, step])).bernoulli_tensor([rows, common::PIXELS], ratio)
}

#[test]
fn masked_autoencoder_beats_mean_imputation_on_digits() {
    let (pixels, labels) = common::digits();
    let (train, test) = common::split(labels.len(), 1, 0.8);
    let (seed, ratio) = (11, 0.5);
    let mut mae = models::mae::MaskedAutoencoder::new(common::PIXELS, 256, seed);
    let mut trainer = Trainer::new(&mae, &OptimizerConfig::adamw(2e-3));
    let mut step = 0u64;
    for epoch in 0..30 {
        let order = common::shuffled(train.len(), seed, epoch);
        for chunk in order.chunks(64) {
            let index: Vec<usize> = chunk.iter().map(|&i| train[i]).collect();
            let x = common::rows(&pixels, common::PIXELS, &index);
            let mask = masks(seed, step, index.len(), ratio);
            let batch = Batch::new().with_float("x", x).with_float("mask", mask);
            trainer.step(&mut mae, &batch).unwrap();
            step += 1;
        }
    }
    let test_x = common::rows(&pixels, common::PIXELS, &test);
    let mask = masks(seed, u64::MAX, test.len(), ratio);
    let predicted = no_grad(|| mae.predict(&test_x, &mask));
    let train_x = common::rows(&pixels, common::PIXELS, &train);
    let (mean, _) = common::column_statistics(&train_x);
    let (mut model_error, mut mean_error, mut hidden) = (0.0f64, 0.0f64, 0usize);
    for (i, ((&x, &m), &p)) in test_x
        .data()
        .iter()
        .zip(mask.data())
        .zip(predicted.data())
        .enumerate()
    {
        if m == 1.0 {
            hidden += 1;
            model_error += f64::from((p - x).powi(2));
            mean_error += f64::from((mean[i % common::PIXELS] - x).powi(2));
        }
    }
    let (model_error, mean_error) = (model_error / hidden as f64, mean_error / hidden as f64);
    eprintln!(
        "digits, {:.0}% of pixels hidden: MSE on hidden pixels {model_error:.4} (masked autoencoder) vs {mean_error:.4} (mean imputation)",
        100.0 * ratio
    );
    assert!(
        model_error < 0.7 * mean_error,
        "masked autoencoder {model_error} vs mean imputation {mean_error}"
    );
}

/// One augmented view of digits `x`: the image shifted by up to one pixel
/// in each direction (zeros come in), each pixel dropped with probability
/// 0.2, then Gaussian noise of sd 0.1; drawn for (seed, step, view, sample).
fn augmented_view(x: &Tensor, seed: u64, step: u64, view: u64) -> Tensor {
    let stream = RandomStream::new(seed, stream_id(&[7, step, view]));
    let rows = x.dim(0);
    let mut shifts = vec![0u32; 2 * rows];
    stream.derive(&[0]).fill_u32(0, &mut shifts);
    let mut shifted = vec![0.0f32; rows * common::PIXELS];
    for (sample, (image, out)) in x
        .data()
        .chunks_exact(common::PIXELS)
        .zip(shifted.chunks_exact_mut(common::PIXELS))
        .enumerate()
    {
        let dy = (shifts[2 * sample] % 3) as i64 - 1;
        let dx = (shifts[2 * sample + 1] % 3) as i64 - 1;
        for row in 0..8i64 {
            for column in 0..8i64 {
                let (from_row, from_column) = (row - dy, column - dx);
                if (0..8).contains(&from_row) && (0..8).contains(&from_column) {
                    out[(row * 8 + column) as usize] = image[(from_row * 8 + from_column) as usize];
                }
            }
        }
    }
    let shifted = Tensor::from_vec(x.shape(), shifted);
    let keep = stream.derive(&[1]).bernoulli_tensor(x.shape(), 0.8);
    let noise = stream.derive(&[2]).normal_tensor(x.shape(), 0.0, 0.1);
    shifted.mul(&keep).add(&noise)
}

#[test]
fn barlow_twins_features_beat_raw_pixels_in_a_linear_probe() {
    let (pixels, labels) = common::digits();
    let (train, test) = common::split(labels.len(), 1, 0.8);
    let seed = 13;
    let mut model = models::barlow_twins::BarlowTwins::new(common::PIXELS, 256, 128, seed);
    let mut trainer = Trainer::new(&model, &OptimizerConfig::adamw(1e-3));
    let mut step = 0u64;
    for epoch in 0..20 {
        let order = common::shuffled(train.len(), seed, epoch);
        for chunk in order.chunks_exact(128) {
            let index: Vec<usize> = chunk.iter().map(|&i| train[i]).collect();
            let x = common::rows(&pixels, common::PIXELS, &index);
            let batch = Batch::new()
                .with_float("view1", augmented_view(&x, seed, step, 1))
                .with_float("view2", augmented_view(&x, seed, step, 2));
            trainer.step(&mut model, &batch).unwrap();
            step += 1;
        }
    }
    let (train_x, test_x) = (
        common::rows(&pixels, common::PIXELS, &train),
        common::rows(&pixels, common::PIXELS, &test),
    );
    let (train_y, test_y) = (
        common::labels_of(&labels, &train),
        common::labels_of(&labels, &test),
    );
    let (train_f, test_f) = no_grad(|| (model.embed(&train_x), model.embed(&test_x)));
    let probe = |train: &Tensor, test: &Tensor| {
        common::linear_probe((train, &train_y), (test, &test_y), 10, 30, seed)
    };
    let features = probe(&train_f, &test_f);
    let raw = probe(&train_x, &test_x);
    eprintln!(
        "digits linear probe test accuracy: Barlow Twins features {:.1}%, raw pixels {:.1}%",
        100.0 * features,
        100.0 * raw
    );
    assert!(features > raw, "features {features} vs raw pixels {raw}");
}

/// The block-model graph of the `sbm-graph` generator: features, labels,
/// train and test masks, edges.
struct Graph {
    x: Tensor,
    label: Vec<i64>,
    train_mask: Vec<i64>,
    test_mask: Vec<i64>,
    src: Vec<i64>,
    dst: Vec<i64>,
}

fn block_model_graph(nodes: u64, seed: u64) -> Graph {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Int64Type};
    let tables = datasets::generate::Generator::SbmGraph
        .generate(&datasets::generate::GeneratorOptions {
            rows: Some(nodes),
            seed,
            ..Default::default()
        })
        .unwrap();
    let ints = |table: usize, name: &str| -> Vec<i64> {
        let column = tables[table].batch.column_by_name(name).unwrap();
        column.as_primitive::<Int64Type>().values().to_vec()
    };
    let node = tables.iter().position(|t| t.role.is_none()).unwrap();
    let edges = tables.iter().position(|t| t.role == Some("edges")).unwrap();
    let list = tables[node].batch.column_by_name("x").unwrap();
    let list = list.as_fixed_size_list();
    let width = list.value_length() as usize;
    let x = list
        .values()
        .as_primitive::<Float32Type>()
        .values()
        .to_vec();
    Graph {
        x: Tensor::from_vec([nodes as usize, width], x),
        label: ints(node, "label"),
        train_mask: ints(node, "train_mask"),
        test_mask: ints(node, "test_mask"),
        src: ints(edges, "src"),
        dst: ints(edges, "dst"),
    }
}

#[test]
fn gcn_classifies_a_block_model_graph_far_better_than_an_mlp() {
    let graph = block_model_graph(1000, 5);
    let nodes = graph.label.len();
    let width = graph.x.dim(1);
    let (seed, steps) = (17, 200);
    let index = |v: Vec<i64>| ops::IndexTensor::from_vec([nodes], v);
    let batch = Batch::new()
        .with_float("x", graph.x.clone())
        .with_index("label", index(graph.label.clone()))
        .with_index("train_mask", index(graph.train_mask.clone()))
        .with_index(
            "src",
            ops::IndexTensor::from_vec([graph.src.len()], graph.src.clone()),
        )
        .with_index(
            "dst",
            ops::IndexTensor::from_vec([graph.dst.len()], graph.dst.clone()),
        );
    let mut gcn = models::gcn::Gcn::new(width, 32, 4, seed);
    let mut trainer = Trainer::new(&gcn, &OptimizerConfig::adamw(1e-2));
    for _ in 0..steps {
        trainer.step(&mut gcn, &batch).unwrap();
    }
    let test: Vec<usize> = (0..nodes).filter(|&i| graph.test_mask[i] != 0).collect();
    let train: Vec<usize> = (0..nodes).filter(|&i| graph.train_mask[i] != 0).collect();
    let expected: Vec<i64> = test.iter().map(|&i| graph.label[i]).collect();
    let a = ops::ops::sparse::SparseMatrix::new(
        ops::kernels::sparse::CsrMatrix::gcn_normalized(nodes, &graph.src, &graph.dst).unwrap(),
    );
    let logits = no_grad(|| gcn.logits(&a, &graph.x));
    let predicted = common::argmax_rows(&logits, 4);
    let gcn_accuracy = common::accuracy(
        &test.iter().map(|&i| predicted[i]).collect::<Vec<_>>(),
        &expected,
    );
    // The same budget for an MLP that sees the features alone.
    let mut mlp = models::mlp::Mlp::new(width, 32, 4, seed);
    let mut trainer = Trainer::new(&mlp, &OptimizerConfig::adamw(1e-2));
    let train_batch = Batch::new()
        .with_float("x", common::rows(graph.x.data(), width, &train))
        .with_index("label", common::labels_of(&graph.label, &train));
    for _ in 0..steps {
        trainer.step(&mut mlp, &train_batch).unwrap();
    }
    let logits = no_grad(|| mlp.logits(&common::rows(graph.x.data(), width, &test)));
    let mlp_accuracy = common::accuracy(&common::argmax_rows(&logits, 4), &expected);
    eprintln!(
        "block-model graph ({nodes} nodes, {} train, {} test): GCN {:.1}%, MLP on features {:.1}%",
        train.len(),
        test.len(),
        100.0 * gcn_accuracy,
        100.0 * mlp_accuracy
    );
    assert!(gcn_accuracy >= 0.9, "GCN test accuracy {gcn_accuracy}");
    assert!(
        gcn_accuracy >= mlp_accuracy + 0.2,
        "GCN {gcn_accuracy} is not clearly above the MLP's {mlp_accuracy}"
    );
}
