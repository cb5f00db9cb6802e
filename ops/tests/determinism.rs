//! The same input gives the same bits with one thread and with two, for
//! every op with a parallel path (forward and backward) and for faer's
//! matrix product at the shapes shoal uses.
use faer::{Accum, Mat, MatRef};
use ops::kernels::matmul::Layout;
use ops::ops::Reduction;
use ops::ops::matmul::matmul_with;
use ops::{IndexTensor, Par, Tensor, with_parallelism};

/// Reproducible values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u64 + seed * 7919 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let h = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn sample(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(shape, values(shape.iter().product(), seed))
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.data().iter().map(|v| v.to_bits()).collect()
}

/// The output of `f` and the gradients of every input (seeded with fixed
/// weights), as bits, computed with parallelism `par`.
fn run(par: Par, inputs: &[Tensor], f: &dyn Fn(&[Tensor]) -> Tensor) -> Vec<Vec<u32>> {
    with_parallelism(par, || {
        let params: Vec<Tensor> = inputs.iter().map(Tensor::as_parameter).collect();
        let output = f(&params);
        let seed = Tensor::from_vec(output.shape(), values(output.numel(), 99));
        let grads = output.backward_with(seed);
        let mut result = vec![bits(&output)];
        for p in &params {
            result.push(grads.get(p).map(bits).unwrap_or_default());
        }
        result
    })
}

/// Checks that `f` gives the same output and gradients at `Par::Seq` and
/// `Par::rayon(2)`.
#[track_caller]
fn check(what: &str, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Tensor) {
    let sequential = run(Par::Seq, inputs, &f);
    let parallel = run(Par::rayon(2), inputs, &f);
    assert_eq!(sequential.len(), parallel.len());
    for (i, (s, p)) in sequential.iter().zip(&parallel).enumerate() {
        let part = if i == 0 {
            "output".to_string()
        } else {
            format!("gradient of input {}", i - 1)
        };
        assert!(!s.is_empty(), "{what}: {part} is missing");
        assert!(s == p, "{what}: {part} differs between 1 and 2 threads");
    }
}

/// Large enough for several parallel chunks (rows of an odd length).
const ROWS: usize = 300;
const COLS: usize = 257;

#[test]
fn elementwise_and_reductions() {
    let x = sample(&[ROWS, COLS], 1);
    let y = sample(&[ROWS, COLS], 2);
    let positive = Tensor::from_vec(x.shape(), x.data().iter().map(|v| v.abs() + 0.5).collect());
    let xs = std::slice::from_ref(&x);
    check("exp", xs, |t| t[0].exp());
    check("gelu", xs, |t| t[0].gelu());
    check("silu", xs, |t| t[0].silu());
    check("softplus", xs, |t| t[0].softplus());
    check("tanh", xs, |t| t[0].tanh());
    check("sigmoid", xs, |t| t[0].sigmoid());
    check("leaky_relu", xs, |t| t[0].leaky_relu(0.2));
    check("pow", xs, |t| t[0].pow(3.0));
    check("scale", xs, |t| t[0].scale(0.5).add_scalar(1.0));
    check("log", std::slice::from_ref(&positive), |t| t[0].log());
    check("rsqrt", std::slice::from_ref(&positive), |t| t[0].rsqrt());
    check("add", &[x.clone(), y.clone()], |t| t[0].add(&t[1]));
    check("mul", &[x.clone(), y.clone()], |t| t[0].mul(&t[1]));
    check("div", &[x.clone(), positive.clone()], |t| t[0].div(&t[1]));
    let bias = sample(&[COLS], 3);
    check("broadcast add", &[x.clone(), bias.clone()], |t| {
        t[0].add(&t[1])
    });
    check("broadcast mul", &[x.clone(), bias], |t| t[0].mul(&t[1]));
    check("sum_all", xs, |t| t[0].sum_all());
    check("mean_all", xs, |t| t[0].mean_all());
    for axis in [0, 1] {
        check("sum_axis", xs, |t| t[0].sum_axis(axis, false));
        check("mean_axis", xs, |t| t[0].mean_axis(axis, true));
        check("var_axis", xs, |t| t[0].var_axis(axis, false));
    }
    let wide = sample(&[3, 40_000], 4);
    check("sum_axis of long rows", &[wide], |t| {
        t[0].sum_axis(-1, false)
    });
}

#[test]
fn row_ops_losses_and_norms() {
    let x = sample(&[ROWS, COLS], 5);
    let xs = std::slice::from_ref(&x);
    check("softmax", xs, |t| t[0].softmax());
    check("log_softmax", xs, |t| t[0].log_softmax());
    let targets: Vec<i64> = (0..ROWS)
        .map(|r| {
            if r % 11 == 0 {
                -100
            } else {
                (r * 31 % COLS) as i64
            }
        })
        .collect();
    let targets = IndexTensor::from_vec([ROWS], targets);
    check("cross_entropy", xs, |t| t[0].cross_entropy(&targets, -100));
    let many_rows = sample(&[20_000, 3], 6);
    let many_targets = IndexTensor::from_vec([20_000], (0..20_000).map(|r| r % 3).collect());
    check("cross_entropy, many rows", &[many_rows], |t| {
        t[0].cross_entropy(&many_targets, -100)
    });
    let y = sample(&[ROWS, COLS], 7);
    check("mse_loss", &[x.clone(), y.clone()], |t| {
        t[0].mse_loss(&t[1])
    });
    let probabilities = Tensor::from_vec(y.shape(), y.data().iter().map(|v| v.abs()).collect());
    for reduction in [Reduction::None, Reduction::Mean, Reduction::Sum] {
        check(
            "bce_with_logits",
            &[x.clone(), probabilities.clone()],
            |t| t[0].binary_cross_entropy_with_logits(&t[1], reduction),
        );
    }
    let (w, b) = (sample(&[COLS], 8), sample(&[COLS], 9));
    check("layer_norm", &[x.clone(), w.clone(), b], |t| {
        t[0].layer_norm(Some(&t[1]), Some(&t[2]), 1e-5)
    });
    check("rms_norm", &[x.clone(), w], |t| t[0].rms_norm(&t[1], 1e-5));
    let tall = sample(&[4000, 16], 10);
    let (w, b) = (sample(&[16], 11), sample(&[16], 12));
    check("layer_norm, many short rows", &[tall, w, b], |t| {
        t[0].layer_norm(Some(&t[1]), Some(&t[2]), 1e-5)
    });
    let (z1, z2) = (sample(&[512, 256], 13), sample(&[512, 256], 14));
    check("barlow_twins_loss", &[z1, z2], |t| {
        ops::ops::barlow_twins_loss(&t[0], &t[1], 0.0051)
    });
}

/// `C = op(A) B` with faer at `par`; `a` stores `op(A)` row-major, or its
/// transpose when `transposed`.
fn faer_product(
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    transposed: bool,
    par: Par,
) -> Vec<u32> {
    let lhs = if transposed {
        MatRef::from_row_major_slice(a, k, m).transpose()
    } else {
        MatRef::from_row_major_slice(a, m, k)
    };
    let rhs = MatRef::from_row_major_slice(b, k, n);
    let mut c = Mat::<f32>::zeros(m, n);
    faer::linalg::matmul::matmul(c.as_mut(), Accum::Replace, lhs, rhs, 1.0, par);
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            out.push(c[(i, j)].to_bits());
        }
    }
    out
}

/// The shapes of STACK.md's "Determinism" section.
const MATMUL_SHAPES: &[(usize, usize, usize)] = &[
    (64, 64, 64),
    (256, 64, 512),
    (256, 512, 10),
    (512, 512, 512),
    (4096, 128, 64),
    (1000, 777, 333),
    (32, 2048, 2048),
];

#[test]
fn faer_matmul_same_bits_at_one_and_two_threads() {
    for &(m, k, n) in MATMUL_SHAPES {
        let (a, b) = (values(m * k, 20), values(k * n, 21));
        for transposed in [false, true] {
            let sequential = faer_product(&a, &b, (m, k, n), transposed, Par::Seq);
            let parallel = faer_product(&a, &b, (m, k, n), transposed, Par::rayon(2));
            assert!(
                sequential == parallel,
                "faer matmul {m}x{k}x{n} (left transposed: {transposed}) differs between 1 and 2 threads"
            );
        }
    }
}

#[test]
fn tensor_matmul_and_linear_forward_and_backward() {
    for &(m, k, n) in &[(256, 64, 512), (512, 512, 512), (1000, 777, 333)] {
        check("matmul", &[sample(&[m, k], 30), sample(&[k, n], 31)], |t| {
            t[0].matmul(&t[1])
        });
        check(
            "matmul, transposed left",
            &[sample(&[k, m], 32), sample(&[k, n], 33)],
            |t| matmul_with(&t[0], Layout::Transposed, &t[1], Layout::AsIs),
        );
    }
    for &(rows, inputs, outputs) in &[(256, 512, 10), (4096, 128, 64), (1000, 777, 333)] {
        check(
            "linear",
            &[
                sample(&[rows, inputs], 40),
                sample(&[outputs, inputs], 41),
                sample(&[outputs], 42),
            ],
            |t| t[0].linear(&t[1], Some(&t[2])),
        );
    }
}

#[test]
fn causal_windows_and_pair_embeddings_forward_and_backward() {
    use ops::ops::conv::causal_window;
    use ops::ops::index::causal_pair_embedding;
    for &(batch, time, features) in &[(1, 1, 1), (3, 65, 17), (32, 128, 64)] {
        check(
            "causal_window",
            &[sample(&[batch, time, features], 50)],
            |t| causal_window(&t[0], 2),
        );
        let vocabulary = 13;
        let tokens = (0..batch * time)
            .map(|i| ((i * 7 + i / 5) % vocabulary) as i64)
            .collect();
        let tokens = IndexTensor::from_vec([batch, time], tokens);
        check(
            "causal_pair_embedding",
            &[
                sample(&[vocabulary, 3 * features], 51),
                sample(&[vocabulary, 3 * features], 52),
            ],
            |t| causal_pair_embedding(&t[0], &t[1], &tokens),
        );
    }
}
