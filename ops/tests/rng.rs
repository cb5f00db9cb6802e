//! The counter-based generator (Philox4x32-10 known answers, statistics,
//! independence from how the work is split), initializations and dropout.
use ops::gradcheck::{GradCheck, check_gradients};
use ops::rng::{RandomStream, philox4x32_10, stream_id};
use ops::{ParameterSet, Tensor, init};

#[test]
fn philox_known_answers() {
    // Random123's tests/kat_vectors, "philox4x32 10" lines.
    let cases: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        (
            [0; 4],
            [0; 2],
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
        ),
        (
            [u32::MAX; 4],
            [u32::MAX; 2],
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
        ),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];
    for (counter, key, expected) in cases {
        assert_eq!(
            philox4x32_10(counter, key),
            expected,
            "counter {counter:x?}"
        );
    }
    // The stream layout: block 0 of stream 0 under seed 0 is the all-zero vector.
    assert_eq!(RandomStream::new(0, 0).block(0)[0], 0x6627e8d5);
}

#[test]
fn fills_do_not_depend_on_how_the_range_is_split() {
    let stream = RandomStream::new(42, stream_id(&[7, 3]));
    for (kind, fill) in [("uniform", 0), ("normal", 1), ("bernoulli", 2)] {
        let draw = |start: u64, out: &mut [f32]| match fill {
            0 => stream.fill_uniform(start, -1.0, 1.0, out),
            1 => stream.fill_normal(start, 0.0, 1.0, out),
            _ => stream.fill_bernoulli(start, 0.3, out),
        };
        let mut whole = vec![0.0; 101];
        draw(0, &mut whole);
        for split in [1, 2, 3, 5, 63, 64, 65, 100] {
            let mut pieces = vec![0.0; 101];
            let (a, b) = pieces.split_at_mut(split);
            draw(0, a);
            draw(split as u64, b);
            assert_eq!(whole, pieces, "{kind} split at {split}");
        }
    }
    for i in [0u64, 1, 2, 3, 4, 1001] {
        let mut one = [0.0];
        stream.fill_normal(i, 0.0, 1.0, &mut one);
        assert_eq!(one[0], stream.normal_at(i));
        stream.fill_uniform(i, 0.0, 1.0, &mut one);
        assert_eq!(one[0], stream.uniform_at(i));
    }
}

#[test]
fn keys_give_different_streams() {
    let a = RandomStream::new(1, 0).uniform_tensor([64], 0.0, 1.0);
    let b = RandomStream::new(2, 0).uniform_tensor([64], 0.0, 1.0);
    let c = RandomStream::new(1, 1).uniform_tensor([64], 0.0, 1.0);
    assert_ne!(a.data(), b.data());
    assert_ne!(a.data(), c.data());
    assert_ne!(stream_id(&[1, 2]), stream_id(&[2, 1]));
    let parent = RandomStream::new(5, 9);
    assert_eq!(parent.derive(&[3]), parent.derive(&[3]));
    assert_ne!(parent.derive(&[3]), parent.derive(&[4]));
}

#[test]
fn statistics_are_sane() {
    let n = 200_000;
    let stream = RandomStream::new(2026, 11);
    let mut u = vec![0.0; n];
    stream.fill_uniform(0, 0.0, 1.0, &mut u);
    assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
    let mean = u.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
    assert!((mean - 0.5).abs() < 0.005, "uniform mean {mean}");
    let mut buckets = [0usize; 10];
    for &x in &u {
        buckets[(x * 10.0) as usize] += 1;
    }
    // chi-square with 9 degrees of freedom; 27.9 is the 0.999 quantile
    let expected = n as f64 / 10.0;
    let chi2: f64 = buckets
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    assert!(chi2 < 27.9, "uniform chi-square {chi2} ({buckets:?})");

    let mut z = vec![0.0; n];
    stream.fill_normal(0, 1.0, 2.0, &mut z);
    let mean = z.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
    let var = z.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
    assert!((mean - 1.0).abs() < 0.02, "normal mean {mean}");
    assert!((var - 4.0).abs() < 0.08, "normal variance {var}");
    let within_one_sd = z.iter().filter(|&&x| (x - 1.0).abs() < 2.0).count() as f64 / n as f64;
    assert!((within_one_sd - 0.6827).abs() < 0.005, "{within_one_sd}");
    assert!(z.iter().all(|x| x.is_finite()));
    // cos/sin halves of a pair are uncorrelated
    let pairs: f64 = z
        .chunks_exact(2)
        .map(|p| (p[0] as f64 - 1.0) * (p[1] as f64 - 1.0))
        .sum::<f64>()
        / (n / 2) as f64
        / 4.0;
    assert!(pairs.abs() < 0.02, "pair correlation {pairs}");

    let mut b = vec![0.0; n];
    stream.fill_bernoulli(0, 0.25, &mut b);
    let rate = b.iter().sum::<f32>() as f64 / n as f64;
    assert!((rate - 0.25).abs() < 0.005, "bernoulli rate {rate}");
}

#[test]
fn initializations_follow_pytorch_distributions() {
    let mut params = ParameterSet::new();
    init::linear(&mut params, 3, "fc1", 100, 300, true);
    init::linear(&mut params, 3, "fc2", 300, 7, false);
    init::embedding(&mut params, 3, "embed", 50, 40);
    let names: Vec<&str> = params.names().collect();
    assert_eq!(
        names,
        ["fc1.weight", "fc1.bias", "fc2.weight", "embed.weight"]
    );
    assert_eq!(params.get("fc1.weight").dims(), [300, 100]);
    assert_eq!(params.get("fc2.weight").dims(), [7, 300]);
    let bound = 0.1;
    let w = params.get("fc1.weight").data();
    assert!(w.iter().all(|x| x.abs() <= bound));
    let max = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(max > 0.99 * bound, "weights should fill the range: {max}");
    assert!(
        params
            .get("fc1.bias")
            .data()
            .iter()
            .all(|x| x.abs() <= bound)
    );
    let e = params.get("embed.weight").data();
    let var = e.iter().map(|x| x * x).sum::<f32>() / e.len() as f32;
    assert!((var - 1.0).abs() < 0.1, "embedding variance {var}");
    assert!(params.iter().all(|(_, t)| t.is_leaf_parameter()));
    // Same seed and name: same values, whatever else was created before.
    let mut again = ParameterSet::new();
    init::linear(&mut again, 3, "fc2", 300, 7, false);
    assert_eq!(
        again.get("fc2.weight").data(),
        params.get("fc2.weight").data()
    );
    let mut other_seed = ParameterSet::new();
    init::linear(&mut other_seed, 4, "fc2", 300, 7, false);
    assert_ne!(
        other_seed.get("fc2.weight").data(),
        params.get("fc2.weight").data()
    );
    assert!(
        init::recurrent(1, "rnn.weight_hh_l0", [16, 4], 4)
            .data()
            .iter()
            .all(|x| x.abs() <= 0.5)
    );
}

#[test]
fn dropout_masks_scales_and_differentiates() {
    let stream = RandomStream::new(9, 1);
    let x = Tensor::from_vec([4, 50], (0..200).map(|i| i as f32 * 0.01 + 0.5).collect());
    let y = x.dropout(0.3, &stream, 0);
    let kept = y.data().iter().filter(|&&v| v != 0.0).count();
    assert!((100..180).contains(&kept), "kept {kept} of 200");
    for (&a, &b) in x.data().iter().zip(y.data()) {
        assert!(b == 0.0 || (b - a / 0.7).abs() < 1e-6);
    }
    // Same key, same mask; a row's mask depends only on its element indices.
    assert_eq!(x.dropout(0.3, &stream, 0).data(), y.data());
    let row = Tensor::from_vec([50], x.data()[50..100].to_vec());
    assert_eq!(row.dropout(0.3, &stream, 50).data(), &y.data()[50..100]);
    assert!(x.dropout(1.0, &stream, 0).data().iter().all(|&v| v == 0.0));
    assert_eq!(x.dropout(0.0, &stream, 0).data(), x.data());
    for shape in [vec![1], vec![3], vec![5, 13]] {
        let n: usize = shape.iter().product();
        let input = Tensor::from_vec(shape.as_slice(), (0..n).map(|i| (i as f32).sin()).collect());
        check_gradients(
            &[input],
            |t| t[0].dropout(0.4, &stream, 7).mul(&t[0]),
            GradCheck::default(),
        )
        .unwrap();
    }
}
