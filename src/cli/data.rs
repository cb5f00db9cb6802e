//! `shoal data ...`: generate synthetic datasets and inspect Parquet files.
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use datasets::generate::{Generator, GeneratorOptions};

#[derive(Subcommand)]
pub(crate) enum DataCommand {
    /// Write a synthetic dataset as Parquet: selective-copy, induction-heads,
    /// adding, copy-memory, gaussian-ring, sbm-graph (also writes
    /// STEM.edges.parquet) or digits (the bundled 8x8 images).
    Gen {
        /// The task to generate.
        task: String,
        /// The Parquet file to write.
        #[arg(long)]
        out: PathBuf,
        /// Number of rows (nodes for sbm-graph); the task's default if absent.
        #[arg(long)]
        rows: Option<u64>,
        /// Seed of the generator.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Sequence length (sequence tasks).
        #[arg(long)]
        length: Option<usize>,
        /// Vocabulary size (sequence tasks).
        #[arg(long)]
        vocab: Option<usize>,
        /// Number of data tokens (selective-copy, copy-memory).
        #[arg(long)]
        data_tokens: Option<usize>,
        /// Rows to skip first (digits only): `--rows 1500` and `--skip 1500`
        /// make a training set and a held-out set.
        #[arg(long, default_value_t = 0)]
        skip: u64,
    },
    /// Print the schema, row groups, row count, fingerprint and the tasks
    /// the columns fit, of the dataset made of FILE... (files, directories, globs).
    Inspect {
        /// Files, directories or glob patterns, read as one dataset.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub(crate) fn run(command: DataCommand) -> anyhow::Result<()> {
    match command {
        DataCommand::Gen {
            task,
            out,
            rows,
            seed,
            length,
            vocab,
            data_tokens,
            skip,
        } => {
            let generator = Generator::from_name(&task)?;
            let options = GeneratorOptions {
                rows,
                seed,
                length,
                vocab,
                data_tokens,
                skip,
            };
            if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            let written = generator
                .write(&options, &out)
                .with_context(|| format!("generating {task}"))?;
            for path in written {
                println!("{}", path.display());
            }
            Ok(())
        }
        DataCommand::Inspect { files } => {
            let report = datasets::inspect(&files)?;
            print!("{report}");
            Ok(())
        }
    }
}
