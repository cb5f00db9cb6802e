//! The scheduler as a pure state machine, driven with a simulated clock:
//! placement, disjoint rings, deaths, waiting below `min`, joins up to
//! `max`, cancellation and virtual-rank re-mapping.
use std::time::Duration;

use coordinator::messages::ring_membership;
use coordinator::scheduler::{
    Action, Demand, Outcome, RingChange, Scheduler, SchedulerConfig, WorkerInfo, rank_ranges,
};
use coordinator::{JobId, JobState, WorkerId};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A scheduler with a simulated clock.
struct Simulation {
    scheduler: Scheduler,
    now: Duration,
}

impl Simulation {
    fn new() -> Simulation {
        Simulation {
            scheduler: Scheduler::new(SchedulerConfig {
                heartbeat_timeout: TIMEOUT,
            }),
            now: Duration::ZERO,
        }
    }

    fn register(&mut self) -> WorkerId {
        let address = format!("10.0.0.{}:7000", self.scheduler.workers().count() + 1);
        self.scheduler.handle_register(
            WorkerInfo {
                fingerprint: format!("{:064x}", self.scheduler.workers().count() + 1),
                address,
                threads: 2,
                ..WorkerInfo::default()
            },
            self.now,
        )
    }

    /// Advances the clock, with a heartbeat from `alive` every second, and
    /// lets the scheduler declare the silent workers dead when due.
    fn run_for(&mut self, duration: Duration, alive: &[WorkerId]) {
        let end = self.now + duration;
        while self.now < end {
            self.now = (self.now + Duration::from_secs(1)).min(end);
            for worker in alive {
                assert!(self.scheduler.handle_heartbeat(*worker, self.now));
            }
            if self
                .scheduler
                .poll_timeout()
                .is_some_and(|at| at <= self.now)
            {
                self.scheduler.handle_timeout(self.now);
            }
        }
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.scheduler.poll_action()).collect()
    }

    /// The actions, each written in one short line.
    fn summary(&mut self) -> Vec<String> {
        self.actions().iter().map(describe).collect()
    }
}

fn describe(action: &Action) -> String {
    match action {
        Action::SetJobState { job, state, .. } => format!("job {job} {state}"),
        Action::FormRing { ring, change } => {
            let members: Vec<String> = ring
                .members
                .iter()
                .map(|member| {
                    format!(
                        "{}[{}..{}]",
                        member.worker, member.virtual_ranks.start, member.virtual_ranks.end
                    )
                })
                .collect();
            let change = match change {
                RingChange::Start => "start".to_string(),
                RingChange::WorkerLost(worker) => format!("lost {worker}"),
                RingChange::WorkerJoined(worker) => format!("joined {worker}"),
            };
            let from = ring
                .state_from
                .map_or_else(|| "checkpoint".to_string(), |worker| worker.to_string());
            format!(
                "ring {} gen {} ({change}, state from {from}): {}",
                ring.job,
                ring.generation,
                members.join(" ")
            )
        }
        Action::Hold { job, workers } => format!("hold {job}: {workers:?}"),
        Action::Release { job, workers } => format!("release {job}: {workers:?}"),
        Action::WorkerDead { worker } => format!("dead {worker}"),
    }
}

fn demand(min: u32, max: u32, virtual_ranks: u32) -> Demand {
    Demand {
        min_workers: min,
        max_workers: max,
        virtual_ranks,
    }
}

#[track_caller]
fn check(actual: Vec<String>, expected: &[&str]) {
    assert_eq!(actual, expected, "\nactual:\n{}", actual.join("\n"));
}

#[test]
fn rank_ranges_are_contiguous_and_balanced() {
    #[track_caller]
    fn check_ranges(workers: u32, ranks: u32, expected: &[(u32, u32)]) {
        let ranges: Vec<(u32, u32)> = rank_ranges(workers, ranks)
            .into_iter()
            .map(|range| (range.start, range.end))
            .collect();
        assert_eq!(ranges, expected, "{workers} workers, {ranks} ranks");
    }
    check_ranges(1, 8, &[(0, 8)]);
    check_ranges(2, 8, &[(0, 4), (4, 8)]);
    check_ranges(3, 8, &[(0, 2), (2, 5), (5, 8)]);
    check_ranges(
        8,
        8,
        &[
            (0, 1),
            (1, 2),
            (2, 3),
            (3, 4),
            (4, 5),
            (5, 6),
            (6, 7),
            (7, 8),
        ],
    );
    check_ranges(3, 3, &[(0, 1), (1, 2), (2, 3)]);
    for workers in 1..=16 {
        for ranks in workers..=40 {
            let ranges = rank_ranges(workers, ranks);
            assert_eq!(ranges.first().unwrap().start, 0);
            assert_eq!(ranges.last().unwrap().end, ranks);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
            }
            let sizes: Vec<u32> = ranges.iter().map(|range| range.len() as u32).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            assert!(sizes.iter().all(|size| *size >= 1));
        }
    }
}

#[test]
fn a_job_queues_until_min_workers_are_free() {
    let mut sim = Simulation::new();
    sim.scheduler.submit(JobId(1), demand(2, 4, 8));
    check(sim.summary(), &[]);
    assert_eq!(sim.scheduler.job_state(JobId(1)), Some(JobState::Queued));
    let w1 = sim.register();
    check(sim.summary(), &[]);
    let w2 = sim.register();
    check(
        sim.summary(),
        &[
            "job 1 running",
            "ring 1 gen 1 (start, state from checkpoint): w1[0..4] w2[4..8]",
        ],
    );
    assert_eq!(sim.scheduler.worker(w1).unwrap().job, Some(JobId(1)));
    assert_eq!(sim.scheduler.ring(JobId(1)).unwrap().workers(), [w1, w2]);
    // A third worker grows the ring up to max.
    sim.register();
    check(
        sim.summary(),
        &["ring 1 gen 2 (joined w3, state from w1): w1[0..2] w2[2..5] w3[5..8]"],
    );
    sim.register();
    check(
        sim.summary(),
        &["ring 1 gen 3 (joined w4, state from w1): w1[0..2] w2[2..4] w3[4..6] w4[6..8]"],
    );
    // Past max, workers stay free.
    let w5 = sim.register();
    check(sim.summary(), &[]);
    assert_eq!(sim.scheduler.worker(w5).unwrap().job, None);
}

#[test]
fn several_jobs_run_on_disjoint_workers_in_submission_order() {
    let mut sim = Simulation::new();
    for _ in 0..3 {
        sim.register();
    }
    sim.scheduler.submit(JobId(1), demand(1, 2, 4));
    sim.scheduler.submit(JobId(2), demand(2, 2, 2));
    sim.scheduler.submit(JobId(3), demand(1, 1, 1));
    check(
        sim.summary(),
        &[
            "job 1 running",
            "ring 1 gen 1 (start, state from checkpoint): w1[0..2] w2[2..4]",
        ],
    );
    // Job 2 needs two; one is free; job 3 would fit but does not overtake.
    assert_eq!(sim.scheduler.job_state(JobId(2)), Some(JobState::Queued));
    assert_eq!(sim.scheduler.job_state(JobId(3)), Some(JobState::Queued));
    sim.register();
    check(
        sim.summary(),
        &[
            "job 2 running",
            "ring 2 gen 1 (start, state from checkpoint): w3[0..1] w4[1..2]",
        ],
    );
    // Job 1 completes: its workers go to job 3, then one stays free (job 2
    // is at its max, job 1 is gone).
    assert!(sim.scheduler.finish(JobId(1), Outcome::Completed));
    check(
        sim.summary(),
        &[
            "release 1: [WorkerId(1), WorkerId(2)]",
            "job 1 completed",
            "job 3 running",
            "ring 3 gen 1 (start, state from checkpoint): w1[0..1]",
        ],
    );
    assert!(!sim.scheduler.finish(JobId(1), Outcome::Completed));
    let members: Vec<Vec<WorkerId>> = [2, 3]
        .iter()
        .map(|job| sim.scheduler.ring(JobId(*job)).unwrap().workers())
        .collect();
    assert!(members[0].iter().all(|worker| !members[1].contains(worker)));
}

#[test]
fn a_dead_worker_is_detected_and_the_ring_reforms_with_the_survivors() {
    let mut sim = Simulation::new();
    let workers: Vec<WorkerId> = (0..3).map(|_| sim.register()).collect();
    sim.scheduler.submit(JobId(1), demand(2, 3, 8));
    check(
        sim.summary(),
        &[
            "job 1 running",
            "ring 1 gen 1 (start, state from checkpoint): w1[0..2] w2[2..5] w3[5..8]",
        ],
    );
    // w2 goes silent; nothing happens before the timeout...
    let survivors = [workers[0], workers[2]];
    sim.run_for(TIMEOUT - Duration::from_secs(1), &survivors);
    check(sim.summary(), &[]);
    assert!(sim.scheduler.worker(workers[1]).is_some());
    // ...and it is declared dead exactly at the timeout.
    sim.run_for(Duration::from_secs(1), &survivors);
    check(
        sim.summary(),
        &[
            "ring 1 gen 2 (lost w2, state from w1): w1[0..4] w3[4..8]",
            "dead w2",
        ],
    );
    assert_eq!(sim.scheduler.job_state(JobId(1)), Some(JobState::Running));
    // A heartbeat from the dead worker is refused: it must register again.
    assert!(!sim.scheduler.handle_heartbeat(workers[1], sim.now));
    // It comes back as a new worker and rejoins up to max.
    let again = sim.register();
    check(
        sim.summary(),
        &["ring 1 gen 3 (joined w4, state from w1): w1[0..2] w3[2..5] w4[5..8]"],
    );
    assert_ne!(again, workers[1]);
}

#[test]
fn below_min_the_job_waits_then_resumes() {
    let mut sim = Simulation::new();
    let w1 = sim.register();
    let w2 = sim.register();
    sim.scheduler.submit(JobId(1), demand(2, 2, 4));
    sim.actions();
    sim.scheduler.handle_leave(w2);
    check(
        sim.summary(),
        &["job 1 waiting_for_workers", "hold 1: [WorkerId(1)]"],
    );
    assert_eq!(
        sim.scheduler.job_state(JobId(1)),
        Some(JobState::WaitingForWorkers)
    );
    // The survivor keeps the replica: the job resumes from it.
    sim.run_for(Duration::from_secs(30), &[w1]);
    check(sim.summary(), &[]);
    sim.register();
    check(
        sim.summary(),
        &[
            "job 1 running",
            "ring 1 gen 3 (joined w3, state from w1): w1[0..2] w3[2..4]",
        ],
    );
}

#[test]
fn a_job_that_loses_every_worker_restarts_from_its_checkpoint() {
    let mut sim = Simulation::new();
    let w1 = sim.register();
    sim.scheduler.submit(JobId(1), demand(1, 1, 2));
    sim.actions();
    sim.run_for(TIMEOUT, &[]);
    check(sim.summary(), &["job 1 waiting_for_workers", "dead w1"]);
    assert!(sim.scheduler.worker(w1).is_none());
    sim.register();
    check(
        sim.summary(),
        &[
            "job 1 running",
            "ring 1 gen 3 (start, state from checkpoint): w2[0..2]",
        ],
    );
}

#[test]
fn waiting_jobs_get_free_workers_before_queued_ones() {
    let mut sim = Simulation::new();
    let w1 = sim.register();
    let w2 = sim.register();
    let w3 = sim.register();
    sim.scheduler.submit(JobId(1), demand(3, 3, 3));
    sim.actions();
    sim.scheduler.submit(JobId(2), demand(1, 1, 1));
    check(sim.summary(), &[]);
    // Two of job 1's workers die: the job waits with its survivor.
    sim.run_for(TIMEOUT, &[w1]);
    check(
        sim.summary(),
        &[
            "job 1 waiting_for_workers",
            "hold 1: [WorkerId(1), WorkerId(3)]",
            "dead w2",
            "hold 1: [WorkerId(1)]",
            "dead w3",
        ],
    );
    assert!(sim.scheduler.worker(w2).is_none() && sim.scheduler.worker(w3).is_none());
    // A new worker is reserved for job 1 (still below min), not given to job 2.
    sim.register();
    check(sim.summary(), &["hold 1: [WorkerId(1), WorkerId(4)]"]);
    assert_eq!(sim.scheduler.job_state(JobId(2)), Some(JobState::Queued));
    sim.register();
    check(
        sim.summary(),
        &[
            "job 1 running",
            "ring 1 gen 4 (joined w5, state from w1): w1[0..1] w4[1..2] w5[2..3]",
        ],
    );
    sim.register();
    check(
        sim.summary(),
        &[
            "job 2 running",
            "ring 2 gen 1 (start, state from checkpoint): w6[0..1]",
        ],
    );
}

#[test]
fn cancelling_and_failing_release_the_workers() {
    let mut sim = Simulation::new();
    sim.register();
    sim.register();
    sim.scheduler.submit(JobId(1), demand(2, 2, 2));
    sim.scheduler.submit(JobId(2), demand(2, 2, 2));
    sim.scheduler.submit(JobId(3), demand(1, 1, 1));
    sim.actions();
    // Cancelling a queued job: no worker to release.
    assert!(sim.scheduler.finish(JobId(2), Outcome::Cancelled));
    check(sim.summary(), &["job 2 cancelled"]);
    assert!(sim.scheduler.finish(
        JobId(1),
        Outcome::Failed("data/x.parquet: not a Parquet file".into())
    ));
    let actions = sim.actions();
    check(
        actions.iter().map(describe).collect(),
        &[
            "release 1: [WorkerId(1), WorkerId(2)]",
            "job 1 failed",
            "job 3 running",
            "ring 3 gen 1 (start, state from checkpoint): w1[0..1]",
        ],
    );
    assert!(matches!(
        &actions[1],
        Action::SetJobState { reason, .. } if reason == "data/x.parquet: not a Parquet file"
    ));
    assert_eq!(sim.scheduler.job_state(JobId(1)), None);
    assert_eq!(sim.scheduler.worker(WorkerId(2)).unwrap().job, None);
}

#[test]
fn heartbeats_push_the_deadline_and_poll_timeout_reports_it() {
    let mut sim = Simulation::new();
    assert_eq!(sim.scheduler.poll_timeout(), None);
    let w1 = sim.register();
    assert_eq!(sim.scheduler.poll_timeout(), Some(TIMEOUT));
    sim.now = Duration::from_secs(4);
    sim.scheduler.handle_heartbeat(w1, sim.now);
    assert_eq!(
        sim.scheduler.poll_timeout(),
        Some(TIMEOUT + Duration::from_secs(4))
    );
    // A heartbeat stamped earlier (reordered) never moves the deadline back.
    sim.scheduler.handle_heartbeat(w1, Duration::from_secs(1));
    assert_eq!(
        sim.scheduler.poll_timeout(),
        Some(TIMEOUT + Duration::from_secs(4))
    );
    sim.scheduler
        .handle_timeout(TIMEOUT + Duration::from_secs(3));
    assert!(sim.scheduler.worker(w1).is_some());
    sim.scheduler
        .handle_timeout(TIMEOUT + Duration::from_secs(4));
    assert!(sim.scheduler.worker(w1).is_none());
    check(sim.summary(), &["dead w1"]);
    assert!(!sim.scheduler.handle_heartbeat(WorkerId(77), sim.now));
    sim.scheduler.handle_leave(WorkerId(77));
    check(sim.summary(), &[]);
}

#[test]
fn a_long_random_run_keeps_the_invariants() {
    // Workers come and go at random; after every event: rings are disjoint,
    // every member is live and hosts a contiguous, complete split of V, and
    // running jobs have between min and max members.
    let mut sim = Simulation::new();
    let mut state = 0x2545f4914f6cdd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut jobs = 0u64;
    let mut alive: Vec<WorkerId> = Vec::new();
    for _ in 0..2000 {
        match next() % 6 {
            0 | 1 => alive.push(sim.register()),
            2 if !alive.is_empty() => {
                let index = (next() % alive.len() as u64) as usize;
                sim.scheduler.handle_leave(alive.remove(index));
            }
            3 => {
                jobs += 1;
                let ranks = 1 + (next() % 8) as u32;
                let min = 1 + (next() % u64::from(ranks)) as u32;
                let max = min + (next() % u64::from(ranks - min + 1)) as u32;
                sim.scheduler.submit(JobId(jobs), demand(min, max, ranks));
            }
            4 if jobs > 0 => {
                let job = JobId(1 + next() % jobs);
                sim.scheduler.finish(job, Outcome::Completed);
            }
            _ => {
                // a silent worker
                if let Some(silent) = alive.pop() {
                    let keep = alive.clone();
                    sim.run_for(TIMEOUT, &keep);
                    assert!(sim.scheduler.worker(silent).is_none());
                }
            }
        }
        sim.actions();
        let mut seen = std::collections::BTreeSet::new();
        for job in 1..=jobs {
            let Some(ring) = sim.scheduler.ring(JobId(job)) else {
                continue;
            };
            let state = sim.scheduler.job_state(JobId(job)).unwrap();
            for member in &ring.members {
                assert!(seen.insert(member.worker), "{} in two rings", member.worker);
                assert_eq!(
                    sim.scheduler.worker(member.worker).unwrap().job,
                    Some(JobId(job))
                );
            }
            if state == JobState::Running {
                let ranges: Vec<_> = ring
                    .members
                    .iter()
                    .map(|m| m.virtual_ranks.clone())
                    .collect();
                assert_eq!(
                    ranges,
                    rank_ranges(ranges.len() as u32, ranges.last().unwrap().end)
                );
                assert!(!ranges.is_empty());
            }
            if state == JobState::Queued {
                assert!(ring.members.is_empty());
            }
        }
        assert_eq!(sim.scheduler.workers().count(), alive.len());
    }
}

#[test]
fn reserved_ids_and_ring_membership_messages() {
    let mut sim = Simulation::new();
    let w1 = sim.register();
    // A transport names the worker before its handshake completes.
    let reserved = sim.scheduler.reserve_worker_id();
    let skipped = sim.scheduler.reserve_worker_id();
    assert_eq!((reserved, skipped), (WorkerId(2), WorkerId(3)));
    assert_eq!(sim.register(), WorkerId(4));
    sim.scheduler.handle_register_reserved(
        reserved,
        WorkerInfo {
            address: "10.0.0.9:7000".to_string(),
            ..WorkerInfo::default()
        },
        sim.now,
    );
    sim.scheduler.submit(JobId(5), demand(2, 3, 7));
    sim.actions();
    let ring = sim.scheduler.ring(JobId(5)).unwrap();
    assert_eq!(ring.workers(), [w1, reserved, WorkerId(4)]);
    sim.scheduler.handle_leave(WorkerId(4));
    let Some(Action::FormRing { ring, .. }) = sim.scheduler.poll_action() else {
        panic!("the ring re-forms");
    };
    let lookup = |worker| {
        sim.scheduler
            .worker(worker)
            .map(|status| status.info.clone())
    };
    let message = ring_membership(&ring, 42, lookup).unwrap();
    assert_eq!(message.job_id, 5);
    assert_eq!(message.generation, 2);
    assert_eq!(message.virtual_ranks, 7);
    assert_eq!(message.start_step, 42);
    assert_eq!(message.state_source, Some(0));
    let members: Vec<(u64, &str, u32, u32)> = message
        .members
        .iter()
        .map(|m| {
            (
                m.worker_id,
                m.address.as_str(),
                m.first_virtual_rank,
                m.virtual_rank_count,
            )
        })
        .collect();
    assert_eq!(
        members,
        [(1, "10.0.0.1:7000", 0, 3), (2, "10.0.0.9:7000", 3, 4)]
    );
    assert_eq!(message.members[0].fingerprint, format!("{:064x}", 1));
    // A member that is gone makes the message unbuildable (a newer ring follows).
    assert!(ring_membership(&ring, 42, |_| None).is_none());
}

#[test]
#[should_panic(expected = "was not reserved")]
fn registering_an_unreserved_id_is_a_programming_error() {
    let mut sim = Simulation::new();
    sim.scheduler
        .handle_register_reserved(WorkerId(9), WorkerInfo::default(), sim.now);
}
