//! The SQLite job store: jobs, transitions, metrics and checkpoints, and
//! that all of it survives closing and reopening the file.
use std::collections::BTreeMap;

use coordinator::store::CheckpointRecord;
use coordinator::{CoordinatorError, JobId, JobSpec, JobState, JobStore};

fn spec(name: &str) -> JobSpec {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/jobs/mlp.toml"),
    )
    .unwrap();
    let mut spec = JobSpec::from_toml(&text).unwrap();
    spec.name = Some(name.to_string());
    spec
}

fn values(loss: f64) -> BTreeMap<String, f64> {
    BTreeMap::from([("loss".to_string(), loss), ("lr".to_string(), 0.001)])
}

fn checkpoint(step: u64) -> CheckpointRecord {
    CheckpointRecord {
        step,
        path: format!("/data/jobs/1/step-{step}.safetensors"),
        sha256: format!("{step:064x}"),
        bytes: 1000 + step,
        at_ms: 5000 + step as i64,
    }
}

#[test]
fn a_job_lives_and_survives_reopening() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("jobs.sqlite");
    let (first, second);
    {
        let mut store = JobStore::open(&path).unwrap();
        first = store.insert_job(&spec("first"), 100).unwrap();
        second = store.insert_job(&spec("second"), 200).unwrap();
        assert_eq!((first, second), (JobId(1), JobId(2)));
        store
            .set_state(first, JobState::Running, "assigned to w1", None, 300)
            .unwrap();
        store.record_metrics(first, 1, &values(2.0), 310).unwrap();
        store.record_metrics(first, 2, &values(1.5), 320).unwrap();
        // A step reported again after a re-formed ring replaces the first report.
        store.record_metrics(first, 2, &values(1.4), 321).unwrap();
        store.record_checkpoint(first, &checkpoint(2)).unwrap();
        store
            .set_state(first, JobState::WaitingForWorkers, "w1 died", None, 400)
            .unwrap();
    }
    let mut store = JobStore::open(&path).unwrap();
    let job = store.job(first).unwrap();
    assert_eq!(job.state, JobState::WaitingForWorkers);
    assert_eq!(job.spec, spec("first"));
    assert_eq!((job.created_at_ms, job.updated_at_ms), (100, 400));
    let transitions = store.transitions(first).unwrap();
    let summary: Vec<(Option<JobState>, JobState, &str, i64)> = transitions
        .iter()
        .map(|t| (t.from, t.to, t.reason.as_str(), t.at_ms))
        .collect();
    assert_eq!(
        summary,
        [
            (None, JobState::Queued, "submitted", 100),
            (
                Some(JobState::Queued),
                JobState::Running,
                "assigned to w1",
                300
            ),
            (
                Some(JobState::Running),
                JobState::WaitingForWorkers,
                "w1 died",
                400
            ),
        ]
    );
    let metrics = store.metrics(first).unwrap();
    assert_eq!(metrics.len(), 2);
    assert_eq!(metrics[1].values["loss"], 1.4);
    assert_eq!(store.last_step(first).unwrap(), Some(2));
    assert_eq!(store.last_step(second).unwrap(), None);
    assert_eq!(store.latest_checkpoint(first).unwrap(), Some(checkpoint(2)));
    assert_eq!(store.latest_checkpoint(second).unwrap(), None);

    let unfinished: Vec<JobId> = store
        .unfinished_jobs()
        .unwrap()
        .iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(unfinished, [first, second]);
    store
        .set_state(
            second,
            JobState::Cancelled,
            "cancelled by the API",
            None,
            500,
        )
        .unwrap();
    store
        .set_state(
            first,
            JobState::Failed,
            "dataset",
            Some("data.parquet: not a Parquet file"),
            600,
        )
        .unwrap();
    let counts = store.count_by_state().unwrap();
    assert_eq!(counts[&JobState::Failed], 1);
    assert_eq!(counts[&JobState::Cancelled], 1);
    assert_eq!(counts[&JobState::Queued], 0);
    assert_eq!(counts.len(), JobState::ALL.len());
    drop(store);

    let store = JobStore::open(&path).unwrap();
    assert!(store.unfinished_jobs().unwrap().is_empty());
    let job = store.job(first).unwrap();
    assert_eq!(
        job.error.as_deref(),
        Some("data.parquet: not a Parquet file")
    );
    assert_eq!(store.jobs().unwrap().len(), 2);
}

#[track_caller]
fn check_transition(path: &[JobState], to: JobState, allowed: bool) {
    let mut store = JobStore::open_in_memory().unwrap();
    let id = store.insert_job(&spec("t"), 0).unwrap();
    for (index, state) in path.iter().enumerate() {
        store
            .set_state(id, *state, "setup", None, index as i64)
            .unwrap();
    }
    let result = store.set_state(id, to, "test", None, 99);
    match (allowed, result) {
        (true, Ok(())) => assert_eq!(store.job(id).unwrap().state, to),
        (
            false,
            Err(CoordinatorError::InvalidTransition {
                from, to: refused, ..
            }),
        ) => {
            assert_eq!(refused, to);
            assert_eq!(Some(&from), path.last().or(Some(&JobState::Queued)));
        }
        (allowed, result) => panic!("{path:?} -> {to}: allowed {allowed}, got {result:?}"),
    }
}

#[test]
fn transitions_follow_the_state_machine() {
    use JobState::*;
    check_transition(&[], Running, true);
    check_transition(&[], Cancelled, true);
    check_transition(&[], Failed, true);
    check_transition(&[], Completed, false);
    check_transition(&[], WaitingForWorkers, false);
    check_transition(&[Running], Completed, true);
    check_transition(&[Running], WaitingForWorkers, true);
    check_transition(&[Running], Queued, true);
    check_transition(&[Running, WaitingForWorkers], Running, true);
    check_transition(&[Running, WaitingForWorkers], Completed, false);
    check_transition(&[Running, Completed], Cancelled, false);
    check_transition(&[Running, Completed], Running, false);
    check_transition(&[Cancelled], Running, false);
    check_transition(&[Failed], Queued, false);
    // Setting the same state again is not a transition and is not recorded.
    check_transition(&[Running], Running, true);
    let mut store = JobStore::open_in_memory().unwrap();
    let id = store.insert_job(&spec("t"), 0).unwrap();
    store.set_state(id, Queued, "again", None, 1).unwrap();
    assert_eq!(store.transitions(id).unwrap().len(), 1);
}

#[test]
fn unknown_jobs_are_errors_naming_the_id() {
    let mut store = JobStore::open_in_memory().unwrap();
    let unknown = JobId(42);
    let errors = [
        store.job(unknown).unwrap_err(),
        store.transitions(unknown).unwrap_err(),
        store.metrics(unknown).unwrap_err(),
        store.checkpoints(unknown).unwrap_err(),
        store
            .set_state(unknown, JobState::Running, "", None, 0)
            .unwrap_err(),
        store
            .record_metrics(unknown, 1, &values(1.0), 0)
            .unwrap_err(),
        store
            .record_checkpoint(unknown, &checkpoint(1))
            .unwrap_err(),
    ];
    for error in errors {
        assert!(
            matches!(error, CoordinatorError::UnknownJob { id } if id == unknown),
            "{error}"
        );
        assert_eq!(error.to_string(), "unknown job 42");
    }
}

#[test]
fn pruning_keeps_the_newest_checkpoints() {
    let mut store = JobStore::open_in_memory().unwrap();
    let id = store.insert_job(&spec("p"), 0).unwrap();
    for step in [10, 20, 30, 40] {
        store.record_checkpoint(id, &checkpoint(step)).unwrap();
    }
    let removed: Vec<u64> = store
        .prune_checkpoints(id, 3)
        .unwrap()
        .iter()
        .map(|c| c.step)
        .collect();
    assert_eq!(removed, [10]);
    let kept: Vec<u64> = store
        .checkpoints(id)
        .unwrap()
        .iter()
        .map(|c| c.step)
        .collect();
    assert_eq!(kept, [20, 30, 40]);
    assert!(store.prune_checkpoints(id, 3).unwrap().is_empty());
    assert_eq!(store.prune_checkpoints(id, 1).unwrap().len(), 2);
    assert_eq!(store.latest_checkpoint(id).unwrap().unwrap().step, 40);
}

#[test]
fn a_file_that_is_not_a_store_is_an_error() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("jobs.sqlite");
    std::fs::write(&path, b"this is not an SQLite database, not even close....").unwrap();
    let error = JobStore::open(&path).unwrap_err().to_string();
    assert!(error.starts_with("job store: "), "{error}");
}
