//! The gradient buckets of a data-parallel step: the layout packs
//! parameters last layer first, and the buckets that backward hands over
//! while it runs hold exactly the gradients of an ordinary backward pass.
use models::training::objective_gradients;
use worker::step::{GradientLayout, rank_gradient_buckets};

/// Small configurations of several kinds, with the inputs of
/// `models::bench::case`.
fn spec(kind: &str) -> serde_json::Value {
    let sequence = |kind: &str| {
        serde_json::json!({
            "config": {"kind": kind, "vocab": 8, "d_model": 8, "n_layers": 2, "d_state": 4},
            "batch": 3, "seq_len": 5
        })
    };
    match kind {
        "mlp" => {
            serde_json::json!({"config": {"d_in": 6, "d_hidden": 7, "n_classes": 3}, "batch": 5})
        }
        "gan" => {
            serde_json::json!({"config": {"d_latent": 3, "d_hidden": 5, "d_data": 2}, "batch": 4})
        }
        "vae" => serde_json::json!({"config": {"d": 6, "d_hidden": 5, "d_latent": 2}, "batch": 4}),
        "barlow_twins" => {
            serde_json::json!({"config": {"d_in": 6, "d_hidden": 5, "d_proj": 4}, "batch": 4})
        }
        other => sequence(other),
    }
}

/// For every objective of `kind` and several bucket sizes: the buckets of
/// two micro-batches equal `objective_gradients` on each, value for value,
/// and the loss is the first value of bucket 0.
#[track_caller]
fn check(kind: &str) {
    let spec = spec(kind);
    let model = models::bench::case(kind, &spec, 0).expect("model").model;
    let batches: Vec<_> = (1..=2)
        .map(|seed| models::bench::case(kind, &spec, seed).expect("batch").batch)
        .collect();
    for (objective, description) in model.objectives().iter().enumerate() {
        for bucket_elements in [1, 7, 64, 1 << 20] {
            let layout = GradientLayout::new(
                model.parameters(),
                description.parameter_prefix,
                bucket_elements,
            );
            let buckets = rank_gradient_buckets(model.as_ref(), objective, &batches, &layout)
                .expect("buckets");
            assert_eq!(buckets.len(), layout.bucket_count());
            for (slot, batch) in batches.iter().enumerate() {
                let (loss, gradients) =
                    objective_gradients(model.as_ref(), objective, batch).expect("gradients");
                assert_eq!(buckets[0][slot][0], loss, "{kind} loss, slot {slot}");
                for (parameter, ((name, tensor), gradient)) in
                    model.parameters().iter().zip(&gradients).enumerate()
                {
                    let Some((bucket, range)) = layout.placement(parameter) else {
                        assert!(
                            !name.starts_with(description.parameter_prefix),
                            "{kind}: trained parameter {name} has no place"
                        );
                        continue;
                    };
                    let values = &buckets[bucket][slot][range];
                    match gradient {
                        Some(gradient) => assert_eq!(
                            values,
                            gradient.data(),
                            "{kind} {name}, buckets of {bucket_elements}"
                        ),
                        None => assert!(
                            values.iter().all(|v| *v == 0.0) && values.len() == tensor.numel(),
                            "{kind} {name}: unreached, so zeros"
                        ),
                    }
                }
            }
        }
    }
}

#[test]
fn buckets_hold_the_gradients_of_backward() {
    for kind in [
        "mlp",
        "gan",
        "vae",
        "barlow_twins",
        "lstm",
        "gru",
        "qrnn",
        "s4d",
        "mamba",
    ] {
        check(kind);
    }
}

#[test]
fn layout_packs_parameters_last_layer_first_with_the_loss_in_front() {
    let model = models::bench::case("mlp", &spec("mlp"), 0).unwrap().model;
    let names: Vec<&str> = model.parameters().names().collect();
    let sizes: Vec<usize> = model.parameters().iter().map(|(_, t)| t.numel()).collect();
    // One bucket: the loss, then every parameter in reverse order.
    let one = GradientLayout::new(model.parameters(), "", 1 << 20);
    assert_eq!(one.bucket_count(), 1);
    assert_eq!(one.total_len(), sizes.iter().sum::<usize>() + 1);
    let mut offset = 1;
    for parameter in (0..names.len()).rev() {
        assert_eq!(
            one.placement(parameter),
            Some((0, offset..offset + sizes[parameter])),
            "{}",
            names[parameter]
        );
        offset += sizes[parameter];
    }
    // Buckets of one value: every parameter in a bucket of its own (the
    // last one sharing bucket 0 with the loss), never split.
    let tiny = GradientLayout::new(model.parameters(), "", 1);
    assert_eq!(tiny.bucket_count(), names.len());
    for (parameter, size) in sizes.iter().enumerate() {
        let (bucket, range) = tiny.placement(parameter).unwrap();
        assert_eq!(bucket, names.len() - 1 - parameter);
        assert_eq!(range.len(), *size);
        assert_eq!(tiny.parameters_in(bucket), 1);
    }
    // A cap that fits two small parameters together.
    let last_two = sizes[names.len() - 1] + sizes[names.len() - 2] + 1;
    let packed = GradientLayout::new(model.parameters(), "", last_two);
    assert_eq!(packed.parameters_in(0), 2);
    assert!(packed.bucket_count() < names.len());
}

#[test]
fn mean_gradients_divide_by_the_virtual_ranks() {
    let model = models::bench::case("mlp", &spec("mlp"), 0).unwrap().model;
    let layout = GradientLayout::new(model.parameters(), "", 50);
    let summed: Vec<Vec<f32>> = (0..layout.bucket_count())
        .map(|bucket| {
            (0..layout.bucket_len(bucket))
                .map(|i| (bucket * 1000 + i) as f32)
                .collect()
        })
        .collect();
    let (gradients, loss) = layout.mean_gradients(model.parameters(), &summed, 4);
    assert_eq!(loss, 0.0);
    for (parameter, gradient) in gradients.iter().enumerate() {
        let (bucket, range) = layout.placement(parameter).unwrap();
        let want: Vec<f32> = summed[bucket][range].iter().map(|v| v / 4.0).collect();
        assert_eq!(gradient.as_ref().unwrap().data(), want.as_slice());
    }
}
