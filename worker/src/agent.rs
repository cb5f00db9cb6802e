//! The networked worker (`shoal worker`): registers with the coordinator
//! over QUIC with the join token, heartbeats, and runs the jobs the
//! coordinator assigns, re-forming its ring whenever the coordinator sends
//! a new membership.
//!
//! One *attempt* is one ring generation: form the ring, agree on the state
//! (member `state_source`, else member 0, broadcasts its replica, else the
//! checkpoint of the assignment, else fresh parameters, and every member
//! restores it), then train step by step. An attempt ends when the job is
//! done, when a collective fails (a peer died: every wait is bounded), or
//! when the coordinator sends a newer ring, a hold or a cancel; the replica
//! always comes back at a step boundary (a step abandoned half-way is rolled
//! back), so the next attempt continues from the last completed step. When
//! the coordinator goes away (restart) the worker stops training, keeps its
//! replica and reconnects; the restarted coordinator forms the next ring.
//!
//! Member 0 of the ring reports each step's metrics, uploads checkpoints
//! (every `checkpoint.interval_steps` and at the end) over the control
//! connection for the coordinator to write, and reports completion.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::message::{
    CheckpointUpload, CoordinatorMessage, Heartbeat, JobAssignment, MetricsReport, Register,
    RingMembership, WorkerMessage,
};
use protocol::spec::{JobSpec, SpecFormat};
use protocol::transport::{
    self, Identity, TransportTuning, bind_endpoint, connect_and_register, write_frame,
};
use protocol::{JoinToken, ProtocolError};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;

use crate::WorkerError;
use crate::collective::{CollectiveConfig, Ring, RingMemberAddress, RingSpec};
use crate::evaluation::Evaluator;
use crate::job::{PreparedJob, prepare};
use crate::local::StepReport;
use crate::metrics::{JobMetrics, WorkerMetrics};
use crate::overlap::{ReduceFailure, compute_and_all_reduce};
use crate::replica::{DataWait, Replica, objective_compute};
use crate::single_node::{TimedStep, off_thread, sha256_hex};

/// How a worker finds its coordinator and its peers.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The coordinator's QUIC address (`host:port`, resolved at each
    /// connection attempt).
    pub coordinator: String,
    /// The join token (pins the coordinator's certificate).
    pub join_token: JoinToken,
    /// A name for people (host name, pod name).
    pub name: String,
    /// Compute threads this worker uses (reported to the coordinator).
    pub threads: u32,
    /// Where the ring endpoint listens.
    pub listen: SocketAddr,
    /// The address peers reach the ring endpoint at (default: `listen`
    /// once bound, which must then not be a wildcard address).
    pub advertise: Option<String>,
    /// Collective settings (the timeout bounds every wait of a ring).
    pub collective: CollectiveConfig,
    /// QUIC settings.
    pub tuning: TransportTuning,
    /// Longest wait for one connection attempt to the coordinator.
    pub connect_timeout: Duration,
    /// Relative dataset paths of a spec are resolved against this folder.
    pub base: PathBuf,
    /// Where the step loop records its Prometheus metrics (labelled with
    /// `name`); workers of one process may share one.
    pub metrics: WorkerMetrics,
}

impl AgentConfig {
    /// Settings with defaults: listen on `listen`, 10 s timeouts.
    pub fn new(coordinator: String, join_token: JoinToken, listen: SocketAddr) -> AgentConfig {
        AgentConfig {
            coordinator,
            join_token,
            name: "worker".to_string(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            listen,
            advertise: None,
            collective: CollectiveConfig::default(),
            tuning: TransportTuning::default(),
            connect_timeout: Duration::from_secs(5),
            base: PathBuf::from("."),
            metrics: WorkerMetrics::new(),
        }
    }
}

/// A step reported to an in-process observer (`shoal run`).
#[derive(Clone, Debug)]
pub struct AgentStep {
    /// The job.
    pub job_id: u64,
    /// The step and where its time went.
    pub step: TimedStep,
}

type Outgoing = (WorkerMessage, Bytes);

/// How long to wait before forming the same ring again after it failed.
const RING_RETRY: Duration = Duration::from_millis(300);
/// How long to wait between attempts to reach the coordinator.
const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// Runs a worker until `shutdown` completes (SIGTERM, Ctrl-C), then leaves
/// cleanly. `steps` sees every step this worker reports as ring member 0.
/// Fails only when the coordinator refuses the join token or the local
/// endpoints cannot be set up; a lost coordinator is reconnected to.
pub async fn run_agent(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
    steps: Option<mpsc::UnboundedSender<AgentStep>>,
) -> Result<(), WorkerError> {
    let identity = Arc::new(Identity::generate()?);
    let ring_endpoint = bind_endpoint(config.listen, None, &config.tuning)?;
    let local = ring_endpoint
        .local_addr()
        .map_err(|source| WorkerError::Io {
            path: "the ring endpoint".into(),
            source,
        })?;
    let advertised = match &config.advertise {
        Some(address) if address.ends_with(":0") => {
            format!("{}:{}", &address[..address.len() - 2], local.port())
        }
        Some(address) => address.clone(),
        None if local.ip().is_unspecified() => {
            return Err(WorkerError::Job {
                reason: format!(
                    "the ring endpoint listens on {local}: give --advertise-addr, the address peers reach it at"
                ),
            });
        }
        None => local.to_string(),
    };
    let control_bind: SocketAddr = if local.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let control = bind_endpoint(control_bind, None, &config.tuning)?;
    let (outbox, outgoing) = mpsc::unbounded_channel::<Outgoing>();
    let outgoing = Arc::new(Mutex::new(outgoing));
    let mut agent = Agent {
        config,
        identity,
        ring_endpoint,
        advertised,
        outbox,
        steps,
        slot: None,
        worker_id: 0,
    };
    let mut shutdown = pin!(shutdown);
    loop {
        let registration = tokio::select! {
            registration = agent.register(&control) => registration?,
            () = &mut shutdown => return Ok(()),
        };
        tracing::info!(worker = registration.worker_id, coordinator = %agent.config.coordinator, "registered");
        match agent
            .session(registration, outgoing.clone(), &mut shutdown)
            .await
        {
            SessionEnd::Shutdown => {
                agent.leave().await;
                // Both endpoints are closed: wait until the close frames
                // have gone out, or ring neighbours still waiting on us
                // would learn of it only at their idle timeout.
                tokio::join!(control.wait_idle(), agent.ring_endpoint.wait_idle());
                return Ok(());
            }
            SessionEnd::Lost(reason) => {
                tracing::warn!(%reason, "lost the coordinator: reconnecting");
            }
        }
    }
}

enum SessionEnd {
    Shutdown,
    Lost(String),
}

struct Agent {
    config: AgentConfig,
    identity: Arc<Identity>,
    ring_endpoint: quinn::Endpoint,
    advertised: String,
    outbox: mpsc::UnboundedSender<Outgoing>,
    steps: Option<mpsc::UnboundedSender<AgentStep>>,
    slot: Option<JobSlot>,
    worker_id: u64,
}

/// The job this worker works for, across ring generations and reconnects.
struct JobSlot {
    job_id: u64,
    prepared: Arc<PreparedJob>,
    /// The checkpoint of the assignment (step, bytes), if the job has one.
    resume: Option<(u64, Arc<Vec<u8>>)>,
    /// The replica at a step boundary; `None` while an attempt holds it or
    /// before the first attempt.
    replica: Option<Replica>,
    /// The ring to train in; `None` while the job holds.
    membership: Option<RingMembership>,
    attempt: Option<RunningAttempt>,
    /// When to form the current ring again after a failure.
    retry_at: Option<tokio::time::Instant>,
    /// The job ended here (completed or failed): no more attempts until
    /// the coordinator sends a new ring for it (it may have missed the
    /// report: see `handle`).
    ended: bool,
}

struct RunningAttempt {
    cancel: watch::Sender<bool>,
    task: JoinHandle<AttemptOutcome>,
}

struct AttemptOutcome {
    replica: Option<Replica>,
    end: AttemptEnd,
}

enum AttemptEnd {
    Completed,
    Cancelled,
    RingFailed(String),
    Failed(String),
}

impl AttemptEnd {
    fn name(&self) -> &'static str {
        match self {
            AttemptEnd::Completed => "completed",
            AttemptEnd::Cancelled => "cancelled",
            AttemptEnd::RingFailed(_) => "ring failed",
            AttemptEnd::Failed(_) => "failed",
        }
    }
}

enum Event {
    Shutdown,
    Heartbeat,
    Message(Result<Option<protocol::Frame<CoordinatorMessage>>, ProtocolError>),
    AttemptEnded(Box<Result<AttemptOutcome, tokio::task::JoinError>>),
    Retry,
}

impl Agent {
    /// Connects and registers, retrying until the coordinator answers; a
    /// refusal (wrong join token) is final.
    async fn register(
        &self,
        control: &quinn::Endpoint,
    ) -> Result<transport::Registration, WorkerError> {
        let mut warned = false;
        loop {
            let address = tokio::net::lookup_host(&self.config.coordinator)
                .await
                .ok()
                .and_then(|mut addresses| addresses.next());
            let outcome = match address {
                Some(address) => {
                    let register = Register {
                        secret: String::new(),
                        name: self.config.name.clone(),
                        peer_address: self.advertised.clone(),
                        peer_fingerprint: self.identity.fingerprint().to_string(),
                        cores: self.config.threads,
                        memory_bytes: 0,
                    };
                    connect_and_register(
                        control,
                        address,
                        &self.config.join_token,
                        register,
                        &self.config.tuning,
                        self.config.connect_timeout,
                    )
                    .await
                }
                None => Err(ProtocolError::Connect {
                    address: self.config.coordinator.clone(),
                    reason: "the name does not resolve".to_string(),
                }),
            };
            match outcome {
                Ok(registration) => return Ok(registration),
                Err(error @ ProtocolError::Refused { .. }) => return Err(error.into()),
                Err(error) => {
                    if !warned {
                        tracing::warn!(%error, "cannot reach the coordinator yet: retrying");
                        warned = true;
                    }
                    tokio::time::sleep(RECONNECT_DELAY).await;
                }
            }
        }
    }

    async fn session(
        &mut self,
        registration: transport::Registration,
        outgoing: Arc<Mutex<mpsc::UnboundedReceiver<Outgoing>>>,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> SessionEnd {
        let transport::Registration {
            connection,
            mut send,
            mut reader,
            worker_id,
            heartbeat_interval_ms,
        } = registration;
        self.worker_id = worker_id;
        let writer = tokio::spawn(async move {
            let mut outgoing = outgoing.lock().await;
            while let Some((message, payload)) = outgoing.recv().await {
                if let Err(error) = write_frame(&mut send, &message, payload).await {
                    tracing::warn!(%error, "sending to the coordinator failed");
                    return;
                }
            }
            let _ = send.finish();
        });
        let interval = Duration::from_millis(heartbeat_interval_ms.max(10));
        let mut heartbeat = tokio::time::interval(interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut sequence = 0u64;
        let end = loop {
            let retry_at = self.slot.as_ref().and_then(|slot| slot.retry_at);
            let event = tokio::select! {
                () = shutdown.as_mut() => Event::Shutdown,
                _ = heartbeat.tick() => Event::Heartbeat,
                frame = reader.next() => Event::Message(frame),
                outcome = attempt_end(&mut self.slot) => Event::AttemptEnded(Box::new(outcome)),
                () = sleep_until(retry_at) => Event::Retry,
            };
            match event {
                Event::Shutdown => break SessionEnd::Shutdown,
                Event::Heartbeat => {
                    // Heartbeats are acknowledged: a coordinator silent for
                    // several intervals is gone (killed, cut off).
                    if last_heard.elapsed() > interval * 4 {
                        break SessionEnd::Lost("no answer to heartbeats".to_string());
                    }
                    sequence += 1;
                    let job_id = self.slot.as_ref().map(|slot| slot.job_id);
                    let _ = self.outbox.send((
                        WorkerMessage::Heartbeat(Heartbeat {
                            sequence,
                            job_id,
                            step: None,
                        }),
                        Bytes::new(),
                    ));
                }
                Event::Message(Ok(Some(frame))) => {
                    last_heard = Instant::now();
                    self.handle(frame.message, frame.payload.into_bytes());
                }
                Event::Message(Ok(None)) => {
                    break SessionEnd::Lost("the coordinator closed the connection".to_string());
                }
                Event::Message(Err(error)) => break SessionEnd::Lost(error.to_string()),
                Event::AttemptEnded(outcome) => self.attempt_ended(*outcome),
                Event::Retry => {
                    if let Some(slot) = &mut self.slot {
                        slot.retry_at = None;
                    }
                    self.start_attempt();
                }
            }
        };
        // Without a coordinator no ring is current: stop training (the
        // replica comes back at a step boundary) until the next ring.
        if let Some(slot) = &mut self.slot {
            slot.membership = None;
            slot.retry_at = None;
        }
        self.cancel_attempt();
        writer.abort();
        let reason: &[u8] = match end {
            SessionEnd::Shutdown => b"worker leaving",
            SessionEnd::Lost(_) => b"reconnecting",
        };
        connection.close(transport::CLOSE_NORMAL.into(), reason);
        end
    }

    async fn leave(&mut self) {
        if let Some(mut slot) = self.slot.take()
            && let Some(attempt) = slot.attempt.take()
        {
            let _ = attempt.cancel.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), attempt.task).await;
        }
        self.ring_endpoint
            .close(transport::CLOSE_NORMAL.into(), b"worker leaving");
    }

    fn handle(&mut self, message: CoordinatorMessage, payload: Bytes) {
        match message {
            CoordinatorMessage::AssignJob(assignment) => self.assign(assignment, payload),
            CoordinatorMessage::RingMembership(membership) => {
                let Some(slot) = &mut self.slot else {
                    tracing::warn!(
                        job = membership.job_id,
                        "a ring for a job never assigned: ignored"
                    );
                    return;
                };
                if slot.job_id != membership.job_id {
                    return;
                }
                tracing::info!(
                    job = membership.job_id,
                    generation = membership.generation,
                    members = membership.members.len(),
                    "new ring"
                );
                slot.membership = Some(membership);
                slot.retry_at = None;
                // A new ring for a job that ended here: the coordinator did
                // not get the completion (it declared the reporting member
                // dead with the report still queued, say). Join it: a
                // finished replica only agrees on the state, and member 0
                // reports the completion again.
                slot.ended = false;
                if slot.attempt.is_some() {
                    // The running attempt stops at its next wait; the new
                    // ring starts when it has handed the replica back.
                    self.cancel_attempt();
                } else {
                    self.start_attempt();
                }
            }
            CoordinatorMessage::Hold { job_id, reason } => {
                if let Some(slot) = &mut self.slot
                    && slot.job_id == job_id
                {
                    tracing::info!(job = job_id, %reason, "job holds");
                    slot.membership = None;
                    slot.retry_at = None;
                    self.cancel_attempt();
                }
            }
            CoordinatorMessage::Cancel { job_id, reason } => {
                if self.slot.as_ref().is_some_and(|slot| slot.job_id == job_id) {
                    tracing::info!(job = job_id, %reason, "job released");
                    self.cancel_attempt();
                    self.slot = None;
                }
            }
            CoordinatorMessage::HeartbeatAck { .. } => {}
            CoordinatorMessage::Registered { .. } | CoordinatorMessage::Refused { .. } => {
                tracing::warn!("an unexpected registration answer: ignored");
            }
        }
    }

    fn assign(&mut self, assignment: JobAssignment, payload: Bytes) {
        let job_id = assignment.job_id;
        let resume =
            (!payload.is_empty()).then(|| (assignment.start_step, Arc::new(payload.to_vec())));
        if let Some(slot) = &mut self.slot
            && slot.job_id == job_id
        {
            // Assigned again (a restarted coordinator): keep the replica.
            slot.resume = resume;
            slot.ended = false;
            return;
        }
        self.cancel_attempt();
        self.slot = None;
        let format = if assignment.spec_format == "toml" {
            SpecFormat::Toml
        } else {
            SpecFormat::Json
        };
        let prepared = JobSpec::parse(&assignment.spec, format)
            .map_err(WorkerError::from)
            .and_then(|spec| prepare(&spec, &self.config.base));
        match prepared {
            Ok(prepared) => {
                tracing::info!(job = job_id, name = %prepared.name, "job assigned");
                self.job_metrics(job_id).assigned();
                self.slot = Some(JobSlot {
                    job_id,
                    prepared: Arc::new(prepared),
                    resume,
                    replica: None,
                    membership: None,
                    attempt: None,
                    retry_at: None,
                    ended: false,
                });
            }
            Err(error) => {
                tracing::error!(job = job_id, %error, "cannot run the job");
                let _ = self.outbox.send((
                    WorkerMessage::JobFailed {
                        job_id,
                        reason: error.to_string(),
                    },
                    Bytes::new(),
                ));
            }
        }
    }

    /// This worker's metrics of job `job_id`.
    fn job_metrics(&self, job_id: u64) -> JobMetrics {
        self.config.metrics.job(job_id, &self.config.name)
    }

    fn cancel_attempt(&mut self) {
        if let Some(attempt) = self.slot.as_ref().and_then(|slot| slot.attempt.as_ref()) {
            tracing::debug!(worker = self.worker_id, "cancelling the running attempt");
            let _ = attempt.cancel.send(true);
        }
    }

    fn start_attempt(&mut self) {
        let Some(slot) = &mut self.slot else {
            return;
        };
        if slot.attempt.is_some() || slot.ended {
            return;
        }
        let Some(membership) = slot.membership.clone() else {
            return;
        };
        let (cancel, cancelled) = watch::channel(false);
        tracing::debug!(
            job = slot.job_id,
            worker = self.worker_id,
            ring = membership.generation,
            "attempt starts"
        );
        let metrics = self.config.metrics.job(slot.job_id, &self.config.name);
        let context = AttemptContext {
            metrics,
            job_id: slot.job_id,
            worker_id: self.worker_id,
            prepared: slot.prepared.clone(),
            replica: slot.replica.take(),
            resume: slot.resume.clone(),
            membership,
            endpoint: self.ring_endpoint.clone(),
            identity: self.identity.clone(),
            collective: self.config.collective.clone(),
            tuning: self.config.tuning.clone(),
            outbox: self.outbox.clone(),
            steps: self.steps.clone(),
            cancelled,
            evaluator: None,
        };
        slot.attempt = Some(RunningAttempt {
            cancel,
            task: tokio::spawn(run_attempt(context)),
        });
    }

    fn attempt_ended(&mut self, outcome: Result<AttemptOutcome, tokio::task::JoinError>) {
        let Some(slot) = &mut self.slot else {
            return;
        };
        slot.attempt = None;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => AttemptOutcome {
                replica: None,
                end: AttemptEnd::Failed(format!("the training task failed: {error}")),
            },
        };
        if outcome.replica.is_some() {
            slot.replica = outcome.replica;
        }
        tracing::debug!(
            job = slot.job_id,
            worker = self.worker_id,
            end = outcome.end.name(),
            ring = slot.membership.as_ref().map(|m| m.generation),
            "attempt ended"
        );
        match outcome.end {
            AttemptEnd::Completed => {
                slot.ended = true;
            }
            AttemptEnd::Cancelled => self.start_attempt(),
            AttemptEnd::RingFailed(reason) => {
                tracing::warn!(job = slot.job_id, %reason, "the ring failed: waiting for a new ring");
                self.config
                    .metrics
                    .job(slot.job_id, &self.config.name)
                    .collective_failed();
                if slot.membership.is_some() {
                    slot.retry_at = Some(tokio::time::Instant::now() + RING_RETRY);
                }
            }
            AttemptEnd::Failed(reason) => {
                tracing::error!(job = slot.job_id, %reason, "the job failed");
                slot.ended = true;
                let _ = self.outbox.send((
                    WorkerMessage::JobFailed {
                        job_id: slot.job_id,
                        reason,
                    },
                    Bytes::new(),
                ));
            }
        }
    }
}

async fn attempt_end(slot: &mut Option<JobSlot>) -> Result<AttemptOutcome, tokio::task::JoinError> {
    match slot.as_mut().and_then(|slot| slot.attempt.as_mut()) {
        Some(attempt) => (&mut attempt.task).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

struct AttemptContext {
    /// The job's evaluation data, opened at its first evaluation.
    evaluator: Option<Evaluator>,
    metrics: JobMetrics,
    job_id: u64,
    worker_id: u64,
    prepared: Arc<PreparedJob>,
    replica: Option<Replica>,
    resume: Option<(u64, Arc<Vec<u8>>)>,
    membership: RingMembership,
    endpoint: quinn::Endpoint,
    identity: Arc<Identity>,
    collective: CollectiveConfig,
    tuning: TransportTuning,
    outbox: mpsc::UnboundedSender<Outgoing>,
    steps: Option<mpsc::UnboundedSender<AgentStep>>,
    cancelled: watch::Receiver<bool>,
}

/// Waits until the attempt is cancelled.
async fn cancellation(cancelled: &mut watch::Receiver<bool>) {
    if cancelled.wait_for(|cancelled| *cancelled).await.is_err() {
        // The agent is gone: nothing will ever cancel, nor wait for us.
        std::future::pending::<()>().await;
    }
}

/// `future`, unless the attempt is cancelled first (`None`).
async fn unless_cancelled<T>(
    cancelled: &mut watch::Receiver<bool>,
    future: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        value = future => Some(value),
        () = cancellation(cancelled) => None,
    }
}

async fn run_attempt(mut context: AttemptContext) -> AttemptOutcome {
    let mut replica = context.replica.take();
    let end = attempt(&mut context, &mut replica).await;
    AttemptOutcome { replica, end }
}

/// A fresh replica of the job: the dataset opened, the model initialized
/// from the seed (and from the spec's initial checkpoint, if any).
async fn fresh_replica(prepared: Arc<PreparedJob>) -> Result<Replica, WorkerError> {
    tokio::task::spawn_blocking(move || prepared.open_replica())
        .await
        .map_err(|error| WorkerError::Job {
            reason: format!("a setup task failed: {error}"),
        })?
}

fn failed(error: WorkerError) -> AttemptEnd {
    match error {
        WorkerError::Collective(error) => AttemptEnd::RingFailed(error.to_string()),
        other => AttemptEnd::Failed(other.to_string()),
    }
}

async fn ring_spec(context: &AttemptContext) -> Result<RingSpec, WorkerError> {
    let membership = &context.membership;
    let my_index = membership
        .members
        .iter()
        .position(|member| member.worker_id == context.worker_id)
        .ok_or_else(|| WorkerError::Job {
            reason: format!(
                "worker {} is not a member of ring generation {}",
                context.worker_id, membership.generation
            ),
        })?;
    let mut members = Vec::with_capacity(membership.members.len());
    for member in &membership.members {
        let address = tokio::net::lookup_host(&member.address)
            .await
            .ok()
            .and_then(|mut addresses| addresses.next())
            .ok_or_else(|| WorkerError::Job {
                reason: format!("ring member address {} does not resolve", member.address),
            })?;
        let fingerprint = member
            .fingerprint
            .parse()
            .map_err(|error| WorkerError::Job {
                reason: format!("ring member fingerprint: {error}"),
            })?;
        members.push(RingMemberAddress {
            address,
            fingerprint,
            virtual_rank_count: member.virtual_rank_count as usize,
        });
    }
    Ok(RingSpec {
        job_id: context.job_id,
        generation: membership.generation,
        members,
        my_index,
    })
}

/// One attempt: form the ring, agree on the state, train. `replica` is at
/// a step boundary whenever this returns.
async fn attempt(context: &mut AttemptContext, replica: &mut Option<Replica>) -> AttemptEnd {
    let spec = match ring_spec(context).await {
        Ok(spec) => spec,
        Err(error) => return AttemptEnd::RingFailed(error.to_string()),
    };
    let me = spec.my_index;
    let config = CollectiveConfig {
        bucket_elements: context.prepared.job.bucket_elements,
        buckets_in_flight: context.prepared.job.buckets_in_flight,
        ..context.collective.clone()
    };
    let connecting = Ring::connect(
        &context.endpoint,
        &context.identity,
        &spec,
        config,
        &context.tuning,
    );
    let mut ring = match unless_cancelled(&mut context.cancelled, connecting).await {
        None => return AttemptEnd::Cancelled,
        Some(Err(error)) => return AttemptEnd::RingFailed(error.to_string()),
        Some(Ok(ring)) => ring,
    };

    // Agree on the state: the root's replica, else the assignment's
    // checkpoint, else fresh parameters.
    let root = context.membership.state_source.unwrap_or(0) as usize;
    let mut state = Vec::new();
    let mut keep_own = false;
    if me == root {
        let own_step = replica.as_ref().map(Replica::completed_steps);
        let resume_step = context.resume.as_ref().map(|(step, _)| *step);
        let use_own = match (own_step, resume_step) {
            (Some(own), Some(resume)) => own >= resume,
            (Some(_), None) => true,
            _ => false,
        };
        if use_own {
            keep_own = true;
            match replica.as_ref().map(Replica::checkpoint_bytes) {
                Some(Ok(bytes)) => state = bytes,
                Some(Err(error)) => return failed(error),
                None => unreachable!("use_own implies a replica"),
            }
        } else if let Some((_, bytes)) = &context.resume {
            state = bytes.as_ref().clone();
        } else {
            match fresh_replica(context.prepared.clone()).await {
                Ok(fresh) => match fresh.checkpoint_bytes() {
                    Ok(bytes) => {
                        state = bytes;
                        *replica = Some(fresh);
                        keep_own = true;
                    }
                    Err(error) => return failed(error),
                },
                Err(error) => return failed(error),
            }
        }
    }
    match unless_cancelled(&mut context.cancelled, ring.broadcast(root, &mut state)).await {
        None => return AttemptEnd::Cancelled,
        Some(Err(error)) => return AttemptEnd::RingFailed(error.to_string()),
        Some(Ok(())) => {}
    }
    if !keep_own {
        let mut target = match replica.take() {
            Some(existing) => existing,
            None => match fresh_replica(context.prepared.clone()).await {
                Ok(fresh) => fresh,
                Err(error) => return failed(error),
            },
        };
        let restored = ops::checkpoint::decode(&state, "the ring's state")
            .map_err(WorkerError::from)
            .and_then(|file| target.restore(&file, "the ring's state"));
        *replica = Some(target);
        if let Err(error) = restored {
            return failed(error);
        }
    }
    tracing::info!(
        job = context.job_id,
        generation = context.membership.generation,
        member = me,
        step = replica.as_ref().map_or(0, Replica::completed_steps),
        "ring formed"
    );
    context.metrics.ring_formed(context.membership.generation);
    let global_batch = context.prepared.global_batch;
    let hosted_samples =
        (global_batch * ring.hosted().len() / ring.layout().virtual_ranks()) as u64;

    loop {
        let current = replica.as_ref().expect("the state is agreed");
        if current.is_finished() {
            break;
        }
        if *context.cancelled.borrow() {
            return AttemptEnd::Cancelled;
        }
        match train_step(context, &mut ring, replica).await {
            StepEnd::Done(mut step) => {
                if me == 0 {
                    match evaluate_if_due(context, replica).await {
                        Ok(scores) => step.evaluation = scores,
                        Err(error) => return failed(error),
                    }
                }
                let current = replica.as_ref().expect("the step hands the replica back");
                context.metrics.record_step(
                    me,
                    &step,
                    current.completed_steps(),
                    hosted_samples,
                    global_batch,
                );
                if me == 0 {
                    report_step(context, current, &step);
                    let completed = current.completed_steps();
                    if let Some(interval) = context.prepared.checkpoint_interval
                        && completed.is_multiple_of(interval)
                        && !current.is_finished()
                        && let Err(error) = upload_checkpoint(context, current)
                    {
                        return failed(error);
                    }
                }
            }
            StepEnd::Cancelled => return AttemptEnd::Cancelled,
            StepEnd::Failed(error) => return failed(error),
        }
    }
    let current = replica.as_ref().expect("the state is agreed");
    if me == 0 {
        if let Err(error) = upload_checkpoint(context, current) {
            return failed(error);
        }
        let _ = context.outbox.send((
            WorkerMessage::JobCompleted {
                job_id: context.job_id,
                step: current.completed_steps(),
            },
            Bytes::new(),
        ));
        tracing::info!(job = context.job_id, "job completed");
    }
    // Finish the streams so the neighbours see an orderly end.
    let _ = unless_cancelled(&mut context.cancelled, ring.shutdown()).await;
    AttemptEnd::Completed
}

/// The evaluation scores after the step just completed, when the job's
/// `[evaluation]` is due (else none). The replica is lent to a blocking
/// thread and handed back, unless the evaluation fails.
async fn evaluate_if_due(
    context: &mut AttemptContext,
    slot: &mut Option<Replica>,
) -> Result<Vec<(String, f64)>, WorkerError> {
    let due = context
        .prepared
        .evaluation
        .as_ref()
        .is_some_and(|settings| {
            slot.as_ref().is_some_and(|replica| {
                settings.is_due(replica.completed_steps(), replica.job().steps)
            })
        });
    if !due {
        return Ok(Vec::new());
    }
    let replica = slot.take().expect("a replica to evaluate");
    let prepared = context.prepared.clone();
    let evaluator = context.evaluator.take();
    let (back, (evaluator, scores)) = off_thread(replica, move |replica| {
        let mut evaluator = match evaluator {
            Some(evaluator) => evaluator,
            None => Evaluator::open(&prepared)?.ok_or_else(|| WorkerError::Job {
                reason: "evaluation is due but the job has no [evaluation]".to_string(),
            })?,
        };
        let scores = evaluator.evaluate(replica.model(), &prepared)?;
        Ok((evaluator, scores))
    })
    .await?;
    *slot = Some(back);
    context.evaluator = Some(evaluator);
    Ok(scores)
}

enum StepEnd {
    Done(TimedStep),
    Cancelled,
    Failed(WorkerError),
}

/// One data-parallel step. When it ends early (a collective failed, or a
/// newer ring came) `slot` holds the state of the step boundary: a step
/// abandoned after some objective's update is rolled back. A failure of
/// the computation itself (bad data) fails the job and loses the replica.
async fn train_step(
    context: &mut AttemptContext,
    ring: &mut Ring,
    slot: &mut Option<Replica>,
) -> StepEnd {
    let mut replica = slot.take().expect("a replica to train");
    let names = replica.objective_names();
    // A step of several objectives updates after each all-reduce: keep the
    // state of the step boundary to roll back to.
    let snapshot = if names.len() > 1 {
        match replica.checkpoint_bytes() {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                *slot = Some(replica);
                return StepEnd::Failed(error);
            }
        }
    } else {
        None
    };
    let step = replica.completed_steps();
    let lr = replica.next_lr();
    let data_wait = Arc::new(DataWait::default());
    let (mut compute, mut all_reduce) = (Duration::ZERO, Duration::ZERO);
    let mut losses = Vec::new();
    let mut gradient_norms = Vec::new();
    for (objective, name) in names.iter().copied().enumerate() {
        let layout = replica.gradient_layout(objective);
        let cancelled = context.cancelled.clone();
        let computed = compute_and_all_reduce(
            replica,
            ring,
            layout.clone(),
            objective_compute(objective, ring.hosted(), data_wait.clone()),
            async move {
                let mut cancelled = cancelled;
                cancellation(&mut cancelled).await
            },
        )
        .await;
        let outcome;
        match computed {
            Ok((back, result)) => (replica, outcome) = (back, result),
            Err(error) => return StepEnd::Failed(error),
        }
        let reduced = match outcome {
            Ok(reduced) => reduced,
            Err(ReduceFailure::Compute(error)) => {
                *slot = Some(replica);
                return StepEnd::Failed(error);
            }
            Err(failure) => {
                if objective > 0
                    && let Some(snapshot) = &snapshot
                {
                    let rolled_back = ops::checkpoint::decode(snapshot, "the step's snapshot")
                        .map_err(WorkerError::from)
                        .and_then(|file| replica.restore(&file, "the step's snapshot"));
                    if let Err(error) = rolled_back {
                        *slot = Some(replica);
                        return StepEnd::Failed(error);
                    }
                }
                *slot = Some(replica);
                return match failure {
                    ReduceFailure::Collective(error) => StepEnd::Failed(error.into()),
                    _ => StepEnd::Cancelled,
                };
            }
        };
        compute += reduced.compute;
        if objective == 0 {
            compute = compute.saturating_sub(data_wait.get());
        }
        all_reduce += reduced.exposed_all_reduce;
        context.metrics.record_all_reduce(
            ring.member_index(),
            reduced.exposed_all_reduce,
            &reduced.all_reduce,
        );
        let began = Instant::now();
        let virtual_ranks = replica.job().virtual_ranks;
        gradient_norms.push((
            name,
            layout.mean_gradient_norm(&reduced.summed, virtual_ranks),
        ));
        let loss;
        match off_thread(replica, move |r| Ok(r.apply(objective, &reduced.summed))).await {
            Ok((back, value)) => (replica, loss) = (back, value),
            Err(error) => return StepEnd::Failed(error),
        }
        compute += began.elapsed();
        losses.push((name, loss));
    }
    replica.finish_step();
    *slot = Some(replica);
    StepEnd::Done(TimedStep {
        report: StepReport { step, lr, losses },
        data_wait: data_wait.get(),
        compute,
        all_reduce,
        gradient_norms,
        evaluation: Vec::new(),
    })
}

fn report_step(context: &AttemptContext, replica: &Replica, step: &TimedStep) {
    let seconds = (step.data_wait + step.compute + step.all_reduce).as_secs_f64();
    let global_batch = context.prepared.global_batch as f64;
    let mut values: Vec<(String, f64)> = step
        .report
        .losses
        .iter()
        .map(|(name, loss)| (name.to_string(), f64::from(*loss)))
        .collect();
    for (name, norm) in &step.gradient_norms {
        let key = if *name == "loss" {
            "grad_norm".to_string()
        } else {
            format!("{name}_grad_norm")
        };
        values.push((key, *norm));
    }
    values.extend(step.evaluation.iter().cloned());
    values.extend([
        ("lr".to_string(), step.report.lr),
        (
            "samples_per_second".to_string(),
            global_batch / seconds.max(1e-9),
        ),
        (
            "data_wait_seconds".to_string(),
            step.data_wait.as_secs_f64(),
        ),
        ("compute_seconds".to_string(), step.compute.as_secs_f64()),
        (
            "all_reduce_seconds".to_string(),
            step.all_reduce.as_secs_f64(),
        ),
    ]);
    let _ = context.outbox.send((
        WorkerMessage::MetricsReport(MetricsReport {
            job_id: context.job_id,
            step: step.report.step,
            values,
        }),
        Bytes::new(),
    ));
    if let Some(steps) = &context.steps {
        let _ = steps.send(AgentStep {
            job_id: context.job_id,
            step: step.clone(),
        });
    }
    tracing::debug!(
        job = context.job_id,
        step = replica.completed_steps(),
        "step done"
    );
}

fn upload_checkpoint(context: &AttemptContext, replica: &Replica) -> Result<(), WorkerError> {
    let bytes = replica.checkpoint_bytes()?;
    let upload = CheckpointUpload {
        job_id: context.job_id,
        step: replica.completed_steps(),
        sha256: sha256_hex(&bytes),
    };
    let _ = context
        .outbox
        .send((WorkerMessage::CheckpointUpload(upload), Bytes::from(bytes)));
    context.metrics.checkpoint_uploaded();
    Ok(())
}
