//! Optimizers against `torch.optim` (expected values printed by PyTorch
//! 2.x, float32, for the same parameters and gradients), gradient
//! clipping, schedules and state round trips.
// PyTorch's values are printed with 9 significant digits (what round-trips an f32).
#![allow(clippy::excessive_precision)]
use ops::optim::{LearningRateSchedule, Optimizer, OptimizerConfig, clip_grad_norm};
use ops::{GradStore, ParameterSet, Tensor};

const START: [f32; 5] = [0.5, -1.25, 2.0, 0.0, -0.75];
const GRADIENTS: [[f32; 5]; 3] = [
    [0.1, -0.2, 0.3, -0.4, 0.05],
    [-0.3, 0.25, 0.0, 0.5, -0.1],
    [0.2, 0.2, -0.6, 0.1, 0.7],
];

fn one_parameter() -> ParameterSet {
    let mut params = ParameterSet::new();
    params.insert("w", Tensor::parameter([5], START.to_vec()));
    params
}

/// Three steps of `config` from [`START`] with [`GRADIENTS`]; the parameter
/// after each step must match PyTorch's to a relative 2e-7 (an ulp or so).
#[track_caller]
fn check(config: OptimizerConfig, expected: [[f32; 5]; 3]) {
    let mut params = one_parameter();
    let mut optimizer = Optimizer::new(config.clone());
    for (step, (gradient, want)) in GRADIENTS.iter().zip(expected).enumerate() {
        let grad = Tensor::from_vec([5], gradient.to_vec());
        optimizer.step_with_gradients(&mut params, &[Some(grad)]);
        let got = params.get("w").data();
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 2e-7 * w.abs().max(1e-2),
                "{config:?} step {step} element {i}: got {g:e}, PyTorch {w:e}"
            );
        }
    }
    assert_eq!(optimizer.step_count(), 3);
}

#[test]
fn sgd_matches_torch() {
    let sgd = |lr, momentum, dampening, weight_decay, nesterov| OptimizerConfig::Sgd {
        lr,
        momentum,
        dampening,
        weight_decay,
        nesterov,
    };
    check(
        sgd(0.1, 0.0, 0.0, 0.0, false),
        [
            [
                4.900000095e-01,
                -1.230000019e+00,
                1.970000029e+00,
                4.000000283e-02,
                -7.549999952e-01,
            ],
            [
                5.200000405e-01,
                -1.254999995e+00,
                1.970000029e+00,
                -9.999997914e-03,
                -7.450000048e-01,
            ],
            [
                5.000000596e-01,
                -1.274999976e+00,
                2.029999971e+00,
                -1.999999769e-02,
                -8.149999976e-01,
            ],
        ],
    );
    check(
        sgd(0.1, 0.9, 0.0, 0.0, false),
        [
            [
                4.900000095e-01,
                -1.230000019e+00,
                1.970000029e+00,
                4.000000283e-02,
                -7.549999952e-01,
            ],
            [
                5.110000372e-01,
                -1.236999989e+00,
                1.943000078e+00,
                2.600000054e-02,
                -7.494999766e-01,
            ],
            [
                5.099000335e-01,
                -1.263299942e+00,
                1.978700042e+00,
                3.399999114e-03,
                -8.145499825e-01,
            ],
        ],
    );
    check(
        sgd(0.05, 0.8, 0.0, 0.1, true),
        [
            [
                4.864999950e-01,
                -1.220749974e+00,
                1.955000043e+00,
                3.600000218e-02,
                -7.477499843e-01,
            ],
            [
                5.043215156e-01,
                -1.221863270e+00,
                1.921405077e+00,
                3.476003185e-03,
                -7.312202454e-01,
            ],
            [
                4.859858155e-01,
                -1.224640131e+00,
                1.939056396e+00,
                -1.143048052e-02,
                -7.814064622e-01,
            ],
        ],
    );
    check(
        sgd(0.05, 0.5, 0.3, 0.0, false),
        [
            [
                4.950000048e-01,
                -1.240000010e+00,
                1.985000014e+00,
                2.000000142e-02,
                -7.524999976e-01,
            ],
            [
                5.030000210e-01,
                -1.243749976e+00,
                1.977499962e+00,
                1.250000205e-02,
                -7.502499819e-01,
            ],
            [
                5.000000000e-01,
                -1.252624989e+00,
                1.994749904e+00,
                5.250002258e-03,
                -7.736249566e-01,
            ],
        ],
    );
}

#[test]
fn adam_and_adamw_match_torch() {
    check(
        OptimizerConfig::Adam {
            lr: 0.01,
            betas: (0.8, 0.99),
            eps: 1e-6,
            weight_decay: 0.05,
        },
        [
            [
                4.900000691e-01,
                -1.240000010e+00,
                1.990000010e+00,
                9.999975562e-03,
                -7.599992156e-01,
            ],
            [
                4.945502579e-01,
                -1.239464283e+00,
                1.981986165e+00,
                7.787790149e-03,
                -7.527594566e-01,
            ],
            [
                4.929638505e-01,
                -1.241903782e+00,
                1.983793020e+00,
                5.103552714e-03,
                -7.586053014e-01,
            ],
        ],
    );
    check(
        OptimizerConfig::adamw(0.01),
        [
            [
                4.899500012e-01,
                -1.239874959e+00,
                1.989799976e+00,
                9.999999776e-03,
                -7.599250078e-01,
            ],
            [
                4.948429167e-01,
                -1.241378307e+00,
                1.982900381e+00,
                8.371677250e-03,
                -7.561879754e-01,
            ],
            [
                4.946055412e-01,
                -1.245706916e+00,
                1.986102343e+00,
                6.141620688e-03,
                -7.619745135e-01,
            ],
        ],
    );
}

#[test]
fn prefix_limits_the_update_and_missing_gradients_are_skipped() {
    let mut params = ParameterSet::new();
    params.insert("generator.w", Tensor::parameter([2], vec![1.0, 2.0]));
    params.insert("discriminator.w", Tensor::parameter([2], vec![3.0, 4.0]));
    params.insert("generator.unused", Tensor::parameter([1], vec![5.0]));
    let mut optimizer = Optimizer::with_prefix(OptimizerConfig::adamw(0.1), "generator.");
    let ones = Tensor::ones([2]);
    optimizer.step_with_gradients(&mut params, &[Some(ones.clone()), Some(ones), None]);
    assert_ne!(params.get("generator.w").data(), [1.0, 2.0]);
    assert_eq!(params.get("discriminator.w").data(), [3.0, 4.0]);
    // No gradient: no weight decay either (PyTorch skips `grad is None`).
    assert_eq!(params.get("generator.unused").data(), [5.0]);
    assert!(params.get("generator.w").is_leaf_parameter());
}

#[test]
fn step_reads_gradients_from_a_backward_pass() {
    let mut params = one_parameter();
    let loss = params.get("w").mul(params.get("w")).sum_all(); // grad = 2w
    let grads = loss.backward();
    let mut optimizer = Optimizer::new(OptimizerConfig::Sgd {
        lr: 0.5,
        momentum: 0.0,
        dampening: 0.0,
        weight_decay: 0.0,
        nesterov: false,
    });
    optimizer.step(&mut params, &grads);
    assert_eq!(params.get("w").data(), [0.0; 5]);
}

#[test]
fn state_round_trip_continues_the_same_trajectory() {
    let config = OptimizerConfig::adamw(0.01);
    let run = |split: bool| {
        let mut params = one_parameter();
        let mut optimizer = Optimizer::new(config.clone());
        for (i, g) in GRADIENTS.iter().enumerate() {
            if split && i == 2 {
                let saved = optimizer.state_tensors();
                optimizer = Optimizer::new(config.clone());
                optimizer.load_state_tensors(&params, &saved).unwrap();
            }
            optimizer.step_with_gradients(&mut params, &[Some(Tensor::from_vec([5], g.to_vec()))]);
        }
        params.get("w").data().to_vec()
    };
    assert_eq!(run(false), run(true));
}

#[test]
fn bad_state_is_an_error() {
    let params = one_parameter();
    let mut optimizer = Optimizer::new(OptimizerConfig::adamw(0.01));
    let wrong_size = vec![("w/exp_avg".to_string(), Tensor::zeros([4]))];
    let error = optimizer
        .load_state_tensors(&params, &wrong_size)
        .unwrap_err();
    assert!(error.to_string().contains("w/exp_avg"), "{error}");
    let unknown = vec![("nope/exp_avg".to_string(), Tensor::zeros([5]))];
    let error = optimizer.load_state_tensors(&params, &unknown).unwrap_err();
    assert!(error.to_string().contains("nope"), "{error}");
    let half = vec![("w/exp_avg".to_string(), Tensor::zeros([5]))];
    assert!(optimizer.load_state_tensors(&params, &half).is_err());
}

#[test]
fn config_from_fixture_json() {
    let json = serde_json::json!({"name": "adamw", "steps": 5, "lr": 0.01,
        "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01});
    assert_eq!(
        OptimizerConfig::from_json(&json).unwrap(),
        OptimizerConfig::adamw(0.01)
    );
    let sgd = serde_json::json!({"name": "sgd", "lr": 0.05, "momentum": 0.9,
        "dampening": 0.0, "weight_decay": 0.0, "nesterov": false});
    let parsed = OptimizerConfig::from_json(&sgd).unwrap();
    assert_eq!(
        OptimizerConfig::from_json(&parsed.to_json()).unwrap(),
        parsed
    );
    for (bad, key) in [
        (serde_json::json!({"name": "lion"}), "name"),
        (serde_json::json!({"name": "sgd"}), "lr"),
        (serde_json::json!({"name": "adam", "betas": [0.9]}), "betas"),
        (serde_json::json!({"name": "adam", "lr": -1.0}), "lr"),
        (serde_json::json!([1, 2]), ""),
    ] {
        let error = OptimizerConfig::from_json(&bad).unwrap_err().to_string();
        assert!(error.contains(&format!("`{key}`")), "{bad}: {error}");
    }
}

#[test]
fn clip_grad_norm_matches_torch() {
    let mut params = ParameterSet::new();
    params.insert("a", Tensor::parameter([2], vec![3.0, 4.0]));
    params.insert("b", Tensor::parameter([2, 2], vec![1.0, 2.0, 2.0, 0.0]));
    let mut grads = GradStore::default();
    grads.accumulate(params.get("a"), Tensor::from_vec([2], vec![3.0, 4.0]));
    grads.accumulate(
        params.get("b"),
        Tensor::from_vec([2, 2], vec![1.0, 2.0, 2.0, 0.0]),
    );
    let norm = clip_grad_norm(&params, &mut grads, 2.0);
    assert!((norm - 5.830_951_7).abs() < 1e-6, "{norm}");
    let expected_a = [1.028_991_5, 1.371_988_5];
    let expected_b = [0.342_997_13, 0.685_994_27, 0.685_994_27, 0.0];
    for (g, e) in grads
        .get(params.get("a"))
        .unwrap()
        .data()
        .iter()
        .zip(expected_a)
    {
        assert!((g - e).abs() < 1e-6, "{g} {e}");
    }
    for (g, e) in grads
        .get(params.get("b"))
        .unwrap()
        .data()
        .iter()
        .zip(expected_b)
    {
        assert!((g - e).abs() < 1e-6, "{g} {e}");
    }
    // Under the bound: untouched.
    let norm = clip_grad_norm(&params, &mut grads, 100.0);
    assert!((norm - 2.0).abs() < 1e-5);
    assert_eq!(grads.get(params.get("b")).unwrap().data()[3], 0.0);
}

#[test]
fn schedules() {
    let base = 0.1;
    assert_eq!(LearningRateSchedule::Constant.lr(base, 1000), base);
    let warm = LearningRateSchedule::LinearWarmup { warmup_steps: 4 };
    let factors: Vec<f64> = (0..6).map(|s| warm.factor(s)).collect();
    assert_eq!(factors, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
    assert_eq!(warm.lr(base, 1), 0.05);
    let cosine = LearningRateSchedule::WarmupCosine {
        warmup_steps: 2,
        total_steps: 12,
        min_factor: 0.1,
    };
    assert_eq!(cosine.factor(0), 0.5);
    assert_eq!(cosine.factor(2), 1.0);
    assert!((cosine.factor(7) - 0.55).abs() < 1e-12);
    assert!((cosine.factor(12) - 0.1).abs() < 1e-12);
    assert!((cosine.factor(100) - 0.1).abs() < 1e-12);
    let mut previous = f64::INFINITY;
    for step in 2..=12 {
        let f = cosine.factor(step);
        assert!(f <= previous, "cosine increases at step {step}");
        previous = f;
    }
}
