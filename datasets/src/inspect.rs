//! Describing Parquet files: schema, row groups, row count, fingerprint and
//! which tasks their columns fit.
use std::fmt;
use std::path::Path;

use crate::dataset::{Dataset, Fingerprint, type_name};
use crate::error::Result;
use crate::task::{ColumnMapping, Task, bind};

/// What [`inspect`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InspectReport {
    /// The files, in dataset order, with their sizes and row-group row counts.
    pub fingerprint: Fingerprint,
    /// The paths as opened.
    pub paths: Vec<String>,
    /// `name: type` per column.
    pub schema: Vec<String>,
    /// Per row group (over all files): its file index, rows, compressed and
    /// uncompressed bytes.
    pub row_groups: Vec<RowGroupReport>,
    /// For each task: `Ok(columns bound)` if the columns fit with the default
    /// mapping, else the reason they do not.
    pub tasks: Vec<(Task, TaskFit)>,
}

/// Whether a task fits: `Ok((input, column) pairs)` with the default
/// mapping, else the reason it does not.
pub type TaskFit = std::result::Result<Vec<(String, String)>, String>;

/// One row group in an [`InspectReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowGroupReport {
    /// Index of its file.
    pub file: usize,
    /// Index inside the file.
    pub row_group: usize,
    /// Rows.
    pub rows: u64,
    /// Compressed bytes on disk.
    pub compressed_bytes: u64,
    /// Uncompressed bytes.
    pub uncompressed_bytes: u64,
}

/// Opens the dataset made of `inputs` (files, directories, globs) and
/// describes it.
pub fn inspect<P: AsRef<Path>>(inputs: &[P]) -> Result<InspectReport> {
    let dataset = Dataset::open(inputs)?;
    let schema = dataset
        .schema()
        .fields()
        .iter()
        .map(|field| format!("{}: {}", field.name(), type_name(field.data_type())))
        .collect();
    let mut row_groups = Vec::new();
    for (file_index, file) in dataset.files().iter().enumerate() {
        for (group_index, group) in file.metadata().metadata().row_groups().iter().enumerate() {
            row_groups.push(RowGroupReport {
                file: file_index,
                row_group: group_index,
                rows: group.num_rows().max(0) as u64,
                compressed_bytes: group.compressed_size().max(0) as u64,
                uncompressed_bytes: group.total_byte_size().max(0) as u64,
            });
        }
    }
    let first = dataset.files()[0].path().to_path_buf();
    let tasks = Task::ALL
        .into_iter()
        .map(|task| {
            let fit = bind(task, &ColumnMapping::new(), dataset.schema(), &first)
                .map(|bound| {
                    bound
                        .into_iter()
                        .map(|input| (input.input.name.to_string(), input.column))
                        .collect()
                })
                .map_err(|error| error.to_string());
            (task, fit)
        })
        .collect();
    Ok(InspectReport {
        fingerprint: dataset.fingerprint().clone(),
        paths: dataset
            .files()
            .iter()
            .map(|file| file.path().display().to_string())
            .collect(),
        schema,
        row_groups,
        tasks,
    })
}

impl InspectReport {
    /// The tasks whose inputs all fit.
    pub fn fitting_tasks(&self) -> Vec<Task> {
        self.tasks
            .iter()
            .filter(|(_, fit)| fit.is_ok())
            .map(|(task, _)| *task)
            .collect()
    }
}

impl fmt::Display for InspectReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(formatter, "fingerprint: {}", self.fingerprint.hash)?;
        writeln!(
            formatter,
            "rows: {} in {} row group(s), {} file(s)",
            self.fingerprint.samples(),
            self.row_groups.len(),
            self.paths.len()
        )?;
        for (path, file) in self.paths.iter().zip(&self.fingerprint.files) {
            writeln!(
                formatter,
                "file: {path} ({} bytes, {} row group(s), {} rows)",
                file.size,
                file.row_groups.len(),
                file.row_groups.iter().sum::<u64>()
            )?;
        }
        writeln!(formatter, "schema:")?;
        for field in &self.schema {
            writeln!(formatter, "  {field}")?;
        }
        writeln!(
            formatter,
            "row groups (file/group: rows, compressed -> uncompressed bytes):"
        )?;
        const SHOWN: usize = 8;
        for group in self.row_groups.iter().take(SHOWN) {
            writeln!(
                formatter,
                "  {}/{}: {} rows, {} -> {} bytes",
                group.file,
                group.row_group,
                group.rows,
                group.compressed_bytes,
                group.uncompressed_bytes
            )?;
        }
        if self.row_groups.len() > SHOWN {
            writeln!(formatter, "  ... {} more", self.row_groups.len() - SHOWN)?;
        }
        writeln!(formatter, "tasks:")?;
        for (task, fit) in &self.tasks {
            match fit {
                Ok(bound) => {
                    let columns: Vec<String> = bound
                        .iter()
                        .map(|(input, column)| {
                            if input == column {
                                input.clone()
                            } else {
                                format!("{input} <- {column}")
                            }
                        })
                        .collect();
                    writeln!(
                        formatter,
                        "  {} (models: {}): fits [{}]",
                        task.name(),
                        task.models(),
                        columns.join(", ")
                    )?;
                }
                Err(reason) => writeln!(formatter, "  {}: does not fit: {reason}", task.name())?,
            }
        }
        Ok(())
    }
}
