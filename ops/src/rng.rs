//! Counter-based random numbers: Philox4x32-10, keyed by (seed, stream, index).
//!
//! Every draw is a pure function of its key: the seed picks the Philox key,
//! the stream (a 64-bit id the caller derives from what the numbers are for,
//! e.g. the step and the purpose, see [`stream_id`]) and the element index
//! pick the counter. So element `i` of a fill is the same number whichever
//! worker draws it and however the work is split: a sample's draws depend
//! only on the sample's position, never on a worker-local sequence.
//!
//! Layout: the counter of block `b` of stream `s` is
//! `(b_lo, b_hi, s_lo, s_hi)` (32-bit words) and the key is
//! `(seed_lo, seed_hi)`; each block gives four 32-bit words, so element `i`
//! uses word `i % 4` of block `i / 4`. Philox4x32-10 is the generator of
//! Random123 (Salmon et al., SC'11), also used by JAX and cuRAND.

use crate::shape::Shape;
use crate::tensor::Tensor;

const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

/// The Philox4x32 block function with 10 rounds: four 32-bit output words
/// for a counter and a key.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        let p0 = u64::from(PHILOX_M0) * u64::from(c[0]);
        let p1 = u64::from(PHILOX_M1) * u64::from(c[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Mixes several 64-bit parts (a step, a purpose tag, a layer index...)
/// into one stream id (SplitMix64 finalizer over the parts in order).
pub fn stream_id(parts: &[u64]) -> u64 {
    let mut h: u64 = 0x6A09_E667_F3BC_C908;
    for &part in parts {
        h = h.wrapping_add(part).wrapping_add(0x9E37_79B9_7F4A_7C15);
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 31;
    }
    h
}

/// `u`'s top 24 bits as an f32 in `[0, 1)` (exactly representable).
fn unit_closed_open(u: u32) -> f32 {
    (u >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// `u`'s top 24 bits as an f32 in `(0, 1]` (never zero: safe for `ln`).
fn unit_open_closed(u: u32) -> f32 {
    ((u >> 8) + 1) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// One stream of random numbers: a seed and a stream id. Cheap to copy;
/// holds no position (every draw names its index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RandomStream {
    seed: u64,
    stream: u64,
}

impl RandomStream {
    /// The stream `stream` under `seed`.
    pub fn new(seed: u64, stream: u64) -> RandomStream {
        RandomStream { seed, stream }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The stream id.
    pub fn stream(&self) -> u64 {
        self.stream
    }

    /// Another stream under the same seed, derived from this one and `parts`
    /// (for example a layer index or a sample block).
    pub fn derive(&self, parts: &[u64]) -> RandomStream {
        let mut all = Vec::with_capacity(parts.len() + 1);
        all.push(self.stream);
        all.extend_from_slice(parts);
        RandomStream::new(self.seed, stream_id(&all))
    }

    /// The four words of block `block`.
    pub fn block(&self, block: u64) -> [u32; 4] {
        philox4x32_10(
            [
                block as u32,
                (block >> 32) as u32,
                self.stream as u32,
                (self.stream >> 32) as u32,
            ],
            [self.seed as u32, (self.seed >> 32) as u32],
        )
    }

    /// The 32-bit word at element `index`.
    pub fn u32_at(&self, index: u64) -> u32 {
        self.block(index / 4)[(index % 4) as usize]
    }

    /// Uniform in `[0, 1)` at element `index` (24 random bits).
    pub fn uniform_at(&self, index: u64) -> f32 {
        unit_closed_open(self.u32_at(index))
    }

    /// Standard normal at element `index` (Box–Muller on the two words of
    /// the element's pair: even elements take the cosine, odd the sine).
    pub fn normal_at(&self, index: u64) -> f32 {
        let words = self.block(index / 4);
        let lane = (index % 4) as usize;
        let pair = lane / 2 * 2;
        box_muller(words[pair], words[pair + 1])[lane % 2]
    }

    /// Fills `out` with the 32-bit words at elements `start..start + len`.
    pub fn fill_u32(&self, start: u64, out: &mut [u32]) {
        self.fill_blocks(start, out, |words, lane| words[lane]);
    }

    /// Fills `out` with uniforms in `[low, high)` at elements
    /// `start..start + out.len()`.
    pub fn fill_uniform(&self, start: u64, low: f32, high: f32, out: &mut [f32]) {
        let width = high - low;
        self.fill_blocks(start, out, |words, lane| {
            low + width * unit_closed_open(words[lane])
        });
    }

    /// Fills `out` with normals of mean `mean` and standard deviation `std`
    /// at elements `start..start + out.len()`.
    pub fn fill_normal(&self, start: u64, mean: f32, std: f32, out: &mut [f32]) {
        self.fill_blocks(start, out, |words, lane| {
            let pair = lane / 2 * 2;
            mean + std * box_muller(words[pair], words[pair + 1])[lane % 2]
        });
    }

    /// Fills `out` with 1.0 with probability `p` and 0.0 otherwise, at
    /// elements `start..start + out.len()`.
    pub fn fill_bernoulli(&self, start: u64, p: f32, out: &mut [f32]) {
        self.fill_blocks(start, out, |words, lane| {
            if unit_closed_open(words[lane]) < p {
                1.0
            } else {
                0.0
            }
        });
    }

    /// A constant tensor of uniforms in `[low, high)` (elements `0..numel`).
    pub fn uniform_tensor(&self, shape: impl Into<Shape>, low: f32, high: f32) -> Tensor {
        let shape = shape.into();
        let mut data = vec![0.0; shape.numel()];
        self.fill_uniform(0, low, high, &mut data);
        Tensor::from_vec(shape, data)
    }

    /// A constant tensor of normals (elements `0..numel`).
    pub fn normal_tensor(&self, shape: impl Into<Shape>, mean: f32, std: f32) -> Tensor {
        let shape = shape.into();
        let mut data = vec![0.0; shape.numel()];
        self.fill_normal(0, mean, std, &mut data);
        Tensor::from_vec(shape, data)
    }

    /// A constant tensor of Bernoulli(`p`) draws as 0.0/1.0 (elements `0..numel`).
    pub fn bernoulli_tensor(&self, shape: impl Into<Shape>, p: f32) -> Tensor {
        let shape = shape.into();
        let mut data = vec![0.0; shape.numel()];
        self.fill_bernoulli(0, p, &mut data);
        Tensor::from_vec(shape, data)
    }

    /// Calls `value(block_words, lane)` for elements `start..start + out.len()`,
    /// computing each Philox block once.
    fn fill_blocks<T>(&self, start: u64, out: &mut [T], value: impl Fn(&[u32; 4], usize) -> T) {
        let mut index = start;
        let mut position = 0;
        while position < out.len() {
            let words = self.block(index / 4);
            let mut lane = (index % 4) as usize;
            while lane < 4 && position < out.len() {
                out[position] = value(&words, lane);
                position += 1;
                lane += 1;
                index += 1;
            }
        }
    }
}

/// Two independent standard normals from two words (Box–Muller).
fn box_muller(a: u32, b: u32) -> [f32; 2] {
    let radius = (-2.0 * unit_open_closed(a).ln()).sqrt();
    let angle = std::f32::consts::TAU * unit_closed_open(b);
    let (sin, cos) = angle.sin_cos();
    [radius * cos, radius * sin]
}
