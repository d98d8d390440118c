//! Seedable randomness: SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom
//! number generators", OOPSLA 2014), in two forms with one sequence.
//!
//! - [`SplitMix64`]: plain, `&mut self`, for one owner (the demand generators);
//! - [`SharedRng`]: lock-free on an `AtomicU64`, `&self`, for a generator shared by threads
//!   (the proxy's tie-breaks and p2c draws).
//!
//! The state advances by the golden-ratio gamma `0x9E37_79B9_7F4A_7C15` and each output is
//! the state run through [`mix`], the SplitMix64 finaliser. Seeded alike, both forms give the
//! same sequence, and the same sequences as the generators they replace (the proxy's
//! `selection::Rng` and the bench's demand generator), so a seed keeps its meaning. Not for
//! secrets: anyone who sees an output can predict the rest.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: a well-mixed 64-bit value from any input.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in `0..n` from one output (Lemire's multiply-shift; `n > 0`).
fn below(x: u64, n: usize) -> usize {
    ((u128::from(x) * n as u128) >> 64) as usize
}

/// Uniform in `(0, 1]` from one output: never zero, so `ln` is finite.
fn unit(x: u64) -> f64 {
    ((x >> 11) + 1) as f64 / (1u64 << 53) as f64
}

/// A plain SplitMix64 generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub const fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        below(self.next_u64(), n)
    }

    /// Uniform in `(0, 1]`.
    pub fn unit(&mut self) -> f64 {
        unit(self.next_u64())
    }
}

/// A lock-free SplitMix64 generator that threads share by reference.
#[derive(Debug)]
pub struct SharedRng(AtomicU64);

impl SharedRng {
    pub const fn seeded(seed: u64) -> SharedRng {
        SharedRng(AtomicU64::new(seed))
    }

    /// Seeded from the clock (ns since the Unix epoch) and the process id.
    pub fn from_entropy() -> SharedRng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        SharedRng::seeded(nanos ^ (u64::from(std::process::id()) << 32))
    }

    pub fn next_u64(&self) -> u64 {
        let state = self.0.fetch_add(GAMMA, Relaxed);
        mix(state.wrapping_add(GAMMA))
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&self, n: usize) -> usize {
        below(self.next_u64(), n)
    }

    /// Uniform in `(0, 1]`.
    pub fn unit(&self) -> f64 {
        unit(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sequences_are_the_published_splitmix64_ones() {
        // The reference outputs of SplitMix64 for seed 0 and seed 1234567.
        let mut zero = SplitMix64::new(0);
        assert_eq!(zero.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(zero.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let mut r = SplitMix64::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn shared_and_plain_generators_give_the_same_sequence() {
        let shared = SharedRng::seeded(42);
        let mut plain = SplitMix64::new(42);
        for _ in 0..100 {
            assert_eq!(shared.next_u64(), plain.next_u64());
        }
        assert_eq!(shared.below(10), plain.below(10));
        assert_eq!(shared.unit(), plain.unit());
    }

    #[test]
    fn unit_is_never_zero_and_at_most_one() {
        assert_eq!(unit(0), 1.0 / (1u64 << 53) as f64);
        assert_eq!(unit(u64::MAX), 1.0);
    }

    proptest::proptest! {
        #[test]
        fn below_stays_below(seed: u64, n in 1usize..10_000) {
            let mut r = SplitMix64::new(seed);
            proptest::prop_assert!(r.below(n) < n);
            proptest::prop_assert!(SharedRng::seeded(seed).below(n) < n);
        }
    }
}
