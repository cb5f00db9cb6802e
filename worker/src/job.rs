//! From a job spec (`protocol::spec::JobSpec`) to what a replica trains:
//! the [`TrainingJob`], the dataset files, the column mapping and the plan
//! settings. Shared by the networked worker ([`crate::agent`]) and the
//! CLI's single-node paths, so every path trains the same job from a spec.
use std::path::{Path, PathBuf};

use datasets::{ColumnMapping, Dataset, PartialBatch, Plan, PlanConfig, Reader, Task};
use ops::optim::{LearningRateSchedule, OptimizerConfig};
use protocol::spec::{self, JobSpec, OptimizerKind, ScheduleKind};

use crate::WorkerError;
use crate::evaluation::EvaluationSettings;
use crate::inputs::DrawSettings;
use crate::replica::{Replica, TrainingJob};

/// Everything a worker needs to train a spec.
#[derive(Clone, Debug)]
pub struct PreparedJob {
    /// The job's name (the spec's, else the model kind).
    pub name: String,
    /// What the replica trains.
    pub job: TrainingJob,
    /// The dataset files, directories or globs, resolved.
    pub paths: Vec<PathBuf>,
    /// How samples become model inputs.
    pub task: Task,
    /// Model inputs to Parquet columns.
    pub mapping: ColumnMapping,
    /// Seed, global batch, virtual ranks and partial-batch rule of the plan.
    pub plan_config: PlanConfig,
    /// Samples per step.
    pub global_batch: usize,
    /// A checkpoint to start from: a local path or an object-store URL
    /// (see [`load_checkpoint`]).
    pub initial: Option<String>,
    /// Write a checkpoint every this many steps (and always at the end).
    pub checkpoint_interval: Option<u64>,
    /// Held-out data scored during training (`[evaluation]`).
    pub evaluation: Option<EvaluationSettings>,
    /// The spec, with its data paths resolved.
    pub spec: JobSpec,
}

impl PreparedJob {
    /// Opens the dataset: the plan (from the files' footers) and a reader.
    pub fn open_data(&self) -> Result<(Plan, Reader), WorkerError> {
        let dataset = Dataset::open(&self.paths)?;
        let plan = Plan::new(dataset.fingerprint(), self.plan_config.clone())?;
        let reader = Reader::new(dataset, self.task, &self.mapping)?;
        Ok((plan, reader))
    }

    /// A fresh replica of the job: the dataset opened (a graph job's graph
    /// read whole), the model initialized from the seed, then from the
    /// spec's initial checkpoint if it has one.
    pub fn open_replica(&self) -> Result<Replica, WorkerError> {
        let (plan, reader) = self.open_data()?;
        let mut replica = Replica::new(self.job.clone(), plan, reader)?;
        if matches!(self.task, Task::GraphNodes) {
            replica = replica.with_graph(&crate::graph::graph_batch(self)?)?;
        }
        if let Some(initial) = &self.initial {
            let file = load_checkpoint(initial)?;
            replica.restore(&file, "the initial checkpoint")?;
        }
        Ok(replica)
    }
}

/// The dataset task that feeds a model kind.
pub fn task_of(kind: &str) -> Result<Task, WorkerError> {
    Ok(match kind {
        "mlp" => Task::Classify,
        "lstm" | "gru" | "qrnn" | "s4d" | "mamba" => Task::Sequence,
        "autoencoder" | "vae" | "gan" | "mae" | "barlow_twins" => Task::Vectors,
        // One whole graph, its training nodes dealt to the virtual ranks
        // (see `graph`).
        "gcn" => Task::GraphNodes,
        other => {
            return Err(WorkerError::Job {
                reason: format!("model `{other}` has no data task"),
            });
        }
    })
}

/// The optimizer of a spec, with PyTorch's defaults for what it omits.
pub fn optimizer_of(spec: &JobSpec) -> OptimizerConfig {
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

/// The learning-rate schedule of a spec over `total_steps`.
pub fn schedule_of(spec: &JobSpec, total_steps: u64) -> LearningRateSchedule {
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

/// Checks `spec` and turns it into a training job; `base` resolves relative
/// data paths that do not exist as given. Opens the dataset's footers (for
/// the number of steps of an `epochs` spec, and to fail early on data that
/// cannot be read).
pub fn prepare(spec: &JobSpec, base: &Path) -> Result<PreparedJob, WorkerError> {
    spec.validate()?;
    let task = task_of(&spec.model.kind)?;
    let resolve = |inputs: &[String]| -> Vec<PathBuf> {
        inputs
            .iter()
            .map(|p| {
                let path = PathBuf::from(p);
                // URLs (`s3://bucket/prefix/`) are opened by the registered
                // store opener, never joined to a local folder.
                if datasets::object::is_url(p) || path.is_absolute() || path.exists() {
                    path
                } else {
                    base.join(path)
                }
            })
            .collect()
    };
    let paths = resolve(&spec.data.paths);
    let evaluation = spec
        .evaluation
        .as_ref()
        .map(|evaluation| EvaluationSettings {
            paths: resolve(&evaluation.paths),
            mapping: ColumnMapping(
                evaluation
                    .columns
                    .clone()
                    .unwrap_or_else(|| spec.data.columns.clone()),
            ),
            interval_steps: evaluation.interval_steps,
        });
    let mapping = ColumnMapping(spec.data.columns.clone());
    let global_batch = spec.global_batch as usize;
    let virtual_ranks = spec.virtual_ranks as usize;
    let mut plan_config = PlanConfig::new(spec.seed, global_batch, virtual_ranks);
    plan_config.partial_batch = match spec.data.partial_batch {
        spec::PartialBatch::Drop => PartialBatch::Drop,
        spec::PartialBatch::Pad => PartialBatch::Pad,
    };
    let dataset = Dataset::open(&paths)?;
    if let Some(settings) = &evaluation {
        Dataset::open(&settings.paths)?;
    }
    let plan = Plan::new(dataset.fingerprint(), plan_config.clone())?;
    if let Some(initial) = &spec.checkpoint.initial {
        check_checkpoint(initial)?;
    }
    let steps = match (spec.steps, spec.epochs) {
        (Some(steps), _) => steps,
        (None, Some(epochs)) => epochs * plan.steps_per_epoch(),
        (None, None) => {
            return Err(WorkerError::Job {
                reason: "the job gives neither `steps` nor `epochs`".to_string(),
            });
        }
    };
    let mut resolved = spec.clone();
    resolved.data.paths = paths
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    if let (Some(resolved), Some(settings)) = (&mut resolved.evaluation, &evaluation) {
        resolved.paths = settings
            .paths
            .iter()
            .map(|path| path.display().to_string())
            .collect();
    }
    let inputs = &spec.inputs;
    let job = TrainingJob {
        model_kind: spec.model.kind.clone(),
        model_config: serde_json::Value::Object(spec.model.config.clone()),
        optimizer: optimizer_of(spec),
        schedule: schedule_of(spec, steps),
        seed: spec.seed,
        virtual_ranks,
        steps,
        bucket_elements: bucket_elements(
            spec.gradient_bucket_mib
                .unwrap_or(protocol::spec::DEFAULT_GRADIENT_BUCKET_MIB),
        ),
        buckets_in_flight: spec
            .gradient_buckets_in_flight
            .unwrap_or(protocol::spec::DEFAULT_GRADIENT_BUCKETS_IN_FLIGHT),
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
        initial: spec.checkpoint.initial.clone(),
        checkpoint_interval: spec
            .checkpoint
            .interval_steps
            .filter(|interval| *interval > 0),
        evaluation,
        spec: resolved,
    })
}

/// Reads the checkpoint at `location`: a local path, or an object-store URL
/// (`s3://bucket/run/checkpoint.safetensors`) read through the store opener
/// the binary registers with `datasets` (the `storage` crate).
pub fn load_checkpoint(location: &str) -> Result<ops::checkpoint::TensorFile, WorkerError> {
    if !datasets::object::is_url(location) {
        return Ok(ops::checkpoint::load(Path::new(location))?);
    }
    let bytes = datasets::object::read_url(location).map_err(|source| WorkerError::Io {
        path: PathBuf::from(location),
        source,
    })?;
    Ok(ops::checkpoint::decode(&bytes, location)?)
}

/// Fails early, with the store's or the file system's reason, when the
/// checkpoint at `location` cannot be found or reached (a missing bucket,
/// a wrong key, an unreachable endpoint), before any worker trains.
fn check_checkpoint(location: &str) -> Result<(), WorkerError> {
    let found = if datasets::object::is_url(location) {
        datasets::object::url_size(location).map(drop)
    } else {
        std::fs::metadata(location).map(drop)
    };
    found.map_err(|source| WorkerError::Io {
        path: PathBuf::from(location),
        source,
    })
}

/// f32 values in a bucket of `mib` MiB (at least one).
pub fn bucket_elements(mib: f64) -> usize {
    ((mib * 1048576.0 / 4.0) as usize).max(1)
}
