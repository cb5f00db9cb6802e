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
