//! A small seeded generator, so that every decision of a run (when to kill,
//! how often, which users retry) follows from the printed seed.

use std::time::Duration;

/// SplitMix64: tiny, fast, and good enough to spread decisions; not for
/// anything cryptographic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// An independent generator for one part of the run (a trial, a burst),
    /// so that changing how many numbers one part draws does not shift the
    /// decisions of the others.
    pub fn derive(seed: u64, part: u64) -> Rng {
        let mut mixer = Rng(seed ^ part.wrapping_mul(0xA076_1D64_78BD_642F));
        Rng(mixer.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            // Multiply-shift keeps the bias negligible without a loop.
            ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
        }
    }

    /// True once in `n` draws on average.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// A duration between `low` and `high`, uniform on a log scale, so that
    /// short and long waits are drawn about equally often.
    pub fn log_uniform(&mut self, low: Duration, high: Duration) -> Duration {
        let (lo, hi) = (low.as_secs_f64().ln(), high.as_secs_f64().ln());
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64((lo + (hi - lo) * unit).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_draws() {
        let (mut a, mut b) = (Rng::derive(7, 3), Rng::derive(7, 3));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::derive(7, 3).next_u64(), Rng::derive(7, 4).next_u64());
    }

    #[test]
    fn draws_stay_in_range() {
        let mut rng = Rng::derive(1, 0);
        let (low, high) = (Duration::from_micros(200), Duration::from_millis(30));
        for _ in 0..1000 {
            assert!(rng.below(10) < 10);
            let d = rng.log_uniform(low, high);
            assert!(d >= low.mul_f64(0.999) && d <= high.mul_f64(1.001), "{d:?}");
        }
    }
}
