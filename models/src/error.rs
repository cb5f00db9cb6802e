//! The one error type of `models`.
use ops::OpsError;

/// Failures of model construction and evaluation on input from outside.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    // ---- configuration ----
    /// No model of this kind exists.
    #[error("unknown model `{kind}` (known: {known})")]
    UnknownModel { kind: String, known: String },
    /// A configuration field is missing or invalid.
    #[error("model `{kind}`: config field `{field}`: {reason}")]
    BadConfig {
        kind: String,
        field: String,
        reason: String,
    },

    // ---- batches ----
    /// The batch lacks an input the model needs.
    #[error("model `{kind}`: batch has no {expected} input `{name}`")]
    MissingInput {
        kind: String,
        name: String,
        expected: &'static str,
    },
    /// A batch input has a shape the model cannot use.
    #[error("model `{kind}`: input `{name}` has shape {found:?}, expected {expected}")]
    BadInput {
        kind: String,
        name: String,
        expected: String,
        found: Vec<usize>,
    },

    // ---- tensors from outside ----
    /// Loading or saving tensors failed.
    #[error(transparent)]
    Ops(#[from] OpsError),
}
