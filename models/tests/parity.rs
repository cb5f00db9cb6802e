//! Parity with PyTorch: the fixtures of `make_fixtures.py` (loss, every
//! gradient, the optimizer trajectory and the final parameters, within
//! rtol 1e-4 / atol 1e-5), and checkpoints with the reference's
//! `state_dict` keys and shapes.
//!
//! The fixture directory is `SHOAL_PARITY_DIR` when set (fixtures made anew
//! with `make_fixtures.py --seed N --scale K` are then checked without a
//! code change), else this crate's `tests/data/parity`. A fixture whose
//! model kind shoal does not know fails its test, listing what is missing.
use std::path::{Path, PathBuf};

use models::{Batch, Trainer, registry};
use ops::OptimizerConfig;
use ops::checkpoint::{self, TensorFile};

const RTOL: f32 = 1e-4;
const ATOL: f32 = 1e-5;

fn fixture_dir() -> PathBuf {
    match std::env::var_os("SHOAL_PARITY_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/parity"),
    }
}

fn fixture_files() -> Vec<PathBuf> {
    let dir = fixture_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fixture directory {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.safetensors in {}", dir.display());
    files
}

/// Compares `got` with `expected` elementwise; describes the worst mismatch.
fn compare(what: &str, got: &[f32], expected: &[f32], errors: &mut Vec<String>) {
    if got.len() != expected.len() {
        errors.push(format!(
            "{what}: {} values, fixture has {}",
            got.len(),
            expected.len()
        ));
        return;
    }
    let mut bad = 0;
    let mut worst = (0.0f32, 0usize);
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        let excess = (g - e).abs() - (ATOL + RTOL * e.abs());
        if excess > 0.0 || !g.is_finite() {
            bad += 1;
            if excess > worst.0 || !g.is_finite() {
                worst = (excess, i);
            }
        }
    }
    if bad > 0 {
        let i = worst.1;
        errors.push(format!(
            "{what}: {bad} of {} values off; worst at {i}: shoal {}, PyTorch {}",
            got.len(),
            got[i],
            expected[i]
        ));
    }
}

/// Checks one fixture file; `Err` lists every mismatch.
fn check_fixture(path: &Path) -> Result<(), String> {
    let what = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| format!("{what}: {e}"))?;
    let file = checkpoint::decode(&bytes, &what).map_err(|e| e.to_string())?;
    let kind = file.meta(&what, "model").map_err(|e| e.to_string())?;
    let config: serde_json::Value =
        serde_json::from_str(file.meta(&what, "config").map_err(|e| e.to_string())?)
            .map_err(|e| format!("{what}: config: {e}"))?;
    let optimizer_json: serde_json::Value =
        serde_json::from_str(file.meta(&what, "optimizer").map_err(|e| e.to_string())?)
            .map_err(|e| format!("{what}: optimizer: {e}"))?;
    let steps = optimizer_json["steps"]
        .as_u64()
        .ok_or_else(|| format!("{what}: optimizer metadata has no `steps`"))?;
    let optimizer = OptimizerConfig::from_json(&optimizer_json).map_err(|e| e.to_string())?;
    let mut model = registry::build(kind, &config, 0).map_err(|e| {
        format!(
            "{what}: cannot check model `{kind}`: {e}; fixture kinds not built by shoal: {}",
            missing_kinds().join(", ")
        )
    })?;
    let mut errors = Vec::new();
    load_fixture_parameters(&file, &what, "param/", model.parameters_mut())?;
    let batch = fixture_batch(&file);

    // Loss and gradients at the initial parameters.
    let objectives = model.objectives();
    let mut checked_grads = 0;
    for (index, objective) in objectives.iter().enumerate() {
        let (loss, gradients) =
            models::training::objective_gradients(model.as_ref(), index, &batch)
                .map_err(|e| format!("{what}: loss: {e}"))?;
        let expected = file
            .float(&what, objective.name)
            .map_err(|e| e.to_string())?;
        compare(objective.name, &[loss], expected.data(), &mut errors);
        for ((name, param), gradient) in model.parameters().iter().zip(&gradients) {
            if !name.starts_with(objective.parameter_prefix) {
                continue;
            }
            let key = format!("grad/{name}");
            let expected = file.float(&what, &key).map_err(|e| e.to_string())?;
            let zeros = vec![0.0; param.numel()];
            let got = gradient.as_ref().map_or(zeros.as_slice(), |g| g.data());
            compare(&key, got, expected.data(), &mut errors);
            checked_grads += 1;
        }
    }
    let fixture_grads = file
        .floats
        .keys()
        .filter(|k| k.starts_with("grad/"))
        .count();
    if checked_grads != fixture_grads {
        errors.push(format!(
            "checked {checked_grads} gradients, the fixture has {fixture_grads}"
        ));
    }

    // The optimizer trajectory and the final parameters.
    let mut trainer = Trainer::new(model.as_ref(), &optimizer);
    let mut trajectory = Vec::new();
    for _ in 0..steps {
        let losses = trainer
            .step(model.as_mut(), &batch)
            .map_err(|e| format!("{what}: step: {e}"))?;
        trajectory.extend(losses);
    }
    let expected = file.float(&what, "trajectory").map_err(|e| e.to_string())?;
    compare("trajectory", &trajectory, expected.data(), &mut errors);
    for (name, param) in model.parameters().iter() {
        let key = format!("final/{name}");
        let expected = file.float(&what, &key).map_err(|e| e.to_string())?;
        compare(&key, param.data(), expected.data(), &mut errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{what} ({kind}):\n  {}", errors.join("\n  ")))
    }
}

/// Sets `params` from the fixture's `<prefix><name>` tensors, requiring
/// exactly the model's names (the `state_dict` keys) and shapes.
fn load_fixture_parameters(
    file: &TensorFile,
    what: &str,
    prefix: &str,
    params: &mut ops::ParameterSet,
) -> Result<(), String> {
    let stripped = TensorFile {
        floats: file
            .floats
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone())))
            .collect(),
        ..TensorFile::default()
    };
    checkpoint::load_parameters(&stripped, what, params).map_err(|e| e.to_string())
}

fn fixture_batch(file: &TensorFile) -> Batch {
    let mut batch = Batch::new();
    for (name, t) in &file.floats {
        if let Some(input) = name.strip_prefix("input/") {
            batch.insert_float(input, t.clone());
        }
    }
    for (name, t) in &file.indices {
        if let Some(input) = name.strip_prefix("input/") {
            batch.insert_index(input, t.clone());
        }
    }
    batch
}

fn fixture_kind(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("fixture readable");
    let file = checkpoint::decode(&bytes, &path.display().to_string()).expect("fixture parses");
    file.metadata.get("model").cloned().unwrap_or_default()
}

/// Model kinds of fixtures that the registry does not build.
fn missing_kinds() -> Vec<String> {
    fixture_files()
        .iter()
        .map(|p| fixture_kind(p))
        .filter(|k| !registry::KINDS.contains(&k.as_str()))
        .collect()
}

/// Checks the fixture of model `kind` in the fixture directory.
#[track_caller]
fn check_kind(kind: &str) {
    let path = fixture_dir().join(format!("{kind}.safetensors"));
    if let Err(e) = check_fixture(&path) {
        panic!("{e}");
    }
}

#[test]
fn parity_mlp() {
    check_kind("mlp");
}

#[test]
fn parity_autoencoder() {
    check_kind("autoencoder");
}

#[test]
fn parity_vae() {
    check_kind("vae");
}

#[test]
fn parity_gan() {
    check_kind("gan");
}

#[test]
fn parity_barlow_twins() {
    check_kind("barlow_twins");
}

#[test]
fn parity_mae() {
    check_kind("mae");
}

#[test]
fn parity_lstm() {
    check_kind("lstm");
}

#[test]
fn parity_gru() {
    check_kind("gru");
}

#[test]
fn parity_qrnn() {
    check_kind("qrnn");
}

#[test]
fn parity_s4d() {
    check_kind("s4d");
}

#[test]
fn parity_mamba() {
    check_kind("mamba");
}

#[test]
fn parity_gcn() {
    check_kind("gcn");
}

/// A checkpoint saved by shoal has exactly the reference module's
/// `state_dict` keys and shapes (the fixtures' `param/*`), for every
/// registered model with a fixture.
#[test]
fn parity_checkpoint_keys_match_state_dict() {
    let dir = tempfile::tempdir().unwrap();
    for path in fixture_files() {
        let kind = fixture_kind(&path);
        if !registry::KINDS.contains(&kind.as_str()) {
            continue;
        }
        let file = checkpoint::decode(&std::fs::read(&path).unwrap(), "fixture").unwrap();
        let config: serde_json::Value = serde_json::from_str(&file.metadata["config"]).unwrap();
        let model = registry::build(&kind, &config, 7).unwrap();
        let target = dir.path().join(format!("{kind}.safetensors"));
        checkpoint::save(&target, model.parameters(), &[], &Default::default()).unwrap();
        let saved = checkpoint::load(&target).unwrap();
        let ours: Vec<(String, Vec<usize>)> = saved
            .floats
            .iter()
            .map(|(n, t)| (n.clone(), t.dims().to_vec()))
            .collect();
        let reference: Vec<(String, Vec<usize>)> = file
            .floats
            .iter()
            .filter_map(|(n, t)| {
                n.strip_prefix("param/")
                    .map(|n| (n.to_string(), t.dims().to_vec()))
            })
            .collect();
        assert_eq!(ours, reference, "{kind}: checkpoint keys and shapes");
        // And in state_dict order in the model itself.
        let order: Vec<&str> = model.parameters().names().collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            reference
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
        );
    }
}

/// Every fixture of the directory, whatever its model: fixtures made anew
/// with `make_fixtures.py --seed N --scale K` (point `SHOAL_PARITY_DIR` at
/// them) are checked without a code change, and a fixture of a kind shoal
/// does not build fails here.
#[test]
fn parity_every_fixture() {
    let missing = missing_kinds();
    let failures: Vec<String> = fixture_files()
        .iter()
        .filter_map(|path| check_fixture(path).err())
        .collect();
    assert!(
        failures.is_empty() && missing.is_empty(),
        "model kinds without an implementation: {missing:?}\n{}",
        failures.join("\n")
    );
}
