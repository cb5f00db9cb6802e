//! `shoal run` from the user's side: a job spec trains in single-node mode,
//! gives the same checkpoint on 1 and 3 workers (a graph job on 1 and 2),
//! scores its `[evaluation]` data on the interval, and bad specs are
//! refused with a message naming the file and the field.
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
    let hashes: Vec<String> = run_on(&directory, &job, &["1", "3"])
        .iter()
        .map(|out| checkpoint_hash(out))
        .collect();
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

/// The steps of `metrics.json` in `out`.
fn metric_steps(out: &Path) -> Vec<serde_json::Value> {
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    metrics["steps"].as_array().unwrap().clone()
}

/// Runs `job` on each worker count of `workers`; returns each run's output
/// folder.
fn run_on(directory: &Path, job: &Path, workers: &[&str]) -> Vec<PathBuf> {
    workers
        .iter()
        .map(|count| {
            let out = directory.join(format!("out-{count}"));
            let run = shoal(&[
                "run",
                job.to_str().unwrap(),
                "--workers",
                count,
                "--out",
                out.to_str().unwrap(),
            ]);
            assert!(
                run.status.success(),
                "{count} workers: {}",
                String::from_utf8_lossy(&run.stderr)
            );
            out
        })
        .collect()
}

#[test]
fn a_graph_job_trains_on_networked_workers_with_one_checkpoint_for_any_count() {
    let directory = scratch("graph");
    let data = directory.join("sbm.parquet");
    let generated = shoal(&[
        "data",
        "gen",
        "sbm-graph",
        "--rows",
        "200",
        "--out",
        data.to_str().unwrap(),
    ]);
    assert!(generated.status.success(), "{generated:?}");
    let job = write_job(
        &directory,
        r#"
name = "gcn-test"
seed = 3
global_batch = 4
virtual_ranks = 2
steps = 8
[model]
kind = "gcn"
config = { d_in = 16, d_hidden = 8, n_classes = 4 }
[data]
paths = ["sbm.parquet"]
columns = { x = "x", src = "src", dst = "dst", label = "label", train_mask = "train_mask" }
[evaluation]
paths = ["sbm.parquet"]
interval_steps = 4
[optimizer]
kind = "adamw"
lr = 1e-2
"#,
    );
    let outs = run_on(&directory, &job, &["1", "2"]);
    assert_eq!(checkpoint_hash(&outs[0]), checkpoint_hash(&outs[1]));
    // Held-out nodes scored after steps 4 and 8 only, the same on both.
    let (one, two) = (metric_steps(&outs[0]), metric_steps(&outs[1]));
    for (index, (a, b)) in one.iter().zip(&two).enumerate() {
        let scored = a["evaluation"].as_object().unwrap();
        if index == 3 || index == 7 {
            let loss = scored["eval_loss"].as_f64().unwrap();
            assert!(loss.is_finite() && loss > 0.0, "step {index}: {loss}");
        } else {
            assert!(scored.is_empty(), "step {index}: {scored:?}");
        }
        assert_eq!(a["evaluation"], b["evaluation"], "step {index}");
        assert_eq!(a["losses"], b["losses"], "step {index}");
    }
}

#[test]
fn evaluation_scores_held_out_data_on_its_interval_and_at_the_end() {
    let directory = scratch("evaluation");
    for (arguments, file) in [
        (&["--rows", "1500"][..], "digits.parquet"),
        (&["--skip", "1500"][..], "digits-test.parquet"),
    ] {
        let out = directory.join(file);
        let mut command = vec!["data", "gen", "digits", "--out", out.to_str().unwrap()];
        command.extend_from_slice(arguments);
        let generated = shoal(&command);
        assert!(generated.status.success(), "{generated:?}");
    }
    let body =
        format!("{MLP_JOB}[evaluation]\npaths = [\"digits-test.parquet\"]\ninterval_steps = 3\n");
    let job = write_job(&directory, &body);
    let outs = run_on(&directory, &job, &["1", "3"]);
    assert_eq!(checkpoint_hash(&outs[0]), checkpoint_hash(&outs[1]));
    let steps = metric_steps(&outs[0]);
    let scored: Vec<usize> = steps
        .iter()
        .enumerate()
        .filter(|(_, step)| !step["evaluation"].as_object().unwrap().is_empty())
        .map(|(index, _)| index)
        .collect();
    // After steps 3 and 6, and after the last (8th).
    assert_eq!(scored, vec![2, 5, 7]);
    let losses: Vec<f64> = scored
        .iter()
        .map(|&index| steps[index]["evaluation"]["eval_loss"].as_f64().unwrap())
        .collect();
    assert!(losses.iter().all(|loss| loss.is_finite()), "{losses:?}");
    // Training at lr 1e-2 lowers the held-out loss from its start (ln 10).
    assert!(losses[2] < (10f64).ln(), "{losses:?}");
    // The same scores on 1 and 3 workers.
    let three = metric_steps(&outs[1]);
    for (index, (a, b)) in steps.iter().zip(&three).enumerate() {
        assert_eq!(a["evaluation"], b["evaluation"], "step {index}");
        assert_eq!(a["losses"], b["losses"], "step {index}");
    }

    // An evaluation file that does not exist is refused before training.
    let missing =
        format!("{MLP_JOB}[evaluation]\npaths = [\"nowhere.parquet\"]\ninterval_steps = 3\n");
    let job = write_job(&directory, &missing);
    let run = shoal(&[
        "run",
        job.to_str().unwrap(),
        "--out",
        directory.join("missing").to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("nowhere.parquet"), "{stderr}");
}

#[test]
fn a_job_resumed_at_its_last_step_trains_nothing_and_keeps_the_checkpoint() {
    let directory = scratch("resume-finished");
    let data = directory.join("digits.parquet");
    let generated = shoal(&["data", "gen", "digits", "--out", data.to_str().unwrap()]);
    assert!(generated.status.success(), "{generated:?}");
    let job = write_job(&directory, MLP_JOB);
    let first = run_on(&directory, &job, &["1"]).remove(0);
    let checkpoint = first.join("checkpoint.safetensors");
    let resumed = format!(
        "{MLP_JOB}[checkpoint]\ninitial = {:?}\n",
        checkpoint.display().to_string()
    );
    let job = write_job(&directory, &resumed);
    let out = directory.join("resumed");
    let run = shoal(&["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stderr).contains("no step was trained"));
    assert_eq!(
        std::fs::read(out.join("checkpoint.safetensors")).unwrap(),
        std::fs::read(&checkpoint).unwrap()
    );
}
