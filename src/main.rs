//! The `shoal` command line: a thin clap front end over the workspace crates.
//! Each subcommand lives in its own module under `src/cli/`.
#![forbid(unsafe_code)]
mod cli;

/// mimalloc keeps freed pages for reuse: with glibc's allocator every
/// training step paid page faults again for its fresh gradient buffers
/// (the autodiff GEMM kept 67-86% of faer's speed at n = 512).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// shoal: distributed data-parallel training of the models of "The Missing
/// Bits" (recurrent and state-space models, autoencoders, GANs, graph
/// networks, self-supervised objectives), over QUIC.
#[derive(Parser)]
#[command(name = "shoal", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure kernels, models and collectives.
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
    /// Generate synthetic datasets and inspect Parquet files.
    #[command(subcommand)]
    Data(cli::data::DataCommand),
    /// Run the coordinator: the job API, the job store and the scheduler.
    Coordinator(cli::coordinator::CoordinatorArgs),
    /// Submit a job spec (TOML, or JSON) to a coordinator.
    Submit(cli::coordinator::SubmitArgs),
    /// List a coordinator's jobs.
    Jobs(cli::coordinator::ListArgs),
    /// Show one job: state, spec, transitions, latest checkpoint.
    Job(cli::coordinator::JobArgs),
    /// Cancel a job.
    Cancel(cli::coordinator::JobArgs),
    /// List a coordinator's live workers.
    Workers(cli::coordinator::ListArgs),
    /// Download a job's latest checkpoint (safetensors, PyTorch names).
    Checkpoint(cli::coordinator::CheckpointArgs),
    /// Plot a job's loss curves from the coordinator's metrics (PNG, SVG).
    Plot(cli::coordinator::PlotArgs),
    /// Run a worker: join a coordinator with its join token and train the
    /// jobs it assigns, until SIGTERM or Ctrl-C.
    Worker(cli::worker::WorkerArgs),
    /// Train a job in single-node mode: its workers as tasks of this process,
    /// joined by a loopback QUIC ring; writes the checkpoint and metrics.
    Run(cli::run::RunArgs),
    /// Generate data and train a few models of the zoo, printing a summary.
    Demo(cli::demo::DemoArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Services log their life (registrations, rings, checkpoints) at info;
    // commands a person watches (run, demo, the clients) print their own
    // progress and show only warnings and errors. RUST_LOG overrides both.
    let default_level = match cli.command {
        Command::Coordinator(_) | Command::Worker(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    // Datasets, initial checkpoints and outputs may be object-store URLs
    // (`s3://bucket/prefix/`) everywhere: the CLI, the coordinator's
    // planning and the workers' reading all open data through `datasets`.
    storage::register();
    match cli.command {
        Command::Bench(command) => cli::bench::run(command),
        Command::Data(command) => cli::data::run(command),
        Command::Coordinator(args) => cli::coordinator::run(args),
        Command::Submit(args) => cli::coordinator::submit(args),
        Command::Jobs(args) => cli::coordinator::jobs(args),
        Command::Job(args) => cli::coordinator::job(args),
        Command::Cancel(args) => cli::coordinator::cancel(args),
        Command::Workers(args) => cli::coordinator::workers(args),
        Command::Checkpoint(args) => cli::coordinator::checkpoint(args),
        Command::Plot(args) => cli::coordinator::plot(args),
        Command::Worker(args) => cli::worker::run(args),
        Command::Run(args) => cli::run::run(args),
        Command::Demo(args) => cli::demo::run(args),
    }
}
