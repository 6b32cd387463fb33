//! Reproducible shuffles and train/test splits.

use super::ImageDataset;

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny generator with a fixed, documented output
/// sequence, so a seed gives the same split (and the same augmentation draws) on every platform
/// and crate version. Not for cryptography.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by rejection so that no value is favoured.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }

    /// Uniform in `[lo, hi]` (`lo` when the range is empty), from the top 24 bits.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        if hi > lo { lo + (hi - lo) * u } else { lo }
    }
}

/// `0..n` shuffled by Fisher–Yates with `seed`.
pub fn shuffled_indices(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed);
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        idx.swap(i, j);
    }
    idx
}

/// Shuffles with `seed`, then puts the first `test_fraction` of the samples in the test set.
pub fn train_test_split(
    data: &ImageDataset,
    test_fraction: f64,
    seed: u64,
) -> (ImageDataset, ImageDataset) {
    let idx = shuffled_indices(data.len(), seed);
    let n_test = ((data.len() as f64) * test_fraction.clamp(0.0, 1.0)).round() as usize;
    (data.select(&idx[n_test..]), data.select(&idx[..n_test]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_permutation_and_depends_on_the_seed() {
        let a = shuffled_indices(100, 1);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, shuffled_indices(100, 1));
        assert_ne!(a, shuffled_indices(100, 2));
    }
}
