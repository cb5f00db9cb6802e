//! Building a model from its kind and JSON configuration (the constructor
//! arguments of the reference module, as in the fixtures' metadata).
use crate::{Model, ModelError};

/// The model kinds that [`build`] knows.
pub const KINDS: &[&str] = &[];

/// Builds a model of `kind` from `config` (the reference constructor's
/// keyword arguments as JSON), its parameters initialized as PyTorch would
/// (distributions, not values) from the counter-based generator under `seed`.
pub fn build(
    kind: &str,
    config: &serde_json::Value,
    seed: u64,
) -> Result<Box<dyn Model>, ModelError> {
    let _ = (config, seed);
    Err(ModelError::UnknownModel {
        kind: kind.to_string(),
        known: KINDS.join(", "),
    })
}
