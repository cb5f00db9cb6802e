//! `Tensor::backward_streaming`: every leaf's gradient handed over once,
//! final (equal to what `backward` stores), and in the order the walk
//! finishes the leaves (last layers first).
use ops::Tensor;

/// A two-layer network whose first weight is also used by a second branch
/// late in the graph, so its gradient has two contributions.
fn network() -> (Vec<Tensor>, Tensor) {
    let x = Tensor::from_vec([3, 4], (0..12).map(|i| (i as f32 * 0.37).sin()).collect());
    let w1 = Tensor::parameter([5, 4], (0..20).map(|i| (i as f32 * 0.11).cos()).collect());
    let w2 = Tensor::parameter([2, 5], (0..10).map(|i| (i as f32 * 0.23).sin()).collect());
    let b2 = Tensor::parameter([2], vec![0.1, -0.2]);
    let hidden = x.linear(&w1, None).tanh();
    let out = hidden.linear(&w2, Some(&b2));
    let reuse = w1.mul(&w1).sum_all();
    let loss = out.mul(&out).sum_all().add(&reuse);
    (vec![w1, w2, b2], loss)
}

#[test]
fn streaming_backward_hands_over_each_final_gradient_once() {
    let (leaves, loss) = network();
    let stored = loss.backward();
    let mut seen: Vec<(usize, Vec<f32>)> = Vec::new();
    loss.backward_streaming(Tensor::full(loss.shape(), 1.0), |leaf, grad| {
        let index = leaves
            .iter()
            .position(|candidate| candidate.id() == leaf.id())
            .expect("only the network's parameters are leaves");
        seen.push((index, grad.data().to_vec()));
    });
    let mut order: Vec<usize> = seen.iter().map(|(index, _)| *index).collect();
    assert_eq!(order.len(), 3, "one call per leaf: {order:?}");
    // Last layer first: b2 and w2 are finished before w1.
    assert_eq!(*order.last().unwrap(), 0, "w1 comes last: {order:?}");
    order.sort_unstable();
    order.dedup();
    assert_eq!(order, vec![0, 1, 2]);
    for (index, gradient) in &seen {
        let want = stored.get(&leaves[*index]).expect("stored gradient");
        assert_eq!(gradient.as_slice(), want.data(), "leaf {index}");
    }
}

#[test]
fn streaming_backward_of_a_constant_calls_nothing() {
    let constant = Tensor::from_vec([1], vec![2.0]);
    let mut calls = 0;
    constant.backward_streaming(Tensor::full([1], 1.0), |_, _| calls += 1);
    assert_eq!(calls, 0);
}
