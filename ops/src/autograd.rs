//! Reverse-mode automatic differentiation: the [`Backward`] trait, the
//! gradient store, and the walk over the recorded graph.
//!
//! An op is recorded only when gradients are enabled (see [`no_grad`]) and
//! one of its inputs requires a gradient ([`crate::Tensor::from_op`]), so
//! inference builds no graph. Each op family implements [`Backward`] next to
//! its forward. Backward runs with gradients disabled: gradients are plain
//! tensors and no second-order graph is built.
use std::cell::Cell;
use std::collections::HashMap;

use crate::kernels::elementwise::add_assign;
use crate::tensor::{Origin, Tensor, TensorId};

/// The backward of one recorded op.
pub trait Backward: Send + Sync + 'static {
    /// The op's name, for error messages and debugging.
    fn name(&self) -> &'static str;

    /// Gradients of the loss with respect to each input, in input order
    /// (`None` where an input needs none), given the gradient with respect
    /// to `output`. Each gradient has its input's shape.
    fn backward(
        &self,
        inputs: &[Tensor],
        output: &Tensor,
        grad_output: &Tensor,
    ) -> Vec<Option<Tensor>>;
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record the graph.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Runs `f` with graph recording disabled on this thread (inference,
/// optimizer updates, evaluation).
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_ENABLED.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(false)));
    f()
}

/// Gradients of a backward pass, keyed by the leaf tensors they belong to.
#[derive(Default)]
pub struct GradStore {
    grads: HashMap<TensorId, Tensor>,
}

impl GradStore {
    /// The gradient of `tensor`, if the loss depends on it.
    pub fn get(&self, tensor: &Tensor) -> Option<&Tensor> {
        self.grads.get(&tensor.id())
    }

    /// Removes and returns the gradient of `tensor`.
    pub fn remove(&mut self, tensor: &Tensor) -> Option<Tensor> {
        self.grads.remove(&tensor.id())
    }

    /// Adds `grad` to the stored gradient of `tensor` (or stores it).
    pub fn accumulate(&mut self, tensor: &Tensor, grad: Tensor) {
        accumulate(&mut self.grads, tensor.id(), grad);
    }

    /// Number of stored gradients.
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// Whether no gradient is stored.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}

fn accumulate(grads: &mut HashMap<TensorId, Tensor>, id: TensorId, grad: Tensor) {
    match grads.remove(&id) {
        None => {
            grads.insert(id, grad);
        }
        Some(existing) => {
            let shape = existing.shape();
            let mut sum = existing.into_vec();
            add_assign(&mut sum, grad.data());
            grads.insert(id, Tensor::from_vec(shape, sum));
        }
    }
}

impl Tensor {
    /// Backward pass from a one-element tensor (a loss): gradients of every
    /// leaf that requires one.
    ///
    /// # Panics
    /// When the tensor has more than one element.
    #[track_caller]
    pub fn backward(&self) -> GradStore {
        assert_eq!(
            self.numel(),
            1,
            "backward() needs a one-element loss, got shape {:?}",
            self.shape()
        );
        self.backward_with(Tensor::full(self.shape(), 1.0))
    }

    /// Backward pass seeded with `grad_output` (the gradient of some scalar
    /// with respect to this tensor).
    ///
    /// # Panics
    /// When `grad_output`'s shape differs from this tensor's.
    #[track_caller]
    pub fn backward_with(&self, grad_output: Tensor) -> GradStore {
        let mut store = GradStore::default();
        self.backward_streaming(grad_output, |leaf, grad| store.accumulate(leaf, grad));
        store
    }

    /// Backward pass that hands each leaf's gradient to `on_leaf` as soon
    /// as it is final, instead of keeping them all to the end: the
    /// data-parallel worker starts all-reducing the last layers' gradients
    /// while backward is still computing the first layers'.
    ///
    /// A leaf's gradient is final when the walk reaches the leaf itself:
    /// the walk is in reverse topological order, so every op that uses the
    /// leaf has already passed its contribution on. `on_leaf` is called once
    /// per leaf the loss depends on, in the order backward finishes them
    /// (roughly last layers first).
    ///
    /// # Panics
    /// When `grad_output`'s shape differs from this tensor's.
    #[track_caller]
    pub fn backward_streaming(
        &self,
        grad_output: Tensor,
        mut on_leaf: impl FnMut(&Tensor, Tensor),
    ) {
        assert_eq!(
            grad_output.shape(),
            self.shape(),
            "backward_with: seed shape"
        );
        if !self.requires_grad() {
            return;
        }
        let order = topological_order(self);
        let mut pending: HashMap<TensorId, Tensor> = HashMap::new();
        pending.insert(self.id(), grad_output);
        no_grad(|| {
            for node in order.iter().rev() {
                let Some(grad) = pending.remove(&node.id()) else {
                    continue;
                };
                match node.origin() {
                    Origin::Constant => {}
                    Origin::Leaf => on_leaf(node, grad),
                    Origin::Op { op, inputs } => {
                        let input_grads = op.backward(inputs, node, &grad);
                        debug_assert_eq!(input_grads.len(), inputs.len(), "{}", op.name());
                        for (input, g) in inputs.iter().zip(input_grads) {
                            if let Some(g) = g
                                && input.requires_grad()
                            {
                                assert_eq!(
                                    g.shape(),
                                    input.shape(),
                                    "backward of {} gave a gradient of the wrong shape",
                                    op.name()
                                );
                                accumulate(&mut pending, input.id(), g);
                            }
                        }
                    }
                }
            }
        });
    }
}

/// Nodes reachable from `root` that require a gradient, in topological
/// order (inputs before the ops that use them). Iterative: deep graphs
/// (long unrolled recurrences) do not overflow the stack.
fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut visited = std::collections::HashSet::new();
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            order.push(node);
            continue;
        }
        if !visited.insert(node.id()) {
            continue;
        }
        stack.push((node.clone(), true));
        if let Origin::Op { inputs, .. } = node.origin() {
            for input in inputs.iter().rev() {
                if input.requires_grad() && !visited.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order
}
