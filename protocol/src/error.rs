//! The one error type of the protocol crate.
use std::path::PathBuf;

/// Everything that can go wrong while framing, decoding, authenticating or
/// moving protocol messages.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    // ---- framing (pure) ----
    /// A frame announced a length above the limit; nothing of it was buffered.
    #[error("frame of {length} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Length announced by the frame's prefix.
        length: u64,
        /// Largest frame this decoder accepts.
        max: u64,
    },
    /// A frame announced a length too small to hold its own header.
    #[error("frame of {length} bytes is shorter than the {minimum}-byte frame header")]
    FrameTooShort {
        /// Length announced by the frame's prefix.
        length: u64,
        /// Smallest valid frame length.
        minimum: u64,
    },
    /// A frame carried a protocol version this build does not speak.
    #[error("frame has protocol version {found}, this build speaks version {supported}")]
    UnknownVersion {
        /// Version found in the frame.
        found: u16,
        /// Version this build speaks.
        supported: u16,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame: {received} of {expected} bytes received")]
    Truncated {
        /// Bytes the frame needed (prefix included), as far as known.
        expected: u64,
        /// Bytes received before the end of the stream.
        received: u64,
    },
    /// A frame's message section did not decode as the expected message type.
    #[error("undecodable {what}: {reason}")]
    Undecodable {
        /// What was being decoded (a message type or a frame part).
        what: &'static str,
        /// The decoder's explanation.
        reason: String,
    },
    /// A message could not be encoded (a programming error in practice).
    #[error("cannot encode {what}: {reason}")]
    Unencodable {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's explanation.
        reason: String,
    },
    /// A tensor payload's length is not a whole number of f32 values or does
    /// not match the header that announced it.
    #[error(
        "tensor payload of {bytes} bytes does not hold the {expected_values} f32 values announced"
    )]
    TensorPayloadMismatch {
        /// Payload length in bytes.
        bytes: usize,
        /// Number of f32 values announced.
        expected_values: usize,
    },

    // ---- join token and identity ----
    /// A join token string is malformed.
    #[error("malformed join token: {reason}")]
    MalformedToken {
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate or key file could not be read, parsed or written.
    #[error("certificate store {path}: {reason}")]
    CertificateStore {
        /// File or directory concerned.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Generating a certificate failed.
    #[error("cannot generate a certificate: {reason}")]
    CertificateGeneration {
        /// rcgen's explanation.
        reason: String,
    },
    /// The TLS or QUIC configuration was rejected.
    #[error("invalid TLS/QUIC configuration: {reason}")]
    Configuration {
        /// What was rejected.
        reason: String,
    },

    // ---- transport ----
    /// Binding or configuring a UDP socket failed.
    #[error("cannot bind a QUIC endpoint on {address}: {source}")]
    Bind {
        /// Address asked for.
        address: String,
        /// Operating system error.
        source: std::io::Error,
    },
    /// A connection could not be started or its handshake failed (a server
    /// whose certificate does not have the pinned fingerprint ends up here).
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// Peer address.
        address: String,
        /// What failed.
        reason: String,
    },
    /// An established connection was lost or closed.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] quinn::ConnectionError),
    /// Writing to a stream failed.
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading from a stream failed.
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// The peer closed a stream before the expected frame.
    #[error("stream closed by the peer while waiting for {expected}")]
    StreamClosed {
        /// What was expected next.
        expected: &'static str,
    },
    /// The peer sent a well-formed message that is not allowed at this point.
    #[error("unexpected message: expected {expected}, got {got}")]
    UnexpectedMessage {
        /// What the protocol expected.
        expected: &'static str,
        /// What arrived.
        got: String,
    },
    /// The coordinator refused this worker (a wrong join token, for example).
    #[error("refused by the coordinator: {reason}")]
    Refused {
        /// The coordinator's reason.
        reason: String,
    },
    /// Nothing happened within the allowed time.
    #[error("timed out after {after_ms} ms waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// Time allowed, in milliseconds.
        after_ms: u64,
    },
}
