//! The one place that decides how control messages become bytes: bincode 2
//! through serde, with its standard configuration (little-endian, variable
//! length integers). Tensor payloads never go through here (see
//! [`crate::tensor`]).
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ProtocolError;

/// A type that travels as the message section of a frame.
pub trait Message: Serialize + DeserializeOwned {
    /// Name used in error messages.
    const NAME: &'static str;
}

impl Message for crate::message::WorkerMessage {
    const NAME: &'static str = "worker message";
}
impl Message for crate::message::CoordinatorMessage {
    const NAME: &'static str = "coordinator message";
}
impl Message for crate::message::PeerMessage {
    const NAME: &'static str = "peer message";
}

/// bincode's standard configuration, with allocations bounded by the frame
/// limit so that a hostile length prefix inside a message cannot ask for more.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ crate::frame::MAX_FRAME_BYTES as usize }>()
}

/// Appends the encoding of `message` to `out`.
pub fn encode_into<M: Message>(message: &M, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    bincode::serde::encode_into_std_write(message, out, config()).map_err(|error| {
        ProtocolError::Unencodable {
            what: M::NAME,
            reason: error.to_string(),
        }
    })?;
    Ok(())
}

/// Encodes `message` into a fresh vector.
pub fn encode<M: Message>(message: &M) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::new();
    encode_into(message, &mut out)?;
    Ok(out)
}

/// Decodes exactly one message from `bytes`; trailing bytes are an error.
pub fn decode<M: Message>(bytes: &[u8]) -> Result<M, ProtocolError> {
    let (message, used) =
        bincode::serde::decode_from_slice::<M, _>(bytes, config()).map_err(|error| {
            ProtocolError::Undecodable {
                what: M::NAME,
                reason: error.to_string(),
            }
        })?;
    if used != bytes.len() {
        return Err(ProtocolError::Undecodable {
            what: M::NAME,
            reason: format!("{} trailing bytes after the message", bytes.len() - used),
        });
    }
    Ok(message)
}
