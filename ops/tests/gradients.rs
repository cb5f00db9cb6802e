//! Finite-difference checks of every op's backward, at several shapes.
use ops::gradcheck::{GradCheck, check_gradients};
use ops::kernels::matmul::Layout;
use ops::ops::matmul::matmul_with;
use ops::{IndexTensor, Tensor};

/// A tensor of the given shape with reproducible values in [-1, 1).
fn sample(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| {
            let h = (i as u64 + seed * 7919 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let h = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(shape, data)
}

#[track_caller]
fn check(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Tensor) {
    if let Err(e) = check_gradients(inputs, f, GradCheck::default()) {
        panic!("gradient check failed:\n{e}");
    }
}

#[track_caller]
fn check_one(input: &Tensor, f: impl Fn(&Tensor) -> Tensor) {
    check(std::slice::from_ref(input), |t| f(&t[0]));
}

#[test]
fn matmul_all_layouts() {
    for &(m, k, n) in &[(1, 1, 1), (2, 3, 4), (5, 1, 3), (3, 7, 2)] {
        for a_layout in [Layout::AsIs, Layout::Transposed] {
            for b_layout in [Layout::AsIs, Layout::Transposed] {
                let a_shape = if a_layout == Layout::AsIs {
                    [m, k]
                } else {
                    [k, m]
                };
                let b_shape = if b_layout == Layout::AsIs {
                    [k, n]
                } else {
                    [n, k]
                };
                check(&[sample(&a_shape, 1), sample(&b_shape, 2)], |t| {
                    matmul_with(&t[0], a_layout, &t[1], b_layout)
                });
            }
        }
    }
}

#[test]
fn batched_matmul() {
    check(&[sample(&[2, 3, 4], 1), sample(&[2, 4, 5], 2)], |t| {
        t[0].matmul(&t[1])
    });
    check(&[sample(&[2, 3, 4], 1), sample(&[4, 5], 2)], |t| {
        t[0].matmul(&t[1])
    });
    for b_layout in [Layout::AsIs, Layout::Transposed] {
        let b_shape = if b_layout == Layout::AsIs {
            [2, 3]
        } else {
            [3, 2]
        };
        check(&[sample(&[3, 2, 4], 1), sample(&b_shape, 2)], |t| {
            matmul_with(&t[0], Layout::Transposed, &t[1], b_layout)
        });
    }
}

#[test]
fn linear() {
    for &(rows, i, o) in &[(1, 1, 1), (3, 4, 5), (2, 7, 3)] {
        check(
            &[sample(&[rows, i], 1), sample(&[o, i], 2), sample(&[o], 3)],
            |t| t[0].linear(&t[1], Some(&t[2])),
        );
        check(&[sample(&[2, rows, i], 1), sample(&[o, i], 2)], |t| {
            t[0].linear(&t[1], None)
        });
    }
}

#[test]
fn broadcasting_arithmetic() {
    let pairs: &[(&[usize], &[usize])] = &[
        (&[3, 4], &[3, 4]),
        (&[3, 4], &[4]),
        (&[3, 1], &[1, 4]),
        (&[2, 3, 4], &[3, 1]),
        (&[5], &[]),
        (&[2, 1, 3, 2], &[4, 1, 2]),
        // fast paths: a scalar or a trailing block on either side
        (&[], &[5]),
        (&[4], &[3, 4]),
        (&[1, 4], &[3, 4]),
        (&[2, 3, 4], &[1, 3, 4]),
        (&[65, 3], &[1]),
    ];
    for (i, (a, b)) in pairs.iter().enumerate() {
        let (x, y) = (sample(a, i as u64), sample(b, 100 + i as u64));
        check(&[x.clone(), y.clone()], |t| t[0].add(&t[1]));
        check(&[x.clone(), y.clone()], |t| t[0].sub(&t[1]));
        check(&[x.clone(), y.clone()], |t| t[0].mul(&t[1]));
        // keep the divisor away from zero
        let y = Tensor::from_vec(*b, y.data().iter().map(|v| v.abs() + 0.5).collect());
        check(&[x, y], |t| t[0].div(&t[1]));
    }
}

#[test]
fn relu_scale_and_reductions() {
    check(&[sample(&[3, 5], 4)], |t| t[0].relu());
    check(&[sample(&[3, 5], 4)], |t| t[0].scale(-2.5).add_scalar(1.0));
    check(&[sample(&[7], 4)], |t| t[0].sum_all());
    check(&[sample(&[2, 3, 4], 4)], |t| t[0].mean_all());
}

#[test]
fn cross_entropy_with_ignored_rows() {
    let targets = IndexTensor::from_vec([5], vec![0, 3, -100, 2, 1]);
    check(&[sample(&[5, 4], 9)], |t| {
        t[0].cross_entropy(&targets, -100)
    });
}

/// The same values moved at least `margin` away from zero (for functions
/// with a kink or a pole at 0, where a central difference is meaningless).
fn away_from_zero(t: &Tensor, margin: f32) -> Tensor {
    let data = t
        .data()
        .iter()
        .map(|&v| if v < 0.0 { v - margin } else { v + margin })
        .collect();
    Tensor::from_vec(t.shape(), data)
}

/// `|v| + offset`: strictly positive values.
fn positive(t: &Tensor, offset: f32) -> Tensor {
    Tensor::from_vec(
        t.shape(),
        t.data().iter().map(|v| v.abs() + offset).collect(),
    )
}

/// Scaled copies (to reach the tails of saturating functions).
fn scaled(t: &Tensor, factor: f32) -> Tensor {
    Tensor::from_vec(t.shape(), t.data().iter().map(|v| v * factor).collect())
}

const SHAPES: &[&[usize]] = &[&[1], &[7], &[3, 5], &[2, 3, 4], &[1, 2, 1, 3], &[65]];

#[test]
fn unary_functions() {
    for (i, shape) in SHAPES.iter().enumerate() {
        let x = sample(shape, 10 + i as u64);
        let wide = scaled(&x, 4.0);
        check_one(&x, |t| t.neg());
        check_one(&x, |t| t.exp());
        check_one(&wide, |t| t.tanh());
        check_one(&wide, |t| t.sigmoid());
        check_one(&wide, |t| t.gelu());
        check_one(&wide, |t| t.silu());
        check(&[scaled(&x, 30.0)], |t| t[0].softplus());
        check_one(&wide, |t| t.square());
        check_one(&wide, |t| t.pow(3.0));
        let kinked = away_from_zero(&x, 0.05);
        check_one(&kinked, |t| t.relu());
        check_one(&kinked, |t| t.leaky_relu(0.2));
        check_one(&kinked, |t| t.abs());
        let pos = positive(&x, 0.5);
        check_one(&pos, |t| t.log());
        check_one(&pos, |t| t.sqrt());
        check_one(&pos, |t| t.rsqrt());
        check_one(&pos, |t| t.pow(-1.5));
        check(&[pos], |t| t[0].pow(0.5));
    }
}

#[track_caller]
fn check_values(got: &Tensor, expected: &[f32], tolerance: f32) {
    assert_eq!(got.numel(), expected.len(), "{got:?}");
    for (i, (&g, &e)) in got.data().iter().zip(expected).enumerate() {
        assert!(
            (g - e).abs() <= tolerance * (1.0 + e.abs()),
            "element {i}: got {g}, expected {e}"
        );
    }
}

#[test]
fn unary_values_match_pytorch() {
    let x = Tensor::from_vec([7], vec![-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]);
    // torch.nn.functional.gelu (exact erf form)
    check_values(
        &x.gelu(),
        &[
            -0.004_049_6,
            -0.158_655_3,
            -0.154_268_8,
            0.0,
            0.345_731_2,
            0.841_344_7,
            1.954_499_7,
        ],
        2e-6,
    );
    // torch.sigmoid, including where exp overflows
    let extreme = Tensor::from_vec([4], vec![-100.0, -20.0, 20.0, 100.0]);
    check_values(&extreme.sigmoid(), &[0.0, 2.061_153_6e-9, 1.0, 1.0], 1e-6);
    assert!(extreme.sigmoid().data().iter().all(|v| v.is_finite()));
    // torch.nn.functional.softplus: linear above 20, ln(1+e^x) below
    check_values(
        &Tensor::from_vec([4], vec![-30.0, 0.0, 19.0, 25.0]).softplus(),
        &[9.357_623e-14, std::f32::consts::LN_2, 19.0, 25.0],
        1e-6,
    );
    check_values(
        &x.silu(),
        &[
            -0.142_277_3,
            -0.268_941_4,
            -0.188_770_8,
            0.0,
            0.311_229_2,
            0.731_058_6,
            1.761_594_2,
        ],
        2e-6,
    );
    check_values(
        &x.leaky_relu(0.2),
        &[-0.6, -0.2, -0.1, 0.0, 0.5, 1.0, 2.0],
        0.0,
    );
}

#[test]
fn reductions_over_an_axis() {
    for (i, shape) in [&[3usize, 5][..], &[2, 3, 4], &[1, 2, 3, 2], &[65, 3], &[4]]
        .iter()
        .enumerate()
    {
        let x = sample(shape, 20 + i as u64);
        for axis in 0..shape.len() as isize {
            for keepdim in [false, true] {
                check_one(&x, |t| t.sum_axis(axis, keepdim));
                check_one(&x, |t| t.mean_axis(axis, keepdim));
                check_one(&x, |t| t.var_axis(axis, keepdim));
            }
        }
        check_one(&x, |t| t.sum_axis(-1, false));
    }
}

#[test]
fn reduction_values() {
    let x = Tensor::from_vec([2, 3], vec![1.0, 2.0, 3.0, 4.0, 6.0, 8.0]);
    let sum0 = x.sum_axis(0, true);
    assert_eq!(sum0.dims(), [1, 3]);
    check_values(&sum0, &[5.0, 8.0, 11.0], 0.0);
    let mean1 = x.mean_axis(1, false);
    assert_eq!(mean1.dims(), [2]);
    check_values(&mean1, &[2.0, 6.0], 0.0);
    check_values(&x.var_axis(1, false), &[2.0 / 3.0, 8.0 / 3.0], 1e-6);
    check_values(&x.var_axis(0, false), &[2.25, 4.0, 6.25], 1e-6);
}

#[test]
fn shape_ops() {
    let x = sample(&[2, 3, 5], 30);
    check_one(&x, |t| t.reshape([5, 6]).mul(&t.reshape([5, 6])));
    check_one(&x, |t| t.unsqueeze(1).squeeze(1).unsqueeze(-1));
    for (a, b) in [(0, 1), (0, 2), (1, 2), (-1, 0)] {
        check_one(&x, |t| t.transpose_copy(a, b));
    }
    check(&[sample(&[2, 1, 3, 4], 31)], |t| t[0].transpose_copy(1, 3));
    for axis in [0, 1, 2, -1] {
        let n = x.dim(axis);
        check_one(&x, |t| t.narrow(axis, 1.min(n - 1), n - 1.min(n - 1)));
        check_one(&x, |t| t.pad_axis(axis, 2, 1));
    }
    // split and chunk: every piece gets its own gradient
    check_one(&x, |t| {
        let pieces = t.split(&[1, 3, 1], -1);
        pieces[0]
            .sum_axis(-1, false)
            .add(&pieces[1].mean_axis(-1, false))
            .add(&pieces[2].squeeze(-1).exp())
    });
    check_one(&x, |t| {
        let pieces = t.chunk(2, 1);
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0].dims(), [2, 2, 5]);
        assert_eq!(pieces[1].dims(), [2, 1, 5]);
        pieces[0].sum_axis(1, false).mul(&pieces[1].squeeze(1))
    });
    let (a, b) = (sample(&[2, 3, 5], 32), sample(&[2, 4, 5], 33));
    check(&[a.clone(), b.clone()], |t| {
        ops::ops::concat(&[&t[0], &t[1], &t[0]], 1)
    });
    check(&[a.clone(), sample(&[2, 3, 5], 34)], |t| {
        ops::ops::stack(&[&t[0], &t[1]], 1)
    });
    check(&[a.clone(), sample(&[2, 3, 2], 35)], |t| {
        ops::ops::concat(&[&t[0], &t[1]], -1)
    });
}

#[test]
fn shape_op_values() {
    let x = Tensor::from_vec([2, 3], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    check_values(
        &x.transpose_copy(0, 1),
        &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0],
        0.0,
    );
    check_values(&x.narrow(1, 1, 2), &[1.0, 2.0, 4.0, 5.0], 0.0);
    check_values(
        &x.pad_axis(1, 1, 0),
        &[0.0, 0.0, 1.0, 2.0, 0.0, 3.0, 4.0, 5.0],
        0.0,
    );
    let joined = ops::ops::concat(&[&x, &x.narrow(1, 0, 1)], 1);
    assert_eq!(joined.dims(), [2, 4]);
    check_values(&joined, &[0.0, 1.0, 2.0, 0.0, 3.0, 4.0, 5.0, 3.0], 0.0);
    let stacked = ops::ops::stack(&[&x, &x], -1);
    assert_eq!(stacked.dims(), [2, 3, 2]);
    assert_eq!(x.chunk(4, 1).len(), 3);
    let reshaped = x.reshape([3, 2]);
    assert!(std::sync::Arc::ptr_eq(
        reshaped.shared_data(),
        x.shared_data()
    ));
}

#[test]
fn indexing() {
    // repeated indices: their gradients add up
    let weight = sample(&[5, 3], 40);
    let tokens = IndexTensor::from_vec([2, 3], vec![0, 4, 4, 2, 0, 1]);
    check_one(&weight, |t| ops::ops::index::embedding(t, &tokens));
    let out = ops::ops::index::embedding(&weight, &tokens);
    assert_eq!(out.dims(), [2, 3, 3]);
    assert_eq!(&out.data()[3..6], &weight.data()[12..15]);
    let rows = IndexTensor::from_vec([4], vec![2, 0, 2, 1]);
    check(&[sample(&[3, 4], 41)], |t| t[0].index_select(0, &rows));
    check(&[sample(&[2, 3, 4], 42)], |t| t[0].index_select(1, &rows));
    let gather_index = IndexTensor::from_vec([3, 2], vec![0, 3, 1, 1, 2, 0]);
    check(&[sample(&[3, 4], 43)], |t| t[0].gather_last(&gather_index));
    let mask = IndexTensor::from_vec([4], vec![1, 0, 1, 1]);
    check(&[sample(&[4, 3], 44)], |t| t[0].rows_where(&mask));
    let selected = Tensor::from_vec([4, 1], vec![0.0, 1.0, 2.0, 3.0]).rows_where(&mask);
    check_values(&selected, &[0.0, 2.0, 3.0], 0.0);
    let labels = IndexTensor::from_vec([4], vec![7, 8, 9, 10]);
    assert_eq!(labels.select(&mask.nonzero_positions()).data(), [7, 9, 10]);
    check(&[sample(&[4, 4], 45)], |t| t[0].diagonal());
}

#[test]
fn causal_pair_embedding_is_a_window_then_a_linear_map() {
    use ops::ops::conv::causal_window;
    use ops::ops::index::{causal_pair_embedding, embedding};
    // repeated tokens, across and within rows
    let tokens = IndexTensor::from_vec([2, 4], vec![0, 4, 4, 2, 4, 0, 1, 0]);
    check(&[sample(&[5, 3], 46), sample(&[5, 3], 47)], |t| {
        causal_pair_embedding(&t[0], &t[1], &tokens)
    });
    // equals proj([E[tok_{t-1}], E[tok_t]]) with the tables E W_half^T
    let (embed, weight, bias) = (sample(&[5, 2], 48), sample(&[3, 4], 49), sample(&[3], 50));
    let windowed = causal_window(&embedding(&embed, &tokens), 2).linear(&weight, Some(&bias));
    let previous = embed.linear(&weight.narrow(1, 0, 2), None);
    let current = embed.linear(&weight.narrow(1, 2, 2), Some(&bias));
    let tables = causal_pair_embedding(&previous, &current, &tokens);
    assert_eq!(tables.dims(), windowed.dims());
    check_values(&tables, windowed.data(), 1e-5);
}

#[test]
fn softmax_and_log_softmax() {
    for (i, shape) in [&[5usize][..], &[3, 4], &[2, 3, 7], &[2, 65]]
        .iter()
        .enumerate()
    {
        let x = scaled(&sample(shape, 50 + i as u64), 3.0);
        check_one(&x, |t| t.softmax());
        check_one(&x, |t| t.log_softmax());
    }
    // stable for large logits, and rows sum to 1
    let x = Tensor::from_vec([2, 3], vec![1000.0, 1001.0, 1002.0, -5.0, 0.0, 5.0]);
    let p = x.softmax();
    for row in p.data().chunks(3) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{p:?}");
    }
    check_values(
        &p.narrow(0, 0, 1),
        &[0.090_030_57, 0.244_728_48, 0.665_240_94],
        1e-6,
    );
    check_values(
        &x.log_softmax().narrow(0, 0, 1),
        &[-2.407_606, -1.407_606, -0.407_606],
        1e-6,
    );
}

#[test]
fn losses() {
    use ops::ops::Reduction;
    for (i, &(rows, classes)) in [(1, 1), (3, 4), (7, 65)].iter().enumerate() {
        let targets: Vec<i64> = (0..rows).map(|r| (r * 7 % classes) as i64).collect();
        let targets = IndexTensor::from_vec([rows], targets);
        check(&[sample(&[rows, classes], 60 + i as u64)], |t| {
            t[0].cross_entropy(&targets, -100)
        });
    }
    for shape in [&[1usize][..], &[3, 5], &[2, 3, 4]] {
        let (x, y) = (sample(shape, 61), sample(shape, 62));
        check(&[x.clone(), y.clone()], |t| t[0].mse_loss(&t[1]));
        let logits = scaled(&x, 5.0);
        let probabilities = positive(&y, 0.0);
        for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
            check(&[logits.clone(), probabilities.clone()], |t| {
                t[0].binary_cross_entropy_with_logits(&t[1], reduction)
            });
        }
    }
    // stable at large logits: log(1 + e^-|x|) never overflows
    let x = Tensor::from_vec([3], vec![-200.0, 0.0, 200.0]);
    let y = Tensor::from_vec([3], vec![1.0, 0.5, 0.0]);
    check_values(
        &x.binary_cross_entropy_with_logits(&y, Reduction::None),
        &[200.0, std::f32::consts::LN_2, 200.0],
        1e-6,
    );
}

/// The reference model's Barlow Twins loss written with unfused ops.
fn barlow_twins_composed(z1: &Tensor, z2: &Tensor, lambda: f32) -> Tensor {
    let standardize = |z: &Tensor| {
        let centered = z.sub(&z.mean_axis(0, true));
        centered.div(&z.var_axis(0, true).add_scalar(1e-5).sqrt())
    };
    let (n1, n2) = (standardize(z1), standardize(z2));
    let c = matmul_with(&n1, Layout::Transposed, &n2, Layout::AsIs).scale(1.0 / z1.dim(0) as f32);
    let diagonal = c.diagonal();
    let on = diagonal.neg().add_scalar(1.0).square().sum_all();
    let off = c.square().sum_all().sub(&diagonal.square().sum_all());
    on.add(&off.scale(lambda))
}

#[test]
fn barlow_twins_loss_fused_and_composed_agree() {
    for (i, &(batch, dim)) in [(2, 1), (5, 3), (9, 4)].iter().enumerate() {
        let (z1, z2) = (
            scaled(&sample(&[batch, dim], 70 + i as u64), 2.0),
            sample(&[batch, dim], 80 + i as u64),
        );
        let lambda = 0.3;
        check(&[z1.clone(), z2.clone()], |t| {
            ops::ops::barlow_twins_loss(&t[0], &t[1], lambda)
        });
        check(&[z1.clone(), z2.clone()], |t| {
            barlow_twins_composed(&t[0], &t[1], lambda)
        });
        let fused = ops::ops::barlow_twins_loss(&z1, &z2, lambda).item();
        let composed = barlow_twins_composed(&z1, &z2, lambda).item();
        assert!(
            (fused - composed).abs() <= 1e-4 * (1.0 + composed.abs()),
            "fused {fused}, composed {composed}"
        );
    }
}

#[test]
fn norms() {
    for (i, shape) in [&[1usize, 1][..], &[3, 5], &[2, 3, 7], &[2, 65]]
        .iter()
        .enumerate()
    {
        let d = *shape.last().unwrap();
        let x = scaled(&sample(shape, 90 + i as u64), 2.0);
        let (w, b) = (sample(&[d], 91), sample(&[d], 92));
        if d > 1 {
            // with d = 1, layer norm's output is constant and finite
            // differences see only rounding
            check(&[x.clone(), w.clone(), b.clone()], |t| {
                t[0].layer_norm(Some(&t[1]), Some(&t[2]), 1e-5)
            });
            check_one(&x, |t| t.layer_norm(None, None, 1e-5));
            check(&[x.clone(), b.clone()], |t| {
                t[0].layer_norm(None, Some(&t[1]), 1e-5)
            });
        }
        check(&[x.clone(), w.clone()], |t| t[0].rms_norm(&t[1], 1e-5));
        // against the definitions written with unfused ops
        let mean = x.mean_axis(-1, true);
        let composed = x
            .sub(&mean)
            .div(&x.var_axis(-1, true).add_scalar(1e-5).sqrt())
            .mul(&w)
            .add(&b);
        check_values(
            &x.layer_norm(Some(&w), Some(&b), 1e-5),
            composed.data(),
            1e-5,
        );
        let composed = x
            .mul(&x.square().mean_axis(-1, true).add_scalar(1e-5).rsqrt())
            .mul(&w);
        check_values(&x.rms_norm(&w, 1e-5), composed.data(), 1e-5);
    }
}

#[test]
fn broadcast_values() {
    let x = Tensor::from_vec([2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let row = Tensor::from_vec([3], vec![10.0, 20.0, 30.0]);
    let column = Tensor::from_vec([2, 1], vec![100.0, 200.0]);
    check_values(&x.add(&row), &[11.0, 22.0, 33.0, 14.0, 25.0, 36.0], 0.0);
    check_values(&row.sub(&x), &[9.0, 18.0, 27.0, 6.0, 15.0, 24.0], 0.0);
    check_values(
        &x.mul(&column),
        &[100.0, 200.0, 300.0, 800.0, 1000.0, 1200.0],
        0.0,
    );
    check_values(
        &Tensor::scalar(6.0).div(&x),
        &[6.0, 3.0, 2.0, 1.5, 1.2, 1.0],
        1e-7,
    );
    check_values(
        &x.sub(&Tensor::scalar(1.0)),
        &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        0.0,
    );
}
