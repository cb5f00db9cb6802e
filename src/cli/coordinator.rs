//! `shoal coordinator` (serve the job API) and the thin HTTP clients of it:
//! `shoal submit [--follow]`, `shoal jobs`, `shoal job`, `shoal cancel`,
//! `shoal workers`, `shoal checkpoint`, `shoal plot`. The coordinator's
//! address and token come from `--coordinator`/`--token` or
//! `SHOAL_COORDINATOR`/`SHOAL_API_TOKEN`; errors say what to do next.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use coordinator::CoordinatorError;
use coordinator::client::Client;
use coordinator::scheduler::SchedulerConfig;
use coordinator::spec::JobSpec;
use coordinator::tokens::{self, TokenSource};
use coordinator::{Coordinator, CoordinatorConfig, JobId};
use serde_json::Value;

use crate::cli::{report, spec_file};

/// `shoal coordinator`.
#[derive(clap::Args)]
pub(crate) struct CoordinatorArgs {
    /// Directory of the job store, checkpoints, certificate and tokens
    /// (created if needed).
    #[arg(long, env = "SHOAL_DATA_DIR")]
    data_dir: PathBuf,
    /// Address of the HTTP API.
    #[arg(long, env = "SHOAL_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// Address of the QUIC endpoint workers join.
    #[arg(long, env = "SHOAL_QUIC_ADDR", default_value = "0.0.0.0:7070")]
    quic_addr: SocketAddr,
    /// The API bearer token (default: DATA_DIR/api-token, created on first start).
    #[arg(long, env = "SHOAL_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// The join token workers present (default: DATA_DIR/join-token, created
    /// on first start); it must pin this coordinator's certificate.
    #[arg(long, env = "SHOAL_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// Also write the join token to this file at every start (atomically,
    /// owner-only), e.g. on a volume that workers mount and read with
    /// `shoal worker --join-token-file`.
    #[arg(long, env = "SHOAL_JOIN_TOKEN_OUT")]
    join_token_out: Option<PathBuf>,
    /// Seconds without a heartbeat after which a worker is declared dead
    /// (workers heartbeat three times per timeout).
    #[arg(long, env = "SHOAL_HEARTBEAT_TIMEOUT_S", default_value_t = 10)]
    heartbeat_timeout_s: u64,
    /// The same in milliseconds (overrides the seconds; tests use ~1500).
    #[arg(long, env = "SHOAL_HEARTBEAT_TIMEOUT_MS")]
    heartbeat_timeout_ms: Option<u64>,
}

/// Where the coordinator is and how to authenticate.
#[derive(clap::Args)]
pub(crate) struct ClientArgs {
    /// The coordinator's HTTP API.
    #[arg(
        long = "coordinator",
        env = "SHOAL_COORDINATOR",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// The API bearer token (the coordinator's DATA_DIR/api-token).
    #[arg(long, env = "SHOAL_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// `shoal submit`.
#[derive(clap::Args)]
pub(crate) struct SubmitArgs {
    /// The job spec: TOML, or JSON if the name ends in `.json`.
    file: PathBuf,
    /// Print the job as JSON.
    #[arg(long)]
    json: bool,
    /// Wait for the job to finish, printing its steps as they are reported;
    /// exits non-zero unless it completes.
    #[arg(long)]
    follow: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// `shoal checkpoint`.
#[derive(clap::Args)]
pub(crate) struct CheckpointArgs {
    /// The job's id.
    id: u64,
    /// Where to write the latest checkpoint (safetensors): a local path or
    /// an object-store URL (`s3://bucket/key.safetensors`), written
    /// atomically.
    #[arg(long)]
    out: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// `shoal plot`.
#[derive(clap::Args)]
pub(crate) struct PlotArgs {
    /// The job's id.
    id: u64,
    /// Folder for the plots (default: the current one).
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// File name without extension: writes STEM.png and STEM.svg
    /// (default: job-ID-loss).
    #[arg(long)]
    stem: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// `shoal jobs` and `shoal workers`.
#[derive(clap::Args)]
pub(crate) struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// `shoal job` and `shoal cancel`.
#[derive(clap::Args)]
pub(crate) struct JobArgs {
    /// The job's id.
    id: u64,
    #[command(flatten)]
    client: ClientArgs,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `shoal coordinator`: creates the tokens on first start, opens the job
/// store and serves the HTTP API until Ctrl-C or SIGTERM.
pub(crate) fn run(args: CoordinatorArgs) -> anyhow::Result<()> {
    runtime()?.block_on(serve(args))
}

async fn serve(args: CoordinatorArgs) -> anyhow::Result<()> {
    let data_dir = &args.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let api_token_path = data_dir.join("api-token");
    let (api_token, api_source) =
        tokens::load_or_create(&api_token_path, args.api_token.as_deref())?;

    let identity = protocol::transport::Identity::load_or_create(data_dir)?;
    let join_token_path = data_dir.join("join-token");
    let advertised = (!args.quic_addr.ip().is_unspecified() && args.quic_addr.port() != 0)
        .then(|| args.quic_addr.to_string());
    let (join_token, join_source) = tokens::load_or_create_join_token(
        &join_token_path,
        &identity,
        advertised,
        args.join_token.as_deref(),
    )?;

    if let Some(out) = &args.join_token_out {
        export_join_token(out, &join_token.to_string())?;
    }

    let heartbeat_timeout = match args.heartbeat_timeout_ms {
        Some(milliseconds) => Duration::from_millis(milliseconds.max(30)),
        None => Duration::from_secs(args.heartbeat_timeout_s.max(1)),
    };
    let (coordinator, actions) = Coordinator::open(CoordinatorConfig {
        data_dir: data_dir.clone(),
        api_token,
        scheduler: SchedulerConfig { heartbeat_timeout },
    })?;

    // The workers' QUIC endpoint: registration with the join token,
    // heartbeats, reports, and the scheduler's actions as messages.
    let tuning = protocol::transport::TransportTuning::default();
    let endpoint = protocol::transport::bind_endpoint(
        args.quic_addr,
        Some(protocol::transport::server_config(&identity, &tuning)?),
        &tuning,
    )?;
    let quic_addr = endpoint.local_addr()?;
    tokio::spawn(coordinator::quic::serve_workers(
        coordinator.clone(),
        endpoint,
        coordinator::quic::WorkerEndpointConfig {
            secret: join_token.secret.clone(),
            heartbeat_interval: heartbeat_timeout / 3,
            handshake_timeout: Duration::from_secs(10),
        },
        actions,
    ));
    let ticker = coordinator.clone();
    tokio::spawn(async move {
        loop {
            let wait = ticker.tick().unwrap_or_else(|error| {
                tracing::error!(%error, "scheduler tick failed");
                Duration::from_secs(1)
            });
            tokio::time::sleep(wait.min(heartbeat_timeout / 4)).await;
        }
    });

    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding the HTTP API to {}", args.http_addr))?;
    let http_addr = listener.local_addr()?;
    let described = |source: TokenSource| match source {
        TokenSource::Given => "given on the command line or in the environment",
        TokenSource::File => "read from",
        TokenSource::Created => "created in",
    };
    let where_ = |source: TokenSource, path: &std::path::Path| match source {
        TokenSource::Given => described(source).to_string(),
        _ => format!("{} {}", described(source), path.display()),
    };
    println!("shoal coordinator");
    println!("  data directory: {}", data_dir.display());
    println!(
        "  HTTP API:       http://{http_addr}  (bearer token {})",
        where_(api_source, &api_token_path)
    );
    println!(
        "  workers (QUIC): {quic_addr}  (join token {}; certificate {})",
        where_(join_source, &join_token_path),
        identity.fingerprint()
    );
    if let Some(out) = &args.join_token_out {
        println!("  join token also written to {}", out.display());
    }
    println!();
    println!("Submit a job:");
    println!(
        "  SHOAL_COORDINATOR=http://{http_addr} SHOAL_API_TOKEN=$(cat {}) shoal submit examples/jobs/mlp.toml",
        api_token_path.display()
    );
    println!("Start a worker:");
    println!(
        "  shoal worker --coordinator HOST:{} --join-token $(cat {})",
        quic_addr.port(),
        join_token_path.display()
    );

    coordinator::http::serve(listener, coordinator, shutdown_signal())
        .await
        .context("serving the HTTP API")
}

/// Writes the join token to `out` for workers to read: a temporary file in
/// the same folder, synced, then renamed, so a worker never reads half a
/// token.
fn export_join_token(out: &std::path::Path, token: &str) -> anyhow::Result<()> {
    let folder = out
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(folder)
        .with_context(|| format!("creating {} for the join token", folder.display()))?;
    let name = out
        .file_name()
        .with_context(|| format!("--join-token-out {} names no file", out.display()))?;
    let temporary = folder.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&temporary);
    tokens::write_secret(&temporary, token)
        .with_context(|| format!("writing the join token to {}", temporary.display()))?;
    std::fs::rename(&temporary, out)
        .with_context(|| format!("moving the join token to {}", out.display()))
}

/// Completes on Ctrl-C or SIGTERM (what `docker stop` and Kubernetes send;
/// as a container's first process, an unhandled SIGTERM would be ignored).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "no SIGTERM handler: only Ctrl-C stops the coordinator");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = terminate => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn client(args: &ClientArgs) -> anyhow::Result<Client> {
    Ok(Client::new(&args.url, args.token.clone())?)
}

/// A client error with what the person can do about it.
fn explain(error: CoordinatorError, args: &ClientArgs) -> anyhow::Error {
    match &error {
        CoordinatorError::Api { status: 401, .. } => {
            let given = if args.token.is_some() {
                "the token given was refused"
            } else {
                "no token was given"
            };
            anyhow::anyhow!(
                "{error}\n{given}: pass --token TOKEN or set SHOAL_API_TOKEN to the contents of the \
                 coordinator's DATA_DIR/api-token (its start-up lines say where that is)"
            )
        }
        CoordinatorError::NoCoordinator { .. } => anyhow::anyhow!(
            "{error}\nor point at a running one with --coordinator http://HOST:PORT or SHOAL_COORDINATOR \
             (now {})",
            args.url
        ),
        _ => anyhow::Error::new(error),
    }
}

/// Runs one client call on a fresh runtime, explaining its errors.
fn call<T>(
    args: &ClientArgs,
    request: impl AsyncFnOnce(Client) -> Result<T, CoordinatorError>,
) -> anyhow::Result<T> {
    let client = client(args)?;
    runtime()?
        .block_on(request(client))
        .map_err(|error| explain(error, args))
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// `shoal submit JOB.toml`: checks the spec here first (errors name the
/// file, line and field), then submits it.
pub(crate) fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let spec = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let format = spec_file::format_of(&args.file);
    JobSpec::parse(&spec, format)
        .map_err(|error| spec_file::locate(&args.file, &spec, format, error))?;
    let job = call(&args.client, async |client| {
        client.submit(&spec, format).await
    })?;
    if args.json && !args.follow {
        return print_json(&job);
    }
    let id = job["id"]
        .as_u64()
        .context("the coordinator's answer has no job id")?;
    if !args.json {
        println!(
            "job {id} submitted: {} (follow it with `shoal job {id}`)",
            text(&job["state"]),
        );
    }
    if args.follow {
        return follow(&args.client, JobId(id), args.json);
    }
    Ok(())
}

/// Polls job `id` until it is completed, failed or cancelled, printing each
/// newly reported step (as JSON lines with `json`); fails unless it
/// completed.
fn follow(args: &ClientArgs, id: JobId, json: bool) -> anyhow::Result<()> {
    let client = client(args)?;
    let runtime = runtime()?;
    let mut printed: Option<u64> = None;
    let mut last_state = String::new();
    loop {
        let (job, metrics) = runtime
            .block_on(async {
                Ok::<_, CoordinatorError>((client.job(id).await?, client.metrics(id).await?))
            })
            .map_err(|error: CoordinatorError| explain(error, args))?;
        for step in metrics["steps"].as_array().into_iter().flatten() {
            let Some(number) = step["step"].as_u64() else {
                continue;
            };
            if printed.is_some_and(|done| number <= done) {
                continue;
            }
            printed = Some(number);
            if json {
                println!("{}", serde_json::to_string(step)?);
            } else {
                let values: Vec<String> = step["values"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, value)| {
                        format!("{name} {:.4}", value.as_f64().unwrap_or(f64::NAN))
                    })
                    .collect();
                println!("step {number:>6}  {}", values.join("  "));
            }
        }
        let state = text(&job["state"]);
        if state != last_state {
            if !json {
                println!("job {id}: {state}");
            }
            last_state = state.clone();
        }
        match state.as_str() {
            "completed" => {
                if json {
                    print_json(&job)?;
                }
                return Ok(());
            }
            "failed" | "cancelled" => {
                if json {
                    print_json(&job)?;
                }
                let reason = job["error"].as_str().unwrap_or("no reason recorded");
                anyhow::bail!("job {id} {state}: {reason}");
            }
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// `shoal checkpoint ID --out FILE`: the job's latest checkpoint.
pub(crate) fn checkpoint(args: CheckpointArgs) -> anyhow::Result<()> {
    let id = JobId(args.id);
    let bytes = call(&args.client, async |client| client.checkpoint(id).await)?;
    let (size, sha256) = (bytes.len(), worker::single_node::sha256_hex(&bytes));
    storage::write_atomic(&args.out, bytes)?;
    println!(
        "job {id}: checkpoint written to {} ({size} bytes, sha256 {sha256})",
        args.out
    );
    Ok(())
}

/// `shoal plot ID`: the job's loss curves from the coordinator's metrics
/// history, as PNG and SVG: every value named `loss` or `..._loss` (the
/// objectives' losses and the evaluation scores), not the learning rate,
/// gradient norms or timings the history also holds.
pub(crate) fn plot(args: PlotArgs) -> anyhow::Result<()> {
    let id = JobId(args.id);
    let (job, metrics) = call(&args.client, async |client| {
        Ok::<_, CoordinatorError>((client.job(id).await?, client.metrics(id).await?))
    })?;
    let steps: Vec<(u64, Vec<(String, f32)>)> = metrics["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|step| {
            let values = step["values"]
                .as_object()?
                .iter()
                .filter(|(name, _)| name.as_str() == "loss" || name.ends_with("_loss"))
                .filter_map(|(name, value)| Some((name.clone(), value.as_f64()? as f32)))
                .collect::<Vec<_>>();
            Some((step["step"].as_u64()?, values))
        })
        .collect();
    if steps.is_empty() {
        anyhow::bail!(
            "job {id} ({}) has reported no step yet: nothing to plot",
            text(&job["state"])
        );
    }
    let stem = args.stem.unwrap_or_else(|| format!("job-{id}-loss"));
    let name = job["name"]
        .as_str()
        .map_or(String::new(), |n| format!(" {n}"));
    let title = format!("job {id}{name} ({})", text(&job["model"]));
    let written = report::plot_losses(&args.out, &stem, &title, &report::loss_series(&steps))?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

/// `shoal jobs`.
pub(crate) fn jobs(args: ListArgs) -> anyhow::Result<()> {
    let answer = call(&args.client, async |client| client.jobs().await)?;
    if args.json {
        return print_json(&answer);
    }
    println!(
        "{:>5}  {:<20}  {:<13}  {:>8}  {:>7}  NAME",
        "ID", "STATE", "MODEL", "STEP", "WORKERS"
    );
    for job in answer["jobs"].as_array().into_iter().flatten() {
        println!(
            "{:>5}  {:<20}  {:<13}  {:>8}  {:>7}  {}",
            text(&job["id"]),
            text(&job["state"]),
            text(&job["model"]),
            text(&job["last_step"]),
            job["workers"].as_array().map_or(0, Vec::len),
            text(&job["name"]),
        );
    }
    Ok(())
}

/// `shoal job ID`: the job's details as JSON.
pub(crate) fn job(args: JobArgs) -> anyhow::Result<()> {
    let id = JobId(args.id);
    print_json(&call(&args.client, async |client| client.job(id).await)?)
}

/// `shoal cancel ID`.
pub(crate) fn cancel(args: JobArgs) -> anyhow::Result<()> {
    let id = JobId(args.id);
    let job = call(&args.client, async |client| client.cancel(id).await)?;
    println!("job {} {}", text(&job["id"]), text(&job["state"]));
    Ok(())
}

/// `shoal workers`.
pub(crate) fn workers(args: ListArgs) -> anyhow::Result<()> {
    let answer = call(&args.client, async |client| client.workers().await)?;
    if args.json {
        return print_json(&answer);
    }
    println!(
        "{:>5}  {:<24}  {:>7}  {:>5}  {:>14}",
        "ID", "ADDRESS", "THREADS", "JOB", "HEARTBEAT AGO"
    );
    for worker in answer["workers"].as_array().into_iter().flatten() {
        println!(
            "{:>5}  {:<24}  {:>7}  {:>5}  {:>12}ms",
            text(&worker["id"]),
            text(&worker["address"]),
            text(&worker["threads"]),
            text(&worker["job"]),
            text(&worker["last_heartbeat_ms_ago"]),
        );
    }
    Ok(())
}
