//! Checkpoint files: round trips, atomic replacement, and clear errors on
//! corrupt, truncated or mismatched files.
use std::collections::BTreeMap;

use ops::checkpoint::{self, decode, encode, load, load_parameters, save};
use ops::optim::{Optimizer, OptimizerConfig};
use ops::{OpsError, ParameterSet, Tensor};

fn params() -> ParameterSet {
    let mut p = ParameterSet::new();
    p.insert(
        "fc1.weight",
        Tensor::parameter([2, 3], vec![1.0, -2.0, 3.5, 0.25, 0.0, -1e-7]),
    );
    p.insert("fc1.bias", Tensor::parameter([2], vec![0.5, -0.5]));
    p.insert("scale", Tensor::parameter(ops::Shape::SCALAR, vec![7.0]));
    p
}

fn metadata() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("model".to_string(), "mlp".to_string()),
        ("step".to_string(), "12".to_string()),
        ("config".to_string(), r#"{"d_in": 3}"#.to_string()),
    ])
}

#[test]
fn save_and_load_round_trip_with_optimizer_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    let mut original = params();
    let mut optimizer = Optimizer::new(OptimizerConfig::adamw(0.1));
    let grads: Vec<Option<Tensor>> = original
        .iter()
        .map(|(_, t)| Some(Tensor::ones(t.shape())))
        .collect();
    optimizer.step_with_gradients(&mut original, &grads);
    save(&path, &original, &optimizer.state_tensors(), &metadata()).unwrap();
    // Saving again replaces the file atomically and leaves no temporary behind.
    save(&path, &original, &optimizer.state_tensors(), &metadata()).unwrap();
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1);

    let file = load(&path).unwrap();
    assert_eq!(file.metadata, metadata());
    let mut restored = params();
    load_parameters(&file, "ckpt", &mut restored).unwrap();
    for ((name, a), (_, b)) in original.iter().zip(restored.iter()) {
        assert_eq!(a.data(), b.data(), "{name}");
        assert_eq!(a.shape(), b.shape(), "{name}");
        assert!(b.is_leaf_parameter());
    }
    let state = file.optimizer_tensors();
    assert!(state.iter().any(|(n, _)| n == "fc1.weight/exp_avg_sq"));
    let mut resumed = Optimizer::new(OptimizerConfig::adamw(0.1));
    resumed.load_state_tensors(&restored, &state).unwrap();
    assert_eq!(resumed.step_count(), 1);
    optimizer.step_with_gradients(&mut original, &grads);
    resumed.step_with_gradients(&mut restored, &grads);
    assert_eq!(
        original.get("fc1.weight").data(),
        restored.get("fc1.weight").data()
    );
}

#[track_caller]
fn check_load_error(tensors: &[(String, Tensor)], expect: &str) {
    let bytes = encode(tensors, &BTreeMap::new()).unwrap();
    let file = decode(&bytes, "test.safetensors").unwrap();
    let mut p = params();
    let error = load_parameters(&file, "test.safetensors", &mut p).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(expect),
        "expected `{expect}` in: {message}"
    );
    assert!(message.contains("test.safetensors"), "{message}");
    // Nothing was changed.
    assert_eq!(p.get("fc1.bias").data(), [0.5, -0.5]);
}

#[test]
fn mismatched_checkpoints_are_rejected_by_name() {
    let good = checkpoint::checkpoint_tensors(&params(), &[]);
    let without = |name: &str| -> Vec<(String, Tensor)> {
        good.iter().filter(|(n, _)| n != name).cloned().collect()
    };
    check_load_error(&without("fc1.bias"), "missing tensor `fc1.bias`");
    let mut wrong_shape = without("fc1.bias");
    wrong_shape.push(("fc1.bias".to_string(), Tensor::zeros([3])));
    check_load_error(&wrong_shape, "`fc1.bias` has shape [3], expected [2]");
    let mut extra = good.clone();
    extra.push(("fc9.weight".to_string(), Tensor::zeros([1])));
    check_load_error(&extra, "fc9.weight");
}

#[test]
fn corrupt_and_truncated_files_are_errors() {
    let bytes = encode(&checkpoint::checkpoint_tensors(&params(), &[]), &metadata()).unwrap();
    for cut in [0, 4, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        let error = decode(&bytes[..cut], "cut.safetensors").unwrap_err();
        assert!(
            matches!(error, OpsError::Safetensors { .. }),
            "cut at {cut}: {error}"
        );
        assert!(error.to_string().contains("cut.safetensors"));
    }
    let mut garbage = bytes.clone();
    garbage[9] = b'!';
    assert!(decode(&garbage, "garbage").is_err());
    let mut huge_header = bytes.clone();
    huge_header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(decode(&huge_header, "huge").is_err());

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.safetensors");
    let error = load(&missing).unwrap_err();
    assert!(error.to_string().contains("absent.safetensors"), "{error}");
}

#[test]
fn other_dtypes_are_rejected() {
    use safetensors::tensor::{Dtype, TensorView};
    let data = [0u8; 8];
    let view = TensorView::new(Dtype::F64, vec![1], &data).unwrap();
    let bytes = safetensors::serialize([("x", view)], None).unwrap();
    let error = decode(&bytes, "f64.safetensors").unwrap_err();
    assert!(error.to_string().contains("dtype F64"), "{error}");
}

#[test]
fn encoding_is_a_pure_function_of_the_contents() {
    // Checkpoint hashes prove that runs agree: the bytes must not depend on
    // map iteration order. Ten encodings of the same contents, given in
    // different orders, are identical and decode back.
    let tensors: Vec<(String, Tensor)> = (0..6)
        .map(|i| {
            (
                format!("layer{i}.weight"),
                Tensor::from_vec([2, 3], vec![i as f32; 6]),
            )
        })
        .collect();
    let metadata: std::collections::BTreeMap<String, String> = (0..8)
        .map(|i| (format!("key{i}"), format!("value \"{i}\"")))
        .collect();
    let first = ops::checkpoint::encode(&tensors, &metadata).unwrap();
    for round in 0..10 {
        let mut shuffled = tensors.clone();
        shuffled.rotate_left(round % tensors.len());
        assert_eq!(
            ops::checkpoint::encode(&shuffled, &metadata).unwrap(),
            first
        );
    }
    let decoded = ops::checkpoint::decode(&first, "encoded").unwrap();
    assert_eq!(decoded.metadata, metadata);
    assert_eq!(decoded.floats.len(), 6);
    assert_eq!(decoded.floats["layer4.weight"].data(), &[4.0; 6]);
}
