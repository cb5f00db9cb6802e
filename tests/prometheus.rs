//! The metrics and the Grafana dashboard against a real Prometheus server.
//!
//! A coordinator and two workers run as processes on loopback (each worker
//! with `--metrics-addr`), a job trains to completion, and Prometheus
//! (Debian's `prometheus` package, started here with a temporary
//! configuration and storage) scrapes them every second. Then every PromQL
//! expression of `deploy/grafana/dashboards/shoal.json` (every panel's
//! targets, rows included, and the metric of every `label_values` variable)
//! is run through Prometheus's HTTP API with the dashboard variables set to
//! "all": each must return at least one series, so a panel that queries a
//! metric nobody exports fails here. Without the prometheus binary the test
//! says it was skipped and why; `.ci/run` installs it.
//!
//! The same Prometheus loads `deploy/prometheus/alerts.yml`: every alerting
//! rule must evaluate without error. Also: `shoal run --metrics-addr` serves
//! its coordinator's and workers' metrics while it trains, and the files of
//! `deploy/` agree with each other.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coordinator::JobId;
use coordinator::client::Client;
use coordinator::spec::SpecFormat;
use serde_json::Value;

mod common;

use common::{CoordinatorProcess, LIMIT, Process, free_port, http_get, runtime, shoal};

/// How long an expression may keep returning nothing once Prometheus has
/// scraped every target several times after the job ended (a rate needs
/// two samples in its window).
const SETTLE: Duration = Duration::from_secs(20);

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("prometheus", name)
}

/// The Prometheus binary: `SHOAL_PROMETHEUS`, else `prometheus` on the
/// PATH, else Debian's /usr/bin/prometheus.
fn prometheus_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SHOAL_PROMETHEUS") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|directory| directory.join("prometheus"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let debian = PathBuf::from("/usr/bin/prometheus");
        debian.is_file().then_some(debian)
    })
}

// ---- a minimal HTTP client (std only) ----

/// `path` with its query percent-encoded, as a URL's query wants it.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

// ---- the cluster ----

fn start_coordinator(data_dir: &Path) -> CoordinatorProcess {
    common::start_coordinator(data_dir, &[])
}

fn start_worker(coordinator: &CoordinatorProcess, name: &str, metrics: &str) -> Process {
    common::start_worker(coordinator, name, &["--metrics-addr", metrics])
}

/// Generated digits and a job spec on them: an MLP on `virtual_ranks`
/// ranks, checkpointed every 10 steps.
fn job_spec(directory: &Path, steps: u64, workers: u32) -> String {
    let data = directory.join("digits.parquet");
    common::generate_digits(&data);
    format!(
        r#"
name = "observed"
seed = 5
global_batch = 48
virtual_ranks = {workers}
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
[schedule]
kind = "linear_warmup"
warmup_steps = 5
[checkpoint]
interval_steps = 10
keep = 2
[workers]
min = {workers}
"#,
        data.display()
    )
}

// ---- Prometheus ----

struct PrometheusProcess {
    process: Process,
    address: String,
    log: PathBuf,
}

impl PrometheusProcess {
    /// Starts Prometheus on a free loopback port with `config`, storing in
    /// `directory`, and waits until it is ready.
    fn start(binary: &Path, directory: &Path, config: &str) -> PrometheusProcess {
        let config_path = directory.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        let log = directory.join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                directory.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", binary.display()));
        let mut prometheus = PrometheusProcess {
            process: Process(child),
            address,
            log,
        };
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = http_get(&prometheus.address, "/-/ready") {
                return prometheus;
            }
            if let Ok(Some(status)) = prometheus.process.0.try_wait() {
                panic!(
                    "Prometheus exited ({status}); its log:\n{}",
                    prometheus.log()
                );
            }
            assert!(
                started.elapsed() < LIMIT,
                "Prometheus was not ready after {LIMIT:?}; its log:\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs an instant query; `Err` is Prometheus's error (a bad
    /// expression), `Ok` the result's series.
    fn query(&self, expression: &str) -> Result<Vec<Value>, String> {
        let target = format!("/api/v1/query?query={}", percent_encode(expression));
        let (status, body) = http_get(&self.address, &target)
            .map_err(|error| format!("querying Prometheus: {error}"))?;
        let answer: Value = serde_json::from_str(&body)
            .map_err(|error| format!("HTTP {status}, not JSON ({error}): {body}"))?;
        if answer["status"] != "success" {
            return Err(format!(
                "HTTP {status}: {} {}",
                answer["errorType"], answer["error"]
            ));
        }
        match &answer["data"]["result"] {
            Value::Array(series) => Ok(series.clone()),
            // A scalar or a string: one value.
            other if !other.is_null() => Ok(vec![other.clone()]),
            _ => Ok(Vec::new()),
        }
    }

    /// The value of the first series of `expression` as a number, if any.
    fn number(&self, expression: &str) -> Option<f64> {
        let series = self.query(expression).ok()?;
        series.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `expression`'s first value satisfies `done`.
    fn wait_for(&self, expression: &str, done: impl Fn(f64) -> bool) {
        let started = Instant::now();
        loop {
            let value = self.number(expression);
            if value.is_some_and(&done) {
                return;
            }
            assert!(
                started.elapsed() < LIMIT,
                "`{expression}` was {value:?} after {LIMIT:?}; Prometheus's targets: {}\nits log:\n{}",
                http_get(&self.address, "/api/v1/targets")
                    .map(|(_, body)| body)
                    .unwrap_or_default(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Waits until Prometheus has evaluated every alerting rule of
/// `deploy/prometheus/alerts.yml`; returns the rules that failed to.
fn rule_failures(prometheus: &PrometheusProcess) -> Vec<String> {
    let started = Instant::now();
    loop {
        let (_, body) = http_get(&prometheus.address, "/api/v1/rules").unwrap();
        let answer: Value = serde_json::from_str(&body).unwrap();
        let rules: Vec<&Value> = answer["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().into_iter().flatten())
            .collect();
        assert!(
            !rules.is_empty(),
            "Prometheus loaded no alerting rule: {body}\n{}",
            prometheus.log()
        );
        let failed: Vec<String> = rules
            .iter()
            .filter(|rule| rule["health"] == "err")
            .map(|rule| {
                format!(
                    "alerting rule `{}` does not evaluate: {}\n  {}",
                    rule["name"], rule["lastError"], rule["query"]
                )
            })
            .collect();
        let evaluated = rules.iter().all(|rule| rule["health"] != "unknown");
        if !failed.is_empty() || evaluated {
            return failed;
        }
        assert!(
            started.elapsed() < LIMIT,
            "Prometheus did not evaluate every rule in {LIMIT:?}: {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ---- the dashboard ----

/// One query of the dashboard: where it is and its PromQL.
#[derive(Debug)]
struct DashboardQuery {
    place: String,
    expression: String,
    /// For a `label_values(selector, label)` variable: the label every
    /// series must have.
    label: Option<String>,
}

fn dashboard() -> Value {
    let path = repository().join("deploy/grafana/dashboards/shoal.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Every target of every panel, rows' nested panels included.
fn panel_queries(value: &Value, out: &mut Vec<DashboardQuery>) {
    match value {
        Value::Object(object) => {
            if let Some(targets) = object.get("targets").and_then(Value::as_array) {
                let title = object["title"].as_str().unwrap_or("(untitled)");
                for target in targets {
                    let expression = target["expr"].as_str().unwrap_or_else(|| {
                        panic!("panel `{title}` has a target without a PromQL `expr`: {target}")
                    });
                    out.push(DashboardQuery {
                        place: format!("panel `{title}` target {}", target["refId"]),
                        expression: expression.to_string(),
                        label: None,
                    });
                }
            }
            for child in object.values() {
                panel_queries(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| panel_queries(item, out)),
        _ => {}
    }
}

/// The `label_values(selector, label)` queries of the dashboard's variables.
fn variable_queries(dashboard: &Value) -> Vec<DashboardQuery> {
    let variables = dashboard["templating"]["list"].as_array().cloned();
    let mut out = Vec::new();
    for variable in variables.unwrap_or_default() {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap_or("(unnamed)");
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str())
            .unwrap_or_else(|| panic!("variable `{name}` has no query"));
        let inner = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable `{name}`: not a label_values(...) query: {query}"));
        let (selector, label) = inner
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("variable `{name}`: label_values needs a metric: {query}"));
        out.push(DashboardQuery {
            place: format!("variable `{name}`"),
            expression: selector.trim().to_string(),
            label: Some(label.trim().to_string()),
        });
    }
    out
}

/// The dashboard's variables set as Grafana sets them for "All" and a
/// 1 s scrape interval; an unknown variable is an error.
fn substitute_variables(expression: &str) -> Result<String, String> {
    let mut text = expression.to_string();
    for (variable, value) in [
        ("$__rate_interval", "1m"),
        ("$__interval", "5s"),
        ("$__range", "5m"),
        ("${job_id}", ".*"),
        ("$job_id", ".*"),
        ("${worker}", ".*"),
        ("$worker", ".*"),
    ] {
        text = text.replace(variable, value);
    }
    match text.find('$') {
        Some(at) => Err(format!(
            "unknown dashboard variable at `{}`",
            &text[at..text.len().min(at + 24)]
        )),
        None => Ok(text),
    }
}

#[test]
fn every_dashboard_query_returns_series_from_a_scraped_cluster() {
    let Some(binary) = prometheus_binary() else {
        eprintln!(
            "SKIPPED every_dashboard_query_returns_series_from_a_scraped_cluster: no prometheus \
             binary (install Debian's `prometheus` package, as .ci/run does, or set SHOAL_PROMETHEUS)"
        );
        return;
    };
    let dashboard = dashboard();
    let mut queries = Vec::new();
    panel_queries(&dashboard["panels"], &mut queries);
    let panel_count = queries.len();
    assert!(
        panel_count >= 20,
        "only {panel_count} panel queries found in the dashboard: the extraction is broken"
    );
    queries.extend(variable_queries(&dashboard));
    assert!(
        queries.len() > panel_count,
        "the dashboard has no variables"
    );

    let directory = scratch("cluster");
    let steps = 30;
    let spec = job_spec(&directory, steps, 2);
    let coordinator = start_coordinator(&directory.join("coordinator"));
    let worker_metrics: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let _workers: Vec<Process> = worker_metrics
        .iter()
        .enumerate()
        .map(|(index, address)| start_worker(&coordinator, &format!("observed-{index}"), address))
        .collect();
    let config = format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files:
  - "{}"
scrape_configs:
  - job_name: shoal-coordinator
    static_configs:
      - targets: ["{}"]
  - job_name: shoal-worker
    static_configs:
      - targets: [{}]
"#,
        repository().join("deploy/prometheus/alerts.yml").display(),
        // The coordinator prints a URL; a target is HOST:PORT.
        coordinator.http.trim_start_matches("http://"),
        worker_metrics
            .iter()
            .map(|address| format!("\"{address}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let prometheus = PrometheusProcess::start(&binary, &directory, &config);

    // The job trains to completion (its checkpoints are written and the
    // API is polled meanwhile).
    let runtime = runtime();
    let client = Client::new(&coordinator.http, Some(coordinator.api_token.clone())).unwrap();
    let job = runtime
        .block_on(client.submit(&spec, SpecFormat::Toml))
        .expect("the job is accepted");
    let id = job["id"].as_u64().expect("a job id");
    let started = Instant::now();
    loop {
        let job = runtime.block_on(client.job(JobId(id))).unwrap();
        if job["state"] == "completed" {
            break;
        }
        assert!(
            job["state"] != "failed" && job["state"] != "cancelled",
            "the job ended: {job:#}"
        );
        assert!(
            started.elapsed() < LIMIT,
            "the job did not complete in {LIMIT:?}: {job:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Every target is up, and Prometheus scraped the final values several
    // times (a rate needs two samples in its window).
    prometheus.wait_for(r#"count(up{job=~"shoal-.*"} == 1)"#, |up| up == 3.0);
    prometheus.wait_for("min(shoal_worker_step)", |step| step == steps as f64);
    prometheus.wait_for(r#"min(count_over_time(shoal_worker_step[1m]))"#, |n| {
        n >= 3.0
    });
    prometheus.wait_for(r#"min(count_over_time(shoal_checkpoint_step[1m]))"#, |n| {
        n >= 3.0
    });

    let settled = Instant::now();
    let mut failures = rule_failures(&prometheus);
    for query in &queries {
        let expression = match substitute_variables(&query.expression) {
            Ok(expression) => expression,
            Err(error) => {
                failures.push(format!("{}: {error}\n  {}", query.place, query.expression));
                continue;
            }
        };
        let outcome = loop {
            match prometheus.query(&expression) {
                Err(error) => break Err(error),
                Ok(series) if !series.is_empty() => break Ok(series),
                Ok(_) if settled.elapsed() < SETTLE => {
                    std::thread::sleep(Duration::from_millis(500))
                }
                Ok(_) => break Err("no series".to_string()),
            }
        };
        match (outcome, &query.label) {
            (Err(error), _) => {
                failures.push(format!("{}: {error}\n  {expression}", query.place));
            }
            (Ok(series), Some(label)) => {
                if !series
                    .iter()
                    .any(|one| one["metric"][label.as_str()].is_string())
                {
                    failures.push(format!(
                        "{}: no series of `{expression}` has the label `{label}`",
                        query.place
                    ));
                }
            }
            (Ok(_), None) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures among the alerting rules and the {} dashboard queries run against the scraped cluster:\n\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n\n")
    );
    eprintln!("{} dashboard queries returned series", queries.len());
    drop(prometheus);
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn shoal_run_serves_its_coordinator_and_workers_metrics_while_training() {
    let directory = scratch("run");
    // Long enough to be scraped while it trains; killed once seen.
    let spec = job_spec(&directory, 1_000_000, 2);
    let path = directory.join("job.toml");
    std::fs::write(&path, spec).unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let _run = Process(
        shoal()
            .arg("run")
            .arg(&path)
            .args(["--workers", "2", "--metrics-addr", &address, "--out"])
            .arg(directory.join("out"))
            // Its scratch folder lands in ours, removed even though the
            // run is killed.
            .env("TMPDIR", &directory)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start shoal run"),
    );
    let wanted = [
        // the in-process coordinator's
        r#"shoal_jobs{state="running"} 1"#,
        "shoal_workers_alive 2",
        // each worker's, told apart by the worker label
        r#"shoal_worker_step{job_id="1",worker="local-0"}"#,
        r#"shoal_worker_step{job_id="1",worker="local-1"}"#,
        // and per rank (which worker is which rank is the scheduler's choice)
        r#"shoal_worker_collective_wait_seconds_count{job_id="1",rank="0",worker="local-"#,
        r#"shoal_worker_collective_wait_seconds_count{job_id="1",rank="1",worker="local-"#,
        r#"shoal_worker_allreduce_busbw_bytes_per_second{bucket="0",job_id="1",worker="local-0"}"#,
    ];
    let started = Instant::now();
    let mut last = String::new();
    loop {
        if let Ok((200, body)) = http_get(&address, "/metrics") {
            if wanted.iter().all(|line| body.contains(line)) {
                break;
            }
            last = body;
        }
        assert!(
            started.elapsed() < LIMIT,
            "after {LIMIT:?} /metrics lacks some of {wanted:#?}; last answer:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, body) = http_get(&address, "/nowhere").unwrap();
    assert_eq!(status, 404, "{body}");
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn the_deploy_files_agree_with_each_other() {
    let deploy = repository().join("deploy");
    // The dashboard's data source is the provisioned one.
    let datasources =
        std::fs::read_to_string(deploy.join("grafana/provisioning/datasources/prometheus.yml"))
            .unwrap();
    let uid = datasources
        .lines()
        .find_map(|line| line.trim().strip_prefix("uid:"))
        .expect("the provisioned data source has a fixed uid")
        .trim()
        .to_string();
    assert!(datasources.contains("url: http://prometheus:9090"));
    let dashboard = dashboard();
    let mut uids = Vec::new();
    collect_datasource_uids(&dashboard, &mut uids);
    assert!(!uids.is_empty());
    assert!(
        uids.iter().all(|one| *one == uid),
        "the dashboard uses data sources {uids:?}, the provisioning `{uid}`"
    );
    let provider =
        std::fs::read_to_string(deploy.join("grafana/provisioning/dashboards/shoal.yml")).unwrap();
    assert!(provider.contains("path: /var/lib/grafana/dashboards"));

    // The scrape configurations are valid, if promtool is here to say so.
    let configs = [
        "prometheus/prometheus.yml",
        "prometheus/prometheus-local.yml",
    ];
    match Command::new("promtool").arg("--version").output() {
        Ok(output) if output.status.success() => {
            for config in configs {
                let checked = Command::new("promtool")
                    .args(["check", "config"])
                    .arg(deploy.join(config))
                    .output()
                    .unwrap();
                assert!(
                    checked.status.success(),
                    "promtool check config {config}: {}{}",
                    String::from_utf8_lossy(&checked.stdout),
                    String::from_utf8_lossy(&checked.stderr)
                );
            }
        }
        _ => eprintln!(
            "SKIPPED promtool check config: no promtool (Debian's `prometheus` package has it; .ci/run installs it)"
        ),
    }
    let compose = std::fs::read_to_string(deploy.join(configs[0])).unwrap();
    for needed in [
        "job_name: shoal-coordinator",
        "job_name: shoal-worker",
        "dns_sd_configs",
        "names: [\"worker\"]",
        "port: 9101",
    ] {
        assert!(compose.contains(needed), "prometheus.yml lacks `{needed}`");
    }
}

fn collect_datasource_uids(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            if let Some(uid) = object
                .get("datasource")
                .and_then(|source| source.get("uid"))
                .and_then(Value::as_str)
            {
                out.push(uid.to_string());
            }
            object
                .values()
                .for_each(|child| collect_datasource_uids(child, out));
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| collect_datasource_uids(item, out)),
        _ => {}
    }
}
