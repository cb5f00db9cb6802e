//! A replica of a job's training state (model, optimizers, data cursor) and
//! the pieces of a data-parallel step, driven by whoever does the
//! all-reduce: [`crate::local`] in one process, the networked worker over
//! the ring. No I/O beyond reading the dataset.
//!
//! A step is, for each objective in order: the gradient buckets of every
//! hosted virtual rank ([`Replica::stream_gradients`], bucket by bucket as
//! backward produces them), an all-reduce of each bucket over all V virtual
//! ranks in the order fixed by V, then the same update on every replica
//! ([`Replica::apply`]). Replicas therefore stay bit-identical, whatever
//! the number of workers.
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datasets::read::Reader;
use datasets::{DataCursor, MicroBatch, Plan, Prefetch, StepBatch, StepBatches};
use models::training::Trainer;
use models::{Batch, Model};
use ops::checkpoint::{self, TensorFile};
use ops::optim::{LearningRateSchedule, OptimizerConfig};

use crate::WorkerError;
use crate::graph::RankedGraph;
use crate::inputs::{DrawSettings, model_batch};
use crate::overlap::Emit;
use crate::step::{GradientLayout, rank_gradient_buckets, stream_rank_gradients};

/// What a replica needs to know about its job.
#[derive(Clone, Debug)]
pub struct TrainingJob {
    /// The model kind (`mlp`, `mamba`, ...).
    pub model_kind: String,
    /// The model's constructor arguments, as in the reference.
    pub model_config: serde_json::Value,
    /// The optimizer of every objective.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule over steps.
    pub schedule: LearningRateSchedule,
    /// Seed of initialization, data order and draws.
    pub seed: u64,
    /// Number of virtual ranks V.
    pub virtual_ranks: usize,
    /// Total steps to train.
    pub steps: u64,
    /// Largest number of values per all-reduce bucket (part of the
    /// summation order, see [`GradientLayout`]).
    pub bucket_elements: usize,
    /// Most buckets whose all-reduces move at once (never changes results).
    pub buckets_in_flight: usize,
    /// How random inputs are drawn.
    pub draws: DrawSettings,
}

/// One replica of the training state.
pub struct Replica {
    job: TrainingJob,
    model: Box<dyn Model>,
    trainer: Trainer,
    plan: Plan,
    reader: Reader,
    cursor: DataCursor,
    completed_steps: u64,
    batches: Vec<Batch>,
    /// The bucket layout of each objective's gradients.
    layouts: Vec<Arc<GradientLayout>>,
    /// A graph job's graph, dealt to the virtual ranks (see
    /// [`crate::graph`]); `None` for jobs that read samples.
    graph: Option<RankedGraph>,
    /// The next steps' micro-batches, read ahead on a thread.
    read_ahead: Option<ReadAhead>,
}

/// Steps read ahead by [`Prefetch`] for one range of virtual ranks.
struct ReadAhead {
    ranks: Range<usize>,
    /// In a mutex only so that the replica is `Sync` (it is reached
    /// through `&mut self`, never locked).
    steps: Mutex<Prefetch<datasets::Result<StepBatch>>>,
}

impl ReadAhead {
    /// How many steps the thread reads ahead of the one being trained.
    const DEPTH: usize = 2;
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("model", &self.job.model_kind)
            .field("cursor", &self.cursor)
            .field("completed_steps", &self.completed_steps)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// A fresh replica: the model initialized from the job's seed, at the
    /// first step of the plan.
    pub fn new(job: TrainingJob, plan: Plan, reader: Reader) -> Result<Replica, WorkerError> {
        if plan.config().virtual_ranks != job.virtual_ranks {
            return Err(WorkerError::Job {
                reason: format!(
                    "the plan has {} virtual ranks but the job {}",
                    plan.config().virtual_ranks,
                    job.virtual_ranks
                ),
            });
        }
        let model = models::build(&job.model_kind, &job.model_config, job.seed)?;
        let trainer = Trainer::new(model.as_ref(), &job.optimizer);
        let layouts = model
            .objectives()
            .iter()
            .map(|objective| {
                Arc::new(GradientLayout::new(
                    model.parameters(),
                    objective.parameter_prefix,
                    job.bucket_elements,
                ))
            })
            .collect();
        Ok(Replica {
            layouts,
            job,
            model,
            trainer,
            plan,
            reader,
            cursor: DataCursor::default(),
            completed_steps: 0,
            batches: Vec::new(),
            graph: None,
            read_ahead: None,
        })
    }

    /// A replica of a graph job: every step trains on `graph`, whose
    /// training nodes are dealt to the virtual ranks (see [`crate::graph`]).
    pub fn with_graph(mut self, graph: &Batch) -> Result<Replica, WorkerError> {
        self.graph = Some(RankedGraph::new(graph, self.job.virtual_ranks)?);
        Ok(self)
    }

    /// The job.
    pub fn job(&self) -> &TrainingJob {
        &self.job
    }

    /// The model.
    pub fn model(&self) -> &dyn Model {
        self.model.as_ref()
    }

    /// The optimizers.
    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    /// Where the data stands: the next step's cursor.
    pub fn cursor(&self) -> DataCursor {
        self.cursor
    }

    /// Steps completed so far.
    pub fn completed_steps(&self) -> u64 {
        self.completed_steps
    }

    /// Whether the job's steps are done.
    pub fn is_finished(&self) -> bool {
        self.completed_steps >= self.job.steps
    }

    /// Number of objectives per step (two for a GAN).
    pub fn objective_count(&self) -> usize {
        self.model.objectives().len()
    }

    /// Objective names, in order (`loss`, or `d_loss` and `g_loss`).
    pub fn objective_names(&self) -> Vec<&'static str> {
        self.model.objectives().iter().map(|o| o.name).collect()
    }

    /// Reads the micro-batches of virtual ranks `ranks` for the next step
    /// and draws their random inputs. Call once per step, before
    /// [`Replica::gradients`].
    pub fn load_micro_batches(&mut self, ranks: Range<usize>) -> Result<(), WorkerError> {
        if let Some(graph) = &self.graph {
            self.batches = ranks.map(|rank| graph.rank_batch(rank).clone()).collect();
            return Ok(());
        }
        let micro_batches = self.step_data(ranks)?;
        let mut batches = Vec::with_capacity(micro_batches.len());
        for (_, data) in micro_batches {
            batches.push(model_batch(
                &self.job.model_kind,
                &self.job.model_config,
                &data,
                self.job.seed,
                self.cursor.epoch,
                &self.job.draws,
            )?);
        }
        self.batches = batches;
        Ok(())
    }

    /// The samples and data of ranks `ranks` at the current cursor: from
    /// the read-ahead thread when it has this very step, otherwise read
    /// here (the first step, after a restore or a change of hosted ranks,
    /// and after a read error, which is then reported from this read), and
    /// the thread restarted from the next step.
    fn step_data(
        &mut self,
        ranks: Range<usize>,
    ) -> Result<Vec<(MicroBatch, datasets::Batch)>, WorkerError> {
        if let Some(read_ahead) = self
            .read_ahead
            .as_mut()
            .filter(|ahead| ahead.ranks == ranks)
            && let Ok(steps) = read_ahead.steps.get_mut()
            && let Some(Ok(step)) = steps.next()
            && step.cursor == self.cursor
        {
            return Ok(step.micro_batches);
        }
        // Stops the thread (after the read it is doing).
        self.read_ahead = None;
        let mut data = Vec::new();
        for micro_batch in self.plan.micro_batches(self.cursor, ranks.clone())? {
            let batch = self.reader.read_samples(&micro_batch.samples)?;
            data.push((micro_batch, batch));
        }
        let left = self.job.steps.saturating_sub(self.completed_steps + 1);
        if left > 0 {
            let steps = StepBatches::new(
                self.plan.clone(),
                self.reader.fork(),
                ranks.clone(),
                self.plan.next(self.cursor),
                left,
            )?;
            // Without a thread, every step is read here.
            self.read_ahead = Prefetch::new(steps, ReadAhead::DEPTH)
                .ok()
                .map(|steps| ReadAhead {
                    ranks,
                    steps: Mutex::new(steps),
                });
        }
        Ok(data)
    }

    /// The bucket layout of objective `objective`'s gradients.
    pub fn gradient_layout(&self, objective: usize) -> Arc<GradientLayout> {
        self.layouts[objective].clone()
    }

    /// Computes objective `objective`'s gradients on every loaded
    /// micro-batch (hosted virtual rank) and hands each bucket to
    /// `emit(bucket, slot, values)` as soon as backward has finished it.
    pub fn stream_gradients(&self, objective: usize, emit: Emit<'_>) -> Result<(), WorkerError> {
        Ok(stream_rank_gradients(
            self.model.as_ref(),
            objective,
            &self.batches,
            &self.layouts[objective],
            emit,
        )?)
    }

    /// The gradient buckets of objective `objective` of every loaded
    /// micro-batch, all at once: `result[bucket][slot]`.
    pub fn gradients(&self, objective: usize) -> Result<Vec<Vec<Vec<f32>>>, WorkerError> {
        Ok(rank_gradient_buckets(
            self.model.as_ref(),
            objective,
            &self.batches,
            &self.layouts[objective],
        )?)
    }

    /// Applies objective `objective`'s update from the all-reduced sums of
    /// every virtual rank's buckets; returns the mean loss over the global
    /// batch.
    pub fn apply(&mut self, objective: usize, summed: &[Vec<f32>]) -> f32 {
        let lr = self
            .job
            .schedule
            .lr(self.job.optimizer.lr(), self.completed_steps);
        self.trainer.set_lr(lr);
        let (gradients, loss) = self.layouts[objective].mean_gradients(
            self.model.parameters(),
            summed,
            self.job.virtual_ranks,
        );
        self.trainer
            .apply(self.model.as_mut(), objective, &gradients);
        loss
    }

    /// Ends the step: the cursor moves on.
    pub fn finish_step(&mut self) {
        self.batches.clear();
        self.cursor = self.plan.next(self.cursor);
        self.completed_steps += 1;
    }

    /// The learning rate of the next step.
    pub fn next_lr(&self) -> f64 {
        self.job
            .schedule
            .lr(self.job.optimizer.lr(), self.completed_steps)
    }

    /// The replica's state as safetensors bytes: parameters under their
    /// `state_dict` names, optimizer state under `optimizer/`, and the data
    /// cursor, step count and model description as metadata. Identical
    /// replicas give identical bytes.
    pub fn checkpoint_bytes(&self) -> Result<Vec<u8>, WorkerError> {
        let tensors =
            checkpoint::checkpoint_tensors(self.model.parameters(), &self.trainer.state_tensors());
        Ok(checkpoint::encode(&tensors, &self.checkpoint_metadata())?)
    }

    fn checkpoint_metadata(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("model".to_string(), self.job.model_kind.clone()),
            ("config".to_string(), self.job.model_config.to_string()),
            ("seed".to_string(), self.job.seed.to_string()),
            (
                "completed_steps".to_string(),
                self.completed_steps.to_string(),
            ),
            ("cursor_epoch".to_string(), self.cursor.epoch.to_string()),
            ("cursor_step".to_string(), self.cursor.step.to_string()),
        ])
    }

    /// Restores parameters, optimizer state and data position from a
    /// checkpoint of this job (from [`Replica::checkpoint_bytes`]). A file
    /// with only parameters (e.g. exported from PyTorch) sets the
    /// parameters and leaves the rest at the start.
    pub fn restore(&mut self, file: &TensorFile, what: &str) -> Result<(), WorkerError> {
        checkpoint::load_parameters(file, what, self.model.parameters_mut())?;
        let optimizer_state = file.optimizer_tensors();
        if !optimizer_state.is_empty() {
            self.trainer
                .load_state_tensors(self.model.as_ref(), &optimizer_state)?;
        }
        let number = |key: &str| -> Result<Option<u64>, WorkerError> {
            match file.metadata.get(key) {
                None => Ok(None),
                Some(text) => text.parse().map(Some).map_err(|_| WorkerError::Job {
                    reason: format!("{what}: metadata `{key}` is not a number: {text:?}"),
                }),
            }
        };
        if let (Some(completed), Some(epoch), Some(step)) = (
            number("completed_steps")?,
            number("cursor_epoch")?,
            number("cursor_step")?,
        ) {
            self.completed_steps = completed;
            self.cursor = DataCursor { epoch, step };
        }
        Ok(())
    }
}

/// Where a step's data wait is recorded by [`objective_compute`].
#[derive(Debug, Default)]
pub struct DataWait(AtomicU64);

impl DataWait {
    /// The time the last load took.
    pub fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// The compute-thread work of objective `objective` of a step: for the
/// first objective, the step's micro-batches of virtual ranks `ranks` are
/// loaded first, in the same hand-off to the thread (so the step waits for
/// its data only as long as it takes to take it), with their time kept in
/// `data_wait`; then the objective's gradients are streamed to `emit`.
pub fn objective_compute(
    objective: usize,
    ranks: Range<usize>,
    data_wait: Arc<DataWait>,
) -> impl for<'a> FnOnce(&mut Replica, Emit<'a>) -> Result<(), WorkerError> + Send + 'static {
    move |replica: &mut Replica, emit: Emit<'_>| {
        if objective == 0 {
            let began = Instant::now();
            replica.load_micro_batches(ranks)?;
            data_wait
                .0
                .store(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        replica.stream_gradients(objective, emit)
    }
}
