//! worker: training loop, collectives and data loading of a shoal worker.
#![forbid(unsafe_code)]

pub mod collective;
