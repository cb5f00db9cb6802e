//! Why a collective failed.
use protocol::ProtocolError;

/// A collective failed; the ring is unusable afterwards and must be re-formed.
#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    /// The transport or a frame failed (lost connection, bad frame...).
    #[error("ring transport failed with member {member}: {source}")]
    Transport {
        /// Ring index of the member on the other end.
        member: usize,
        /// What failed.
        source: ProtocolError,
    },
    /// A neighbour did not send or accept data within the timeout.
    #[error("timed out after {after_ms} ms waiting for {what} (member {member})")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// Ring index of the member concerned.
        member: usize,
        /// Time allowed, milliseconds.
        after_ms: u64,
    },
    /// A neighbour finished its stream in the middle of a collective.
    #[error("member {member} closed its ring stream during a collective")]
    PeerClosed {
        /// Ring index of the member.
        member: usize,
    },
    /// A neighbour sent a frame that does not fit the collective in progress.
    #[error("unexpected frame from member {member}: {reason}")]
    UnexpectedFrame {
        /// Ring index of the member.
        member: usize,
        /// What does not fit.
        reason: String,
    },
    /// Forming the ring failed.
    #[error("cannot form the ring: {reason}")]
    Setup {
        /// What failed.
        reason: String,
    },
    /// The caller stopped handing over buffers in the middle of a stream of
    /// all-reduces (its computation failed, for example).
    #[error("only {handed_over} of {expected} buffers were handed over to the all-reduce")]
    Abandoned {
        /// Buffers handed over.
        handed_over: usize,
        /// Buffers announced.
        expected: usize,
    },
    /// An earlier collective failed on this ring.
    #[error("the ring failed earlier ({reason}) and must be re-formed")]
    Poisoned {
        /// The first failure.
        reason: String,
    },
}
