//! `shoal worker`: a thin front end over `worker::agent`: joins a
//! coordinator with the join token and trains what it assigns until
//! SIGTERM or Ctrl-C.
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use protocol::JoinToken;
use worker::agent::{AgentConfig, run_agent};

/// `shoal worker`.
#[derive(clap::Args)]
pub(crate) struct WorkerArgs {
    /// The coordinator's QUIC address (`host:port`; default: the address
    /// the join token names, if any).
    #[arg(long, env = "SHOAL_COORDINATOR")]
    coordinator: Option<String>,
    /// The join token (the coordinator's DATA_DIR/join-token).
    #[arg(long, env = "SHOAL_JOIN_TOKEN", hide_env_values = true)]
    join_token: String,
    /// Compute threads (default: all cores).
    #[arg(long, env = "SHOAL_THREADS")]
    threads: Option<usize>,
    /// Where this worker's ring endpoint listens (UDP).
    #[arg(long, env = "SHOAL_LISTEN_ADDR", default_value = "0.0.0.0:0")]
    listen_addr: SocketAddr,
    /// The address peers reach the ring endpoint at (`host:port`); needed
    /// when listening on a wildcard address. A port of 0 takes the bound port.
    #[arg(long, env = "SHOAL_ADVERTISE_ADDR")]
    advertise_addr: Option<String>,
    /// A name for people (default: the host name).
    #[arg(long, env = "SHOAL_WORKER_NAME")]
    name: Option<String>,
    /// Longest wait of any ring collective, in milliseconds: a dead peer is
    /// noticed within it.
    #[arg(long, env = "SHOAL_COLLECTIVE_TIMEOUT_MS", default_value_t = 10_000)]
    collective_timeout_ms: u64,
    /// Serve this worker's Prometheus metrics at http://ADDR/metrics (for
    /// example 0.0.0.0:9101; see docs/metrics.md).
    #[arg(long, env = "SHOAL_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
}

pub(crate) fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let token: JoinToken = args
        .join_token
        .trim()
        .parse()
        .context("the join token (copy it from the coordinator's DATA_DIR/join-token)")?;
    let coordinator = match (&args.coordinator, &token.address) {
        (Some(address), _) => address.clone(),
        (None, Some(address)) => address.clone(),
        (None, None) => anyhow::bail!(
            "give the coordinator's QUIC address with --coordinator HOST:PORT (or SHOAL_COORDINATOR)"
        ),
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build_global()
        .context("setting up the compute threads")?;
    let mut config = AgentConfig::new(coordinator, token, args.listen_addr);
    config.threads = threads as u32;
    config.advertise = args.advertise_addr;
    config.collective.timeout = Duration::from_millis(args.collective_timeout_ms.max(100));
    if let Some(name) = args.name {
        config.name = name;
    } else if let Ok(host) = std::env::var("HOSTNAME") {
        config.name = host;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        if let Some(address) = args.metrics_addr {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("binding the metrics endpoint to {address}"))?;
            tracing::info!(address = %listener.local_addr()?, "serving Prometheus metrics at /metrics");
            let registries = vec![config.metrics.registry().clone()];
            tokio::spawn(async move {
                if let Err(error) =
                    worker::metrics::serve(listener, registries, std::future::pending()).await
                {
                    tracing::error!(%error, "the metrics endpoint stopped");
                }
            });
        }
        run_agent(config, stop_signal(), None)
            .await
            .context("the worker stopped")
    })
}

/// Completes on SIGTERM or Ctrl-C.
async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("a SIGTERM handler");
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("stopping: leaving the coordinator");
}
