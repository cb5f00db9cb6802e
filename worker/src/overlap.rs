//! The async side of a data-parallel step: backward runs on a compute
//! thread and hands over each gradient bucket as soon as it is complete;
//! this side all-reduces the buckets over the ring as they come, in
//! layout order, while backward goes on with the earlier layers (as DDP and
//! Horovod overlap communication with computation).
//!
//! Buckets are reduced in the fixed order of the [`GradientLayout`], one
//! collective per bucket, so every worker issues the same collectives in
//! the same order and each value's summation order is the ring's, fixed by
//! the number of virtual ranks alone. Up to the job's
//! `gradient_buckets_in_flight` move at once ([`Ring::all_reduce_buckets`]);
//! a bucket that is ready early waits for the ones before it to start. A
//! small model has a single bucket, so its step costs one all-reduce.
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::WorkerError;
use crate::collective::{AllReduceStats, CollectiveError, Ring};
use crate::step::GradientLayout;

/// The hand-over of one bucket of one hosted rank: `(bucket, slot, values)`.
pub type Emit<'a> = &'a (dyn Fn(usize, usize, Vec<f32>) + Sync);

/// One objective's all-reduced gradients, and where the time went.
#[derive(Debug, Clone)]
pub struct ReducedGradients {
    /// The sum over every virtual rank of the ring, one vector per bucket of
    /// the layout (identical on every worker).
    pub summed: Vec<Vec<f32>>,
    /// Time the compute thread spent (forward and backward of every hosted
    /// rank).
    pub compute: Duration,
    /// Time spent waiting for the all-reduces after the compute had
    /// finished: the communication that the computation did not hide.
    pub exposed_all_reduce: Duration,
    /// One entry per bucket of the layout: its bytes and how long its
    /// collective took.
    pub all_reduce: AllReduceStats,
}

/// Why the reduction of one objective stopped.
#[derive(Debug)]
pub enum ReduceFailure {
    /// The computation failed (bad data, for example).
    Compute(WorkerError),
    /// A collective failed; the ring is unusable.
    Collective(CollectiveError),
    /// `cancelled` completed first.
    Cancelled,
}

/// Runs `compute(&mut state, emit)` on a blocking thread, where `compute`
/// hands every bucket of every hosted rank to `emit` (see
/// [`crate::step::stream_rank_gradients`]), and all-reduces the buckets
/// over `ring` as they come. Always gives `state` back, even when the ring
/// fails or `cancelled` completes first (then only after the computation
/// has finished). The kernels of the compute thread use every thread of
/// rayon's pool.
///
/// # Errors
/// Only when the compute thread panicked (the state is lost with it).
pub async fn compute_and_all_reduce<S: Send + 'static>(
    state: S,
    ring: &mut Ring,
    layout: Arc<GradientLayout>,
    compute: impl FnOnce(&mut S, Emit<'_>) -> Result<(), WorkerError> + Send + 'static,
    cancelled: impl Future<Output = ()>,
) -> Result<(S, Result<ReducedGradients, ReduceFailure>), WorkerError> {
    let hosted = ring.hosted().len();
    let (sender, mut receiver) = mpsc::unbounded_channel::<(usize, usize, Vec<f32>)>();
    let started = Instant::now();
    let task = tokio::task::spawn_blocking(move || {
        let mut state = state;
        let emit = move |bucket: usize, slot: usize, values: Vec<f32>| {
            // The receiver is gone only when the reduction already stopped.
            let _ = sender.send((bucket, slot, values));
        };
        let result = ops::with_parallelism(compute_parallelism(), || compute(&mut state, &emit));
        (state, result, started.elapsed())
    });
    let buckets = layout.bucket_count();
    let (ready_sender, mut ready) = mpsc::unbounded_channel::<Vec<Vec<f32>>>();
    // Hands the buckets over to the ring in layout order, each once every
    // hosted rank's part has come; returns whether all came.
    let assemble = async move {
        let mut pending: Vec<Vec<Option<Vec<f32>>>> = vec![vec![None; hosted]; buckets];
        let mut arrived = vec![0usize; buckets];
        for bucket in 0..buckets {
            while arrived[bucket] < hosted {
                // `None`: the computation ended without this bucket (it
                // failed; its error is what gets reported).
                let Some((ready, slot, values)) = receiver.recv().await else {
                    return false;
                };
                assert!(
                    pending[ready][slot].replace(values).is_none(),
                    "bucket {ready} of slot {slot} handed over twice"
                );
                arrived[ready] += 1;
            }
            let buffers = pending[bucket]
                .iter_mut()
                .map(|values| values.take().expect("every slot arrived"))
                .collect();
            let _ = ready_sender.send(buffers);
        }
        true
    };
    let reduce = async {
        let (all_came, reduced) =
            tokio::join!(assemble, ring.all_reduce_buckets(buckets, &mut ready));
        match reduced {
            Ok(reduced) => {
                let summed = reduced.into_iter().map(|bucket| bucket.sum).collect();
                let stats = ring.last_all_reduce().clone();
                Ok(Some((summed, stats, started.elapsed())))
            }
            Err(CollectiveError::Abandoned { .. }) if !all_came => Ok(None),
            Err(error) => Err(error),
        }
    };
    let reduced = tokio::select! {
        reduced = reduce => Some(reduced),
        () = cancelled => None,
    };
    let (state, computed, compute) = task.await.map_err(|error| WorkerError::Job {
        reason: format!("a compute task failed: {error}"),
    })?;
    let outcome = match (computed, reduced) {
        (Err(error), _) => Err(ReduceFailure::Compute(error)),
        (Ok(()), None) => Err(ReduceFailure::Cancelled),
        (Ok(()), Some(Err(error))) => Err(ReduceFailure::Collective(error)),
        (Ok(()), Some(Ok(None))) => Err(ReduceFailure::Compute(WorkerError::Job {
            reason: "the computation handed over fewer gradient buckets than the layout has"
                .to_string(),
        })),
        (Ok(()), Some(Ok(Some((summed, all_reduce, finished))))) => Ok(ReducedGradients {
            summed,
            compute,
            exposed_all_reduce: finished.saturating_sub(compute),
            all_reduce,
        }),
    };
    Ok((state, outcome))
}

/// The parallelism for the kernels of a compute thread: rayon's pool (the
/// worker's `--threads`). Results do not depend on it.
pub fn compute_parallelism() -> ops::Par {
    match rayon::current_num_threads() {
        0 | 1 => ops::Par::Seq,
        threads => ops::Par::rayon(threads),
    }
}
