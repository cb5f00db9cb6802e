//! `shoal data gen`, `shoal data inspect` and `shoal bench data` from the
//! user's side: run the binary, check what it prints and what it refuses.
use std::path::PathBuf;
use std::process::{Command, Output};

fn shoal(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(arguments)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the shoal binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let directory =
        std::env::temp_dir().join(format!("shoal-data-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

#[track_caller]
fn check_ok(arguments: &[&str], expected: &[&str]) -> String {
    let output = shoal(arguments);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{arguments:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for part in expected {
        assert!(
            stdout.contains(part),
            "{arguments:?}: {stdout:?} lacks {part:?}"
        );
    }
    stdout
}

#[test]
fn gen_inspect_and_bench() {
    let directory = scratch("gen");
    let file = directory.join("copy.parquet");
    let file = file.to_str().unwrap();
    check_ok(
        &[
            "data",
            "gen",
            "selective-copy",
            "--out",
            file,
            "--rows",
            "300",
            "--seed",
            "4",
        ],
        &["copy.parquet"],
    );
    let report = check_ok(
        &["data", "inspect", file],
        &[
            "fingerprint: ",
            "rows: 300",
            "tokens: list<int64>",
            "sequence (models: lstm, gru, qrnn, s4d, mamba): fits",
        ],
    );
    // Same task, rows and seed: same fingerprint.
    let again = directory.join("again.parquet");
    check_ok(
        &[
            "data",
            "gen",
            "selective-copy",
            "--out",
            again.to_str().unwrap(),
            "--rows",
            "300",
            "--seed",
            "4",
        ],
        &[],
    );
    assert_eq!(std::fs::read(file).unwrap(), std::fs::read(&again).unwrap());
    assert!(report.contains("does not fit"));

    let graph = directory.join("graph.parquet");
    check_ok(
        &[
            "data",
            "gen",
            "sbm-graph",
            "--out",
            graph.to_str().unwrap(),
            "--rows",
            "100",
        ],
        &["graph.parquet", "graph.edges.parquet"],
    );
    check_ok(
        &[
            "data",
            "inspect",
            directory.join("graph.edges.parquet").to_str().unwrap(),
        ],
        &["graph-edges (models: gcn): fits [src, dst]"],
    );

    let bench = check_ok(
        &[
            "bench",
            "data",
            file,
            "--task",
            "sequence",
            "--repeats",
            "1",
            "--global-batch",
            "100",
            "--virtual-ranks",
            "4",
        ],
        &[],
    );
    let json: serde_json::Value = serde_json::from_str(bench.trim()).unwrap();
    assert_eq!(json["rows"], 300);
    assert!(json["rows_per_second"].as_f64().unwrap() > 0.0);
    assert!(json["mb_per_second"].as_f64().unwrap() > 0.0);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn bad_input_is_an_error_message_not_a_panic() {
    let directory = scratch("bad");
    let text = directory.join("notes.parquet");
    std::fs::write(&text, "not parquet at all").unwrap();
    for (arguments, expected) in [
        (
            vec!["data", "inspect", text.to_str().unwrap()],
            "not a readable Parquet file",
        ),
        (
            vec!["data", "inspect", "/nonexistent/x.parquet"],
            "cannot open /nonexistent/x.parquet",
        ),
        (
            vec!["data", "gen", "nope", "--out", "x.parquet"],
            "unknown task \"nope\"",
        ),
        (
            vec![
                "bench",
                "data",
                text.to_str().unwrap(),
                "--task",
                "sequence",
            ],
            "notes.parquet",
        ),
    ] {
        let output = shoal(&arguments);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{arguments:?} succeeded");
        assert!(
            stderr.contains(expected),
            "{arguments:?}: {stderr:?} lacks {expected:?}"
        );
        assert!(!stderr.contains("panicked"), "{arguments:?}: {stderr}");
    }
    std::fs::remove_dir_all(&directory).unwrap();
}
