//! Subcommands of the `shoal` binary, one module each.
pub(crate) mod bench;
pub(crate) mod bench_allreduce;
pub(crate) mod bench_gemm;
pub(crate) mod bench_models;
pub(crate) mod bench_ring;
pub(crate) mod bench_train;
pub(crate) mod cluster;
pub(crate) mod coordinator;
pub(crate) mod data;
pub(crate) mod demo;
pub(crate) mod graph;
pub(crate) mod progress;
pub(crate) mod report;
pub(crate) mod run;
pub(crate) mod spec_file;
pub(crate) mod worker;
