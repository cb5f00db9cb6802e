//! The coordinator's command-line clients from the user's side, against a
//! real `shoal coordinator` process: address and token from flags or
//! environment variables, `--json` listings, `submit --follow`, and errors a
//! person can act on (no coordinator, bad token, a spec error with its file,
//! line and field, nothing to plot or download yet).
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn shoal_command(arguments: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command
        .args(arguments)
        .env("RUST_BACKTRACE", "0")
        .env_remove("SHOAL_COORDINATOR")
        .env_remove("SHOAL_API_TOKEN");
    command
}

fn shoal(arguments: &[&str]) -> Output {
    shoal_command(arguments)
        .output()
        .expect("the shoal binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let directory =
        std::env::temp_dir().join(format!("shoal-client-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn check_fails_saying(output: &Output, parts: &[&str]) {
    let message = stderr(output);
    assert!(!output.status.success(), "succeeded: {output:?}");
    assert!(!message.contains("panicked"), "{message}");
    for part in parts {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
}

/// A coordinator process on loopback ports chosen by the system, stopped
/// when dropped.
struct Coordinator {
    child: Child,
    url: String,
    quic: String,
    token: String,
    join_token: String,
}

impl Coordinator {
    fn start(data_dir: &Path) -> Coordinator {
        let mut child = shoal_command(&[
            "coordinator",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--http-addr",
            "127.0.0.1:0",
            "--quic-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("shoal coordinator starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut url, mut quic) = (None, None);
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.trim().strip_prefix("HTTP API:") {
                url = rest.split_whitespace().next().map(str::to_string);
            }
            if let Some(rest) = line.trim().strip_prefix("workers (QUIC):") {
                quic = rest.split_whitespace().next().map(str::to_string);
            }
            if url.is_some() && quic.is_some() {
                break;
            }
        }
        // Keep reading: a closed pipe would fail the coordinator's next print.
        std::thread::spawn(move || lines.for_each(drop));
        let url = url.expect("the coordinator prints its HTTP address");
        let quic = quic.expect("the coordinator prints its QUIC address");
        let read = |name: &str| {
            std::fs::read_to_string(data_dir.join(name))
                .unwrap()
                .trim()
                .to_string()
        };
        Coordinator {
            child,
            url,
            quic,
            token: read("api-token"),
            join_token: read("join-token"),
        }
    }

    /// A `shoal worker` of this coordinator, killed when dropped.
    fn worker(&self) -> Worker {
        let child = shoal_command(&[
            "worker",
            "--coordinator",
            &self.quic,
            "--join-token",
            &self.join_token,
            "--threads",
            "1",
            "--listen-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("shoal worker starts");
        Worker(child)
    }

    /// `shoal ARGS` with the address and token in the environment.
    fn shoal(&self, arguments: &[&str]) -> Output {
        shoal_command(arguments)
            .env("SHOAL_COORDINATOR", &self.url)
            .env("SHOAL_API_TOKEN", &self.token)
            .output()
            .unwrap()
    }
}

/// A worker process, killed when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const JOB: &str = r#"name = "follow-me"
seed = 1
global_batch = 8
virtual_ranks = 2
steps = 5

[model]
kind = "mlp"
config = { d_in = 64, d_hidden = 8, n_classes = 10 }

[data]
paths = ["digits.parquet"]
columns = { x = "pixels", label = "label" }

[optimizer]
kind = "adamw"
lr = 1e-3
"#;

#[test]
fn no_coordinator_says_how_to_start_one() {
    // Port 9 (discard) on loopback: nothing listens there in a test.
    let output = shoal(&["jobs", "--coordinator", "http://127.0.0.1:9"]);
    check_fails_saying(
        &output,
        &[
            "no coordinator at 127.0.0.1:9",
            "shoal coordinator --data-dir",
            "SHOAL_COORDINATOR",
        ],
    );
}

#[test]
fn the_clients_of_a_running_coordinator() {
    let directory = scratch("running");
    let coordinator = Coordinator::start(&directory.join("coordinator"));

    // A wrong or missing token: say where the right one is.
    let wrong = shoal(&["jobs", "--coordinator", &coordinator.url, "--token", "nope"]);
    check_fails_saying(
        &wrong,
        &[
            "401",
            "the token given was refused",
            "SHOAL_API_TOKEN",
            "api-token",
        ],
    );
    let missing = shoal(&["workers", "--coordinator", &coordinator.url]);
    check_fails_saying(&missing, &["401", "no token was given"]);

    // A spec error names the file, the line and the field, before anything
    // is sent.
    let bad = directory.join("bad.toml");
    std::fs::write(&bad, JOB.replace("lr = 1e-3", "lr = -1.0")).unwrap();
    let refused = coordinator.shoal(&["submit", bad.to_str().unwrap()]);
    check_fails_saying(
        &refused,
        &[&format!("{}:17:", bad.display()), "optimizer.lr"],
    );
    let broken = directory.join("broken.toml");
    std::fs::write(&broken, JOB.replace("steps = 5", "steps = = 5")).unwrap();
    let refused = coordinator.shoal(&["submit", broken.to_str().unwrap()]);
    check_fails_saying(&refused, &["broken.toml", "line 5"]);

    // A good spec, from flags and from the environment alike; `--json`.
    let good = directory.join("job.toml");
    std::fs::write(&good, JOB).unwrap();
    let submitted = shoal(&[
        "submit",
        good.to_str().unwrap(),
        "--json",
        "--coordinator",
        &coordinator.url,
        "--token",
        &coordinator.token,
    ]);
    assert!(submitted.status.success(), "{}", stderr(&submitted));
    let job: serde_json::Value = serde_json::from_slice(&submitted.stdout).unwrap();
    let id = job["id"].as_u64().unwrap().to_string();
    let listed = coordinator.shoal(&["jobs", "--json"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(
        listed["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == job["id"] && j["name"] == "follow-me"),
        "{listed}"
    );
    let workers = coordinator.shoal(&["workers", "--json"]);
    assert!(workers.status.success(), "{}", stderr(&workers));
    let workers: serde_json::Value = serde_json::from_slice(&workers.stdout).unwrap();
    assert!(workers["workers"].is_array(), "{workers}");

    // With no worker the job has no step and no checkpoint yet.
    let plot = coordinator.shoal(&["plot", &id, "--out", directory.to_str().unwrap()]);
    check_fails_saying(&plot, &["has reported no step yet"]);
    let out = directory.join("job.safetensors");
    let checkpoint = coordinator.shoal(&["checkpoint", &id, "--out", out.to_str().unwrap()]);
    check_fails_saying(&checkpoint, &["404"]);
    assert!(!out.exists());

    // `submit --follow` waits for the job's end; cancelled, it says so and
    // exits non-zero.
    let follower = shoal_command(&["submit", good.to_str().unwrap(), "--follow"])
        .env("SHOAL_COORDINATOR", &coordinator.url)
        .env("SHOAL_API_TOKEN", &coordinator.token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let second = loop {
        let listed = coordinator.shoal(&["jobs", "--json"]);
        let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        let jobs = listed["jobs"].as_array().unwrap().clone();
        if let Some(other) = jobs.iter().find(|j| j["id"] != job["id"]) {
            break other["id"].as_u64().unwrap().to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the followed job never appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let cancelled = coordinator.shoal(&["cancel", &second]);
    assert!(cancelled.status.success(), "{}", stderr(&cancelled));
    let followed = follower.wait_with_output().unwrap();
    check_fails_saying(&followed, &[&format!("job {second} cancelled")]);
    let printed = String::from_utf8_lossy(&followed.stdout);
    assert!(
        printed.contains(&format!("job {second} submitted")),
        "{printed}"
    );

    drop(coordinator);
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn a_finished_job_is_plotted_and_its_checkpoint_downloaded() {
    let directory = scratch("finished");
    let coordinator = Coordinator::start(&directory.join("coordinator"));
    let _worker = coordinator.worker();
    let data = directory.join("digits.parquet");
    let generated = shoal(&["data", "gen", "digits", "--out", data.to_str().unwrap()]);
    assert!(generated.status.success(), "{}", stderr(&generated));
    let spec = directory.join("job.toml");
    let body = JOB
        .replace("virtual_ranks = 2", "virtual_ranks = 1")
        .replace(
            "\"digits.parquet\"",
            &format!("{:?}", data.display().to_string()),
        );
    std::fs::write(&spec, body).unwrap();
    let followed = coordinator.shoal(&["submit", spec.to_str().unwrap(), "--follow"]);
    assert!(followed.status.success(), "{}", stderr(&followed));
    let printed = String::from_utf8_lossy(&followed.stdout).into_owned();
    let id = printed
        .split_whitespace()
        .skip_while(|word| *word != "job")
        .nth(1)
        .expect("submit prints the job's id")
        .to_string();

    // The checkpoint: the bytes the coordinator recorded, by SHA-256.
    let job = coordinator.shoal(&["job", &id]);
    assert!(job.status.success(), "{}", stderr(&job));
    let job: serde_json::Value = serde_json::from_slice(&job.stdout).unwrap();
    assert_eq!(job["state"], "completed", "{job:#}");
    let recorded = job["latest_checkpoint"]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let out = directory.join("final.safetensors");
    let downloaded = coordinator.shoal(&["checkpoint", &id, "--out", out.to_str().unwrap()]);
    assert!(downloaded.status.success(), "{}", stderr(&downloaded));
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(worker::single_node::sha256_hex(&bytes), recorded);
    // A safetensors file: an 8-byte header length, then JSON naming the
    // MLP's parameters under their PyTorch names.
    let header_length = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_length]).unwrap();
    assert!(header.contains("\"fc1.weight\""), "{header}");

    // The plot: the loss curve as PNG and SVG, the losses only (not the
    // learning rate or the throughput, which share the metrics history).
    let plots = directory.join("plots");
    let plotted = coordinator.shoal(&["plot", &id, "--out", plots.to_str().unwrap()]);
    assert!(plotted.status.success(), "{}", stderr(&plotted));
    let png = std::fs::read(plots.join(format!("job-{id}-loss.png"))).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG file");
    let svg = std::fs::read_to_string(plots.join(format!("job-{id}-loss.svg"))).unwrap();
    let labels: Vec<&str> = svg.lines().map(str::trim).collect();
    assert!(labels.contains(&"loss"), "the loss series is named");
    for other in ["samples_per_second", "lr", "compute_seconds", "grad_norm"] {
        assert!(!labels.contains(&other), "{other} is not a loss");
    }

    drop(coordinator);
    let _ = std::fs::remove_dir_all(&directory);
}
