//! QUIC transport: the one module of the crate that uses quinn, rustls and tokio.
//!
//! - [`identity`]: certificates (rcgen), kept on disk for the coordinator and
//!   generated in memory for workers' ring endpoints.
//! - [`verify`]: rustls verifiers that accept exactly the certificates whose
//!   SHA-256 fingerprints are pinned (signatures still checked by the provider).
//! - [`config`]: endpoint, server and client configurations tuned for bulk
//!   tensors, with the ring crypto provider only.
//! - [`stream`]: sending and receiving [`crate::Frame`]s on QUIC streams.
//! - [`register`]: the registration handshake that checks the join token.
pub mod config;
pub mod identity;
pub mod register;
pub mod stream;
pub mod verify;

pub use config::{
    TransportTuning, bind_endpoint, client_config, peer_server_config, server_config,
};
pub use identity::{Identity, generate_join_token};
pub use register::{RegisteredWorker, Registration, accept_registration, connect_and_register};
pub use stream::{FrameReader, close_for_protocol_error, write_frame};

/// Application close code: normal shutdown.
pub const CLOSE_NORMAL: u32 = 0;
/// Application close code: the registration was refused (wrong token).
pub const CLOSE_REFUSED: u32 = 1;
/// Application close code: the peer broke the protocol (bad frame, bad message).
pub const CLOSE_PROTOCOL_ERROR: u32 = 2;
/// Application close code: a collective failed (timeout, lost peer); the ring
/// must be re-formed.
pub const CLOSE_COLLECTIVE_FAILED: u32 = 3;

/// Server name used in every handshake; certificates are pinned by
/// fingerprint, so the name itself carries no trust.
pub const SERVER_NAME: &str = "shoal";
/// ALPN protocol identifier.
pub const ALPN: &[u8] = b"shoal/1";
