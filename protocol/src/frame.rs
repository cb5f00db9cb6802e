//! Length-prefixed frames and a pure incremental decoder.
//!
//! Layout of one frame (all integers little-endian):
//!
//! ```text
//! u32  length           bytes after this field (at most the decoder's limit)
//! u16  version          PROTOCOL_VERSION
//! u32  message_length   bytes of the encoded message that follows
//! [message_length]      the message, encoded by crate::codec
//! [rest]                the payload: raw bytes (tensor values, state)
//! ```
//!
//! [`FrameDecoder`] takes bytes in whatever pieces the transport delivers
//! ([`FrameDecoder::push`]) and hands out whole frames ([`FrameDecoder::poll`]).
//! The length is checked against the limit as soon as its four bytes are in,
//! before anything of the body is buffered. After an error the stream is out
//! of step and must be closed.
use std::marker::PhantomData;

use bytes::{Buf, Bytes, BytesMut};

use crate::ProtocolError;
use crate::codec::{self, Message};

/// Version written into every frame; frames of another version are refused.
pub const PROTOCOL_VERSION: u16 = 2;

/// Default limit on a frame's length (the `length` field): 64 MiB.
pub const MAX_FRAME_BYTES: u32 = 64 << 20;

/// Bytes of the `length` field.
const LENGTH_BYTES: usize = 4;
/// Bytes after the length field that every frame has: version and message length.
const FIXED_HEADER_BYTES: usize = 2 + 4;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<M> {
    /// The message section.
    pub message: M,
    /// The payload section (possibly empty).
    pub payload: Bytes,
}

/// Encodes the prefix, header and message of a frame whose payload of
/// `payload_length` bytes the caller sends right after (without copying it).
pub fn encode_frame_head<M: Message>(
    message: &M,
    payload_length: usize,
) -> Result<Vec<u8>, ProtocolError> {
    let mut out = vec![0u8; LENGTH_BYTES + FIXED_HEADER_BYTES];
    codec::encode_into(message, &mut out)?;
    let message_length = out.len() - LENGTH_BYTES - FIXED_HEADER_BYTES;
    let length = (FIXED_HEADER_BYTES + message_length) as u64 + payload_length as u64;
    if length > u64::from(MAX_FRAME_BYTES) {
        return Err(ProtocolError::FrameTooLarge {
            length,
            max: u64::from(MAX_FRAME_BYTES),
        });
    }
    out[0..4].copy_from_slice(&(length as u32).to_le_bytes());
    out[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out[6..10].copy_from_slice(&(message_length as u32).to_le_bytes());
    Ok(out)
}

/// Encodes a whole frame, payload included, into one vector.
pub fn encode_frame<M: Message>(message: &M, payload: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let mut out = encode_frame_head(message, payload.len())?;
    out.extend_from_slice(payload);
    Ok(out)
}

/// Incremental decoder of frames carrying messages of type `M`.
#[derive(Debug)]
pub struct FrameDecoder<M> {
    buffer: BytesMut,
    max_frame_bytes: u32,
    message_type: PhantomData<fn() -> M>,
}

impl<M: Message> Default for FrameDecoder<M> {
    fn default() -> Self {
        Self::new(MAX_FRAME_BYTES)
    }
}

impl<M: Message> FrameDecoder<M> {
    /// A decoder that refuses frames whose `length` field exceeds `max_frame_bytes`.
    pub fn new(max_frame_bytes: u32) -> Self {
        Self {
            buffer: BytesMut::new(),
            max_frame_bytes,
            message_type: PhantomData,
        }
    }

    /// Adds bytes received from the transport.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes received but not yet handed out as frames.
    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed, or the
    /// reason the stream is unusable.
    pub fn poll(&mut self) -> Result<Option<Frame<M>>, ProtocolError> {
        let Some(length) = self.announced_length()? else {
            return Ok(None);
        };
        if self.buffer.len() >= LENGTH_BYTES + FIXED_HEADER_BYTES {
            let version = u16::from_le_bytes([self.buffer[4], self.buffer[5]]);
            if version != PROTOCOL_VERSION {
                return Err(ProtocolError::UnknownVersion {
                    found: version,
                    supported: PROTOCOL_VERSION,
                });
            }
        }
        let total = LENGTH_BYTES + length as usize;
        if self.buffer.len() < total {
            // Reserve once for the whole frame so large payloads do not
            // reallocate piece by piece.
            self.buffer.reserve(total - self.buffer.len());
            return Ok(None);
        }
        let mut frame = self.buffer.split_to(total);
        frame.advance(LENGTH_BYTES + 2);
        let message_length = frame.get_u32_le() as usize;
        if message_length > frame.len() {
            return Err(ProtocolError::Undecodable {
                what: "frame header",
                reason: format!(
                    "message length {message_length} exceeds the {} bytes left in the frame",
                    frame.len()
                ),
            });
        }
        let payload = frame.split_off(message_length).freeze();
        let message = codec::decode::<M>(&frame)?;
        Ok(Some(Frame { message, payload }))
    }

    /// Call when the stream has ended: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let expected = match self.announced_length() {
            Ok(Some(length)) => LENGTH_BYTES as u64 + u64::from(length),
            _ => LENGTH_BYTES as u64,
        };
        Err(ProtocolError::Truncated {
            expected,
            received: self.buffer.len() as u64,
        })
    }

    fn announced_length(&self) -> Result<Option<u32>, ProtocolError> {
        if self.buffer.len() < LENGTH_BYTES {
            return Ok(None);
        }
        let length = u32::from_le_bytes([
            self.buffer[0],
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
        ]);
        if length > self.max_frame_bytes {
            return Err(ProtocolError::FrameTooLarge {
                length: u64::from(length),
                max: u64::from(self.max_frame_bytes),
            });
        }
        if (length as usize) < FIXED_HEADER_BYTES {
            return Err(ProtocolError::FrameTooShort {
                length: u64::from(length),
                minimum: FIXED_HEADER_BYTES as u64,
            });
        }
        Ok(Some(length))
    }
}
