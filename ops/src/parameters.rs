//! [`ParameterSet`]: a model's trainable tensors, named and ordered as
//! PyTorch's `state_dict`.
use crate::tensor::Tensor;

/// Named parameter tensors in a fixed order (the order of the reference
/// module's `state_dict`). Each tensor is a leaf that requires a gradient.
#[derive(Clone, Debug, Default)]
pub struct ParameterSet {
    entries: Vec<(String, Tensor)>,
}

impl ParameterSet {
    /// An empty set.
    pub fn new() -> ParameterSet {
        ParameterSet::default()
    }

    /// Appends a parameter (made a gradient-requiring leaf).
    ///
    /// # Panics
    /// When the name is already present.
    #[track_caller]
    pub fn insert(&mut self, name: impl Into<String>, value: Tensor) {
        let name = name.into();
        assert!(
            self.index_of(&name).is_none(),
            "parameter `{name}` inserted twice"
        );
        let value = if value.is_leaf_parameter() {
            value
        } else {
            value.as_parameter()
        };
        self.entries.push((name, value));
    }

    /// The position of a parameter.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|(n, _)| n == name)
    }

    /// The parameter called `name`, if any.
    pub fn try_get(&self, name: &str) -> Option<&Tensor> {
        self.index_of(name).map(|i| &self.entries[i].1)
    }

    /// The parameter called `name`.
    ///
    /// # Panics
    /// When there is none (a programming error inside a model).
    #[track_caller]
    pub fn get(&self, name: &str) -> &Tensor {
        self.try_get(name).unwrap_or_else(|| {
            panic!(
                "no parameter `{name}`; have {:?}",
                self.names().collect::<Vec<_>>()
            )
        })
    }

    /// Replaces the value of parameter `index` (made a gradient-requiring leaf).
    ///
    /// # Panics
    /// When the shape differs from the current one.
    #[track_caller]
    pub fn replace(&mut self, index: usize, value: Tensor) {
        let (name, old) = &self.entries[index];
        assert_eq!(
            old.shape(),
            value.shape(),
            "replacing parameter `{name}` with another shape"
        );
        self.entries[index].1 = if value.is_leaf_parameter() {
            value
        } else {
            value.as_parameter()
        };
    }

    /// Names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// (name, tensor) pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total number of scalar elements.
    pub fn numel(&self) -> usize {
        self.entries.iter().map(|(_, t)| t.numel()).sum()
    }

    /// The linear layer `name` of PyTorch applied to `x`: `x @ W^T + b`
    /// with `W` the parameter `name.weight` and `b` the parameter
    /// `name.bias` when the layer has one.
    ///
    /// # Panics
    /// When there is no `name.weight` (a programming error inside a model).
    #[track_caller]
    pub fn linear(&self, x: &Tensor, name: &str) -> Tensor {
        let weight = self.get(&format!("{name}.weight"));
        x.linear(weight, self.try_get(&format!("{name}.bias")))
    }
}
