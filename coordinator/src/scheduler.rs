//! Membership and placement as a pure state machine: workers register,
//! heartbeat and leave; jobs queue, run on disjoint sets of workers, lose
//! and gain workers. Time is an input (`now`, the time since the driver
//! started), never read from a clock, so tests drive it with a simulated
//! clock, the way quinn-proto is tested.
//!
//! Inputs are the `handle_*` and command methods; outputs are polled with
//! [`Scheduler::poll_action`] (what to persist or send, in order) and
//! [`Scheduler::poll_timeout`] (when to call [`Scheduler::handle_timeout`]).
//!
//! Placement rules, applied after every input:
//! 1. free workers go first to jobs waiting for workers (oldest first), up
//!    to their `max`; a job that reaches its `min` runs again, one still
//!    below it keeps the newcomers reserved (they wait with it);
//! 2. then to queued jobs in submission order, each taking up to its `max`
//!    once `min` are free; a queued job that cannot start blocks the ones
//!    behind it (no overtaking, so a large job is never starved);
//! 3. then, when no job is queued, to running jobs below their `max`.
//!
//! A ring lists its members in order; member `i` of `W` hosts the
//! contiguous virtual ranks `[i*V/W, (i+1)*V/W)`. When the ring re-forms,
//! survivors keep their order and new members are appended.
use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::time::Duration;

use serde::Serialize;

use crate::job::{JobId, JobState, WorkerId};

/// Settings of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// A worker with no heartbeat for this long is declared dead.
    pub heartbeat_timeout: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            heartbeat_timeout: Duration::from_secs(10),
        }
    }
}

/// What a job asks of the workers (from its spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Demand {
    /// Below this many workers the job waits.
    pub min_workers: u32,
    /// The job never takes more.
    pub max_workers: u32,
    /// V: the virtual ranks spread over the workers.
    pub virtual_ranks: u32,
}

/// What a worker said about itself when it registered (the fields of
/// `protocol::message::Register`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct WorkerInfo {
    /// A name for people (host name, pod name).
    pub name: String,
    /// Where the worker's collective endpoint listens (`host:port`), for
    /// its ring neighbours.
    pub address: String,
    /// SHA-256 fingerprint (hex) of its ring certificate, for its peers.
    pub fingerprint: String,
    /// Compute threads it uses.
    pub threads: u32,
    /// Memory available to it, bytes.
    pub memory_bytes: u64,
}

/// A registered, live worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerStatus {
    /// Its id.
    pub id: WorkerId,
    /// What it told us.
    pub info: WorkerInfo,
    /// When it registered.
    pub registered_at: Duration,
    /// When its last heartbeat (or registration) arrived.
    pub last_heartbeat: Duration,
    /// The job it works for, if any.
    pub job: Option<JobId>,
}

/// One worker of a ring and the virtual ranks it hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RingMember {
    /// The worker.
    pub worker: WorkerId,
    /// The contiguous virtual ranks it hosts.
    pub virtual_ranks: Range<u32>,
}

/// A job's ring at one generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ring {
    /// The job.
    pub job: JobId,
    /// Increases every time the ring changes; messages of an older
    /// generation are stale.
    pub generation: u64,
    /// The members in ring order, with their virtual ranks.
    pub members: Vec<RingMember>,
    /// A member holding the job's current replica (parameters, optimizer
    /// state, data cursor), from which new members copy it at a step
    /// boundary. `None`: no worker holds it; start from the latest
    /// checkpoint, else the initial one, else fresh parameters.
    pub state_from: Option<WorkerId>,
}

impl Ring {
    /// The ids of the members, in ring order.
    pub fn workers(&self) -> Vec<WorkerId> {
        self.members.iter().map(|member| member.worker).collect()
    }
}

/// Why a ring was (re-)formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "worker")]
pub enum RingChange {
    /// The job starts (or restarts after having no worker).
    Start,
    /// A member died or left; the survivors carry on.
    WorkerLost(WorkerId),
    /// A worker joined to reach `min` or to grow towards `max`.
    WorkerJoined(WorkerId),
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// Persist the job's new state.
    SetJobState {
        /// The job.
        job: JobId,
        /// Its new state.
        state: JobState,
        /// Why, in words.
        reason: String,
    },
    /// Send the ring to each of its members: they drop any in-flight step
    /// of an older generation, new members copy the state from
    /// `ring.state_from`, and all carry on from the last completed step.
    FormRing {
        /// The new ring.
        ring: Ring,
        /// Why it changed.
        change: RingChange,
    },
    /// The job is below `min_workers`: these members drop the in-flight
    /// step and wait, keeping their replica.
    Hold {
        /// The job.
        job: JobId,
        /// Its surviving members.
        workers: Vec<WorkerId>,
    },
    /// These workers no longer work for the job (it ended or was
    /// cancelled): they stop and are free.
    Release {
        /// The job.
        job: JobId,
        /// Its former members.
        workers: Vec<WorkerId>,
    },
    /// The worker missed its heartbeats and is forgotten; it must register
    /// again if it comes back.
    WorkerDead {
        /// The worker.
        worker: WorkerId,
    },
}

/// How a job ended, as reported by its workers or decided by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It reached its last step.
    Completed,
    /// It stopped on an error.
    Failed(String),
    /// It was cancelled.
    Cancelled,
}

#[derive(Debug, Clone)]
struct JobEntry {
    demand: Demand,
    state: JobState,
    members: Vec<WorkerId>,
    /// Members that hold the replica of the last running generation.
    replicas: Vec<WorkerId>,
    generation: u64,
}

/// The scheduler's state: live workers and unfinished jobs.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    next_worker: u64,
    workers: BTreeMap<WorkerId, WorkerStatus>,
    jobs: BTreeMap<JobId, JobEntry>,
    actions: VecDeque<Action>,
}

impl Scheduler {
    /// A scheduler with no worker and no job.
    pub fn new(config: SchedulerConfig) -> Scheduler {
        Scheduler {
            config,
            next_worker: 1,
            workers: BTreeMap::new(),
            jobs: BTreeMap::new(),
            actions: VecDeque::new(),
        }
    }

    // ---- getters ----

    /// The settings.
    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    /// Live workers, by id.
    pub fn workers(&self) -> impl Iterator<Item = &WorkerStatus> {
        self.workers.values()
    }

    /// The live worker `id`.
    pub fn worker(&self, id: WorkerId) -> Option<&WorkerStatus> {
        self.workers.get(&id)
    }

    /// The scheduler's view of an unfinished job's state.
    pub fn job_state(&self, job: JobId) -> Option<JobState> {
        self.jobs.get(&job).map(|entry| entry.state)
    }

    /// The current ring of job `job` (empty members while queued).
    pub fn ring(&self, job: JobId) -> Option<Ring> {
        self.jobs.get(&job).map(|entry| ring_of(job, entry))
    }

    // ---- inputs ----

    /// A worker registers; returns the id it is known by from now on.
    pub fn handle_register(&mut self, info: WorkerInfo, now: Duration) -> WorkerId {
        let id = self.reserve_worker_id();
        self.handle_register_reserved(id, info, now);
        id
    }

    /// Takes the next worker id without registering anyone yet (for a
    /// transport that names the worker before its handshake completes; see
    /// [`handle_register_reserved`](Self::handle_register_reserved)). An id
    /// reserved and never registered is simply skipped.
    pub fn reserve_worker_id(&mut self) -> WorkerId {
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        id
    }

    /// A worker registers under an id from [`reserve_worker_id`](Self::reserve_worker_id).
    ///
    /// # Panics
    /// If `id` was not reserved or is already registered.
    pub fn handle_register_reserved(&mut self, id: WorkerId, info: WorkerInfo, now: Duration) {
        assert!(
            id.0 < self.next_worker && !self.workers.contains_key(&id),
            "worker id {id} was not reserved, or is registered already"
        );
        self.workers.insert(
            id,
            WorkerStatus {
                id,
                info,
                registered_at: now,
                last_heartbeat: now,
                job: None,
            },
        );
        self.place();
    }

    /// A worker's heartbeat. `false`: the worker is unknown (never
    /// registered, or declared dead): it must register again.
    pub fn handle_heartbeat(&mut self, worker: WorkerId, now: Duration) -> bool {
        match self.workers.get_mut(&worker) {
            Some(status) => {
                status.last_heartbeat = status.last_heartbeat.max(now);
                true
            }
            None => false,
        }
    }

    /// A worker leaves cleanly (SIGTERM): like a death, without waiting
    /// for the timeout.
    pub fn handle_leave(&mut self, worker: WorkerId) {
        if self.workers.contains_key(&worker) {
            self.remove_worker(worker);
            self.place();
        }
    }

    /// Declares dead every worker whose last heartbeat is at least the
    /// timeout old at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        let timeout = self.config.heartbeat_timeout;
        let dead: Vec<WorkerId> = self
            .workers
            .values()
            .filter(|status| now.saturating_sub(status.last_heartbeat) >= timeout)
            .map(|status| status.id)
            .collect();
        if dead.is_empty() {
            return;
        }
        for worker in dead {
            self.remove_worker(worker);
            self.actions.push_back(Action::WorkerDead { worker });
        }
        self.place();
    }

    // ---- commands ----

    /// Adds a job to the queue (a new job, or an unfinished one found in
    /// the store by a restarted coordinator). Jobs are placed in id order.
    ///
    /// # Panics
    /// If the job is already known, or its demand is impossible (`min` of
    /// 0, `max < min`, `max > virtual_ranks`): the spec's validation rules
    /// those out.
    pub fn submit(&mut self, job: JobId, demand: Demand) {
        assert!(
            demand.min_workers >= 1
                && demand.min_workers <= demand.max_workers
                && demand.max_workers <= demand.virtual_ranks,
            "job {job}: impossible demand {demand:?} (the spec validation should refuse it)"
        );
        let previous = self.jobs.insert(
            job,
            JobEntry {
                demand,
                state: JobState::Queued,
                members: Vec::new(),
                replicas: Vec::new(),
                generation: 0,
            },
        );
        assert!(previous.is_none(), "job {job} submitted twice");
        self.place();
    }

    /// Ends a job: its workers are released and its final state is
    /// persisted. Returns `false` if the scheduler does not know the job
    /// (already ended).
    pub fn finish(&mut self, job: JobId, outcome: Outcome) -> bool {
        let Some(entry) = self.jobs.remove(&job) else {
            return false;
        };
        for worker in &entry.members {
            if let Some(status) = self.workers.get_mut(worker) {
                status.job = None;
            }
        }
        if !entry.members.is_empty() {
            self.actions.push_back(Action::Release {
                job,
                workers: entry.members.clone(),
            });
        }
        let (state, reason) = match outcome {
            Outcome::Completed => (JobState::Completed, "reached its last step".to_string()),
            Outcome::Failed(error) => (JobState::Failed, error),
            Outcome::Cancelled => (JobState::Cancelled, "cancelled".to_string()),
        };
        self.actions
            .push_back(Action::SetJobState { job, state, reason });
        self.place();
        true
    }

    // ---- outputs ----

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called:
    /// the earliest time a worker may be declared dead.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.workers
            .values()
            .map(|status| status.last_heartbeat + self.config.heartbeat_timeout)
            .min()
    }

    // ---- internals ----

    fn remove_worker(&mut self, worker: WorkerId) {
        let status = self
            .workers
            .remove(&worker)
            .expect("remove_worker is called for live workers");
        let Some(job) = status.job else {
            return;
        };
        let entry = self
            .jobs
            .get_mut(&job)
            .expect("a worker's job is an unfinished job");
        entry.members.retain(|member| *member != worker);
        entry.replicas.retain(|member| *member != worker);
        entry.generation += 1;
        if entry.members.len() as u32 >= entry.demand.min_workers {
            let ring = ring_of(job, entry);
            self.actions.push_back(Action::FormRing {
                ring,
                change: RingChange::WorkerLost(worker),
            });
        } else {
            if entry.state != JobState::WaitingForWorkers {
                entry.state = JobState::WaitingForWorkers;
                self.actions.push_back(Action::SetJobState {
                    job,
                    state: JobState::WaitingForWorkers,
                    reason: format!(
                        "worker {worker} lost: {} of min {} workers left",
                        entry.members.len(),
                        entry.demand.min_workers
                    ),
                });
            }
            if !entry.members.is_empty() {
                self.actions.push_back(Action::Hold {
                    job,
                    workers: entry.members.clone(),
                });
            }
        }
    }

    fn free_workers(&self) -> Vec<WorkerId> {
        self.workers
            .values()
            .filter(|status| status.job.is_none())
            .map(|status| status.id)
            .collect()
    }

    fn place(&mut self) {
        let mut free: VecDeque<WorkerId> = self.free_workers().into();
        if free.is_empty() {
            return;
        }
        let ids: Vec<JobId> = self.jobs.keys().copied().collect();

        // 1. jobs waiting for workers
        for &job in &ids {
            if free.is_empty() {
                return;
            }
            let entry = &self.jobs[&job];
            if entry.state != JobState::WaitingForWorkers {
                continue;
            }
            let room = entry.demand.max_workers as usize - entry.members.len();
            let joining: Vec<WorkerId> = free.drain(..room.min(free.len())).collect();
            if entry.members.len() + joining.len() >= entry.demand.min_workers as usize {
                self.grow(job, &joining, JobState::WaitingForWorkers);
            } else {
                // Still too few: the newcomers are reserved for this job
                // and wait with its survivors.
                for worker in &joining {
                    self.workers
                        .get_mut(worker)
                        .expect("free workers are live")
                        .job = Some(job);
                }
                let entry = self.jobs.get_mut(&job).expect("placed jobs exist");
                entry.members.extend_from_slice(&joining);
                self.actions.push_back(Action::Hold {
                    job,
                    workers: entry.members.clone(),
                });
            }
        }

        // 2. queued jobs, in order, no overtaking
        let mut queue_blocked = false;
        for &job in &ids {
            if self.jobs[&job].state != JobState::Queued {
                continue;
            }
            let demand = self.jobs[&job].demand;
            if free.len() < demand.min_workers as usize {
                queue_blocked = true;
                break;
            }
            let take = (demand.max_workers as usize).min(free.len());
            let joining: Vec<WorkerId> = free.drain(..take).collect();
            self.grow(job, &joining, JobState::Queued);
        }

        // 3. running jobs below their max
        if queue_blocked {
            return;
        }
        for &job in &ids {
            if free.is_empty() {
                return;
            }
            let entry = &self.jobs[&job];
            if entry.state != JobState::Running {
                continue;
            }
            let room = (entry.demand.max_workers as usize).saturating_sub(entry.members.len());
            if room == 0 {
                continue;
            }
            let joining: Vec<WorkerId> = free.drain(..room.min(free.len())).collect();
            self.grow(job, &joining, JobState::Running);
        }
    }

    /// Adds `joining` to job `job`'s ring and emits the actions.
    fn grow(&mut self, job: JobId, joining: &[WorkerId], from: JobState) {
        for worker in joining {
            self.workers
                .get_mut(worker)
                .expect("free workers are live")
                .job = Some(job);
        }
        let entry = self.jobs.get_mut(&job).expect("placed jobs exist");
        entry.members.extend_from_slice(joining);
        entry.generation += 1;
        let change = match from {
            JobState::Queued => RingChange::Start,
            _ if entry.replicas.is_empty() => RingChange::Start,
            _ => RingChange::WorkerJoined(joining[0]),
        };
        if from != JobState::Running {
            entry.state = JobState::Running;
            let reason = match from {
                JobState::Queued => format!("started on {}", names(&entry.members)),
                _ => format!("resumed on {}", names(&entry.members)),
            };
            self.actions.push_back(Action::SetJobState {
                job,
                state: JobState::Running,
                reason,
            });
        }
        let ring = ring_of(job, entry);
        // From now on every member holds the replica once the ring formed.
        entry.replicas = entry.members.clone();
        self.actions.push_back(Action::FormRing { ring, change });
    }
}

fn names(workers: &[WorkerId]) -> String {
    let names: Vec<String> = workers.iter().map(WorkerId::to_string).collect();
    names.join(", ")
}

fn ring_of(job: JobId, entry: &JobEntry) -> Ring {
    let count = entry.members.len() as u64;
    let ranks = u64::from(entry.demand.virtual_ranks);
    let members = entry
        .members
        .iter()
        .enumerate()
        .map(|(index, worker)| {
            let index = index as u64;
            RingMember {
                worker: *worker,
                virtual_ranks: (index * ranks / count) as u32..((index + 1) * ranks / count) as u32,
            }
        })
        .collect();
    Ring {
        job,
        generation: entry.generation,
        members,
        state_from: entry.replicas.first().copied(),
    }
}

/// The virtual ranks each of `workers` workers hosts out of `virtual_ranks`
/// (contiguous, sizes differing by at most one, in order).
pub fn rank_ranges(workers: u32, virtual_ranks: u32) -> Vec<Range<u32>> {
    let (workers, ranks) = (u64::from(workers), u64::from(virtual_ranks));
    (0..workers)
        .map(|index| (index * ranks / workers) as u32..((index + 1) * ranks / workers) as u32)
        .collect()
}
