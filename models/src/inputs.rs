//! Checks of batch inputs shared by the models: shapes and label ranges,
//! with errors naming the model and the input.
use ops::{IndexTensor, Tensor};

use crate::{Batch, ModelError};

/// The float input `name`, which must be `(rows, columns)`.
pub fn float_matrix<'a>(
    batch: &'a Batch,
    kind: &str,
    name: &str,
    columns: usize,
) -> Result<&'a Tensor, ModelError> {
    let x = batch.float(kind, name)?;
    if x.rank() != 2 || x.dim(1) != columns || x.dim(0) == 0 {
        return Err(ModelError::BadInput {
            kind: kind.to_string(),
            name: name.to_string(),
            expected: format!("(rows >= 1, {columns})"),
            found: x.dims().to_vec(),
        });
    }
    Ok(x)
}

/// The float input `name`, which must have exactly `shape`.
pub fn float_like<'a>(
    batch: &'a Batch,
    kind: &str,
    name: &str,
    shape: &[usize],
) -> Result<&'a Tensor, ModelError> {
    let x = batch.float(kind, name)?;
    if x.dims() != shape {
        return Err(ModelError::BadInput {
            kind: kind.to_string(),
            name: name.to_string(),
            expected: format!("{shape:?}"),
            found: x.dims().to_vec(),
        });
    }
    Ok(x)
}

/// The integer input `name`: `rows` class labels in `0..classes`.
pub fn labels<'a>(
    batch: &'a Batch,
    kind: &str,
    name: &str,
    rows: usize,
    classes: usize,
) -> Result<&'a IndexTensor, ModelError> {
    let label = batch.index(kind, name)?;
    let bad = |expected: String| ModelError::BadInput {
        kind: kind.to_string(),
        name: name.to_string(),
        expected,
        found: label.dims().to_vec(),
    };
    if label.numel() != rows || label.dims().len() != 1 {
        return Err(bad(format!("({rows}) labels")));
    }
    if let Some(&v) = label
        .data()
        .iter()
        .find(|&&v| !(0..classes as i64).contains(&v))
    {
        return Err(bad(format!("labels in 0..{classes}, found {v}")));
    }
    Ok(label)
}
