//! Tensor payloads: f32 values as raw little-endian bytes, converted in bulk
//! (never element by element through the message codec). Received payloads
//! are read straight from the transport's pieces ([`Payload`]), whose cuts
//! may fall inside a value.
use crate::ProtocolError;
use crate::payload::Payload;

/// Bytes per f32 value.
pub const F32_BYTES: usize = 4;

/// Encodes `values` as little-endian bytes (on little-endian targets, one
/// copy into a buffer that is not zero-filled first).
pub fn f32_to_le_bytes(values: &[f32]) -> Vec<u8> {
    #[cfg(target_endian = "little")]
    {
        bytemuck::cast_slice::<f32, u8>(values).to_vec()
    }
    #[cfg(not(target_endian = "little"))]
    {
        let mut out = Vec::with_capacity(values.len() * F32_BYTES);
        for value in values {
            out.extend_from_slice(&value.to_le_bytes());
        }
        out
    }
}

fn check_length(bytes: usize, values: usize) -> Result<(), ProtocolError> {
    if bytes != values * F32_BYTES {
        return Err(ProtocolError::TensorPayloadMismatch {
            bytes,
            expected_values: values,
        });
    }
    Ok(())
}

/// `out[i] = value i of bytes`; the lengths match (checked by the callers).
fn copy_values(bytes: &[u8], out: &mut [f32]) {
    #[cfg(target_endian = "little")]
    {
        bytemuck::cast_slice_mut::<f32, u8>(out).copy_from_slice(bytes);
    }
    #[cfg(not(target_endian = "little"))]
    {
        for (value, bytes) in out.iter_mut().zip(bytes.chunks_exact(F32_BYTES)) {
            *value = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
    }
}

/// `accumulator[i] += value i of bytes`; the lengths match (checked by the
/// callers).
fn add_values(bytes: &[u8], accumulator: &mut [f32]) {
    for (value, bytes) in accumulator.iter_mut().zip(bytes.chunks_exact(F32_BYTES)) {
        *value += f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
}

/// Decodes little-endian bytes into `out`; the lengths must match exactly.
pub fn f32_from_le_bytes(bytes: &[u8], out: &mut [f32]) -> Result<(), ProtocolError> {
    check_length(bytes.len(), out.len())?;
    copy_values(bytes, out);
    Ok(())
}

/// Adds the decoded values of `bytes` into `accumulator`, element by element
/// (`accumulator[i] = accumulator[i] + received[i]`, one IEEE addition each);
/// the lengths must match exactly.
pub fn add_f32_le_bytes(bytes: &[u8], accumulator: &mut [f32]) -> Result<(), ProtocolError> {
    check_length(bytes.len(), accumulator.len())?;
    add_values(bytes, accumulator);
    Ok(())
}

/// Applies `apply` to the payload's values in order, each run of whole
/// values inside one piece at once, a value cut between pieces through a
/// four-byte carry; the lengths must match exactly.
fn apply_pieces(
    payload: &Payload,
    values: &mut [f32],
    apply: impl Fn(&[u8], &mut [f32]),
) -> Result<(), ProtocolError> {
    check_length(payload.len(), values.len())?;
    let mut carry = [0u8; F32_BYTES];
    let mut carried = 0;
    let mut next = 0;
    for piece in payload.pieces() {
        let mut bytes = &piece[..];
        if carried > 0 {
            let take = (F32_BYTES - carried).min(bytes.len());
            carry[carried..carried + take].copy_from_slice(&bytes[..take]);
            carried += take;
            bytes = &bytes[take..];
            if carried < F32_BYTES {
                continue;
            }
            apply(&carry, &mut values[next..next + 1]);
            next += 1;
        }
        let whole = bytes.len() / F32_BYTES;
        let (run, rest) = bytes.split_at(whole * F32_BYTES);
        apply(run, &mut values[next..next + whole]);
        next += whole;
        carry[..rest.len()].copy_from_slice(rest);
        carried = rest.len();
    }
    debug_assert_eq!((next, carried), (values.len(), 0));
    Ok(())
}

/// Decodes a payload of little-endian f32 values into `out`, reading the
/// pieces in place; the lengths must match exactly.
pub fn f32_from_le_payload(payload: &Payload, out: &mut [f32]) -> Result<(), ProtocolError> {
    apply_pieces(payload, out, copy_values)
}

/// Adds the decoded values of a payload into `accumulator`, element by
/// element, exactly as [`add_f32_le_bytes`] does, reading the pieces in
/// place; the lengths must match exactly.
pub fn add_f32_le_payload(payload: &Payload, accumulator: &mut [f32]) -> Result<(), ProtocolError> {
    apply_pieces(payload, accumulator, add_values)
}
