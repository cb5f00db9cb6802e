//! `shoal bench ...`: benchmarks that print JSON comparable with the anchors.
use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum BenchCommand {}

pub(crate) fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {}
}
