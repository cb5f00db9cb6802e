//! Collectives over a ring of workers hosting virtual ranks: all-reduce,
//! broadcast and barrier.
//!
//! [`schedule`] is the pure part (layout, chunks, roles, the reference sum in
//! the documented order); [`ring`] drives it over QUIC streams between
//! neighbours. Every wait has a timeout: a neighbour that dies, stalls or is
//! cut off makes the collective fail with an error, and the failing worker
//! closes its ring connections so that the failure travels around the ring
//! at once instead of each member waiting out its own timeout.
pub mod error;
mod reduction;
pub mod ring;
pub mod schedule;

pub use error::CollectiveError;
pub use ring::{
    AllReduceAlgorithm, AllReduceStats, BucketStats, CollectiveConfig, ReducedBucket, Ring,
    RingMemberAddress, RingSpec,
};
pub use schedule::{RingLayout, reference_all_reduce};
