//! `shoal bench train`: the data-parallel training step of
//! `bench/bench_configs.json` with the global batch split over worker
//! processes on this machine, printed (with `--json`) in the shape of
//! `pytorch_ddp_bench.py` so that the two compare model by model.
//!
//! Every worker process builds the same model (seed 0) and trains its
//! virtual ranks' micro-batches (global batch / V samples each, drawn under
//! the rank's own seed) with the worker's own step: backward on a compute
//! thread, gradient buckets all-reduced over the QUIC ring while backward
//! goes on ([`worker::overlap`]), then AdamW (lr 1e-3). As in the anchor,
//! each timed step starts after a barrier and the median of worker 0 is
//! reported, after 3 warm-up steps. The step is split into compute
//! (forward, backward and update), the all-reduce time not hidden by
//! compute, and data wait (taking the step's micro-batches, which are in
//! memory as in the anchor).
use std::time::{Duration, Instant};

use anyhow::Context;
use models::{Batch, Model, Trainer};
use ops::OptimizerConfig;
use worker::collective::{CollectiveConfig, Ring};
use worker::overlap::{ReduceFailure, compute_and_all_reduce, compute_parallelism};
use worker::step::{GradientLayout, stream_rank_gradients};

use super::bench_ring::{
    AlgorithmArg, join_ring, median, print_result, run_ring_processes, worker_arguments,
};

/// The configurations shipped with the repository.
const BENCH_CONFIGS: &str = include_str!("../../bench/bench_configs.json");

/// The models of the DDP anchor (GAN and GCN are not in it).
const ANCHOR_MODELS: &str = "mlp,lstm,autoencoder,vae,barlow_twins,mae";

/// Arguments of `shoal bench train`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct TrainArgs {
    /// Number of worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Compute threads per worker process.
    #[arg(long, default_value_t = 1)]
    threads_per_worker: usize,
    /// Comma-separated models (default: the DDP anchor's).
    #[arg(long, default_value = ANCHOR_MODELS)]
    only: String,
    /// Timed steps per model (after 3 warm-up steps); the median is reported.
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Virtual ranks V (default: one per worker); each trains global batch / V samples.
    #[arg(long)]
    virtual_ranks: Option<usize>,
    /// Largest gradient bucket, MiB (as the job spec's `gradient_bucket_mib`).
    #[arg(long, default_value_t = protocol::spec::DEFAULT_GRADIENT_BUCKET_MIB)]
    bucket_mib: f64,
    /// Largest frame payload of the ring, KiB (pipelining granularity).
    #[arg(long, default_value_t = 1024)]
    piece_kib: usize,
    /// Threads of each worker's async runtime (the ring and quinn's drivers).
    #[arg(long, default_value_t = 1)]
    async_threads: usize,
    /// Most gradient buckets moving at once (as the job spec's
    /// `gradient_buckets_in_flight`).
    #[arg(long, default_value_t = protocol::spec::DEFAULT_GRADIENT_BUCKETS_IN_FLIGHT)]
    buckets_in_flight: usize,
    /// All-reduce algorithm (results are bit-identical whichever runs).
    #[arg(long, value_enum, default_value_t = AlgorithmArg::Auto)]
    algorithm: AlgorithmArg,
    /// Print JSON shaped like `pytorch_ddp_bench.py`'s instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of the hidden `shoal bench train-worker`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct TrainWorkerArgs {
    /// This worker's index in the ring.
    #[arg(long)]
    index: usize,
    #[command(flatten)]
    bench: TrainArgs,
}

impl TrainArgs {
    fn virtual_ranks(&self) -> usize {
        self.virtual_ranks.unwrap_or(self.workers)
    }

    fn names(&self) -> Vec<String> {
        self.only
            .split(',')
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Checks the arguments and returns each model's configuration.
    fn validate(&self) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
        anyhow::ensure!(self.workers >= 1, "--workers must be at least 1");
        anyhow::ensure!(
            self.threads_per_worker >= 1,
            "--threads-per-worker must be at least 1"
        );
        anyhow::ensure!(self.reps >= 1, "--reps must be at least 1");
        anyhow::ensure!(
            self.bucket_mib.is_finite() && self.bucket_mib > 0.0,
            "--bucket-mib must be positive"
        );
        let virtual_ranks = self.virtual_ranks();
        anyhow::ensure!(
            virtual_ranks >= self.workers,
            "--virtual-ranks ({virtual_ranks}) must be at least --workers ({})",
            self.workers
        );
        let specs: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(BENCH_CONFIGS).context("parsing bench_configs.json")?;
        let mut chosen = Vec::new();
        for name in self.names() {
            anyhow::ensure!(
                name != "gcn",
                "gcn trains one graph, which this benchmark does not split (nor does the DDP anchor)"
            );
            let mut spec = specs
                .get(&name)
                .with_context(|| format!("--only: no benchmark configuration `{name}`"))?
                .clone();
            let batch = spec["batch"]
                .as_u64()
                .with_context(|| format!("{name}: no batch in its configuration"))?
                as usize;
            anyhow::ensure!(
                batch.is_multiple_of(virtual_ranks),
                "{name}: its batch of {batch} does not split over {virtual_ranks} virtual ranks"
            );
            spec["batch"] = (batch / virtual_ranks).into();
            chosen.push((name, spec));
        }
        anyhow::ensure!(!chosen.is_empty(), "--only names no model");
        Ok(chosen)
    }
}

/// Runs the benchmark: starts the workers and prints worker 0's results.
pub(crate) fn run(args: TrainArgs) -> anyhow::Result<()> {
    args.validate()?;
    let result = run_ring_processes(args.workers, |index| {
        worker_arguments("train", "train-worker", index)
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    println!(
        "# shoal data-parallel step: {} workers x {} threads, {} virtual ranks, median of {} steps",
        args.workers,
        args.threads_per_worker,
        args.virtual_ranks(),
        args.reps
    );
    println!(
        "{:<14} {:>10} {:>14} {:>11} {:>16} {:>13}",
        "model", "step(ms)", "samples/s", "compute(ms)", "exposed-ar(ms)", "data-wait(ms)"
    );
    for name in args.names() {
        let row = &result[&name];
        let field = |key: &str| row[key].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:<14} {:>10.3} {:>14.1} {:>11.3} {:>16.3} {:>13.3}",
            name,
            field("step_ms"),
            field("samples_per_s"),
            field("compute_ms"),
            field("all_reduce_exposed_ms"),
            field("data_wait_ms")
        );
    }
    Ok(())
}

/// One benchmark worker process: `--threads-per-worker` rayon threads for
/// the kernels, one async thread for the ring.
pub(crate) fn run_worker(args: TrainWorkerArgs) -> anyhow::Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.bench.threads_per_worker)
        .build_global()
        .context("setting up the compute threads")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.bench.async_threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(worker(args))
}

/// What one worker trains: the model, its optimizers, the micro-batches of
/// its virtual ranks and the bucket layout of each objective.
struct BenchReplica {
    model: Box<dyn Model>,
    trainer: Trainer,
    batches: Vec<Batch>,
    layouts: Vec<std::sync::Arc<GradientLayout>>,
}

/// Where one step's time went.
#[derive(Default)]
struct StepTimes {
    data_wait: Duration,
    compute: Duration,
    exposed_all_reduce: Duration,
}

async fn worker(args: TrainWorkerArgs) -> anyhow::Result<()> {
    let bench = &args.bench;
    let models = bench.validate()?;
    let virtual_ranks = bench.virtual_ranks();
    let bucket_elements = worker::job::bucket_elements(bench.bucket_mib);
    let config = CollectiveConfig {
        bucket_elements,
        piece_elements: ((bench.piece_kib << 10) / 4).max(1),
        timeout: Duration::from_secs(30),
        algorithm: bench.algorithm.into(),
        buckets_in_flight: bench.buckets_in_flight.max(1),
    };
    let (mut ring, endpoint) = join_ring(args.index, bench.workers, virtual_ranks, config).await?;
    let mut result = serde_json::Map::new();
    result.insert("_world".into(), bench.workers.into());
    result.insert("_threads_per_rank".into(), bench.threads_per_worker.into());
    result.insert("_virtual_ranks".into(), virtual_ranks.into());
    result.insert("_bucket_mib".into(), bench.bucket_mib.into());
    result.insert("_buckets_in_flight".into(), bench.buckets_in_flight.into());
    result.insert("_shoal".into(), env!("CARGO_PKG_VERSION").into());
    for (name, spec) in &models {
        let case = models::bench::case(name, spec, 0)?;
        let micro_batch = case.samples;
        let inputs = ring
            .hosted()
            .map(|rank| Ok(models::bench::case(name, spec, rank as u64)?.batch))
            .collect::<anyhow::Result<Vec<Batch>>>()?;
        let layouts = case
            .model
            .objectives()
            .iter()
            .map(|objective| {
                std::sync::Arc::new(GradientLayout::new(
                    case.model.parameters(),
                    objective.parameter_prefix,
                    bucket_elements,
                ))
            })
            .collect();
        let mut replica = BenchReplica {
            trainer: Trainer::new(case.model.as_ref(), &OptimizerConfig::adamw(1e-3)),
            model: case.model,
            batches: Vec::new(),
            layouts,
        };
        for _ in 0..3 {
            (replica, _) = step(replica, &inputs, &mut ring).await?;
        }
        let (mut total, mut compute, mut exposed, mut data_wait) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..bench.reps {
            ring.barrier().await?;
            let started = Instant::now();
            let times;
            (replica, times) = step(replica, &inputs, &mut ring).await?;
            total.push(started.elapsed().as_secs_f64() * 1e3);
            compute.push(times.compute.as_secs_f64() * 1e3);
            exposed.push(times.exposed_all_reduce.as_secs_f64() * 1e3);
            data_wait.push(times.data_wait.as_secs_f64() * 1e3);
        }
        let step_ms = median(&mut total);
        let global_batch = micro_batch * virtual_ranks;
        let round = |value: f64, digits: i32| {
            let scale = 10f64.powi(digits);
            (value * scale).round() / scale
        };
        result.insert(
            name.clone(),
            serde_json::json!({
                "step_ms": round(step_ms, 3),
                "samples_per_s": round(global_batch as f64 / (step_ms / 1e3), 1),
                "compute_ms": round(median(&mut compute), 3),
                "all_reduce_exposed_ms": round(median(&mut exposed), 3),
                "data_wait_ms": round(median(&mut data_wait), 3),
            }),
        );
    }
    ring.barrier().await?;
    if args.index == 0 {
        print_result(&serde_json::Value::Object(result))?;
    }
    ring.shutdown().await;
    super::bench_ring::wait_for_closes(&endpoint).await;
    Ok(())
}

/// One data-parallel step of every objective on `inputs` (the hosted
/// ranks' micro-batches).
async fn step(
    replica: BenchReplica,
    inputs: &[Batch],
    ring: &mut Ring,
) -> anyhow::Result<(BenchReplica, StepTimes)> {
    let mut replica = replica;
    let mut times = StepTimes::default();
    let began = Instant::now();
    // The micro-batches are in memory, as in the anchor: handing them over
    // (tensors are shared, not copied) is the whole data wait.
    replica.batches = inputs.to_vec();
    times.data_wait = began.elapsed();
    for objective in 0..replica.layouts.len() {
        let layout = replica.layouts[objective].clone();
        let outcome;
        (replica, outcome) = compute_and_all_reduce(
            replica,
            ring,
            layout.clone(),
            move |replica: &mut BenchReplica, emit| {
                stream_rank_gradients(
                    replica.model.as_ref(),
                    objective,
                    &replica.batches,
                    &replica.layouts[objective],
                    emit,
                )
                .map_err(worker::WorkerError::from)
            },
            std::future::pending(),
        )
        .await?;
        let reduced = match outcome {
            Ok(reduced) => reduced,
            Err(ReduceFailure::Compute(error)) => return Err(error.into()),
            Err(ReduceFailure::Collective(error)) => return Err(error.into()),
            Err(ReduceFailure::Cancelled) => unreachable!("never cancelled"),
        };
        let began = Instant::now();
        ops::with_parallelism(compute_parallelism(), || {
            let (gradients, _loss) = layout.mean_gradients(
                replica.model.parameters(),
                &reduced.summed,
                ring.layout().virtual_ranks(),
            );
            replica
                .trainer
                .apply(replica.model.as_mut(), objective, &gradients);
        });
        times.compute += reduced.compute + began.elapsed();
        times.exposed_all_reduce += reduced.exposed_all_reduce;
    }
    Ok((replica, times))
}
