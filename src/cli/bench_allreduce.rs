//! `shoal bench allreduce`: ring all-reduce over encrypted QUIC between worker
//! processes on this machine, reported in nccl-tests' terms (algbw = bytes /
//! time, busbw = algbw x 2(n-1)/n) and, with `--json`, in the row shape of
//! `gloo_allreduce.py` so the two compare line by line.
//!
//! The workers are processes of the hidden `bench allreduce-worker`
//! subcommand, started and joined by [`super::bench_ring`].
//! Times are medians over `--reps` calls after two warm-up calls, measured on
//! worker 0 between barriers (as the gloo anchor does). The 4 KiB latency is
//! the time per call of at least 100 calls back to back (median of 5
//! rounds), as nccl-tests time theirs.
use std::time::{Duration, Instant};

use anyhow::bail;
use worker::collective::CollectiveConfig;

use super::bench_ring::{
    AlgorithmArg, join_ring, median, print_result, run_ring_processes, worker_arguments,
};

/// Size of the small-message latency measurement, bytes.
const LATENCY_BYTES: usize = 4096;

/// Rounds of back-to-back all-reduces of the latency measurement (the
/// median round is reported).
const LATENCY_ROUNDS: usize = 5;

/// Arguments of `shoal bench allreduce`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct AllreduceArgs {
    /// Number of worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Buffer sizes to all-reduce, MiB, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    sizes_mib: Vec<usize>,
    /// Timed calls per size (after two warm-up calls).
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Print JSON rows {world, mib, ms, algbw_gbs, busbw_gbs} instead of a table.
    #[arg(long)]
    json: bool,
    /// Virtual ranks V (default: one per worker).
    #[arg(long)]
    virtual_ranks: Option<usize>,
    /// Bucket size, MiB.
    #[arg(long, default_value_t = 16)]
    bucket_mib: usize,
    /// Largest frame payload, KiB.
    #[arg(long, default_value_t = 1024)]
    piece_kib: usize,
    /// Threads of each worker's async runtime (quinn's connection drivers
    /// and the collective); by default this machine's cores shared out
    /// among the workers, at least one each. With one, the worker's main
    /// thread does everything (a current-thread runtime): no hand-offs
    /// between threads, and no more threads than cores (BENCHMARKS.md,
    /// "Quiet-machine measurements of session 7").
    #[arg(long)]
    async_threads: Option<usize>,
    /// All-reduce algorithm (results are bit-identical whichever runs).
    #[arg(long, value_enum, default_value_t = AlgorithmArg::Auto)]
    algorithm: AlgorithmArg,
}

/// Arguments of the hidden `shoal bench allreduce-worker`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct AllreduceWorkerArgs {
    /// This worker's index in the ring.
    #[arg(long)]
    index: usize,
    #[command(flatten)]
    bench: AllreduceArgs,
}

/// Runs the benchmark: spawns the workers and prints their results.
pub(crate) fn run(args: AllreduceArgs) -> anyhow::Result<()> {
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let virtual_ranks = args.virtual_ranks.unwrap_or(args.workers);
    if virtual_ranks < args.workers {
        bail!(
            "--virtual-ranks ({virtual_ranks}) must be at least --workers ({})",
            args.workers
        );
    }
    let result = run_ring_processes(args.workers, |index| {
        worker_arguments("allreduce", "allreduce-worker", index)
    })?;
    let rows: Vec<serde_json::Value> = serde_json::from_value(result)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "# shoal ring all-reduce over QUIC: {} workers, {virtual_ranks} virtual ranks, f32 sum, median of {} calls",
        args.workers, args.reps
    );
    println!(
        "{:>12} {:>12} {:>10} {:>12} {:>12}",
        "size(B)", "count", "time(us)", "algbw(GB/s)", "busbw(GB/s)"
    );
    for row in &rows {
        let bytes = (row["mib"].as_f64().unwrap_or(0.0) * 1048576.0).round() as u64;
        println!(
            "{:>12} {:>12} {:>10.1} {:>12.3} {:>12.3}",
            bytes,
            bytes / 4,
            row["ms"].as_f64().unwrap_or(0.0) * 1e3,
            row["algbw_gbs"].as_f64().unwrap_or(0.0),
            row["busbw_gbs"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

/// One benchmark worker process.
pub(crate) fn run_worker(args: AllreduceWorkerArgs) -> anyhow::Result<()> {
    let async_threads = args.bench.async_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map_or(1, |cores| cores.get() / args.bench.workers.max(1))
    });
    let runtime = if async_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(async_threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(worker(args))
}

async fn worker(args: AllreduceWorkerArgs) -> anyhow::Result<()> {
    let bench = &args.bench;
    let virtual_ranks = bench.virtual_ranks.unwrap_or(bench.workers);
    let config = CollectiveConfig {
        bucket_elements: (bench.bucket_mib << 20) / 4,
        piece_elements: (bench.piece_kib << 10) / 4,
        timeout: Duration::from_secs(30),
        algorithm: bench.algorithm.into(),
        ..CollectiveConfig::default()
    };
    let (mut ring, endpoint) = join_ring(args.index, bench.workers, virtual_ranks, config).await?;
    let world = bench.workers;
    let mut rows = Vec::new();
    let mut sizes: Vec<usize> = bench.sizes_mib.iter().map(|mib| mib << 20).collect();
    sizes.push(LATENCY_BYTES);
    for bytes in sizes {
        let count = bytes / 4;
        let mut buffers: Vec<Vec<f32>> = ring.hosted().map(|_| vec![1.0f32; count]).collect();
        for _ in 0..2 {
            ring.all_reduce(&mut buffers).await?;
        }
        let reps = if bytes == LATENCY_BYTES {
            bench.reps.max(100)
        } else {
            bench.reps
        };
        let seconds = if bytes == LATENCY_BYTES {
            // Back to back, as nccl-tests time their iterations: the time
            // between barriers on worker 0 (the last to leave one) would
            // miss the hop its neighbours' values already made.
            let mut rounds = Vec::with_capacity(LATENCY_ROUNDS);
            for _ in 0..LATENCY_ROUNDS {
                ring.barrier().await?;
                let started = Instant::now();
                for _ in 0..reps {
                    ring.all_reduce(&mut buffers).await?;
                }
                rounds.push(started.elapsed().as_secs_f64() / reps as f64);
            }
            median(&mut rounds)
        } else {
            let mut times = Vec::with_capacity(reps);
            for _ in 0..reps {
                ring.barrier().await?;
                let started = Instant::now();
                ring.all_reduce(&mut buffers).await?;
                times.push(started.elapsed().as_secs_f64());
            }
            median(&mut times)
        };
        let mib = bytes as f64 / 1048576.0;
        let algbw = bytes as f64 / seconds / 1e9;
        let busbw = algbw * 2.0 * (world as f64 - 1.0) / world as f64;
        rows.push(serde_json::json!({
            "world": world,
            "mib": mib,
            "ms": round3(seconds * 1e3),
            "algbw_gbs": round3(algbw),
            "busbw_gbs": round3(busbw),
        }));
    }
    ring.barrier().await?;
    if args.index == 0 {
        print_result(&serde_json::Value::from(rows))?;
    }
    ring.shutdown().await;
    super::bench_ring::wait_for_closes(&endpoint).await;
    Ok(())
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
