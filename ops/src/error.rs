//! The one error type of `ops`, for failures caused by input from outside.
//!
//! Programming errors inside shoal (a shape mismatch between two tensors
//! that shoal itself built) panic with a message naming the op and shapes;
//! everything read from outside (a checkpoint, a fixture) returns an
//! [`OpsError`] that names what is wrong.
use std::path::PathBuf;

/// Failures of `ops` functions on input from outside the program.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    // ---- files ----
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A safetensors file could not be parsed.
    #[error("{what}: not a valid safetensors file: {message}")]
    Safetensors { what: String, message: String },

    // ---- contents ----
    /// A named tensor that is required is absent.
    #[error("{what}: missing tensor `{name}`")]
    MissingTensor { what: String, name: String },
    /// A named tensor has the wrong shape.
    #[error("{what}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        what: String,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A named tensor has an element type shoal cannot use there.
    #[error("{what}: tensor `{name}` has dtype {found}, expected {expected}")]
    DtypeMismatch {
        what: String,
        name: String,
        expected: String,
        found: String,
    },
    /// Shapes given from outside cannot be used (too many dimensions, wrong count).
    #[error("invalid shape {shape:?}: {reason}")]
    InvalidShape { shape: Vec<usize>, reason: String },
    /// An index from outside (an edge list, a token) is outside its range.
    #[error("{what}: index {index} outside 0..{bound}")]
    IndexOutOfRange {
        what: String,
        index: i64,
        bound: usize,
    },
    /// Metadata (JSON inside a checkpoint or fixture) is missing or malformed.
    #[error("{what}: bad metadata `{key}`: {reason}")]
    BadMetadata {
        what: String,
        key: String,
        reason: String,
    },
}
