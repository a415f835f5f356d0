//! Latency histograms with one fixed, log-spaced bucket layout shared by the whole program.
//!
//! One layout everywhere means a baseline, a post-change window and a simulator can be compared
//! bucket for bucket, with no interpolation. Each bucket is sqrt(1.05) (about 2.5%) wider than
//! the one before, so the default latency tolerance of 5% moves a threshold by exactly two
//! buckets (a tolerance is always rounded up to whole buckets, never down), and 640 of them span
//! 0.05 ms to about 5 minutes.

/// Number of buckets in the shared layout.
pub const BUCKETS: usize = 640;
/// Lower edge of bucket 1, in milliseconds; bucket 0 holds everything faster.
pub const LOWEST_MS: f64 = 0.05;
/// Buckets per doubling of latency: ln 2 / ln sqrt(1.05).
pub const PER_OCTAVE: f64 = 28.413_398_165_780_844;

/// Index of the bucket holding `latency_ms`. Bucket `i >= 1` holds `[edge(i), edge(i+1))`.
pub fn bucket_of(latency_ms: f64) -> usize {
    // A latency we cannot place (NaN) counts as fast, never as slow.
    if latency_ms.is_nan() || latency_ms <= LOWEST_MS {
        return 0;
    }
    let i = ((latency_ms / LOWEST_MS).log2() * PER_OCTAVE).floor() as usize + 1;
    i.min(BUCKETS - 1)
}

/// Lower edge of bucket `i` in milliseconds (0 for bucket 0).
pub fn lower_edge(i: usize) -> f64 {
    if i == 0 {
        0.0
    } else {
        LOWEST_MS * ((i - 1) as f64 / PER_OCTAVE).exp2()
    }
}

/// Upper edge of bucket `i` in milliseconds (infinite for the last bucket).
pub fn upper_edge(i: usize) -> f64 {
    if i + 1 >= BUCKETS {
        f64::INFINITY
    } else {
        lower_edge(i + 1)
    }
}

/// How many buckets a latency must move up to be `1 + tolerance` times slower, rounded up so the
/// moved threshold is never below the tolerated latency.
pub fn buckets_for_ratio(ratio: f64) -> usize {
    if ratio <= 1.0 {
        return 0;
    }
    (ratio.log2() * PER_OCTAVE - 1e-9).ceil() as usize
}

/// Counts per bucket. Dense: 640 counters, 2.5 KiB. Saved as its non-empty buckets.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "SparseHistogram", try_from = "SparseHistogram")]
pub struct Histogram {
    counts: Box<[u32; BUCKETS]>,
    total: u64,
}

/// A histogram as saved: `(bucket, count)` for the buckets that are not empty.
#[derive(serde::Serialize, serde::Deserialize)]
struct SparseHistogram(Vec<(u16, u32)>);

impl From<Histogram> for SparseHistogram {
    fn from(h: Histogram) -> Self {
        SparseHistogram(
            h.counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(i, &c)| (i as u16, c))
                .collect(),
        )
    }
}

impl TryFrom<SparseHistogram> for Histogram {
    type Error = String;

    fn try_from(s: SparseHistogram) -> Result<Self, String> {
        let mut h = Histogram::new();
        for (bucket, count) in s.0 {
            if usize::from(bucket) >= BUCKETS {
                return Err(format!(
                    "bucket {bucket} is outside the layout of {BUCKETS}"
                ));
            }
            h.add_to_bucket(usize::from(bucket), count);
        }
        Ok(h)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nonzero: Vec<(usize, u32)> = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| (i, c))
            .collect();
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("buckets", &nonzero)
            .finish()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, latency_ms: f64) {
        self.add_to_bucket(bucket_of(latency_ms), 1);
    }

    pub fn add_to_bucket(&mut self, bucket: usize, count: u32) {
        let slot = &mut self.counts[bucket.min(BUCKETS - 1)];
        *slot = slot.saturating_add(count);
        self.total = self.total.saturating_add(u64::from(count));
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total = self.total.saturating_add(other.total);
    }

    pub fn clear(&mut self) {
        if self.total > 0 {
            self.counts.fill(0);
            self.total = 0;
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn counts(&self) -> &[u32; BUCKETS] {
        &self.counts
    }

    /// Observations in bucket `from` or above.
    pub fn count_at_or_above(&self, from: usize) -> u64 {
        if from >= BUCKETS {
            return 0;
        }
        self.counts[from..].iter().map(|&c| u64::from(c)).sum()
    }

    /// The bucket `b` such that at least a fraction `p` of observations lie in buckets `< b`:
    /// observations in `b` or above are "slower than the p-quantile". `None` when empty.
    pub fn quantile_bucket(&self, p: f64) -> Option<usize> {
        if self.total == 0 {
            return None;
        }
        let need = (p.clamp(0.0, 1.0) * self.total as f64).ceil() as u64;
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= need {
                return Some((i + 1).min(BUCKETS - 1));
            }
        }
        Some(BUCKETS - 1)
    }

    /// The p-quantile in milliseconds, interpolated linearly inside its bucket the way
    /// Prometheus' `histogram_quantile` does. `None` when empty.
    pub fn quantile_ms(&self, p: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = p.clamp(0.0, 1.0) * self.total as f64;
        let mut seen = 0.0;
        for (i, &c) in self.counts.iter().enumerate() {
            let c = f64::from(c);
            if c > 0.0 && seen + c >= rank {
                let lo = lower_edge(i);
                let hi = upper_edge(i);
                if !hi.is_finite() {
                    return Some(lo);
                }
                return Some(lo + (hi - lo) * ((rank - seen) / c).clamp(0.0, 1.0));
            }
            seen += c;
        }
        Some(lower_edge(BUCKETS - 1))
    }

    /// Mean latency in milliseconds, taking each bucket at its geometric midpoint.
    pub fn mean_ms(&self) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let sum: f64 = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| f64::from(c) * midpoint(i))
            .sum();
        Some(sum / self.total as f64)
    }
}

/// A representative latency for bucket `i`.
pub fn midpoint(i: usize) -> f64 {
    if i == 0 {
        LOWEST_MS / 2.0
    } else if i + 1 >= BUCKETS {
        lower_edge(i)
    } else {
        (lower_edge(i) * upper_edge(i)).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_latency_lands_between_its_bucket_edges() {
        for &ms in &[
            0.051, 0.3, 1.0, 12.5, 87.5, 499.0, 500.0, 10_000.0, 120_000.0,
        ] {
            let b = bucket_of(ms);
            assert!(
                lower_edge(b) <= ms && ms < upper_edge(b),
                "{ms} in bucket {b}"
            );
        }
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(f64::NAN), 0);
        assert_eq!(bucket_of(-3.0), 0);
        assert_eq!(bucket_of(1e12), BUCKETS - 1);
    }

    #[test]
    fn a_ratio_moves_a_threshold_far_enough_and_no_further_than_one_bucket_more() {
        for &r in &[1.01, 1.05, 1.1, 1.25, 2.0] {
            let k = buckets_for_ratio(r);
            let moved = (k as f64 / PER_OCTAVE).exp2();
            assert!(moved >= r - 1e-12, "{r}: {moved}");
            assert!(moved < r * (1.0 / PER_OCTAVE).exp2() + 1e-12);
        }
        assert_eq!(buckets_for_ratio(1.0), 0);
        assert_eq!(
            buckets_for_ratio(1.05),
            2,
            "the default tolerance is exactly two buckets"
        );
    }

    #[test]
    fn quantiles_split_the_counts() {
        let mut h = Histogram::new();
        for i in 1..=100 {
            h.record(i as f64);
        }
        let b = h.quantile_bucket(0.9).unwrap();
        let above = h.count_at_or_above(b);
        assert!(above <= 10, "{above} above the p90 bucket");
        let p50 = h.quantile_ms(0.5).unwrap();
        assert!((45.0..=56.0).contains(&p50), "{p50}");
        let mean = h.mean_ms().unwrap();
        assert!((48.0..=53.0).contains(&mean), "{mean}");
        assert_eq!(Histogram::new().quantile_ms(0.5), None);
    }
}
