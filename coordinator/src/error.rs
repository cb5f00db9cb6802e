//! The one error type of `coordinator`.
use std::path::PathBuf;

use crate::job::{JobId, JobState};

/// Failures of the coordinator on input from outside (specs, requests,
/// files) and of its storage.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    // ---- job specs ----
    /// The spec text is not well-formed TOML or JSON, or a field has the
    /// wrong type; the message carries the line and column.
    #[error("invalid job spec ({format}): {message}")]
    SpecSyntax {
        format: &'static str,
        message: String,
    },
    /// The spec parsed but a field's value is not acceptable.
    #[error("invalid job spec: {field}: {problem}")]
    InvalidSpec { field: String, problem: String },

    // ---- jobs ----
    /// No job has this id.
    #[error("unknown job {id}")]
    UnknownJob { id: JobId },
    /// The job's state does not allow this change (for example cancelling a
    /// completed job).
    #[error("job {id} is {from}: it cannot become {to}")]
    InvalidTransition {
        id: JobId,
        from: JobState,
        to: JobState,
    },

    // ---- storage ----
    /// The SQLite job store failed.
    #[error("job store: {context}: {source}")]
    Store {
        context: String,
        #[source]
        source: rusqlite::Error,
    },
    /// The job store holds a value this version does not understand.
    #[error("job store: {context}")]
    CorruptStore { context: String },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A token (API or join) is missing, empty or unreadable.
    #[error("token {what}: {problem}")]
    BadToken { what: String, problem: String },

    // ---- HTTP client ----
    /// No coordinator answered at this address.
    #[error(
        "no coordinator at {address}: start one with `shoal coordinator --data-dir DIR` ({reason})"
    )]
    NoCoordinator { address: String, reason: String },
    /// The coordinator answered with an error status.
    #[error("coordinator answered {status}: {message}")]
    Api { status: u16, message: String },
    /// A URL or a response could not be understood.
    #[error("HTTP client: {message}")]
    Client { message: String },
}

impl CoordinatorError {
    /// Wraps a rusqlite error with what was being done.
    pub(crate) fn store(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> Self {
        let context = context.into();
        move |source| Self::Store { context, source }
    }
}

impl From<protocol::spec::SpecError> for CoordinatorError {
    fn from(error: protocol::spec::SpecError) -> Self {
        match error {
            protocol::spec::SpecError::Syntax { format, message } => {
                Self::SpecSyntax { format, message }
            }
            protocol::spec::SpecError::Invalid { field, problem } => {
                Self::InvalidSpec { field, problem }
            }
        }
    }
}

/// Results of this crate.
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;
