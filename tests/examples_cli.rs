//! Every job spec under `examples/jobs/` runs as is with `shoal run` on data
//! from `shoal data gen` (a few steps each, `--steps 2`), and writes the
//! report folder: metrics, checkpoint, loss curves (PNG and SVG), and a
//! sample grid for the image generators.
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
