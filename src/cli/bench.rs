//! `shoal bench ...`: benchmarks that print JSON comparable with the anchors.
use std::path::PathBuf;
use std::time::Instant;

use clap::Subcommand;

use crate::cli::bench_models;

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// Read throughput of the columns a task needs (rows/s, MB/s), as JSON.
    Data {
        /// Parquet files, directories or globs, read as one dataset.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The task whose columns are read (classify, vectors, sequence,
        /// graph-nodes, graph-edges, graphs).
        #[arg(long)]
        task: String,
        /// Passes over the data; the median is reported.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Global batch of the shuffled pass (one epoch through the plan,
        /// micro-batch by micro-batch, as a training job reads).
        #[arg(long, default_value_t = 256)]
        global_batch: usize,
        /// Virtual ranks of the shuffled pass.
        #[arg(long, default_value_t = 8)]
        virtual_ranks: usize,
    },
    /// f32 GEMM GFLOP/s through `ops` (plain and autodiff) against faer.
    Gemm(crate::cli::bench_gemm::GemmArgs),
    /// Ring all-reduce over QUIC between worker processes on this machine.
    Allreduce(super::bench_allreduce::AllreduceArgs),
    /// One worker process of `bench allreduce` (started by it).
    #[command(hide = true)]
    AllreduceWorker(super::bench_allreduce::AllreduceWorkerArgs),
    /// Training-step time of every model (as `pytorch_bench.py`).
    Models(bench_models::ModelsArgs),
    /// Data-parallel training step over worker processes on this machine
    /// (as `pytorch_ddp_bench.py`).
    Train(super::bench_train::TrainArgs),
    /// One worker process of `bench train` (started by it).
    #[command(hide = true)]
    TrainWorker(super::bench_train::TrainWorkerArgs),
}

pub(crate) fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Models(args) => bench_models::run(args),
        BenchCommand::Data {
            files,
            task,
            repeats,
            global_batch,
            virtual_ranks,
        } => bench_data(&files, &task, repeats, global_batch, virtual_ranks),
        BenchCommand::Gemm(args) => crate::cli::bench_gemm::run(args),
        BenchCommand::Allreduce(args) => super::bench_allreduce::run(args),
        BenchCommand::AllreduceWorker(args) => super::bench_allreduce::run_worker(args),
        BenchCommand::Train(args) => super::bench_train::run(args),
        BenchCommand::TrainWorker(args) => super::bench_train::run_worker(args),
    }
}

/// Reads every row group of the dataset through the task's reader (decode
/// plus conversion to flat f32/i64 arrays), `repeats` times, and prints the
/// median pass as rows/s and MB/s (MB of the decoded f32/i64 arrays a
/// trainer receives; the projected column chunks' uncompressed size from the
/// footers is printed too). `arrow_only_*` times decoding into Arrow record
/// batches alone (what `pq.read_table` does), without the conversion.
/// `shuffled_*` reads one epoch in the plan's order, micro-batch by
/// micro-batch (one pass, not a median).
fn bench_data(
    files: &[PathBuf],
    task: &str,
    repeats: usize,
    global_batch: usize,
    virtual_ranks: usize,
) -> anyhow::Result<()> {
    let task = datasets::Task::from_name(task)?;
    let dataset = datasets::Dataset::open(files)?;
    let row_groups = dataset.layout().row_groups().len();
    let mut seconds = Vec::new();
    let mut arrow_seconds = Vec::new();
    let mut value_bytes = 0;
    let mut uncompressed = 0;
    for _ in 0..repeats.max(1) {
        let mut reader =
            datasets::Reader::new(dataset.clone(), task, &datasets::ColumnMapping::new())?
                .with_cache_row_groups(1);
        uncompressed = reader.projected_uncompressed_bytes();
        let start = Instant::now();
        value_bytes = 0;
        let mut batch = datasets::Batch::default();
        for group in 0..row_groups {
            reader.read_row_group_into(group, &mut batch)?;
            value_bytes += batch.value_bytes();
        }
        seconds.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        for group in 0..row_groups {
            reader.read_record_batches(group)?;
        }
        arrow_seconds.push(start.elapsed().as_secs_f64());
    }
    arrow_seconds.sort_by(f64::total_cmp);
    // One epoch in the plan's shuffled order, micro-batch by micro-batch,
    // through a reader with the default cache (the training access pattern).
    let plan = datasets::Plan::new(
        dataset.fingerprint(),
        datasets::PlanConfig::new(0, global_batch, virtual_ranks),
    )?;
    let mut reader = datasets::Reader::new(dataset.clone(), task, &datasets::ColumnMapping::new())?;
    let mut batches = vec![datasets::Batch::default(); virtual_ranks];
    let start = Instant::now();
    let mut shuffled_rows = 0u64;
    let order = plan.epoch_order(0);
    for step in 0..plan.steps_per_epoch() {
        let cursor = datasets::DataCursor { epoch: 0, step };
        for (micro, batch) in plan
            .micro_batches_in(&order, cursor, 0..virtual_ranks)?
            .iter()
            .zip(&mut batches)
        {
            reader.read_samples_into(&micro.samples, batch)?;
            shuffled_rows += batch.samples.len() as u64;
        }
    }
    let shuffled_seconds = start.elapsed().as_secs_f64();
    let arrow_median = arrow_seconds[arrow_seconds.len() / 2];
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    let rows = dataset.samples();
    let report = serde_json::json!({
        "bench": "data",
        "task": task.name(),
        "files": files.iter().map(|path| path.display().to_string()).collect::<Vec<_>>(),
        "rows": rows,
        "row_groups": row_groups,
        "repeats": seconds.len(),
        "seconds_median": median,
        "rows_per_second": rows as f64 / median,
        "bytes": value_bytes,
        "mb_per_second": value_bytes as f64 / 1e6 / median,
        "uncompressed_column_bytes": uncompressed,
        "arrow_only_seconds_median": arrow_median,
        "arrow_only_rows_per_second": rows as f64 / arrow_median,
        "shuffled_global_batch": global_batch,
        "shuffled_virtual_ranks": virtual_ranks,
        "shuffled_rows_per_second": shuffled_rows as f64 / shuffled_seconds,
        "shuffled_row_groups_decoded": reader.row_groups_decoded(),
    });
    println!("{report}");
    Ok(())
}
