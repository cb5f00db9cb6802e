//! A coordinator and N workers in this process, talking QUIC over loopback
//! through exactly the code of `shoal coordinator` and `shoal worker`
//! (`coordinator::quic::serve_workers` and `worker::agent::run_agent`):
//! what `shoal run` and `shoal demo` train with. The coordinator's data
//! directory is a temporary folder removed at the end. With a metrics
//! address, one `/metrics` endpoint serves the coordinator's metrics and
//! those of every worker (one registry, labelled by worker).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use coordinator::scheduler::SchedulerConfig;
use coordinator::spec::JobSpec;
use coordinator::{Coordinator, CoordinatorConfig, JobState};
use protocol::transport::{Identity, TransportTuning, bind_endpoint, server_config};
use tokio::sync::{mpsc, watch};
use worker::agent::{AgentConfig, AgentStep, run_agent};
use worker::metrics::WorkerMetrics;
use worker::single_node::{RunReport, TimedStep, sha256_hex};

/// A temporary data directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch() -> anyhow::Result<Scratch> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let path = std::env::temp_dir().join(format!("shoal-run-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&path)
        .with_context(|| format!("creating the run's data directory {}", path.display()))?;
    Ok(Scratch(path))
}

/// Trains `spec` (whose data paths are resolved) on `workers` in-process
/// workers; `on_step` sees every step. With `metrics_addr`, serves the
/// Prometheus metrics of the coordinator and the workers there while the
/// job runs. Returns the final checkpoint.
pub(crate) async fn train_in_process(
    mut spec: JobSpec,
    total_steps: u64,
    workers: usize,
    metrics_addr: Option<SocketAddr>,
    mut on_step: impl FnMut(&TimedStep),
) -> anyhow::Result<RunReport> {
    let directory = scratch()?;
    // Exactly these workers, all of them.
    spec.workers.min = workers as u32;
    spec.workers.max = Some(workers as u32);
    let (coordinator, actions) = Coordinator::open(CoordinatorConfig {
        data_dir: directory.0.clone(),
        api_token: "in-process".to_string(),
        scheduler: SchedulerConfig::default(),
    })?;
    let identity = Identity::generate()?;
    let token = protocol::transport::generate_join_token(&identity, None)?;
    let tuning = TransportTuning::default();
    let endpoint = bind_endpoint(
        "127.0.0.1:0".parse().expect("an address"),
        Some(server_config(&identity, &tuning)?),
        &tuning,
    )?;
    let address = endpoint.local_addr()?;
    let heartbeat_timeout = SchedulerConfig::default().heartbeat_timeout;
    let server = tokio::spawn(coordinator::quic::serve_workers(
        coordinator.clone(),
        endpoint.clone(),
        coordinator::quic::WorkerEndpointConfig {
            secret: token.secret.clone(),
            heartbeat_interval: heartbeat_timeout / 3,
            handshake_timeout: Duration::from_secs(10),
        },
        actions,
    ));
    let ticker = {
        let coordinator = coordinator.clone();
        tokio::spawn(async move {
            loop {
                let wait = coordinator.tick().unwrap_or(Duration::from_secs(1));
                tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
            }
        })
    };

    let worker_metrics = WorkerMetrics::new();
    let metrics_server = match metrics_addr {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("binding the metrics endpoint to {address}"))?;
            eprintln!("metrics: http://{}/metrics", listener.local_addr()?);
            let registries = vec![
                coordinator.metrics().registry.clone(),
                worker_metrics.registry().clone(),
            ];
            Some(tokio::spawn(worker::metrics::serve(
                listener,
                registries,
                std::future::pending(),
            )))
        }
        None => None,
    };

    let (stop, stopped) = watch::channel(false);
    let (steps, mut step_reports) = mpsc::unbounded_channel::<AgentStep>();
    let mut agents = Vec::with_capacity(workers);
    for index in 0..workers {
        let mut config = AgentConfig::new(
            address.to_string(),
            token.clone(),
            "127.0.0.1:0".parse().expect("an address"),
        );
        config.name = format!("local-{index}");
        config.metrics = worker_metrics.clone();
        let mut stopped = stopped.clone();
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        agents.push(tokio::spawn(run_agent(
            config,
            shutdown,
            Some(steps.clone()),
        )));
    }
    drop(steps);

    let id = coordinator.submit(&spec)?;
    let outcome = loop {
        let job = coordinator.job(id)?;
        if job.state.is_terminal() {
            break job;
        }
        tokio::select! {
            report = step_reports.recv() => match report {
                Some(report) => on_step(&report.step),
                None => bail!("every in-process worker stopped"),
            },
            // The state changes without a step report (the end, a failure).
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    };
    while let Ok(report) = step_reports.try_recv() {
        on_step(&report.step);
    }
    let _ = stop.send(true);
    for agent in agents {
        match agent.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "an in-process worker failed"),
            Err(error) => tracing::warn!(%error, "an in-process worker panicked"),
        }
    }
    ticker.abort();
    if let Some(server) = metrics_server {
        server.abort();
    }
    endpoint.close(0u32.into(), b"run over");
    server.abort();
    if outcome.state != JobState::Completed {
        bail!(
            "the job {}: {}",
            outcome.state,
            outcome
                .error
                .unwrap_or_else(|| "no reason given".to_string())
        );
    }
    let record = coordinator
        .latest_checkpoint(id)?
        .context("the job completed without a checkpoint")?;
    if record.step != total_steps {
        bail!(
            "the latest checkpoint is of step {} of {total_steps}",
            record.step
        );
    }
    let checkpoint = std::fs::read(&record.path)
        .with_context(|| format!("reading the final checkpoint {}", record.path))?;
    let checkpoint_sha256 = sha256_hex(&checkpoint);
    Ok(RunReport {
        checkpoint,
        checkpoint_sha256,
    })
}
