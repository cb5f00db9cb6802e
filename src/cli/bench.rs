//! `shoal bench ...`: benchmarks that print JSON comparable with the anchors.
use std::path::PathBuf;
use std::time::Instant;

use clap::Subcommand;

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
    },
}

pub(crate) fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Data {
            files,
            task,
            repeats,
        } => bench_data(&files, &task, repeats),
    }
}

/// Reads every row group of the dataset through the task's reader (decode
/// plus conversion to flat f32/i64 arrays), `repeats` times, and prints the
/// median pass as rows/s and MB/s (MB of the decoded f32/i64 arrays a
/// trainer receives; the projected column chunks' uncompressed size from the
/// footers is printed too). `arrow_only_*` times decoding into Arrow record
/// batches alone (what `pq.read_table` does), without the conversion.
fn bench_data(files: &[PathBuf], task: &str, repeats: usize) -> anyhow::Result<()> {
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
        for group in 0..row_groups {
            value_bytes += reader.read_row_group(group)?.value_bytes();
        }
        seconds.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        for group in 0..row_groups {
            reader.read_record_batches(group)?;
        }
        arrow_seconds.push(start.elapsed().as_secs_f64());
    }
    arrow_seconds.sort_by(f64::total_cmp);
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
    });
    println!("{report}");
    Ok(())
}
