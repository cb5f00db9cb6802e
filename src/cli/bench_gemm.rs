//! `shoal bench gemm`: f32 matrix-product throughput through `ops` (the plain
//! product and the autodiff path, forward and backward) against faer called
//! directly, at square sizes.
use std::time::Instant;

use anyhow::{Context, bail};
use faer::{Accum, MatMut, MatRef, Par};
use ops::Tensor;

/// Options of `shoal bench gemm`.
#[derive(clap::Args)]
pub(crate) struct GemmArgs {
    /// Square sizes n to measure (an n x n by n x n product).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "64,128,256,512,1024,2048"
    )]
    sizes: Vec<usize>,
    /// Threads: 1 runs sequentially (`Par::Seq`), more uses a rayon pool
    /// of that many threads (`Par::rayon(n)`).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Timed samples per measurement (the median is reported).
    #[arg(long, default_value_t = 11)]
    samples: usize,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// One size's figures, in GFLOP/s.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GemmFigures {
    pub(crate) n: usize,
    /// `C = A B` by faer into a preallocated `C`.
    pub(crate) faer_forward: f64,
    /// `Tensor::matmul` of two constants (no graph).
    pub(crate) ops_forward: f64,
    /// The three products of a training step (`C = A B`, `dA = dC B^T`,
    /// `dB = A^T dC`) by faer into preallocated buffers.
    pub(crate) faer_train: f64,
    /// `A.matmul(B)` of two parameters, then `backward`: the same three
    /// products through the autodiff path.
    pub(crate) ops_train: f64,
}

/// Median seconds per call of `baseline` and of `candidate`, over
/// `samples` timed samples each, taken alternately (baseline, candidate,
/// baseline, ...) so that drifts of the machine's speed hit both alike.
/// Each sample repeats its function enough times to last about 2 ms.
fn paired_median_seconds(
    samples: usize,
    mut baseline: impl FnMut(),
    mut candidate: impl FnMut(),
) -> (f64, f64) {
    let repeats_for = |f: &mut dyn FnMut()| {
        f(); // warm up (page faults, packing buffers, the thread pool)
        let start = Instant::now();
        f();
        let once = start.elapsed().as_secs_f64().max(1e-9);
        ((2e-3 / once).ceil() as usize).clamp(1, 10_000)
    };
    let baseline_repeats = repeats_for(&mut baseline);
    let candidate_repeats = repeats_for(&mut candidate);
    let time = |f: &mut dyn FnMut(), repeats: usize| {
        let start = Instant::now();
        for _ in 0..repeats {
            f();
        }
        start.elapsed().as_secs_f64() / repeats as f64
    };
    let mut baseline_times = Vec::new();
    let mut candidate_times = Vec::new();
    for _ in 0..samples.max(1) {
        baseline_times.push(time(&mut baseline, baseline_repeats));
        candidate_times.push(time(&mut candidate, candidate_repeats));
    }
    let median = |mut times: Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    (median(baseline_times), median(candidate_times))
}

fn deterministic_values(count: usize, seed: u64) -> Vec<f32> {
    (0..count)
        .map(|i| {
            let h = (i as u64 + seed * 7919 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            ((h >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// Measures one size at parallelism `par` (which `ops` also uses).
pub(crate) fn measure(n: usize, par: Par, samples: usize) -> GemmFigures {
    let a = deterministic_values(n * n, 1);
    let b = deterministic_values(n * n, 2);
    let seed = deterministic_values(n * n, 3);
    let flops = 2.0 * (n as f64).powi(3);
    let gflops = |seconds: f64, products: f64| products * flops / seconds / 1e9;

    let mut c = vec![0.0f32; n * n];
    let mut da = vec![0.0f32; n * n];
    let mut db = vec![0.0f32; n * n];
    // Row-major views of the same buffers `ops` reads.
    let (am, bm, gm) = (
        MatRef::from_row_major_slice(&a, n, n),
        MatRef::from_row_major_slice(&b, n, n),
        MatRef::from_row_major_slice(&seed, n, n),
    );
    let (ta, tb) = (
        Tensor::from_vec([n, n], a.clone()),
        Tensor::from_vec([n, n], b.clone()),
    );
    let (pa, pb) = (ta.as_parameter(), tb.as_parameter());
    let seed_tensor = Tensor::from_vec([n, n], seed.clone());
    let (faer_forward, ops_forward, faer_train, ops_train) = ops::with_parallelism(par, || {
        let (faer_forward, ops_forward) = paired_median_seconds(
            samples,
            || {
                let out = MatMut::from_row_major_slice_mut(&mut c, n, n);
                faer::linalg::matmul::matmul(out, Accum::Replace, am, bm, 1.0, par);
            },
            || {
                std::hint::black_box(ta.matmul(&tb));
            },
        );
        let (faer_train, ops_train) = paired_median_seconds(
            samples,
            || {
                let out = MatMut::from_row_major_slice_mut(&mut c, n, n);
                faer::linalg::matmul::matmul(out, Accum::Replace, am, bm, 1.0, par);
                let out = MatMut::from_row_major_slice_mut(&mut da, n, n);
                faer::linalg::matmul::matmul(out, Accum::Replace, gm, bm.transpose(), 1.0, par);
                let out = MatMut::from_row_major_slice_mut(&mut db, n, n);
                faer::linalg::matmul::matmul(out, Accum::Replace, am.transpose(), gm, 1.0, par);
            },
            || {
                let out = pa.matmul(&pb);
                std::hint::black_box(out.backward_with(seed_tensor.clone()));
            },
        );
        (faer_forward, ops_forward, faer_train, ops_train)
    });
    GemmFigures {
        n,
        faer_forward: gflops(faer_forward, 1.0),
        ops_forward: gflops(ops_forward, 1.0),
        faer_train: gflops(faer_train, 3.0),
        ops_train: gflops(ops_train, 3.0),
    }
}

/// Runs `shoal bench gemm` and prints its figures.
pub(crate) fn run(args: GemmArgs) -> anyhow::Result<()> {
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if let Some(&bad) = args.sizes.iter().find(|&&n| n == 0 || n > 8192) {
        bail!("--sizes: {bad} is outside 1..=8192");
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .context("building the rayon thread pool")?;
    let par = if args.threads == 1 {
        Par::Seq
    } else {
        Par::rayon(args.threads)
    };
    let figures: Vec<GemmFigures> = pool.install(|| {
        args.sizes
            .iter()
            .map(|&n| measure(n, par, args.samples))
            .collect()
    });
    if args.json {
        let results: Vec<serde_json::Value> = figures
            .iter()
            .map(|f| {
                serde_json::json!({
                    "n": f.n,
                    "faer_forward_gflops": f.faer_forward,
                    "ops_forward_gflops": f.ops_forward,
                    "forward_ratio": f.ops_forward / f.faer_forward,
                    "faer_train_gflops": f.faer_train,
                    "ops_train_gflops": f.ops_train,
                    "train_ratio": f.ops_train / f.faer_train,
                })
            })
            .collect();
        let document = serde_json::json!({
            "bench": "gemm",
            "threads": args.threads,
            "results": results,
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        println!(
            "GEMM f32, {} thread(s), GFLOP/s (median of {} samples)",
            args.threads, args.samples
        );
        println!(
            "{:>6} {:>10} {:>10} {:>7} {:>11} {:>11} {:>7}",
            "n", "faer fwd", "ops fwd", "ratio", "faer train", "ops train", "ratio"
        );
        for f in &figures {
            println!(
                "{:>6} {:>10.1} {:>10.1} {:>7.3} {:>11.1} {:>11.1} {:>7.3}",
                f.n,
                f.faer_forward,
                f.ops_forward,
                f.ops_forward / f.faer_forward,
                f.faer_train,
                f.ops_train,
                f.ops_train / f.faer_train
            );
        }
    }
    Ok(())
}
