//! Helpers shared by the root integration tests: the `shoal` binary,
//! scratch folders, child processes that die with the test, and a
//! `shoal coordinator` process with its `shoal worker`s on loopback.
// Each test binary uses its own subset, through `mod common;`.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for anything (a job, a process, a scrape): a failure, never
/// a timing assertion.
pub const LIMIT: Duration = Duration::from_secs(180);

/// The `shoal` binary under test, quiet and with no coordinator address or
/// token inherited from the environment.
pub fn shoal() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command
        .env("RUST_BACKTRACE", "0")
        .env(
            "RUST_LOG",
            std::env::var("SHOAL_TEST_LOG").unwrap_or("warn".into()),
        )
        .env_remove("SHOAL_COORDINATOR")
        .env_remove("SHOAL_API_TOKEN")
        .env_remove("SHOAL_JOIN_TOKEN");
    command
}

/// An empty folder for test `name` of suite `suite`, unique to this run.
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let directory =
        std::env::temp_dir().join(format!("shoal-{suite}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

/// A free TCP port on loopback (bound, then released for the child).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes the bundled digits to `path` with `shoal data gen digits`.
pub fn generate_digits(path: &Path) {
    let generated = shoal()
        .args(["data", "gen", "digits", "--out"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
}

/// A child process killed when dropped (a failing test leaves no orphans).
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        self.0.kill().expect("SIGKILL the process");
        self.0.wait().expect("reap the process");
    }

    /// Sends `signal` (STOP, CONT, TERM, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Sends SIGTERM and waits for the process to exit (a bounded wait:
    /// a process that ignores SIGTERM fails the test instead of hanging it).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("poll the process") {
                return status;
            }
            assert!(
                started.elapsed() < LIMIT,
                "the process did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A `shoal coordinator` process: its addresses and tokens.
pub struct CoordinatorProcess {
    pub process: Process,
    /// `http://127.0.0.1:PORT`.
    pub http: String,
    /// `127.0.0.1:PORT` (UDP).
    pub quic: String,
    pub api_token: String,
    pub join_token: String,
}

/// Starts `shoal coordinator --data-dir DATA_DIR` on loopback (HTTP on a
/// free port) with `arguments` added (`--quic-addr` defaults to a free
/// port too); reads its addresses from what it prints and its tokens from
/// the data directory.
pub fn start_coordinator(data_dir: &Path, arguments: &[&str]) -> CoordinatorProcess {
    let mut command = shoal();
    command
        .args(["coordinator", "--data-dir"])
        .arg(data_dir)
        .args(["--http-addr", "127.0.0.1:0"]);
    if !arguments.contains(&"--quic-addr") {
        command.args(["--quic-addr", "127.0.0.1:0"]);
    }
    let mut child = command
        .args(arguments)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the coordinator");
    let stdout = child.stdout.take().unwrap();
    let process = Process(child);
    let (mut http, mut quic) = (None, None);
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("the coordinator's output");
        if let Some(rest) = line.trim().strip_prefix("HTTP API:") {
            http = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(rest) = line.trim().strip_prefix("workers (QUIC):") {
            quic = rest.split_whitespace().next().map(str::to_string);
        }
        if http.is_some() && quic.is_some() {
            break;
        }
    }
    // Keep reading: a closed pipe would fail the coordinator's next print.
    std::thread::spawn(move || lines.for_each(drop));
    let read = |name: &str| {
        std::fs::read_to_string(data_dir.join(name))
            .unwrap()
            .trim()
            .to_string()
    };
    CoordinatorProcess {
        process,
        http: http.expect("the coordinator prints its HTTP address"),
        quic: quic.expect("the coordinator prints its QUIC address"),
        api_token: read("api-token"),
        join_token: read("join-token"),
    }
}

/// Starts `shoal worker` named `name` for `coordinator` (one thread, a
/// loopback ring port) with `arguments` added.
pub fn start_worker(coordinator: &CoordinatorProcess, name: &str, arguments: &[&str]) -> Process {
    let child = shoal()
        .args(["worker", "--coordinator", &coordinator.quic])
        .args(["--join-token", &coordinator.join_token])
        .args(["--threads", "1", "--listen-addr", "127.0.0.1:0"])
        .args(["--name", name])
        .args(arguments)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a worker");
    Process(child)
}

/// A single-threaded runtime for the coordinator's async client.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `GET http://{address}{target}` over HTTP/1.0 (so the body is never
/// chunked); returns the status and the body.
pub fn http_get(address: &str, target: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {target} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP header end in {response:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// The value of the Prometheus sample of `metric` whose labels include
/// every `name="value"` of `labels`, in the text exposition `text`.
pub fn metric_value(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| {
            line.starts_with(&format!("{metric}{{")) || line.starts_with(&format!("{metric} "))
        })
        .find(|line| {
            labels
                .iter()
                .all(|(name, value)| line.contains(&format!("{name}=\"{value}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}
