//! `shoal run` from the user's side: a job spec trains in single-node mode,
//! gives the same checkpoint on 1 and 3 workers, and bad specs are refused
//! with a message naming the file and the field.
use std::path::{Path, PathBuf};
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
        std::env::temp_dir().join(format!("shoal-run-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

fn write_job(directory: &Path, body: &str) -> PathBuf {
    let path = directory.join("job.toml");
    std::fs::write(&path, body).unwrap();
    path
}

const MLP_JOB: &str = r#"
name = "mlp-test"
seed = 5
global_batch = 48
virtual_ranks = 3
steps = 8
[model]
kind = "mlp"
config = { d_in = 64, d_hidden = 16, n_classes = 10 }
[data]
paths = ["digits.parquet"]
columns = { x = "pixels", label = "label" }
[inputs]
scale = 0.0625
[optimizer]
kind = "adamw"
lr = 1e-2
"#;

fn checkpoint_hash(out: &Path) -> String {
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["steps"].as_array().unwrap().len(), 8);
    assert!(out.join("checkpoint.safetensors").exists());
    metrics["checkpoint_sha256"].as_str().unwrap().to_string()
}

#[test]
fn a_job_gives_the_same_checkpoint_on_one_and_three_workers() {
    let directory = scratch("same");
    let data = directory.join("digits.parquet");
    let generated = shoal(&["data", "gen", "digits", "--out", data.to_str().unwrap()]);
    assert!(generated.status.success(), "{generated:?}");
    let job = write_job(&directory, MLP_JOB);
    let mut hashes = Vec::new();
    for workers in ["1", "3"] {
        let out = directory.join(format!("out-{workers}"));
        let run = shoal(&[
            "run",
            job.to_str().unwrap(),
            "--workers",
            workers,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            run.status.success(),
            "{workers} workers: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        hashes.push(checkpoint_hash(&out));
    }
    assert_eq!(hashes[0], hashes[1]);
}

#[track_caller]
fn check_refused(body: &str, expected: &[&str]) {
    let directory = scratch("refused");
    let job = write_job(&directory, body);
    let run = shoal(&["run", job.to_str().unwrap(), "--workers", "1"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "accepted: {body}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for part in expected {
        assert!(stderr.contains(part), "{stderr:?} lacks {part:?}");
    }
}

#[test]
fn bad_specs_are_refused_with_the_file_and_the_field() {
    check_refused("this is not toml = = =", &["job.toml"]);
    check_refused(
        &MLP_JOB.replace("global_batch = 48", "global_batch = 47"),
        &["job.toml", "global_batch"],
    );
    check_refused(
        &MLP_JOB.replace("kind = \"mlp\"", "kind = \"transformer\""),
        &["model.kind", "transformer"],
    );
    // The data file does not exist in the scratch folder.
    check_refused(MLP_JOB, &["digits.parquet"]);
}

#[test]
fn too_many_workers_are_refused() {
    let directory = scratch("workers");
    let data = directory.join("digits.parquet");
    assert!(
        shoal(&["data", "gen", "digits", "--out", data.to_str().unwrap()])
            .status
            .success()
    );
    let job = write_job(&directory, MLP_JOB);
    let run = shoal(&["run", job.to_str().unwrap(), "--workers", "4"]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("4 workers cannot host 3 virtual ranks"),
        "{stderr}"
    );
}
