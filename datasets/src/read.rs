//! Reading samples: only the columns a task needs (projection) and only the
//! row groups a batch touches (row-group selection), decoded once into flat
//! arrays and kept in a small cache of whole row groups, so memory stays
//! bounded by `cache_row_groups` row groups whatever the dataset's size.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float32Array, Int64Array, OffsetSizeTrait, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::dataset::Dataset;
use crate::error::{DatasetError, Result};
use crate::leaf;
use crate::object::SparseChunks;
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
    /// Kept as decoded (no copy) when the column is float32.
    Floats(Float32Array),
    /// Kept as decoded (no copy) when the column is int64.
    Ints(Int64Array),
}

/// Where each row of a decoded column lies in its values.
#[derive(Clone, Debug)]
enum RowLayout {
    /// Every row holds `width` values (scalars: 1; fixed-size lists).
    Fixed(usize),
    /// Row `r` holds `offsets[r]..offsets[r + 1]` (variable lists).
    Offsets(Vec<usize>),
}

#[derive(Clone, Debug)]
struct DecodedColumn {
    values: Values,
    layout: RowLayout,
}

impl DecodedColumn {
    fn row(&self, row: usize) -> Range {
        match &self.layout {
            RowLayout::Fixed(width) => Range {
                start: row * width,
                end: (row + 1) * width,
            },
            RowLayout::Offsets(offsets) => Range {
                start: offsets[row],
                end: offsets[row + 1],
            },
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

    fn range(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

/// The width of the node vectors of a `list<fixed_size_list<_>[width]>` type.
fn node_width(data_type: &DataType) -> usize {
    match data_type {
        DataType::List(field) | DataType::LargeList(field) => match field.data_type() {
            DataType::FixedSizeList(_, width) => *width as usize,
            _ => 0,
        },
        _ => 0,
    }
}

/// A run of consecutive rows of one row group.
struct Run<'a> {
    group: &'a DecodedRowGroup,
    start: usize,
    end: usize,
    /// Position of the run's first row in the batch.
    position: usize,
}

/// Splits a batch's rows into runs of consecutive rows of one row group.
fn runs<'a>(rows: &[(&'a DecodedRowGroup, usize)]) -> Vec<Run<'a>> {
    let mut out: Vec<Run<'a>> = Vec::new();
    for (position, &(group, row)) in rows.iter().enumerate() {
        if let Some(last) = out.last_mut()
            && std::ptr::eq(last.group, group)
            && last.end == row
        {
            last.end += 1;
            continue;
        }
        out.push(Run {
            group,
            start: row,
            end: row + 1,
            position,
        });
    }
    out
}

/// One row group, decoded: a column per bound input.
#[derive(Debug)]
struct DecodedRowGroup {
    global_row_group: usize,
    columns: Vec<DecodedColumn>,
    /// How many of `columns` were decoded by [`leaf`] rather than Arrow.
    direct_columns: u64,
}

/// Where one row group's column chunks are read from.
enum Source {
    /// A local file.
    File(File),
    /// The projected column chunks, fetched from object storage.
    Chunks(SparseChunks),
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
    direct: bool,
    direct_column_chunks: u64,
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
            direct: true,
            direct_column_chunks: 0,
        })
    }

    /// A reader of the same dataset, task and columns with the same
    /// settings and an empty cache (for reading ahead on another thread).
    pub fn fork(&self) -> Reader {
        Reader {
            dataset: self.dataset.clone(),
            task: self.task,
            inputs: self.inputs.clone(),
            cache: Vec::new(),
            cache_row_groups: self.cache_row_groups,
            row_groups_decoded: 0,
            direct: self.direct,
            direct_column_chunks: 0,
        }
    }

    /// Whether non-null `fixed_size_list<float>` columns and non-null
    /// `list<int>` sequence columns are decoded straight from their pages
    /// (the default) or, with `false`, through Arrow's list readers like
    /// every other column (both give the same
    /// values and errors; the switch is for tests and benchmarks).
    pub fn with_direct_decoding(mut self, direct: bool) -> Self {
        self.direct = direct;
        self
    }

    /// How many column chunks were decoded directly, without Arrow (see
    /// [`Reader::with_direct_decoding`]).
    pub fn direct_column_chunks(&self) -> u64 {
        self.direct_column_chunks
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
        let mut batch = Batch::default();
        self.read_samples_into(samples, &mut batch)?;
        Ok(batch)
    }

    /// Like [`Reader::read_samples`], but reuses the vectors of `batch`
    /// (a trainer that keeps one `Batch` per virtual rank avoids allocating,
    /// and page-faulting, fresh buffers every step).
    pub fn read_samples_into(&mut self, samples: &[u64], batch: &mut Batch) -> Result<()> {
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
        batch.samples.clear();
        batch.samples.extend_from_slice(samples);
        self.gather_into(batch, &runs(&rows))
    }

    /// Reads every sample of row group `global_row_group` (over all files).
    pub fn read_row_group(&mut self, global_row_group: usize) -> Result<Batch> {
        let mut batch = Batch::default();
        self.read_row_group_into(global_row_group, &mut batch)?;
        Ok(batch)
    }

    /// Like [`Reader::read_row_group`], reusing the vectors of `batch`.
    pub fn read_row_group_into(
        &mut self,
        global_row_group: usize,
        batch: &mut Batch,
    ) -> Result<()> {
        let span = *self
            .dataset
            .layout()
            .row_groups()
            .get(global_row_group)
            .ok_or_else(|| DatasetError::OutOfRange {
                message: format!("row group {global_row_group}"),
            })?;
        let group = self.row_group(global_row_group)?;
        let whole = [Run {
            group: &group,
            start: 0,
            end: span.rows as usize,
            position: 0,
        }];
        batch.samples.clear();
        batch
            .samples
            .extend(span.first_sample..span.first_sample + span.rows);
        self.gather_into(batch, &whole)
    }

    /// Reads the whole dataset into one batch (for small tables such as a
    /// graph's nodes and edges).
    pub fn read_all(&mut self) -> Result<Batch> {
        let samples: Vec<u64> = (0..self.dataset.samples()).collect();
        let groups = self.dataset.layout().row_groups().len();
        let mut decoded = Vec::with_capacity(groups);
        for group in 0..groups {
            let group = self.decode(group)?;
            self.direct_column_chunks += group.direct_columns;
            decoded.push(group);
        }
        let mut whole = Vec::with_capacity(groups);
        for (group, span) in decoded.iter().zip(self.dataset.layout().row_groups()) {
            whole.push(Run {
                group,
                start: 0,
                end: span.rows as usize,
                position: span.first_sample as usize,
            });
        }
        let mut batch = Batch {
            samples,
            ..Batch::default()
        };
        self.gather_into(&mut batch, &whole)?;
        Ok(batch)
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
        // Evict before decoding, so the evicted group's memory can be
        // reused by the allocator for the new one (fewer page faults).
        if self.cache.len() >= self.cache_row_groups {
            self.cache.remove(0);
        }
        let group = Arc::new(self.decode(global_row_group)?);
        self.row_groups_decoded += 1;
        self.direct_column_chunks += group.direct_columns;
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

    /// The bytes of the columns `mask` selects in one row group: the file,
    /// or for an object only those column chunks, fetched in one batch of
    /// range requests.
    fn source(&self, global_row_group: usize, mask: &ProjectionMask) -> Result<Source> {
        let span = self.dataset.layout().row_groups()[global_row_group];
        let data_file = &self.dataset.files()[span.file];
        if let Some(object) = data_file.object() {
            let chunks = object.fetch_row_group(
                data_file.metadata(),
                span.row_group,
                mask,
                data_file.size(),
            )?;
            return Ok(Source::Chunks(chunks));
        }
        let path = data_file.path();
        File::open(path)
            .map(Source::File)
            .map_err(|source| DatasetError::Open {
                path: path.to_path_buf(),
                source,
            })
    }

    /// A Parquet reader of the columns `mask` selects of one row group, in
    /// one record batch (up to 2^20 rows per batch).
    fn record_batch_reader(
        &self,
        global_row_group: usize,
        source: Source,
        mask: ProjectionMask,
    ) -> Result<ParquetRecordBatchReader> {
        let span = self.dataset.layout().row_groups()[global_row_group];
        let data_file = &self.dataset.files()[span.file];
        let metadata = data_file.metadata().clone();
        let parquet_error = |error: parquet::errors::ParquetError| DatasetError::Parquet {
            path: data_file.path().to_path_buf(),
            message: error.to_string(),
        };
        let batch_size = (span.rows as usize).clamp(1, 1 << 20);
        match source {
            Source::Chunks(chunks) => {
                ParquetRecordBatchReaderBuilder::new_with_metadata(chunks, metadata)
                    .with_projection(mask)
                    .with_row_groups(vec![span.row_group])
                    .with_batch_size(batch_size)
                    .build()
            }
            Source::File(file) => {
                ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata)
                    .with_projection(mask)
                    .with_row_groups(vec![span.row_group])
                    .with_batch_size(batch_size)
                    .build()
            }
        }
        .map_err(parquet_error)
    }

    /// Decodes input `input`'s column of one row group straight from its
    /// pages if it is a non-null `fixed_size_list<float>` (float vectors)
    /// or `list<int>` (sequences) in a supported encoding (see [`leaf`]);
    /// `None` otherwise, and on any problem (the Arrow path then decodes
    /// the column and reports it).
    fn decode_direct(
        &self,
        global_row_group: usize,
        input: &BoundInput,
        source: &Source,
    ) -> Option<DecodedColumn> {
        if !self.direct {
            return None;
        }
        let data_type = self.dataset.schema().field(input.column_index).data_type();
        let width = match (input.input.kind, data_type) {
            (InputKind::FloatVector, DataType::FixedSizeList(_, width)) => {
                Some(usize::try_from(*width).ok()?)
            }
            (InputKind::IntSequence { .. }, DataType::List(_) | DataType::LargeList(_)) => None,
            _ => return None,
        };
        let span = self.dataset.layout().row_groups()[global_row_group];
        let metadata = self.dataset.files()[span.file].metadata().metadata();
        let leaf_index = leaf::direct_leaf(metadata, input.column_index, width.is_none())?;
        let chunks = match source {
            Source::Chunks(chunks) => chunks.clone(),
            Source::File(file) => {
                // The column chunk in one read.
                let column = metadata.row_group(span.row_group).column(leaf_index);
                let (start, length) = column.byte_range();
                let mut bytes = Vec::with_capacity(usize::try_from(length).ok()?);
                let mut file = file;
                file.seek(SeekFrom::Start(start)).ok()?;
                file.take(length).read_to_end(&mut bytes).ok()?;
                let size = file.metadata().ok()?.len();
                SparseChunks::new(size, vec![(start, bytes.into())])
            }
        };
        let chunks = Arc::new(chunks);
        match width {
            Some(width) => {
                leaf::read_fixed_floats(chunks, metadata, span.row_group, leaf_index, width).map(
                    |values| DecodedColumn {
                        values: Values::Floats(Float32Array::from(values)),
                        layout: RowLayout::Fixed(width),
                    },
                )
            }
            None => leaf::read_int_lists(chunks, metadata, span.row_group, leaf_index).map(
                |(values, offsets)| DecodedColumn {
                    values: Values::Ints(Int64Array::from(values)),
                    layout: RowLayout::Offsets(offsets),
                },
            ),
        }
    }

    /// The projected columns of one row group as Arrow record batches,
    /// without conversion (for callers that want Arrow data, and to measure
    /// decoding apart from conversion).
    pub fn read_record_batches(&self, global_row_group: usize) -> Result<Vec<RecordBatch>> {
        if global_row_group >= self.dataset.layout().row_groups().len() {
            return Err(DatasetError::OutOfRange {
                message: format!("row group {global_row_group}"),
            });
        }
        let span = self.dataset.layout().row_groups()[global_row_group];
        let path = self.dataset.files()[span.file].path();
        let parquet_error = |message: String| DatasetError::Parquet {
            path: path.to_path_buf(),
            message: format!("row group {}: {message}", span.row_group),
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let metadata = self.dataset.files()[span.file].metadata();
            let mask = self.projection(metadata.parquet_schema());
            let source = self.source(global_row_group, &mask)?;
            let reader = self.record_batch_reader(global_row_group, source, mask)?;
            reader
                .map(|batch| batch.map_err(|error| parquet_error(error.to_string())))
                .collect()
        }))
        .unwrap_or_else(|_| Err(parquet_error("decoder panicked".into())))
    }

    fn decode_unguarded(&self, global_row_group: usize) -> Result<DecodedRowGroup> {
        let span = self.dataset.layout().row_groups()[global_row_group];
        let data_file = &self.dataset.files()[span.file];
        let path = data_file.path();
        let parquet_error = |message: String| DatasetError::Parquet {
            path: path.to_path_buf(),
            message,
        };
        let mask = self.projection(data_file.metadata().parquet_schema());
        let source = self.source(global_row_group, &mask)?;
        // Columns decoded directly; the others go through Arrow.
        let direct: Vec<Option<DecodedColumn>> = self
            .inputs
            .iter()
            .map(|input| self.decode_direct(global_row_group, input, &source))
            .collect();
        let is_direct: Vec<bool> = direct.iter().map(Option::is_some).collect();
        let direct_columns = is_direct.iter().filter(|&&direct| direct).count() as u64;
        let mut columns: Vec<DecodedColumn> = self
            .inputs
            .iter()
            .map(|input| DecodedColumn {
                values: match input.input.kind {
                    InputKind::FloatScalar | InputKind::FloatVector | InputKind::NodeVectors => {
                        Values::Floats(Float32Array::from(Vec::<f32>::new()))
                    }
                    InputKind::IntScalar
                    | InputKind::IntSequence { .. }
                    | InputKind::NodeInts
                    | InputKind::EdgeNodes => Values::Ints(Int64Array::from(Vec::<i64>::new())),
                },
                layout: match self.dataset.schema().field(input.column_index).data_type() {
                    DataType::FixedSizeList(_, width) => RowLayout::Fixed(*width as usize),
                    DataType::List(_) | DataType::LargeList(_) => RowLayout::Offsets(vec![0]),
                    _ => RowLayout::Fixed(1),
                },
            })
            .collect();
        let mut direct = direct.into_iter();
        for column in &mut columns {
            if let Some(decoded) = direct.next().flatten() {
                *column = decoded;
            }
        }
        let arrow_inputs: Vec<usize> = self
            .inputs
            .iter()
            .zip(&is_direct)
            .filter(|(_, direct)| !**direct)
            .map(|(input, _)| input.column_index)
            .collect();
        if arrow_inputs.is_empty() {
            // Every column was read directly, each checked to hold
            // exactly the row group's rows.
            return Ok(DecodedRowGroup {
                global_row_group,
                columns,
                direct_columns,
            });
        }
        let reader = self.record_batch_reader(
            global_row_group,
            source,
            ProjectionMask::roots(data_file.metadata().parquet_schema(), arrow_inputs),
        )?;
        let mut rows_done = 0u64;
        for record_batch in reader {
            let record_batch = record_batch.map_err(|error| parquet_error(error.to_string()))?;
            for ((input, column), direct) in
                self.inputs.iter().zip(columns.iter_mut()).zip(&is_direct)
            {
                if *direct {
                    continue;
                }
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
            direct_columns,
        })
    }

    /// Fills `batch` (whose `samples` are set) from `runs`, reusing its vectors.
    fn gather_into(&self, batch: &mut Batch, runs: &[Run<'_>]) -> Result<()> {
        let mut old_floats = std::mem::take(&mut batch.floats);
        let mut old_ints = std::mem::take(&mut batch.ints);
        let mut recycle_floats = |name: &str| {
            let mut values = old_floats
                .remove(name)
                .map(|array| array.values)
                .unwrap_or_default();
            values.clear();
            values
        };
        let mut recycle_ints = |name: &str| {
            let mut values = old_ints
                .remove(name)
                .map(|array| array.values)
                .unwrap_or_default();
            values.clear();
            values
        };
        let count: usize = runs.iter().map(|run| run.end - run.start).sum();
        for (index, input) in self.inputs.iter().enumerate() {
            let name = input.input.name.to_string();
            match input.input.kind {
                InputKind::FloatScalar | InputKind::FloatVector => {
                    let mut values = recycle_floats(&name);
                    let mut width = None;
                    for run in runs {
                        let column = &run.group.columns[index];
                        let Values::Floats(data) = &column.values else {
                            continue;
                        };
                        for row in run.start..run.end {
                            let range = column.row(row);
                            match width {
                                None => width = Some(range.len()),
                                Some(width) if width != range.len() => {
                                    return Err(self.value_error(
                                        &batch.samples,
                                        run.position + row - run.start,
                                        &input.column,
                                        format!(
                                            "vector of length {}, expected {width} like the batch's first sample",
                                            range.len()
                                        ),
                                    ));
                                }
                                Some(_) => {}
                            }
                            if let RowLayout::Fixed(_) = column.layout {
                                // Rows of one width: the run is one slice.
                                let last = column.row(run.end - 1);
                                values.extend_from_slice(&data.values()[range.start..last.end]);
                                break;
                            }
                            values.extend_from_slice(&data.values()[range.start..range.end]);
                        }
                    }
                    let shape = match input.input.kind {
                        InputKind::FloatScalar => vec![count],
                        _ => vec![count, width.unwrap_or(0)],
                    };
                    batch.floats.insert(name, FloatArray { shape, values });
                }
                InputKind::IntScalar => {
                    let mut values = recycle_ints(&name);
                    for run in runs {
                        let column = &run.group.columns[index];
                        if let Values::Ints(data) = &column.values {
                            let first = column.row(run.start).start;
                            let last = column.row(run.end - 1).end;
                            values.extend_from_slice(&data.values()[first..last]);
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
                    let longest = runs
                        .iter()
                        .flat_map(|run| {
                            let column = &run.group.columns[index];
                            (run.start..run.end).map(move |row| column.row(row).len())
                        })
                        .max()
                        .unwrap_or(0);
                    let mut values = recycle_ints(&name);
                    values.reserve(count * longest);
                    for run in runs {
                        let column = &run.group.columns[index];
                        let Values::Ints(data) = &column.values else {
                            continue;
                        };
                        for row in run.start..run.end {
                            let range = column.row(row);
                            values.extend_from_slice(&data.values()[range.start..range.end]);
                            values.extend(std::iter::repeat_n(pad, longest - range.len()));
                        }
                    }
                    batch.ints.insert(
                        name,
                        IntArray {
                            shape: vec![count, longest],
                            values,
                        },
                    );
                }
                InputKind::NodeVectors => {
                    let width =
                        node_width(self.dataset.schema().field(input.column_index).data_type());
                    let mut values = recycle_floats(&name);
                    let mut node_graph = recycle_ints("node_graph");
                    for run in runs {
                        let column = &run.group.columns[index];
                        let Values::Floats(data) = &column.values else {
                            continue;
                        };
                        for row in run.start..run.end {
                            let range = column.row(row);
                            values.extend_from_slice(&data.values()[range.start..range.end]);
                            let position = (run.position + row - run.start) as i64;
                            node_graph
                                .extend(std::iter::repeat_n(position, range.len() / width.max(1)));
                        }
                    }
                    let nodes = node_graph.len();
                    batch.floats.insert(
                        name,
                        FloatArray {
                            shape: vec![nodes, width],
                            values,
                        },
                    );
                    batch.ints.insert(
                        "node_graph".into(),
                        IntArray {
                            shape: vec![nodes],
                            values: node_graph,
                        },
                    );
                }
                InputKind::NodeInts | InputKind::EdgeNodes => {
                    let node_counts = self.node_counts(runs);
                    let mut values = recycle_ints(&name);
                    let mut node_offset = 0i64;
                    for run in runs {
                        let column = &run.group.columns[index];
                        let Values::Ints(data) = &column.values else {
                            continue;
                        };
                        for row in run.start..run.end {
                            let position = run.position + row - run.start;
                            let nodes = node_counts.get(position).copied().unwrap_or(0);
                            let items = &data.values()[column.row(row).range()];
                            if input.input.kind == InputKind::NodeInts {
                                if items.len() != nodes {
                                    return Err(self.value_error(
                                        &batch.samples,
                                        position,
                                        &input.column,
                                        format!(
                                            "{} values for a graph of {nodes} nodes",
                                            items.len()
                                        ),
                                    ));
                                }
                                values.extend_from_slice(items);
                            } else {
                                if let Some(node) =
                                    items.iter().find(|&&node| node < 0 || node >= nodes as i64)
                                {
                                    return Err(self.value_error(
                                        &batch.samples,
                                        position,
                                        &input.column,
                                        format!("node id {node} outside 0..{nodes}"),
                                    ));
                                }
                                values.extend(items.iter().map(|node| node + node_offset));
                            }
                            node_offset += nodes as i64;
                        }
                    }
                    let length = values.len();
                    batch.ints.insert(
                        name,
                        IntArray {
                            shape: vec![length],
                            values,
                        },
                    );
                }
            }
        }
        let edge_lengths: Vec<usize> = self
            .inputs
            .iter()
            .filter(|input| input.input.kind == InputKind::EdgeNodes)
            .map(|input| batch.ints[input.input.name].values.len())
            .collect();
        if edge_lengths.windows(2).any(|pair| pair[0] != pair[1]) {
            let column = self
                .inputs
                .iter()
                .filter(|input| input.input.kind == InputKind::EdgeNodes)
                .map(|input| input.column.clone())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(self.value_error(
                &batch.samples,
                0,
                &column,
                format!("edge lists of different lengths in this batch: {edge_lengths:?}"),
            ));
        }
        Ok(())
    }

    /// The number of nodes of each sample's graph, in batch order (from the
    /// task's node-vector input; empty if it has none).
    fn node_counts(&self, runs: &[Run<'_>]) -> Vec<usize> {
        let Some((index, input)) = self
            .inputs
            .iter()
            .enumerate()
            .find(|(_, input)| input.input.kind == InputKind::NodeVectors)
        else {
            return Vec::new();
        };
        let width = node_width(self.dataset.schema().field(input.column_index).data_type()).max(1);
        let mut counts = Vec::new();
        for run in runs {
            let column = &run.group.columns[index];
            counts.extend((run.start..run.end).map(|row| column.row(row).len() / width));
        }
        counts
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
    // The values of this array's rows and, for variable lists, their
    // offsets relative to the first.
    let (child, relative_offsets): (ArrayRef, Option<Vec<usize>>) = match array.data_type() {
        DataType::FixedSizeList(_, width) => {
            let list = array.as_fixed_size_list();
            let start = if rows > 0 { list.value_offset_at(0) } else { 0 };
            (list.values().slice(start, rows * *width as usize), None)
        }
        DataType::List(_) => list_parts::<i32>(array.as_list::<i32>()),
        DataType::LargeList(_) => list_parts::<i64>(array.as_list::<i64>()),
        _ => (array.clone(), None),
    };
    // Lists of fixed-size lists (graph node features): flatten one level.
    let (child, relative_offsets) = match (child.data_type(), relative_offsets) {
        (DataType::FixedSizeList(_, width), Some(offsets)) => {
            if let Some(position) = first_null(child.as_ref()) {
                return Err(bad_value(
                    path,
                    name,
                    first_row,
                    format!("null node vector at {position}"),
                ));
            }
            let inner = child.as_fixed_size_list();
            let width = *width as usize;
            let start = if inner.is_empty() {
                0
            } else {
                inner.value_offset_at(0)
            };
            (
                inner.values().slice(start, inner.len() * width),
                Some(offsets.iter().map(|offset| offset * width).collect()),
            )
        }
        (_, offsets) => (child, offsets),
    };
    if let Some(position) = first_null(child.as_ref()) {
        let row = match (&relative_offsets, &column.layout) {
            (Some(offsets), _) => offsets
                .partition_point(|&offset| offset <= position)
                .saturating_sub(1),
            (None, RowLayout::Fixed(width)) => position / (*width).max(1),
            (None, RowLayout::Offsets(_)) => 0,
        };
        return Err(bad_value(
            path,
            name,
            first_row + row as u64,
            "null inside a list".into(),
        ));
    }
    match &mut column.values {
        Values::Floats(values) => {
            let decoded = if let Some(floats) = child.as_primitive_opt::<Float32Type>() {
                floats.clone()
            } else if let Some(doubles) = child.as_primitive_opt::<Float64Type>() {
                Float32Array::from_iter_values(doubles.values().iter().map(|&value| value as f32))
            } else {
                return Err(bad_value(
                    path,
                    name,
                    first_row,
                    format!("expected floats, found {}", child.data_type()),
                ));
            };
            *values = if values.is_empty() {
                decoded
            } else {
                Float32Array::from_iter_values(
                    values.values().iter().chain(decoded.values()).copied(),
                )
            };
        }
        Values::Ints(values) => {
            let decoded = if let Some(ints) = child.as_primitive_opt::<Int64Type>() {
                ints.clone()
            } else if let Some(ints) = child.as_primitive_opt::<Int32Type>() {
                Int64Array::from_iter_values(ints.values().iter().map(|&value| i64::from(value)))
            } else {
                return Err(bad_value(
                    path,
                    name,
                    first_row,
                    format!("expected integers, found {}", child.data_type()),
                ));
            };
            *values = if values.is_empty() {
                decoded
            } else {
                Int64Array::from_iter_values(
                    values.values().iter().chain(decoded.values()).copied(),
                )
            };
        }
    }
    match (&mut column.layout, relative_offsets) {
        (RowLayout::Offsets(offsets), Some(relative)) => {
            offsets.extend(relative[1..].iter().map(|offset| base + offset));
        }
        (RowLayout::Fixed(_), None) => {}
        _ => {
            return Err(bad_value(
                path,
                name,
                first_row,
                "list layout changed between record batches".into(),
            ));
        }
    }
    Ok(())
}

fn list_parts<O: OffsetSizeTrait>(
    list: &arrow_array::GenericListArray<O>,
) -> (ArrayRef, Option<Vec<usize>>) {
    let offsets = list.value_offsets();
    let first = offsets.first().map(|offset| offset.as_usize()).unwrap_or(0);
    let last = offsets.last().map(|offset| offset.as_usize()).unwrap_or(0);
    let relative = offsets
        .iter()
        .map(|offset| offset.as_usize() - first)
        .collect();
    (list.values().slice(first, last - first), Some(relative))
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
