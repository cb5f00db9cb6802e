//! Indexing ops: `index_select` along an axis (and the embedding lookup
//! built on it), `gather` along the last axis, row selection by a mask, and
//! the diagonal of a square matrix. Their backward scatter-adds in index
//! order, so repeated indices are summed in a fixed order.
use crate::autograd::Backward;
use crate::kernels::elementwise::wide;
use crate::parallel::{current_parallelism, filled_by_chunks, is_parallel};
use crate::shape::Shape;
use crate::tensor::{IndexTensor, Tensor};

/// `index` as a position below `size`.
///
/// # Panics
/// When it is negative or not below `size`.
#[track_caller]
fn position(op: &str, index: i64, size: usize) -> usize {
    assert!(
        (0..size as i64).contains(&index),
        "{op}: index {index} outside 0..{size}"
    );
    index as usize
}

impl IndexTensor {
    /// Positions (as a 1-D index tensor) of the non-zero entries, in order,
    /// as `torch.nonzero(mask).flatten()` for a 1-D mask.
    pub fn nonzero_positions(&self) -> IndexTensor {
        let positions: Vec<i64> = self
            .data()
            .iter()
            .enumerate()
            .filter(|&(_, &v)| v != 0)
            .map(|(i, _)| i as i64)
            .collect();
        IndexTensor::from_vec([positions.len()], positions)
    }

    /// The entries at `positions` (1-D) of a 1-D index tensor, as
    /// `labels[positions]`.
    ///
    /// # Panics
    /// When `self` is not 1-D or a position is out of range.
    #[track_caller]
    pub fn select(&self, positions: &IndexTensor) -> IndexTensor {
        assert_eq!(
            self.shape().rank(),
            1,
            "IndexTensor::select on {:?}",
            self.shape()
        );
        let data: Vec<i64> = positions
            .data()
            .iter()
            .map(|&p| self.data()[position("IndexTensor::select", p, self.numel())])
            .collect();
        IndexTensor::from_vec([data.len()], data)
    }
}

/// The rows of `weight` (`(vocabulary, dim)`) named by `indices` (any shape
/// of rank up to 3): output `(*indices.shape, dim)`, as
/// `torch.nn.functional.embedding`. The backward scatter-adds into the
/// weight in index order.
///
/// # Panics
/// When `weight` is not a matrix or an index is out of range.
#[track_caller]
pub fn embedding(weight: &Tensor, indices: &IndexTensor) -> Tensor {
    assert_eq!(
        weight.rank(),
        2,
        "embedding: weight must be (vocabulary, dim), got {:?}",
        weight.shape()
    );
    let mut dims = indices.dims().to_vec();
    dims.push(weight.dim(1));
    let flat = indices.reshape([indices.numel()]);
    let (_, data) = select_along(weight, 0, &flat, "embedding");
    Tensor::from_op(
        Shape::new(&dims),
        data,
        &[weight],
        IndexSelectBackward {
            axis: 0,
            indices: flat,
        },
    )
}

/// `(shape, data)` of `t` restricted to the entries `indices` (1-D) of `axis`.
#[track_caller]
fn select_along(t: &Tensor, axis: isize, indices: &IndexTensor, op: &str) -> (Shape, Vec<f32>) {
    assert_eq!(
        indices.shape().rank(),
        1,
        "{op}: indices must be 1-D, got {:?}",
        indices.shape()
    );
    let shape = t.shape();
    let (outer, n, inner) = shape.split_at_axis(axis);
    let positions: Vec<usize> = indices.data().iter().map(|&i| position(op, i, n)).collect();
    let x = t.data();
    let mut out = Vec::with_capacity(outer * positions.len() * inner);
    for o in 0..outer {
        for &p in &positions {
            let src = (o * n + p) * inner;
            out.extend_from_slice(&x[src..src + inner]);
        }
    }
    (shape.with_dim(axis, positions.len()), out)
}

impl Tensor {
    /// The entries `indices` (1-D, repeats allowed) of `axis`, as
    /// `torch.index_select`.
    ///
    /// # Panics
    /// When an index is out of range.
    #[track_caller]
    pub fn index_select(&self, axis: isize, indices: &IndexTensor) -> Tensor {
        let (shape, data) = select_along(self, axis, indices, "index_select");
        Tensor::from_op(
            shape,
            data,
            &[self],
            IndexSelectBackward {
                axis,
                indices: indices.clone(),
            },
        )
    }

    /// The rows (entries of the first axis) where `mask` (1-D, one entry per
    /// row) is non-zero, as `x[mask.bool()]`.
    ///
    /// # Panics
    /// When the mask's length differs from the number of rows.
    #[track_caller]
    pub fn rows_where(&self, mask: &IndexTensor) -> Tensor {
        assert_eq!(
            mask.dims(),
            [self.dim(0)],
            "rows_where: mask {:?} for {:?}",
            mask.shape(),
            self.shape()
        );
        self.index_select(0, &mask.nonzero_positions())
    }

    /// `out[..., k] = self[..., index[..., k]]`: gathers along the last axis,
    /// as `torch.gather(x, -1, index)`. `index` has the same leading
    /// dimensions as `self`.
    ///
    /// # Panics
    /// When the leading dimensions differ or an index is out of range.
    #[track_caller]
    pub fn gather_last(&self, index: &IndexTensor) -> Tensor {
        let rank = self.rank();
        assert!(
            rank >= 1
                && index.shape().rank() == rank
                && index.dims()[..rank - 1] == self.dims()[..rank - 1],
            "gather_last: index {:?} does not fit {:?}",
            index.shape(),
            self.shape()
        );
        let n = self.dim(-1);
        let k = index.dims()[rank - 1];
        let x = self.data();
        let data: Vec<f32> = index
            .data()
            .iter()
            .enumerate()
            .map(|(i, &j)| x[(i / k.max(1)) * n + position("gather_last", j, n)])
            .collect();
        Tensor::from_op(
            index.shape(),
            data,
            &[self],
            GatherLastBackward {
                index: index.clone(),
            },
        )
    }

    /// The diagonal of a square matrix, as `torch.diagonal`.
    ///
    /// # Panics
    /// When `self` is not a square matrix.
    #[track_caller]
    pub fn diagonal(&self) -> Tensor {
        assert!(
            self.rank() == 2 && self.dim(0) == self.dim(1),
            "diagonal: not a square matrix: {:?}",
            self.shape()
        );
        let n = self.dim(0);
        let data = (0..n).map(|i| self.data()[i * n + i]).collect();
        Tensor::from_op([n], data, &[self], DiagonalBackward)
    }
}

struct IndexSelectBackward {
    axis: isize,
    indices: IndexTensor,
}

impl Backward for IndexSelectBackward {
    fn name(&self) -> &'static str {
        "index_select"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let shape = inputs[0].shape();
        let (outer, n, inner) = shape.split_at_axis(self.axis);
        let selected = self.indices.numel();
        let g = grad.data();
        let mut out = vec![0.0; shape.numel()];
        for o in 0..outer {
            for (s, &p) in self.indices.data().iter().enumerate() {
                let dst = (o * n + p as usize) * inner;
                let src = (o * selected + s) * inner;
                for (d, &v) in out[dst..dst + inner].iter_mut().zip(&g[src..src + inner]) {
                    *d += v;
                }
            }
        }
        vec![Some(Tensor::from_vec(shape, out))]
    }
}

struct GatherLastBackward {
    index: IndexTensor,
}

impl Backward for GatherLastBackward {
    fn name(&self) -> &'static str {
        "gather_last"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let shape = inputs[0].shape();
        let n = shape.dim(-1);
        let k = grad.dim(-1).max(1);
        let mut out = vec![0.0; shape.numel()];
        for (i, (&j, &g)) in self.index.data().iter().zip(grad.data()).enumerate() {
            out[(i / k) * n + j as usize] += g;
        }
        vec![Some(Tensor::from_vec(shape, out))]
    }
}

struct DiagonalBackward;

impl Backward for DiagonalBackward {
    fn name(&self) -> &'static str {
        "diagonal"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let n = grad.numel();
        let mut out = vec![0.0; n * n];
        for (i, &g) in grad.data().iter().enumerate() {
            out[i * n + i] = g;
        }
        vec![Some(Tensor::from_vec(inputs[0].shape(), out))]
    }
}

/// `current[tokens[b, t]] + previous[tokens[b, t - 1]]` (the second term
/// only for `t > 0`) for `tokens` (batch, time) and two (vocabulary, dim)
/// tables: output (batch, time, dim). This is a linear map of the
/// embeddings of a causal window of two tokens, when the tables are the
/// embedding projected by each half of the map (QRNN's first layer). The
/// backward scatter-adds in token order.
///
/// # Panics
/// When `tokens` is not (batch, time), the tables differ in shape, or a
/// token is out of range.
#[track_caller]
pub fn causal_pair_embedding(previous: &Tensor, current: &Tensor, tokens: &IndexTensor) -> Tensor {
    let (shape, backward) = causal_pair_embedding_lookup(previous, current, tokens);
    let (time, dim) = (backward.time, shape.dim(2));
    let (prev, cur) = (previous.data(), current.data());
    // One batch entry per piece, in parallel when allowed.
    let fill = |b, out: &mut [std::mem::MaybeUninit<f32>]| {
        let positions = &backward.positions[b * time..(b + 1) * time];
        wide!(pair_lookup(out, positions, (prev, cur)));
    };
    #[allow(unsafe_code)]
    // SAFETY: `pair_lookup` writes every element of its piece.
    let out = unsafe { filled_by_chunks(current_parallelism(), shape.numel(), time * dim, fill) };
    Tensor::from_op(shape, out, &[previous, current], backward)
}

/// The checks of [`causal_pair_embedding`], its output's shape and its
/// backward (which holds the tokens' table rows, `positions()`), without
/// the lookup: for ops that fuse the lookup with what follows it, through
/// [`pair_lookup`].
#[track_caller]
pub(crate) fn causal_pair_embedding_lookup(
    previous: &Tensor,
    current: &Tensor,
    tokens: &IndexTensor,
) -> (Shape, CausalPairEmbeddingBackward) {
    assert_eq!(
        current.rank(),
        2,
        "causal_pair_embedding: tables must be (vocabulary, dim), got {:?}",
        current.shape()
    );
    assert_eq!(
        previous.dims(),
        current.dims(),
        "causal_pair_embedding: the tables differ in shape"
    );
    assert_eq!(
        tokens.dims().len(),
        2,
        "causal_pair_embedding: tokens must be (batch, time), got {:?}",
        tokens.dims()
    );
    let (batch, time) = (tokens.dims()[0], tokens.dims()[1]);
    let (vocabulary, dim) = (current.dim(0), current.dim(1));
    let positions: Vec<usize> = tokens
        .data()
        .iter()
        .map(|&i| position("causal_pair_embedding", i, vocabulary))
        .collect();
    (
        Shape::from([batch, time, dim]),
        CausalPairEmbeddingBackward { positions, time },
    )
}

/// The lookup of [`causal_pair_embedding`] for one sequence: row `t` of
/// `out` (time, dim) is `current[positions[t]] + previous[positions[t - 1]]`
/// (the current row alone at `t = 0`); `tables` are `(previous, current)`,
/// (vocabulary, dim) each. Writes every element of `out`, which may be
/// uninitialized memory ([`OutputSlot`]).
#[inline(always)]
pub(crate) fn pair_lookup<Slot: OutputSlot>(
    out: &mut [Slot],
    positions: &[usize],
    (previous, current): (&[f32], &[f32]),
) {
    let dim = out.len() / positions.len().max(1);
    assert_eq!(out.len(), positions.len() * dim, "pair_lookup: lengths");
    for (t, (out, &p)) in out.chunks_exact_mut(dim.max(1)).zip(positions).enumerate() {
        let row = &current[p * dim..(p + 1) * dim];
        if t == 0 {
            for (o, &c) in out.iter_mut().zip(row) {
                o.set(c);
            }
        } else {
            let q = positions[t - 1];
            for ((o, &c), &p) in out.iter_mut().zip(row).zip(&previous[q * dim..]) {
                o.set(c + p);
            }
        }
    }
}

/// An element a kernel writes its result into: an `f32`, or one not
/// initialized yet.
pub(crate) trait OutputSlot {
    /// Stores `value`.
    fn set(&mut self, value: f32);
}

impl OutputSlot for f32 {
    #[inline(always)]
    fn set(&mut self, value: f32) {
        *self = value;
    }
}

impl OutputSlot for std::mem::MaybeUninit<f32> {
    #[inline(always)]
    fn set(&mut self, value: f32) {
        self.write(value);
    }
}

/// Backward of [`causal_pair_embedding`]; its inputs are the two tables.
/// It never reads its op's output.
pub(crate) struct CausalPairEmbeddingBackward {
    positions: Vec<usize>,
    time: usize,
}

impl CausalPairEmbeddingBackward {
    /// The table row of each token, (batch, time) flattened.
    pub(crate) fn positions(&self) -> &[usize] {
        &self.positions
    }
}

impl Backward for CausalPairEmbeddingBackward {
    fn name(&self) -> &'static str {
        "causal_pair_embedding"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let shape = inputs[1].shape();
        let dim = shape.dim(1);
        let g = grad.data();
        let time = self.time.max(1);
        // Row `i` of the gradient goes to the current table's row of token
        // `i` and, past each sequence's first step, to the previous table's
        // row of token `i - 1`; each table sums its rows in ascending `i`.
        let scatter = |shift: usize| {
            let mut out = vec![0.0f32; shape.numel()];
            wide!(|| {
                for i in 0..self.positions.len() {
                    if i % time < shift {
                        continue;
                    }
                    let q = self.positions[i - shift];
                    add_row(&mut out[q * dim..(q + 1) * dim], &g[i * dim..(i + 1) * dim]);
                }
            });
            Tensor::from_vec(shape, out)
        };
        let (previous_needed, current_needed) =
            (inputs[0].requires_grad(), inputs[1].requires_grad());
        if !(previous_needed && current_needed) {
            return vec![
                previous_needed.then(|| scatter(1)),
                current_needed.then(|| scatter(0)),
            ];
        }
        if is_parallel(current_parallelism()) {
            // side by side, each table one pass over the gradient
            let (previous, current) = rayon::join(|| scatter(1), || scatter(0));
            return vec![Some(previous), Some(current)];
        }
        // On one thread, both tables in one pass over the gradient, each in
        // the order of its own pass: the same bits.
        let mut previous = vec![0.0f32; shape.numel()];
        let mut current = vec![0.0f32; shape.numel()];
        wide!(|| {
            for i in 0..self.positions.len() {
                let row = &g[i * dim..(i + 1) * dim];
                let q = self.positions[i];
                add_row(&mut current[q * dim..(q + 1) * dim], row);
                if i % time >= 1 {
                    let q = self.positions[i - 1];
                    add_row(&mut previous[q * dim..(q + 1) * dim], row);
                }
            }
        });
        vec![
            Some(Tensor::from_vec(shape, previous)),
            Some(Tensor::from_vec(shape, current)),
        ]
    }
}

/// `sum += row`, elementwise (a function of its own so that the two slices
/// are known not to alias, also when inlined).
#[inline(always)]
fn add_row(sum: &mut [f32], row: &[f32]) {
    for (s, &v) in sum.iter_mut().zip(row) {
        *s += v;
    }
}
