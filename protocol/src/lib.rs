//! protocol: the wire format shared by the coordinator and the workers.
//!
//! The pure core ([`message`], [`codec`], [`frame`], [`payload`], [`tensor`],
//! [`token`]) holds the versioned messages, their one encoding, the
//! length-prefixed frames with an incremental decoder that hands payloads out
//! as the received pieces (never copied), raw little-endian tensor payloads
//! and the join token. It uses no tokio, socket or clock, and is tested
//! without I/O. [`spec`] is the
//! job spec both sides share (parsed and checked, pure as well).
//!
//! [`transport`] is the one module that touches quinn, rustls and tokio: QUIC
//! endpoint setup tuned for bulk tensors, the coordinator's certificate kept on
//! disk, certificate pinning by fingerprint, the registration handshake, and
//! async helpers that move frames over QUIC streams.
#![forbid(unsafe_code)]

pub mod codec;
pub mod error;
pub mod frame;
pub mod message;
pub mod payload;
pub mod spec;
pub mod tensor;
pub mod token;
pub mod transport;

pub use error::ProtocolError;
pub use frame::{Frame, FrameDecoder, MAX_FRAME_BYTES, PROTOCOL_VERSION};
pub use payload::Payload;
pub use token::{Fingerprint, JoinToken};
