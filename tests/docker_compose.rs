//! The docker compose cluster from the user's side: builds the images with
//! `deploy/docker/build-images.sh` (no registry: `FROM scratch` and a static
//! binary), generates a dataset into the shared volume, starts the
//! coordinator and three workers with `docker-compose.yml`, submits a job
//! with `shoal submit`, `docker kill`s one worker mid-job, and checks that
//! the job completes with the checkpoint of an uninterrupted `shoal run` on
//! one worker (SHA-256). The project (containers, network, volumes) is torn
//! down with `down -v` whatever happens.
//!
//! Needs a Docker engine and Compose (`docker compose` or `docker-compose`);
//! without them it prints why it was skipped. `.ci/run` installs and starts
//! both where it can.
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use coordinator::JobId;
use coordinator::client::Client;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(300);

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// Runs `command`, panicking with its output unless it succeeds; its stdout.
#[track_caller]
fn succeed(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    check(&output, what);
    text(&output.stdout)
}

#[track_caller]
fn check(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// Why this machine cannot run the test, if it cannot; else the compose
/// command (`docker compose` or `docker-compose`).
fn compose_command() -> Result<Vec<String>, String> {
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map_err(|error| format!("no `docker` command ({error})"))?;
    if !info.status.success() {
        return Err(format!(
            "`docker info` failed, no Docker engine answers: {}",
            text(&info.stderr)
        ));
    }
    let works = |program: &str, arguments: &[&str]| {
        Command::new(program)
            .args(arguments)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if works("docker", &["compose", "version"]) {
        Ok(vec!["docker".into(), "compose".into()])
    } else if works("docker-compose", &["version"]) {
        Ok(vec!["docker-compose".into()])
    } else {
        Err("neither `docker compose` nor `docker-compose` is installed".to_string())
    }
}

fn shoal() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LOG", "warn")
        .env_remove("SHOAL_COORDINATOR")
        .env_remove("SHOAL_API_TOKEN");
    command
}

/// A compose project of its own (unique name), torn down with its volumes
/// when dropped; a failing test first prints the containers' last logs.
struct Cluster {
    compose: Vec<String>,
    project: String,
    environment: Vec<(&'static str, String)>,
}

impl Cluster {
    fn command(&self, arguments: &[&str]) -> Command {
        let mut command = Command::new(&self.compose[0]);
        command
            .args(&self.compose[1..])
            .arg("--project-name")
            .arg(&self.project)
            .arg("--file")
            .arg(repository().join("docker-compose.yml"))
            .args(arguments)
            .current_dir(repository())
            .env_remove("COMPOSE_PROFILES")
            .env_remove("COMPOSE_FILE")
            .stdin(Stdio::null());
        for (name, value) in &self.environment {
            command.env(name, value);
        }
        command
    }

    #[track_caller]
    fn run(&self, arguments: &[&str]) -> String {
        succeed(
            &mut self.command(arguments),
            &format!("compose {}", arguments.join(" ")),
        )
    }

    /// The container ids of `service`.
    fn containers(&self, service: &str) -> Vec<String> {
        self.run(&["ps", "-q", service])
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(output) = self.command(&["logs", "--no-color", "--tail=60"]).output()
        {
            eprintln!(
                "--- last logs of {}:\n{}{}",
                self.project,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        match self
            .command(&["down", "--volumes", "--remove-orphans", "--timeout", "5"])
            .output()
        {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "tearing down {} failed: {}",
                self.project,
                text(&output.stderr)
            ),
            Err(error) => eprintln!("tearing down {} failed: {error}", self.project),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `read` until `done` holds for its answer; panics with the last
/// answer after [`LIMIT`].
fn wait_until(
    what: &str,
    read: impl Fn() -> Result<Value, String>,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    let mut last = Value::Null;
    while started.elapsed() < LIMIT {
        match read() {
            Ok(answer) if done(&answer) => return answer,
            Ok(answer) => {
                assert!(
                    answer["state"] != "failed" && answer["state"] != "cancelled",
                    "the job ended while waiting for {what}: {answer:#}"
                );
                last = answer;
            }
            Err(error) => last = Value::String(error),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no {what} after {LIMIT:?}; last answer: {last:#}");
}

fn last_step(job: &Value) -> i64 {
    job["last_step"].as_i64().unwrap_or(-1)
}

fn job_members(job: &Value) -> usize {
    job["workers"].as_array().map_or(0, Vec::len)
}

/// The job spec: the MLP on generated digits, 4 virtual ranks, 2 to 4
/// workers. The data path is where the dataset lives for whoever trains it
/// (absolute here, relative to the shared volume in the cluster).
fn job_spec(data: &str) -> String {
    format!(
        r#"
name = "compose"
seed = 5
global_batch = 48
virtual_ranks = 4
steps = 2000
[model]
kind = "mlp"
config = {{ d_in = 64, d_hidden = 32, n_classes = 10 }}
[data]
paths = ["{data}"]
columns = {{ x = "pixels", label = "label" }}
[inputs]
scale = 0.0625
[optimizer]
kind = "adamw"
lr = 1e-2
[checkpoint]
interval_steps = 500
keep = 2
[workers]
min = 2
max = 4
"#
    )
}

/// SHA-256 of the final checkpoint of `shoal run --workers 1` on this
/// machine, on digits generated here (the same bytes and file name as in
/// the shared volume, so the same sample order).
fn uninterrupted_sha256(directory: &Path) -> String {
    let data = directory.join("digits.parquet");
    succeed(
        shoal().args(["data", "gen", "digits", "--out"]).arg(&data),
        "shoal data gen",
    );
    let spec = directory.join("job.toml");
    std::fs::write(&spec, job_spec(&data.display().to_string())).unwrap();
    let out = directory.join("single");
    succeed(
        shoal()
            .arg("run")
            .arg(&spec)
            .args(["--workers", "1", "--out"])
            .arg(&out),
        "shoal run --workers 1",
    );
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    metrics["checkpoint_sha256"].as_str().unwrap().to_string()
}

/// A number in `range` that changes from run to run (printed to reproduce).
fn random_in(range: std::ops::Range<i64>) -> i64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as i64;
    range.start + nanos % (range.end - range.start)
}

#[test]
fn a_compose_cluster_survives_a_killed_worker_with_the_single_worker_checkpoint() {
    let compose = match compose_command() {
        Ok(compose) => compose,
        Err(why) => {
            eprintln!("SKIPPED docker_compose: {why} (.ci/run installs and starts Docker)");
            return;
        }
    };
    let directory = std::env::temp_dir().join(format!("shoal-compose-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();

    // Incremental: after .ci/run's build step, only checks the binary is up
    // to date and reuses the image layers.
    succeed(
        Command::new("bash")
            .arg(repository().join("deploy/docker/build-images.sh"))
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit()),
        "deploy/docker/build-images.sh",
    );
    let expected = uninterrupted_sha256(&directory);

    let api_token = coordinator::tokens::generate_token().unwrap();
    let cluster = Cluster {
        compose,
        project: format!("shoal-test-{}", std::process::id()),
        environment: vec![
            ("SHOAL_API_TOKEN", api_token.clone()),
            ("SHOAL_IMAGE_TAG", "latest".to_string()),
            // Any free host ports: the test reads them back.
            ("SHOAL_HTTP_PUBLISH", "127.0.0.1:0".to_string()),
            ("SHOAL_QUIC_PUBLISH", "127.0.0.1:0".to_string()),
            ("SHOAL_THREADS", "1".to_string()),
            ("SHOAL_HEARTBEAT_TIMEOUT_MS", "2000".to_string()),
            ("SHOAL_COLLECTIVE_TIMEOUT_MS", "3000".to_string()),
            ("RUST_LOG", "info".to_string()),
        ],
    };

    // The dataset goes into the shared volume, written by the image itself;
    // the containers' working directory is that volume, so the spec's
    // relative path names it (as with examples/jobs).
    cluster.run(&[
        "run",
        "--rm",
        "--no-deps",
        "-T",
        "coordinator",
        "data",
        "gen",
        "digits",
        "--out",
        "data/digits.parquet",
    ]);
    cluster.run(&["up", "--detach", "--scale", "worker=3"]);
    let published = cluster.run(&["port", "coordinator", "8080"]);
    let http = format!(
        "http://{}",
        published.lines().next().unwrap_or_default().trim()
    );
    let client = Client::new(&http, Some(api_token.clone())).unwrap();
    let runtime = runtime();

    // Three workers register, each advertising its container's address.
    let workers = wait_until(
        "three registered workers",
        || {
            runtime
                .block_on(client.workers())
                .map_err(|error| error.to_string())
        },
        |answer| answer["workers"].as_array().map_or(0, Vec::len) == 3,
    );
    let worker_containers = cluster.containers("worker");
    let mut container_addresses: Vec<String> = worker_containers
        .iter()
        .map(|id| {
            succeed(
                Command::new("docker").args([
                    "inspect",
                    "--format",
                    "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                    id,
                ]),
                "docker inspect",
            )
        })
        .collect();
    let mut advertised: Vec<String> = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|worker| {
            let address = worker["address"].as_str().unwrap_or_default();
            address
                .strip_suffix(":7071")
                .unwrap_or_else(|| panic!("a ring endpoint on port 7071: {workers:#}"))
                .to_string()
        })
        .collect();
    container_addresses.sort();
    advertised.sort();
    assert_eq!(advertised, container_addresses, "{workers:#}");

    // Submitted as a person would: `shoal submit` with the address and
    // token in the environment.
    let spec = directory.join("compose-job.toml");
    std::fs::write(&spec, job_spec("data/digits.parquet")).unwrap();
    let submitted = succeed(
        shoal()
            .arg("submit")
            .arg(&spec)
            .arg("--json")
            .env("SHOAL_COORDINATOR", &http)
            .env("SHOAL_API_TOKEN", &api_token),
        "shoal submit",
    );
    let id = serde_json::from_str::<Value>(&submitted).unwrap()["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("a job id in {submitted}"));
    let read_job = || {
        runtime
            .block_on(client.job(JobId(id)))
            .map_err(|error| error.to_string())
    };

    let kill_at = random_in(20..200);
    eprintln!("killing a worker at step {kill_at}");
    let job = wait_until("progress on three workers", read_job, |job| {
        last_step(job) >= kill_at && job_members(job) == 3
    });
    assert_ne!(job["state"], "completed", "the job ended before the kill");
    let victim = worker_containers[0].clone();
    succeed(
        Command::new("docker").args(["kill", &victim]),
        "docker kill",
    );

    let job = wait_until("completion", read_job, |job| job["state"] == "completed");
    // The coordinator declared the killed worker dead: two remain.
    let workers = runtime
        .block_on(client.workers())
        .expect("the workers list");
    assert_eq!(
        workers["workers"].as_array().map_or(0, Vec::len),
        2,
        "the killed worker is gone: {workers:#}"
    );
    let checkpoint = runtime
        .block_on(client.checkpoint(JobId(id)))
        .expect("the checkpoint downloads");
    assert_eq!(
        worker::single_node::sha256_hex(&checkpoint),
        expected,
        "{}",
        job["transitions"]
    );
    drop(cluster);
    let _ = std::fs::remove_dir_all(&directory);
}
