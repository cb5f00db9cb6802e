//! Job specifications: what a user submits (TOML, or the same fields in
//! JSON), parsed and checked field by field.
//!
//! This module is pure (no clock, no file system): whether the dataset
//! files exist is checked by the workers that read them (and by the
//! coordinator at submit when it can read them). It lives in `protocol`
//! because both sides need the typed spec: the coordinator checks and
//! stores it (`coordinator::spec` re-exports this module), the worker turns
//! the spec of its assignment into a training job.
//!
//! The model kinds it accepts, with their hyperparameters and data inputs,
//! are listed in [`MODEL_KINDS`]: a copy of what `models::registry::KINDS`
//! builds (the coordinator never depends on `models`); a test of the root
//! package checks that both lists agree.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a spec is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The spec text is not well-formed TOML or JSON, or a field has the
    /// wrong type; the message carries the line and column.
    #[error("invalid job spec ({format}): {message}")]
    Syntax {
        /// "TOML" or "JSON".
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// The spec parsed but a field's value is not acceptable.
    #[error("invalid job spec: {field}: {problem}")]
    Invalid {
        /// The field, as a dotted path (`optimizer.lr`).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl SpecError {
    fn invalid(field: impl Into<String>, problem: impl Into<String>) -> SpecError {
        SpecError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Results of spec parsing and checking.
pub type Result<T, E = SpecError> = std::result::Result<T, E>;

/// A job: the model, its data, how to optimise it, and on how many workers.
/// See `docs/notes/coordinator.md` for every field with an example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// A label for listings (the job's id is given by the coordinator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The model kind and its hyperparameters.
    pub model: ModelSpec,
    /// The objective; defaults to the model kind's only objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The training data.
    pub data: DataSpec,
    /// The optimizer and its settings.
    pub optimizer: OptimizerSpec,
    /// How the learning rate changes over the steps.
    #[serde(default)]
    pub schedule: ScheduleSpec,
    /// Samples per optimizer step, over all workers (G).
    pub global_batch: u64,
    /// Number of virtual ranks (V): G/V samples each, whatever the number of
    /// workers; weights do not depend on how many workers host them.
    pub virtual_ranks: u32,
    /// Number of optimizer steps (exactly one of `steps` and `epochs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// Number of passes over the data (exactly one of `steps` and `epochs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u64>,
    /// Seeds parameter initialisation, the sample order and random draws.
    #[serde(default)]
    pub seed: u64,
    /// When to write checkpoints and how many to keep.
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    /// How many workers the job runs on.
    #[serde(default)]
    pub workers: WorkersSpec,
    /// Optional held-out data evaluated every `interval_steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<EvaluationSpec>,
    /// How inputs are scaled and random inputs drawn.
    #[serde(default)]
    pub inputs: InputsSpec,
    /// Largest all-reduce bucket of gradients, MiB (default
    /// [`DEFAULT_GRADIENT_BUCKET_MIB`]). Buckets are all-reduced while
    /// backward goes on; part of the summation order, so fixed per job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_bucket_mib: Option<f64>,
    /// Most gradient buckets whose all-reduces move at once (default
    /// [`DEFAULT_GRADIENT_BUCKETS_IN_FLIGHT`], at least 1). Never changes
    /// the results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_buckets_in_flight: Option<usize>,
}

/// Default largest gradient bucket, MiB. Every model of the zoo fits in
/// one bucket (one all-reduce per step); see BENCHMARKS.md for the
/// measurement behind it.
pub const DEFAULT_GRADIENT_BUCKET_MIB: f64 = 16.0;

/// Default number of gradient buckets in flight; see BENCHMARKS.md for the
/// measurement behind it.
pub const DEFAULT_GRADIENT_BUCKETS_IN_FLIGHT: usize = 4;

/// `[inputs]`: scaling of the data and the random inputs the trainer draws
/// (every draw keyed by seed, epoch and sample id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputsSpec {
    /// Multiplies every float input read from the data (default 1; 0.0625
    /// brings the digits' 0-16 pixels into [0, 1]).
    #[serde(default = "one")]
    pub scale: f64,
    /// Standard deviation of the denoising autoencoder's input noise (default 0.1).
    #[serde(default = "one_tenth")]
    pub noise_std: f64,
    /// Probability that the masked autoencoder hides an entry (default 0.75).
    #[serde(default = "three_quarters")]
    pub mask_ratio: f64,
    /// Standard deviation of the Gaussian noise of each Barlow Twins view (default 0.1).
    #[serde(default = "one_tenth")]
    pub view_noise_std: f64,
}

fn one() -> f64 {
    1.0
}

fn one_tenth() -> f64 {
    0.1
}

fn three_quarters() -> f64 {
    0.75
}

impl Default for InputsSpec {
    fn default() -> Self {
        InputsSpec {
            scale: one(),
            noise_std: one_tenth(),
            mask_ratio: three_quarters(),
            view_noise_std: one_tenth(),
        }
    }
}

/// `[model]`: which model, with which constructor arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// One of [`MODEL_KINDS`] (`mlp`, `lstm`, ..., `mae`).
    pub kind: String,
    /// The reference constructor's keyword arguments (`d_in`, `d_hidden`,
    /// ...), passed to `models::build` as JSON.
    #[serde(default)]
    pub config: serde_json::Map<String, Value>,
}

/// `[data]`: Parquet files and which column feeds which model input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Files, directories or globs, as the workers see them.
    pub paths: Vec<String>,
    /// Model input name (`x`, `label`, `tokens`, ...) to Parquet column.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// What to do with the last, incomplete global batch of an epoch.
    #[serde(default)]
    pub partial_batch: PartialBatch,
}

/// The rule for an epoch's last global batch when it is incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartialBatch {
    /// Skip the leftover samples.
    #[default]
    Drop,
    /// Fill the batch with samples from the start of the epoch's order.
    Pad,
}

/// `[optimizer]`: PyTorch's optimizers, with PyTorch's defaults for what is
/// left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    /// `sgd`, `adam` or `adamw`.
    pub kind: OptimizerKind,
    /// Peak learning rate.
    pub lr: f64,
    /// SGD momentum (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// SGD dampening (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dampening: Option<f64>,
    /// SGD Nesterov momentum (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nesterov: Option<bool>,
    /// Adam/AdamW moment decay rates (default [0.9, 0.999]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub betas: Option<[f64; 2]>,
    /// Adam/AdamW denominator term (default 1e-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    /// L2 penalty (SGD, Adam; default 0) or decoupled decay (AdamW; default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
}

/// The optimizers a job can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Stochastic gradient descent, optionally with momentum.
    Sgd,
    /// Adam (L2 weight decay added to the gradient).
    Adam,
    /// AdamW (decoupled weight decay).
    Adamw,
}

impl OptimizerKind {
    fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
            OptimizerKind::Adamw => "adamw",
        }
    }
}

/// `[schedule]`: the learning rate over the steps.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// `constant`, `linear_warmup` or `cosine`.
    #[serde(default)]
    pub kind: ScheduleKind,
    /// Steps of linear increase from 0 to `lr` (`linear_warmup`: required;
    /// `cosine`: optional, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<u64>,
    /// The rate the cosine decays to at the last step (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_lr: Option<f64>,
}

/// The learning-rate schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// `lr` at every step.
    #[default]
    Constant,
    /// From 0 to `lr` over `warmup_steps`, then `lr`.
    LinearWarmup,
    /// Optional linear warm-up, then half a cosine from `lr` to `min_lr`.
    Cosine,
}

/// `[checkpoint]`: periodic checkpoints (always one at the end).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Write a checkpoint every this many steps (default: only at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_steps: Option<u64>,
    /// How many checkpoints to keep, newest first (default 3).
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// A safetensors file (names as the PyTorch `state_dict`) to start from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<String>,
}

fn default_keep() -> u32 {
    3
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec {
            interval_steps: None,
            keep: default_keep(),
            initial: None,
        }
    }
}

/// `[workers]`: how many workers the job runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersSpec {
    /// Below this many workers the job waits (default 1).
    #[serde(default = "default_min_workers")]
    pub min: u32,
    /// The job never takes more (default: `virtual_ranks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

fn default_min_workers() -> u32 {
    1
}

impl Default for WorkersSpec {
    fn default() -> Self {
        WorkersSpec {
            min: default_min_workers(),
            max: None,
        }
    }
}

/// `[evaluation]`: held-out data scored during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationSpec {
    /// Files, directories or globs.
    pub paths: Vec<String>,
    /// Evaluate every this many steps (and at the end).
    pub interval_steps: u64,
    /// Column mapping, when it differs from `data.columns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<BTreeMap<String, String>>,
}

/// What the coordinator knows of a model kind: its objective, its
/// hyperparameters and the data columns it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelKind {
    /// The name in `model.kind` (as in `models::registry::KINDS`).
    pub name: &'static str,
    /// The objective (`task`) it trains.
    pub task: &'static str,
    /// `model.config` keys that must be given (positive integers).
    pub required_config: &'static [&'static str],
    /// `model.config` keys that may be given (positive integers).
    pub optional_config: &'static [&'static str],
    /// `data.columns` keys that must be mapped.
    pub required_inputs: &'static [&'static str],
    /// `data.columns` keys that may be mapped (the rest are generated:
    /// noise, latents, masks, views).
    pub optional_inputs: &'static [&'static str],
}

const SEQUENCE_CONFIG: &[&str] = &["vocab", "d_model", "n_layers"];
const SEQUENCE_OPTIONAL: &[&str] = &["d_state"];

const fn sequence(name: &'static str) -> ModelKind {
    ModelKind {
        name,
        task: "next_token",
        required_config: SEQUENCE_CONFIG,
        optional_config: SEQUENCE_OPTIONAL,
        required_inputs: &["tokens"],
        optional_inputs: &["targets"],
    }
}

/// The model kinds of `shared/reference/models.py`, with the constructor
/// arguments there.
pub const MODEL_KINDS: &[ModelKind] = &[
    ModelKind {
        name: "mlp",
        task: "classification",
        required_config: &["d_in", "d_hidden", "n_classes"],
        optional_config: &[],
        required_inputs: &["x", "label"],
        optional_inputs: &[],
    },
    sequence("lstm"),
    sequence("gru"),
    sequence("qrnn"),
    sequence("s4d"),
    sequence("mamba"),
    ModelKind {
        name: "autoencoder",
        task: "reconstruction",
        required_config: &["d", "d_hidden", "d_latent"],
        optional_config: &[],
        required_inputs: &["x"],
        optional_inputs: &[],
    },
    ModelKind {
        name: "vae",
        task: "elbo",
        required_config: &["d", "d_hidden", "d_latent"],
        optional_config: &[],
        required_inputs: &["x"],
        optional_inputs: &[],
    },
    ModelKind {
        name: "gan",
        task: "adversarial",
        required_config: &["d_latent", "d_hidden", "d_data"],
        optional_config: &[],
        required_inputs: &["x"],
        optional_inputs: &[],
    },
    ModelKind {
        name: "gcn",
        task: "node_classification",
        required_config: &["d_in", "d_hidden", "n_classes"],
        optional_config: &[],
        required_inputs: &["x", "src", "dst", "label"],
        optional_inputs: &["train_mask"],
    },
    ModelKind {
        name: "barlow_twins",
        task: "barlow_twins",
        required_config: &["d_in", "d_hidden", "d_proj"],
        optional_config: &[],
        required_inputs: &["x"],
        optional_inputs: &[],
    },
    ModelKind {
        name: "mae",
        task: "masked_reconstruction",
        required_config: &["d", "d_hidden"],
        optional_config: &[],
        required_inputs: &["x"],
        optional_inputs: &[],
    },
];

/// The entry of [`MODEL_KINDS`] named `name`.
pub fn model_kind(name: &str) -> Option<&'static ModelKind> {
    MODEL_KINDS.iter().find(|kind| kind.name == name)
}

/// How a spec is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFormat {
    /// TOML (the usual form of a job file).
    Toml,
    /// JSON with the same fields.
    Json,
}

impl JobSpec {
    /// Parses and validates a spec. Syntax and type errors carry the line
    /// and column; value errors name the field.
    pub fn parse(text: &str, format: SpecFormat) -> Result<JobSpec> {
        let spec: JobSpec = match format {
            SpecFormat::Toml => toml::from_str(text).map_err(|error| SpecError::Syntax {
                format: "TOML",
                message: error.to_string().trim_end().to_string(),
            })?,
            SpecFormat::Json => serde_json::from_str(text).map_err(|error| SpecError::Syntax {
                format: "JSON",
                message: error.to_string(),
            })?,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Parses and validates a TOML spec.
    pub fn from_toml(text: &str) -> Result<JobSpec> {
        JobSpec::parse(text, SpecFormat::Toml)
    }

    /// Parses and validates a JSON spec.
    pub fn from_json(text: &str) -> Result<JobSpec> {
        JobSpec::parse(text, SpecFormat::Json)
    }

    /// The objective: `task`, or the model kind's.
    pub fn task(&self) -> &str {
        match &self.task {
            Some(task) => task,
            None => model_kind(&self.model.kind).map_or("", |kind| kind.task),
        }
    }

    /// The most workers the job takes: `workers.max`, or `virtual_ranks`.
    pub fn max_workers(&self) -> u32 {
        self.workers.max.unwrap_or(self.virtual_ranks)
    }

    /// The least workers the job runs on.
    pub fn min_workers(&self) -> u32 {
        self.workers.min
    }

    /// Samples per virtual rank per step (G / V).
    pub fn micro_batch(&self) -> u64 {
        self.global_batch / u64::from(self.virtual_ranks.max(1))
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<()> {
        let inputs = &self.inputs;
        for (field, value) in [
            ("inputs.scale", inputs.scale),
            ("inputs.noise_std", inputs.noise_std),
            ("inputs.view_noise_std", inputs.view_noise_std),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(bad(field, format!("{value} is not a finite number >= 0")));
            }
        }
        if !(0.0..=1.0).contains(&inputs.mask_ratio) {
            return Err(bad(
                "inputs.mask_ratio",
                format!("{} is not a probability in [0, 1]", inputs.mask_ratio),
            ));
        }
        if let Some(name) = &self.name {
            if name.trim().is_empty() {
                return Err(bad("name", "must not be empty"));
            }
            if name.chars().count() > 128 {
                return Err(bad("name", "is longer than 128 characters"));
            }
        }

        // ---- model ----
        let kind = model_kind(&self.model.kind).ok_or_else(|| {
            let known: Vec<&str> = MODEL_KINDS.iter().map(|kind| kind.name).collect();
            bad(
                "model.kind",
                format!(
                    "unknown model `{}` (known: {})",
                    self.model.kind,
                    known.join(", ")
                ),
            )
        })?;
        for key in kind.required_config {
            if !self.model.config.contains_key(*key) {
                return Err(bad(
                    format!("model.config.{key}"),
                    format!(
                        "missing (model `{}` needs {})",
                        kind.name,
                        list(kind.required_config)
                    ),
                ));
            }
        }
        for (key, value) in &self.model.config {
            if !kind.required_config.contains(&key.as_str())
                && !kind.optional_config.contains(&key.as_str())
            {
                let mut known: Vec<&str> = kind.required_config.to_vec();
                known.extend(kind.optional_config);
                return Err(bad(
                    format!("model.config.{key}"),
                    format!(
                        "unknown hyperparameter of model `{}` (known: {})",
                        kind.name,
                        list(&known)
                    ),
                ));
            }
            if value.as_u64().is_none_or(|number| number == 0) {
                return Err(bad(
                    format!("model.config.{key}"),
                    format!("{value} is not a positive integer"),
                ));
            }
        }
        if let Some(task) = &self.task
            && task != kind.task
        {
            return Err(bad(
                "task",
                format!("model `{}` trains `{}`, not `{task}`", kind.name, kind.task),
            ));
        }

        // ---- data ----
        check_paths("data.paths", &self.data.paths)?;
        check_columns("data.columns", &self.data.columns, kind)?;

        // ---- optimizer and schedule ----
        self.validate_optimizer()?;
        self.validate_schedule()?;

        // ---- batch and length ----
        if self.global_batch == 0 {
            return Err(bad("global_batch", "must be at least 1"));
        }
        if self.virtual_ranks == 0 {
            return Err(bad("virtual_ranks", "must be at least 1"));
        }
        if !self
            .global_batch
            .is_multiple_of(u64::from(self.virtual_ranks))
        {
            return Err(bad(
                "global_batch",
                format!(
                    "{} is not divisible by virtual_ranks = {}",
                    self.global_batch, self.virtual_ranks
                ),
            ));
        }
        match (self.steps, self.epochs) {
            (None, None) => return Err(bad("steps", "give either `steps` or `epochs`")),
            (Some(_), Some(_)) => {
                return Err(bad("steps", "give either `steps` or `epochs`, not both"));
            }
            (Some(0), None) => return Err(bad("steps", "must be at least 1")),
            (None, Some(0)) => return Err(bad("epochs", "must be at least 1")),
            _ => {}
        }

        // ---- checkpoints ----
        if self.checkpoint.interval_steps == Some(0) {
            return Err(bad("checkpoint.interval_steps", "must be at least 1"));
        }
        if self.checkpoint.keep == 0 {
            return Err(bad(
                "checkpoint.keep",
                "must be at least 1 (the final checkpoint is always kept)",
            ));
        }
        if let Some(initial) = &self.checkpoint.initial {
            if initial.trim().is_empty() {
                return Err(bad("checkpoint.initial", "must not be empty"));
            }
            if !initial.ends_with(".safetensors") {
                return Err(bad(
                    "checkpoint.initial",
                    format!("`{initial}` is not a .safetensors file"),
                ));
            }
        }

        if let Some(mib) = self.gradient_bucket_mib
            && !(mib.is_finite() && mib * 1048576.0 >= 4.0 && mib <= 4096.0)
        {
            return Err(bad(
                "gradient_bucket_mib",
                format!("{mib} is not between 4 bytes and 4096 MiB"),
            ));
        }
        if let Some(in_flight) = self.gradient_buckets_in_flight
            && !(1..=64).contains(&in_flight)
        {
            return Err(bad(
                "gradient_buckets_in_flight",
                format!("{in_flight} is not between 1 and 64"),
            ));
        }
        // ---- workers ----
        if self.workers.min == 0 {
            return Err(bad("workers.min", "must be at least 1"));
        }
        if let Some(max) = self.workers.max
            && max < self.workers.min
        {
            return Err(bad(
                "workers.max",
                format!("{max} is less than workers.min = {}", self.workers.min),
            ));
        }
        if self.max_workers() > self.virtual_ranks {
            return Err(bad(
                "workers.max",
                format!(
                    "{} is more than virtual_ranks = {} (each worker hosts at least one virtual rank)",
                    self.max_workers(),
                    self.virtual_ranks
                ),
            ));
        }
        if self.workers.min > self.virtual_ranks {
            return Err(bad(
                "workers.min",
                format!(
                    "{} is more than virtual_ranks = {} (each worker hosts at least one virtual rank)",
                    self.workers.min, self.virtual_ranks
                ),
            ));
        }

        // ---- evaluation ----
        if let Some(evaluation) = &self.evaluation {
            check_paths("evaluation.paths", &evaluation.paths)?;
            if evaluation.interval_steps == 0 {
                return Err(bad("evaluation.interval_steps", "must be at least 1"));
            }
            if let Some(columns) = &evaluation.columns {
                check_columns("evaluation.columns", columns, kind)?;
            }
        }
        Ok(())
    }

    fn validate_optimizer(&self) -> Result<()> {
        let optimizer = &self.optimizer;
        let kind = optimizer.kind.name();
        if !(optimizer.lr.is_finite() && optimizer.lr > 0.0) {
            return Err(bad(
                "optimizer.lr",
                format!("{} is not a positive number", optimizer.lr),
            ));
        }
        let sgd_only = [
            ("momentum", optimizer.momentum.is_some()),
            ("dampening", optimizer.dampening.is_some()),
            ("nesterov", optimizer.nesterov.is_some()),
        ];
        let adam_only = [
            ("betas", optimizer.betas.is_some()),
            ("eps", optimizer.eps.is_some()),
        ];
        let not_applicable = match optimizer.kind {
            OptimizerKind::Sgd => &adam_only[..],
            OptimizerKind::Adam | OptimizerKind::Adamw => &sgd_only[..],
        };
        if let Some((field, _)) = not_applicable.iter().find(|(_, given)| *given) {
            return Err(bad(
                format!("optimizer.{field}"),
                format!("is not a setting of `{kind}`"),
            ));
        }
        if let Some(momentum) = optimizer.momentum
            && !(0.0..1.0).contains(&momentum)
        {
            return Err(bad(
                "optimizer.momentum",
                format!("{momentum} is not in [0, 1)"),
            ));
        }
        if let Some(dampening) = optimizer.dampening
            && !(0.0..=1.0).contains(&dampening)
        {
            return Err(bad(
                "optimizer.dampening",
                format!("{dampening} is not in [0, 1]"),
            ));
        }
        if optimizer.nesterov == Some(true)
            && (optimizer.momentum.unwrap_or(0.0) <= 0.0
                || optimizer.dampening.unwrap_or(0.0) != 0.0)
        {
            return Err(bad(
                "optimizer.nesterov",
                "needs a positive momentum and zero dampening",
            ));
        }
        if let Some(betas) = optimizer.betas {
            for (index, beta) in betas.iter().enumerate() {
                if !(0.0..1.0).contains(beta) {
                    return Err(bad(
                        format!("optimizer.betas[{index}]"),
                        format!("{beta} is not in [0, 1)"),
                    ));
                }
            }
        }
        if let Some(eps) = optimizer.eps
            && !(eps.is_finite() && eps > 0.0)
        {
            return Err(bad(
                "optimizer.eps",
                format!("{eps} is not a positive number"),
            ));
        }
        if let Some(decay) = optimizer.weight_decay
            && !(decay.is_finite() && decay >= 0.0)
        {
            return Err(bad(
                "optimizer.weight_decay",
                format!("{decay} is negative or not a number"),
            ));
        }
        Ok(())
    }

    fn validate_schedule(&self) -> Result<()> {
        let schedule = &self.schedule;
        match schedule.kind {
            ScheduleKind::Constant => {
                if schedule.warmup_steps.is_some() {
                    return Err(bad(
                        "schedule.warmup_steps",
                        "is not a setting of `constant` (use `linear_warmup`)",
                    ));
                }
                if schedule.min_lr.is_some() {
                    return Err(bad("schedule.min_lr", "is a setting of `cosine` only"));
                }
            }
            ScheduleKind::LinearWarmup => {
                match schedule.warmup_steps {
                    None => {
                        return Err(bad(
                            "schedule.warmup_steps",
                            "missing (`linear_warmup` needs it)",
                        ));
                    }
                    Some(0) => return Err(bad("schedule.warmup_steps", "must be at least 1")),
                    Some(_) => {}
                }
                if schedule.min_lr.is_some() {
                    return Err(bad("schedule.min_lr", "is a setting of `cosine` only"));
                }
            }
            ScheduleKind::Cosine => {
                if let Some(min_lr) = schedule.min_lr
                    && !(min_lr.is_finite() && min_lr >= 0.0 && min_lr <= self.optimizer.lr)
                {
                    return Err(bad(
                        "schedule.min_lr",
                        format!(
                            "{min_lr} is not in [0, optimizer.lr = {}]",
                            self.optimizer.lr
                        ),
                    ));
                }
            }
        }
        if let (Some(warmup), Some(steps)) = (schedule.warmup_steps, self.steps)
            && warmup > steps
        {
            return Err(bad(
                "schedule.warmup_steps",
                format!("{warmup} is more than steps = {steps}"),
            ));
        }
        Ok(())
    }
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> SpecError {
    SpecError::invalid(field, problem)
}

fn list(names: &[&str]) -> String {
    names.join(", ")
}

fn check_paths(field: &str, paths: &[String]) -> Result<()> {
    if paths.is_empty() {
        return Err(SpecError::invalid(
            field,
            "must list at least one Parquet file, directory or glob",
        ));
    }
    if let Some(index) = paths.iter().position(|path| path.trim().is_empty()) {
        return Err(SpecError::invalid(
            format!("{field}[{index}]"),
            "must not be empty",
        ));
    }
    Ok(())
}

fn check_columns(field: &str, columns: &BTreeMap<String, String>, kind: &ModelKind) -> Result<()> {
    for input in kind.required_inputs {
        if !columns.contains_key(*input) {
            return Err(SpecError::invalid(
                format!("{field}.{input}"),
                format!(
                    "missing: model `{}` reads {} (map each to a Parquet column)",
                    kind.name,
                    list(kind.required_inputs)
                ),
            ));
        }
    }
    for (input, column) in columns {
        if !kind.required_inputs.contains(&input.as_str())
            && !kind.optional_inputs.contains(&input.as_str())
        {
            let mut known: Vec<&str> = kind.required_inputs.to_vec();
            known.extend(kind.optional_inputs);
            return Err(SpecError::invalid(
                format!("{field}.{input}"),
                format!(
                    "model `{}` has no input `{input}` (inputs: {})",
                    kind.name,
                    list(&known)
                ),
            ));
        }
        if column.trim().is_empty() {
            return Err(SpecError::invalid(
                format!("{field}.{input}"),
                "the column name must not be empty",
            ));
        }
    }
    Ok(())
}
