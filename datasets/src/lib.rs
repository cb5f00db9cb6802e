//! datasets: how a job's data gets from Parquet files to the micro-batches
//! of each virtual rank.
//!
//! - [`Dataset`] opens files, directories and globs and computes a
//!   [`Fingerprint`] from their footers alone.
//! - [`Plan`] gives, for each step ([`DataCursor`]), the sample ids of each
//!   virtual rank: a pure function of (fingerprint, seed, epoch).
//! - [`Reader`] reads the columns a [`Task`] needs from the row groups those
//!   samples live in and returns a [`Batch`] of flat arrays with shapes.
//! - [`object`] lets an upper crate serve files from object storage
//!   through a synchronous byte-range trait, [`ObjectSource`].
//! - [`generate`] writes synthetic tasks; [`inspect()`](fn@inspect) describes files.
//!
//! The crate is pure in the project's sense: no async runtime, sockets or
//! clock, and it depends on no other crate of the workspace.
#![forbid(unsafe_code)]

pub mod dataset;
pub mod error;
pub mod generate;
pub mod inspect;
mod leaf;
pub mod object;
pub mod plan;
pub mod prefetch;
pub mod read;
pub mod rng;
pub mod task;

pub use dataset::{DataFile, Dataset, FileFingerprint, Fingerprint};
pub use error::{DatasetError, Result};

pub use plan::{
    DataCursor, EpochOrder, Layout, MicroBatch, PartialBatch, Plan, PlanConfig, ReadRequest,
};

pub use inspect::{InspectReport, inspect};
pub use object::{ObjectInfo, ObjectLocation, ObjectSource};
pub use prefetch::{Prefetch, StepBatch, StepBatches};
pub use read::{Batch, FloatArray, IntArray, Reader, read_graph};
pub use task::{ColumnMapping, InputKind, Task};
