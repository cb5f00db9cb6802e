//! Training-step time of the registered models on `bench/bench_configs.json`
//! (the same loop as `shoal bench models`, without building the whole
//! workspace): `cargo run --release -p models --example bench_step -- THREADS REPS [ONLY]`.
use std::time::Instant;

use models::Trainer;
use ops::{OptimizerConfig, Par};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).map_or(1, |a| a.parse().expect("threads"));
    let reps: usize = args.get(2).map_or(10, |a| a.parse().expect("reps"));
    let only: Vec<&str> = args.get(3).map_or(vec![], |a| a.split(',').collect());
    let text = include_str!("../../bench/bench_configs.json");
    let specs: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let par = if threads == 1 {
        Par::Seq
    } else {
        Par::rayon(threads)
    };
    let mut result = serde_json::Map::new();
    result.insert("_threads".into(), threads.into());
    for (name, spec) in &specs {
        if name.starts_with('_')
            || !models::registry::KINDS.contains(&name.as_str())
            || (!only.is_empty() && !only.contains(&name.as_str()))
        {
            continue;
        }
        let (ms, samples) = pool.install(|| {
            ops::with_parallelism(par, || {
                let mut case = models::bench::case(name, spec, 0).unwrap();
                let mut trainer = Trainer::new(case.model.as_ref(), &OptimizerConfig::adamw(1e-3));
                for _ in 0..3 {
                    trainer.step(case.model.as_mut(), &case.batch).unwrap();
                }
                let mut times: Vec<f64> = (0..reps)
                    .map(|_| {
                        let start = Instant::now();
                        trainer.step(case.model.as_mut(), &case.batch).unwrap();
                        start.elapsed().as_secs_f64()
                    })
                    .collect();
                times.sort_by(f64::total_cmp);
                let n = times.len();
                let median = if n % 2 == 1 {
                    times[n / 2]
                } else {
                    (times[n / 2 - 1] + times[n / 2]) / 2.0
                };
                (median * 1e3, case.samples)
            })
        });
        let entry = serde_json::json!({
            "step_ms": (ms * 1e3).round() / 1e3,
            "samples_per_s": (samples as f64 / (ms / 1e3) * 10.0).round() / 10.0,
        });
        eprintln!("{name} {entry}");
        result.insert(name.clone(), entry);
    }
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
}
