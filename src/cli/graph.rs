//! Single-node training of a graph job (the GCN): the whole graph is one
//! batch (the node table and the edge table `STEM.edges.parquet` beside
//! it), so every step is a full-batch step in this process; there is no
//! micro-batch to spread over workers.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use datasets::{Dataset, read_graph};
use models::Model;
use models::training::Trainer;
use ops::{IndexTensor, Tensor};
use worker::local::StepReport;
use worker::single_node::{RunReport, TimedStep, sha256_hex};

use crate::cli::run::{PreparedJob, RunSummary};

/// The edge table of a node table `STEM.parquet`: `STEM.edges.parquet`.
pub(crate) fn edges_path(nodes: &Path) -> PathBuf {
    let stem = nodes
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    nodes.with_file_name(format!("{stem}.edges.parquet"))
}

/// The graph of a job as the model's batch.
pub(crate) fn graph_batch(prepared: &PreparedJob) -> anyhow::Result<models::Batch> {
    let [nodes_path] = prepared.paths.as_slice() else {
        bail!(
            "a graph job reads one node table (its edges beside it as STEM.edges.parquet); got {} paths",
            prepared.paths.len()
        );
    };
    let edges_path = edges_path(nodes_path);
    let nodes = Dataset::open(std::slice::from_ref(nodes_path))?;
    let edges = Dataset::open(std::slice::from_ref(&edges_path))
        .with_context(|| format!("the edge table of {}", nodes_path.display()))?;
    let data = read_graph(&nodes, &edges, &prepared.mapping)?;
    let mut batch = models::Batch::new();
    for (name, array) in &data.floats {
        let scale = prepared.job.draws.input_scale;
        let scaled: Vec<f32> = array.values.iter().map(|v| v * scale).collect();
        batch.insert_float(
            name.clone(),
            Tensor::from_vec(array.shape.as_slice(), scaled),
        );
    }
    for (name, array) in &data.ints {
        batch.insert_index(
            name.clone(),
            IndexTensor::from_vec(array.shape.as_slice(), array.values.clone()),
        );
    }
    Ok(batch)
}

/// Trains a graph job to its last step, full batch; `progress` sees each
/// step.
pub(crate) fn train(
    prepared: &PreparedJob,
    mut progress: impl FnMut(&TimedStep),
) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let job = &prepared.job;
    let batch = graph_batch(prepared)?;
    let data_wait = started.elapsed();
    let mut model = models::registry::build(&job.model_kind, &job.model_config, job.seed)?;
    if let Some(path) = &prepared.initial {
        let file = ops::checkpoint::load(path)?;
        ops::checkpoint::load_parameters(&file, "the initial checkpoint", model.parameters_mut())?;
    }
    let mut trainer = Trainer::new(model.as_ref(), &job.optimizer);
    let names: Vec<&'static str> = model.objectives().iter().map(|o| o.name).collect();
    let mut steps = Vec::with_capacity(job.steps as usize);
    for step in 0..job.steps {
        let lr = job.schedule.lr(job.optimizer.lr(), step);
        trainer.set_lr(lr);
        let compute_started = Instant::now();
        let losses = trainer.step(model.as_mut(), &batch)?;
        let timed = TimedStep {
            report: StepReport {
                step,
                lr,
                losses: names.iter().copied().zip(losses).collect(),
            },
            data_wait: if step == 0 { data_wait } else { Duration::ZERO },
            compute: compute_started.elapsed(),
            all_reduce: Duration::ZERO,
            gradient_norms: Vec::new(),
        };
        progress(&timed);
        steps.push(timed);
    }
    let tensors = ops::checkpoint::checkpoint_tensors(model.parameters(), &trainer.state_tensors());
    let metadata = std::collections::BTreeMap::from([
        ("model".to_string(), job.model_kind.clone()),
        ("config".to_string(), job.model_config.to_string()),
        ("seed".to_string(), job.seed.to_string()),
        ("completed_steps".to_string(), job.steps.to_string()),
    ]);
    let checkpoint = ops::checkpoint::encode(&tensors, &metadata)?;
    Ok(RunSummary {
        report: RunReport {
            checkpoint_sha256: sha256_hex(&checkpoint),
            checkpoint,
        },
        steps,
        elapsed: started.elapsed(),
    })
}

/// Accuracy of a trained GCN on the nodes outside the training mask.
pub(crate) fn held_out_accuracy(prepared: &PreparedJob, checkpoint: &[u8]) -> anyhow::Result<f64> {
    let batch = graph_batch(prepared)?;
    let file = ops::checkpoint::decode(checkpoint, "the checkpoint")?;
    let mut model = models::gcn::Gcn::from_config(&prepared.job.model_config, prepared.job.seed)?;
    ops::checkpoint::load_parameters(&file, "the checkpoint", model.parameters_mut())?;
    let kind = "gcn";
    let (src, dst) = (batch.index(kind, "src")?, batch.index(kind, "dst")?);
    let x = batch.float(kind, "x")?;
    let nodes = x.dim(0);
    let a = ops::ops::sparse::SparseMatrix::new(ops::kernels::sparse::CsrMatrix::gcn_normalized(
        nodes,
        src.data(),
        dst.data(),
    )?);
    let logits = model.logits(&a, x);
    let classes = logits.dim(1);
    let labels = batch.index(kind, "label")?.data();
    let mask = batch.index(kind, "train_mask")?.data();
    let (mut right, mut total) = (0usize, 0usize);
    for (node, row) in logits.data().chunks(classes).enumerate() {
        if mask[node] != 0 {
            continue;
        }
        let predicted = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(class, _)| class);
        total += 1;
        right += usize::from(predicted as i64 == labels[node]);
    }
    if total == 0 {
        bail!("every node is in the training mask: no held-out node to score");
    }
    Ok(right as f64 / total as f64)
}
