//! The one error type of `worker`.
use std::path::PathBuf;

/// Failures of a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    // ---- inputs ----
    /// Data read for a micro-batch cannot feed the model.
    #[error("bad model input: {reason}")]
    Input { reason: String },
    /// The job spec is refused.
    #[error(transparent)]
    Spec(#[from] protocol::spec::SpecError),
    /// The job description cannot be run.
    #[error("invalid job: {reason}")]
    Job { reason: String },

    // ---- failures below ----
    /// Reading the dataset failed (boxed: dataset errors are large).
    #[error(transparent)]
    Dataset(Box<datasets::DatasetError>),
    /// Building or evaluating the model failed.
    #[error(transparent)]
    Model(#[from] models::ModelError),
    /// A tensor operation on outside input failed (checkpoints).
    #[error(transparent)]
    Ops(#[from] ops::OpsError),
    /// A collective failed (a peer died, stalled or sent garbage).
    #[error(transparent)]
    Collective(#[from] crate::collective::CollectiveError),
    /// Setting up the transport failed.
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<datasets::DatasetError> for WorkerError {
    fn from(error: datasets::DatasetError) -> WorkerError {
        WorkerError::Dataset(Box::new(error))
    }
}
