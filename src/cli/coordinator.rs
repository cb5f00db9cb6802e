//! `shoal coordinator` (serve the job API) and the thin HTTP clients of it:
//! `shoal submit`, `shoal jobs`, `shoal job`, `shoal cancel`, `shoal workers`.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use coordinator::client::Client;
use coordinator::scheduler::SchedulerConfig;
use coordinator::spec::SpecFormat;
use coordinator::tokens::{self, TokenSource};
use coordinator::{Coordinator, CoordinatorConfig, JobId};
use serde_json::Value;

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
    /// Seconds without a heartbeat after which a worker is declared dead.
    #[arg(long, default_value_t = 10)]
    heartbeat_timeout_s: u64,
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
/// store and serves the HTTP API until Ctrl-C.
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

    let (coordinator, actions) = Coordinator::open(CoordinatorConfig {
        data_dir: data_dir.clone(),
        api_token,
        scheduler: SchedulerConfig {
            heartbeat_timeout: Duration::from_secs(args.heartbeat_timeout_s.max(1)),
        },
    })?;

    // The workers' QUIC endpoint: registration with the join token,
    // heartbeats, reports, and the scheduler's actions as messages.
    let heartbeat_timeout = Duration::from_secs(args.heartbeat_timeout_s.max(1));
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
            tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
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

    coordinator::http::serve(listener, coordinator, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .context("serving the HTTP API")
}

fn client(args: &ClientArgs) -> anyhow::Result<Client> {
    Ok(Client::new(&args.url, args.token.clone())?)
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

/// `shoal submit JOB.toml`.
pub(crate) fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let spec = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let format = match args
        .file
        .extension()
        .and_then(|extension| extension.to_str())
    {
        Some("json") => SpecFormat::Json,
        _ => SpecFormat::Toml,
    };
    let client = client(&args.client)?;
    let job = runtime()?.block_on(client.submit(&spec, format))?;
    if args.json {
        return print_json(&job);
    }
    println!(
        "job {} submitted: {} (follow it with `shoal job {}`)",
        text(&job["id"]),
        text(&job["state"]),
        text(&job["id"])
    );
    Ok(())
}

/// `shoal jobs`.
pub(crate) fn jobs(args: ListArgs) -> anyhow::Result<()> {
    let client = client(&args.client)?;
    let answer = runtime()?.block_on(client.jobs())?;
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
    let client = client(&args.client)?;
    print_json(&runtime()?.block_on(client.job(JobId(args.id)))?)
}

/// `shoal cancel ID`.
pub(crate) fn cancel(args: JobArgs) -> anyhow::Result<()> {
    let client = client(&args.client)?;
    let job = runtime()?.block_on(client.cancel(JobId(args.id)))?;
    println!("job {} {}", text(&job["id"]), text(&job["state"]));
    Ok(())
}

/// `shoal workers`.
pub(crate) fn workers(args: ListArgs) -> anyhow::Result<()> {
    let client = client(&args.client)?;
    let answer = runtime()?.block_on(client.workers())?;
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
