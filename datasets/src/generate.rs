//! Synthetic datasets for the tasks of "The Missing Bits", written as
//! Parquet (snappy, dictionary encoding off for float columns, row groups of
//! about 4 MiB). Every generator is deterministic in (task, rows, seed,
//! parameters): each row draws from its own keyed random stream.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Int64Builder, ListBuilder};
use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, Type as PhysicalType};
use parquet::file::properties::WriterProperties;

use crate::error::{DatasetError, Result};
use crate::rng::{Keyed, mix64};

/// The bundled digits: 1,797 8x8 images (see `data/README.md` for the
/// source and licence).
pub static DIGITS_PARQUET: &[u8] = include_bytes!("../../data/digits.parquet");

/// The value of targets at positions that are not scored (PyTorch's
/// `ignore_index`, as in `models.py`).
pub const IGNORE: i64 = -100;

/// The synthetic tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Generator {
    /// Selective copying (Gu and Dao, Mamba, 2023): data tokens scattered
    /// among noise tokens, then marker tokens; at each marker the target is
    /// the next data token, in order.
    SelectiveCopy,
    /// Induction heads: a trigger token followed by an answer token appears
    /// once inside random tokens; the trigger comes again at the end, where
    /// the target is the answer.
    InductionHeads,
    /// The adding problem, as tokens: random digits, two of them marked; at
    /// the final query position the target is the sum of the two marked digits.
    Adding,
    /// Copy memory (Hochreiter and Schmidhuber 1997; Arjovsky et al. 2016):
    /// data tokens, a long blank gap, a delimiter, then the data to recall.
    CopyMemory,
    /// Eight Gaussian modes on a ring of radius 2 (std 0.02), for GANs.
    GaussianRing,
    /// A graph from a stochastic block model with 4 communities and weakly
    /// informative node features, for GCNs: a node table and an edge table.
    SbmGraph,
    /// The bundled 8x8 handwritten digits (1,797 images).
    Digits,
}

/// Options of a generator; `None` picks the task's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GeneratorOptions {
    /// Number of rows (nodes for sbm-graph).
    pub rows: Option<u64>,
    /// Seed.
    pub seed: u64,
    /// Sequence length (sequence tasks).
    pub length: Option<usize>,
    /// Vocabulary size (sequence tasks).
    pub vocab: Option<usize>,
    /// Number of data tokens (selective-copy, copy-memory).
    pub data_tokens: Option<usize>,
    /// Rows of the bundled digits to skip before the first one written
    /// (digits only): `rows = 1500` for training and `skip = 1500` for
    /// the 297 held-out images make a train/test split.
    pub skip: u64,
}

/// One generated table and where it goes.
#[derive(Clone, Debug)]
pub struct GeneratedTable {
    /// `None` for the main output file; `Some("edges")` for the edge table of
    /// a graph, written next to it as `STEM.edges.parquet`.
    pub role: Option<&'static str>,
    /// The rows.
    pub batch: RecordBatch,
    /// Rows per row group to write.
    pub rows_per_group: usize,
}

const TARGET_ROW_GROUP_BYTES: usize = 4 << 20;

impl Generator {
    /// Every generator.
    pub const ALL: [Generator; 7] = [
        Generator::SelectiveCopy,
        Generator::InductionHeads,
        Generator::Adding,
        Generator::CopyMemory,
        Generator::GaussianRing,
        Generator::SbmGraph,
        Generator::Digits,
    ];

    /// The name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Generator::SelectiveCopy => "selective-copy",
            Generator::InductionHeads => "induction-heads",
            Generator::Adding => "adding",
            Generator::CopyMemory => "copy-memory",
            Generator::GaussianRing => "gaussian-ring",
            Generator::SbmGraph => "sbm-graph",
            Generator::Digits => "digits",
        }
    }

    /// The generator named `name`.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|generator| generator.name() == name)
            .ok_or_else(|| DatasetError::UnknownTask {
                name: name.into(),
                known: Self::ALL.map(|generator| generator.name()).join(", "),
            })
    }

    /// The default number of rows.
    pub fn default_rows(&self) -> u64 {
        match self {
            Generator::SelectiveCopy
            | Generator::InductionHeads
            | Generator::Adding
            | Generator::CopyMemory => 8192,
            Generator::GaussianRing => 65536,
            Generator::SbmGraph => 1000,
            Generator::Digits => 1797,
        }
    }

    /// Generates the tables in memory.
    pub fn generate(&self, options: &GeneratorOptions) -> Result<Vec<GeneratedTable>> {
        if options.skip > 0 && *self != Generator::Digits {
            return Err(self.bad("--skip applies to digits only".into()));
        }
        let rows = options
            .rows
            .unwrap_or(self.default_rows().saturating_sub(options.skip));
        if rows == 0 {
            return Err(self.bad("--rows must be at least 1".into()));
        }
        let rows =
            usize::try_from(rows).map_err(|_| self.bad(format!("{rows} rows is too many")))?;
        let seed = mix64(options.seed ^ mix64(*self as u64 + 1));
        match self {
            Generator::SelectiveCopy => {
                self.sequences(rows, seed, options, 256, 16, 16, selective_copy)
            }
            Generator::InductionHeads => {
                self.sequences(rows, seed, options, 256, 16, 1, induction_heads)
            }
            Generator::Adding => self.sequences(rows, seed, options, 256, 21, 2, adding),
            Generator::CopyMemory => self.sequences(rows, seed, options, 256, 10, 10, copy_memory),
            Generator::GaussianRing => Ok(vec![gaussian_ring(rows, seed)]),
            Generator::SbmGraph => sbm_graph(rows, seed).map_err(|message| self.bad(message)),
            Generator::Digits => digits(rows, options.skip).map(|table| vec![table]),
        }
    }

    fn bad(&self, message: String) -> DatasetError {
        DatasetError::BadGeneratorParameters {
            task: self.name().into(),
            message,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn sequences(
        &self,
        rows: usize,
        seed: u64,
        options: &GeneratorOptions,
        default_length: usize,
        default_vocab: usize,
        default_data: usize,
        make: fn(&Keyed, &SequenceShape, &mut [i64], &mut [i64]),
    ) -> Result<Vec<GeneratedTable>> {
        let shape = SequenceShape {
            length: options.length.unwrap_or(default_length),
            vocab: options.vocab.unwrap_or(default_vocab),
            data_tokens: options.data_tokens.unwrap_or(default_data),
        };
        self.check_shape(&shape)?;
        let length = shape.length;
        let mut tokens = vec![0i64; rows * length];
        let mut targets = vec![IGNORE; rows * length];
        for row in 0..rows {
            let random = Keyed::new(seed, row as u64);
            let span = row * length..(row + 1) * length;
            make(
                &random,
                &shape,
                &mut tokens[span.clone()],
                &mut targets[span],
            );
        }
        let list = |values: Vec<i64>| -> ArrayRef {
            let mut builder = ListBuilder::new(Int64Builder::with_capacity(values.len()))
                .with_field(Arc::new(Field::new_list_field(DataType::Int64, false)));
            for row in values.chunks_exact(length) {
                builder.values().append_slice(row);
                builder.append(true);
            }
            Arc::new(builder.finish())
        };
        let schema = Schema::new(vec![
            Field::new("tokens", list_type(DataType::Int64), false),
            Field::new("targets", list_type(DataType::Int64), false),
        ]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![list(tokens), list(targets)])
            .map_err(|error| self.bad(error.to_string()))?;
        Ok(vec![GeneratedTable {
            role: None,
            batch,
            rows_per_group: rows_per_group(length * 16),
        }])
    }

    fn check_shape(&self, shape: &SequenceShape) -> Result<()> {
        let SequenceShape {
            length,
            vocab,
            data_tokens,
        } = *shape;
        if length > (i32::MAX as usize) / 1024 {
            return Err(self.bad(format!("length {length} is too long")));
        }
        let problem = match self {
            Generator::SelectiveCopy => (vocab < 3 || data_tokens == 0 || length < 2 * data_tokens)
                .then(|| {
                    "needs vocab >= 3, data tokens >= 1 and length >= 2 * data tokens".to_string()
                }),
            Generator::InductionHeads => {
                (vocab < 3 || length < 4).then(|| "needs vocab >= 3 and length >= 4".to_string())
            }
            Generator::Adding => (vocab < 5 || vocab % 2 == 0 || length < 3).then(|| {
                "needs an odd vocab >= 5 (digits = (vocab - 1) / 2) and length >= 3".to_string()
            }),
            Generator::CopyMemory => {
                (vocab < 4 || data_tokens == 0 || length < 2 * data_tokens + 1).then(|| {
                    "needs vocab >= 4, data tokens >= 1 and length >= 2 * data tokens + 1"
                        .to_string()
                })
            }
            _ => None,
        };
        match problem {
            Some(message) => Err(self.bad(format!(
                "{message} (got length {length}, vocab {vocab}, data tokens {data_tokens})"
            ))),
            None => Ok(()),
        }
    }

    /// Generates and writes the tables: the main one at `out`, an edge table
    /// (sbm-graph) at `STEM.edges.parquet` beside it. Returns the paths written.
    pub fn write(&self, options: &GeneratorOptions, out: &Path) -> Result<Vec<PathBuf>> {
        if *self == Generator::Digits
            && options.skip == 0
            && options.rows.is_none_or(|rows| rows == self.default_rows())
        {
            write_bytes(out, DIGITS_PARQUET)?;
            return Ok(vec![out.to_path_buf()]);
        }
        let mut written = Vec::new();
        for table in self.generate(options)? {
            let path = match table.role {
                None => out.to_path_buf(),
                Some(role) => sibling_path(out, role),
            };
            write_parquet(&path, &table.batch, table.rows_per_group)?;
            written.push(path);
        }
        Ok(written)
    }
}

/// The path of a companion table: `dir/STEM.ROLE.parquet` for `dir/STEM.parquet`.
pub fn sibling_path(out: &Path, role: &str) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    out.with_file_name(format!("{stem}.{role}.parquet"))
}

fn list_type(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(item, false)))
}

fn rows_per_group(row_bytes: usize) -> usize {
    (TARGET_ROW_GROUP_BYTES / row_bytes.max(1)).clamp(256, 1 << 17)
}

/// The sizes of a sequence task.
#[derive(Clone, Copy, Debug)]
struct SequenceShape {
    length: usize,
    vocab: usize,
    data_tokens: usize,
}

/// Tokens: 0 is noise, `1..vocab-1` data, `vocab-1` the marker. The first
/// `length - data_tokens` positions hold `data_tokens` data tokens at random
/// places among noise; the last `data_tokens` positions are markers, whose
/// targets are the data tokens in order. Other targets are -100.
fn selective_copy(random: &Keyed, shape: &SequenceShape, tokens: &mut [i64], targets: &mut [i64]) {
    let data = shape.data_tokens;
    let region = shape.length - data;
    let marker = shape.vocab as i64 - 1;
    let mut places: Vec<u32> = Keyed::new(random.word(0), 1).permutation(region)[..data].to_vec();
    places.sort_unstable();
    for (index, &place) in places.iter().enumerate() {
        let token = 1 + random.below(1 + index as u64, shape.vocab as u64 - 2) as i64;
        tokens[place as usize] = token;
        tokens[region + index] = marker;
        targets[region + index] = token;
    }
}

/// Tokens `0..vocab-1` are ordinary, `vocab-1` is the trigger. The trigger
/// sits once at a random place followed by the answer, and again at the
/// last position, whose target is the answer.
fn induction_heads(random: &Keyed, shape: &SequenceShape, tokens: &mut [i64], targets: &mut [i64]) {
    let trigger = shape.vocab as i64 - 1;
    let length = shape.length;
    for (index, token) in tokens.iter_mut().enumerate() {
        *token = random.below(index as u64, shape.vocab as u64 - 1) as i64;
    }
    let place = random.below(length as u64, length as u64 - 2) as usize; // 0..=length-3
    let answer = tokens[place + 1];
    tokens[place] = trigger;
    tokens[length - 1] = trigger;
    targets[length - 1] = answer;
}

/// With `digits = (vocab - 1) / 2`: tokens `0..digits` are digits, `digits +
/// d` is digit `d` marked, `2 * digits` the final query. Two distinct
/// positions before the last are marked; the target at the query position
/// is the sum of the marked digits (a class in `0..2 * digits - 1`).
fn adding(random: &Keyed, shape: &SequenceShape, tokens: &mut [i64], targets: &mut [i64]) {
    let digits = (shape.vocab as i64 - 1) / 2;
    let length = shape.length;
    for (index, token) in tokens.iter_mut().enumerate() {
        *token = random.below(index as u64, digits as u64) as i64;
    }
    let first = random.below(length as u64, length as u64 - 1) as usize;
    let mut second = random.below(length as u64 + 1, length as u64 - 2) as usize;
    if second >= first {
        second += 1;
    }
    let sum = tokens[first] + tokens[second];
    tokens[first] += digits;
    tokens[second] += digits;
    tokens[length - 1] = 2 * digits;
    targets[length - 1] = sum;
}

/// Tokens: 0 blank, `1..vocab-1` data, `vocab-1` the delimiter. The first
/// `data_tokens` positions hold data, then blanks, then the delimiter
/// `data_tokens + 1` positions from the end, then blanks whose targets are
/// the data in order. Other targets are -100.
fn copy_memory(random: &Keyed, shape: &SequenceShape, tokens: &mut [i64], targets: &mut [i64]) {
    let data = shape.data_tokens;
    let length = shape.length;
    let delimiter = shape.vocab as i64 - 1;
    for index in 0..data {
        let token = 1 + random.below(index as u64, shape.vocab as u64 - 2) as i64;
        tokens[index] = token;
        targets[length - data + index] = token;
    }
    tokens[length - data - 1] = delimiter;
}

fn gaussian_ring(rows: usize, seed: u64) -> GeneratedTable {
    let mut points = Vec::with_capacity(rows * 2);
    let mut modes = Vec::with_capacity(rows);
    for row in 0..rows {
        let random = Keyed::new(seed, row as u64);
        let mode = random.below(0, 8);
        let angle = std::f64::consts::TAU * mode as f64 / 8.0;
        points.push((2.0 * angle.cos() + 0.02 * random.normal(1)) as f32);
        points.push((2.0 * angle.sin() + 0.02 * random.normal(2)) as f32);
        modes.push(mode as i64);
    }
    let schema = Schema::new(vec![
        Field::new("x", fixed_list_type(DataType::Float32, 2), false),
        Field::new("mode", DataType::Int64, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(fixed_list(points, 2)),
        Arc::new(Int64Array::from(modes)),
    ];
    let batch = RecordBatch::try_new(Arc::new(schema), columns)
        .unwrap_or_else(|error| panic!("gaussian-ring: columns disagree with the schema: {error}"));
    GeneratedTable {
        role: None,
        batch,
        rows_per_group: rows_per_group(16),
    }
}

fn fixed_list_type(item: DataType, size: i32) -> DataType {
    DataType::FixedSizeList(Arc::new(Field::new_list_field(item, false)), size)
}

fn fixed_list(values: Vec<f32>, size: i32) -> FixedSizeListArray {
    FixedSizeListArray::new(
        Arc::new(Field::new_list_field(DataType::Float32, false)),
        size,
        Arc::new(Float32Array::from(values)),
        None,
    )
}

/// The number of communities of sbm-graph.
pub const SBM_COMMUNITIES: u64 = 4;
/// The node feature width of sbm-graph.
pub const SBM_FEATURES: usize = 16;
const SBM_DEGREE_INSIDE: u64 = 8;
const SBM_DEGREE_ACROSS: u64 = 2;

/// Nodes get a community uniformly among 4 (`label`). Each node proposes
/// 4 edges to random nodes of its own community and 1 to a random node of
/// another, added in both directions, without self-loops or repeats (so
/// mean degrees are about 8 inside and 2 across). Features: 16 normal
/// draws, plus 1.0 on the component of the node's community (weakly
/// informative). `train_mask` is 1 for about 20% of nodes, `test_mask` for
/// another 40%.
fn sbm_graph(nodes: usize, seed: u64) -> std::result::Result<Vec<GeneratedTable>, String> {
    if nodes < 2 * SBM_COMMUNITIES as usize {
        return Err(format!("needs at least {} nodes", 2 * SBM_COMMUNITIES));
    }
    let node_random = |node: usize| Keyed::new(seed, node as u64);
    let labels: Vec<i64> = (0..nodes)
        .map(|node| node_random(node).below(0, SBM_COMMUNITIES) as i64)
        .collect();
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); SBM_COMMUNITIES as usize];
    for (node, &label) in labels.iter().enumerate() {
        members[label as usize].push(node as u32);
    }
    let mut features = Vec::with_capacity(nodes * SBM_FEATURES);
    let mut train = Vec::with_capacity(nodes);
    let mut test = Vec::with_capacity(nodes);
    let mut edges: Vec<(u32, u32)> = Vec::new();
    for (node, &label) in labels.iter().enumerate() {
        let random = node_random(node);
        let label = label as usize;
        for component in 0..SBM_FEATURES {
            let signal = if component == label { 1.0 } else { 0.0 };
            features.push((signal + random.normal(100 + component as u64)) as f32);
        }
        let split = random.unit(1);
        train.push(i64::from(split < 0.2));
        test.push(i64::from(split >= 0.6));
        let own = &members[label];
        for proposal in 0..SBM_DEGREE_INSIDE / 2 {
            let other = own[random.below(10 + proposal, own.len() as u64) as usize];
            edges.push((node as u32, other));
        }
        let others: Vec<&Vec<u32>> = members
            .iter()
            .enumerate()
            .filter(|(community, group)| *community != label && !group.is_empty())
            .map(|(_, group)| group)
            .collect();
        if !others.is_empty() {
            for proposal in 0..SBM_DEGREE_ACROSS / 2 {
                let group = others[random.below(50 + 2 * proposal, others.len() as u64) as usize];
                let other = group[random.below(51 + 2 * proposal, group.len() as u64) as usize];
                edges.push((node as u32, other));
            }
        }
    }
    let mut directed: Vec<(u32, u32)> = edges
        .iter()
        .filter(|(a, b)| a != b)
        .flat_map(|&(a, b)| [(a, b), (b, a)])
        .collect();
    directed.sort_unstable();
    directed.dedup();
    let node_schema = Schema::new(vec![
        Field::new(
            "x",
            fixed_list_type(DataType::Float32, SBM_FEATURES as i32),
            false,
        ),
        Field::new("label", DataType::Int64, false),
        Field::new("train_mask", DataType::Int64, false),
        Field::new("test_mask", DataType::Int64, false),
    ]);
    let node_columns: Vec<ArrayRef> = vec![
        Arc::new(fixed_list(features, SBM_FEATURES as i32)),
        Arc::new(Int64Array::from(labels)),
        Arc::new(Int64Array::from(train)),
        Arc::new(Int64Array::from(test)),
    ];
    let edge_schema = Schema::new(vec![
        Field::new("src", DataType::Int64, false),
        Field::new("dst", DataType::Int64, false),
    ]);
    let edge_columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            directed.iter().map(|&(a, _)| i64::from(a)),
        )),
        Arc::new(Int64Array::from_iter_values(
            directed.iter().map(|&(_, b)| i64::from(b)),
        )),
    ];
    let nodes_batch = RecordBatch::try_new(Arc::new(node_schema), node_columns)
        .map_err(|error| error.to_string())?;
    let edges_batch = RecordBatch::try_new(Arc::new(edge_schema), edge_columns)
        .map_err(|error| error.to_string())?;
    Ok(vec![
        GeneratedTable {
            role: None,
            batch: nodes_batch,
            rows_per_group: rows_per_group(SBM_FEATURES * 4 + 24),
        },
        GeneratedTable {
            role: Some("edges"),
            batch: edges_batch,
            rows_per_group: rows_per_group(16),
        },
    ])
}

/// The first `rows` bundled digits.
fn digits(rows: usize, skip: u64) -> Result<GeneratedTable> {
    let bad = |message: String| DatasetError::BadGeneratorParameters {
        task: "digits".into(),
        message,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from_static(DIGITS_PARQUET))
        .and_then(|builder| builder.with_batch_size(4096).build())
        .map_err(|error| bad(format!("bundled file unreadable: {error}")))?;
    let mut batches = Vec::new();
    for batch in reader {
        batches.push(batch.map_err(|error| bad(format!("bundled file unreadable: {error}")))?);
    }
    let schema = batches
        .first()
        .map(|batch| batch.schema())
        .ok_or_else(|| bad("bundled file is empty".into()))?;
    let batch = arrow_select_concat(&schema, &batches).map_err(bad)?;
    let skip = usize::try_from(skip).unwrap_or(usize::MAX);
    if skip.saturating_add(rows) > batch.num_rows() {
        return Err(bad(format!(
            "only {} digits are bundled, asked for {rows} after skipping {skip}",
            batch.num_rows()
        )));
    }
    Ok(GeneratedTable {
        role: None,
        batch: batch.slice(skip, rows),
        rows_per_group: 256,
    })
}

/// Concatenates record batches (the digits file is one or a few batches).
fn arrow_select_concat(
    schema: &arrow_schema::SchemaRef,
    batches: &[RecordBatch],
) -> std::result::Result<RecordBatch, String> {
    if batches.len() == 1 {
        return Ok(batches[0].clone());
    }
    // Re-read as a single batch is simpler than pulling in arrow-select:
    // the caller asks for a batch size larger than the file.
    Err(format!(
        "expected one batch of {} fields, got {}",
        schema.fields().len(),
        batches.len()
    ))
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|error| DatasetError::Write {
        path: path.to_path_buf(),
        message: error.to_string(),
    })
}

/// Writes `batch` to `path` as Parquet: snappy, dictionary encoding off for
/// float columns, `rows_per_group` rows per row group. Writes to a
/// temporary name beside `path`, then renames.
pub fn write_parquet(path: &Path, batch: &RecordBatch, rows_per_group: usize) -> Result<()> {
    let write_error = |message: String| DatasetError::Write {
        path: path.to_path_buf(),
        message,
    };
    let schema = batch.schema();
    let descriptor = ArrowSchemaConverter::new()
        .convert(&schema)
        .map_err(|error| write_error(error.to_string()))?;
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(rows_per_group.max(1)));
    for column in descriptor.columns() {
        if matches!(
            column.physical_type(),
            PhysicalType::FLOAT | PhysicalType::DOUBLE
        ) {
            properties = properties.set_column_dictionary_enabled(column.path().clone(), false);
        }
    }
    let temporary = path.with_file_name(format!(
        ".{}.partial",
        path.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let file = File::create(&temporary).map_err(|error| write_error(error.to_string()))?;
    let mut writer = ArrowWriter::try_new(file, schema, Some(properties.build()))
        .map_err(|error| write_error(error.to_string()))?;
    writer
        .write(batch)
        .map_err(|error| write_error(error.to_string()))?;
    writer
        .close()
        .map_err(|error| write_error(error.to_string()))?;
    std::fs::rename(&temporary, path).map_err(|error| write_error(error.to_string()))
}
