//! `shoal worker`: a thin front end over `worker::agent`: joins a
//! coordinator with the join token (given, or read from a file the
//! coordinator writes) and trains what it assigns until SIGTERM or Ctrl-C.
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::pin;
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
    #[arg(
        long,
        env = "SHOAL_JOIN_TOKEN",
        hide_env_values = true,
        required_unless_present = "join_token_file",
        conflicts_with = "join_token_file"
    )]
    join_token: Option<String>,
    /// Read the join token from this file, waiting until it exists (the
    /// coordinator writes it there with `--join-token-out`, e.g. on a shared
    /// volume).
    #[arg(long, env = "SHOAL_JOIN_TOKEN_FILE")]
    join_token_file: Option<PathBuf>,
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
    /// Advertise the address this machine's host name resolves to (the
    /// first that is not loopback), with the port of `--listen-addr`: under
    /// docker compose, each container's address on the project's network.
    #[arg(long, env = "SHOAL_ADVERTISE_HOSTNAME")]
    advertise_hostname: bool,
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: WorkerArgs) -> anyhow::Result<()> {
    let mut stop = pin!(stop_signal());
    let text = match (&args.join_token, &args.join_token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(path)) => {
            tokio::select! {
                token = wait_for_token_file(path) => token?,
                () = &mut stop => return Ok(()),
            }
        }
        (None, None) => anyhow::bail!("give --join-token TOKEN or --join-token-file FILE"),
    };
    let token: JoinToken = text
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
    if args.advertise_hostname && args.advertise_addr.is_some() {
        anyhow::bail!(
            "give either --advertise-addr or --advertise-hostname (SHOAL_ADVERTISE_ADDR or \
             SHOAL_ADVERTISE_HOSTNAME), not both"
        );
    }
    config.advertise = if args.advertise_hostname {
        Some(hostname_address(args.listen_addr).await?.to_string())
    } else {
        args.advertise_addr
    };
    config.collective.timeout = Duration::from_millis(args.collective_timeout_ms.max(100));
    if let Some(name) = args.name {
        config.name = name;
    } else if let Some(host) = host_name() {
        config.name = host;
    }
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
    run_agent(config, stop, None)
        .await
        .context("the worker stopped")
}

/// The token in `path` once the file exists (the coordinator writes it
/// atomically, so an existing file is whole).
async fn wait_for_token_file(path: &Path) -> anyhow::Result<String> {
    let mut told = false;
    loop {
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => return Ok(text),
            Ok(_) => anyhow::bail!(
                "the join token file {} is empty (the coordinator's --join-token-out writes it)",
                path.display()
            ),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if !told {
                    eprintln!(
                        "waiting for the join token at {} (the coordinator writes it with --join-token-out)",
                        path.display()
                    );
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("reading the join token from {}", path.display()));
            }
        }
    }
}

/// This machine's host name: the kernel's, else `HOSTNAME`.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
}

/// The first address of the host name that is not loopback (of the same
/// family as `listen` when there is one), with `listen`'s port.
async fn hostname_address(listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    let name = host_name().context(
        "--advertise-hostname: this machine has no host name (give --advertise-addr HOST:PORT)",
    )?;
    let addresses: Vec<IpAddr> = tokio::net::lookup_host((name.as_str(), listen.port()))
        .await
        .with_context(|| format!("--advertise-hostname: resolving the host name {name:?}"))?
        .map(|address| address.ip())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .collect();
    let chosen = addresses
        .iter()
        .find(|ip| ip.is_ipv4() == listen.is_ipv4())
        .or(addresses.first())
        .with_context(|| {
            format!(
                "--advertise-hostname: the host name {name:?} resolves to no address other than loopback; \
                 give --advertise-addr HOST:PORT, the address other workers reach this one at"
            )
        })?;
    Ok(SocketAddr::new(*chosen, listen.port()))
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
