//! Sequence ops (scans, causal convolution, sparse products, fused LSTM and
//! GRU layers): values against naive references, finite-difference
//! gradient checks at odd sizes and around block and chunk boundaries, and
//! the same bits at one and two threads.
// The naive references index like the formulas they transcribe.
#![allow(clippy::needless_range_loop)]
use ops::gradcheck::{GradCheck, check_gradients};
use ops::kernels::scan::{CHANNEL_BLOCK, TIME_CHUNK};
use ops::kernels::sparse::CsrMatrix;
use ops::ops::conv::{causal_depthwise_conv1d, causal_window};
use ops::ops::index::causal_pair_embedding;
use ops::ops::recurrent::{gru_layer, lstm_layer};
use ops::ops::scan::{
    linear_scan, qrnn_fo_pool, qrnn_fo_pool_of_linear, qrnn_fo_pool_of_pair_embedding, s4d_scan,
    selective_scan,
};
use ops::ops::sparse::SparseMatrix;
use ops::{IndexTensor, Par, Tensor, with_parallelism};

/// A tensor of the given shape with reproducible values in [lo, hi).
fn sample_in(shape: &[usize], seed: u64, lo: f32, hi: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| {
            let h = (i as u64 + seed * 7919 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let h = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let unit = (h >> 40) as f32 / (1u64 << 24) as f32;
            lo + unit * (hi - lo)
        })
        .collect();
    Tensor::from_vec(shape, data)
}

fn sample(shape: &[usize], seed: u64) -> Tensor {
    sample_in(shape, seed, -1.0, 1.0)
}

#[track_caller]
fn check(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Tensor) {
    if let Err(e) = check_gradients(inputs, f, GradCheck::default()) {
        panic!("gradient check failed:\n{e}");
    }
}

#[track_caller]
fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= 1e-5 + 1e-4 * e.abs(),
            "{what}: element {i}: {a} vs {e}"
        );
    }
}

fn naive_scan(a: &Tensor, b: &Tensor, initial: Option<&Tensor>) -> Vec<f32> {
    let (bs, t, c) = (a.dim(0), a.dim(1), a.dim(2));
    let mut out = vec![0.0; a.numel()];
    for bi in 0..bs {
        for ci in 0..c {
            let mut h = initial.map_or(0.0, |i| i.data()[bi * c + ci]);
            for ti in 0..t {
                let k = (bi * t + ti) * c + ci;
                h = a.data()[k] * h + b.data()[k];
                out[k] = h;
            }
        }
    }
    out
}

#[test]
fn linear_scan_matches_a_sequential_loop_chunked_or_not() {
    for &(bs, t, c) in &[
        (1, 1, 1),
        (2, 3, 5),
        (1, TIME_CHUNK, 3),
        (1, TIME_CHUNK + 1, 3),
        (3, 2 * TIME_CHUNK + 1, 2),
        (4, 2 * TIME_CHUNK + 1, 2),
        (1, 5 * TIME_CHUNK - 1, 1),
    ] {
        let a = sample_in(&[bs, t, c], 1, -1.0, 1.0);
        let b = sample(&[bs, t, c], 2);
        let init = sample(&[bs, c], 3);
        assert_close(
            linear_scan(&a, &b, None).data(),
            &naive_scan(&a, &b, None),
            "scan",
        );
        assert_close(
            linear_scan(&a, &b, Some(&init)).data(),
            &naive_scan(&a, &b, Some(&init)),
            "scan with initial state",
        );
    }
}

#[test]
fn linear_scan_gradients() {
    for &(bs, t, c) in &[
        (1, 1, 1),
        (2, 3, 5),
        (1, TIME_CHUNK + 1, 2),
        (2, 2 * TIME_CHUNK + 3, 1),
    ] {
        let (a, b) = (sample(&[bs, t, c], 4), sample(&[bs, t, c], 5));
        check(&[a.clone(), b.clone()], |x| linear_scan(&x[0], &x[1], None));
        check(&[a, b, sample(&[bs, c], 6)], |x| {
            linear_scan(&x[0], &x[1], Some(&x[2]))
        });
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn qrnn_fo_pool_values_and_gradients() {
    for &(bs, t, h) in &[(1, 1, 1), (2, 5, 2), (3, 4, 3)] {
        let gates = sample_in(&[bs, t, 3 * h], 7, -2.0, 2.0);
        let g = gates.data();
        let mut expected = vec![0.0; bs * t * h];
        for bi in 0..bs {
            for j in 0..h {
                let mut c = 0.0;
                for ti in 0..t {
                    let row = (bi * t + ti) * 3 * h;
                    let (z, f, o) = (
                        g[row + j].tanh(),
                        sigmoid(g[row + h + j]),
                        sigmoid(g[row + 2 * h + j]),
                    );
                    c = f * c + (1.0 - f) * z;
                    expected[(bi * t + ti) * h + j] = o * c;
                }
            }
        }
        assert_close(qrnn_fo_pool(&gates).data(), &expected, "fo-pool");
        // Without a gradient to record, the forward keeps nothing for the
        // backward (another loop): the same bits.
        let recorded = qrnn_fo_pool(&ops::Tensor::parameter(
            gates.shape(),
            gates.data().to_vec(),
        ));
        let constant = ops::autograd::no_grad(|| qrnn_fo_pool(&gates));
        let bits = |t: &ops::Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&recorded), bits(&constant), "fo-pool without gradient");
        check(&[gates], |x| qrnn_fo_pool(&x[0]));
    }
}

/// Tokens (batch, time) below `vocabulary`, repeated within and across rows.
fn tokens(batch: usize, time: usize, vocabulary: usize) -> IndexTensor {
    IndexTensor::from_vec(
        [batch, time],
        (0..batch * time)
            .map(|i| ((i * 7 + i / 3) % vocabulary) as i64)
            .collect(),
    )
}

#[test]
fn qrnn_fo_pool_fused_with_its_projection_is_the_two_ops() {
    // The fused ops run the same kernels as the two ops one after the
    // other: the same bits, forward and backward, at 1 and 2 threads.
    for &(bs, t, d) in &[(1, 1, 1), (2, 5, 3), (3, 17, 16), (2, 9, 17)] {
        let linear_inputs = [
            sample(&[bs, t, 2 * d], 11),
            sample_in(&[3 * d, 2 * d], 12, -0.5, 0.5),
            sample(&[3 * d], 13),
        ];
        let fused = |v: &[Tensor]| qrnn_fo_pool_of_linear(&v[0], &v[1], Some(&v[2]));
        let composed = |v: &[Tensor]| qrnn_fo_pool(&v[0].linear(&v[1], Some(&v[2])));
        let unbiased = |v: &[Tensor]| qrnn_fo_pool_of_linear(&v[0], &v[1], None);
        let composed_unbiased = |v: &[Tensor]| qrnn_fo_pool(&v[0].linear(&v[1], None));
        let vocabulary = 5;
        let table_inputs = [
            sample(&[vocabulary, 3 * d], 14),
            sample(&[vocabulary, 3 * d], 15),
        ];
        let tokens = tokens(bs, t, vocabulary);
        let fused_tables = |v: &[Tensor]| qrnn_fo_pool_of_pair_embedding(&v[0], &v[1], &tokens);
        let composed_tables =
            |v: &[Tensor]| qrnn_fo_pool(&causal_pair_embedding(&v[0], &v[1], &tokens));
        for par in [Par::Seq, Par::rayon(2)] {
            with_parallelism(par, || {
                assert!(
                    bits_of(&linear_inputs, &fused) == bits_of(&linear_inputs, &composed),
                    "linear then fo-pool at {bs}x{t}x{d}, {par:?}"
                );
                assert!(
                    bits_of(&linear_inputs[..2], &unbiased)
                        == bits_of(&linear_inputs[..2], &composed_unbiased),
                    "linear without bias then fo-pool at {bs}x{t}x{d}, {par:?}"
                );
                assert!(
                    bits_of(&table_inputs, &fused_tables)
                        == bits_of(&table_inputs, &composed_tables),
                    "pair embedding then fo-pool at {bs}x{t}x{d}, {par:?}"
                );
            });
        }
        check_deterministic("qrnn_fo_pool_of_linear", &linear_inputs, &fused);
        check_deterministic(
            "qrnn_fo_pool_of_pair_embedding",
            &table_inputs,
            &fused_tables,
        );
        if bs * t * d <= 45 {
            check(&linear_inputs, fused);
            check(&table_inputs, fused_tables);
        }
        // Without a gradient to record, nothing is kept: the same values.
        let constant = ops::autograd::no_grad(|| fused(&linear_inputs));
        assert_eq!(bits_of(&linear_inputs, &fused)[0], bits_of_data(&constant));
    }
}

fn bits_of_data(t: &Tensor) -> Vec<u32> {
    t.data().iter().map(|v| v.to_bits()).collect()
}

/// The S4D parameters of a layer with `h` channels and `n` states, as the
/// reference initializes them (plus noise, so no gradient is special).
fn s4d_params(h: usize, n: usize, seed: u64) -> Vec<Tensor> {
    let log_dt = sample_in(&[h], seed, (0.001f32).ln(), (0.5f32).ln());
    let a_log = Tensor::from_vec(
        [h, n],
        (0..h * n)
            .map(|i| (((i % n) + 1) as f32).ln() + 0.1 * ((i * 7 % 5) as f32 - 2.0))
            .collect(),
    );
    let b = sample_in(&[h, n], seed + 1, 0.5, 1.5);
    let c = sample(&[h, n], seed + 2);
    let d = sample(&[h], seed + 3);
    vec![log_dt, a_log, b, c, d]
}

#[test]
fn s4d_scan_values_and_gradients() {
    for &(bs, t, h, n) in &[(1, 1, 1, 1), (2, 5, 3, 2), (1, 4, CHANNEL_BLOCK + 1, 2)] {
        let u = sample(&[bs, t, h], 11);
        let p = s4d_params(h, n, 12);
        // naive reference
        let mut expected = vec![0.0; bs * t * h];
        for bi in 0..bs {
            for hi in 0..h {
                let dt = p[0].data()[hi].exp();
                let mut s = vec![0.0f32; n];
                for ti in 0..t {
                    let x = u.data()[(bi * t + ti) * h + hi];
                    let mut y = 0.0;
                    for ni in 0..n {
                        let a = -p[1].data()[hi * n + ni].exp();
                        let da = (dt * a).exp();
                        let db = (da - 1.0) / a * p[2].data()[hi * n + ni];
                        s[ni] = da * s[ni] + db * x;
                        y += p[3].data()[hi * n + ni] * s[ni];
                    }
                    expected[(bi * t + ti) * h + hi] = y + p[4].data()[hi] * x;
                }
            }
        }
        let y = s4d_scan(&u, &p[0], &p[1], &p[2], &p[3], &p[4]);
        assert_close(y.data(), &expected, "s4d");
        let mut inputs = vec![u];
        inputs.extend(p);
        check(&inputs, |x| {
            s4d_scan(&x[0], &x[1], &x[2], &x[3], &x[4], &x[5])
        });
    }
}

fn selective_inputs(bs: usize, t: usize, d: usize, n: usize, seed: u64) -> Vec<Tensor> {
    vec![
        sample(&[bs, t, d], seed),
        sample_in(&[bs, t, d], seed + 1, -1.5, 1.0),
        sample_in(&[d, n], seed + 2, -2.0, -0.2),
        sample(&[bs, t, n], seed + 3),
        sample(&[bs, t, n], seed + 4),
        sample(&[d], seed + 5),
    ]
}

#[test]
fn selective_scan_values_and_gradients() {
    for &(bs, t, d, n) in &[(1, 1, 1, 1), (2, 5, 3, 2), (1, 3, CHANNEL_BLOCK + 1, 2)] {
        let inputs = selective_inputs(bs, t, d, n, 20);
        for softplus in [false, true] {
            let [x, delta, a, b, c, dd] = &inputs[..] else {
                unreachable!()
            };
            let mut expected = vec![0.0; bs * t * d];
            for bi in 0..bs {
                for di in 0..d {
                    let mut h = vec![0.0f32; n];
                    for ti in 0..t {
                        let k = (bi * t + ti) * d + di;
                        let raw = delta.data()[k];
                        let dt = if softplus { raw.exp().ln_1p() } else { raw };
                        let xv = x.data()[k];
                        let mut y = 0.0;
                        for ni in 0..n {
                            let m = (bi * t + ti) * n + ni;
                            h[ni] =
                                (dt * a.data()[di * n + ni]).exp() * h[ni] + dt * b.data()[m] * xv;
                            y += c.data()[m] * h[ni];
                        }
                        expected[k] = y + dd.data()[di] * xv;
                    }
                }
            }
            let y = selective_scan(x, delta, a, b, c, dd, softplus);
            assert_close(y.data(), &expected, "selective scan");
            check(&inputs, |v| {
                selective_scan(&v[0], &v[1], &v[2], &v[3], &v[4], &v[5], softplus)
            });
        }
    }
}

#[test]
fn causal_depthwise_conv1d_values_and_gradients() {
    for &(bs, t, c, k) in &[(1, 1, 1, 1), (2, 5, 3, 4), (1, 3, 2, 5), (2, 6, 65, 2)] {
        let (x, w, b) = (
            sample(&[bs, t, c], 30),
            sample(&[c, 1, k], 31),
            sample(&[c], 32),
        );
        let mut expected = vec![0.0; bs * t * c];
        for bi in 0..bs {
            for ti in 0..t {
                for ci in 0..c {
                    let mut y = b.data()[ci];
                    for ki in 0..k {
                        if ti + ki + 1 >= k {
                            let src = ti + ki + 1 - k;
                            y += w.data()[ci * k + ki] * x.data()[(bi * t + src) * c + ci];
                        }
                    }
                    expected[(bi * t + ti) * c + ci] = y;
                }
            }
        }
        assert_close(
            causal_depthwise_conv1d(&x, &w, Some(&b)).data(),
            &expected,
            "conv1d",
        );
        if c < 10 {
            check(&[x.clone(), w.clone(), b], |v| {
                causal_depthwise_conv1d(&v[0], &v[1], Some(&v[2]))
            });
            check(&[x, w], |v| causal_depthwise_conv1d(&v[0], &v[1], None));
        }
    }
}

#[test]
fn causal_window_values_and_gradients() {
    let x = sample(&[2, 3, 2], 40);
    let y = causal_window(&x, 2);
    assert_eq!(y.dims(), [2, 3, 4]);
    let d = x.data();
    // batch 0, t = 0: [0, x_0]; t = 2: [x_1, x_2]
    assert_eq!(&y.data()[0..4], &[0.0, 0.0, d[0], d[1]]);
    assert_eq!(&y.data()[8..12], &[d[2], d[3], d[4], d[5]]);
    for window in [1, 2, 3, 5] {
        check(std::slice::from_ref(&x), |v| causal_window(&v[0], window));
    }
}

#[test]
fn gcn_normalized_adjacency_matches_the_dense_formula() {
    // edges in both directions, one repeated, one self-loop
    let src = [0i64, 1, 1, 2, 0, 3];
    let dst = [1i64, 0, 2, 1, 1, 3];
    let n = 4;
    let m = CsrMatrix::gcn_normalized(n, &src, &dst).expect("valid edges");
    let mut a = vec![0.0f32; n * n];
    for (&s, &d) in src.iter().zip(&dst) {
        a[d as usize * n + s as usize] = 1.0;
    }
    for i in 0..n {
        a[i * n + i] += 1.0;
    }
    let deg: Vec<f32> = (0..n)
        .map(|r| 1.0 / a[r * n..(r + 1) * n].iter().sum::<f32>().sqrt())
        .collect();
    let expected: Vec<f32> = (0..n * n).map(|i| deg[i / n] * a[i] * deg[i % n]).collect();
    assert_close(&m.to_dense(), &expected, "normalized adjacency");
    assert!(CsrMatrix::gcn_normalized(n, &[0, 4], &[1, 0]).is_err());
    assert!(CsrMatrix::gcn_normalized(n, &[0, -1], &[1, 0]).is_err());
    assert!(CsrMatrix::gcn_normalized(n, &[0], &[1, 0]).is_err());
}

#[test]
fn sparse_matmul_values_and_gradients() {
    for &(rows, cols, n) in &[(1, 1, 1), (3, 5, 2), (65, 4, 3)] {
        let triplets: Vec<(usize, usize, f32)> = (0..rows * 2)
            .map(|i| ((i * 7) % rows, (i * 3) % cols, 0.5 + i as f32 * 0.1))
            .collect();
        let csr = CsrMatrix::from_triplets(rows, cols, &triplets).expect("in range");
        let dense_a = csr.to_dense();
        let a = SparseMatrix::new(csr);
        let x = sample(&[cols, n], 50);
        let expected = Tensor::from_vec([rows, cols], dense_a).matmul(&x);
        assert_close(a.matmul(&x).data(), expected.data(), "spmm");
        check(&[x], |v| a.matmul(&v[0]));
    }
}

fn recurrent_inputs(
    bs: usize,
    t: usize,
    i: usize,
    h: usize,
    gates: usize,
    seed: u64,
) -> Vec<Tensor> {
    vec![
        sample(&[bs, t, i], seed),
        sample(&[gates * h, i], seed + 1),
        sample(&[gates * h, h], seed + 2),
        sample(&[gates * h], seed + 3),
        sample(&[gates * h], seed + 4),
    ]
}

#[test]
fn lstm_and_gru_gradients() {
    // 17: two LSTM batch blocks (16 + 1)
    for &(bs, t, i, h) in &[(1, 1, 1, 1), (2, 5, 3, 4), (3, 4, 2, 3), (17, 3, 2, 3)] {
        check(&recurrent_inputs(bs, t, i, h, 4, 60), |v| {
            lstm_layer(&v[0], &v[1], &v[2], &v[3], &v[4])
        });
        check(&recurrent_inputs(bs, t, i, h, 3, 70), |v| {
            gru_layer(&v[0], &v[1], &v[2], &v[3], &v[4])
        });
    }
}

#[test]
fn gru_matches_the_pytorch_cell_formula() {
    let (bs, t, i, h) = (2, 3, 2, 3);
    let v = recurrent_inputs(bs, t, i, h, 3, 80);
    let out = gru_layer(&v[0], &v[1], &v[2], &v[3], &v[4]);
    let (x, wi, wh, bi, bh) = (
        v[0].data(),
        v[1].data(),
        v[2].data(),
        v[3].data(),
        v[4].data(),
    );
    let mut expected = vec![0.0; bs * t * h];
    for b in 0..bs {
        let mut hs = vec![0.0f32; h];
        for ti in 0..t {
            let xr = &x[(b * t + ti) * i..(b * t + ti + 1) * i];
            let gi: Vec<f32> = (0..3 * h)
                .map(|r| bi[r] + (0..i).map(|k| wi[r * i + k] * xr[k]).sum::<f32>())
                .collect();
            let gh: Vec<f32> = (0..3 * h)
                .map(|r| bh[r] + (0..h).map(|k| wh[r * h + k] * hs[k]).sum::<f32>())
                .collect();
            let next: Vec<f32> = (0..h)
                .map(|j| {
                    let r = sigmoid(gi[j] + gh[j]);
                    let z = sigmoid(gi[h + j] + gh[h + j]);
                    let n = (gi[2 * h + j] + r * gh[2 * h + j]).tanh();
                    (1.0 - z) * n + z * hs[j]
                })
                .collect();
            expected[(b * t + ti) * h..(b * t + ti + 1) * h].copy_from_slice(&next);
            hs = next;
        }
    }
    assert_close(out.data(), &expected, "gru");
}

/// Forward values and every input gradient, as bits.
fn bits_of(inputs: &[Tensor], f: &dyn Fn(&[Tensor]) -> Tensor) -> Vec<Vec<u32>> {
    let params: Vec<Tensor> = inputs.iter().map(Tensor::as_parameter).collect();
    let out = f(&params);
    let seed = sample(out.dims(), 99);
    let grads = out.backward_with(seed);
    let mut bits = vec![out.data().iter().map(|v| v.to_bits()).collect()];
    for p in &params {
        bits.push(
            grads
                .get(p)
                .map(|g| g.data().iter().map(|v| v.to_bits()).collect())
                .unwrap_or_default(),
        );
    }
    bits
}

#[track_caller]
fn check_deterministic(what: &str, inputs: &[Tensor], f: &dyn Fn(&[Tensor]) -> Tensor) {
    let one = with_parallelism(Par::Seq, || bits_of(inputs, f));
    let two = with_parallelism(Par::rayon(2), || bits_of(inputs, f));
    assert!(one == two, "{what}: bits differ between 1 and 2 threads");
}

#[test]
fn same_bits_at_one_and_two_threads() {
    for &(bs, t, c) in &[(2, 3 * TIME_CHUNK + 5, 3), (6, 40, 7)] {
        let inputs = [
            sample(&[bs, t, c], 1),
            sample(&[bs, t, c], 2),
            sample(&[bs, c], 3),
        ];
        check_deterministic("linear_scan", &inputs, &|v| {
            linear_scan(&v[0], &v[1], Some(&v[2]))
        });
    }
    check_deterministic("qrnn_fo_pool", &[sample(&[5, 30, 3 * 40], 4)], &|v| {
        qrnn_fo_pool(&v[0])
    });
    let mut s4d = vec![sample(&[3, 30, 70], 5)];
    s4d.extend(s4d_params(70, 4, 6));
    check_deterministic("s4d_scan", &s4d, &|v| {
        s4d_scan(&v[0], &v[1], &v[2], &v[3], &v[4], &v[5])
    });
    check_deterministic("selective_scan", &selective_inputs(3, 30, 70, 5, 7), &|v| {
        selective_scan(&v[0], &v[1], &v[2], &v[3], &v[4], &v[5], true)
    });
    check_deterministic(
        "causal_depthwise_conv1d",
        &[
            sample(&[5, 30, 40], 8),
            sample(&[40, 1, 4], 9),
            sample(&[40], 10),
        ],
        &|v| causal_depthwise_conv1d(&v[0], &v[1], Some(&v[2])),
    );
    let triplets: Vec<(usize, usize, f32)> = (0..2000)
        .map(|i| {
            (
                (i * 7919) % 300,
                (i * 104_729) % 300,
                0.01 * (i % 13) as f32,
            )
        })
        .collect();
    let a = SparseMatrix::new(CsrMatrix::from_triplets(300, 300, &triplets).expect("in range"));
    check_deterministic("sparse_matmul", &[sample(&[300, 9], 11)], &|v| {
        a.matmul(&v[0])
    });
    // 8: one LSTM batch block; 33: three (16, 16, 1), run in parallel
    for bs in [8, 33] {
        check_deterministic(
            "lstm_layer",
            &recurrent_inputs(bs, 12, 20, 24, 4, 12),
            &|v| lstm_layer(&v[0], &v[1], &v[2], &v[3], &v[4]),
        );
    }
    check_deterministic("gru_layer", &recurrent_inputs(8, 12, 20, 24, 3, 13), &|v| {
        gru_layer(&v[0], &v[1], &v[2], &v[3], &v[4])
    });
}

#[test]
fn fast_math_is_close_to_libm() {
    use ops::kernels::fast_math;
    for i in 0..=200_000 {
        let x = -87.0 + 175.0 * i as f32 / 200_000.0;
        let (got, want) = (fast_math::exp(x) as f64, (x as f64).exp());
        assert!(
            (got - want).abs() <= 3e-7 * want,
            "exp({x}) = {got}, expected {want}"
        );
    }
    for i in 0..=20_000 {
        let x = -12.0 + 24.0 * i as f32 / 20_000.0;
        let t = (x as f64).tanh();
        assert!((fast_math::tanh(x) as f64 - t).abs() <= 2e-7, "tanh({x})");
        let s = 1.0 / (1.0 + (-x as f64).exp());
        assert!(
            (fast_math::sigmoid(x) as f64 - s).abs() <= 2e-7 * s.max(1e-3),
            "sigmoid({x})"
        );
    }
    for i in 0..=200_000 {
        let x = 1e-30f32 * 1.0005f32.powi(i);
        if !x.is_finite() {
            break;
        }
        let want = (x as f64).ln();
        assert!(
            (fast_math::ln(x) as f64 - want).abs() <= 2e-7 * want.abs().max(1.0),
            "ln({x})"
        );
    }
    for i in 0..=40_000 {
        let x = -30.0 + 60.0 * i as f32 / 40_000.0;
        let want = if x > 20.0 {
            x as f64
        } else {
            (x as f64).exp().ln_1p()
        };
        assert!(
            (fast_math::softplus(x) as f64 - want).abs() <= 3e-7 * want,
            "softplus({x})"
        );
    }
    assert_eq!(fast_math::exp(-200.0), fast_math::exp(-87.0));
    assert_eq!(fast_math::tanh(0.0), 0.0);
}
