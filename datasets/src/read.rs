//! Reading samples: only the columns a task needs (projection) and only the
//! row groups a batch touches (row-group selection), decoded once into flat
//! arrays and kept in a small cache of whole row groups, so memory stays
//! bounded by `cache_row_groups` row groups whatever the dataset's size.
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, OffsetSizeTrait};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::dataset::Dataset;
use crate::error::{DatasetError, Result};
use crate::task::{BoundInput, ColumnMapping, InputKind, Task, bind};

/// A float array with its shape (row-major), ready to become a tensor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FloatArray {
    /// The dimensions; the first is the number of samples.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub values: Vec<f32>,
}

/// An integer array with its shape (row-major), ready to become a tensor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntArray {
    /// The dimensions; the first is the number of samples.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub values: Vec<i64>,
}

/// The samples of one micro-batch as named arrays, keyed by task input name
/// (`x`, `label`, `tokens`, ...).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// The sample ids, in batch order.
    pub samples: Vec<u64>,
    /// Float inputs.
    pub floats: BTreeMap<String, FloatArray>,
    /// Integer inputs.
    pub ints: BTreeMap<String, IntArray>,
}

impl Batch {
    /// The number of bytes of values held (4 per float, 8 per integer).
    pub fn value_bytes(&self) -> usize {
        self.floats
            .values()
            .map(|array| array.values.len() * 4)
            .sum::<usize>()
            + self
                .ints
                .values()
                .map(|array| array.values.len() * 8)
                .sum::<usize>()
    }
}

/// One decoded column of one row group: flat values and, for lists, where
/// each row starts.
#[derive(Clone, Debug)]
enum Values {
    Floats(Vec<f32>),
    Ints(Vec<i64>),
}

#[derive(Clone, Debug)]
struct DecodedColumn {
    values: Values,
    /// `rows + 1` offsets into `values`.
    offsets: Vec<usize>,
}

impl DecodedColumn {
    fn row(&self, row: usize) -> Range {
        Range {
            start: self.offsets[row],
            end: self.offsets[row + 1],
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Range {
    start: usize,
    end: usize,
}

impl Range {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// One row group, decoded: a column per bound input.
#[derive(Debug)]
struct DecodedRowGroup {
    global_row_group: usize,
    columns: Vec<DecodedColumn>,
}

/// Reads samples of a dataset for a task.
#[derive(Debug)]
pub struct Reader {
    dataset: Dataset,
    task: Task,
    inputs: Vec<BoundInput>,
    cache: Vec<Arc<DecodedRowGroup>>,
    cache_row_groups: usize,
    row_groups_decoded: u64,
}

impl Reader {
    /// The default number of decoded row groups kept.
    pub const DEFAULT_CACHE_ROW_GROUPS: usize = 8;

    /// A reader of `dataset` for `task`, its columns picked by `mapping` and
    /// checked against the schema.
    pub fn new(dataset: Dataset, task: Task, mapping: &ColumnMapping) -> Result<Self> {
        let path = dataset.files()[0].path().to_path_buf();
        let inputs = bind(task, mapping, dataset.schema(), &path)?;
        Ok(Self {
            dataset,
            task,
            inputs,
            cache: Vec::new(),
            cache_row_groups: Self::DEFAULT_CACHE_ROW_GROUPS,
            row_groups_decoded: 0,
        })
    }

    /// Keeps at most `row_groups` decoded row groups between calls (at least
    /// one; a single batch that spans more row groups holds them all while
    /// it is gathered).
    pub fn with_cache_row_groups(mut self, row_groups: usize) -> Self {
        self.cache_row_groups = row_groups.max(1);
        self
    }

    /// The dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The task.
    pub fn task(&self) -> Task {
        self.task
    }

    /// The columns bound to the task's inputs.
    pub fn inputs(&self) -> &[BoundInput] {
        &self.inputs
    }

    /// How many row groups were decoded so far (cache misses).
    pub fn row_groups_decoded(&self) -> u64 {
        self.row_groups_decoded
    }

    /// The uncompressed size, from the footers, of the projected column
    /// chunks of every row group (what a reader of these columns decodes).
    pub fn projected_uncompressed_bytes(&self) -> u64 {
        let mut total = 0u64;
        for file in self.dataset.files() {
            let metadata = file.metadata().metadata();
            let schema = metadata.file_metadata().schema_descr();
            let mask = self.projection(schema);
            for group in metadata.row_groups() {
                for (index, column) in group.columns().iter().enumerate() {
                    if mask.leaf_included(index) {
                        total += column.uncompressed_size().max(0) as u64;
                    }
                }
            }
        }
        total
    }

    fn projection(&self, schema: &parquet::schema::types::SchemaDescriptor) -> ProjectionMask {
        ProjectionMask::roots(schema, self.inputs.iter().map(|input| input.column_index))
    }

    /// Reads the samples `samples` (ids over the whole dataset), in that order.
    pub fn read_samples(&mut self, samples: &[u64]) -> Result<Batch> {
        let layout = self.dataset.layout().clone();
        let mut located = Vec::with_capacity(samples.len());
        for &sample in samples {
            located.push(layout.locate(sample)?);
        }
        let mut needed: Vec<usize> = located
            .iter()
            .map(|location| location.global_row_group)
            .collect();
        needed.sort_unstable();
        needed.dedup();
        let mut groups: BTreeMap<usize, Arc<DecodedRowGroup>> = BTreeMap::new();
        for &group in &needed {
            groups.insert(group, self.row_group(group)?);
        }
        let rows: Vec<(&DecodedRowGroup, usize)> = located
            .iter()
            .map(|location| (&*groups[&location.global_row_group], location.row as usize))
            .collect();
        self.gather(samples.to_vec(), &rows)
    }

    /// Reads every sample of row group `global_row_group` (over all files).
    pub fn read_row_group(&mut self, global_row_group: usize) -> Result<Batch> {
        let span = *self
            .dataset
            .layout()
            .row_groups()
            .get(global_row_group)
            .ok_or_else(|| DatasetError::OutOfRange {
                message: format!("row group {global_row_group}"),
            })?;
        let group = self.row_group(global_row_group)?;
        let rows: Vec<(&DecodedRowGroup, usize)> =
            (0..span.rows as usize).map(|row| (&*group, row)).collect();
        let samples = (span.first_sample..span.first_sample + span.rows).collect();
        self.gather(samples, &rows)
    }

    /// Reads the whole dataset into one batch (for small tables such as a
    /// graph's nodes and edges).
    pub fn read_all(&mut self) -> Result<Batch> {
        let samples: Vec<u64> = (0..self.dataset.samples()).collect();
        let groups = self.dataset.layout().row_groups().len();
        let mut decoded = Vec::with_capacity(groups);
        for group in 0..groups {
            decoded.push(self.decode(group)?);
        }
        let mut rows = Vec::with_capacity(samples.len());
        for (group, span) in decoded.iter().zip(self.dataset.layout().row_groups()) {
            rows.extend((0..span.rows as usize).map(|row| (group, row)));
        }
        self.gather(samples, &rows)
    }

    fn row_group(&mut self, global_row_group: usize) -> Result<Arc<DecodedRowGroup>> {
        if let Some(position) = self
            .cache
            .iter()
            .position(|group| group.global_row_group == global_row_group)
        {
            // Most recently used goes last.
            let group = self.cache.remove(position);
            self.cache.push(group.clone());
            return Ok(group);
        }
        let group = Arc::new(self.decode(global_row_group)?);
        self.row_groups_decoded += 1;
        if self.cache.len() >= self.cache_row_groups {
            self.cache.remove(0);
        }
        self.cache.push(group.clone());
        Ok(group)
    }

    /// Decodes one row group. A panic inside the Parquet decoder (on a
    /// corrupt file it has not guarded against) becomes an error naming the file.
    fn decode(&self, global_row_group: usize) -> Result<DecodedRowGroup> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.decode_unguarded(global_row_group)
        }))
        .unwrap_or_else(|panic| {
            let span = self.dataset.layout().row_groups()[global_row_group];
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_else(|| "decoder panicked".into());
            Err(DatasetError::Parquet {
                path: self.dataset.files()[span.file].path().to_path_buf(),
                message: format!("row group {}: {message}", span.row_group),
            })
        })
    }

    fn decode_unguarded(&self, global_row_group: usize) -> Result<DecodedRowGroup> {
        let span = self.dataset.layout().row_groups()[global_row_group];
        let data_file = &self.dataset.files()[span.file];
        let path = data_file.path();
        let parquet_error = |message: String| DatasetError::Parquet {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(|source| DatasetError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let metadata = data_file.metadata().clone();
        let mask = self.projection(metadata.parquet_schema());
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata)
            .with_projection(mask)
            .with_row_groups(vec![span.row_group])
            .with_batch_size((span.rows as usize).clamp(1, 1 << 20))
            .build()
            .map_err(|error| parquet_error(error.to_string()))?;
        let mut columns: Vec<DecodedColumn> = self
            .inputs
            .iter()
            .map(|input| DecodedColumn {
                values: match input.input.kind {
                    InputKind::FloatScalar | InputKind::FloatVector => Values::Floats(Vec::new()),
                    InputKind::IntScalar | InputKind::IntSequence { .. } => {
                        Values::Ints(Vec::new())
                    }
                },
                offsets: vec![0],
            })
            .collect();
        let mut rows_done = 0u64;
        for record_batch in reader {
            let record_batch = record_batch.map_err(|error| parquet_error(error.to_string()))?;
            for (input, column) in self.inputs.iter().zip(columns.iter_mut()) {
                let array = record_batch.column_by_name(&input.column).ok_or_else(|| {
                    parquet_error(format!(
                        "column {:?} missing from decoded batch",
                        input.column
                    ))
                })?;
                let first_row =
                    span.first_sample - first_sample_of_file(&self.dataset, span.file) + rows_done;
                append_column(column, array, path, &input.column, first_row)?;
            }
            rows_done += record_batch.num_rows() as u64;
        }
        if rows_done != span.rows {
            return Err(parquet_error(format!(
                "row group {} decoded {rows_done} rows, footer says {}",
                span.row_group, span.rows
            )));
        }
        Ok(DecodedRowGroup {
            global_row_group,
            columns,
        })
    }

    fn gather(&self, samples: Vec<u64>, rows: &[(&DecodedRowGroup, usize)]) -> Result<Batch> {
        let mut batch = Batch {
            samples,
            ..Batch::default()
        };
        let count = rows.len();
        for (index, input) in self.inputs.iter().enumerate() {
            let name = input.input.name.to_string();
            match input.input.kind {
                InputKind::FloatScalar | InputKind::FloatVector => {
                    let mut values = Vec::new();
                    let mut width = None;
                    for (position, (group, row)) in rows.iter().enumerate() {
                        let column = &group.columns[index];
                        let range = column.row(*row);
                        match width {
                            None => width = Some(range.len()),
                            Some(width) if width != range.len() => {
                                return Err(self.value_error(
                                    &batch.samples,
                                    position,
                                    &input.column,
                                    format!(
                                        "vector of length {}, expected {width} like the batch's first sample",
                                        range.len()
                                    ),
                                ));
                            }
                            Some(_) => {}
                        }
                        if let Values::Floats(data) = &column.values {
                            values.extend_from_slice(&data[range.start..range.end]);
                        }
                    }
                    let shape = match input.input.kind {
                        InputKind::FloatScalar => vec![count],
                        _ => vec![count, width.unwrap_or(0)],
                    };
                    batch.floats.insert(name, FloatArray { shape, values });
                }
                InputKind::IntScalar => {
                    let mut values = Vec::with_capacity(count);
                    for (group, row) in rows {
                        let column = &group.columns[index];
                        if let Values::Ints(data) = &column.values {
                            values.push(data[column.row(*row).start]);
                        }
                    }
                    batch.ints.insert(
                        name,
                        IntArray {
                            shape: vec![count],
                            values,
                        },
                    );
                }
                InputKind::IntSequence { pad } => {
                    let longest = rows
                        .iter()
                        .map(|(group, row)| group.columns[index].row(*row).len())
                        .max()
                        .unwrap_or(0);
                    let mut values = Vec::with_capacity(count * longest);
                    for (group, row) in rows {
                        let column = &group.columns[index];
                        let range = column.row(*row);
                        if let Values::Ints(data) = &column.values {
                            values.extend_from_slice(&data[range.start..range.end]);
                        }
                        values.extend(std::iter::repeat_n(pad, longest - range.len()));
                    }
                    batch.ints.insert(
                        name,
                        IntArray {
                            shape: vec![count, longest],
                            values,
                        },
                    );
                }
            }
        }
        Ok(batch)
    }

    fn value_error(
        &self,
        samples: &[u64],
        position: usize,
        column: &str,
        message: String,
    ) -> DatasetError {
        let sample = samples.get(position).copied().unwrap_or(0);
        match self.dataset.layout().locate(sample) {
            Ok(location) => {
                let file = &self.dataset.files()[location.file];
                DatasetError::BadValue {
                    path: file.path().to_path_buf(),
                    column: column.into(),
                    row: self.dataset.layout().row_groups()[location.global_row_group].first_sample
                        - first_sample_of_file(&self.dataset, location.file)
                        + location.row,
                    message,
                }
            }
            Err(error) => error,
        }
    }
}

fn first_sample_of_file(dataset: &Dataset, file: usize) -> u64 {
    dataset
        .layout()
        .row_groups()
        .iter()
        .find(|span| span.file == file)
        .map(|span| span.first_sample)
        .unwrap_or(0)
}

fn bad_value(path: &Path, column: &str, row: u64, message: String) -> DatasetError {
    DatasetError::BadValue {
        path: path.to_path_buf(),
        column: column.into(),
        row,
        message,
    }
}

/// The first null row of `array`, if any.
fn first_null(array: &dyn Array) -> Option<usize> {
    if array.null_count() == 0 {
        return None;
    }
    (0..array.len()).find(|&row| array.is_null(row))
}

/// Appends `array`'s values (a slice of the child for lists) to `column`.
fn append_column(
    column: &mut DecodedColumn,
    array: &ArrayRef,
    path: &Path,
    name: &str,
    first_row: u64,
) -> Result<()> {
    if let Some(row) = first_null(array.as_ref()) {
        return Err(bad_value(
            path,
            name,
            first_row + row as u64,
            "null value".into(),
        ));
    }
    let rows = array.len();
    let base = match &column.values {
        Values::Floats(values) => values.len(),
        Values::Ints(values) => values.len(),
    };
    let (child, start, relative_offsets): (ArrayRef, usize, Vec<usize>) = match array.data_type() {
        DataType::FixedSizeList(_, width) => {
            let list = array.as_fixed_size_list();
            let width = *width as usize;
            let start = if rows > 0 { list.value_offset_at(0) } else { 0 };
            (
                list.values().slice(start, rows * width),
                0,
                (0..=rows).map(|row| row * width).collect(),
            )
        }
        DataType::List(_) => list_parts::<i32>(array.as_list::<i32>()),
        DataType::LargeList(_) => list_parts::<i64>(array.as_list::<i64>()),
        _ => (array.clone(), 0, (0..=rows).collect()),
    };
    let _ = start;
    if let Some(position) = first_null(child.as_ref()) {
        let row = relative_offsets
            .partition_point(|&offset| offset <= position)
            .saturating_sub(1);
        return Err(bad_value(
            path,
            name,
            first_row + row as u64,
            "null inside a list".into(),
        ));
    }
    match &mut column.values {
        Values::Floats(values) => {
            if let Some(floats) = child.as_primitive_opt::<Float32Type>() {
                values.extend_from_slice(floats.values());
            } else if let Some(doubles) = child.as_primitive_opt::<Float64Type>() {
                values.extend(doubles.values().iter().map(|&value| value as f32));
            } else {
                return Err(bad_value(
                    path,
                    name,
                    first_row,
                    format!("expected floats, found {}", child.data_type()),
                ));
            }
        }
        Values::Ints(values) => {
            if let Some(ints) = child.as_primitive_opt::<Int64Type>() {
                values.extend_from_slice(ints.values());
            } else if let Some(ints) = child.as_primitive_opt::<Int32Type>() {
                values.extend(ints.values().iter().map(|&value| i64::from(value)));
            } else {
                return Err(bad_value(
                    path,
                    name,
                    first_row,
                    format!("expected integers, found {}", child.data_type()),
                ));
            }
        }
    }
    column
        .offsets
        .extend(relative_offsets[1..].iter().map(|offset| base + offset));
    Ok(())
}

fn list_parts<O: OffsetSizeTrait>(
    list: &arrow_array::GenericListArray<O>,
) -> (ArrayRef, usize, Vec<usize>) {
    let offsets = list.value_offsets();
    let first = offsets.first().map(|offset| offset.as_usize()).unwrap_or(0);
    let last = offsets.last().map(|offset| offset.as_usize()).unwrap_or(0);
    let relative = offsets
        .iter()
        .map(|offset| offset.as_usize() - first)
        .collect();
    (list.values().slice(first, last - first), first, relative)
}

/// A whole graph read from a node table and an edge table, as one batch:
/// `x` `[n, d]`, `label` `[n]`, `train_mask` `[n]` from the nodes and
/// `src`, `dst` `[e]` from the edges; edge endpoints are checked to lie in
/// `0..n`.
pub fn read_graph(nodes: &Dataset, edges: &Dataset, mapping: &ColumnMapping) -> Result<Batch> {
    let mut node_batch = Reader::new(nodes.clone(), Task::GraphNodes, mapping)?.read_all()?;
    let mut edge_reader = Reader::new(edges.clone(), Task::GraphEdges, mapping)?;
    let edge_batch = edge_reader.read_all()?;
    let node_count = nodes.samples() as i64;
    for input in edge_reader.inputs() {
        let array = &edge_batch.ints[input.input.name];
        if let Some(row) = array
            .values
            .iter()
            .position(|&node| node < 0 || node >= node_count)
        {
            let path = edges.files()[0].path();
            return Err(bad_value(
                path,
                &input.column,
                row as u64,
                format!("node id {} outside 0..{node_count}", array.values[row]),
            ));
        }
    }
    node_batch.ints.extend(edge_batch.ints);
    Ok(node_batch)
}
