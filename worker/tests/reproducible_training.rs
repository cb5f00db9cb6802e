//! A job gives bit-identical checkpoints whatever the number of workers:
//! trained in one process (every virtual rank local) or by 1 to V workers
//! over a loopback QUIC ring, the final checkpoints hash the same.
use std::path::{Path, PathBuf};
use std::time::Duration;

use datasets::generate::{Generator, GeneratorOptions};
use datasets::{ColumnMapping, Dataset, Plan, PlanConfig, Reader, Task};
use ops::optim::{LearningRateSchedule, OptimizerConfig};
use worker::WorkerError;
use worker::collective::CollectiveConfig;
use worker::inputs::DrawSettings;
use worker::local::local_step;
use worker::replica::{Replica, TrainingJob};
use worker::single_node::{RunOptions, run_job, sha256_hex};

fn generate(generator: Generator, rows: u64, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{}.parquet", generator.name()));
    let options = GeneratorOptions {
        rows: Some(rows),
        seed: 7,
        ..GeneratorOptions::default()
    };
    generator.write(&options, &out).expect("generate data");
    out
}

fn job(kind: &str, config: serde_json::Value, virtual_ranks: usize, steps: u64) -> TrainingJob {
    TrainingJob {
        model_kind: kind.to_string(),
        model_config: config,
        optimizer: OptimizerConfig::adamw(1e-2),
        schedule: LearningRateSchedule::Constant,
        seed: 11,
        virtual_ranks,
        steps,
        // Small buckets, so that the buffers span several.
        bucket_elements: 1000,
        buckets_in_flight: 3,
        draws: DrawSettings {
            input_scale: 1.0 / 16.0,
            ..DrawSettings::default()
        },
    }
}

fn open(path: &Path, task: Task, global_batch: usize, virtual_ranks: usize) -> (Plan, Reader) {
    let dataset = Dataset::open(&[path]).expect("open dataset");
    let plan = Plan::new(
        dataset.fingerprint(),
        PlanConfig::new(3, global_batch, virtual_ranks),
    )
    .expect("plan");
    let reader = Reader::new(dataset, task, &ColumnMapping::new()).expect("reader");
    (plan, reader)
}

/// Trains with every virtual rank in this process, without a ring.
fn local_checkpoint(job: &TrainingJob, data: (Plan, Reader)) -> String {
    let mut replica = Replica::new(job.clone(), data.0, data.1).expect("replica");
    while !replica.is_finished() {
        let report = local_step(&mut replica).expect("step");
        assert!(report.losses.iter().all(|(_, l)| l.is_finite()));
    }
    sha256_hex(&replica.checkpoint_bytes().expect("checkpoint"))
}

fn networked_checkpoint(
    job: &TrainingJob,
    path: &Path,
    task: Task,
    global_batch: usize,
    workers: usize,
) -> String {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let v = job.virtual_ranks;
    let report = runtime
        .block_on(run_job(
            job.clone(),
            || Ok::<_, WorkerError>(open(path, task, global_batch, v)),
            RunOptions {
                workers,
                collective: CollectiveConfig {
                    timeout: Duration::from_secs(20),
                    ..CollectiveConfig::default()
                },
                initial_checkpoint: None,
            },
            |_| {},
        ))
        .unwrap_or_else(|e| panic!("{workers} workers: {e}"));
    report.checkpoint_sha256
}

#[track_caller]
fn check(job: TrainingJob, path: &Path, task: Task, global_batch: usize, workers: &[usize]) {
    let expected = local_checkpoint(&job, open(path, task, global_batch, job.virtual_ranks));
    for &count in workers {
        let hash = networked_checkpoint(&job, path, task, global_batch, count);
        assert_eq!(hash, expected, "{} on {count} workers", job.model_kind);
    }
}

#[test]
fn mlp_on_digits_is_identical_on_one_to_four_workers() {
    let dir = tempfile::tempdir().unwrap();
    let path = generate(Generator::Digits, 1797, dir.path());
    let config = serde_json::json!({"d_in": 64, "d_hidden": 32, "n_classes": 10});
    check(
        job("mlp", config, 4, 6),
        &path,
        Task::Classify,
        64,
        &[1, 2, 3, 4],
    );
}

#[test]
fn gan_with_two_objectives_is_identical_on_one_and_three_workers() {
    let dir = tempfile::tempdir().unwrap();
    let path = generate(Generator::GaussianRing, 512, dir.path());
    let config = serde_json::json!({"d_latent": 3, "d_hidden": 16, "d_data": 2});
    let mut job = job("gan", config, 6, 4);
    job.draws.input_scale = 1.0;
    check(job, &path, Task::Vectors, 48, &[1, 3]);
}

#[test]
fn a_different_seed_gives_a_different_checkpoint() {
    // Guards the tests above: the hash does depend on the training.
    let dir = tempfile::tempdir().unwrap();
    let path = generate(Generator::Digits, 1797, dir.path());
    let config = serde_json::json!({"d_in": 64, "d_hidden": 32, "n_classes": 10});
    let first = job("mlp", config.clone(), 4, 2);
    let mut second = first.clone();
    second.seed += 1;
    let a = local_checkpoint(&first, open(&path, Task::Classify, 64, 4));
    let b = local_checkpoint(&second, open(&path, Task::Classify, 64, 4));
    assert_ne!(a, b);
}

#[test]
fn the_same_run_twice_gives_the_same_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = generate(Generator::Digits, 1797, dir.path());
    let config = serde_json::json!({"d_in": 64, "d_hidden": 32, "n_classes": 10});
    let job = job("mlp", config, 4, 2);
    let a = local_checkpoint(&job, open(&path, Task::Classify, 64, 4));
    let b = local_checkpoint(&job, open(&path, Task::Classify, 64, 4));
    assert_eq!(a, b);
}

#[test]
fn mamba_with_overlapped_buckets_is_identical_on_one_to_three_workers() {
    // Buckets of 300 values: about ten buckets per step, each all-reduced
    // while backward still computes the earlier layers'.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("selective-copy.parquet");
    let options = GeneratorOptions {
        rows: Some(96),
        seed: 7,
        length: Some(16),
        vocab: Some(8),
        data_tokens: Some(4),
        ..GeneratorOptions::default()
    };
    Generator::SelectiveCopy
        .write(&options, &out)
        .expect("generate data");
    let config = serde_json::json!({
        "kind": "mamba", "vocab": 16, "d_model": 8, "n_layers": 2, "d_state": 4
    });
    let mut job = job("mamba", config, 3, 3);
    job.bucket_elements = 300;
    check(job, &out, Task::Sequence, 12, &[1, 2, 3]);
}
