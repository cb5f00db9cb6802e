//! worker: what a shoal worker does: hosts virtual ranks of a job, reads
//! their data, computes their gradients, all-reduces them over the ring and
//! applies the update.
//!
//! - [`collective`]: the ring all-reduce over virtual ranks (pure schedule
//!   and QUIC driver), broadcast and barrier.
//! - [`replica`]: a job's training state and the pieces of one step;
//!   [`step`] (the gradient buckets) and [`inputs`] are its pure helpers;
//!   [`overlap`]: the step's backward on a compute thread while its
//!   buckets are all-reduced over the ring as they come.
//! - [`evaluation`]: a job's held-out data scored during training.
//! - [`graph`]: graph jobs, whose one graph every virtual rank reads,
//!   with the training nodes dealt to the ranks.
//! - [`job`]: a job spec turned into what a replica trains;
//!   [`agent`]: the networked worker (`shoal worker`): registration,
//!   heartbeats, rings re-formed on every membership change, checkpoints
//!   uploaded to the coordinator; [`metrics`]: what its step loop records
//!   for Prometheus, and the `/metrics` endpoint.
//! - [`local`]: a step with every virtual rank in one process;
//!   [`single_node`]: a job's workers as tasks of one process over a
//!   loopback QUIC ring.
#![forbid(unsafe_code)]

pub mod agent;
pub mod collective;
pub mod error;
pub mod evaluation;
pub mod graph;
pub mod inputs;
pub mod job;
pub mod local;
pub mod metrics;
pub mod overlap;
pub mod replica;
pub mod single_node;
pub mod step;

pub use error::WorkerError;
