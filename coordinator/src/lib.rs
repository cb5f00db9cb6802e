//! The coordinator: job specs, the job store, the scheduler and the HTTP API.
//!
//! Pure modules (no clock, no I/O): [`spec`] (parsing and checking job
//! specs), [`job`] (identifiers and the job state machine) and
//! [`scheduler`] (membership and placement, fed with `now`), [`messages`]
//! (scheduler output to protocol messages). The driver
//! around them: [`store`] (SQLite), [`service`] (the shared state that ties
//! store, scheduler and metrics), [`http`] (the axum API), [`quic`] (the
//! workers' QUIC control connections), [`client`] (a
//! small HTTP client for the CLI) and [`tokens`] (API tokens on disk).
//!
//! Architecture invariant: this crate never depends on `ops` or `models`;
//! it schedules work and does no numerics.
#![forbid(unsafe_code)]
// The OpenAPI document is one large `json!` literal.
#![recursion_limit = "512"]

pub mod client;
pub mod error;
pub mod http;
pub mod job;
pub mod messages;
pub mod openapi;
pub mod quic;
pub mod scheduler;
pub mod service;
/// Job specs, shared with the workers (the module lives in `protocol`).
pub use protocol::spec;
pub mod store;
pub mod tokens;

pub use error::{CoordinatorError, Result};
pub use job::{JobId, JobState, WorkerId};
pub use service::{Coordinator, CoordinatorConfig};
pub use spec::JobSpec;
pub use store::JobStore;
