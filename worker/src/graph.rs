//! Graph jobs (the GCN on one large graph): the whole graph is every
//! virtual rank's input, and the graph's training nodes are dealt to the
//! virtual ranks, so each rank scores its share of the nodes.
//!
//! A step is full batch, as in Kipf and Welling's training: every
//! training node is scored once per step. The k-th training node (in node
//! order) belongs to virtual rank `k mod V`; a rank's loss is the mean
//! cross-entropy over its nodes, and the all-reduced step averages the V
//! ranks, as for any other job. The deal depends on V alone, so the
//! result is the same whatever the number of workers. The plan's cursor
//! still moves one step per step (it is what checkpoints record), but no
//! sample is read through it.
use std::path::{Path, PathBuf};

use datasets::{ColumnMapping, Dataset, read_graph};
use models::Batch;
use ops::{IndexTensor, Tensor};

use crate::WorkerError;
use crate::job::PreparedJob;

/// The edge table of a node table `STEM.parquet`: `STEM.edges.parquet`,
/// beside it.
pub fn edges_path(nodes: &Path) -> PathBuf {
    datasets::generate::sibling_path(nodes, "edges")
}

/// The graph of a job as one model batch: node features (scaled by the
/// spec's `inputs.scale`), labels, the training mask and both edge lists.
pub fn graph_batch(prepared: &PreparedJob) -> Result<Batch, WorkerError> {
    read_graph_batch(
        &prepared.paths,
        &prepared.mapping,
        prepared.job.draws.input_scale,
    )
}

/// The graph whose node table is the one file of `paths` (its edges beside
/// it), node features multiplied by `scale`, as one model batch.
pub fn read_graph_batch(
    paths: &[PathBuf],
    mapping: &ColumnMapping,
    scale: f32,
) -> Result<Batch, WorkerError> {
    let [nodes_path] = paths else {
        return Err(WorkerError::Job {
            reason: format!(
                "a graph job reads one node table (its edges beside it as STEM.edges.parquet); got {} paths",
                paths.len()
            ),
        });
    };
    let nodes = Dataset::open(std::slice::from_ref(nodes_path))?;
    let edges = Dataset::open(&[edges_path(nodes_path)])?;
    let data = read_graph(&nodes, &edges, mapping)?;
    let mut batch = Batch::new();
    for (name, array) in &data.floats {
        let scaled: Vec<f32> = array.values.iter().map(|value| value * scale).collect();
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

/// The training masks of the virtual ranks: rank r's mask flags the k-th
/// training node of `train_mask` when `k mod virtual_ranks == r`. Fails
/// when a rank would get no node (its loss would be a mean over nothing).
pub fn rank_masks(train_mask: &[i64], virtual_ranks: usize) -> Result<Vec<Vec<i64>>, WorkerError> {
    let training_nodes = train_mask.iter().filter(|&&flag| flag != 0).count();
    if training_nodes < virtual_ranks {
        return Err(WorkerError::Input {
            reason: format!(
                "the graph has {training_nodes} training nodes, fewer than the job's {virtual_ranks} virtual ranks: each rank needs at least one"
            ),
        });
    }
    let mut masks = vec![vec![0; train_mask.len()]; virtual_ranks];
    let mut dealt = 0usize;
    for (node, &flag) in train_mask.iter().enumerate() {
        if flag != 0 {
            masks[dealt % virtual_ranks][node] = 1;
            dealt += 1;
        }
    }
    Ok(masks)
}

/// A graph and the per-rank batches built from it, kept by a replica for
/// the whole job.
#[derive(Clone, Debug)]
pub struct RankedGraph {
    rank_batches: Vec<Batch>,
}

impl RankedGraph {
    /// Deals `graph`'s training nodes (its `train_mask`) to `virtual_ranks`
    /// ranks.
    pub fn new(graph: &Batch, virtual_ranks: usize) -> Result<RankedGraph, WorkerError> {
        let mask = graph.index("gcn", "train_mask")?;
        let masks = rank_masks(mask.data(), virtual_ranks)?;
        let rank_batches = masks
            .into_iter()
            .map(|rank_mask| {
                let mut batch = graph.clone();
                let nodes = rank_mask.len();
                batch.insert_index("train_mask", IndexTensor::from_vec([nodes], rank_mask));
                batch
            })
            .collect();
        Ok(RankedGraph { rank_batches })
    }

    /// The batch of virtual rank `rank`: the whole graph, its training
    /// mask restricted to the rank's nodes.
    pub fn rank_batch(&self, rank: usize) -> &Batch {
        &self.rank_batches[rank]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_masks_deal_training_nodes_round_robin() {
        let mask = [1, 0, 1, 1, 0, 1, 1];
        let masks = rank_masks(&mask, 2).unwrap();
        assert_eq!(masks[0], vec![1, 0, 0, 1, 0, 0, 1]);
        assert_eq!(masks[1], vec![0, 0, 1, 0, 0, 1, 0]);
        // Every training node once, nothing else.
        for node in 0..mask.len() {
            let owners: i64 = masks.iter().map(|m| m[node]).sum();
            assert_eq!(owners, mask[node]);
        }
    }

    #[test]
    fn fewer_training_nodes_than_ranks_is_refused() {
        let error = rank_masks(&[0, 1, 0], 2).unwrap_err();
        assert!(error.to_string().contains("1 training nodes"), "{error}");
        assert!(rank_masks(&[1, 1], 2).is_ok());
    }

    #[test]
    fn edges_sit_beside_the_node_table() {
        assert_eq!(
            edges_path(Path::new("/data/sbm-graph.parquet")),
            PathBuf::from("/data/sbm-graph.edges.parquet")
        );
    }
}
