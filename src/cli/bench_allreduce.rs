//! `shoal bench allreduce`: ring all-reduce over encrypted QUIC between worker
//! processes on this machine, reported in nccl-tests' terms (algbw = bytes /
//! time, busbw = algbw x 2(n-1)/n) and, with `--json`, in the row shape of
//! `gloo_allreduce.py` so the two compare line by line.
//!
//! The command re-invokes the current executable once per worker with the
//! hidden `bench allreduce-worker` subcommand; the workers print their ring
//! endpoint, receive the member list on stdin, form the ring and measure.
//! Times are medians over `--reps` calls after two warm-up calls, measured on
//! worker 0 between barriers (as the gloo anchor does).
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use protocol::Fingerprint;
use protocol::transport::{Identity, TransportTuning, bind_endpoint};
use worker::collective::{CollectiveConfig, Ring, RingLayout, RingMemberAddress, RingSpec};

/// Size of the small-message latency measurement, bytes.
const LATENCY_BYTES: usize = 4096;

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
    let executable = std::env::current_exe().context("locating the shoal executable")?;
    let mut children = Vec::new();
    for index in 0..args.workers {
        let mut command = Command::new(&executable);
        command
            .args(["bench", "allreduce-worker", "--index", &index.to_string()])
            .args(["--workers", &args.workers.to_string()])
            .args(["--sizes-mib", &join(&args.sizes_mib)])
            .args(["--reps", &args.reps.to_string()])
            .args(["--virtual-ranks", &virtual_ranks.to_string()])
            .args(["--bucket-mib", &args.bucket_mib.to_string()])
            .args(["--piece-kib", &args.piece_kib.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        children.push(command.spawn().context("starting a benchmark worker")?);
    }
    let mut readers = Vec::new();
    let mut members = Vec::new();
    for child in &mut children {
        let mut reader = BufReader::new(child.stdout.take().context("worker stdout")?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() != 3 || words[0] != "READY" {
            bail!("a benchmark worker said {line:?} instead of READY <address> <fingerprint>");
        }
        members.push(format!("{} {}", words[1], words[2]));
        readers.push(reader);
    }
    for child in &mut children {
        let mut stdin = child.stdin.take().context("worker stdin")?;
        writeln!(stdin, "{}", members.join(";"))?;
    }
    let mut rows = String::new();
    readers[0].read_line(&mut rows)?;
    for child in &mut children {
        let status = child.wait()?;
        if !status.success() {
            bail!("a benchmark worker failed: {status}");
        }
    }
    let rows: Vec<serde_json::Value> = serde_json::from_str(
        rows.strip_prefix("RESULT ")
            .with_context(|| format!("worker 0 printed {rows:?}"))?,
    )?;
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

fn join(values: &[usize]) -> String {
    values
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// One benchmark worker process.
pub(crate) fn run_worker(args: AllreduceWorkerArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(worker(args))
}

async fn worker(args: AllreduceWorkerArgs) -> anyhow::Result<()> {
    let bench = &args.bench;
    let tuning = TransportTuning::default();
    let identity = Identity::generate()?;
    let endpoint = bind_endpoint("127.0.0.1:0".parse()?, None, &tuning)?;
    println!(
        "READY {} {}",
        endpoint.local_addr()?,
        identity.fingerprint()
    );
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let virtual_ranks = bench.virtual_ranks.unwrap_or(bench.workers);
    let layout = RingLayout::even(virtual_ranks, bench.workers);
    let mut members = Vec::new();
    for (index, member) in line.trim().split(';').enumerate() {
        let words: Vec<&str> = member.split_whitespace().collect();
        anyhow::ensure!(words.len() == 2, "bad member line {member:?}");
        members.push(RingMemberAddress {
            address: words[0].parse()?,
            fingerprint: words[1].parse::<Fingerprint>()?,
            virtual_rank_count: layout.hosted(index).len(),
        });
    }
    let spec = RingSpec {
        job_id: 0,
        generation: 0,
        members,
        my_index: args.index,
    };
    let config = CollectiveConfig {
        bucket_elements: (bench.bucket_mib << 20) / 4,
        piece_elements: (bench.piece_kib << 10) / 4,
        timeout: Duration::from_secs(30),
    };
    let mut ring = Ring::connect(&endpoint, &identity, &spec, config, &tuning).await?;
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
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            ring.barrier().await?;
            let started = Instant::now();
            ring.all_reduce(&mut buffers).await?;
            times.push(started.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let seconds = times[times.len() / 2];
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
        println!("RESULT {}", serde_json::to_string(&rows)?);
        std::io::stdout().flush()?;
    }
    ring.shutdown().await;
    Ok(())
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
