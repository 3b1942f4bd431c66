//! Seeded randomness, so that every decision of a run (when to kill, how
//! often, which users retry) follows from the printed seed.
//!
//! The generator is `rand`'s [`SmallRng`]: fast, small, reproducible for a
//! given seed and `rand` version, and not for anything cryptographic.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;

/// The generator every part of a run draws from.
pub type Rng = SmallRng;

/// An independent generator for one part of the run (a trial, a burst), so
/// that changing how many numbers one part draws does not shift the
/// decisions of the others. For one seed, distinct parts get distinct
/// generator seeds (multiplying by an odd constant is a bijection).
pub fn derive(seed: u64, part: u64) -> Rng {
    SmallRng::seed_from_u64(seed ^ part.wrapping_mul(0xA076_1D64_78BD_642F))
}

/// The draws a run makes, on top of [`rand::Rng`].
pub trait Draws {
    /// True once in `n` draws on average (`n` of 0 or 1: always).
    fn one_in(&mut self, n: u32) -> bool;

    /// A duration between `low` and `high`, uniform on a log scale, so that
    /// short and long waits are drawn about equally often.
    fn log_uniform(&mut self, low: Duration, high: Duration) -> Duration;
}

impl<R: rand::Rng> Draws for R {
    fn one_in(&mut self, n: u32) -> bool {
        self.random_ratio(1, n.max(1))
    }

    fn log_uniform(&mut self, low: Duration, high: Duration) -> Duration {
        let (lo, hi) = (low.as_secs_f64().ln(), high.as_secs_f64().ln());
        let unit: f64 = self.random();
        Duration::from_secs_f64((lo + (hi - lo) * unit).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;

    #[test]
    fn same_seed_same_draws() {
        let (mut a, mut b) = (derive(7, 3), derive(7, 3));
        for _ in 0..100 {
            assert_eq!(a.random::<u64>(), b.random::<u64>());
        }
        assert_ne!(derive(7, 3).random::<u64>(), derive(7, 4).random::<u64>());
    }

    #[test]
    fn durations_stay_in_range() {
        let mut rng = derive(1, 0);
        let (low, high) = (Duration::from_micros(200), Duration::from_millis(30));
        for _ in 0..1000 {
            let d = rng.log_uniform(low, high);
            assert!(d >= low.mul_f64(0.999) && d <= high.mul_f64(1.001), "{d:?}");
        }
    }
}
