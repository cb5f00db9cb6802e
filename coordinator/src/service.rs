//! The coordinator's shared state: the job store, the scheduler and the
//! Prometheus metrics behind one lock, with the clock read here (and only
//! here) to feed the pure scheduler.
//!
//! The HTTP API calls the job methods; the QUIC side ([`crate::quic`])
//! calls the worker methods (`register_worker`, `heartbeat`, `report_*`)
//! and sends the [`Action`]s it receives from the channel returned by
//! [`Coordinator::open`] to the workers.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::error::{CoordinatorError, Result};
use crate::job::{JobId, JobState, WorkerId};
use crate::scheduler::{
    Action, Demand, Outcome, Ring, RingChange, Scheduler, SchedulerConfig, WorkerInfo, WorkerStatus,
};
use crate::spec::JobSpec;
use crate::store::{CheckpointRecord, JobRecord, JobStore, StepMetrics, Transition};
use crate::tokens::ApiToken;
use protocol::message::RingMembership;

/// How to open a coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Where the job store and checkpoints live.
    pub data_dir: PathBuf,
    /// The bearer token the HTTP API requires.
    pub api_token: String,
    /// Heartbeat timeout and the like.
    pub scheduler: SchedulerConfig,
}

/// The Prometheus metrics of the coordinator (every one is listed in
/// `docs/metrics.md`). Per-job series carry a `job_id` label (not `job`,
/// which Prometheus gives every scraped series itself).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// `shoal_jobs{state}`: jobs in each state.
    pub jobs: IntGaugeVec,
    /// `shoal_jobs_submitted_total`: jobs accepted by the API.
    pub jobs_submitted: IntCounter,
    /// `shoal_job_transitions_total{from,to}`: job state changes (every
    /// allowed pair starts at zero).
    pub job_transitions: IntCounterVec,
    /// `shoal_job_step{job_id}`: the last step the job's workers reported.
    pub job_step: IntGaugeVec,
    /// `shoal_workers_alive`: registered, live workers.
    pub workers_alive: IntGauge,
    /// `shoal_workers_registered_total`: worker registrations.
    pub workers_registered: IntCounter,
    /// `shoal_workers_lost_total`: workers declared dead (heartbeats stopped).
    pub workers_lost: IntCounter,
    /// `shoal_ring_formations_total{job_id,reason}`: rings formed, by why
    /// (`start`, `worker_lost`: a recovery, `worker_joined`).
    pub ring_formations: IntCounterVec,
    /// `shoal_ring_generation{job_id}`: the generation of the job's last ring.
    pub ring_generation: IntGaugeVec,
    /// `shoal_ring_members{job_id}`: workers in the job's ring (0 while it
    /// holds or after it ended).
    pub ring_members: IntGaugeVec,
    /// `shoal_checkpoints_written_total{job_id}`: checkpoints recorded.
    pub checkpoints_written: IntCounterVec,
    /// `shoal_checkpoint_write_seconds{job_id}`: time to write an uploaded
    /// checkpoint (temporary file, sync, rename, record, prune).
    pub checkpoint_write_seconds: HistogramVec,
    /// `shoal_checkpoint_bytes{job_id}`: size of the newest checkpoint.
    pub checkpoint_bytes: IntGaugeVec,
    /// `shoal_checkpoint_step{job_id}`: step of the newest checkpoint.
    pub checkpoint_step: IntGaugeVec,
    /// `shoal_api_requests_total{route,status}`: HTTP requests served.
    pub api_requests: IntCounterVec,
    /// `shoal_api_request_duration_seconds{route}`: time to answer them.
    pub api_request_seconds: HistogramVec,
}

/// The reasons of `shoal_ring_formations_total`.
const RING_REASONS: [&str; 3] = ["start", "worker_lost", "worker_joined"];

fn ring_reason(change: &RingChange) -> &'static str {
    match change {
        RingChange::Start => RING_REASONS[0],
        RingChange::WorkerLost(_) => RING_REASONS[1],
        RingChange::WorkerJoined(_) => RING_REASONS[2],
    }
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        fn register<M: prometheus::core::Collector + Clone + 'static>(
            registry: &Registry,
            metric: M,
        ) -> M {
            registry
                .register(Box::new(metric.clone()))
                .expect("registered once");
            metric
        }
        let counter = |name: &str, help: &str| {
            register(
                &registry,
                IntCounter::new(name, help).expect("valid metric"),
            )
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let histogram_vec = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            register(
                &registry,
                HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                    .expect("valid metric"),
            )
        };
        let metrics = Metrics {
            jobs: gauge_vec("shoal_jobs", "Jobs in each state", &["state"]),
            jobs_submitted: counter("shoal_jobs_submitted_total", "Jobs accepted by the API"),
            job_transitions: counter_vec(
                "shoal_job_transitions_total",
                "Job state changes, by from and to state",
                &["from", "to"],
            ),
            job_step: gauge_vec(
                "shoal_job_step",
                "The last step the job's workers reported",
                &["job_id"],
            ),
            workers_alive: register(
                &registry,
                IntGauge::new("shoal_workers_alive", "Registered, live workers")
                    .expect("valid metric"),
            ),
            workers_registered: counter(
                "shoal_workers_registered_total",
                "Worker registrations (a worker that reconnects registers again)",
            ),
            workers_lost: counter(
                "shoal_workers_lost_total",
                "Workers declared dead because their heartbeats stopped",
            ),
            ring_formations: counter_vec(
                "shoal_ring_formations_total",
                "Rings formed for a job, by reason: start, worker_lost (the survivors carry on), worker_joined",
                &["job_id", "reason"],
            ),
            ring_generation: gauge_vec(
                "shoal_ring_generation",
                "Generation of the job's last ring",
                &["job_id"],
            ),
            ring_members: gauge_vec(
                "shoal_ring_members",
                "Workers in the job's ring (0 while it holds or after it ended)",
                &["job_id"],
            ),
            checkpoints_written: counter_vec(
                "shoal_checkpoints_written_total",
                "Checkpoints recorded (written from an upload, or written by a worker and reported)",
                &["job_id"],
            ),
            checkpoint_write_seconds: histogram_vec(
                "shoal_checkpoint_write_seconds",
                "Time to write an uploaded checkpoint: temporary file, sync, rename, record",
                &["job_id"],
                prometheus::exponential_buckets(0.001, 2.0, 16).expect("valid buckets"),
            ),
            checkpoint_bytes: gauge_vec(
                "shoal_checkpoint_bytes",
                "Size of the job's newest checkpoint",
                &["job_id"],
            ),
            checkpoint_step: gauge_vec(
                "shoal_checkpoint_step",
                "Step of the job's newest checkpoint",
                &["job_id"],
            ),
            api_requests: counter_vec(
                "shoal_api_requests_total",
                "HTTP API requests by route and status",
                &["route", "status"],
            ),
            api_request_seconds: histogram_vec(
                "shoal_api_request_duration_seconds",
                "Time to answer an HTTP API request, by route",
                &["route"],
                prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets"),
            ),
            registry,
        };
        for from in JobState::ALL {
            for to in JobState::ALL {
                if from.can_become(to) {
                    metrics
                        .job_transitions
                        .with_label_values(&[from.as_str(), to.as_str()]);
                }
            }
        }
        metrics
    }

    /// A ring was formed for a job.
    fn ring_formed(&self, ring: &Ring, change: &RingChange) {
        let job = ring.job.0.to_string();
        // Every reason of the job's rings exists from the first, at zero
        // until it happens (creating a series that exists changes nothing).
        for reason in RING_REASONS {
            self.ring_formations
                .with_label_values(&[job.as_str(), reason]);
        }
        self.ring_formations
            .with_label_values(&[job.as_str(), ring_reason(change)])
            .inc();
        self.ring_generation
            .with_label_values(&[job.as_str()])
            .set(i64::try_from(ring.generation).unwrap_or(i64::MAX));
        self.ring_members
            .with_label_values(&[job.as_str()])
            .set(ring.members.len() as i64);
    }

    /// A checkpoint of job `job` was recorded.
    fn checkpoint_recorded(&self, job: JobId, record: &CheckpointRecord) {
        let job = job.0.to_string();
        self.checkpoints_written.with_label_values(&[&job]).inc();
        self.checkpoint_bytes
            .with_label_values(&[&job])
            .set(i64::try_from(record.bytes).unwrap_or(i64::MAX));
        self.checkpoint_step
            .with_label_values(&[&job])
            .set(i64::try_from(record.step).unwrap_or(i64::MAX));
    }
}

/// Moves job `id` to `to` in the store and counts the transition (staying
/// in the same state is none).
fn set_state(
    store: &mut JobStore,
    metrics: &Metrics,
    id: JobId,
    to: JobState,
    reason: &str,
    error: Option<&str>,
    now_ms: i64,
) -> Result<()> {
    let from = store.job(id)?.state;
    store.set_state(id, to, reason, error, now_ms)?;
    if from != to {
        metrics
            .job_transitions
            .with_label_values(&[from.as_str(), to.as_str()])
            .inc();
    }
    Ok(())
}

struct Inner {
    store: JobStore,
    scheduler: Scheduler,
}

/// The coordinator's state, shared by the HTTP handlers and the worker
/// connections.
pub struct Coordinator {
    inner: Mutex<Inner>,
    metrics: Metrics,
    api_token: ApiToken,
    data_dir: PathBuf,
    started: Instant,
    outbox: mpsc::UnboundedSender<Action>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// Unix time in milliseconds.
pub(crate) fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

impl Coordinator {
    /// Opens the store under `config.data_dir` (creating the directory),
    /// puts every unfinished job back in the queue, and returns the
    /// coordinator with the receiving end of the actions meant for
    /// workers ([`Action::FormRing`], [`Action::Hold`], [`Action::Release`],
    /// [`Action::WorkerDead`]).
    pub fn open(
        config: CoordinatorConfig,
    ) -> Result<(Arc<Coordinator>, mpsc::UnboundedReceiver<Action>)> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| CoordinatorError::Io {
            path: config.data_dir.clone(),
            source,
        })?;
        let store = JobStore::open(&config.data_dir.join("jobs.sqlite"))?;
        Coordinator::with_store(store, config)
    }

    /// Like [`open`](Self::open) with a given store (in memory for tests).
    pub fn with_store(
        mut store: JobStore,
        config: CoordinatorConfig,
    ) -> Result<(Arc<Coordinator>, mpsc::UnboundedReceiver<Action>)> {
        let mut scheduler = Scheduler::new(config.scheduler);
        let metrics = Metrics::new();
        let now_ms = unix_ms();
        for job in store.unfinished_jobs()? {
            if job.state != JobState::Queued {
                set_state(
                    &mut store,
                    &metrics,
                    job.id,
                    JobState::Queued,
                    "coordinator restarted: waiting for workers",
                    None,
                    now_ms,
                )?;
            }
            scheduler.submit(job.id, demand(&job.spec));
        }
        let (outbox, receiver) = mpsc::unbounded_channel();
        let coordinator = Arc::new(Coordinator {
            inner: Mutex::new(Inner { store, scheduler }),
            metrics,
            api_token: ApiToken::new(&config.api_token),
            data_dir: config.data_dir,
            started: Instant::now(),
            outbox,
        });
        {
            let mut inner = coordinator.lock();
            coordinator.apply(&mut inner)?;
        }
        Ok((coordinator, receiver))
    }

    // ---- getters ----

    /// The metrics (for `/metrics` and the HTTP layer's counters).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The API token.
    pub fn api_token(&self) -> &ApiToken {
        &self.api_token
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where job `job`'s checkpoints are written.
    pub fn checkpoint_dir(&self, job: JobId) -> PathBuf {
        self.data_dir
            .join("checkpoints")
            .join(format!("job-{}", job.0))
    }

    /// Time since this coordinator started: the scheduler's clock.
    pub fn uptime(&self) -> Duration {
        self.now()
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the store consistent (each
        // write is a transaction): keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    // ---- jobs (HTTP API) ----

    /// Stores a validated job and queues it.
    pub fn submit(&self, spec: &JobSpec) -> Result<JobId> {
        spec.validate()?;
        check_dataset_columns(spec)?;
        let mut inner = self.lock();
        let id = inner.store.insert_job(spec, unix_ms())?;
        self.metrics.jobs_submitted.inc();
        inner.scheduler.submit(id, demand(spec));
        self.apply(&mut inner)?;
        Ok(id)
    }

    /// The job `id`.
    pub fn job(&self, id: JobId) -> Result<JobRecord> {
        self.lock().store.job(id)
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Result<Vec<JobRecord>> {
        self.lock().store.jobs()
    }

    /// The state changes of job `id`.
    pub fn transitions(&self, id: JobId) -> Result<Vec<Transition>> {
        self.lock().store.transitions(id)
    }

    /// The per-step metrics of job `id`.
    pub fn job_metrics(&self, id: JobId) -> Result<Vec<StepMetrics>> {
        self.lock().store.metrics(id)
    }

    /// The last step job `id` reported.
    pub fn last_step(&self, id: JobId) -> Result<Option<u64>> {
        self.lock().store.last_step(id)
    }

    /// The newest checkpoint of job `id`.
    pub fn latest_checkpoint(&self, id: JobId) -> Result<Option<CheckpointRecord>> {
        self.lock().store.latest_checkpoint(id)
    }

    /// Job `id`'s current ring, while it is unfinished.
    pub fn ring(&self, id: JobId) -> Option<Ring> {
        self.lock().scheduler.ring(id)
    }

    /// Cancels job `id`: its workers are released. A job that is over
    /// gives [`CoordinatorError::InvalidTransition`].
    pub fn cancel(&self, id: JobId) -> Result<JobRecord> {
        let mut inner = self.lock();
        let job = inner.store.job(id)?;
        if job.state.is_terminal() {
            return Err(CoordinatorError::InvalidTransition {
                id,
                from: job.state,
                to: JobState::Cancelled,
            });
        }
        if !inner.scheduler.finish(id, Outcome::Cancelled) {
            set_state(
                &mut inner.store,
                &self.metrics,
                id,
                JobState::Cancelled,
                "cancelled",
                None,
                unix_ms(),
            )?;
        }
        self.apply(&mut inner)?;
        inner.store.job(id)
    }

    // ---- workers (QUIC side) ----

    /// Live workers.
    pub fn workers(&self) -> Vec<WorkerStatus> {
        self.lock().scheduler.workers().cloned().collect()
    }

    /// A worker registers; returns its id.
    pub fn register_worker(&self, info: WorkerInfo) -> Result<WorkerId> {
        let mut inner = self.lock();
        let now = self.now();
        let id = inner.scheduler.handle_register(info, now);
        self.metrics.workers_registered.inc();
        self.apply(&mut inner)?;
        Ok(id)
    }

    /// Takes a worker id for a worker whose registration is under way
    /// (`protocol::transport::accept_registration` names the worker before
    /// it answers); then [`register_reserved_worker`](Self::register_reserved_worker).
    pub fn reserve_worker_id(&self) -> WorkerId {
        self.lock().scheduler.reserve_worker_id()
    }

    /// A worker registers under a reserved id.
    pub fn register_reserved_worker(&self, id: WorkerId, info: WorkerInfo) -> Result<()> {
        let mut inner = self.lock();
        let now = self.now();
        inner.scheduler.handle_register_reserved(id, info, now);
        self.metrics.workers_registered.inc();
        self.apply(&mut inner)
    }

    /// The protocol message announcing `ring` to its members, starting at
    /// `start_step` (members' addresses and fingerprints from their
    /// registration). `None` if a member is no longer registered (the ring
    /// is stale: a newer one follows).
    pub fn ring_membership(&self, ring: &Ring, start_step: u64) -> Option<RingMembership> {
        let inner = self.lock();
        crate::messages::ring_membership(ring, start_step, |worker| {
            inner
                .scheduler
                .worker(worker)
                .map(|status| status.info.clone())
        })
    }

    /// Records a checkpoint a worker wrote itself (reported by location,
    /// `protocol::message::CheckpointReport`), and returns the checkpoints
    /// now past the job's retention count, whose files the caller deletes.
    pub fn record_checkpoint(
        &self,
        job: JobId,
        checkpoint: &CheckpointRecord,
    ) -> Result<Vec<CheckpointRecord>> {
        let mut inner = self.lock();
        let keep = inner.store.job(job)?.spec.checkpoint.keep as usize;
        inner.store.record_checkpoint(job, checkpoint)?;
        self.metrics.checkpoint_recorded(job, checkpoint);
        inner.store.prune_checkpoints(job, keep)
    }

    /// A worker's heartbeat; `false` if it must register again.
    pub fn heartbeat(&self, worker: WorkerId) -> bool {
        let now = self.now();
        self.lock().scheduler.handle_heartbeat(worker, now)
    }

    /// A worker leaves cleanly.
    pub fn worker_left(&self, worker: WorkerId) -> Result<()> {
        let mut inner = self.lock();
        inner.scheduler.handle_leave(worker);
        self.apply(&mut inner)
    }

    /// Declares dead the workers whose heartbeats stopped; returns when to
    /// call again. The driver calls it on a timer.
    pub fn tick(&self) -> Result<Duration> {
        let mut inner = self.lock();
        let now = self.now();
        inner.scheduler.handle_timeout(now);
        self.apply(&mut inner)?;
        let timeout = inner.scheduler.config().heartbeat_timeout;
        Ok(inner
            .scheduler
            .poll_timeout()
            .map_or(timeout, |deadline| deadline.saturating_sub(now))
            .max(Duration::from_millis(10)))
    }

    /// A job's workers completed step `step` with these metrics.
    pub fn report_step(&self, job: JobId, step: u64, values: &BTreeMap<String, f64>) -> Result<()> {
        self.lock()
            .store
            .record_metrics(job, step, values, unix_ms())?;
        self.metrics
            .job_step
            .with_label_values(&[job.0.to_string()])
            .set(i64::try_from(step).unwrap_or(i64::MAX));
        Ok(())
    }

    /// Writes a checkpoint of job `job` after `step` (to a temporary file,
    /// synced, then renamed), records it, and deletes the checkpoints past
    /// the job's retention count.
    pub fn store_checkpoint(
        &self,
        job: JobId,
        step: u64,
        bytes: &[u8],
    ) -> Result<CheckpointRecord> {
        let started = Instant::now();
        let keep = self.lock().store.job(job)?.spec.checkpoint.keep as usize;
        let directory = self.checkpoint_dir(job);
        let path = directory.join(format!("step-{step:09}.safetensors"));
        write_atomically(&directory, &path, bytes)?;
        let record = CheckpointRecord {
            step,
            path: path.display().to_string(),
            sha256: hex::encode(Sha256::digest(bytes)),
            bytes: bytes.len() as u64,
            at_ms: unix_ms(),
        };
        let removed = {
            let mut inner = self.lock();
            inner.store.record_checkpoint(job, &record)?;
            inner.store.prune_checkpoints(job, keep)?
        };
        self.metrics
            .checkpoint_write_seconds
            .with_label_values(&[job.0.to_string()])
            .observe(started.elapsed().as_secs_f64());
        self.metrics.checkpoint_recorded(job, &record);
        for old in removed {
            if let Err(error) = std::fs::remove_file(&old.path) {
                tracing::warn!(path = %old.path, %error, "could not delete an old checkpoint");
            }
        }
        Ok(record)
    }

    /// Job `job` ended (its workers report completion, or a failure such as
    /// an unreadable dataset).
    pub fn report_finished(&self, job: JobId, outcome: Outcome) -> Result<()> {
        let mut inner = self.lock();
        if !inner.scheduler.finish(job, outcome.clone()) {
            let (state, error) = match &outcome {
                Outcome::Completed => (JobState::Completed, None),
                Outcome::Failed(error) => (JobState::Failed, Some(error.as_str())),
                Outcome::Cancelled => (JobState::Cancelled, None),
            };
            set_state(
                &mut inner.store,
                &self.metrics,
                job,
                state,
                "reported finished",
                error,
                unix_ms(),
            )?;
        }
        self.apply(&mut inner)
    }

    // ---- internals ----

    /// Persists the scheduler's state changes, forwards what workers must
    /// hear, and refreshes the gauges.
    /// Every action is applied even if persisting one fails (the first
    /// failure is returned after the rest went through).
    fn apply(&self, inner: &mut Inner) -> Result<()> {
        let now_ms = unix_ms();
        let mut first_error = None;
        // Actions go to the workers through the outbox; without a receiver
        // (no QUIC side yet, or shutting down) an action is dropped and the
        // scheduler's state stays right.
        while let Some(action) = inner.scheduler.poll_action() {
            match &action {
                Action::SetJobState { job, state, reason } => {
                    let error = (*state == JobState::Failed).then_some(reason.as_str());
                    match set_state(
                        &mut inner.store,
                        &self.metrics,
                        *job,
                        *state,
                        reason,
                        error,
                        now_ms,
                    ) {
                        Ok(()) => tracing::info!(job = job.0, state = %state, reason, "job state"),
                        Err(error) => {
                            tracing::error!(job = job.0, state = %state, %error, "could not persist a job state");
                            first_error.get_or_insert(error);
                        }
                    }
                }
                Action::WorkerDead { worker } => {
                    tracing::warn!(%worker, "worker missed its heartbeats: declared dead");
                    self.metrics.workers_lost.inc();
                    let _ = self.outbox.send(action);
                }
                Action::FormRing { ring, change } => {
                    self.metrics.ring_formed(ring, change);
                    let _ = self.outbox.send(action);
                }
                Action::Hold { job, .. } | Action::Release { job, .. } => {
                    self.metrics
                        .ring_members
                        .with_label_values(&[job.0.to_string()])
                        .set(0);
                    let _ = self.outbox.send(action);
                }
            }
        }
        for (state, count) in inner.store.count_by_state()? {
            self.metrics
                .jobs
                .with_label_values(&[state.as_str()])
                .set(count as i64);
        }
        self.metrics
            .workers_alive
            .set(inner.scheduler.workers().count() as i64);
        first_error.map_or(Ok(()), Err)
    }
}

/// When the coordinator can read the dataset's footers itself (the same
/// paths as the workers: a shared volume, or the single-node mode), every
/// mapped column must be in it; otherwise the workers check, and a job
/// whose data they cannot read fails with the dataset's error. The same
/// holds for the `[evaluation]` data and its mapping.
pub fn check_dataset_columns(spec: &JobSpec) -> Result<()> {
    let graph = spec.model.kind == "gcn";
    check_table_columns(&spec.data.paths, &spec.data.columns, "data.columns", graph)?;
    if let Some(evaluation) = &spec.evaluation {
        let columns = evaluation.columns.as_ref().unwrap_or(&spec.data.columns);
        check_table_columns(&evaluation.paths, columns, "evaluation.columns", graph)?;
    }
    Ok(())
}

/// A graph's edge columns (`src`, `dst`) are in its edge table
/// `STEM.edges.parquet`, beside the node table; the rest in the nodes.
fn check_table_columns(
    paths: &[String],
    mapping: &std::collections::BTreeMap<String, String>,
    field: &str,
    graph: bool,
) -> Result<()> {
    if !graph {
        return check_columns(paths, mapping, field);
    }
    let (edges, nodes): (std::collections::BTreeMap<_, _>, _) = mapping
        .clone()
        .into_iter()
        .partition(|(input, _)| input == "src" || input == "dst");
    check_columns(paths, &nodes, field)?;
    let edge_paths: Vec<String> = paths
        .iter()
        .map(|path| {
            datasets::generate::sibling_path(Path::new(path), "edges")
                .display()
                .to_string()
        })
        .collect();
    check_columns(&edge_paths, &edges, field)
}

fn check_columns(
    paths: &[String],
    mapping: &std::collections::BTreeMap<String, String>,
    field: &str,
) -> Result<()> {
    let dataset = match datasets::Dataset::open(paths) {
        Ok(dataset) => dataset,
        Err(error) => {
            tracing::debug!(%error, "the coordinator cannot read the dataset: the workers will check it");
            return Ok(());
        }
    };
    let columns: Vec<&str> = dataset
        .fingerprint()
        .schema
        .iter()
        .map(|field| field.split(':').next().unwrap_or(field).trim())
        .collect();
    for (input, column) in mapping {
        if !columns.contains(&column.as_str()) {
            return Err(CoordinatorError::InvalidSpec {
                field: format!("{field}.{input}"),
                problem: format!(
                    "the dataset has no column `{column}` (its columns: {})",
                    columns.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// What a job's spec asks of the scheduler.
pub fn demand(spec: &JobSpec) -> Demand {
    Demand {
        min_workers: spec.min_workers(),
        max_workers: spec.max_workers(),
        virtual_ranks: spec.virtual_ranks,
    }
}

/// Writes `bytes` to `path` through a temporary file in `directory`,
/// synced before the rename, so a reader sees the whole file or none.
pub fn write_atomically(directory: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CoordinatorError::Io { path, source }
    };
    std::fs::create_dir_all(directory).map_err(io_error(directory))?;
    let temporary = path.with_extension("safetensors.partial");
    let mut file = std::fs::File::create(&temporary).map_err(io_error(&temporary))?;
    file.write_all(bytes).map_err(io_error(&temporary))?;
    file.sync_all().map_err(io_error(&temporary))?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(io_error(path))?;
    // Make the rename itself durable.
    if let Ok(directory) = std::fs::File::open(directory) {
        let _ = directory.sync_all();
    }
    Ok(())
}
