//! [`Batch`]: the named inputs of one loss evaluation, named as the columns
//! of the task's Parquet schema (and the reference's `loss` arguments).
use std::collections::BTreeMap;

use ops::{IndexTensor, Tensor};

use crate::ModelError;

/// Named float and integer inputs of a loss.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    floats: BTreeMap<String, Tensor>,
    indices: BTreeMap<String, IndexTensor>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Adds a float input (builder style).
    pub fn with_float(mut self, name: impl Into<String>, value: Tensor) -> Batch {
        self.floats.insert(name.into(), value);
        self
    }

    /// Adds an integer input (builder style).
    pub fn with_index(mut self, name: impl Into<String>, value: IndexTensor) -> Batch {
        self.indices.insert(name.into(), value);
        self
    }

    /// Adds or replaces a float input.
    pub fn insert_float(&mut self, name: impl Into<String>, value: Tensor) {
        self.floats.insert(name.into(), value);
    }

    /// Adds or replaces an integer input.
    pub fn insert_index(&mut self, name: impl Into<String>, value: IndexTensor) {
        self.indices.insert(name.into(), value);
    }

    /// The float input `name`, or an error naming the model that needs it.
    pub fn float(&self, kind: &str, name: &str) -> Result<&Tensor, ModelError> {
        self.floats
            .get(name)
            .ok_or_else(|| ModelError::MissingInput {
                kind: kind.to_string(),
                name: name.to_string(),
                expected: "float",
            })
    }

    /// The integer input `name`, or an error naming the model that needs it.
    pub fn index(&self, kind: &str, name: &str) -> Result<&IndexTensor, ModelError> {
        self.indices
            .get(name)
            .ok_or_else(|| ModelError::MissingInput {
                kind: kind.to_string(),
                name: name.to_string(),
                expected: "integer",
            })
    }

    /// Names of the float inputs.
    pub fn float_names(&self) -> impl Iterator<Item = &str> {
        self.floats.keys().map(String::as_str)
    }

    /// Names of the integer inputs.
    pub fn index_names(&self) -> impl Iterator<Item = &str> {
        self.indices.keys().map(String::as_str)
    }
}
