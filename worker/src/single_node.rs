//! Single-node mode: a job's workers as tasks of one process, each with its
//! own replica, joined in a ring over loopback QUIC by the same collective
//! code that joins separate machines. What the tests and the demo use, and
//! what proves that the number of workers does not change a single bit.
use std::sync::Arc;
use std::time::{Duration, Instant};

use datasets::Plan;
use datasets::read::Reader;
use ops::checkpoint::TensorFile;
use protocol::transport::{Identity, TransportTuning, bind_endpoint};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::WorkerError;
use crate::collective::{CollectiveConfig, Ring, RingLayout, RingMemberAddress, RingSpec};
use crate::local::StepReport;
use crate::overlap::{ReduceFailure, compute_and_all_reduce, compute_parallelism};
use crate::replica::{DataWait, Replica, TrainingJob, objective_compute};

/// How a single-node run is laid out.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Number of workers (each a task with its own replica).
    pub workers: usize,
    /// Collective settings; `bucket_elements` and `buckets_in_flight` are
    /// taken from the job.
    pub collective: CollectiveConfig,
    /// A checkpoint to start from (parameters, and optimizer state and data
    /// position when it has them).
    pub initial_checkpoint: Option<Arc<TensorFile>>,
}

/// One step as seen by the first worker, with where its time went.
#[derive(Clone, Debug)]
pub struct TimedStep {
    /// The step's losses and learning rate.
    pub report: StepReport,
    /// Time spent reading data and drawing inputs.
    pub data_wait: Duration,
    /// Time spent computing gradients and updates.
    pub compute: Duration,
    /// Time spent waiting for all-reduces once the computation was done:
    /// the communication that overlapping with backward did not hide.
    pub all_reduce: Duration,
    /// Norm of the mean gradient, per objective (the networked worker
    /// fills it in; single-node runs leave it empty).
    pub gradient_norms: Vec<(&'static str, f64)>,
    /// The evaluation scores after this step (`eval_loss`, ...), when the
    /// job's `[evaluation]` was due (the networked worker fills it in).
    pub evaluation: Vec<(String, f64)>,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The final checkpoint (safetensors bytes), identical on every worker.
    pub checkpoint: Vec<u8>,
    /// Its SHA-256, hex.
    pub checkpoint_sha256: String,
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Trains `job` to its last step with `options.workers` workers in this
/// process. `open_data` opens the job's plan and reader (once per worker:
/// each reads only what its virtual ranks need). `on_step` sees every step
/// of the first worker. Fails if any worker fails, or if the replicas end
/// up different (which would be a bug).
pub async fn run_job(
    job: TrainingJob,
    open_data: impl Fn() -> Result<(Plan, Reader), WorkerError>,
    options: RunOptions,
    mut on_step: impl FnMut(&TimedStep),
) -> Result<RunReport, WorkerError> {
    let workers = options.workers;
    if workers == 0 || workers > job.virtual_ranks {
        return Err(WorkerError::Job {
            reason: format!(
                "{workers} workers cannot host {} virtual ranks (each needs at least one)",
                job.virtual_ranks
            ),
        });
    }
    let config = CollectiveConfig {
        bucket_elements: job.bucket_elements,
        buckets_in_flight: job.buckets_in_flight,
        ..options.collective
    };
    let rings = form_rings(job.virtual_ranks, workers, config).await?;
    let (sender, mut receiver) = mpsc::unbounded_channel();
    let mut tasks = Vec::with_capacity(workers);
    for (index, ring) in rings.into_iter().enumerate() {
        let (plan, reader) = open_data()?;
        let mut replica = Replica::new(job.clone(), plan, reader)?;
        if let Some(initial) = &options.initial_checkpoint {
            replica.restore(initial, "the initial checkpoint")?;
        }
        let sender = (index == 0).then(|| sender.clone());
        tasks.push(tokio::spawn(train_replica(replica, ring, sender)));
    }
    drop(sender);
    while let Some(step) = receiver.recv().await {
        on_step(&step);
    }
    let mut checkpoints = Vec::with_capacity(workers);
    for task in tasks {
        let outcome = task.await.map_err(|error| WorkerError::Job {
            reason: format!("a worker task failed: {error}"),
        })?;
        checkpoints.push(outcome?);
    }
    let hashes: Vec<String> = checkpoints.iter().map(|c| sha256_hex(c)).collect();
    if hashes.iter().any(|h| *h != hashes[0]) {
        return Err(WorkerError::Job {
            reason: format!("replicas diverged: checkpoint hashes {hashes:?}"),
        });
    }
    let checkpoint = checkpoints.swap_remove(0);
    Ok(RunReport {
        checkpoint,
        checkpoint_sha256: hashes[0].clone(),
    })
}

/// Rings of `workers` members over loopback QUIC hosting `virtual_ranks`
/// as evenly as possible (a local ring for one worker).
async fn form_rings(
    virtual_ranks: usize,
    workers: usize,
    config: CollectiveConfig,
) -> Result<Vec<Ring>, WorkerError> {
    let layout = RingLayout::even(virtual_ranks, workers);
    if workers == 1 {
        return Ok(vec![Ring::local(layout, config)]);
    }
    let tuning = TransportTuning::default();
    let mut nodes = Vec::with_capacity(workers);
    for _ in 0..workers {
        let identity = Identity::generate()?;
        let endpoint = bind_endpoint("127.0.0.1:0".parse().expect("loopback"), None, &tuning)?;
        nodes.push((endpoint, identity));
    }
    let mut members = Vec::with_capacity(workers);
    for (worker, (endpoint, identity)) in nodes.iter().enumerate() {
        members.push(RingMemberAddress {
            address: endpoint.local_addr().map_err(|source| WorkerError::Io {
                path: "loopback endpoint".into(),
                source,
            })?,
            fingerprint: identity.fingerprint(),
            virtual_rank_count: layout.hosted(worker).len(),
        });
    }
    let mut tasks = Vec::with_capacity(workers);
    for (my_index, (endpoint, identity)) in nodes.into_iter().enumerate() {
        let spec = RingSpec {
            job_id: 0,
            generation: 1,
            members: members.clone(),
            my_index,
        };
        let config = config.clone();
        let tuning = tuning.clone();
        tasks.push(tokio::spawn(async move {
            let ring = Ring::connect(&endpoint, &identity, &spec, config, &tuning).await;
            (ring, endpoint)
        }));
    }
    let mut rings = Vec::with_capacity(workers);
    for task in tasks {
        let (ring, endpoint) = task.await.map_err(|error| WorkerError::Job {
            reason: format!("forming the ring failed: {error}"),
        })?;
        // The ring's connections live on the endpoint's driver: keep it
        // running as long as the process (a run is one process).
        std::mem::forget(endpoint);
        rings.push(ring?);
    }
    Ok(rings)
}

/// Runs `blocking` (CPU-bound work on the replica) off the async threads,
/// its kernels on every thread of rayon's pool.
pub(crate) async fn off_thread<T: Send + 'static>(
    replica: Replica,
    blocking: impl FnOnce(&mut Replica) -> Result<T, WorkerError> + Send + 'static,
) -> Result<(Replica, T), WorkerError> {
    tokio::task::spawn_blocking(move || {
        let mut replica = replica;
        let value = ops::with_parallelism(compute_parallelism(), || blocking(&mut replica))?;
        Ok((replica, value))
    })
    .await
    .map_err(|error| WorkerError::Job {
        reason: format!("a compute task failed: {error}"),
    })?
}

/// One worker's training loop; returns its final checkpoint bytes.
async fn train_replica(
    mut replica: Replica,
    mut ring: Ring,
    steps: Option<mpsc::UnboundedSender<TimedStep>>,
) -> Result<Vec<u8>, WorkerError> {
    let hosted = ring.hosted();
    while !replica.is_finished() {
        let step = replica.completed_steps();
        let lr = replica.next_lr();
        let data_wait = Arc::new(DataWait::default());
        let (mut compute, mut all_reduce) = (Duration::ZERO, Duration::ZERO);
        let mut losses = Vec::new();
        for (objective, name) in replica.objective_names().into_iter().enumerate() {
            let layout = replica.gradient_layout(objective);
            let outcome;
            (replica, outcome) = compute_and_all_reduce(
                replica,
                &mut ring,
                layout,
                objective_compute(objective, hosted.clone(), data_wait.clone()),
                std::future::pending(),
            )
            .await?;
            let reduced = outcome.map_err(|failure| match failure {
                ReduceFailure::Compute(error) => error,
                ReduceFailure::Collective(error) => error.into(),
                ReduceFailure::Cancelled => unreachable!("a single-node run is never cancelled"),
            })?;
            compute += reduced.compute;
            if objective == 0 {
                compute = compute.saturating_sub(data_wait.get());
            }
            all_reduce += reduced.exposed_all_reduce;
            let began = Instant::now();
            let loss;
            (replica, loss) =
                off_thread(replica, move |r| Ok(r.apply(objective, &reduced.summed))).await?;
            compute += began.elapsed();
            losses.push((name, loss));
        }
        replica.finish_step();
        if let Some(steps) = &steps {
            let _ = steps.send(TimedStep {
                report: StepReport { step, lr, losses },
                data_wait: data_wait.get(),
                compute,
                all_reduce,
                gradient_norms: Vec::new(),
                evaluation: Vec::new(),
            });
        }
    }
    let checkpoint = replica.checkpoint_bytes()?;
    ring.shutdown().await;
    Ok(checkpoint)
}
