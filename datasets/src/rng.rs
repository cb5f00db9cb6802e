//! A counter-based random generator: every draw is a pure function of
//! (seed, stream, index), so any worker can recompute any draw without
//! sharing state, and the order in which draws are made does not matter.
//!
//! The mixing function is SplitMix64's finalizer (Steele, Lea and Flood,
//! 2014), applied once per input word. It is not cryptographic; it is
//! well distributed and cheap, which is what shuffles and synthetic data need.

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's finalizer: a bijection of `u64` with good avalanche.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The random word for (seed, stream, index).
pub fn random_u64(seed: u64, stream: u64, index: u64) -> u64 {
    let a = mix64(seed.wrapping_add(GOLDEN));
    let b = mix64(
        a ^ stream
            .wrapping_mul(GOLDEN)
            .wrapping_add(0x632b_e59b_d9b4_e019),
    );
    mix64(
        b ^ index
            .wrapping_mul(0xd6e8_feb8_6659_fd93)
            .wrapping_add(GOLDEN),
    )
}

/// One keyed stream of random numbers: `Keyed::new(seed, stream)` then draw
/// by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keyed {
    seed: u64,
    stream: u64,
}

impl Keyed {
    /// The stream `stream` of the generator seeded with `seed`.
    pub fn new(seed: u64, stream: u64) -> Self {
        Self { seed, stream }
    }

    /// The raw word at `index`.
    pub fn word(&self, index: u64) -> u64 {
        random_u64(self.seed, self.stream, index)
    }

    /// A number in `0..bound` (Lemire's multiply-high; the bias is at most
    /// `bound / 2^64`, negligible for the sizes used here).
    ///
    /// # Panics
    /// If `bound` is zero.
    pub fn below(&self, index: u64, bound: u64) -> u64 {
        assert!(bound > 0, "Keyed::below: bound must be positive");
        ((u128::from(self.word(index)) * u128::from(bound)) >> 64) as u64
    }

    /// A number uniform in `[0, 1)` with 53 random bits.
    pub fn unit(&self, index: u64) -> f64 {
        (self.word(index) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal draw (Box-Muller on the words at `2 * index` and
    /// `2 * index + 1`).
    pub fn normal(&self, index: u64) -> f64 {
        let u1 = 1.0 - self.unit(2 * index); // in (0, 1]
        let u2 = self.unit(2 * index + 1);
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A permutation of `0..len` (Fisher-Yates driven by this stream).
    pub fn permutation(&self, len: usize) -> Vec<u32> {
        assert!(
            u32::try_from(len).is_ok(),
            "Keyed::permutation: {len} elements exceed u32"
        );
        let mut items: Vec<u32> = (0..len as u32).collect();
        self.shuffle(&mut items);
        items
    }

    /// Shuffles `items` in place (Fisher-Yates driven by this stream).
    pub fn shuffle<T>(&self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64, i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}
