//! `shoal run JOB.toml --workers N`: trains a job in single-node mode (a
//! coordinator and N workers in this process, over loopback QUIC, through
//! the code of `shoal coordinator` and `shoal worker`; see
//! [`super::cluster`]) and writes the checkpoint and metrics to an output
//! folder, local or in an object store (`--out s3://bucket/run/`).
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use coordinator::spec::JobSpec;
use worker::single_node::{RunReport, TimedStep};

use crate::cli::progress::Progress;
use crate::cli::report::write_report;

#[derive(Args)]
pub(crate) struct RunArgs {
    /// The job spec (TOML, or JSON when the file ends in .json).
    job: PathBuf,
    /// Number of workers (each hosts a contiguous range of virtual ranks).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Output folder for the checkpoint and metrics (default: out/NAME), or
    /// an object-store URL prefix (`s3://bucket/runs/NAME`): each file is
    /// uploaded and published whole, the checkpoint last.
    #[arg(long)]
    out: Option<String>,
    /// Train for this many steps instead of the spec's `steps`/`epochs`
    /// (a quick check that a spec runs).
    #[arg(long)]
    steps: Option<u64>,
    /// Print a progress line every this many steps (when standard error is
    /// not a terminal; on a terminal a progress bar shows every step).
    #[arg(long, default_value_t = 10)]
    log_every: u64,
    /// Serve Prometheus metrics of the in-process coordinator and workers
    /// at http://ADDR/metrics while the job runs (for example 127.0.0.1:9101).
    #[arg(long, env = "SHOAL_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
}

/// A job spec read from a file, with errors naming the file, the line and
/// the field.
pub(crate) fn read_spec(path: &Path) -> anyhow::Result<JobSpec> {
    crate::cli::spec_file::read_spec(path)
}

pub(crate) use worker::job::PreparedJob;

/// Checks `spec` and turns it into a training job; `base` resolves relative
/// data paths (see `worker::job::prepare`).
pub(crate) fn prepare(spec: &JobSpec, base: &Path) -> anyhow::Result<PreparedJob> {
    Ok(worker::job::prepare(spec, base)?)
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

/// Trains a prepared job with `workers` workers of an in-process
/// coordinator (see [`super::cluster`]), serving their Prometheus metrics
/// at `metrics_addr` if given; `progress` sees each step.
pub(crate) fn train(
    prepared: &PreparedJob,
    workers: usize,
    metrics_addr: Option<SocketAddr>,
    mut progress: impl FnMut(&TimedStep),
) -> anyhow::Result<RunSummary> {
    if workers == 0 || workers > prepared.job.virtual_ranks {
        anyhow::bail!(
            "invalid job: {workers} workers cannot host {} virtual ranks (each needs at least one)",
            prepared.job.virtual_ranks
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let started = Instant::now();
    let mut steps = Vec::new();
    // `--steps` may have shortened the job: the workers train the spec.
    let mut spec = prepared.spec.clone();
    spec.steps = Some(prepared.job.steps);
    spec.epochs = None;
    if let Some(warmup) = spec.schedule.warmup_steps.as_mut() {
        *warmup = (*warmup).min(prepared.job.steps);
    }
    let report = runtime.block_on(super::cluster::train_in_process(
        spec,
        prepared.job.steps,
        workers,
        metrics_addr,
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
            let evaluation: BTreeMap<&str, f64> = s
                .evaluation
                .iter()
                .map(|(name, value)| (name.as_str(), *value))
                .collect();
            serde_json::json!({
                "step": s.report.step,
                "lr": s.report.lr,
                "losses": losses,
                "evaluation": evaluation,
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
    let out = args.out.unwrap_or_else(|| {
        PathBuf::from("out")
            .join(&prepared.name)
            .display()
            .to_string()
    });
    if storage::is_url(&out) {
        // A missing bucket, refused credentials or an unreachable endpoint
        // fail now, not after the training.
        storage::check_location(&out).context("the output location (--out)")?;
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
    let summary = train(&prepared, args.workers, args.metrics_addr, |step| {
        progress.step(step)
    })?;
    progress.finish();
    if storage::is_url(&out) {
        upload_outputs(&out, &prepared, &summary)?;
    } else {
        write_outputs(Path::new(&out), &prepared, &summary)?;
        write_report(Path::new(&out), &prepared, &summary)?;
    }
    println!(
        "done in {:.1}s; checkpoint {} (sha256 {}); report in {out}",
        summary.elapsed.as_secs_f64(),
        storage::join(&out, "checkpoint.safetensors"),
        summary.report.checkpoint_sha256,
    );
    Ok(())
}

/// Writes the outputs into a local staging folder, then uploads each file
/// under the URL prefix `out` with `storage::write_atomic` (a reader sees a
/// whole object or none), the checkpoint last so that its presence means
/// the run's outputs are complete. The staging folder is removed after a
/// complete upload and kept (and named in the error) otherwise, so a
/// failed upload loses no training.
fn upload_outputs(out: &str, prepared: &PreparedJob, summary: &RunSummary) -> anyhow::Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let staging = std::env::temp_dir().join(format!("shoal-out-{}-{nanos}", std::process::id()));
    write_outputs(&staging, prepared, summary)?;
    write_report(&staging, prepared, summary)?;
    let uploaded = (|| -> anyhow::Result<()> {
        let mut names: Vec<String> = std::fs::read_dir(&staging)
            .with_context(|| format!("list {}", staging.display()))?
            .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("list {}", staging.display()))?;
        // The checkpoint last: sort it after every other name.
        names.sort_by_key(|name| (name == "checkpoint.safetensors", name.clone()));
        for name in names {
            let bytes = std::fs::read(staging.join(&name))
                .with_context(|| format!("read {}", staging.join(&name).display()))?;
            storage::write_atomic(&storage::join(out, &name), bytes)?;
        }
        Ok(())
    })();
    match uploaded {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(())
        }
        Err(error) => Err(error.context(format!(
            "uploading the outputs to {out} failed; they are kept in {}",
            staging.display()
        ))),
    }
}
