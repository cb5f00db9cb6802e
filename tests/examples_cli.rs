//! Every job spec under `examples/jobs/` runs as is with `shoal run` on data
//! from `shoal data gen` (a few steps each, `--steps 2`), and writes the
//! report folder: metrics, checkpoint, loss curves (PNG and SVG), and a
//! sample grid for the image generators. `shoal demo --steps 3` trains its
//! four jobs and writes its summary and report folders.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn shoal(directory: &Path, arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(arguments)
        .current_dir(directory)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the shoal binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let directory =
        std::env::temp_dir().join(format!("shoal-examples-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

#[track_caller]
fn check_succeeded(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| bytes.starts_with(b"\x89PNG\r\n\x1a\n"))
}

#[test]
fn every_example_runs_on_generated_data_and_writes_its_report() {
    let directory = scratch("all");
    // The data the examples name, as their comments say to make it.
    for (task, file) in [
        ("digits", "digits"),
        ("selective-copy", "selective-copy"),
        ("gaussian-ring", "gaussian-ring"),
        ("sbm-graph", "sbm-graph"),
    ] {
        let out = format!("data/{file}.parquet");
        check_succeeded(
            &format!("shoal data gen {task}"),
            &shoal(&directory, &["data", "gen", task, "--out", &out]),
        );
    }
    // The held-out digits of the MLP example's evaluation.
    check_succeeded(
        "shoal data gen digits --skip 1500",
        &shoal(
            &directory,
            &[
                "data",
                "gen",
                "digits",
                "--skip",
                "1500",
                "--out",
                "data/digits-test.parquet",
            ],
        ),
    );
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/jobs");
    let mut specs: Vec<PathBuf> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    specs.sort();
    assert!(specs.len() >= 12, "examples: {specs:?}");
    for spec in &specs {
        let stem = spec.file_stem().unwrap().to_string_lossy().into_owned();
        let out = directory.join("out").join(&stem);
        let run = shoal(
            &directory,
            &[
                "run",
                spec.to_str().unwrap(),
                "--steps",
                "2",
                "--workers",
                "2",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        check_succeeded(&format!("shoal run {}", spec.display()), &run);
        let metrics: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap())
                .unwrap();
        let steps = metrics["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 2, "{stem}");
        for step in steps {
            for (name, loss) in step["losses"].as_object().unwrap() {
                assert!(loss.as_f64().unwrap().is_finite(), "{stem}: {name} {loss}");
            }
        }
        assert!(out.join("checkpoint.safetensors").exists(), "{stem}");
        assert!(is_png(&out.join("loss.png")), "{stem}: loss.png");
        let svg = std::fs::read_to_string(out.join("loss.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("step"), "{stem}");
        // The VAE's decoder makes 8x8 images; the GAN example is on 2-D
        // points, which are no images.
        assert_eq!(
            out.join("samples.png").exists(),
            stem == "vae",
            "{stem}: samples.png"
        );
    }
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn the_demo_trains_its_four_jobs_and_writes_the_summary_and_reports() {
    let directory = scratch("demo");
    let out = directory.join("demo");
    let run = shoal(
        &directory,
        &[
            "demo",
            "--steps",
            "3",
            "--plain",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    check_succeeded("shoal demo --steps 3", &run);
    let printed = String::from_utf8_lossy(&run.stdout);
    for model in ["mamba", "vae", "gan", "gcn"] {
        assert!(
            printed.contains(model),
            "the summary names {model}: {printed}"
        );
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let jobs = summary.as_array().or_else(|| summary["jobs"].as_array());
    let jobs = jobs.expect("summary.json lists the jobs");
    assert_eq!(jobs.len(), 4, "{summary:#}");
    for job in [
        "mamba-selective-copy",
        "vae-digits",
        "gan-digits",
        "gcn-sbm",
    ] {
        let folder = out.join(job);
        assert!(folder.join("checkpoint.safetensors").exists(), "{job}");
        assert!(is_png(&folder.join("loss.png")), "{job}: loss.png");
        assert!(folder.join("score.json").exists(), "{job}: score.json");
    }
    assert!(is_png(&out.join("vae-digits/samples.png")));
    assert!(is_png(&out.join("gan-digits/samples.png")));
    // The last step is an evaluation step of Mamba's and the GCN's specs.
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("gcn-sbm/metrics.json")).unwrap())
            .unwrap();
    let last = metrics["steps"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["evaluation"]["eval_loss"]
            .as_f64()
            .unwrap()
            .is_finite(),
        "{last:#}"
    );
    let _ = std::fs::remove_dir_all(&directory);
}
