//! Mann-Whitney (Wilcoxon rank-sum) confidence interval for a location shift, and the Hodges-Lehmann estimate, computed as Kayenta's `MannWhitney.scala` does.
//!
//! Kayenta ports R's `wilcox.test(x, y, conf.int = TRUE, exact = FALSE, correct = TRUE)`. It uses
//! the normal approximation to the rank-sum statistic, with the tie correction in its variance and
//! a ±0.5 continuity correction. For a shift `mu` it ranks `x - mu` against `y` and standardizes:
//!
//! ```text
//! dz(mu)    = sum of the ranks of (x - mu) - nx(nx+1)/2 - nx*ny/2
//! sigma(mu) = sqrt(nx*ny/12 * ((N+1) - sum(t^3 - t) / (N(N-1))))   (t: sizes of tie groups)
//! z(mu)     = (dz - 0.5*sign(dz)) / sigma
//! ```
//!
//! The interval is where `z` crosses `±qnorm(1 - alpha/2)`. The estimate is where `z` crosses 0.
//! `z` never increases as `mu` grows, and the search runs over `[min(x) - max(y), max(x) - min(y)]`.
//!
//! Where this port differs from R and Kayenta, and why:
//! - **Root-finding.** `z` is a step function of `mu`. It moves only where `mu` equals a pairwise
//!   difference `x_i - y_j`. R (`uniroot`, tol 1e-4) and Kayenta (Commons Math Brent solvers) stop
//!   somewhere within their tolerance of the jump where `z` crosses the target. This port searches
//!   the sorted pairwise differences and returns the jump itself, so every bound is an exact
//!   pairwise difference. R's numbers lie within its 1e-4 tolerance of ours.
//!   This matters for Kayenta's "High" rule: a CI bound and the estimate that sit on the same
//!   jump compare equal here. With a solver they would differ by tolerance-sized noise.
//! - **Flat stretches.** Where `z` equals the target on a whole interval, every point of it is a
//!   root, and the solvers return whichever point they land on. This happens for the estimate when
//!   half the pairs lie on each side. We return the middle, which for the estimate is the usual
//!   Hodges-Lehmann median of the pairwise differences.
//! - **Continuity correction in the estimate.** Kayenta applies ±0.5 when solving for the estimate
//!   too; R turns it off first (`correct <- FALSE`). [`mann_whitney_ci`] follows Kayenta and
//!   [`wilcox_ci`] follows R. They can differ only by one pairwise-difference step, and only when
//!   `dz` can be ±0.5 (an odd `nx*ny`, or ties).
//! - **All observations tied.** R and Kayenta throw "cannot compute confidence interval when all
//!   observations are tied"; we return `None`. That happens exactly when both samples are constant.
//!   Kayenta's classifier sidesteps it by adding noise, and `peers.rs` handles that case itself.
//!
//! Cost: O(nx*ny*log(nx*ny)) to sort the pairwise differences once, plus
//! O(log(nx*ny)) rankings of nx+ny values per bound. That is tiny at Kayenta's ≤ 60 points a side.

use statrs::distribution::{ContinuousCDF, Normal};

/// A two-sided interval for the shift `x - y`, and the point estimate of that shift.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MwResult {
    pub lower: f64,
    pub upper: f64,
    pub estimate: f64,
}

/// Kayenta's `MannWhitney.calculateConfidenceInterval(control = y, experiment = x, conf_level)`.
/// It gives the two-sided `conf_level` interval for the location shift `x - y` and the estimate,
/// with the continuity correction also applied to the estimate (Kayenta's behaviour).
///
/// `None` for an empty side, a non-finite value, `conf_level` outside (0, 1), or all observations
/// tied (both samples constant).
pub fn mann_whitney_ci(x: &[f64], y: &[f64], conf_level: f64) -> Option<MwResult> {
    interval(x, y, conf_level, true)
}

/// The same interval as R's `wilcox.test(x, y, conf.int = TRUE, exact = FALSE, correct = TRUE)`.
/// Its estimate is solved without the continuity correction, as R does.
pub fn wilcox_ci(x: &[f64], y: &[f64], conf_level: f64) -> Option<MwResult> {
    interval(x, y, conf_level, false)
}

fn interval(x: &[f64], y: &[f64], conf_level: f64, correct_estimate: bool) -> Option<MwResult> {
    if x.is_empty() || y.is_empty() || !(conf_level > 0.0 && conf_level < 1.0) {
        return None;
    }
    if x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    // sigma is 0 only when all N values form one tie group. For some mu that needs x - mu and y
    // to be one constant, so both samples must be constant.
    if x.iter().all(|&v| v == x[0]) && y.iter().all(|&v| v == y[0]) {
        return None;
    }
    let shift = Shift::new(x, y);
    let zq = Normal::new(0.0, 1.0)
        .ok()?
        .inverse_cdf(1.0 - (1.0 - conf_level) / 2.0);
    Some(MwResult {
        lower: shift.root(zq, true),
        upper: shift.root(-zq, true),
        estimate: shift.root(0.0, correct_estimate),
    })
}

/// The two samples and the places where `z(mu)` can change.
struct Shift<'a> {
    x: &'a [f64],
    y: &'a [f64],
    mu_min: f64,
    mu_max: f64,
    /// Sorted distinct pairwise differences `x_i - y_j`, as `(lowest, highest)` of each cluster.
    /// Differences closer than rounding noise form one cluster: they stand for the same real
    /// difference, computed in different ways (0.76 vs 0.7599999999999999).
    jumps: Vec<(f64, f64)>,
}

impl<'a> Shift<'a> {
    fn new(x: &'a [f64], y: &'a [f64]) -> Self {
        let mut diffs: Vec<f64> = x
            .iter()
            .flat_map(|&a| y.iter().map(move |&b| a - b))
            .collect();
        diffs.sort_by(f64::total_cmp);
        let scale = x.iter().chain(y).fold(0.0f64, |m, v| m.max(v.abs()));
        let eps = scale * 1e-12;
        let mut jumps: Vec<(f64, f64)> = Vec::new();
        for d in diffs {
            match jumps.last_mut() {
                Some(last) if d - last.1 <= eps => last.1 = d,
                _ => jumps.push((d, d)),
            }
        }
        // Floating subtraction is monotone, so the extreme differences are exactly R's bounds.
        let mu_min = x.iter().copied().fold(f64::INFINITY, f64::min)
            - y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mu_max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            - y.iter().copied().fold(f64::INFINITY, f64::min);
        Shift {
            x,
            y,
            mu_min,
            mu_max,
            jumps,
        }
    }

    /// R's `wdiff(mu, 0)`: the standardized, tie- and (optionally) continuity-corrected rank-sum
    /// statistic of `x - mu` against `y`. Never called when every observation is tied.
    fn z(&self, mu: f64, correct: bool) -> f64 {
        let mut v: Vec<(f64, bool)> = self
            .x
            .iter()
            .map(|&a| (a - mu, true))
            .chain(self.y.iter().map(|&b| (b, false)))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (nx, ny) = (self.x.len() as f64, self.y.len() as f64);
        let n = nx + ny;
        let (mut rank_sum_x, mut ties) = (0.0, 0.0);
        let mut i = 0;
        while i < v.len() {
            // `==`, not total order: -0.0 and 0.0 tie, as they do in R and Commons Math.
            let j = i + v[i..].iter().take_while(|e| e.0 == v[i].0).count();
            let t = (j - i) as f64;
            let avg_rank = (i + 1 + j) as f64 / 2.0;
            rank_sum_x += v[i..j].iter().filter(|e| e.1).count() as f64 * avg_rank;
            ties += t * t * t - t;
            i = j;
        }
        // Sums of half-integers: exact in f64, so `dz == 0.0` and the ±0.5 steps are exact too.
        let dz = rank_sum_x - nx * (nx + 1.0) / 2.0 - nx * ny / 2.0;
        let correction = if correct && dz != 0.0 {
            0.5 * dz.signum()
        } else {
            0.0
        };
        let sigma = (nx * ny / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)))).sqrt();
        (dz - correction) / sigma
    }

    /// The shift where `z` crosses `target`, as R's `root()` finds it, to the exact jump.
    ///
    /// `z` is probed in order along the line: at `mu_min`, then on each open interval between
    /// neighbouring jumps, then at `mu_max`. On every open interval no `x_i - mu` ties any `y_j`,
    /// so sigma is the same on all of them and `z` moves only with `dz`, which never increases.
    /// At the two ends `dz` is at its extreme and sigma is smallest (extra ties), so the end
    /// probes continue the same non-increasing sequence.
    fn root(&self, target: f64, correct: bool) -> f64 {
        let g = &self.jumps;
        let last = g.len(); // probe index of mu_max; 1..last are the open intervals
        let probe = |i: usize| {
            let mu = match i {
                0 => self.mu_min,
                i if i == last => self.mu_max,
                i => (g[i - 1].1 + g[i].0) / 2.0,
            };
            self.z(mu, correct) - target
        };
        // First probe at or below the target. R returns the end itself when z at the end is
        // already past the target (its `f.lower <= 0` and `f.upper >= 0` rules); so do we.
        let first = partition_point(0, last + 1, |i| probe(i) > 0.0);
        if first > last {
            return self.mu_max;
        }
        if probe(first) < 0.0 {
            // z drops through the target at the jump just before this probe.
            return match first {
                0 | 1 => self.mu_min,
                i if i == last => self.mu_max,
                i => g[i - 1].0,
            };
        }
        // z equals the target from probe `first` to probe `end`: every point there is a root,
        // and we take the middle of the stretch.
        let end = partition_point(first, last + 1, |i| probe(i) >= 0.0) - 1;
        let from = if first == 0 {
            self.mu_min
        } else {
            g[first - 1].1
        };
        let to = if end == last { self.mu_max } else { g[end].0 };
        (from + to) / 2.0
    }
}

/// The first index in `lo..hi` where `pred` turns false, for a `pred` true on a prefix.
fn partition_point(mut lo: usize, mut hi: usize, pred: impl Fn(usize) -> bool) -> usize {
    while lo < hi {
        let m = lo + (hi - lo) / 2;
        if pred(m) {
            lo = m + 1;
        } else {
            hi = m;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// R's `uniroot(..., tol = 1e-4)` stops within 1e-4 of the jump it converges on, in the units
    /// of the data. We return the jump itself, so R's printed numbers must agree to that tolerance.
    const R_TOL: f64 = 1e-4;

    fn close(got: f64, want: f64, tol: f64) -> bool {
        (got - want).abs() <= tol
    }

    // R's ?wilcox.test two-sample example (Hollander & Wolfe).
    const X: [f64; 10] = [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46];
    const Y: [f64; 5] = [1.15, 0.88, 0.90, 0.74, 1.21];

    #[test]
    fn matches_r_on_its_documented_example() {
        // R 4.2.2: wilcox.test(x, y, conf.int=TRUE, correct=TRUE, exact=FALSE)
        //   95 percent confidence interval: -0.150014837199084  0.759942765322294
        //   difference in location: 0.302508339041572
        // The exact interval (exact=TRUE) is -0.15 0.76 with estimate 0.305. Both bounds are
        // pairwise differences: 0.73 - 0.88 and 1.64 - 0.88. By hand, with no ties,
        // sigma = sqrt(50*16/12) = 8.165, so the lower bound needs dz - 0.5 >= 1.96*sigma = 16.0,
        // i.e. at least 42 of the 50 differences above mu. That is the 9th smallest, -0.15.
        let r = wilcox_ci(&X, &Y, 0.95).unwrap();
        assert!(close(r.lower, -0.150014837199084, R_TOL), "{r:?}");
        assert!(close(r.upper, 0.759942765322294, R_TOL), "{r:?}");
        assert!(close(r.lower, -0.15, 1e-12) && close(r.upper, 0.76, 1e-12));
        // z = 0 on the whole stretch between the 25th and 26th differences (0.30 and 0.31).
        // R lands at 0.3025 inside it; we take the middle, 0.305, the Hodges-Lehmann median
        // (what R reports with exact=TRUE).
        assert!(close(r.estimate, 0.305, 1e-12), "{r:?}");
        assert!((0.30..=0.31).contains(&0.302508339041572));
        // nx*ny = 50 is even and there are no ties, so Kayenta's corrected estimate agrees.
        assert_eq!(mann_whitney_ci(&X, &Y, 0.95).unwrap(), r);

        // R: conf.level=0.98 -> -0.319997213221830 0.989946182062034
        let r = mann_whitney_ci(&X, &Y, 0.98).unwrap();
        assert!(close(r.lower, -0.319997213221830, R_TOL), "{r:?}");
        assert!(close(r.upper, 0.989946182062034, R_TOL), "{r:?}");
        // R: conf.level=0.90 -> -0.0800457662869949 0.7200048833240764
        let r = mann_whitney_ci(&X, &Y, 0.90).unwrap();
        assert!(close(r.lower, -0.0800457662869949, R_TOL), "{r:?}");
        assert!(close(r.upper, 0.7200048833240764, R_TOL), "{r:?}");
    }

    #[test]
    fn matches_r_with_many_ties_at_kayenta_sizes() {
        // 20 experiment points against 60 control points, heavily tied, as a sparse metric gives.
        let x: Vec<f64> = (0..20).map(|i| ((i * 7) % 11) as f64 * 0.5 + 1.0).collect();
        let y: Vec<f64> = (0..60).map(|j| ((j * 5) % 13) as f64 * 0.4).collect();
        // R: -0.0000710430 2.0000363777, estimate 1.0999014574
        let r = wilcox_ci(&x, &y, 0.98).unwrap();
        assert!(
            close(r.lower, 0.0, R_TOL) && close(r.upper, 2.0, R_TOL),
            "{r:?}"
        );
        assert!(close(r.estimate, 1.0999014574, R_TOL), "{r:?}");
        // R: conf.level=0.90 -> 0.3000655851 1.7000334496
        let r = wilcox_ci(&x, &y, 0.90).unwrap();
        assert!(close(r.lower, 0.3000655851, R_TOL), "{r:?}");
        assert!(close(r.upper, 1.7000334496, R_TOL), "{r:?}");

        let x: Vec<f64> = (0..20u32)
            .map(|i| ((i * i) % 17) as f64 / 3.0 + 0.25 * i as f64)
            .collect();
        let y: Vec<f64> = (0..60u32)
            .map(|j| ((j * j) % 19) as f64 / 4.0 + 0.1 * j as f64)
            .collect();
        // R: -1.5166925244 1.3833528810, estimate -0.0333078540
        let r = wilcox_ci(&x, &y, 0.98).unwrap();
        assert!(close(r.lower, -1.5166925244, R_TOL), "{r:?}");
        assert!(close(r.upper, 1.3833528810, R_TOL), "{r:?}");
        assert!(close(r.estimate, -0.0333078540, R_TOL), "{r:?}");
        // R: conf.level=0.80 -> -0.7333517226 0.6999530867
        let r = wilcox_ci(&x, &y, 0.80).unwrap();
        assert!(close(r.lower, -0.7333517226, R_TOL), "{r:?}");
        assert!(close(r.upper, 0.6999530867, R_TOL), "{r:?}");

        // Odd nx*ny with ties. R: -0.5000265957 5.4999465004, estimate 2.7499823924
        let x = [0.0, 3.5, 7.0, 3.5, 7.0, 3.5, 7.0];
        let y = [1.5, 2.25, 4.0, 0.75, 3.5];
        let r = wilcox_ci(&x, &y, 0.95).unwrap();
        assert!(
            close(r.lower, -0.5, R_TOL) && close(r.upper, 5.5, R_TOL),
            "{r:?}"
        );
        assert!(close(r.estimate, 2.7499823924, R_TOL), "{r:?}");
    }

    #[test]
    fn reproduces_the_numbers_in_spinnaker_6278() {
        // The issue prints Kayenta's output: CI (6.825022991538781E-5, 99.0), estimate
        // 98.99992904170193. R prints the same. The true jumps are at 0 and 99. By hand: for
        // 0 < mu < 99 there are no ties, dz = 20, and z = 19.5 / sqrt(100*21/12) = 1.47 < 2.33.
        // At mu = 0 the 13 ones tie, dz = 35, and z = 3.06. So the lower bound is the jump at 0.
        let e = [
            100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 1.0, 1.0, 1.0,
        ];
        let c = [1.0; 10];
        let r = mann_whitney_ci(&e, &c, 0.98).unwrap();
        assert_eq!(r.lower, 0.0);
        assert_eq!(r.upper, 99.0);
        assert_eq!(r.estimate, 99.0);
        assert!(close(r.lower, 6.825022991538781e-5, R_TOL));
        assert!(close(r.estimate, 98.99992904170193, R_TOL));
    }

    #[test]
    fn the_kayenta_426_sparse_case_has_a_lower_bound_of_zero() {
        // Experiment {0,1,2,1,0,0} against six zeros. R: CI [0, 2]. By hand at mu = 0: nine zeros
        // tie, dz = 9, sigma = sqrt(3*(13 - 726/132)) = 4.74, z = 8.5/4.74 = 1.79 < 2.33, so the
        // lower bound is mu_min = 0 itself.
        let e = [0.0, 1.0, 2.0, 1.0, 0.0, 0.0];
        let c = [0.0; 6];
        let r = mann_whitney_ci(&e, &c, 0.98).unwrap();
        assert_eq!((r.lower, r.upper), (0.0, 2.0));
        // For 0 < mu < 1, dz = 0 exactly: a flat stretch whose middle is 0.5. R lands at 0.824.
        assert_eq!(r.estimate, 0.5);
        assert_eq!(wilcox_ci(&e, &c, 0.98).unwrap().estimate, 0.5);
    }

    #[test]
    fn refuses_what_r_refuses() {
        assert_eq!(mann_whitney_ci(&[], &[1.0], 0.95), None);
        assert_eq!(mann_whitney_ci(&[1.0], &[], 0.95), None);
        assert_eq!(mann_whitney_ci(&[2.0, 2.0], &[2.0, 2.0, 2.0], 0.95), None);
        // Two constant samples: R throws "all observations are tied" at mu_min.
        assert_eq!(mann_whitney_ci(&[3.0, 3.0], &[1.0, 1.0], 0.95), None);
        assert_eq!(mann_whitney_ci(&[1.0, f64::NAN], &[1.0, 2.0], 0.95), None);
        assert_eq!(mann_whitney_ci(&[1.0, 3.0], &[1.0, 2.0], 1.0), None);
        // One observation a side is two constant samples: R throws there too.
        assert_eq!(mann_whitney_ci(&[5.0], &[2.0], 0.95), None);
        // R: wilcox.test(c(5, 6), 2, conf.int=TRUE, exact=FALSE) -> CI [3, 4], estimate 3.5.
        let r = mann_whitney_ci(&[5.0, 6.0], &[2.0], 0.95).unwrap();
        assert_eq!((r.lower, r.estimate, r.upper), (3.0, 3.5, 4.0));
    }

    proptest! {
        #[test]
        fn ordered_within_range_and_antisymmetric(
            x in prop::collection::vec(0u8..12, 1..25),
            y in prop::collection::vec(0u8..12, 1..25),
            conf in 0.5f64..0.995,
        ) {
            let x: Vec<f64> = x.into_iter().map(|v| f64::from(v) * 0.25).collect();
            let y: Vec<f64> = y.into_iter().map(|v| f64::from(v) * 0.25).collect();
            let Some(r) = mann_whitney_ci(&x, &y, conf) else {
                // Only refused when both samples are constant.
                prop_assert!(x.iter().all(|&v| v == x[0]) && y.iter().all(|&v| v == y[0]));
                return Ok(());
            };
            let s = Shift::new(&x, &y);
            prop_assert!(s.mu_min <= r.lower && r.lower <= r.estimate);
            prop_assert!(r.estimate <= r.upper && r.upper <= s.mu_max);
            // Swapping the samples mirrors everything: the statistic is odd in (x, y) and the
            // tie and continuity corrections are symmetric.
            let m = mann_whitney_ci(&y, &x, conf).unwrap();
            prop_assert!(close(m.lower, -r.upper, 1e-9), "{r:?} {m:?}");
            prop_assert!(close(m.upper, -r.lower, 1e-9), "{r:?} {m:?}");
            prop_assert!(close(m.estimate, -r.estimate, 1e-9), "{r:?} {m:?}");
            // A wider confidence level never gives a narrower interval.
            let w = mann_whitney_ci(&x, &y, (conf + 1.0) / 2.0).unwrap();
            prop_assert!(w.lower <= r.lower && r.upper <= w.upper);
        }
    }
}
