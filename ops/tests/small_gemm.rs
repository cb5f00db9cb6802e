//! `kernels::small_gemm::gemm_add` against its definition (bit for bit)
//! and against an f64 product, at sizes around its register blocks (8 rows,
//! 16 and 32 columns).
use ops::RandomStream;
use ops::kernels::small_gemm::{gemm_add, gemm_add_reference};

fn random(len: usize, stream: u64) -> Vec<f32> {
    RandomStream::new(11, stream)
        .normal_tensor([len], 0.0, 1.0)
        .into_vec()
}

#[test]
fn gemm_add_gives_the_reference_bits_at_block_boundaries() {
    let sizes = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65];
    for (s, &m) in sizes.iter().enumerate() {
        for &k in &[1, 3, 16, 64, 65, 256] {
            for &n in &[1, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 256, 257] {
                let a = random(m * k, 3 * s as u64);
                let b = random(k * n, 3 * s as u64 + 1);
                let start = random(m * n, 3 * s as u64 + 2);
                let mut expected = start.clone();
                gemm_add_reference(&mut expected, &a, &b, (m, k, n));
                let mut got = start.clone();
                gemm_add(&mut got, &a, &b, (m, k, n));
                assert!(
                    got.iter()
                        .zip(&expected)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "bits differ at {m}x{k}x{n}"
                );
                for i in 0..m {
                    for j in 0..n {
                        let exact: f64 = (0..k)
                            .map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j]))
                            .sum::<f64>()
                            + f64::from(start[i * n + j]);
                        let err = (f64::from(got[i * n + j]) - exact).abs();
                        assert!(err < 1e-5 * (k as f64 + 1.0) * 8.0, "{m}x{k}x{n}: {err}");
                    }
                }
            }
        }
    }
}

#[test]
fn empty_products_leave_the_destination() {
    let mut c = vec![1.0; 6];
    gemm_add(&mut c, &[], &[], (2, 0, 3));
    assert_eq!(c, vec![1.0; 6]);
    let mut empty: Vec<f32> = vec![];
    gemm_add(&mut empty, &[], &[1.0; 3], (0, 1, 3));
}
