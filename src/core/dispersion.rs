//! How bursty errors are: the dispersion index of error counts per 10-second bin, from the
//! baseline and the watch so far.
//!
//! Errors that come in bursts (one client retrying a failing call, a flapping dependency) make a
//! count less informative than the same count of independent errors. The tests divide their
//! evidence by this index (the quasi-Poisson correction), so a bursty service needs
//! proportionally more evidence, while a steady one pays nothing.
//!
//! The index compares consecutive bins, `x_i - k·x_{i-1}` with `k` the ratio of their traffic:
//! for independent errors its variance is `x_i + k²·x_{i-1}` whatever the rate, so a burst
//! inflates the index but a change of rate (a regression starting) moves only one term. It is
//! updated only when a bin completes, so the evidence of a second is always discounted by what
//! was known before that second: that keeps the discounted test valid.

use serde::{Deserialize, Serialize};

/// Seconds per bin.
pub const BIN_SECS: i64 = 10;
/// Largest index the tests divide their evidence by: a wild history slows them, never silences.
pub const MAX_DISPERSION: f64 = 10.0;

/// Requests and errors in one bin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bin {
    pub requests: u64,
    pub errors: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Dispersion {
    squares: f64,
    variance: f64,
    terms: u64,
    previous: Option<Bin>,
}

impl Dispersion {
    /// Adds the next bin, in time order. Bins with no traffic break the chain of comparisons.
    pub fn push(&mut self, bin: Bin) {
        if bin.requests == 0 {
            self.previous = None;
            return;
        }
        if let Some(prev) = self.previous {
            let k = bin.requests as f64 / prev.requests as f64;
            let diff = bin.errors as f64 - k * prev.errors as f64;
            self.squares += diff * diff;
            self.variance += bin.errors as f64 + k * k * prev.errors as f64;
            self.terms += 1;
        }
        self.previous = Some(bin);
    }

    /// The index, at least 1. Only a dispersion clearly above 1 counts: with independent errors
    /// the estimate scatters around 1 by about sqrt(2 / terms), and discounting steady traffic
    /// would only cost power.
    pub fn index(&self) -> f64 {
        if self.terms < 10 || self.variance <= 0.0 {
            return 1.0;
        }
        let raw = self.squares / self.variance;
        (raw - 2.0 * (2.0 / self.terms as f64).sqrt()).clamp(1.0, MAX_DISPERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Poisson};
    use rand_pcg::Pcg64Mcg;

    fn index_of(bins: impl IntoIterator<Item = (u64, u64)>) -> f64 {
        let mut d = Dispersion::default();
        for (requests, errors) in bins {
            d.push(Bin { requests, errors });
        }
        d.index()
    }

    #[test]
    fn independent_errors_are_not_discounted() {
        let mut rng = Pcg64Mcg::seed_from_u64(1);
        for &mean in &[0.1, 2.0, 40.0] {
            let poisson = Poisson::new(mean).unwrap();
            let bins = (0..360).map(|_| (200, poisson.sample(&mut rng) as u64));
            assert_eq!(index_of(bins), 1.0, "mean {mean}");
        }
    }

    #[test]
    fn bursts_raise_the_index() {
        let mut rng = Pcg64Mcg::seed_from_u64(2);
        let bins = (0..180).map(|i| {
            let burst = if i % 60 == 30 { 12 } else { 0 };
            (10, u64::from(rng.gen::<f64>() < 0.1) + burst)
        });
        assert!(index_of(bins) > 3.0);
    }

    #[test]
    fn a_change_of_rate_is_not_mistaken_for_bursts() {
        let mut rng = Pcg64Mcg::seed_from_u64(3);
        let low = Poisson::new(2.0).unwrap();
        let high = Poisson::new(6.0).unwrap();
        let bins = (0..360).map(|i| {
            let p = if i < 180 { &low } else { &high };
            (200, p.sample(&mut rng) as u64)
        });
        assert!(index_of(bins) < 1.3);
    }

    #[test]
    fn traffic_that_varies_is_not_mistaken_for_bursts() {
        let mut rng = Pcg64Mcg::seed_from_u64(4);
        let bins = (0..360).map(|i| {
            let requests = if (i / 30) % 2 == 0 { 100 } else { 400 };
            let errors = Poisson::new(requests as f64 * 0.01)
                .unwrap()
                .sample(&mut rng) as u64;
            (requests, errors)
        });
        assert!(index_of(bins) < 1.3);
    }
}
