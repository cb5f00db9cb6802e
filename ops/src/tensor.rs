//! [`Tensor`] (f32) and [`IndexTensor`] (i64): contiguous, row-major, shared data.
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::autograd::{self, Backward};
use crate::shape::Shape;

/// Identifies one tensor node; gradients are keyed by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn fresh() -> TensorId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Where a tensor's value came from, which decides how gradients reach it.
pub(crate) enum Origin {
    /// Needs no gradient.
    Constant,
    /// A leaf that requires a gradient (a parameter, or an input under test).
    Leaf,
    /// The output of a recorded op.
    Op {
        op: Box<dyn Backward>,
        inputs: Vec<Tensor>,
    },
}

pub(crate) struct Inner {
    pub(crate) id: TensorId,
    pub(crate) shape: Shape,
    pub(crate) data: Arc<Vec<f32>>,
    pub(crate) origin: Origin,
}

/// An f32 tensor: contiguous, row-major, up to four dimensions.
///
/// Cloning is cheap (the node and its data are shared). A tensor is
/// immutable; optimizers produce new parameter tensors.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

impl Tensor {
    fn with_origin(shape: Shape, data: Arc<Vec<f32>>, origin: Origin) -> Tensor {
        assert_eq!(
            shape.numel(),
            data.len(),
            "shape {shape:?} needs {} elements, got {}",
            shape.numel(),
            data.len()
        );
        Tensor(Arc::new(Inner {
            id: TensorId::fresh(),
            shape,
            data,
            origin,
        }))
    }

    /// A constant tensor (no gradient) from its data.
    ///
    /// # Panics
    /// When `data.len()` differs from the shape's element count.
    #[track_caller]
    pub fn from_vec(shape: impl Into<Shape>, data: Vec<f32>) -> Tensor {
        Tensor::with_origin(shape.into(), Arc::new(data), Origin::Constant)
    }

    /// A constant tensor sharing already shared data.
    #[track_caller]
    pub fn from_shared(shape: impl Into<Shape>, data: Arc<Vec<f32>>) -> Tensor {
        Tensor::with_origin(shape.into(), data, Origin::Constant)
    }

    /// A leaf that requires a gradient (a trainable parameter).
    #[track_caller]
    pub fn parameter(shape: impl Into<Shape>, data: Vec<f32>) -> Tensor {
        Tensor::with_origin(shape.into(), Arc::new(data), Origin::Leaf)
    }

    /// A scalar constant.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::from_vec(Shape::SCALAR, vec![value])
    }

    /// A constant filled with zeros.
    pub fn zeros(shape: impl Into<Shape>) -> Tensor {
        let shape = shape.into();
        Tensor::from_vec(shape, vec![0.0; shape.numel()])
    }

    /// A constant filled with `value`.
    pub fn full(shape: impl Into<Shape>, value: f32) -> Tensor {
        let shape = shape.into();
        Tensor::from_vec(shape, vec![value; shape.numel()])
    }

    /// A constant filled with ones.
    pub fn ones(shape: impl Into<Shape>) -> Tensor {
        Tensor::full(shape, 1.0)
    }

    /// Whether an op on `inputs` is recorded for backward (gradients are
    /// enabled and an input needs one): an op computes what only its
    /// backward needs only then.
    pub fn records_op(inputs: &[&Tensor]) -> bool {
        autograd::is_grad_enabled() && inputs.iter().any(|t| t.requires_grad())
    }

    /// The output of an op: recorded in the graph only when gradients are
    /// enabled and some input requires a gradient; otherwise a constant.
    ///
    /// This is the one place where ops enter the graph.
    #[track_caller]
    pub fn from_op(
        shape: impl Into<Shape>,
        data: Vec<f32>,
        inputs: &[&Tensor],
        op: impl Backward,
    ) -> Tensor {
        let shape = shape.into();
        if Tensor::records_op(inputs) {
            let inputs = inputs.iter().map(|t| (*t).clone()).collect();
            Tensor::with_origin(
                shape,
                Arc::new(data),
                Origin::Op {
                    op: Box::new(op),
                    inputs,
                },
            )
        } else {
            Tensor::from_vec(shape, data)
        }
    }

    /// Like [`Tensor::from_op`], for ops whose output shares its input's data
    /// (reshape).
    #[track_caller]
    pub fn from_op_shared(
        shape: impl Into<Shape>,
        data: Arc<Vec<f32>>,
        inputs: &[&Tensor],
        op: impl Backward,
    ) -> Tensor {
        let shape = shape.into();
        if Tensor::records_op(inputs) {
            let inputs = inputs.iter().map(|t| (*t).clone()).collect();
            Tensor::with_origin(
                shape,
                data,
                Origin::Op {
                    op: Box::new(op),
                    inputs,
                },
            )
        } else {
            Tensor::from_shared(shape, data)
        }
    }

    /// This node's identity (what [`crate::GradStore`] is keyed by).
    pub fn id(&self) -> TensorId {
        self.0.id
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        self.0.shape
    }

    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[usize] {
        self.0.shape.dims()
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.shape.rank()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.data.len()
    }

    /// Size of one dimension (negative counts from the end).
    #[track_caller]
    pub fn dim(&self, axis: isize) -> usize {
        self.0.shape.dim(axis)
    }

    /// The elements, row-major.
    pub fn data(&self) -> &[f32] {
        &self.0.data
    }

    /// The shared data buffer.
    pub fn shared_data(&self) -> &Arc<Vec<f32>> {
        &self.0.data
    }

    /// The elements as an owned vector (copies unless this is the only owner).
    pub fn into_vec(self) -> Vec<f32> {
        match Arc::try_unwrap(self.0) {
            Ok(inner) => Arc::unwrap_or_clone(inner.data),
            Err(shared) => shared.data.as_ref().clone(),
        }
    }

    /// The value of a one-element tensor.
    ///
    /// # Panics
    /// When the tensor has more than one element.
    #[track_caller]
    pub fn item(&self) -> f32 {
        assert_eq!(
            self.numel(),
            1,
            "item() of a tensor of shape {:?}",
            self.shape()
        );
        self.0.data[0]
    }

    /// Whether gradients flow to or through this tensor.
    pub fn requires_grad(&self) -> bool {
        !matches!(self.0.origin, Origin::Constant)
    }

    /// Whether this is a leaf that requires a gradient.
    pub fn is_leaf_parameter(&self) -> bool {
        matches!(self.0.origin, Origin::Leaf)
    }

    /// The same values, cut from the graph (a constant).
    pub fn detach(&self) -> Tensor {
        Tensor::from_shared(self.shape(), self.0.data.clone())
    }

    /// The same values as a new leaf that requires a gradient.
    pub fn as_parameter(&self) -> Tensor {
        Tensor::with_origin(self.shape(), self.0.data.clone(), Origin::Leaf)
    }

    pub(crate) fn origin(&self) -> &Origin {
        &self.0.origin
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = self.data();
        let shown = &data[..data.len().min(8)];
        write!(
            f,
            "Tensor{:?}{} {:?}{}",
            self.shape(),
            if self.requires_grad() { " grad" } else { "" },
            shown,
            if data.len() > 8 { " ..." } else { "" }
        )
    }
}

/// An integer tensor (indices, labels, tokens): contiguous, row-major.
#[derive(Clone, PartialEq, Eq)]
pub struct IndexTensor {
    shape: Shape,
    data: Arc<Vec<i64>>,
}

impl IndexTensor {
    /// An index tensor from its data.
    ///
    /// # Panics
    /// When `data.len()` differs from the shape's element count.
    #[track_caller]
    pub fn from_vec(shape: impl Into<Shape>, data: Vec<i64>) -> IndexTensor {
        let shape = shape.into();
        assert_eq!(shape.numel(), data.len(), "index tensor shape {shape:?}");
        IndexTensor {
            shape,
            data: Arc::new(data),
        }
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    /// The elements.
    pub fn data(&self) -> &[i64] {
        &self.data
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The same data with another shape of the same element count.
    #[track_caller]
    pub fn reshape(&self, shape: impl Into<Shape>) -> IndexTensor {
        let shape = shape.into();
        assert_eq!(
            shape.numel(),
            self.numel(),
            "reshape {:?} to {shape:?}",
            self.shape
        );
        IndexTensor {
            shape,
            data: self.data.clone(),
        }
    }
}

impl fmt::Debug for IndexTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.data[..self.data.len().min(8)];
        write!(f, "IndexTensor{:?} {:?}", self.shape, shown)
    }
}
