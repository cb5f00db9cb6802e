//! A worker's Prometheus metrics, recorded by the agent's step loop
//! ([`crate::agent`]) and served at `/metrics` by [`serve`]
//! (`shoal worker --metrics-addr`, `shoal run --metrics-addr`).
//!
//! Every series is labelled by `job_id` and `worker` (the worker's name);
//! per-rank series add `rank` (the worker's index in the current ring),
//! per-bucket series `bucket` (the all-reduce bucket's index in the gradient
//! buffer). One [`WorkerMetrics`] may be shared by the workers of one
//! process (`shoal run`): their `worker` labels tell them apart. The label
//! is `job_id`, not `job`, because Prometheus gives every scraped series a
//! `job` label of its own (the scrape job). The metric names and meanings
//! are listed in `docs/metrics.md`.
use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::collective::AllReduceStats;
use crate::single_node::TimedStep;

/// Buckets of the time histograms, in seconds: 1 ms to about 65 s, doubling.
fn time_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 2.0, 17).expect("valid buckets")
}

/// The metrics of the workers of one process.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    registry: Registry,
    step_seconds: HistogramVec,
    step_phase_seconds: HistogramVec,
    samples: IntCounterVec,
    samples_per_second: GaugeVec,
    step: IntGaugeVec,
    loss: GaugeVec,
    gradient_norm: GaugeVec,
    learning_rate: GaugeVec,
    allreduce_bytes: IntCounterVec,
    allreduce_bucket_seconds: HistogramVec,
    allreduce_busbw: GaugeVec,
    collective_wait_seconds: HistogramVec,
    ring_formations: IntCounterVec,
    ring_generation: IntGaugeVec,
    collective_failures: IntCounterVec,
    checkpoint_uploads: IntCounterVec,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let metric = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(time_buckets()),
        labels,
    )
    .expect("a valid histogram");
    registry
        .register(Box::new(metric.clone()))
        .expect("registered once");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let metric = GaugeVec::new(Opts::new(name, help), labels).expect("a valid gauge");
    registry
        .register(Box::new(metric.clone()))
        .expect("registered once");
    metric
}

fn int_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid gauge");
    registry
        .register(Box::new(metric.clone()))
        .expect("registered once");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter");
    registry
        .register(Box::new(metric.clone()))
        .expect("registered once");
    metric
}

const JOB: &[&str] = &["job_id", "worker"];
const RANK: &[&str] = &["job_id", "worker", "rank"];
const PHASE: &[&str] = &["job_id", "worker", "rank", "phase"];
const OBJECTIVE: &[&str] = &["job_id", "worker", "objective"];
const BUCKET: &[&str] = &["job_id", "worker", "bucket"];

impl WorkerMetrics {
    /// A fresh registry with every worker metric registered.
    pub fn new() -> WorkerMetrics {
        let registry = Registry::new();
        let r = &registry;
        WorkerMetrics {
            step_seconds: histogram(
                r,
                "shoal_worker_step_seconds",
                "Wall time of a training step on this worker (data wait, compute and all-reduce)",
                RANK,
            ),
            step_phase_seconds: histogram(
                r,
                "shoal_worker_step_phase_seconds",
                "Time of a step spent in each phase: data_wait (reading micro-batches), compute (gradients and updates), all_reduce",
                PHASE,
            ),
            samples: counter(
                r,
                "shoal_worker_samples_total",
                "Samples trained on by the virtual ranks this worker hosts",
                RANK,
            ),
            samples_per_second: gauge(
                r,
                "shoal_worker_samples_per_second",
                "The job's global batch over the wall time of the last step",
                JOB,
            ),
            step: int_gauge(
                r,
                "shoal_worker_step",
                "Steps of the job completed on this worker",
                JOB,
            ),
            loss: gauge(
                r,
                "shoal_worker_loss",
                "Loss of each objective at the last step, averaged over the virtual ranks",
                OBJECTIVE,
            ),
            gradient_norm: gauge(
                r,
                "shoal_worker_gradient_norm",
                "Global L2 norm of each objective's averaged gradient at the last step, before clipping",
                OBJECTIVE,
            ),
            learning_rate: gauge(
                r,
                "shoal_worker_learning_rate",
                "Learning rate of the last step",
                JOB,
            ),
            allreduce_bytes: counter(
                r,
                "shoal_worker_allreduce_bytes_total",
                "Bytes of gradient buffer all-reduced, by bucket",
                BUCKET,
            ),
            allreduce_bucket_seconds: histogram(
                r,
                "shoal_worker_allreduce_bucket_seconds",
                "Time from the start of an all-reduce until the bucket's sum is complete on this worker",
                BUCKET,
            ),
            allreduce_busbw: gauge(
                r,
                "shoal_worker_allreduce_busbw_bytes_per_second",
                "Bus bandwidth of the bucket in the last all-reduce: bytes x 2(n-1)/n over its time, n workers in the ring",
                BUCKET,
            ),
            collective_wait_seconds: histogram(
                r,
                "shoal_worker_collective_wait_seconds",
                "Time from this rank's arrival at an all-reduce until it completes: early ranks wait for late ones, the straggler waits least",
                RANK,
            ),
            ring_formations: counter(
                r,
                "shoal_worker_ring_formations_total",
                "Rings this worker formed for the job (the first one and every re-formation)",
                JOB,
            ),
            ring_generation: int_gauge(
                r,
                "shoal_worker_ring_generation",
                "Generation of the ring this worker last formed for the job",
                JOB,
            ),
            collective_failures: counter(
                r,
                "shoal_worker_collective_failures_total",
                "Training attempts ended by a failed collective (a peer died, stalled or closed the ring)",
                JOB,
            ),
            checkpoint_uploads: counter(
                r,
                "shoal_worker_checkpoint_uploads_total",
                "Checkpoints this worker uploaded to the coordinator",
                JOB,
            ),
            registry,
        }
    }

    /// The registry to serve (or to merge with others).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The metrics of job `job_id` on the worker named `worker`.
    pub fn job(&self, job_id: u64, worker: &str) -> JobMetrics {
        JobMetrics {
            metrics: self.clone(),
            job_id: job_id.to_string(),
            worker: worker.to_string(),
        }
    }
}

/// A worker's metrics for one job: records into [`WorkerMetrics`] with the
/// job's and the worker's labels.
#[derive(Debug, Clone)]
pub struct JobMetrics {
    metrics: WorkerMetrics,
    job_id: String,
    worker: String,
}

impl JobMetrics {
    fn labels(&self) -> [&str; 2] {
        [&self.job_id, &self.worker]
    }

    fn with<'a>(&'a self, more: &[&'a str]) -> Vec<&'a str> {
        let mut labels: Vec<&str> = vec![&self.job_id, &self.worker];
        labels.extend_from_slice(more);
        labels
    }

    /// The job was assigned: its counters start at zero, so that a
    /// dashboard sees "no failure" rather than no data.
    pub fn assigned(&self) {
        let labels = self.labels();
        self.metrics.collective_failures.with_label_values(&labels);
        self.metrics.ring_formations.with_label_values(&labels);
        self.metrics.checkpoint_uploads.with_label_values(&labels);
    }

    /// A ring of generation `generation` was formed.
    pub fn ring_formed(&self, generation: u64) {
        let labels = self.labels();
        self.metrics
            .ring_formations
            .with_label_values(&labels)
            .inc();
        self.metrics
            .ring_generation
            .with_label_values(&labels)
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// A collective failed and ended the attempt.
    pub fn collective_failed(&self) {
        self.metrics
            .collective_failures
            .with_label_values(&self.labels())
            .inc();
    }

    /// A checkpoint was uploaded.
    pub fn checkpoint_uploaded(&self) {
        self.metrics
            .checkpoint_uploads
            .with_label_values(&self.labels())
            .inc();
    }

    /// One all-reduce completed on ring member `rank`, `waited` after the
    /// rank arrived at it; `stats` is what the ring measured per bucket.
    pub fn record_all_reduce(&self, rank: usize, waited: Duration, stats: &AllReduceStats) {
        let rank = rank.to_string();
        self.metrics
            .collective_wait_seconds
            .with_label_values(&self.with(&[&rank]))
            .observe(waited.as_secs_f64());
        for (index, bucket) in stats.buckets.iter().enumerate() {
            let index = index.to_string();
            let labels = self.with(&[&index]);
            self.metrics
                .allreduce_bytes
                .with_label_values(&labels)
                .inc_by(bucket.bytes);
            self.metrics
                .allreduce_bucket_seconds
                .with_label_values(&labels)
                .observe(bucket.elapsed.as_secs_f64());
            self.metrics
                .allreduce_busbw
                .with_label_values(&labels)
                .set(bucket.bus_bandwidth(stats.workers));
        }
    }

    /// Ring member `rank` completed `step` (its `completed_steps`-th step),
    /// training `hosted_samples` samples of a `global_batch`.
    pub fn record_step(
        &self,
        rank: usize,
        step: &TimedStep,
        completed_steps: u64,
        hosted_samples: u64,
        global_batch: usize,
    ) {
        let rank = rank.to_string();
        let rank_labels = self.with(&[&rank]);
        let labels = self.labels();
        let total = step.data_wait + step.compute + step.all_reduce;
        self.metrics
            .step_seconds
            .with_label_values(&rank_labels)
            .observe(total.as_secs_f64());
        for (phase, time) in [
            ("data_wait", step.data_wait),
            ("compute", step.compute),
            ("all_reduce", step.all_reduce),
        ] {
            self.metrics
                .step_phase_seconds
                .with_label_values(&self.with(&[&rank, phase]))
                .observe(time.as_secs_f64());
        }
        self.metrics
            .samples
            .with_label_values(&rank_labels)
            .inc_by(hosted_samples);
        self.metrics
            .samples_per_second
            .with_label_values(&labels)
            .set(global_batch as f64 / total.as_secs_f64().max(1e-9));
        self.metrics
            .step
            .with_label_values(&labels)
            .set(i64::try_from(completed_steps).unwrap_or(i64::MAX));
        self.metrics
            .learning_rate
            .with_label_values(&labels)
            .set(step.report.lr);
        for (objective, loss) in &step.report.losses {
            self.metrics
                .loss
                .with_label_values(&self.with(&[objective]))
                .set(f64::from(*loss));
        }
        for (objective, norm) in &step.gradient_norms {
            self.metrics
                .gradient_norm
                .with_label_values(&self.with(&[objective]))
                .set(*norm);
        }
    }
}

/// The metrics of `registries` in Prometheus's text exposition format.
pub fn encode(registries: &[Registry]) -> Result<Vec<u8>, prometheus::Error> {
    let families: Vec<_> = registries.iter().flat_map(Registry::gather).collect();
    let mut buffer = Vec::new();
    TextEncoder::new().encode(&families, &mut buffer)?;
    Ok(buffer)
}

/// Serves `registries` at `GET /metrics` (and `GET /healthz`) on
/// `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registries: Vec<Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route(
            "/metrics",
            get(move || {
                let registries = registries.clone();
                async move { metrics_response(&registries) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: this endpoint serves GET /metrics and GET /healthz\n",
            )
        });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

fn metrics_response(registries: &[Registry]) -> Response {
    match encode(registries) {
        Ok(body) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics failed: {error}\n"),
        )
            .into_response(),
    }
}
