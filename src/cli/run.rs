//! `shoal run JOB.toml --workers N`: trains a job in single-node mode (its
//! workers as tasks of this process, joined by a loopback QUIC ring) and
//! writes the checkpoint and metrics to an output folder.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use coordinator::spec::{JobSpec, OptimizerKind, ScheduleKind};
use datasets::{ColumnMapping, Dataset, PartialBatch, Plan, PlanConfig, Reader, Task};
use ops::optim::{LearningRateSchedule, OptimizerConfig};
use worker::WorkerError;
use worker::collective::CollectiveConfig;
use worker::inputs::DrawSettings;
use worker::replica::TrainingJob;
use worker::single_node::{RunOptions, RunReport, TimedStep, run_job};

use crate::cli::progress::Progress;
use crate::cli::report::write_report;

#[derive(Args)]
pub(crate) struct RunArgs {
    /// The job spec (TOML, or JSON when the file ends in .json).
    job: PathBuf,
    /// Number of workers (each hosts a contiguous range of virtual ranks).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Output folder for the checkpoint and metrics (default: out/NAME).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Train for this many steps instead of the spec's `steps`/`epochs`
    /// (a quick check that a spec runs).
    #[arg(long)]
    steps: Option<u64>,
    /// Print a progress line every this many steps (when standard error is
    /// not a terminal; on a terminal a progress bar shows every step).
    #[arg(long, default_value_t = 10)]
    log_every: u64,
}

/// A job spec read from a file, with errors naming the file, the line and
/// the field.
pub(crate) fn read_spec(path: &Path) -> anyhow::Result<JobSpec> {
    crate::cli::spec_file::read_spec(path)
}

/// The dataset task that feeds a model kind.
fn task_of(kind: &str) -> anyhow::Result<Task> {
    Ok(match kind {
        "mlp" => Task::Classify,
        "lstm" | "gru" | "qrnn" | "s4d" | "mamba" => Task::Sequence,
        "autoencoder" | "vae" | "gan" | "mae" | "barlow_twins" => Task::Vectors,
        // One whole graph per step, in this process (see `cli::graph`).
        "gcn" => Task::GraphNodes,
        other => bail!("model `{other}` has no data task"),
    })
}

fn optimizer_of(spec: &JobSpec) -> OptimizerConfig {
    let o = &spec.optimizer;
    let betas = o.betas.map(|[a, b]| (a, b)).unwrap_or((0.9, 0.999));
    match o.kind {
        OptimizerKind::Sgd => OptimizerConfig::Sgd {
            lr: o.lr,
            momentum: o.momentum.unwrap_or(0.0),
            dampening: o.dampening.unwrap_or(0.0),
            weight_decay: o.weight_decay.unwrap_or(0.0),
            nesterov: o.nesterov.unwrap_or(false),
        },
        OptimizerKind::Adam => OptimizerConfig::Adam {
            lr: o.lr,
            betas,
            eps: o.eps.unwrap_or(1e-8),
            weight_decay: o.weight_decay.unwrap_or(0.0),
        },
        OptimizerKind::Adamw => OptimizerConfig::AdamW {
            lr: o.lr,
            betas,
            eps: o.eps.unwrap_or(1e-8),
            weight_decay: o.weight_decay.unwrap_or(0.01),
        },
    }
}

fn schedule_of(spec: &JobSpec, total_steps: u64) -> LearningRateSchedule {
    let warmup_steps = spec.schedule.warmup_steps.unwrap_or(0);
    match spec.schedule.kind {
        ScheduleKind::Constant if warmup_steps == 0 => LearningRateSchedule::Constant,
        ScheduleKind::Constant | ScheduleKind::LinearWarmup => {
            LearningRateSchedule::LinearWarmup { warmup_steps }
        }
        ScheduleKind::Cosine => LearningRateSchedule::WarmupCosine {
            warmup_steps,
            total_steps,
            min_factor: spec.schedule.min_lr.unwrap_or(0.0) / spec.optimizer.lr,
        },
    }
}

/// Everything a single-node run of a spec needs.
pub(crate) struct PreparedJob {
    pub(crate) name: String,
    pub(crate) job: TrainingJob,
    pub(crate) paths: Vec<PathBuf>,
    pub(crate) task: Task,
    pub(crate) mapping: ColumnMapping,
    pub(crate) plan_config: PlanConfig,
    pub(crate) global_batch: usize,
    pub(crate) initial: Option<PathBuf>,
}

/// Checks `spec` and turns it into a training job; `base` resolves relative
/// data paths.
pub(crate) fn prepare(spec: &JobSpec, base: &Path) -> anyhow::Result<PreparedJob> {
    spec.validate()?;
    let task = task_of(&spec.model.kind)?;
    let paths: Vec<PathBuf> = spec
        .data
        .paths
        .iter()
        .map(|p| {
            let path = PathBuf::from(p);
            if path.is_absolute() || path.exists() {
                path
            } else {
                base.join(path)
            }
        })
        .collect();
    let mapping = ColumnMapping(spec.data.columns.clone());
    let global_batch = spec.global_batch as usize;
    let virtual_ranks = spec.virtual_ranks as usize;
    let mut plan_config = PlanConfig::new(spec.seed, global_batch, virtual_ranks);
    plan_config.partial_batch = match spec.data.partial_batch {
        coordinator::spec::PartialBatch::Drop => PartialBatch::Drop,
        coordinator::spec::PartialBatch::Pad => PartialBatch::Pad,
    };
    let dataset = Dataset::open(&paths)?;
    let plan = Plan::new(dataset.fingerprint(), plan_config.clone())?;
    let steps = match (spec.steps, spec.epochs) {
        (Some(steps), _) => steps,
        (None, Some(epochs)) => epochs * plan.steps_per_epoch(),
        (None, None) => bail!("the job gives neither `steps` nor `epochs`"),
    };
    let inputs = &spec.inputs;
    let job = TrainingJob {
        model_kind: spec.model.kind.clone(),
        model_config: serde_json::Value::Object(spec.model.config.clone()),
        optimizer: optimizer_of(spec),
        schedule: schedule_of(spec, steps),
        seed: spec.seed,
        virtual_ranks,
        steps,
        bucket_elements: CollectiveConfig::default().bucket_elements,
        draws: DrawSettings {
            input_scale: inputs.scale as f32,
            noise_std: inputs.noise_std as f32,
            mask_ratio: inputs.mask_ratio as f32,
            view_noise_std: inputs.view_noise_std as f32,
        },
    };
    Ok(PreparedJob {
        name: spec.name.clone().unwrap_or_else(|| spec.model.kind.clone()),
        job,
        paths,
        task,
        mapping,
        plan_config,
        global_batch,
        initial: spec.checkpoint.initial.as_ref().map(PathBuf::from),
    })
}

/// What a finished run measured.
pub(crate) struct RunSummary {
    pub(crate) report: RunReport,
    pub(crate) steps: Vec<TimedStep>,
    pub(crate) elapsed: Duration,
}

impl RunSummary {
    /// Median of the steps' wall time, in seconds.
    pub(crate) fn median_step_seconds(&self) -> f64 {
        let mut times: Vec<f64> = self
            .steps
            .iter()
            .map(|s| (s.data_wait + s.compute + s.all_reduce).as_secs_f64())
            .collect();
        times.sort_by(f64::total_cmp);
        times.get(times.len() / 2).copied().unwrap_or(0.0)
    }
}

/// Trains a prepared job with `workers` workers; `progress` sees each step.
pub(crate) fn train(
    prepared: &PreparedJob,
    workers: usize,
    mut progress: impl FnMut(&TimedStep),
) -> anyhow::Result<RunSummary> {
    if matches!(prepared.task, Task::GraphNodes) {
        return crate::cli::graph::train(prepared, progress);
    }
    let initial = match &prepared.initial {
        Some(path) => Some(Arc::new(ops::checkpoint::load(path)?)),
        None => None,
    };
    let open = || -> Result<(Plan, Reader), WorkerError> {
        let dataset = Dataset::open(&prepared.paths)?;
        let plan = Plan::new(dataset.fingerprint(), prepared.plan_config.clone())?;
        let reader = Reader::new(dataset, prepared.task, &prepared.mapping)?;
        Ok((plan, reader))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let started = Instant::now();
    let mut steps = Vec::new();
    let report = runtime.block_on(run_job(
        prepared.job.clone(),
        open,
        RunOptions {
            workers,
            collective: CollectiveConfig::default(),
            initial_checkpoint: initial,
        },
        |step| {
            progress(step);
            steps.push(step.clone());
        },
    ))?;
    Ok(RunSummary {
        report,
        steps,
        elapsed: started.elapsed(),
    })
}

/// Writes `checkpoint.safetensors` and `metrics.json` into `out`.
pub(crate) fn write_outputs(
    out: &Path,
    prepared: &PreparedJob,
    summary: &RunSummary,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let checkpoint = out.join("checkpoint.safetensors");
    std::fs::write(&checkpoint, &summary.report.checkpoint)
        .with_context(|| format!("write {}", checkpoint.display()))?;
    let steps: Vec<serde_json::Value> = summary
        .steps
        .iter()
        .map(|s| {
            let losses: BTreeMap<&str, f32> = s.report.losses.iter().copied().collect();
            serde_json::json!({
                "step": s.report.step,
                "lr": s.report.lr,
                "losses": losses,
                "data_wait_ms": s.data_wait.as_secs_f64() * 1e3,
                "compute_ms": s.compute.as_secs_f64() * 1e3,
                "all_reduce_ms": s.all_reduce.as_secs_f64() * 1e3,
            })
        })
        .collect();
    let metrics = serde_json::json!({
        "job": prepared.name,
        "model": prepared.job.model_kind,
        "virtual_ranks": prepared.job.virtual_ranks,
        "global_batch": prepared.global_batch,
        "checkpoint_sha256": summary.report.checkpoint_sha256,
        "elapsed_s": summary.elapsed.as_secs_f64(),
        "median_step_ms": summary.median_step_seconds() * 1e3,
        "steps": steps,
    });
    let path = out.join("metrics.json");
    std::fs::write(&path, serde_json::to_string_pretty(&metrics)?)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    let spec = read_spec(&args.job)?;
    let base = args.job.parent().unwrap_or(Path::new("."));
    let mut prepared = prepare(&spec, base).with_context(|| format!("{}", args.job.display()))?;
    if let Some(steps) = args.steps {
        prepared.job.steps = steps.max(1);
    }
    let total = prepared.job.steps;
    eprintln!(
        "training {} ({}) for {total} steps on {} workers, {} virtual ranks",
        prepared.name, prepared.job.model_kind, args.workers, prepared.job.virtual_ranks
    );
    let mut progress = Progress::new(
        &prepared.name,
        total,
        prepared.global_batch,
        args.log_every,
        false,
    );
    let summary = train(&prepared, args.workers, |step| progress.step(step))?;
    progress.finish();
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("out").join(&prepared.name));
    write_outputs(&out, &prepared, &summary)?;
    write_report(&out, &prepared, &summary)?;
    println!(
        "done in {:.1}s; checkpoint {} (sha256 {}); report in {}",
        summary.elapsed.as_secs_f64(),
        out.join("checkpoint.safetensors").display(),
        summary.report.checkpoint_sha256,
        out.display()
    );
    Ok(())
}
