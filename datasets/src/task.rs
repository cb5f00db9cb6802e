//! Tasks: the named inputs a model's loss takes, what column type each
//! needs, and how a job spec's column mapping picks the columns.
use std::collections::BTreeMap;

use arrow_schema::{DataType, Schema};
use serde::{Deserialize, Serialize};

use crate::error::{DatasetError, Result};

/// What a task input holds per sample, and so which column types fit it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// One float per sample: a float32 or float64 column. Shape `[n]`.
    FloatScalar,
    /// A float vector per sample, the same length for all samples:
    /// fixed_size_list or list of float32/float64, or a float32/float64
    /// scalar column (then `d = 1`). Shape `[n, d]`.
    FloatVector,
    /// One integer per sample (a label, a mask): int32 or int64. Shape `[n]`.
    IntScalar,
    /// An integer sequence per sample (tokens, targets): list, large_list or
    /// fixed_size_list of int32/int64. Ragged sequences are padded at the
    /// end with `pad` to the longest one of the batch. Shape `[n, t]`.
    IntSequence {
        /// The padding value.
        pad: i64,
    },
    /// The node features of a graph per sample: list (or large_list) of
    /// fixed_size_list of float32/float64. A batch is the disjoint union of
    /// its graphs: shape `[total nodes, d]`.
    NodeVectors,
    /// One integer per node of each sample's graph (labels, masks): list of
    /// int32/int64, as long as the graph has nodes. Shape `[total nodes]`.
    NodeInts,
    /// Edge endpoints of each sample's graph, as node ids inside that graph:
    /// list of int32/int64. In the batch they are shifted by the number of
    /// nodes of the graphs before, so they index the disjoint union. Shape
    /// `[total edges]`.
    EdgeNodes,
}

impl InputKind {
    /// What this kind expects, in words (for error messages).
    pub fn expected(&self) -> &'static str {
        match self {
            InputKind::FloatScalar => "float32 or float64",
            InputKind::FloatVector => {
                "fixed_size_list<float32|float64>, list<float32|float64> of one length, or float32|float64"
            }
            InputKind::IntScalar => "int32 or int64",
            InputKind::IntSequence { .. } => {
                "list<int32|int64>, large_list<int32|int64> or fixed_size_list<int32|int64>"
            }
            InputKind::NodeVectors => "list<fixed_size_list<float32|float64>>",
            InputKind::NodeInts | InputKind::EdgeNodes => "list<int32|int64>",
        }
    }

    /// Whether a column of type `data_type` fits.
    pub fn accepts(&self, data_type: &DataType) -> bool {
        let float =
            |data_type: &DataType| matches!(data_type, DataType::Float32 | DataType::Float64);
        let int = |data_type: &DataType| matches!(data_type, DataType::Int32 | DataType::Int64);
        match self {
            InputKind::FloatScalar => float(data_type),
            InputKind::IntScalar => int(data_type),
            InputKind::FloatVector => match data_type {
                DataType::Float32 | DataType::Float64 => true,
                DataType::FixedSizeList(field, _)
                | DataType::List(field)
                | DataType::LargeList(field) => float(field.data_type()),
                _ => false,
            },
            InputKind::IntSequence { .. } => match data_type {
                DataType::FixedSizeList(field, _)
                | DataType::List(field)
                | DataType::LargeList(field) => int(field.data_type()),
                _ => false,
            },
            InputKind::NodeVectors => match data_type {
                DataType::List(field) | DataType::LargeList(field) => matches!(
                    field.data_type(),
                    DataType::FixedSizeList(inner, _) if float(inner.data_type())
                ),
                _ => false,
            },
            InputKind::NodeInts | InputKind::EdgeNodes => match data_type {
                DataType::List(field) | DataType::LargeList(field) => int(field.data_type()),
                _ => false,
            },
        }
    }
}

/// One input of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskInput {
    /// The name the model's loss gives it (as in `models.py`).
    pub name: &'static str,
    /// What it holds.
    pub kind: InputKind,
    /// Columns tried, in order, when the mapping does not name one.
    pub default_columns: &'static [&'static str],
}

/// The tasks a dataset can feed. Each lists the inputs of the losses of
/// `models.py` it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Classification of vectors (MLP): `x` float vector, `label` int.
    Classify,
    /// Unlabelled vectors (autoencoder, VAE, GAN, masked autoencoder, Barlow
    /// Twins; their noise, masks and latents are drawn by the trainer): `x`.
    Vectors,
    /// Token sequences (LSTM, GRU, QRNN, S4D, Mamba): `tokens`, `targets`
    /// (-100 where not scored; padding of ragged targets is -100 too).
    Sequence,
    /// Node classification on one graph (GCN), node table: `x`, `label`,
    /// `train_mask`. Its edges come from an edge table ([`Task::GraphEdges`]).
    GraphNodes,
    /// The edge table of a graph: `src`, `dst` (node ids, both directions).
    GraphEdges,
    /// Many small graphs, one per row (GCN on batched graphs): `x` node
    /// features, `label` and `train_mask` per node, `src` and `dst` edge
    /// lists. A batch is the disjoint union of its graphs; it also holds
    /// `node_graph`, the batch position of each node's graph.
    Graphs,
}

const X_COLUMNS: &[&str] = &["x", "pixels", "features"];

impl Task {
    /// Every task.
    pub const ALL: [Task; 6] = [
        Task::Classify,
        Task::Vectors,
        Task::Sequence,
        Task::GraphNodes,
        Task::GraphEdges,
        Task::Graphs,
    ];

    /// The task's name on the command line and in job specs.
    pub fn name(&self) -> &'static str {
        match self {
            Task::Classify => "classify",
            Task::Vectors => "vectors",
            Task::Sequence => "sequence",
            Task::GraphNodes => "graph-nodes",
            Task::GraphEdges => "graph-edges",
            Task::Graphs => "graphs",
        }
    }

    /// The task named `name`.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|task| task.name() == name)
            .ok_or_else(|| DatasetError::UnknownTask {
                name: name.into(),
                known: Self::ALL.map(|task| task.name()).join(", "),
            })
    }

    /// The models of `models.py` this task feeds.
    pub fn models(&self) -> &'static str {
        match self {
            Task::Classify => "mlp",
            Task::Vectors => "autoencoder, vae, gan, mae, barlow_twins",
            Task::Sequence => "lstm, gru, qrnn, s4d, mamba",
            Task::GraphNodes | Task::GraphEdges | Task::Graphs => "gcn",
        }
    }

    /// The task's inputs.
    pub fn inputs(&self) -> &'static [TaskInput] {
        const CLASSIFY: &[TaskInput] = &[
            TaskInput {
                name: "x",
                kind: InputKind::FloatVector,
                default_columns: X_COLUMNS,
            },
            TaskInput {
                name: "label",
                kind: InputKind::IntScalar,
                default_columns: &["label", "y"],
            },
        ];
        const VECTORS: &[TaskInput] = &[TaskInput {
            name: "x",
            kind: InputKind::FloatVector,
            default_columns: X_COLUMNS,
        }];
        const SEQUENCE: &[TaskInput] = &[
            TaskInput {
                name: "tokens",
                kind: InputKind::IntSequence { pad: 0 },
                default_columns: &["tokens"],
            },
            TaskInput {
                name: "targets",
                kind: InputKind::IntSequence { pad: -100 },
                default_columns: &["targets"],
            },
        ];
        const GRAPH_NODES: &[TaskInput] = &[
            TaskInput {
                name: "x",
                kind: InputKind::FloatVector,
                default_columns: X_COLUMNS,
            },
            TaskInput {
                name: "label",
                kind: InputKind::IntScalar,
                default_columns: &["label", "y"],
            },
            TaskInput {
                name: "train_mask",
                kind: InputKind::IntScalar,
                default_columns: &["train_mask"],
            },
        ];
        const GRAPH_EDGES: &[TaskInput] = &[
            TaskInput {
                name: "src",
                kind: InputKind::IntScalar,
                default_columns: &["src", "source"],
            },
            TaskInput {
                name: "dst",
                kind: InputKind::IntScalar,
                default_columns: &["dst", "target"],
            },
        ];
        const GRAPHS: &[TaskInput] = &[
            TaskInput {
                name: "x",
                kind: InputKind::NodeVectors,
                default_columns: X_COLUMNS,
            },
            TaskInput {
                name: "label",
                kind: InputKind::NodeInts,
                default_columns: &["label", "y"],
            },
            TaskInput {
                name: "train_mask",
                kind: InputKind::NodeInts,
                default_columns: &["train_mask"],
            },
            TaskInput {
                name: "src",
                kind: InputKind::EdgeNodes,
                default_columns: &["src", "source"],
            },
            TaskInput {
                name: "dst",
                kind: InputKind::EdgeNodes,
                default_columns: &["dst", "target"],
            },
        ];
        match self {
            Task::Classify => CLASSIFY,
            Task::Graphs => GRAPHS,
            Task::Vectors => VECTORS,
            Task::Sequence => SEQUENCE,
            Task::GraphNodes => GRAPH_NODES,
            Task::GraphEdges => GRAPH_EDGES,
        }
    }
}

/// The job spec's mapping from task input names to column names. Inputs it
/// does not name use the first of their default columns present in the
/// file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ColumnMapping(pub BTreeMap<String, String>);

impl ColumnMapping {
    /// An empty mapping (defaults everywhere).
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps input `input` to column `column`.
    pub fn with(mut self, input: &str, column: &str) -> Self {
        self.0.insert(input.into(), column.into());
        self
    }
}

/// A task input bound to a column of the schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundInput {
    /// The task input.
    pub input: TaskInput,
    /// The column's name.
    pub column: String,
    /// The column's index in the schema.
    pub column_index: usize,
}

/// Binds every input of `task` to a column of `schema`, checking types.
/// `path` names the file in errors.
pub fn bind(
    task: Task,
    mapping: &ColumnMapping,
    schema: &Schema,
    path: &std::path::Path,
) -> Result<Vec<BoundInput>> {
    let mut bound = Vec::new();
    for input in task.inputs() {
        let column = match mapping.0.get(input.name) {
            Some(column) => column.clone(),
            None => input
                .default_columns
                .iter()
                .find(|name| schema.index_of(name).is_ok())
                .map(|name| name.to_string())
                .unwrap_or_else(|| input.name.to_string()),
        };
        let column_index = schema
            .index_of(&column)
            .map_err(|_| DatasetError::MissingColumn {
                path: path.to_path_buf(),
                column: column.clone(),
                input: input.name.into(),
                expected: input.kind.expected().into(),
                available: schema
                    .fields()
                    .iter()
                    .map(|field| field.name().clone())
                    .collect(),
            })?;
        let data_type = schema.field(column_index).data_type();
        if !input.kind.accepts(data_type) {
            return Err(DatasetError::WrongColumnType {
                path: path.to_path_buf(),
                column,
                input: input.name.into(),
                expected: input.kind.expected().into(),
                found: crate::dataset::type_name(data_type),
            });
        }
        bound.push(BoundInput {
            input: *input,
            column,
            column_index,
        });
    }
    Ok(bound)
}
