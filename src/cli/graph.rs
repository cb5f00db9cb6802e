//! Scoring a trained graph job (the GCN): accuracy on the nodes outside
//! the training mask. Training itself goes through the workers like any
//! other job (see `worker::graph`).
use anyhow::bail;
use models::Model;

use crate::cli::run::PreparedJob;

/// Accuracy of a trained GCN on the nodes outside the training mask.
pub(crate) fn held_out_accuracy(prepared: &PreparedJob, checkpoint: &[u8]) -> anyhow::Result<f64> {
    let batch = worker::graph::graph_batch(prepared)?;
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
