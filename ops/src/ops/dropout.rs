//! Inverted dropout with a mask from the counter-based generator.
//!
//! Element `i` of the input is kept when the uniform at index `start + i`
//! of the given stream is at least `p`, and kept elements are scaled by
//! `1 / (1 - p)`. The mask is a pure function of (seed, stream, element
//! index), so the same sample gets the same mask on whichever worker it is
//! processed; backward multiplies by the same mask.
use crate::autograd::Backward;
use crate::kernels::elementwise::zip_map;
use crate::parallel::current_parallelism;
use crate::rng::RandomStream;
use crate::tensor::Tensor;

/// The dropout multipliers (0 or `1 / (1 - p)`) of elements
/// `start..start + len` of `stream`.
pub fn dropout_mask(stream: &RandomStream, start: u64, len: usize, p: f32) -> Vec<f32> {
    let mut mask = vec![0.0; len];
    if p >= 1.0 {
        return mask;
    }
    let keep_scale = 1.0 / (1.0 - p);
    stream.fill_uniform(start, 0.0, 1.0, &mut mask);
    for m in mask.iter_mut() {
        *m = if *m >= p { keep_scale } else { 0.0 };
    }
    mask
}

impl Tensor {
    /// Inverted dropout with drop probability `p`: elements are zeroed
    /// where the uniform at `start + i` of `stream` is below `p`, and the
    /// others scaled by `1 / (1 - p)` (`p = 1` zeroes everything, as PyTorch).
    /// Call it only in training; at evaluation dropout is the identity.
    ///
    /// # Panics
    /// When `p` is not in `[0, 1]`.
    #[track_caller]
    pub fn dropout(&self, p: f32, stream: &RandomStream, start: u64) -> Tensor {
        assert!(
            (0.0..=1.0).contains(&p),
            "dropout: probability {p} is not in [0, 1]"
        );
        let mask = dropout_mask(stream, start, self.numel(), p);
        let data = zip_map(current_parallelism(), self.data(), &mask, |x, m| x * m);
        Tensor::from_op(self.shape(), data, &[self], DropoutBackward { mask })
    }
}

struct DropoutBackward {
    mask: Vec<f32>,
}

impl Backward for DropoutBackward {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, grad: &Tensor) -> Vec<Option<Tensor>> {
        let g = zip_map(current_parallelism(), grad.data(), &self.mask, |g, m| g * m);
        vec![Some(Tensor::from_vec(inputs[0].shape(), g))]
    }
}
