//! Frames on QUIC streams: [`write_frame`] sends one without copying its
//! payload, [`FrameReader`] feeds a [`FrameDecoder`] from a receive stream
//! with the chunks quinn hands out (no copy either).
use bytes::Bytes;

use crate::codec::Message;
use crate::frame::{FrameDecoder, encode_frame_head};
use crate::{Frame, Payload, ProtocolError};

/// Most chunks taken from quinn in one read.
const CHUNKS_PER_READ: usize = 32;

/// Sends one frame: `message`, then `payload` (a [`Bytes`] or a received
/// [`Payload`], sent piece by piece) as the raw payload section.
pub async fn write_frame<M: Message>(
    send: &mut quinn::SendStream,
    message: &M,
    payload: impl Into<Payload>,
) -> Result<(), ProtocolError> {
    let payload = payload.into();
    let head = Bytes::from(encode_frame_head(message, payload.len())?);
    if payload.is_empty() {
        send.write_chunk(head).await?;
    } else {
        let mut chunks = Vec::with_capacity(1 + payload.pieces().len());
        chunks.push(head);
        chunks.extend(payload.into_pieces());
        send.write_all_chunks(&mut chunks).await?;
    }
    Ok(())
}

/// Reads frames of messages `M` from a QUIC receive stream.
#[derive(Debug)]
pub struct FrameReader<M> {
    stream: quinn::RecvStream,
    decoder: FrameDecoder<M>,
    chunks: Vec<Bytes>,
}

impl<M: Message> FrameReader<M> {
    /// A reader with the default frame limit.
    pub fn new(stream: quinn::RecvStream) -> Self {
        Self {
            stream,
            decoder: FrameDecoder::default(),
            chunks: vec![Bytes::new(); CHUNKS_PER_READ],
        }
    }

    /// The next frame, `Ok(None)` when the peer finished the stream cleanly
    /// between frames, or why the stream is unusable (a truncated, oversized,
    /// unknown-version or undecodable frame, or a transport error).
    pub async fn next(&mut self) -> Result<Option<Frame<M>>, ProtocolError> {
        loop {
            if let Some(frame) = self.decoder.poll()? {
                return Ok(Some(frame));
            }
            match self.stream.read_chunks(&mut self.chunks).await? {
                Some(count) => {
                    for chunk in &mut self.chunks[..count] {
                        self.decoder.push_bytes(std::mem::take(chunk));
                    }
                }
                None => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }

    /// The next frame; the end of the stream is an error naming `expected`.
    pub async fn expect(&mut self, expected: &'static str) -> Result<Frame<M>, ProtocolError> {
        self.next()
            .await?
            .ok_or(ProtocolError::StreamClosed { expected })
    }

    /// The underlying stream (to stop it, for example).
    pub fn stream_mut(&mut self) -> &mut quinn::RecvStream {
        &mut self.stream
    }
}

/// Closes `connection` because its peer broke the protocol, logging why; other
/// connections of the endpoint are untouched.
pub fn close_for_protocol_error(connection: &quinn::Connection, error: &ProtocolError) {
    tracing::warn!(
        peer = %connection.remote_address(),
        %error,
        "closing connection: protocol error"
    );
    let reason = error.to_string();
    let reason = &reason.as_bytes()[..reason.len().min(512)];
    connection.close(super::CLOSE_PROTOCOL_ERROR.into(), reason);
}
