//! The workers' side of the coordinator: the QUIC endpoint workers join with
//! the join token, each worker's control connection (register, heartbeats,
//! reports), and the delivery of the scheduler's actions as protocol
//! messages.
//!
//! Everything here only moves messages between the connections and the
//! [`Coordinator`]; decisions stay in the scheduler.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use protocol::message::{
    CheckpointReport, CheckpointUpload, CoordinatorMessage, JobAssignment, MetricsReport,
    WorkerMessage,
};
use protocol::transport::{accept_registration, write_frame};
use tokio::sync::mpsc;

use crate::job::{JobId, JobState, WorkerId};
use crate::scheduler::{Action, Outcome, WorkerInfo};
use crate::service::Coordinator;
use crate::store::CheckpointRecord;

/// Settings of the worker endpoint.
#[derive(Debug, Clone)]
pub struct WorkerEndpointConfig {
    /// The join token's secret that workers must present.
    pub secret: String,
    /// How often workers send heartbeats (a third of the timeout is usual).
    pub heartbeat_interval: Duration,
    /// How long a worker may take to complete its handshake and register.
    pub handshake_timeout: Duration,
}

/// A message to a worker and its frame's payload (a checkpoint).
type Outgoing = (CoordinatorMessage, Bytes);

struct WorkerConnection {
    connection: quinn::Connection,
    outbox: mpsc::UnboundedSender<Outgoing>,
}

type Connections = Arc<Mutex<BTreeMap<WorkerId, WorkerConnection>>>;

/// Accepts workers on `endpoint` (a server endpoint made with
/// `protocol::transport::server_config`) and delivers `actions` (from
/// [`Coordinator::open`]) to them, until the endpoint is closed.
pub async fn serve_workers(
    coordinator: Arc<Coordinator>,
    endpoint: quinn::Endpoint,
    config: WorkerEndpointConfig,
    actions: mpsc::UnboundedReceiver<Action>,
) {
    let connections: Connections = Arc::default();
    let dispatcher = tokio::spawn(dispatch_actions(
        coordinator.clone(),
        connections.clone(),
        actions,
    ));
    while let Some(incoming) = endpoint.accept().await {
        let coordinator = coordinator.clone();
        let connections = connections.clone();
        let config = config.clone();
        tokio::spawn(async move {
            serve_worker(coordinator, connections, config, incoming).await;
        });
    }
    dispatcher.abort();
}

fn lock(
    connections: &Connections,
) -> std::sync::MutexGuard<'_, BTreeMap<WorkerId, WorkerConnection>> {
    connections
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn serve_worker(
    coordinator: Arc<Coordinator>,
    connections: Connections,
    config: WorkerEndpointConfig,
    incoming: quinn::Incoming,
) {
    let peer = incoming.remote_address();
    let id = coordinator.reserve_worker_id();
    let registered = match accept_registration(
        incoming,
        &config.secret,
        id.0,
        config.heartbeat_interval.as_millis() as u64,
        config.handshake_timeout,
    )
    .await
    {
        Ok(registered) => registered,
        Err(error) => {
            tracing::warn!(%peer, %error, "a worker could not register");
            return;
        }
    };
    let register = &registered.register;
    let info = WorkerInfo {
        name: register.name.clone(),
        address: register.peer_address.clone(),
        fingerprint: register.peer_fingerprint.clone(),
        threads: register.cores,
        memory_bytes: register.memory_bytes,
    };
    let (outbox, mut outgoing) = mpsc::unbounded_channel::<Outgoing>();
    lock(&connections).insert(
        id,
        WorkerConnection {
            connection: registered.connection.clone(),
            outbox: outbox.clone(),
        },
    );
    if let Err(error) = coordinator.register_reserved_worker(id, info) {
        tracing::error!(%id, %error, "registering a worker");
    }
    tracing::info!(worker = %id, %peer, name = %registered.register.name, "worker registered");

    let mut send = registered.send;
    let writer = tokio::spawn(async move {
        while let Some((message, payload)) = outgoing.recv().await {
            if let Err(error) = write_frame(&mut send, &message, payload).await {
                tracing::warn!(worker = %id, %error, "sending to a worker failed");
                break;
            }
        }
    });

    let mut reader = registered.reader;
    loop {
        let (message, payload) = match reader.next().await {
            Ok(Some(frame)) => (frame.message, frame.payload.into_bytes()),
            Ok(None) => break,
            Err(error) => {
                // A worker that leaves closes with the normal code (SIGTERM,
                // the end of `shoal run`): an event, not a warning.
                let left_in_order = matches!(
                    registered.connection.close_reason(),
                    Some(quinn::ConnectionError::ApplicationClosed(close))
                        if close.error_code == protocol::transport::CLOSE_NORMAL.into()
                );
                if left_in_order {
                    tracing::info!(worker = %id, "worker closed its connection");
                } else {
                    tracing::warn!(worker = %id, %error, "worker connection ended");
                }
                break;
            }
        };
        // Every frame is a sign of life, not only heartbeats: a busy member
        // 0 queues metrics and checkpoint uploads ahead of its heartbeats,
        // and while this loop writes those checkpoints the heartbeats wait
        // behind them in the stream.
        let alive = coordinator.heartbeat(id);
        match message {
            WorkerMessage::Heartbeat(heartbeat) => {
                if !alive {
                    // Declared dead meanwhile: it must register again.
                    registered.connection.close(
                        protocol::transport::CLOSE_REFUSED.into(),
                        b"declared dead: register again",
                    );
                    break;
                }
                let _ = outbox.send((
                    CoordinatorMessage::HeartbeatAck {
                        sequence: heartbeat.sequence,
                    },
                    Bytes::new(),
                ));
            }
            WorkerMessage::MetricsReport(MetricsReport {
                job_id,
                step,
                values,
            }) => {
                let values = values.into_iter().collect();
                if let Err(error) = coordinator.report_step(JobId(job_id), step, &values) {
                    tracing::warn!(worker = %id, %error, "metrics report refused");
                }
            }
            WorkerMessage::CheckpointReport(CheckpointReport {
                job_id,
                step,
                location,
                sha256,
                bytes,
            }) => {
                let record = CheckpointRecord {
                    step,
                    path: location,
                    sha256,
                    bytes,
                    at_ms: crate::service::unix_ms(),
                };
                match coordinator.record_checkpoint(JobId(job_id), &record) {
                    Ok(pruned) => {
                        for old in pruned {
                            // Written by the worker, maybe on a shared volume.
                            let _ = std::fs::remove_file(&old.path);
                        }
                    }
                    Err(error) => tracing::warn!(worker = %id, %error, "checkpoint report refused"),
                }
            }
            WorkerMessage::JobFailed { job_id, reason } => {
                if job_is_over(&coordinator, JobId(job_id)) {
                    continue;
                }
                if let Err(error) =
                    coordinator.report_finished(JobId(job_id), Outcome::Failed(reason))
                {
                    tracing::warn!(worker = %id, %error, "failure report refused");
                }
            }
            WorkerMessage::CheckpointUpload(CheckpointUpload {
                job_id,
                step,
                sha256,
            }) => {
                let job = JobId(job_id);
                let actual = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&payload));
                if actual != sha256 {
                    tracing::warn!(worker = %id, job = job_id, step, "checkpoint upload with a wrong SHA-256: ignored");
                    continue;
                }
                let writer = coordinator.clone();
                let stored = tokio::task::spawn_blocking(move || {
                    writer.store_checkpoint(job, step, &payload)
                })
                .await;
                match stored {
                    Ok(Ok(record)) => {
                        tracing::info!(job = job_id, step, path = %record.path, "checkpoint written");
                    }
                    Ok(Err(error)) => {
                        tracing::error!(job = job_id, step, %error, "writing a checkpoint failed");
                    }
                    Err(error) => {
                        tracing::error!(job = job_id, step, %error, "the checkpoint writer failed");
                    }
                }
            }
            WorkerMessage::JobCompleted { job_id, step } => {
                // Only a running job completes: a report queued before a
                // coordinator restart is repeated by the next ring.
                let running = coordinator
                    .job(JobId(job_id))
                    .is_ok_and(|record| record.state == JobState::Running);
                if !running {
                    tracing::info!(worker = %id, job = job_id, "completion of a job not running: ignored");
                    continue;
                }
                tracing::info!(worker = %id, job = job_id, step, "job completed");
                if let Err(error) = coordinator.report_finished(JobId(job_id), Outcome::Completed) {
                    tracing::warn!(worker = %id, %error, "completion report refused");
                }
            }
            WorkerMessage::Register(_) => {
                tracing::warn!(worker = %id, "a second Register on one connection: ignored");
            }
        }
    }
    lock(&connections).remove(&id);
    writer.abort();
    if let Err(error) = coordinator.worker_left(id) {
        tracing::error!(worker = %id, %error, "a worker left");
    }
    tracing::info!(worker = %id, "worker disconnected");
}

/// Whether job `job` already ended (a late or repeated report about it is
/// ignored).
fn job_is_over(coordinator: &Coordinator, job: JobId) -> bool {
    coordinator
        .job(job)
        .map_or(true, |record| record.state.is_terminal())
}

/// The job's latest checkpoint (step and bytes), for a worker that joins
/// with no replica; `(0, empty)` if it has none or it cannot be read.
fn latest_checkpoint(coordinator: &Coordinator, job: JobId) -> (u64, Bytes) {
    let Ok(Some(record)) = coordinator.latest_checkpoint(job) else {
        return (0, Bytes::new());
    };
    match std::fs::read(&record.path) {
        Ok(bytes) => (record.step, Bytes::from(bytes)),
        Err(error) => {
            tracing::warn!(job = job.0, path = %record.path, %error, "cannot read the latest checkpoint");
            (0, Bytes::new())
        }
    }
}

/// Sends the scheduler's actions to the workers concerned.
async fn dispatch_actions(
    coordinator: Arc<Coordinator>,
    connections: Connections,
    mut actions: mpsc::UnboundedReceiver<Action>,
) {
    // The members each job's workers were last told about: a member new to
    // the job first gets the assignment.
    let mut assigned: BTreeMap<JobId, BTreeSet<WorkerId>> = BTreeMap::new();
    while let Some(action) = actions.recv().await {
        match action {
            Action::FormRing { ring, .. } => {
                let (checkpoint_step, checkpoint) = latest_checkpoint(&coordinator, ring.job);
                let start_step = coordinator
                    .last_step(ring.job)
                    .ok()
                    .flatten()
                    .map_or(checkpoint_step, |step| step + 1);
                let Some(membership) = coordinator.ring_membership(&ring, start_step) else {
                    continue; // a member is gone: a newer ring follows
                };
                let spec = match coordinator.job(ring.job) {
                    Ok(job) => serde_json::to_string(&job.spec).expect("a spec serializes"),
                    Err(error) => {
                        tracing::error!(job = ring.job.0, %error, "a ring for an unreadable job");
                        continue;
                    }
                };
                let known = assigned.entry(ring.job).or_default();
                let connections = lock(&connections);
                for worker in ring.workers() {
                    let Some(connection) = connections.get(&worker) else {
                        continue;
                    };
                    if known.insert(worker) {
                        let _ = connection.outbox.send((
                            CoordinatorMessage::AssignJob(JobAssignment {
                                job_id: ring.job.0,
                                spec: spec.clone(),
                                spec_format: "json".to_string(),
                                // The worker derives the dataset plan itself
                                // from the spec and the files' footers (a
                                // pure function of both).
                                plan: String::new(),
                                start_step: checkpoint_step,
                            }),
                            checkpoint.clone(),
                        ));
                    }
                    let _ = connection.outbox.send((
                        CoordinatorMessage::RingMembership(membership.clone()),
                        Bytes::new(),
                    ));
                }
                known.retain(|worker| ring.members.iter().any(|member| member.worker == *worker));
            }
            Action::Release { job, workers } => {
                assigned.remove(&job);
                let connections = lock(&connections);
                for worker in workers {
                    if let Some(connection) = connections.get(&worker) {
                        let _ = connection.outbox.send((
                            CoordinatorMessage::Cancel {
                                job_id: job.0,
                                reason: "the job ended or was cancelled".to_string(),
                            },
                            Bytes::new(),
                        ));
                    }
                }
            }
            Action::Hold { job, workers } => {
                tracing::info!(job = job.0, ?workers, "job holds below min_workers");
                let connections = lock(&connections);
                for worker in workers {
                    let Some(connection) = connections.get(&worker) else {
                        continue;
                    };
                    if assigned.entry(job).or_default().insert(worker) {
                        // A newcomer reserved for the job: it gets the job
                        // now and its ring when enough workers are there.
                        if let Ok(record) = coordinator.job(job) {
                            let (checkpoint_step, checkpoint) =
                                latest_checkpoint(&coordinator, job);
                            let _ = connection.outbox.send((
                                CoordinatorMessage::AssignJob(JobAssignment {
                                    job_id: job.0,
                                    spec: serde_json::to_string(&record.spec)
                                        .expect("a spec serializes"),
                                    spec_format: "json".to_string(),
                                    plan: String::new(),
                                    start_step: checkpoint_step,
                                }),
                                checkpoint,
                            ));
                        }
                    }
                    let _ = connection.outbox.send((
                        CoordinatorMessage::Hold {
                            job_id: job.0,
                            reason: "below min_workers: waiting for workers".to_string(),
                        },
                        Bytes::new(),
                    ));
                }
            }
            Action::WorkerDead { worker } => {
                if let Some(connection) = lock(&connections).remove(&worker) {
                    connection.connection.close(
                        protocol::transport::CLOSE_REFUSED.into(),
                        b"missed heartbeats",
                    );
                }
            }
            Action::SetJobState { .. } => {}
        }
    }
}
