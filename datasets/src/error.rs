//! The crate's one error type: everything that can go wrong between a path
//! on disk and a batch of samples, each variant naming what and where.
use std::path::PathBuf;

/// An error of the `datasets` crate. Variants are grouped by where they
/// arise: finding files, reading Parquet, matching columns to a task,
/// planning, and writing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    // --- finding files -------------------------------------------------
    /// A path given as part of a dataset does not exist or cannot be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A glob pattern is malformed.
    #[error("bad glob pattern {pattern:?}: {message}")]
    BadGlob {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
    /// The paths, directories and globs given matched no Parquet file.
    #[error("dataset is empty: {what} matched no Parquet file")]
    NoFiles {
        /// The paths or patterns as given.
        what: String,
    },
    /// The files of the dataset hold no rows at all.
    #[error("dataset is empty: {files} file(s) hold 0 rows")]
    NoRows {
        /// How many files were found.
        files: usize,
    },

    // --- reading Parquet -----------------------------------------------
    /// A file is not Parquet, is truncated, or its footer or pages are corrupt.
    #[error("{path}: not a readable Parquet file: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What the Parquet reader reported.
        message: String,
    },
    /// The files of one dataset do not share one schema.
    #[error("{path}: schema differs from {first}: expected {expected}, found {found}")]
    SchemaMismatch {
        /// The file whose schema differs.
        path: PathBuf,
        /// The first file of the dataset, whose schema is the reference.
        first: PathBuf,
        /// The reference schema.
        expected: String,
        /// This file's schema.
        found: String,
    },

    // --- matching columns to a task --------------------------------------
    /// A column the task needs is not in the file.
    #[error(
        "{path}: column {column:?} (task input {input:?}) not found; expected {expected}; the file has columns {available:?}"
    )]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column looked for.
        column: String,
        /// The task input it would feed.
        input: String,
        /// What the column should hold.
        expected: String,
        /// The columns the file has.
        available: Vec<String>,
    },
    /// A column exists but its type does not fit the task input.
    #[error(
        "{path}: column {column:?} (task input {input:?}) has type {found}; expected {expected}"
    )]
    WrongColumnType {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// The task input it would feed.
        input: String,
        /// What the task needs.
        expected: String,
        /// The column's Arrow type.
        found: String,
    },
    /// A value inside a column does not fit (a null, a list of the wrong
    /// length, an index out of range).
    #[error("{path}: column {column:?}, row {row}: {message}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// The row inside the file.
        row: u64,
        /// What is wrong.
        message: String,
    },
    /// A task name is not known.
    #[error("unknown task {name:?}; known tasks: {known}")]
    UnknownTask {
        /// The name as given.
        name: String,
        /// The known names, comma separated.
        known: String,
    },

    // --- planning ----------------------------------------------------------
    /// The global batch is not a multiple of the number of virtual ranks, or is zero.
    #[error(
        "global batch {global_batch} cannot be split into {virtual_ranks} virtual ranks: {message}"
    )]
    BadBatchSplit {
        /// The global batch G.
        global_batch: usize,
        /// The number of virtual ranks V.
        virtual_ranks: usize,
        /// Why not.
        message: String,
    },
    /// The dataset holds fewer samples than one global batch.
    #[error(
        "dataset {fingerprint} holds {samples} samples, fewer than one global batch of {global_batch}"
    )]
    TooFewSamples {
        /// The dataset's fingerprint hash.
        fingerprint: String,
        /// Its number of samples.
        samples: u64,
        /// The global batch asked for.
        global_batch: usize,
    },
    /// A sample id or cursor lies outside the plan.
    #[error("out of range: {message}")]
    OutOfRange {
        /// What is out of range.
        message: String,
    },
    /// The dataset read is not the one the plan was made for.
    #[error("dataset fingerprint {found} does not match the plan's {expected}")]
    FingerprintMismatch {
        /// The plan's fingerprint hash.
        expected: String,
        /// The opened dataset's fingerprint hash.
        found: String,
    },

    // --- generating --------------------------------------------------------
    /// A generator was given parameters it cannot honour.
    #[error("task {task:?}: {message}")]
    BadGeneratorParameters {
        /// The generator.
        task: String,
        /// What is wrong.
        message: String,
    },
    /// Writing a generated file failed.
    #[error("cannot write {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The reason.
        message: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = DatasetError> = std::result::Result<T, E>;
