//! `shoal bench models`: the training-step time of every model of
//! `bench/bench_configs.json`, printed as the PyTorch anchor
//! (`pytorch_bench.py`) prints it, for a side-by-side comparison.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use models::Trainer;
use ops::{OptimizerConfig, Par};

/// The configurations shipped with the repository.
const BENCH_CONFIGS: &str = include_str!("../../bench/bench_configs.json");

/// Arguments of `shoal bench models`.
#[derive(Args)]
pub(crate) struct ModelsArgs {
    /// Threads for kernels (1: sequential).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Timed steps per model (after 3 warm-up steps); the median is reported.
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Comma-separated model names to run (default: every registered model).
    #[arg(long, default_value = "")]
    only: String,
    /// Benchmark configurations (default: the copy built into the binary,
    /// `bench/bench_configs.json`).
    #[arg(long)]
    configs: Option<PathBuf>,
}

/// Runs the benchmark and prints one JSON object on stdout.
pub(crate) fn run(args: ModelsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.threads >= 1, "--threads must be at least 1");
    anyhow::ensure!(args.reps >= 1, "--reps must be at least 1");
    let text = match &args.configs {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => BENCH_CONFIGS.to_string(),
    };
    let specs: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).context("parsing the benchmark configurations")?;
    let only: Vec<&str> = args.only.split(',').filter(|s| !s.is_empty()).collect();
    for name in &only {
        anyhow::ensure!(
            specs.contains_key(*name),
            "--only: no benchmark configuration `{name}`"
        );
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .context("building the thread pool")?;
    let par = if args.threads == 1 {
        Par::Seq
    } else {
        Par::rayon(args.threads)
    };
    let mut result = serde_json::Map::new();
    result.insert("_threads".into(), args.threads.into());
    result.insert("_shoal".into(), env!("CARGO_PKG_VERSION").into());
    for (name, spec) in &specs {
        if name.starts_with('_') || (!only.is_empty() && !only.contains(&name.as_str())) {
            continue;
        }
        if !models::registry::KINDS.contains(&name.as_str()) {
            tracing::warn!("{name}: not built by shoal yet, skipped");
            continue;
        }
        let step_ms = pool.install(|| {
            ops::with_parallelism(par, || -> anyhow::Result<f64> {
                let mut case = models::bench::case(name, spec, 0)?;
                let mut trainer = Trainer::new(case.model.as_ref(), &OptimizerConfig::adamw(1e-3));
                for _ in 0..3 {
                    trainer.step(case.model.as_mut(), &case.batch)?;
                }
                let mut times = Vec::with_capacity(args.reps);
                for _ in 0..args.reps {
                    let start = Instant::now();
                    trainer.step(case.model.as_mut(), &case.batch)?;
                    times.push(start.elapsed().as_secs_f64());
                }
                times.sort_by(f64::total_cmp);
                let n = times.len();
                let median = if n % 2 == 1 {
                    times[n / 2]
                } else {
                    (times[n / 2 - 1] + times[n / 2]) / 2.0
                };
                Ok(median * 1e3)
            })
        })?;
        let samples = models::bench::case(name, spec, 0)?.samples;
        let entry = serde_json::json!({
            "step_ms": (step_ms * 1e3).round() / 1e3,
            "samples_per_s": (samples as f64 / (step_ms / 1e3) * 10.0).round() / 10.0,
        });
        eprintln!("{name} {entry}");
        result.insert(name.clone(), entry);
    }
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
