//! Tensor shapes (up to four dimensions) and numpy-style broadcasting rules.
use std::fmt;

/// The most dimensions a [`Shape`] may have.
pub const MAX_RANK: usize = 4;

/// The dimensions of a tensor: rank 0 (a scalar) to [`MAX_RANK`], row-major.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    dims: [usize; MAX_RANK],
    rank: u8,
}

impl Shape {
    /// The shape of a scalar.
    pub const SCALAR: Shape = Shape {
        dims: [0; MAX_RANK],
        rank: 0,
    };

    /// A shape from its dimensions.
    ///
    /// # Panics
    /// When there are more than [`MAX_RANK`] dimensions.
    #[track_caller]
    pub fn new(dims: &[usize]) -> Shape {
        assert!(
            dims.len() <= MAX_RANK,
            "shape {dims:?} has more than {MAX_RANK} dimensions"
        );
        let mut d = [0; MAX_RANK];
        d[..dims.len()].copy_from_slice(dims);
        Shape {
            dims: d,
            rank: dims.len() as u8,
        }
    }

    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank as usize]
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.rank as usize
    }

    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.dims().iter().product()
    }

    /// Size of dimension `axis`; negative axes count from the end.
    #[track_caller]
    pub fn dim(&self, axis: isize) -> usize {
        self.dims()[self.axis(axis)]
    }

    /// Resolves a possibly negative axis to an index.
    ///
    /// # Panics
    /// When the axis is out of range.
    #[track_caller]
    pub fn axis(&self, axis: isize) -> usize {
        let rank = self.rank() as isize;
        let resolved = if axis < 0 { axis + rank } else { axis };
        assert!(
            (0..rank).contains(&resolved),
            "axis {axis} out of range for shape {self:?}"
        );
        resolved as usize
    }

    /// Row-major strides, in elements.
    pub fn strides(&self) -> [usize; MAX_RANK] {
        let mut strides = [0; MAX_RANK];
        let mut acc = 1;
        for i in (0..self.rank()).rev() {
            strides[i] = acc;
            acc *= self.dims[i];
        }
        strides
    }

    /// (outer, size of `axis`, inner) element counts around an axis.
    #[track_caller]
    pub fn split_at_axis(&self, axis: isize) -> (usize, usize, usize) {
        let a = self.axis(axis);
        let d = self.dims();
        (d[..a].iter().product(), d[a], d[a + 1..].iter().product())
    }

    /// The same shape with dimension `axis` replaced by `size`.
    #[track_caller]
    pub fn with_dim(&self, axis: isize, size: usize) -> Shape {
        let mut s = *self;
        s.dims[self.axis(axis)] = size;
        s
    }

    /// The broadcast shape of `a` and `b` (numpy rules), or `None`.
    pub fn broadcast(a: &Shape, b: &Shape) -> Option<Shape> {
        let rank = a.rank().max(b.rank());
        let mut out = [0; MAX_RANK];
        for (i, slot) in out.iter_mut().enumerate().take(rank) {
            let da = if i < rank - a.rank() {
                1
            } else {
                a.dims[i - (rank - a.rank())]
            };
            let db = if i < rank - b.rank() {
                1
            } else {
                b.dims[i - (rank - b.rank())]
            };
            *slot = match (da, db) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => return None,
            };
        }
        Some(Shape {
            dims: out,
            rank: rank as u8,
        })
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.dims())
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Shape {
        Shape::new(d)
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Shape {
        Shape::new(&d)
    }
}
