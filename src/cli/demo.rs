//! `shoal demo`: the embedded default. With no data of the user's, it
//! generates its datasets, trains a few models of the zoo back to back in
//! single-node mode (2 workers over a loopback QUIC ring by default; each
//! GCN worker reads the whole graph and scores its ranks' share of the
//! training nodes), shows their progress,
//! prints a summary table (model, task, final metric, the published
//! reference where there is one, throughput) and writes a report folder:
//! loss curves (PNG, SVG), VAE and GAN sample grids, metrics, checkpoints.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use coordinator::spec::{JobSpec, SpecFormat};
use datasets::generate::{Generator, GeneratorOptions};
use datasets::{ColumnMapping, Dataset, Reader, Task};
use models::Model;
use ops::IndexTensor;

use crate::cli::progress::Progress;
use crate::cli::report::write_report;
use crate::cli::run::{PreparedJob, RunSummary, prepare, train, write_outputs};

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Where the data, report and checkpoints go.
    #[arg(long, default_value = "out/demo")]
    out: PathBuf,
    /// Workers per job.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Train every job for this many steps instead of its own count (a
    /// quick look; the metrics will not have converged).
    #[arg(long)]
    steps: Option<u64>,
    /// Plain progress lines even on a terminal.
    #[arg(long)]
    plain: bool,
}

/// How a demo job is scored after training.
#[derive(Clone, Copy)]
enum Score {
    /// Token accuracy at the positions with a target, on held-out
    /// sequences (`{data}/selective-copy-test.parquet`).
    HeldOutTokens,
    /// The ELBO, minus the mean loss of the last steps.
    Elbo,
    /// The losses of the last steps, next to the equilibrium values.
    GanLosses,
    /// Accuracy on the nodes outside the training mask.
    HeldOutNodes,
}

/// A demo job: its spec, with `{data}` standing for the data folder.
struct DemoJob {
    title: &'static str,
    task: &'static str,
    score: Score,
    reference: &'static str,
    spec: &'static str,
}

const JOBS: &[DemoJob] = &[
    DemoJob {
        title: "Mamba on selective copying",
        task: "selective copying (64 tokens, 8 to recall)",
        score: Score::HeldOutTokens,
        reference: "99.8% (Gu & Dao 2023, Table 1: length 4096, 16 to recall)",
        spec: r#"
name = "mamba-selective-copy"
seed = 4
global_batch = 32
virtual_ranks = 4
# The loss sits at chance for about 1,200 steps, then falls: selective
# copying is learnt late, as in Gu & Dao's curves.
steps = 3000
[model]
kind = "mamba"
config = { vocab = 16, d_model = 32, n_layers = 2, d_state = 8 }
[data]
paths = ["{data}/selective-copy.parquet"]
columns = { tokens = "tokens", targets = "targets" }
[evaluation]
paths = ["{data}/selective-copy-test.parquet"]
interval_steps = 500
[optimizer]
kind = "adamw"
lr = 3e-3
"#,
    },
    DemoJob {
        title: "VAE on the 8x8 digits (Bernoulli decoder)",
        task: "8x8 digits",
        score: Score::Elbo,
        reference: "-",
        spec: r#"
name = "vae-digits"
seed = 2
global_batch = 64
virtual_ranks = 4
steps = 400
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
        title: "GAN on the 8x8 digits",
        task: "8x8 digits",
        score: Score::GanLosses,
        reference: "d 1.386, g 0.693 at equilibrium (Goodfellow et al. 2014)",
        spec: r#"
name = "gan-digits"
seed = 3
global_batch = 64
virtual_ranks = 4
steps = 600
[model]
kind = "gan"
config = { d_latent = 16, d_hidden = 128, d_data = 64 }
[data]
paths = ["{data}/digits.parquet"]
columns = { x = "pixels" }
[inputs]
scale = 0.0625
[optimizer]
kind = "adam"
lr = 1e-3
betas = [0.5, 0.999]
"#,
    },
    DemoJob {
        title: "GCN on a stochastic block model graph",
        task: "node classes, 4-block SBM (1000 nodes)",
        score: Score::HeldOutNodes,
        reference: "-",
        spec: r#"
name = "gcn-sbm"
seed = 6
global_batch = 4
virtual_ranks = 2
steps = 200
[model]
kind = "gcn"
config = { d_in = 16, d_hidden = 32, n_classes = 4 }
[data]
paths = ["{data}/sbm-graph.parquet"]
columns = { x = "x", src = "src", dst = "dst", label = "label", train_mask = "train_mask" }
[evaluation]
# The same graph: evaluation scores the nodes outside the training mask.
paths = ["{data}/sbm-graph.parquet"]
interval_steps = 50
[optimizer]
kind = "adamw"
lr = 1e-2
weight_decay = 5e-4
"#,
    },
];

/// Writes the demo's datasets into `data`.
fn generate_data(data: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(data).with_context(|| format!("create {}", data.display()))?;
    let write =
        |generator: Generator, name: &str, options: GeneratorOptions| -> anyhow::Result<()> {
            let path = data.join(format!("{name}.parquet"));
            generator
                .write(&options, &path)
                .with_context(|| format!("generate {name}"))?;
            Ok(())
        };
    write(Generator::Digits, "digits", GeneratorOptions::default())?;
    let copying = |rows, seed| GeneratorOptions {
        rows: Some(rows),
        seed,
        length: Some(64),
        vocab: Some(16),
        data_tokens: Some(8),
        skip: 0,
    };
    write(Generator::SelectiveCopy, "selective-copy", copying(4096, 2))?;
    write(
        Generator::SelectiveCopy,
        "selective-copy-test",
        copying(512, 1002),
    )?;
    write(
        Generator::SbmGraph,
        "sbm-graph",
        GeneratorOptions {
            seed: 5,
            ..GeneratorOptions::default()
        },
    )?;
    Ok(())
}

/// Mean of the last (up to) 20 values of objective `objective`.
fn mean_of_last(summary: &RunSummary, objective: usize) -> f64 {
    let tail = &summary.steps[summary.steps.len().saturating_sub(20)..];
    tail.iter()
        .map(|s| f64::from(s.report.losses[objective].1))
        .sum::<f64>()
        / tail.len().max(1) as f64
}

/// Token accuracy of a trained sequence model on the targets of `path`.
fn token_accuracy(prepared: &PreparedJob, checkpoint: &[u8], path: &Path) -> anyhow::Result<f64> {
    let job = &prepared.job;
    let backbone = models::sequence::Backbone::from_kind(&job.model_kind)
        .with_context(|| format!("`{}` is not a sequence model", job.model_kind))?;
    let mut model =
        models::sequence::SequenceModel::from_config(backbone, &job.model_config, job.seed)?;
    let file = ops::checkpoint::decode(checkpoint, "the checkpoint")?;
    ops::checkpoint::load_parameters(&file, "the checkpoint", model.parameters_mut())?;
    let dataset = Dataset::open(&[path.to_path_buf()])?;
    let mapping = ColumnMapping(prepared.mapping.0.clone());
    let data = Reader::new(dataset, Task::Sequence, &mapping)?.read_all()?;
    let tokens = &data.ints["tokens"];
    let targets = &data.ints["targets"];
    let logits = model.logits(&IndexTensor::from_vec(
        tokens.shape.as_slice(),
        tokens.values.clone(),
    ));
    let vocab = logits.dim(-1);
    let (mut right, mut total) = (0usize, 0usize);
    for (row, &target) in logits.data().chunks(vocab).zip(&targets.values) {
        if target == ops::ops::IGNORE_INDEX {
            continue;
        }
        let predicted = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(token, _)| token);
        total += 1;
        right += usize::from(predicted as i64 == target);
    }
    anyhow::ensure!(total > 0, "{} has no target to score", path.display());
    Ok(right as f64 / total as f64)
}

/// The demo's score of a trained job: a short text and its number.
fn score(
    demo: &DemoJob,
    prepared: &PreparedJob,
    summary: &RunSummary,
    data: &Path,
) -> anyhow::Result<(String, serde_json::Value)> {
    let checkpoint = &summary.report.checkpoint;
    Ok(match demo.score {
        Score::HeldOutTokens => {
            let accuracy = token_accuracy(
                prepared,
                checkpoint,
                &data.join("selective-copy-test.parquet"),
            )?;
            (
                format!("{:.1}% held-out tokens", accuracy * 100.0),
                serde_json::json!({ "held_out_token_accuracy": accuracy }),
            )
        }
        Score::Elbo => {
            let elbo = -mean_of_last(summary, 0);
            (
                format!("ELBO {elbo:.1} nats"),
                serde_json::json!({ "elbo_nats": elbo }),
            )
        }
        Score::GanLosses => {
            let (d, g) = (mean_of_last(summary, 0), mean_of_last(summary, 1));
            (
                format!("d {d:.3}, g {g:.3}"),
                serde_json::json!({ "d_loss": d, "g_loss": g }),
            )
        }
        Score::HeldOutNodes => {
            let accuracy = crate::cli::graph::held_out_accuracy(prepared, checkpoint)?;
            (
                format!("{:.1}% held-out nodes", accuracy * 100.0),
                serde_json::json!({ "held_out_node_accuracy": accuracy }),
            )
        }
    })
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
        let mut prepared = prepare(&spec, Path::new("."))?;
        if let Some(steps) = args.steps {
            prepared.job.steps = steps.max(1);
        }
        let total = prepared.job.steps;
        let graph = matches!(prepared.task, Task::GraphNodes);
        eprintln!("\n{} ({total} steps, {} workers)", demo.title, args.workers);
        let mut progress = Progress::new(
            &prepared.name,
            total,
            prepared.global_batch,
            (total / 5).max(1),
            args.plain,
        );
        let summary = train(&prepared, args.workers, None, |step| progress.step(step))?;
        progress.finish();
        let out = args.out.join(&prepared.name);
        write_outputs(&out, &prepared, &summary)?;
        write_report(&out, &prepared, &summary)?;
        let (metric, values) = score(demo, &prepared, &summary, &data)?;
        let (throughput, unit) = if graph {
            let nodes = Dataset::open(&prepared.paths)?.samples() as f64;
            (nodes / summary.median_step_seconds().max(1e-9), "nodes/s")
        } else {
            (
                prepared.global_batch as f64 / summary.median_step_seconds().max(1e-9),
                "samples/s",
            )
        };
        let metrics_path = out.join("score.json");
        std::fs::write(&metrics_path, serde_json::to_string_pretty(&values)?)
            .with_context(|| format!("write {}", metrics_path.display()))?;
        rows.push(serde_json::json!({
            "job": prepared.name,
            "model": prepared.job.model_kind,
            "task": demo.task,
            "steps": total,
            "metric": metric,
            "values": values,
            "reference": demo.reference,
            "throughput": throughput.round(),
            "throughput_unit": unit,
            "elapsed_s": summary.elapsed.as_secs_f64(),
            "checkpoint_sha256": summary.report.checkpoint_sha256,
        }));
    }
    println!();
    println!(
        "{:<6} {:<43} {:<22} {:>17}  published reference",
        "model", "task", "final metric", "throughput"
    );
    for row in &rows {
        let throughput = format!(
            "{:.0} {}",
            row["throughput"].as_f64().unwrap_or(0.0),
            row["throughput_unit"].as_str().unwrap_or("")
        );
        println!(
            "{:<6} {:<43} {:<22} {:>17}  {}",
            row["model"].as_str().unwrap_or(""),
            row["task"].as_str().unwrap_or(""),
            row["metric"].as_str().unwrap_or(""),
            throughput,
            row["reference"].as_str().unwrap_or(""),
        );
    }
    let summary_path = args.out.join("summary.json");
    std::fs::write(&summary_path, serde_json::to_string_pretty(&rows)?)
        .with_context(|| format!("write {}", summary_path.display()))?;
    println!(
        "\ndone in {:.0}s; report in {}: per job loss.png, loss.svg, metrics.json, score.json, \
         checkpoint.safetensors (and samples.png for the VAE and GAN); summary.json",
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
