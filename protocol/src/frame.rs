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
//! ([`FrameDecoder::push_bytes`]) and hands out whole frames
//! ([`FrameDecoder::poll`]). It keeps the pieces as they came (a rope) and
//! hands a frame's payload out as slices of them ([`Payload`]): the payload
//! bytes are never copied. Only a header or message cut between pieces is
//! gathered into a small contiguous buffer. The length is checked against
//! the limit as soon as its four bytes are in, before anything of the body is
//! buffered. After an error the stream is out of step and must be closed.
use std::collections::VecDeque;
use std::marker::PhantomData;

use bytes::Bytes;

use crate::ProtocolError;
use crate::codec::{self, Message};
use crate::payload::Payload;

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
    /// The payload section (possibly empty), as the pieces it arrived in.
    pub payload: Payload,
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
    /// Bytes received and not yet handed out, in order; none empty.
    pieces: VecDeque<Bytes>,
    /// Total bytes of `pieces`.
    buffered: usize,
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
            pieces: VecDeque::new(),
            buffered: 0,
            max_frame_bytes,
            message_type: PhantomData,
        }
    }

    /// Adds bytes received from the transport, keeping them as they are:
    /// payloads handed out later are slices of them.
    pub fn push_bytes(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.buffered += bytes.len();
            self.pieces.push_back(bytes);
        }
    }

    /// Adds a copy of `bytes` (for callers that hold no [`Bytes`]).
    pub fn push(&mut self, bytes: &[u8]) {
        self.push_bytes(Bytes::copy_from_slice(bytes));
    }

    /// Bytes received but not yet handed out as frames.
    pub fn buffered_len(&self) -> usize {
        self.buffered
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed, or the
    /// reason the stream is unusable.
    pub fn poll(&mut self) -> Result<Option<Frame<M>>, ProtocolError> {
        let Some(length) = self.announced_length()? else {
            return Ok(None);
        };
        let mut header = [0u8; LENGTH_BYTES + FIXED_HEADER_BYTES];
        if !self.peek(&mut header) {
            return Ok(None);
        }
        let version = u16::from_le_bytes([header[4], header[5]]);
        if version != PROTOCOL_VERSION {
            return Err(ProtocolError::UnknownVersion {
                found: version,
                supported: PROTOCOL_VERSION,
            });
        }
        let total = LENGTH_BYTES + length as usize;
        if self.buffered < total {
            return Ok(None);
        }
        let message_length = u32::from_le_bytes([header[6], header[7], header[8], header[9]]);
        let message_length = message_length as usize;
        let body = total - header.len();
        if message_length > body {
            return Err(ProtocolError::Undecodable {
                what: "frame header",
                reason: format!(
                    "message length {message_length} exceeds the {body} bytes left in the frame"
                ),
            });
        }
        self.take(header.len());
        let message = self.take(message_length);
        let message = codec::decode::<M>(&message.into_bytes())?;
        let payload = self.take(body - message_length);
        Ok(Some(Frame { message, payload }))
    }

    /// Call when the stream has ended: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        if self.buffered == 0 {
            return Ok(());
        }
        let expected = match self.announced_length() {
            Ok(Some(length)) => LENGTH_BYTES as u64 + u64::from(length),
            _ => LENGTH_BYTES as u64,
        };
        Err(ProtocolError::Truncated {
            expected,
            received: self.buffered as u64,
        })
    }

    /// Copies the first `out.len()` buffered bytes into `out`; false (and
    /// `out` unspecified) if fewer are buffered.
    fn peek(&self, out: &mut [u8]) -> bool {
        if self.buffered < out.len() {
            return false;
        }
        let mut filled = 0;
        for piece in &self.pieces {
            if filled == out.len() {
                break;
            }
            let take = (out.len() - filled).min(piece.len());
            out[filled..filled + take].copy_from_slice(&piece[..take]);
            filled += take;
        }
        true
    }

    /// Removes the first `count` buffered bytes (at most `buffered`) and
    /// gives them as slices of the pieces.
    fn take(&mut self, count: usize) -> Payload {
        debug_assert!(count <= self.buffered);
        self.buffered -= count;
        let mut left = count;
        let mut taken = Payload::new();
        while left > 0 {
            let front = self.pieces.front_mut().expect("count is at most buffered");
            if front.len() <= left {
                left -= front.len();
                taken.push(self.pieces.pop_front().expect("a front piece"));
            } else {
                taken.push(front.split_to(left));
                left = 0;
            }
        }
        taken
    }

    fn announced_length(&self) -> Result<Option<u32>, ProtocolError> {
        let mut prefix = [0u8; LENGTH_BYTES];
        if !self.peek(&mut prefix) {
            return Ok(None);
        }
        let length = u32::from_le_bytes(prefix);
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
