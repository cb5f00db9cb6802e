//! `shoal demo`: the embedded default. With no data of the user's, it
//! generates its datasets, trains a few models of the zoo back to back in
//! single-node mode (2 workers over a loopback QUIC ring by default), prints
//! a summary table and writes a report folder (metrics and checkpoints).
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use coordinator::spec::{JobSpec, SpecFormat};
use datasets::generate::{Generator, GeneratorOptions};

use crate::cli::run::{prepare, train, write_outputs};

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Where the data, metrics and checkpoints go.
    #[arg(long, default_value = "out/demo")]
    out: PathBuf,
    /// Workers per job.
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

/// A demo job: its spec, with `{data}` standing for the data folder.
struct DemoJob {
    title: &'static str,
    spec: &'static str,
}

const JOBS: &[DemoJob] = &[
    DemoJob {
        title: "MLP classifier on the 8x8 digits",
        spec: r#"
name = "mlp-digits"
seed = 1
global_batch = 64
virtual_ranks = 4
steps = 300
[model]
kind = "mlp"
config = { d_in = 64, d_hidden = 64, n_classes = 10 }
[data]
paths = ["{data}/digits.parquet"]
columns = { x = "pixels", label = "label" }
[inputs]
scale = 0.0625
[optimizer]
kind = "adamw"
lr = 3e-3
"#,
    },
    DemoJob {
        title: "VAE on the digits (ELBO, Bernoulli decoder)",
        spec: r#"
name = "vae-digits"
seed = 2
global_batch = 64
virtual_ranks = 4
steps = 300
[model]
kind = "vae"
config = { d = 64, d_hidden = 128, d_latent = 8 }
[data]
paths = ["{data}/digits.parquet"]
columns = { x = "pixels" }
[inputs]
scale = 0.0625
[optimizer]
kind = "adamw"
lr = 2e-3
"#,
    },
    DemoJob {
        title: "GAN on a ring of 8 Gaussians",
        spec: r#"
name = "gan-ring"
seed = 3
global_batch = 128
virtual_ranks = 4
steps = 400
[model]
kind = "gan"
config = { d_latent = 4, d_hidden = 64, d_data = 2 }
[data]
paths = ["{data}/gaussian-ring.parquet"]
columns = { x = "x" }
[optimizer]
kind = "adamw"
lr = 1e-3
"#,
    },
    DemoJob {
        title: "Mamba on selective copying",
        spec: r#"
name = "mamba-selective-copy"
seed = 4
global_batch = 32
virtual_ranks = 4
steps = 600
[model]
kind = "mamba"
config = { vocab = 16, d_model = 32, n_layers = 2, d_state = 8 }
[data]
paths = ["{data}/selective-copy.parquet"]
columns = { tokens = "tokens", targets = "targets" }
[optimizer]
kind = "adamw"
lr = 1e-2
"#,
    },
];

/// Writes the demo's datasets into `data`.
fn generate_data(data: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(data).with_context(|| format!("create {}", data.display()))?;
    let write = |generator: Generator, options: GeneratorOptions| -> anyhow::Result<()> {
        let path = data.join(format!("{}.parquet", generator.name()));
        generator
            .write(&options, &path)
            .with_context(|| format!("generate {}", generator.name()))?;
        Ok(())
    };
    write(Generator::Digits, GeneratorOptions::default())?;
    write(
        Generator::GaussianRing,
        GeneratorOptions {
            rows: Some(8192),
            seed: 1,
            ..GeneratorOptions::default()
        },
    )?;
    write(
        Generator::SelectiveCopy,
        GeneratorOptions {
            rows: Some(2048),
            seed: 2,
            length: Some(64),
            vocab: Some(16),
            data_tokens: Some(8),
        },
    )?;
    Ok(())
}

pub(crate) fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let data = args.out.join("data");
    eprintln!("generating datasets in {}", data.display());
    generate_data(&data)?;
    let mut rows = Vec::new();
    for demo in JOBS {
        let text = demo.spec.replace("{data}", &data.display().to_string());
        let spec = JobSpec::parse(&text, SpecFormat::Toml).context("a demo job spec")?;
        let prepared = prepare(&spec, Path::new("."))?;
        let total = prepared.job.steps;
        eprintln!(
            "\n{} ({} steps, {} workers)",
            demo.title, total, args.workers
        );
        let summary = train(&prepared, args.workers, |step| {
            let n = step.report.step + 1;
            if n % 50 == 0 || n == total {
                let losses: Vec<String> = step
                    .report
                    .losses
                    .iter()
                    .map(|(name, value)| format!("{name} {value:.4}"))
                    .collect();
                eprintln!("  step {n:>4}/{total}  {}", losses.join("  "));
            }
        })?;
        let out = args.out.join(&prepared.name);
        write_outputs(&out, &prepared, &summary)?;
        let mean_last = |objective: usize| -> f32 {
            let tail = &summary.steps[summary.steps.len().saturating_sub(20)..];
            tail.iter()
                .map(|s| s.report.losses[objective].1)
                .sum::<f32>()
                / tail.len() as f32
        };
        let first = &summary.steps[0].report.losses;
        let measured: Vec<String> = first
            .iter()
            .enumerate()
            .map(|(i, (name, start))| format!("{name} {start:.3} -> {:.3}", mean_last(i)))
            .collect();
        let samples_per_second =
            prepared.global_batch as f64 / summary.median_step_seconds().max(1e-9);
        rows.push(serde_json::json!({
            "job": prepared.name,
            "model": prepared.job.model_kind,
            "steps": total,
            "losses": measured.join(", "),
            "samples_per_s": samples_per_second.round(),
            "checkpoint_sha256": summary.report.checkpoint_sha256,
        }));
    }
    println!(
        "\n{:<22} {:<7} {:>5} {:<40} {:>10}",
        "job", "model", "steps", "loss (first -> mean of last 20)", "samples/s"
    );
    for row in &rows {
        println!(
            "{:<22} {:<7} {:>5} {:<40} {:>10}",
            row["job"].as_str().unwrap_or(""),
            row["model"].as_str().unwrap_or(""),
            row["steps"],
            row["losses"].as_str().unwrap_or(""),
            row["samples_per_s"]
        );
    }
    let summary_path = args.out.join("summary.json");
    std::fs::write(&summary_path, serde_json::to_string_pretty(&rows)?)
        .with_context(|| format!("write {}", summary_path.display()))?;
    println!(
        "\ndone in {:.0}s; report (metrics.json and checkpoint.safetensors per job) in {}",
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
