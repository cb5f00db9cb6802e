//! Building a model from its kind and JSON configuration (the constructor
//! arguments of the reference module, as in the fixtures' metadata).
use crate::{Model, ModelError};

/// The model kinds that [`build`] knows.
pub const KINDS: &[&str] = &[
    "mlp",
    "autoencoder",
    "vae",
    "gan",
    "barlow_twins",
    "mae",
    "lstm",
    "gru",
    "qrnn",
    "s4d",
    "mamba",
    "gcn",
];

/// Builds a model of `kind` from `config` (the reference constructor's
/// keyword arguments as JSON), its parameters initialized as PyTorch would
/// (distributions, not values) from the counter-based generator under `seed`.
pub fn build(
    kind: &str,
    config: &serde_json::Value,
    seed: u64,
) -> Result<Box<dyn Model>, ModelError> {
    Ok(match kind {
        "mlp" => Box::new(crate::mlp::Mlp::from_config(config, seed)?),
        "autoencoder" => Box::new(crate::autoencoder::Autoencoder::from_config(config, seed)?),
        "vae" => Box::new(crate::vae::Vae::from_config(config, seed)?),
        "gan" => Box::new(crate::gan::Gan::from_config(config, seed)?),
        "barlow_twins" => Box::new(crate::barlow_twins::BarlowTwins::from_config(config, seed)?),
        "mae" => Box::new(crate::mae::MaskedAutoencoder::from_config(config, seed)?),
        "gcn" => Box::new(crate::gcn::Gcn::from_config(config, seed)?),
        "lstm" | "gru" | "qrnn" | "s4d" | "mamba" => {
            let backbone = crate::sequence::Backbone::from_kind(kind).expect("a sequence kind");
            Box::new(crate::sequence::SequenceModel::from_config(
                backbone, config, seed,
            )?)
        }
        _ => {
            return Err(ModelError::UnknownModel {
                kind: kind.to_string(),
                known: KINDS.join(", "),
            });
        }
    })
}
