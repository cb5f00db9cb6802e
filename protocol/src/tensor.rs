//! Tensor payloads: f32 values as raw little-endian bytes, converted in bulk
//! (never element by element through the message codec). Received payloads
//! are read straight from the transport's pieces ([`Payload`]), whose cuts
//! may fall inside a value.
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use crate::ProtocolError;
use crate::payload::Payload;

/// Bytes per f32 value.
pub const F32_BYTES: usize = 4;

/// Encodes `values` as little-endian bytes (on little-endian targets, one
/// copy into a buffer that is not zero-filled first).
pub fn f32_to_le_bytes(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * F32_BYTES);
    extend_le_bytes(&mut out, values);
    out
}

/// Appends the little-endian bytes of `values` to `out`.
fn extend_le_bytes(out: &mut Vec<u8>, values: &[f32]) {
    #[cfg(target_endian = "little")]
    {
        out.extend_from_slice(bytemuck::cast_slice::<f32, u8>(values));
    }
    #[cfg(not(target_endian = "little"))]
    {
        out.reserve(values.len() * F32_BYTES);
        for value in values {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
}

/// Most bytes of free buffers a [`PayloadPool`] keeps.
pub const PAYLOAD_POOL_MAX_BYTES: usize = 64 << 20;

/// Buffers for encoded f32 payloads, reused once the transport lets go of
/// them: a payload from [`PayloadPool::encode_f32`] returns its buffer to the
/// pool when its last [`Bytes`] handle is dropped (after the transport sent
/// it and the peer acknowledged it), and the next payload is written into
/// that buffer. A fresh allocation of a large buffer costs page faults and
/// the kernel's zeroing of every page, more than the copy of the values;
/// reused buffers cost neither. The pool keeps at most
/// [`PAYLOAD_POOL_MAX_BYTES`] of free buffers. Clones share the pool.
#[derive(Debug, Clone, Default)]
pub struct PayloadPool {
    free: Arc<Mutex<FreeBuffers>>,
}

#[derive(Debug, Default)]
struct FreeBuffers {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

impl FreeBuffers {
    /// Keeps `buffer` for reuse, contents and length included: a payload of
    /// the same length written into it later by [`PayloadPool::encode_f32_sum`]
    /// then needs no zero-fill first.
    fn give_back(&mut self, buffer: Vec<u8>) {
        if self.bytes + buffer.capacity() <= PAYLOAD_POOL_MAX_BYTES {
            self.bytes += buffer.capacity();
            self.buffers.push(buffer);
        }
    }

    /// The most recently returned buffer of at least `capacity` bytes.
    fn take(&mut self, capacity: usize) -> Option<Vec<u8>> {
        let index = self
            .buffers
            .iter()
            .rposition(|buffer| buffer.capacity() >= capacity)?;
        let buffer = self.buffers.swap_remove(index);
        self.bytes -= buffer.capacity();
        Some(buffer)
    }
}

/// A payload buffer that goes back to its pool when dropped.
struct PooledBuffer {
    buffer: Vec<u8>,
    free: Arc<Mutex<FreeBuffers>>,
}

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.buffer);
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .give_back(buffer);
    }
}

impl PayloadPool {
    /// A pool with no buffer yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `values` as little-endian bytes (the bytes of [`f32_to_le_bytes`]),
    /// in a reused buffer where one is free.
    pub fn encode_f32(&self, values: &[f32]) -> Bytes {
        let mut buffer = self.buffer(values.len() * F32_BYTES);
        buffer.clear();
        extend_le_bytes(&mut buffer, values);
        self.pooled(buffer)
    }

    /// The little-endian bytes of `values[i] + value i of payload`, one IEEE
    /// addition each (the bits [`add_f32_le_payload`] leaves in a copy of
    /// `values`), written straight into a reused buffer where one is free:
    /// a partial sum that is only passed on costs no pass over an
    /// accumulator. The payload must hold exactly `values.len()` values.
    pub fn encode_f32_sum(
        &self,
        payload: &Payload,
        values: &[f32],
    ) -> Result<Bytes, ProtocolError> {
        check_length(payload.len(), values.len())?;
        let length = values.len() * F32_BYTES;
        let mut buffer = self.buffer(length);
        // A reused buffer keeps its length: one of the same size (every
        // piece but a buffer's last) is overwritten without a zero-fill.
        buffer.resize(length, 0);
        for_each_run(payload, values.len(), |bytes, range| {
            let out = &mut buffer[range.start * F32_BYTES..range.end * F32_BYTES];
            sum_values(bytes, &values[range], out);
        })?;
        Ok(self.pooled(buffer))
    }

    /// A free buffer of at least `capacity` bytes, or a new one.
    fn buffer(&self, capacity: usize) -> Vec<u8> {
        let reused = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(capacity);
        reused.unwrap_or_else(|| Vec::with_capacity(capacity))
    }

    /// `buffer` as payload bytes that go back to the pool when dropped.
    fn pooled(&self, buffer: Vec<u8>) -> Bytes {
        Bytes::from_owner(PooledBuffer {
            buffer,
            free: Arc::clone(&self.free),
        })
    }

    /// Bytes of the free buffers it holds now.
    pub fn free_bytes(&self) -> usize {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
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

/// `out` = the little-endian bytes of `values[i] + value i of bytes`; the
/// lengths match (checked by the callers).
fn sum_values(bytes: &[u8], values: &[f32], out: &mut [u8]) {
    let received = bytes.chunks_exact(F32_BYTES);
    for ((out, received), value) in out.chunks_exact_mut(F32_BYTES).zip(received).zip(values) {
        let sum = *value + f32::from_le_bytes([received[0], received[1], received[2], received[3]]);
        out.copy_from_slice(&sum.to_le_bytes());
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

/// Calls `apply` with the payload's bytes in order, each run of whole values
/// inside one piece at once, a value cut between pieces through a four-byte
/// carry, together with the indices of the values the run holds; the payload
/// must hold exactly `count` values.
fn for_each_run(
    payload: &Payload,
    count: usize,
    mut apply: impl FnMut(&[u8], Range<usize>),
) -> Result<(), ProtocolError> {
    check_length(payload.len(), count)?;
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
            apply(&carry, next..next + 1);
            next += 1;
        }
        let whole = bytes.len() / F32_BYTES;
        let (run, rest) = bytes.split_at(whole * F32_BYTES);
        apply(run, next..next + whole);
        next += whole;
        carry[..rest.len()].copy_from_slice(rest);
        carried = rest.len();
    }
    debug_assert_eq!((next, carried), (count, 0));
    Ok(())
}

/// Decodes a payload of little-endian f32 values into `out`, reading the
/// pieces in place; the lengths must match exactly.
pub fn f32_from_le_payload(payload: &Payload, out: &mut [f32]) -> Result<(), ProtocolError> {
    for_each_run(payload, out.len(), |bytes, values| {
        copy_values(bytes, &mut out[values]);
    })
}

/// Adds the decoded values of a payload into `accumulator`, element by
/// element, exactly as [`add_f32_le_bytes`] does, reading the pieces in
/// place; the lengths must match exactly.
pub fn add_f32_le_payload(payload: &Payload, accumulator: &mut [f32]) -> Result<(), ProtocolError> {
    for_each_run(payload, accumulator.len(), |bytes, values| {
        add_values(bytes, &mut accumulator[values]);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_payloads_reuse_buffers_released_by_the_transport() {
        let pool = PayloadPool::new();
        let values: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 3.0).collect();
        let first = pool.encode_f32(&values);
        assert_eq!(first.as_ref(), f32_to_le_bytes(&values).as_slice());
        let address = first.as_ptr();
        let shared = first.slice(8..16);
        drop(first);
        // Still held by a slice (the transport's copy): not free yet.
        assert_eq!(pool.free_bytes(), 0);
        drop(shared);
        assert_eq!(pool.free_bytes(), 4000);
        // The next payload of at most that size goes into the same buffer.
        let second = pool.encode_f32(&values[..10]);
        assert_eq!(second.as_ptr(), address);
        assert_eq!(second.as_ref(), f32_to_le_bytes(&values[..10]).as_slice());
        assert_eq!(pool.free_bytes(), 0);
        // A larger one needs a buffer of its own.
        drop(second);
        let third = pool.encode_f32(&[values.as_slice(), &values].concat());
        assert_eq!(third.len(), 8000);
        assert_eq!(pool.free_bytes(), 4000);
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_bytes() {
        let pool = PayloadPool::new();
        let values = vec![1.0f32; (PAYLOAD_POOL_MAX_BYTES / F32_BYTES) / 3 + 1];
        let held: Vec<Bytes> = (0..4).map(|_| pool.encode_f32(&values)).collect();
        drop(held);
        assert!(pool.free_bytes() <= PAYLOAD_POOL_MAX_BYTES);
        assert_eq!(pool.free_bytes(), 2 * values.len() * F32_BYTES);
    }
}
