//! The graph convolutional network of Kipf & Welling (2017), two layers:
//! `A relu(A x W1^T + b1) W2^T + b2` with `A = D^-1/2 (A + I) D^-1/2`
//! built from the batch's edge lists as a sparse (CSR) matrix; the loss is
//! the cross-entropy over the nodes of the training mask.
use std::sync::Mutex;

use ops::kernels::sparse::CsrMatrix;
use ops::ops::IGNORE_INDEX;
use ops::ops::sparse::SparseMatrix;
use ops::{IndexTensor, ParameterSet, Tensor, init};

use crate::config::ConfigReader;
use crate::inputs::{float_matrix, labels};
use crate::{Batch, Model, ModelError};

/// The normalized adjacency of the last graph seen, with its edge lists:
/// a training job steps on the same graph again and again.
#[derive(Debug)]
struct CachedAdjacency {
    nodes: usize,
    src: Vec<i64>,
    dst: Vec<i64>,
    matrix: SparseMatrix,
}

/// `GCN(d_in, d_hidden, n_classes)` of the reference.
#[derive(Debug)]
pub struct Gcn {
    params: ParameterSet,
    d_in: usize,
    n_classes: usize,
    adjacency: Mutex<Option<CachedAdjacency>>,
}

impl Gcn {
    /// The model kind.
    pub const KIND: &'static str = "gcn";

    /// A model with PyTorch's default initialization drawn under `seed`.
    pub fn new(d_in: usize, d_hidden: usize, n_classes: usize, seed: u64) -> Gcn {
        let mut params = ParameterSet::new();
        init::linear(&mut params, seed, "conv1", d_in, d_hidden, true);
        init::linear(&mut params, seed, "conv2", d_hidden, n_classes, true);
        Gcn {
            params,
            d_in,
            n_classes,
            adjacency: Mutex::new(None),
        }
    }

    /// From `{"d_in", "d_hidden", "n_classes"}`.
    pub fn from_config(config: &serde_json::Value, seed: u64) -> Result<Gcn, ModelError> {
        let c = ConfigReader::new(Self::KIND, config)?;
        Ok(Gcn::new(
            c.size("d_in")?,
            c.size("d_hidden")?,
            c.size("n_classes")?,
            seed,
        ))
    }

    /// Class logits (nodes, n_classes) of node features `x` (nodes, d_in)
    /// over the normalized adjacency `a`.
    pub fn logits(&self, a: &SparseMatrix, x: &Tensor) -> Tensor {
        let p = &self.params;
        let h = a
            .matmul(&x.linear(p.get("conv1.weight"), None))
            .add(p.get("conv1.bias"))
            .relu();
        a.matmul(&h.linear(p.get("conv2.weight"), None))
            .add(p.get("conv2.bias"))
    }
}

impl Gcn {
    /// The normalized adjacency of the graph `(nodes, src, dst)`, built once
    /// per distinct graph (compared by value, so a changed graph is rebuilt).
    fn adjacency(
        &self,
        nodes: usize,
        src: &[i64],
        dst: &[i64],
    ) -> Result<SparseMatrix, ModelError> {
        let mut cache = self.adjacency.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.as_ref()
            && c.nodes == nodes
            && c.src == src
            && c.dst == dst
        {
            return Ok(c.matrix.clone());
        }
        let matrix = SparseMatrix::new(CsrMatrix::gcn_normalized(nodes, src, dst)?);
        *cache = Some(CachedAdjacency {
            nodes,
            src: src.to_vec(),
            dst: dst.to_vec(),
            matrix: matrix.clone(),
        });
        Ok(matrix)
    }
}

impl Model for Gcn {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn parameters(&self) -> &ParameterSet {
        &self.params
    }

    fn parameters_mut(&mut self) -> &mut ParameterSet {
        &mut self.params
    }

    fn loss(&self, _objective: usize, batch: &Batch) -> Result<Tensor, ModelError> {
        let kind = Self::KIND;
        let x = float_matrix(batch, kind, "x", self.d_in)?;
        let nodes = x.dim(0);
        let label = labels(batch, kind, "label", nodes, self.n_classes)?;
        let mask = batch.index(kind, "train_mask")?;
        if mask.numel() != nodes {
            return Err(ModelError::BadInput {
                kind: kind.into(),
                name: "train_mask".into(),
                expected: format!("({nodes}) flags"),
                found: mask.dims().to_vec(),
            });
        }
        let (src, dst) = (batch.index(kind, "src")?, batch.index(kind, "dst")?);
        let a = self.adjacency(nodes, src.data(), dst.data())?;
        // Nodes outside the mask are not scored: the mean runs over the rest.
        let targets: Vec<i64> = label
            .data()
            .iter()
            .zip(mask.data())
            .map(|(&l, &m)| if m != 0 { l } else { IGNORE_INDEX })
            .collect();
        let targets = IndexTensor::from_vec([nodes], targets);
        Ok(self.logits(&a, x).cross_entropy(&targets, IGNORE_INDEX))
    }
}
