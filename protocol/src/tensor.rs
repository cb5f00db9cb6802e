//! Tensor payloads: f32 values as raw little-endian bytes, converted in bulk
//! (never element by element through the message codec).
use crate::ProtocolError;

/// Bytes per f32 value.
pub const F32_BYTES: usize = 4;

/// Encodes `values` as little-endian bytes.
pub fn f32_to_le_bytes(values: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; values.len() * F32_BYTES];
    for (bytes, value) in out.chunks_exact_mut(F32_BYTES).zip(values) {
        bytes.copy_from_slice(&value.to_le_bytes());
    }
    out
}

fn check_length(bytes: &[u8], values: usize) -> Result<(), ProtocolError> {
    if bytes.len() != values * F32_BYTES {
        return Err(ProtocolError::TensorPayloadMismatch {
            bytes: bytes.len(),
            expected_values: values,
        });
    }
    Ok(())
}

/// Decodes little-endian bytes into `out`; the lengths must match exactly.
pub fn f32_from_le_bytes(bytes: &[u8], out: &mut [f32]) -> Result<(), ProtocolError> {
    check_length(bytes, out.len())?;
    for (value, bytes) in out.iter_mut().zip(bytes.chunks_exact(F32_BYTES)) {
        *value = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    Ok(())
}

/// Adds the decoded values of `bytes` into `accumulator`, element by element
/// (`accumulator[i] = received[i] + accumulator[i]`, one IEEE addition each);
/// the lengths must match exactly.
pub fn add_f32_le_bytes(bytes: &[u8], accumulator: &mut [f32]) -> Result<(), ProtocolError> {
    check_length(bytes, accumulator.len())?;
    for (value, bytes) in accumulator.iter_mut().zip(bytes.chunks_exact(F32_BYTES)) {
        *value += f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    Ok(())
}
