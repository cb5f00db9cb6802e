//! The `shoal` command line: a thin clap front end over the workspace crates.
//! Each subcommand lives in its own module under `src/cli/`.
#![forbid(unsafe_code)]
mod cli;

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
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(command) => cli::bench::run(command),
        Command::Data(command) => cli::data::run(command),
    }
}
