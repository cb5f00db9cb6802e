//! Datasets and checkpoints in S3, from the user's side, against a real
//! S3-protocol server on loopback: moto's server mode (PyPI `moto[server]`,
//! installed by `.ci/run`; `SHOAL_PYTHON` picks the interpreter). Each test
//! starts its own server on a free port and stops it when done.
//!
//! - A generated dataset uploaded to a bucket plans and reads exactly as
//!   the local file does; `shoal data inspect` and `shoal run` accept its
//!   `s3://` URL; `shoal run --out s3://...` writes the checkpoint there,
//!   byte-identical to the same job on local files; a job resumes from that
//!   checkpoint (`checkpoint.initial = "s3://..."`), again identical to the
//!   local resume.
//! - A large object goes up in parts and leaves no temporary object and no
//!   unfinished multipart upload behind.
//! - A missing bucket, a wrong key and an unreachable endpoint each fail
//!   with an error naming the URL and the cause.
//!
//! When moto cannot be started the tests that need it print `skipped:` and
//! the reason; the unreachable-endpoint test needs no server.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datasets::{ColumnMapping, DataCursor, Dataset, Plan, PlanConfig, Reader, Task};
use storage::{RequestSettings, Store};

/// The bucket the tests create.
const BUCKET: &str = "shoal-test";

/// A moto S3 server on a loopback port, killed when dropped.
struct Moto {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Moto {
    /// Starts moto on a free port and waits until it answers; `Err` says
    /// why it could not be started.
    fn start(name: &str) -> Result<Moto, String> {
        let python = std::env::var("SHOAL_PYTHON").unwrap_or_else(|_| "python3".to_string());
        let port = free_port();
        let log =
            std::env::temp_dir().join(format!("shoal-moto-{}-{name}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).map_err(|error| error.to_string())?;
        let child = Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|error| error.to_string())?)
            .stderr(log_file)
            .spawn()
            .map_err(|error| format!("cannot run {python}: {error}"))?;
        let mut moto = Moto { child, port, log };
        // A generous bound on start-up (a cold Python imports boto and
        // flask), only so that a broken install cannot hang the test.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                let output = std::fs::read_to_string(&moto.log).unwrap_or_default();
                let tail: String = output.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                return Err(format!(
                    "`{python} -m moto.server` exited ({status}): {tail} (install it with `pip install 'moto[server]'`)"
                ));
            }
            if http(port, "GET", "/", &[]).is_ok_and(|(status, _)| status == 200) {
                return Ok(moto);
            }
            if Instant::now() > deadline {
                return Err(format!("moto did not answer on port {port} within 60 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The variables a client of this server runs with.
    fn environment(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
    }

    /// A store of `url`'s bucket configured for this server.
    fn store(&self, url: &str) -> (Store, String) {
        Store::from_url_with(
            url,
            &RequestSettings::default(),
            &self.environment().into_iter().collect(),
        )
        .unwrap()
    }

    /// Creates a bucket (S3's `CreateBucket`, `PUT /bucket`).
    fn create_bucket(&self, bucket: &str) {
        let (status, body) = http(self.port, "PUT", &format!("/{bucket}"), &[]).unwrap();
        assert_eq!(status, 200, "create bucket {bucket}: {body}");
    }
}

/// Starts moto, or prints why the test is skipped.
fn moto_or_skip(test: &str) -> Option<Moto> {
    match Moto::start(test) {
        Ok(moto) => Some(moto),
        Err(reason) => {
            eprintln!("skipped: {test}: moto's S3 server cannot be started: {reason}");
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One plain HTTP/1.1 request to the server (moto accepts unsigned
/// requests): the status and the body.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {answer:?}")))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_string());
    Ok((status, body))
}

fn scratch(name: &str) -> PathBuf {
    let directory = std::env::temp_dir().join(format!(
        "shoal-object-storage-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

/// Runs `shoal` with `environment` (and no other AWS settings), killing it
/// if it runs far longer than it should: a hang fails the test instead of
/// blocking CI.
fn shoal(arguments: &[&str], environment: &[(String, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command
        .args(arguments)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ALLOW_HTTP",
    ] {
        command.env_remove(name);
    }
    for (name, value) in environment {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("the shoal binary runs");
    let deadline = Instant::now() + Duration::from_secs(600);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("shoal {arguments:?} did not finish within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[track_caller]
fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "shoal failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[track_caller]
fn failed_with(output: &Output, expected: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "shoal succeeded: {stderr}");
    for part in expected {
        assert!(stderr.contains(part), "{part:?} not in the error: {stderr}");
    }
}

/// An MLP on the digits reading `data`, for 3 steps, or from the checkpoint
/// `initial` (which records its step) to step 6.
fn job(data: &str, initial: Option<&str>) -> String {
    let steps = if initial.is_some() { 6 } else { 3 };
    let initial = initial
        .map(|location| format!("[checkpoint]\ninitial = \"{location}\"\n"))
        .unwrap_or_default();
    format!(
        r#"
name = "mlp-s3"
seed = 7
global_batch = 48
virtual_ranks = 2
steps = {steps}
[model]
kind = "mlp"
config = {{ d_in = 64, d_hidden = 16, n_classes = 10 }}
[data]
paths = ["{data}"]
columns = {{ x = "pixels", label = "label" }}
[inputs]
scale = 0.0625
[optimizer]
kind = "adamw"
lr = 1e-2
{initial}"#
    )
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

fn reader(dataset: Dataset) -> Reader {
    Reader::new(
        dataset,
        Task::Classify,
        &ColumnMapping::new().with("x", "pixels"),
    )
    .unwrap()
}

#[test]
fn a_dataset_in_s3_trains_and_checkpoints_like_local_files() {
    let Some(moto) = moto_or_skip("train") else {
        return;
    };
    let environment = moto.environment();
    let directory = scratch("train");
    let local_data = directory.join("digits.parquet");
    succeeded(&shoal(
        &[
            "data",
            "gen",
            "digits",
            "--out",
            local_data.to_str().unwrap(),
        ],
        &[],
    ));
    moto.create_bucket(BUCKET);
    let (store, _) = moto.store(&format!("s3://{BUCKET}"));
    store
        .put_atomic(
            "data/digits.parquet",
            std::fs::read(&local_data).unwrap().into(),
        )
        .unwrap();

    // Planned from the footer in the bucket: the same fingerprint, plan and
    // samples as the local file.
    let local = Dataset::open(&[&local_data]).unwrap();
    let remote = Dataset::open_objects(Arc::new(store.clone()), &["data/".to_string()]).unwrap();
    assert_eq!(local.fingerprint(), remote.fingerprint());
    let plan = Plan::new(local.fingerprint(), PlanConfig::new(7, 48, 2)).unwrap();
    let mut local_reader = reader(local);
    let mut remote_reader = reader(remote);
    let mut cursor = DataCursor::default();
    for _ in 0..3 {
        for micro_batch in plan.micro_batches(cursor, 0..2).unwrap() {
            assert_eq!(
                local_reader.read_samples(&micro_batch.samples).unwrap(),
                remote_reader.read_samples(&micro_batch.samples).unwrap()
            );
        }
        cursor = plan.next(cursor);
    }

    // `shoal data inspect` on the URL prints the local file's fingerprint.
    let fingerprint = |report: &str| {
        report
            .lines()
            .find(|line| line.starts_with("fingerprint:"))
            .map(str::to_string)
            .expect("a fingerprint line")
    };
    let inspected = succeeded(&shoal(
        &["data", "inspect", &format!("s3://{BUCKET}/data/")],
        &environment,
    ));
    let inspected_locally = succeeded(&shoal(
        &["data", "inspect", local_data.to_str().unwrap()],
        &[],
    ));
    assert_eq!(fingerprint(&inspected), fingerprint(&inspected_locally));

    // Train in the bucket and locally: byte-identical checkpoints.
    let remote_job = write(
        &directory.join("remote.toml"),
        &job(&format!("s3://{BUCKET}/data/"), None),
    );
    let local_job = write(
        &directory.join("local.toml"),
        &job(local_data.to_str().unwrap(), None),
    );
    let remote_out = format!("s3://{BUCKET}/runs/first");
    let local_out = directory.join("first");
    succeeded(&shoal(
        &["run", &remote_job, "--workers", "2", "--out", &remote_out],
        &environment,
    ));
    succeeded(&shoal(
        &[
            "run",
            &local_job,
            "--workers",
            "2",
            "--out",
            local_out.to_str().unwrap(),
        ],
        &[],
    ));
    let checkpoint = |key: &str| store.get(key).unwrap().to_vec();
    let first = checkpoint("runs/first/checkpoint.safetensors");
    let first_local = std::fs::read(local_out.join("checkpoint.safetensors")).unwrap();
    assert!(first == first_local, "the checkpoints differ");
    let metrics: serde_json::Value =
        serde_json::from_slice(&checkpoint("runs/first/metrics.json")).unwrap();
    assert_eq!(metrics["steps"].as_array().unwrap().len(), 3);
    assert_eq!(
        metrics["checkpoint_sha256"].as_str().unwrap(),
        worker::single_node::sha256_hex(&first)
    );
    assert!(
        store.get("runs/first/loss.png").is_ok(),
        "the report is uploaded too"
    );

    // Resume from the checkpoint in the bucket, and locally from the local
    // copy, for 3 more steps: the same result, and not the checkpoint it
    // started from.
    let resume_remote = write(
        &directory.join("resume-remote.toml"),
        &job(
            &format!("s3://{BUCKET}/data/"),
            Some(&format!("{remote_out}/checkpoint.safetensors")),
        ),
    );
    let resume_local = write(
        &directory.join("resume-local.toml"),
        &job(
            local_data.to_str().unwrap(),
            Some(local_out.join("checkpoint.safetensors").to_str().unwrap()),
        ),
    );
    let local_second = directory.join("second");
    succeeded(&shoal(
        &[
            "run",
            &resume_remote,
            "--workers",
            "2",
            "--out",
            &format!("s3://{BUCKET}/runs/second/"),
        ],
        &environment,
    ));
    succeeded(&shoal(
        &[
            "run",
            &resume_local,
            "--workers",
            "2",
            "--out",
            local_second.to_str().unwrap(),
        ],
        &[],
    ));
    let second = checkpoint("runs/second/checkpoint.safetensors");
    assert!(
        second == std::fs::read(local_second.join("checkpoint.safetensors")).unwrap(),
        "the resumed checkpoints differ"
    );
    assert!(second != first, "the resumed job trained nothing");

    // Every object was published whole: no temporary objects left.
    let keys: Vec<String> = store
        .list("")
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert!(
        keys.iter().all(|key| !key.contains(".tmp-")),
        "temporary objects left: {keys:?}"
    );
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn a_large_object_goes_up_in_parts_and_leaves_nothing_behind() {
    let Some(moto) = moto_or_skip("parts") else {
        return;
    };
    moto.create_bucket(BUCKET);
    let (store, key) = moto.store(&format!("s3://{BUCKET}/big/checkpoint.safetensors"));
    let bytes: Vec<u8> = (0..20 * 1024 * 1024_u32)
        .map(|index| (index.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    store.put_atomic(&key, bytes.clone().into()).unwrap();
    assert!(store.get(&key).unwrap() == bytes, "the object differs");
    let listed = store.list("big/").unwrap();
    assert_eq!(listed, vec![(key.clone(), bytes.len() as u64)]);
    // S3's ListMultipartUploads: none left unfinished.
    let (status, uploads) = http(moto.port, "GET", &format!("/{BUCKET}?uploads"), &[]).unwrap();
    assert_eq!(status, 200, "{uploads}");
    assert!(
        !uploads.contains("<Upload>"),
        "unfinished uploads: {uploads}"
    );
}

#[test]
fn a_missing_bucket_and_a_wrong_key_name_the_url_and_the_cause() {
    let Some(moto) = moto_or_skip("errors") else {
        return;
    };
    let environment = moto.environment();
    let directory = scratch("errors");
    moto.create_bucket(BUCKET);
    let local_data = directory.join("digits.parquet");
    succeeded(&shoal(
        &[
            "data",
            "gen",
            "digits",
            "--out",
            local_data.to_str().unwrap(),
        ],
        &[],
    ));
    let (store, _) = moto.store(&format!("s3://{BUCKET}"));
    store
        .put_atomic(
            "data/digits.parquet",
            std::fs::read(&local_data).unwrap().into(),
        )
        .unwrap();

    // A bucket that does not exist: as data, as an output folder (refused
    // before training) and as an initial checkpoint.
    let missing_bucket = [
        "s3://no-such-bucket/",
        "bucket \"no-such-bucket\" does not exist at http://127.0.0.1:",
    ];
    failed_with(
        &shoal(
            &["data", "inspect", "s3://no-such-bucket/data/"],
            &environment,
        ),
        &missing_bucket,
    );
    let job_file = write(
        &directory.join("job.toml"),
        &job(&format!("s3://{BUCKET}/data/"), None),
    );
    let refused = shoal(
        &["run", &job_file, "--out", "s3://no-such-bucket/runs/one"],
        &environment,
    );
    failed_with(&refused, &missing_bucket);
    assert!(
        !String::from_utf8_lossy(&refused.stderr).contains("training"),
        "the output location is checked before training"
    );
    let from_missing_bucket = write(
        &directory.join("missing-bucket.toml"),
        &job(
            &format!("s3://{BUCKET}/data/"),
            Some("s3://no-such-bucket/checkpoint.safetensors"),
        ),
    );
    failed_with(
        &shoal(&["run", &from_missing_bucket], &environment),
        &missing_bucket,
    );

    // A key with no object: as data and as an initial checkpoint.
    failed_with(
        &shoal(
            &[
                "data",
                "inspect",
                &format!("s3://{BUCKET}/data/missing.parquet"),
            ],
            &environment,
        ),
        &[
            &format!("s3://{BUCKET}/data/missing.parquet"),
            "no such object",
        ],
    );
    let from_missing_key = write(
        &directory.join("missing-key.toml"),
        &job(
            &format!("s3://{BUCKET}/data/"),
            Some(&format!("s3://{BUCKET}/runs/none.safetensors")),
        ),
    );
    failed_with(
        &shoal(&["run", &from_missing_key], &environment),
        &[
            &format!("s3://{BUCKET}/runs/none.safetensors"),
            "no such object",
        ],
    );
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn an_unreachable_endpoint_fails_promptly_with_the_endpoint_named() {
    // Nothing listens on a port just released; the retries are bounded, so
    // the command ends (it would otherwise hang the test until killed).
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let environment = vec![
        ("AWS_ENDPOINT_URL".to_string(), endpoint.clone()),
        ("AWS_ACCESS_KEY_ID".to_string(), "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), "testing".to_string()),
    ];
    failed_with(
        &shoal(&["data", "inspect", "s3://anything/data/"], &environment),
        &[
            "s3://anything/data",
            &format!("cannot reach the store at {endpoint}"),
        ],
    );
    let directory = scratch("unreachable");
    let data = directory.join("digits.parquet");
    succeeded(&shoal(
        &["data", "gen", "digits", "--out", data.to_str().unwrap()],
        &[],
    ));
    let job_file = write(
        &directory.join("job.toml"),
        &job(data.to_str().unwrap(), None),
    );
    failed_with(
        &shoal(
            &["run", &job_file, "--out", "s3://anything/runs/one"],
            &environment,
        ),
        &[&format!("cannot reach the store at {endpoint}")],
    );
    let _ = std::fs::remove_dir_all(&directory);
}
