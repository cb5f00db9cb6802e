//! Compressed sparse row (CSR) matrices times dense matrices.
//!
//! Each output row is computed by one task, adding its nonzeros in column
//! order, so the result does not depend on the thread count.
use faer::Par;

use crate::error::OpsError;
use crate::kernels::elementwise::wide;
use crate::kernels::scan::for_each_item;

/// A sparse (rows x cols) f32 matrix in compressed sparse row form: the
/// nonzeros of row `r` are `values[row_offsets[r]..row_offsets[r + 1]]` at
/// columns `column_indices[...]` (increasing within a row).
#[derive(Clone, Debug, PartialEq)]
pub struct CsrMatrix {
    rows: usize,
    cols: usize,
    row_offsets: Vec<usize>,
    column_indices: Vec<usize>,
    values: Vec<f32>,
}

impl CsrMatrix {
    /// A matrix from (row, column, value) triplets; entries at the same
    /// position are added.
    ///
    /// # Errors
    /// [`OpsError::IndexOutOfRange`] when an index is outside the matrix.
    pub fn from_triplets(
        rows: usize,
        cols: usize,
        triplets: &[(usize, usize, f32)],
    ) -> Result<CsrMatrix, OpsError> {
        for &(r, c, _) in triplets {
            if r >= rows {
                return Err(OpsError::IndexOutOfRange {
                    what: "sparse matrix row".into(),
                    index: r as i64,
                    bound: rows,
                });
            }
            if c >= cols {
                return Err(OpsError::IndexOutOfRange {
                    what: "sparse matrix column".into(),
                    index: c as i64,
                    bound: cols,
                });
            }
        }
        let mut sorted = triplets.to_vec();
        sorted.sort_by_key(|&(r, c, _)| (r, c));
        let mut row_offsets = vec![0usize; rows + 1];
        let mut column_indices = Vec::with_capacity(sorted.len());
        let mut values: Vec<f32> = Vec::with_capacity(sorted.len());
        let mut last: Option<(usize, usize)> = None;
        for (r, c, v) in sorted {
            if last == Some((r, c)) {
                *values.last_mut().expect("a previous entry") += v;
                continue;
            }
            last = Some((r, c));
            column_indices.push(c);
            values.push(v);
            row_offsets[r + 1] += 1;
        }
        for r in 0..rows {
            row_offsets[r + 1] += row_offsets[r];
        }
        Ok(CsrMatrix {
            rows,
            cols,
            row_offsets,
            column_indices,
            values,
        })
    }

    /// The symmetric normalized adjacency of a graph convolutional network
    /// (Kipf & Welling): `D^-1/2 (A + I) D^-1/2` over `nodes` nodes with
    /// `A[dst, src] = 1` for each edge (repeated edges count once), `D` the
    /// row sums of `A + I`; as `normalized_adjacency` of the reference.
    ///
    /// # Errors
    /// [`OpsError::IndexOutOfRange`] for a node index outside `0..nodes`,
    /// [`OpsError::InvalidShape`] when `src` and `dst` differ in length.
    pub fn gcn_normalized(nodes: usize, src: &[i64], dst: &[i64]) -> Result<CsrMatrix, OpsError> {
        if src.len() != dst.len() {
            return Err(OpsError::InvalidShape {
                shape: vec![src.len(), dst.len()],
                reason: "edge lists `src` and `dst` differ in length".into(),
            });
        }
        let node = |i: i64, what: &str| {
            usize::try_from(i)
                .ok()
                .filter(|&i| i < nodes)
                .ok_or_else(|| OpsError::IndexOutOfRange {
                    what: format!("edge {what}"),
                    index: i,
                    bound: nodes,
                })
        };
        let mut edges = Vec::with_capacity(src.len());
        for (&s, &d) in src.iter().zip(dst) {
            edges.push((node(d, "dst")?, node(s, "src")?));
        }
        edges.sort_unstable();
        edges.dedup();
        // A + I: an explicit self-loop edge makes the diagonal 2, as in the reference
        let mut triplets: Vec<(usize, usize, f32)> =
            edges.into_iter().map(|(r, c)| (r, c, 1.0)).collect();
        triplets.extend((0..nodes).map(|i| (i, i, 1.0)));
        let mut matrix = CsrMatrix::from_triplets(nodes, nodes, &triplets)?;
        let scale: Vec<f32> = (0..nodes)
            .map(|r| {
                let sum: f32 = matrix.values[matrix.row_offsets[r]..matrix.row_offsets[r + 1]]
                    .iter()
                    .sum();
                1.0 / sum.sqrt()
            })
            .collect();
        for r in 0..nodes {
            for i in matrix.row_offsets[r]..matrix.row_offsets[r + 1] {
                let c = matrix.column_indices[i];
                matrix.values[i] = scale[r] * matrix.values[i] * scale[c];
            }
        }
        Ok(matrix)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of stored nonzeros.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// Row offsets (`rows + 1` entries).
    pub fn row_offsets(&self) -> &[usize] {
        &self.row_offsets
    }

    /// Column index of each nonzero.
    pub fn column_indices(&self) -> &[usize] {
        &self.column_indices
    }

    /// Value of each nonzero.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The transpose, in CSR form.
    pub fn transpose(&self) -> CsrMatrix {
        let mut counts = vec![0usize; self.cols + 1];
        for &c in &self.column_indices {
            counts[c + 1] += 1;
        }
        for c in 0..self.cols {
            counts[c + 1] += counts[c];
        }
        let mut next = counts.clone();
        let mut column_indices = vec![0; self.nnz()];
        let mut values = vec![0.0; self.nnz()];
        for r in 0..self.rows {
            for i in self.row_offsets[r]..self.row_offsets[r + 1] {
                let c = self.column_indices[i];
                column_indices[next[c]] = r;
                values[next[c]] = self.values[i];
                next[c] += 1;
            }
        }
        CsrMatrix {
            rows: self.cols,
            cols: self.rows,
            row_offsets: counts,
            column_indices,
            values,
        }
    }

    /// The dense (rows x cols) matrix, row-major.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for r in 0..self.rows {
            for i in self.row_offsets[r]..self.row_offsets[r + 1] {
                out[r * self.cols + self.column_indices[i]] += self.values[i];
            }
        }
        out
    }
}

/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 64;

/// `dst (rows x n) = matrix (rows x cols) @ dense (cols x n)`, row-major.
///
/// # Panics
/// When a slice's length does not match the dimensions.
#[track_caller]
pub fn csr_matmul(par: Par, dst: &mut [f32], matrix: &CsrMatrix, dense: &[f32], n: usize) {
    assert_eq!(dst.len(), matrix.rows * n, "csr_matmul: destination length");
    assert_eq!(
        dense.len(),
        matrix.cols * n,
        "csr_matmul: dense operand length"
    );
    if dst.is_empty() {
        return;
    }
    let pieces: Vec<(usize, &mut [f32])> = dst.chunks_mut(ROWS_PER_TASK * n).enumerate().collect();
    for_each_item(par, pieces, |(task, out)| {
        wide!(|| {
            for (local, o) in out.chunks_mut(n).enumerate() {
                let r = task * ROWS_PER_TASK + local;
                o.fill(0.0);
                for i in matrix.row_offsets[r]..matrix.row_offsets[r + 1] {
                    let column = matrix.column_indices[i];
                    add_scaled(o, matrix.values[i], &dense[column * n..(column + 1) * n]);
                }
            }
        });
    });
}

/// `out += scale * row`, elementwise (a function of its own so that the
/// slices are known not to alias, also when inlined).
#[inline(always)]
fn add_scaled(out: &mut [f32], scale: f32, row: &[f32]) {
    for (o, &x) in out.iter_mut().zip(row) {
        *o += scale * x;
    }
}
