//! The distributed runtime with real processes: `shoal coordinator` and
//! `shoal worker`s on loopback. A job completes on two workers; a fourth
//! worker joins a running job and one is killed with SIGKILL; a job below
//! `min_workers` waits and resumes; a hung worker (SIGSTOP) is declared
//! dead and registers again when woken; a worker stopped with SIGTERM leaves
//! cleanly (exit status 0) and the job goes on without it; the coordinator is killed and restarted
//! mid-job. Every job's final checkpoint (downloaded from the coordinator)
//! has the SHA-256 of `shoal run --workers 1` of the same spec.
//!
//! Waits are bounded polls of the HTTP API with clear failure messages;
//! heartbeats time out after 1.5 s and collectives after 3 s so deaths are
//! noticed quickly.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use coordinator::JobId;
use coordinator::client::Client;
use coordinator::spec::SpecFormat;
use serde_json::Value;

mod common;

use common::{CoordinatorProcess, LIMIT, Process, runtime, shoal};

fn scratch(name: &str) -> PathBuf {
    common::scratch("distributed", name)
}

/// A coordinator whose heartbeats time out after 1.5 s, so deaths are
/// noticed quickly; `quic` is its worker address (`127.0.0.1:0` for any).
fn start_coordinator(data_dir: &Path, quic: &str) -> CoordinatorProcess {
    common::start_coordinator(
        data_dir,
        &["--quic-addr", quic, "--heartbeat-timeout-ms", "1500"],
    )
}

/// A worker whose collectives time out after 3 s.
fn start_worker(coordinator: &CoordinatorProcess, name: &str) -> Process {
    common::start_worker(coordinator, name, &["--collective-timeout-ms", "3000"])
}

fn client(coordinator: &CoordinatorProcess) -> Client {
    Client::new(&coordinator.http, Some(coordinator.api_token.clone())).unwrap()
}

/// Polls job `id` until `done` holds for it; panics with the last answer
/// after [`LIMIT`].
fn wait_for(
    coordinator: &CoordinatorProcess,
    id: u64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let client = client(coordinator);
    let runtime = runtime();
    let started = Instant::now();
    let mut last = Value::Null;
    while started.elapsed() < LIMIT {
        if let Ok(job) = runtime.block_on(client.job(JobId(id))) {
            if done(&job) {
                return job;
            }
            assert!(
                job["state"] != "failed" && job["state"] != "cancelled",
                "job {id} ended while waiting for {what}: {job:#}"
            );
            last = job;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("job {id}: no {what} after {LIMIT:?}; last answer: {last:#}");
}

fn last_step(job: &Value) -> i64 {
    job["last_step"].as_i64().unwrap_or(-1)
}

fn submit(coordinator: &CoordinatorProcess, spec: &str) -> u64 {
    let job = runtime()
        .block_on(client(coordinator).submit(spec, SpecFormat::Toml))
        .expect("the job is accepted");
    job["id"].as_u64().expect("a job id")
}

/// The job's final checkpoint as served by `GET /v1/jobs/{id}/checkpoint`,
/// hashed.
fn downloaded_checkpoint_sha256(coordinator: &CoordinatorProcess, id: u64) -> String {
    let bytes = runtime()
        .block_on(client(coordinator).checkpoint(JobId(id)))
        .expect("the checkpoint downloads");
    worker::single_node::sha256_hex(&bytes)
}

/// Generated digits and a job spec on them.
fn job_spec(directory: &Path, steps: u64, virtual_ranks: u32, workers: &str) -> String {
    let data = directory.join("digits.parquet");
    common::generate_digits(&data);
    format!(
        r#"
name = "distributed"
seed = 11
global_batch = 48
virtual_ranks = {virtual_ranks}
steps = {steps}
[model]
kind = "mlp"
config = {{ d_in = 64, d_hidden = 32, n_classes = 10 }}
[data]
paths = ["{}"]
columns = {{ x = "pixels", label = "label" }}
[inputs]
scale = 0.0625
[optimizer]
kind = "adamw"
lr = 1e-2
[checkpoint]
interval_steps = 10
keep = 2
[workers]
{workers}
"#,
        data.display()
    )
}

/// SHA-256 of the final checkpoint of `shoal run --workers 1`.
fn single_worker_sha256(directory: &Path, spec: &str) -> String {
    let path = directory.join("job.toml");
    std::fs::write(&path, spec).unwrap();
    let out = directory.join("single");
    let run = shoal()
        .args(["run"])
        .arg(&path)
        .args(["--workers", "1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    metrics["checkpoint_sha256"].as_str().unwrap().to_string()
}

/// A step in `range`, different from run to run (printed to reproduce).
fn random_step(range: std::ops::Range<i64>) -> i64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as i64;
    let step = range.start + nanos % (range.end - range.start);
    eprintln!("random step: {step}");
    step
}

fn completed(job: &Value) -> bool {
    job["state"] == "completed"
}

#[test]
fn two_worker_processes_train_a_job_to_the_single_worker_checkpoint() {
    let directory = scratch("two");
    let spec = job_spec(&directory, 12, 2, "min = 2");
    let expected = single_worker_sha256(&directory, &spec);
    let coordinator = start_coordinator(&directory.join("coordinator"), "127.0.0.1:0");
    let _workers = [
        start_worker(&coordinator, "a"),
        start_worker(&coordinator, "b"),
    ];

    // Columns that are not in the dataset: refused at submit, since the
    // coordinator can read the files' footers.
    let wrong_columns = spec.replace("x = \"pixels\"", "x = \"no_such_column\"");
    let refused = runtime()
        .block_on(client(&coordinator).submit(&wrong_columns, SpecFormat::Toml))
        .expect_err("a spec with unknown columns is refused")
        .to_string();
    assert!(
        refused.contains("400")
            && refused.contains("data.columns.x")
            && refused.contains("no_such_column"),
        "{refused}"
    );

    // A dataset nobody can read: the job fails with the dataset's error,
    // and the coordinator goes on with the next job.
    let unreadable = spec
        .replace(
            &directory.join("digits.parquet").display().to_string(),
            "/nonexistent/digits.parquet",
        )
        .replace("min = 2", "min = 1");
    let bad = submit(&coordinator, &unreadable);
    let failed = wait_for(&coordinator, bad, "the failure", |job| {
        job["state"] == "failed"
    });
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("/nonexistent/digits.parquet"), "{failed:#}");

    let id = submit(&coordinator, &spec);
    let job = wait_for(&coordinator, id, "completion", completed);
    assert_eq!(last_step(&job), 11, "{job:#}");
    assert_eq!(job["latest_checkpoint"]["step"], 12, "{job:#}");
    assert_eq!(downloaded_checkpoint_sha256(&coordinator, id), expected);
    // Retention: the final checkpoint and one before it.
    let kept = std::fs::read_dir(directory.join(format!("coordinator/checkpoints/job-{id}")))
        .unwrap()
        .count();
    assert_eq!(kept, 2, "keep = 2 checkpoints");
}

#[test]
fn a_joining_worker_and_a_killed_one_leave_the_checkpoint_unchanged() {
    let directory = scratch("elastic");
    let spec = job_spec(&directory, 1500, 4, "min = 2\nmax = 4");
    let expected = single_worker_sha256(&directory, &spec);
    let coordinator = start_coordinator(&directory.join("coordinator"), "127.0.0.1:0");
    let mut workers = vec![
        start_worker(&coordinator, "a"),
        start_worker(&coordinator, "b"),
        start_worker(&coordinator, "c"),
    ];
    let id = submit(&coordinator, &spec);
    let join_at = random_step(2..20);
    wait_for(&coordinator, id, "progress", |job| {
        last_step(job) >= join_at && job["workers"].as_array().map_or(0, Vec::len) == 3
    });
    workers.push(start_worker(&coordinator, "d"));
    let job = wait_for(&coordinator, id, "a fourth member", |job| {
        job["workers"].as_array().map_or(0, Vec::len) == 4 || completed(job)
    });
    assert!(
        !completed(&job),
        "the job ended before the fourth worker joined: {job:#}"
    );
    let kill_at = last_step(&job) + random_step(1..15);
    wait_for(&coordinator, id, "progress on four workers", |job| {
        last_step(job) >= kill_at
    });
    // Kill a member that is not the one reporting (any member works; this
    // one was in every ring).
    workers[1].kill();
    let job = wait_for(&coordinator, id, "completion", completed);
    // The coordinator's metrics count the rings: one for the joining
    // worker and one for the survivors of the kill.
    let address = coordinator.http.trim_start_matches("http://");
    let (status, metrics) = common::http_get(address, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{metrics}");
    let job_label = id.to_string();
    let rings = |reason: &str| {
        common::metric_value(
            &metrics,
            "shoal_ring_formations_total",
            &[("job_id", &job_label), ("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    assert!(rings("worker_joined") >= 1.0, "{metrics}");
    assert!(rings("worker_lost") >= 1.0, "{metrics}");
    let transitions = job["transitions"].to_string();
    assert_eq!(
        downloaded_checkpoint_sha256(&coordinator, id),
        expected,
        "{transitions}"
    );
}

/// Polls the coordinator's worker list until `done` holds for the names
/// of its registered workers; returns them. Panics after [`LIMIT`].
fn wait_for_workers(
    coordinator: &CoordinatorProcess,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let client = client(coordinator);
    let runtime = runtime();
    let started = Instant::now();
    loop {
        let listed = runtime
            .block_on(client.workers())
            .expect("list the workers");
        let names: Vec<String> = listed["workers"]
            .as_array()
            .expect("a list of workers")
            .iter()
            .filter_map(|worker| worker["name"].as_str().map(str::to_string))
            .collect();
        if done(&names) {
            return names;
        }
        assert!(
            started.elapsed() < LIMIT,
            "no {what} after {LIMIT:?}: {listed:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A coordinator and workers a, b and c training a 1500-step job
/// (`min = 2`), past a random step with all three in the ring; also the
/// job's id and the SHA-256 of the same job on one worker.
fn three_workers_mid_job(name: &str) -> (CoordinatorProcess, [Process; 3], u64, String) {
    let directory = scratch(name);
    let spec = job_spec(&directory, 1500, 3, "min = 2");
    let expected = single_worker_sha256(&directory, &spec);
    let coordinator = start_coordinator(&directory.join("coordinator"), "127.0.0.1:0");
    let workers = [
        start_worker(&coordinator, "a"),
        start_worker(&coordinator, "b"),
        start_worker(&coordinator, "c"),
    ];
    let id = submit(&coordinator, &spec);
    let at = random_step(2..30);
    let job = wait_for(&coordinator, id, "progress on three workers", |job| {
        (last_step(job) >= at && job["workers"].as_array().map_or(0, Vec::len) == 3)
            || completed(job)
    });
    assert!(
        !completed(&job),
        "the job ended before step {at}'s event: {job:#}"
    );
    (coordinator, workers, id, expected)
}

#[test]
fn a_worker_stopped_with_sigterm_leaves_cleanly_and_the_job_goes_on() {
    let (coordinator, mut workers, id, expected) = three_workers_mid_job("sigterm");
    let status = workers[2].terminate();
    assert!(
        status.success(),
        "a worker stopped by SIGTERM exits 0: {status}"
    );
    // The coordinator sees the leave (the connection closed in order) and
    // forgets the worker; the job carries on with the other two.
    let listed = wait_for(&coordinator, id, "the job on two workers", |job| {
        job["workers"].as_array().map_or(0, Vec::len) == 2 || completed(job)
    });
    let names = wait_for_workers(
        &coordinator,
        "deregistration of the stopped worker",
        |names| !names.iter().any(|name| name == "c"),
    );
    assert_eq!(names.len(), 2, "{names:?}");
    let job = wait_for(&coordinator, id, "completion", completed);
    let transitions = job["transitions"].to_string();
    assert!(
        !transitions.contains("failed"),
        "a clean leave fails nothing: {transitions}; {listed:#}"
    );
    assert_eq!(
        downloaded_checkpoint_sha256(&coordinator, id),
        expected,
        "{transitions}"
    );
}

#[test]
fn a_hung_worker_is_declared_dead_and_comes_back_as_a_new_member() {
    let (coordinator, workers, id, expected) = three_workers_mid_job("hung");
    // SIGSTOP: the process lives but answers nothing (a hang, a stuck
    // kernel, a partitioned host). Its heartbeats stop; the coordinator
    // declares it dead and the other two go on.
    workers[2].signal("STOP");
    let job = wait_for(&coordinator, id, "the job on the two others", |job| {
        job["workers"].as_array().map_or(0, Vec::len) == 2 || completed(job)
    });
    let progress = last_step(&job);
    wait_for(
        &coordinator,
        id,
        "progress without the hung worker",
        |job| last_step(job) > progress || completed(job),
    );
    // Woken up, it finds its ring gone and registers again; the job ends
    // with the checkpoint of an uninterrupted run either way.
    workers[2].signal("CONT");
    let job = wait_for(&coordinator, id, "completion", completed);
    let transitions = job["transitions"].to_string();
    assert_eq!(
        downloaded_checkpoint_sha256(&coordinator, id),
        expected,
        "{transitions}"
    );
    wait_for_workers(&coordinator, "the woken worker registered again", |names| {
        names.iter().any(|name| name == "c")
    });
}

#[test]
fn a_job_below_min_workers_waits_then_resumes() {
    let directory = scratch("hold");
    let spec = job_spec(&directory, 1500, 2, "min = 2");
    let expected = single_worker_sha256(&directory, &spec);
    let coordinator = start_coordinator(&directory.join("coordinator"), "127.0.0.1:0");
    let mut workers = vec![
        start_worker(&coordinator, "a"),
        start_worker(&coordinator, "b"),
    ];
    let id = submit(&coordinator, &spec);
    let kill_at = random_step(2..30);
    wait_for(&coordinator, id, "progress", |job| {
        last_step(job) >= kill_at
    });
    workers[0].kill();
    let waiting = wait_for(&coordinator, id, "the waiting state", |job| {
        job["state"] == "waiting_for_workers" || completed(job)
    });
    assert_eq!(waiting["state"], "waiting_for_workers", "{waiting:#}");
    workers.push(start_worker(&coordinator, "c"));
    wait_for(&coordinator, id, "completion", completed);
    assert_eq!(downloaded_checkpoint_sha256(&coordinator, id), expected);
}

#[test]
fn a_job_survives_a_coordinator_restart() {
    let directory = scratch("restart");
    let spec = job_spec(&directory, 1500, 2, "min = 2");
    let expected = single_worker_sha256(&directory, &spec);
    let data_dir = directory.join("coordinator");
    let mut coordinator = start_coordinator(&data_dir, "127.0.0.1:0");
    let _workers = [
        start_worker(&coordinator, "a"),
        start_worker(&coordinator, "b"),
    ];
    let id = submit(&coordinator, &spec);
    let kill_at = random_step(12..40);
    wait_for(&coordinator, id, "progress", |job| {
        last_step(job) >= kill_at
    });
    coordinator.process.kill();
    let quic = coordinator.quic.clone();
    coordinator = start_coordinator(&data_dir, &quic);
    let job = wait_for(&coordinator, id, "completion", completed);
    let transitions = job["transitions"].to_string();
    assert!(
        transitions.contains("coordinator restarted"),
        "{transitions}"
    );
    assert_eq!(downloaded_checkpoint_sha256(&coordinator, id), expected);
}
