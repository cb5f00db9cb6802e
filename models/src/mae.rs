//! Masked autoencoding on vectors: hide entries, predict them from the rest.
//!
//! `input = concat(x * (1 - mask), mask)`;
//! `loss = sum(mask * (pred - x)^2) / sum(mask)`. Masks are batch inputs,
//! drawn per sample by the data pipeline from the counter-based generator.
use ops::{ParameterSet, Tensor, init};

use crate::config::ConfigReader;
use crate::inputs::{float_like, float_matrix};
use crate::{Batch, Model, ModelError};

/// `MaskedAutoencoder(d, d_hidden)` of the reference.
#[derive(Debug)]
pub struct MaskedAutoencoder {
    params: ParameterSet,
    d: usize,
}

impl MaskedAutoencoder {
    /// The model kind.
    pub const KIND: &'static str = "mae";

    /// A model with PyTorch's default initialization drawn under `seed`.
    pub fn new(d: usize, d_hidden: usize, seed: u64) -> MaskedAutoencoder {
        let mut params = ParameterSet::new();
        init::linear(&mut params, seed, "enc", 2 * d, d_hidden, true);
        init::linear(&mut params, seed, "hidden", d_hidden, d_hidden, true);
        init::linear(&mut params, seed, "dec", d_hidden, d, true);
        MaskedAutoencoder { params, d }
    }

    /// From `{"d", "d_hidden"}`.
    pub fn from_config(
        config: &serde_json::Value,
        seed: u64,
    ) -> Result<MaskedAutoencoder, ModelError> {
        let c = ConfigReader::new(Self::KIND, config)?;
        Ok(MaskedAutoencoder::new(
            c.size("d")?,
            c.size("d_hidden")?,
            seed,
        ))
    }

    /// Predictions of every entry of `x` `(batch, d)` where `mask` (1:
    /// hidden) hides entries.
    pub fn predict(&self, x: &Tensor, mask: &Tensor) -> Tensor {
        let (rows, d) = (x.dim(0), self.d);
        // The input is a constant of the batch: build it directly.
        let mut input = Vec::with_capacity(rows * 2 * d);
        for (xr, mr) in x.data().chunks_exact(d).zip(mask.data().chunks_exact(d)) {
            input.extend(xr.iter().zip(mr).map(|(&v, &m)| v * (1.0 - m)));
            input.extend_from_slice(mr);
        }
        let input = Tensor::from_vec([rows, 2 * d], input);
        let h = self.params.linear(&input, "enc").relu();
        self.params
            .linear(&self.params.linear(&h, "hidden").relu(), "dec")
    }
}

impl Model for MaskedAutoencoder {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn parameters(&self) -> &ParameterSet {
        &self.params
    }

    fn parameters_mut(&mut self) -> &mut ParameterSet {
        &mut self.params
    }

    fn loss(&self, _objective: usize, batch: &Batch) -> Result<Tensor, ModelError> {
        let x = float_matrix(batch, Self::KIND, "x", self.d)?;
        let mask = float_like(batch, Self::KIND, "mask", x.dims())?;
        let hidden: f32 = mask.data().iter().sum();
        if hidden <= 0.0 {
            return Err(ModelError::BadInput {
                kind: Self::KIND.to_string(),
                name: "mask".to_string(),
                expected: "at least one hidden entry (1.0)".to_string(),
                found: mask.dims().to_vec(),
            });
        }
        let error = self.predict(x, mask).sub(x);
        let masked = mask.mul(&error.mul(&error)).sum_all();
        Ok(masked.div(&Tensor::scalar(hidden)))
    }
}
