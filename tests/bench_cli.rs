//! `shoal bench train` and `shoal bench allreduce` from the user's side:
//! worker processes on this machine, JSON in the anchors' shapes, clear
//! refusals. No timing is asserted, only the shape and sanity of the output.
mod common;

use common::shoal;

fn run(arguments: &[&str]) -> (bool, String, String) {
    let output = shoal()
        .args(arguments)
        .output()
        .expect("the shoal binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bench_train_prints_the_ddp_anchors_shape_with_the_split_of_the_step() {
    let arguments = [
        "bench",
        "train",
        "--workers",
        "2",
        "--threads-per-worker",
        "1",
        "--only",
        "mlp,gan",
        "--reps",
        "2",
        "--json",
    ];
    let (ok, stdout, stderr) = run(&arguments);
    assert!(ok, "{arguments:?} failed: {stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(json["_world"], 2);
    assert_eq!(json["_threads_per_rank"], 1);
    assert_eq!(json["_virtual_ranks"], 2);
    for model in ["mlp", "gan"] {
        let row = &json[model];
        let field = |key: &str| {
            row[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{model}: no {key} in {row}"))
        };
        let step = field("step_ms");
        assert!(step > 0.0, "{model}: {row}");
        // samples_per_s = global batch (256 in bench_configs.json) / step.
        let samples = field("samples_per_s");
        assert!(
            (samples * step / 1e3 - 256.0).abs() < 1.0,
            "{model}: {samples} samples/s at {step} ms is not 256 per step"
        );
        for part in ["compute_ms", "all_reduce_exposed_ms", "data_wait_ms"] {
            assert!(field(part) >= 0.0, "{model}: {part} in {row}");
        }
        assert!(field("compute_ms") > 0.0, "{model}: {row}");
    }
}

#[test]
fn bench_train_on_one_worker_with_a_table_and_several_virtual_ranks() {
    let (ok, stdout, stderr) = run(&[
        "bench",
        "train",
        "--workers",
        "1",
        "--threads-per-worker",
        "2",
        "--virtual-ranks",
        "4",
        "--only",
        "vae",
        "--reps",
        "1",
        "--bucket-mib",
        "0.01",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("1 workers x 2 threads, 4 virtual ranks"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|line| line.starts_with("vae ")),
        "{stdout}"
    );
}

#[test]
fn bench_train_refuses_what_it_cannot_measure() {
    for (arguments, expected) in [
        (vec!["--only", "gcn"], "gcn trains one graph"),
        (vec!["--only", "nope"], "no benchmark configuration `nope`"),
        (
            vec!["--workers", "3", "--only", "mlp"],
            "does not split over 3 virtual ranks",
        ),
        (
            vec!["--workers", "2", "--virtual-ranks", "1"],
            "must be at least --workers",
        ),
        (vec!["--reps", "0"], "--reps must be at least 1"),
    ] {
        let mut all = vec!["bench", "train"];
        all.extend(arguments.iter().copied());
        let (ok, _, stderr) = run(&all);
        assert!(!ok, "{all:?} succeeded");
        assert!(
            stderr.contains(expected),
            "{all:?}: {stderr:?} lacks {expected:?}"
        );
    }
}

#[test]
fn bench_allreduce_prints_gloo_shaped_rows() {
    let (ok, stdout, stderr) = run(&[
        "bench",
        "allreduce",
        "--workers",
        "2",
        "--sizes-mib",
        "1",
        "--reps",
        "2",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout).expect("JSON rows");
    // The 1 MiB row, then the 4 KiB latency row.
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        assert_eq!(row["world"], 2);
        for key in ["mib", "ms", "algbw_gbs", "busbw_gbs"] {
            assert!(row[key].as_f64().is_some(), "{key} in {row}");
        }
    }
    assert_eq!(rows[0]["mib"], 1.0);
}
