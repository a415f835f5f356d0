//! The statistics: a one-sided, anytime-valid test that "bad events" (errors, slow requests)
//! happen more often after a change than before it, beyond a tolerance.
//!
//! The test conditions on the total number of bad events, which removes the unknown base rate
//! (Lindon & Malek's conditional e-process, as used for Netflix canaries). With `n_c, x_c` the
//! requests and bad events on the control side (the baseline window, or the old arm) and
//! `n_t, x_t` on the treatment side, the null hypothesis "the treatment's rate is at most `c`
//! times the control's" makes each bad event a treatment event with probability at most
//! `θ_c = c·n_t / (n_c + c·n_t)`. The likelihood ratio of ratio `r` against `c` is
//!
//! ```text
//! ln LR_r = x_t·ln(r/c) + (x_t + x_c)·ln((n_c + c·n_t) / (n_c + r·n_t))
//! ```
//!
//! and mixing it over a grid of ratios `r > c` gives an e-value that needs no guess of the
//! effect size. In the concurrent design (old and new arms side by side) the ratio is applied
//! to each second's counts and the log-ratios add up: that is an exact test martingale, immune
//! to any traffic or error-rate drift common to both arms. In the before/after design the
//! control is the frozen baseline window and the ratio is applied to the cumulative counts: at
//! every fixed time its expectation under the null is exactly 1 whatever the base rate, and it
//! carries the baseline's own sampling noise in the `x_c` term, so a small baseline makes the
//! test slower instead of trigger-happy.
//!
//! Each second's gain in log-evidence is capped: a regression persists, a burst of errors from
//! one misbehaving client does not, so a burst can add at most a few nats while a real
//! regression keeps adding them. Capping a likelihood-ratio factor never raises its expectation,
//! so the cap keeps the guarantee.

/// Ratios (treatment rate over the null's limit) the mixture bets on, with their prior weights.
/// Dense near small effects, where precision pays; sparse up to an outage of a rare-error service.
pub const RATIO_GRID: [(f64, f64); 11] = [
    (1.25, 0.10),
    (1.5, 0.15),
    (1.75, 0.13),
    (2.0, 0.13),
    (2.5, 0.12),
    (3.0, 0.10),
    (5.0, 0.08),
    (10.0, 0.07),
    (30.0, 0.05),
    (100.0, 0.04),
    (1000.0, 0.03),
];

/// Requests and bad events on one side of a comparison.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub requests: u64,
    pub events: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.requests += other.requests;
        self.events += other.events;
    }

    pub fn rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.events as f64 / self.requests as f64)
    }
}

/// `ln LR_r` for a control/treatment pair against the null ratio `c` (see the module doc).
/// Zero when either side has no requests: then the counts say nothing about the ratio.
pub fn log_likelihood_ratio(control: Counts, treatment: Counts, c: f64, r: f64) -> f64 {
    if control.requests == 0 || treatment.requests == 0 {
        return 0.0;
    }
    let (nc, nt) = (control.requests as f64, treatment.requests as f64);
    let total = (control.events + treatment.events) as f64;
    let x_t = treatment.events as f64;
    x_t * (r / c).ln() + total * ((nc + c * nt) / (nc + r * nt)).ln()
}

/// A mixture e-process over [`RATIO_GRID`] and over when the regression started.
///
/// A regression may begin well after the deploy (a leak, a cache that runs cold). A test started
/// at the deploy would first have to climb out of the evidence it gathered against the null
/// while nothing was wrong. So the e-value also bets, with small prior weights, on the test
/// restarting at every later second: per ratio, `M_t = (M_{t-1} + w_t) · LR_t`, the weighted sum
/// of the likelihood ratios started at each second (a Shiryaev-Roberts statistic with weights).
/// Weights sum to at most one, so the mixture is still an e-process.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MixtureEProcess {
    /// `ln M` per ratio; `-inf` until the first second (saved as `null`: JSON has no infinity).
    #[serde(with = "log_values")]
    log_m: [f64; RATIO_GRID.len()],
}

/// Saves log-values with `-inf` as `null`, since JSON cannot hold an infinity.
mod log_values {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::RATIO_GRID;

    pub fn serialize<S: Serializer>(v: &[f64; RATIO_GRID.len()], s: S) -> Result<S::Ok, S::Error> {
        let finite: Vec<Option<f64>> = v.iter().map(|x| x.is_finite().then_some(*x)).collect();
        finite.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<[f64; RATIO_GRID.len()], D::Error> {
        let values: Vec<Option<f64>> = Vec::deserialize(d)?;
        let mut out = [f64::NEG_INFINITY; RATIO_GRID.len()];
        if values.len() != out.len() {
            return Err(serde::de::Error::invalid_length(
                values.len(),
                &"one value per ratio",
            ));
        }
        for (o, v) in out.iter_mut().zip(values) {
            *o = v.unwrap_or(f64::NEG_INFINITY);
        }
        Ok(out)
    }
}

impl Default for MixtureEProcess {
    fn default() -> Self {
        MixtureEProcess {
            log_m: [f64::NEG_INFINITY; RATIO_GRID.len()],
        }
    }
}

impl MixtureEProcess {
    /// Adds one second of evidence: `increments[j]` is that second's change in `ln LR` for the
    /// j-th ratio of the grid; each gain is capped at `cap` nats. `start_weight` is the prior
    /// weight of "the regression starts with this second".
    pub fn add(&mut self, cap: f64, increments: &[f64; RATIO_GRID.len()], start_weight: f64) {
        let ln_w = start_weight.ln();
        for (slot, inc) in self.log_m.iter_mut().zip(increments) {
            *slot = log_add_exp(*slot, ln_w) + inc.min(cap);
        }
    }

    /// The e-value: the prior-weighted mean over ratios.
    pub fn e_value(&self) -> f64 {
        self.log_m
            .iter()
            .zip(RATIO_GRID.iter())
            .map(|(l, &(_, w))| w * l.exp())
            .sum()
    }
}

fn log_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        hi
    } else {
        hi + (lo - hi).exp().ln_1p()
    }
}

/// The largest gain in log-evidence one second may bring, given how many bad events that
/// second would hold if the null were true. At low traffic a burst of a handful of errors must
/// not be able to prove a regression in one go; at high traffic such a burst is noise and the
/// cap grows with the standard deviation of the count so it does not slow real detections.
pub fn cap_for_second(base_cap: f64, expected_events: f64) -> f64 {
    base_cap.max(2.5 * expected_events.max(0.0).sqrt())
}

/// An upper confidence bound on the treatment/control rate ratio, at level `confidence`, from
/// the exact (Clopper-Pearson) bound on the share of bad events that fell on the treatment side.
/// `None` when there were no bad events at all: then the counts bound no ratio.
pub fn ratio_upper_bound(control: Counts, treatment: Counts, confidence: f64) -> Option<f64> {
    let total = control.events + treatment.events;
    if total == 0 || control.requests == 0 || treatment.requests == 0 {
        return None;
    }
    let share = share_upper_bound(treatment.events, total, confidence);
    if share >= 1.0 {
        return Some(f64::INFINITY);
    }
    Some(share / (1.0 - share) * control.requests as f64 / treatment.requests as f64)
}

/// One-sided Clopper-Pearson upper bound for a binomial proportion (`x` of `n`).
pub fn share_upper_bound(x: u64, n: u64, confidence: f64) -> f64 {
    use statrs::distribution::{Beta, ContinuousCDF};
    if x >= n {
        return 1.0;
    }
    match Beta::new(x as f64 + 1.0, (n - x) as f64) {
        Ok(beta) => beta.inverse_cdf(confidence),
        Err(_) => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(requests: u64, events: u64) -> Counts {
        Counts { requests, events }
    }

    #[test]
    fn prior_weights_sum_to_one() {
        let total: f64 = RATIO_GRID.iter().map(|&(_, w)| w).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }

    #[test]
    fn no_data_is_no_evidence() {
        assert_eq!(
            log_likelihood_ratio(counts(0, 0), counts(50, 3), 1.1, 2.0),
            0.0
        );
        assert_eq!(
            log_likelihood_ratio(counts(50, 3), counts(0, 0), 1.1, 2.0),
            0.0
        );
    }

    #[test]
    fn the_likelihood_ratio_is_the_conditional_binomial_one() {
        let (c, r) = (1.1, 3.0);
        let (ctl, trt) = (counts(1000, 12), counts(300, 9));
        let theta = |k: f64| k * 300.0 / (1000.0 + k * 300.0);
        let direct =
            9.0 * (theta(r) / theta(c)).ln() + 12.0 * ((1.0 - theta(r)) / (1.0 - theta(c))).ln();
        assert!((log_likelihood_ratio(ctl, trt, c, r) - direct).abs() < 1e-9);
    }

    #[test]
    fn the_conditional_likelihood_ratio_has_expectation_one_under_the_null() {
        // Given the total number of bad events, the treatment's share is binomial with
        // probability theta_c under the null boundary: the expectation is exactly 1.
        use statrs::distribution::{Binomial, Discrete};
        let (nc, nt, total, c) = (2000u64, 700u64, 40u64, 1.1);
        let theta_c = c * nt as f64 / (nc as f64 + c * nt as f64);
        let binom = Binomial::new(theta_c, total).unwrap();
        for &(r, _) in RATIO_GRID.iter() {
            let expectation: f64 = (0..=total)
                .map(|x| {
                    let lr = log_likelihood_ratio(counts(nc, total - x), counts(nt, x), c, r);
                    binom.pmf(x) * lr.exp()
                })
                .sum();
            assert!((expectation - 1.0).abs() < 1e-9, "r = {r}: {expectation}");
        }
    }

    #[test]
    fn evidence_grows_with_excess_events_and_shrinks_without_them() {
        let ctl = counts(10_000, 100);
        let worse = log_likelihood_ratio(ctl, counts(1000, 40), 1.1, 3.0);
        let same = log_likelihood_ratio(ctl, counts(1000, 10), 1.1, 3.0);
        assert!(worse > 5.0, "{worse}");
        assert!(same < 0.0, "{same}");
    }

    #[test]
    fn a_capped_second_cannot_add_more_than_the_cap() {
        let mut e = MixtureEProcess::default();
        e.add(1.0, &[50.0; RATIO_GRID.len()], 1.0);
        assert!((e.e_value() - 1f64.exp()).abs() < 1e-9);
    }

    #[test]
    fn a_late_start_recovers_from_evidence_gathered_before_it() {
        // Ten minutes of mild evidence against, then strong evidence for.
        let mut from_deploy_only = MixtureEProcess::default();
        let mut with_restarts = MixtureEProcess::default();
        for t in 0..660 {
            let inc = if t < 600 { -0.05 } else { 0.5 };
            from_deploy_only.add(
                10.0,
                &[inc; RATIO_GRID.len()],
                if t == 0 { 1.0 } else { 0.0 },
            );
            let w = if t == 0 { 0.8 } else { 0.2 / 1800.0 };
            with_restarts.add(10.0, &[inc; RATIO_GRID.len()], w);
        }
        assert!(from_deploy_only.e_value() < 1.0);
        assert!(with_restarts.e_value() > 1e6, "{}", with_restarts.e_value());
    }

    #[test]
    fn the_cap_grows_with_the_expected_count() {
        assert_eq!(cap_for_second(1.2, 0.1), 1.2);
        assert!((cap_for_second(1.2, 4.0) - 5.0).abs() < 1e-12);
    }

    #[test]
    fn ratio_bounds_cover_the_observed_ratio() {
        let ub = ratio_upper_bound(counts(10_000, 100), counts(10_000, 100), 0.95).unwrap();
        assert!(ub > 1.0 && ub < 1.4, "{ub}");
        assert_eq!(ratio_upper_bound(counts(10, 0), counts(10, 0), 0.95), None);
        assert_eq!(
            ratio_upper_bound(counts(10, 0), counts(10, 3), 0.95),
            Some(f64::INFINITY)
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_log_likelihood_ratio_is_finite(
            nc in 0u64..1_000_000, xc_share in 0.0f64..1.0,
            nt in 0u64..1_000_000, xt_share in 0.0f64..1.0,
            j in 0usize..RATIO_GRID.len(), c in 1.0f64..2.0,
        ) {
            let control = Counts { requests: nc, events: (nc as f64 * xc_share) as u64 };
            let treatment = Counts { requests: nt, events: (nt as f64 * xt_share) as u64 };
            let llr = log_likelihood_ratio(control, treatment, c, c * RATIO_GRID[j].0);
            prop_assert!(llr.is_finite());
        }

        #[test]
        fn more_bad_events_after_the_change_never_weaken_the_evidence(
            nc in 1u64..100_000, xc in 0u64..1_000, nt in 1u64..100_000, xt in 0u64..1_000,
            j in 0usize..RATIO_GRID.len(),
        ) {
            let control = Counts { requests: nc, events: xc.min(nc) };
            let r = 1.1 * RATIO_GRID[j].0;
            let base = Counts { requests: nt, events: xt.min(nt) };
            let more = Counts { requests: nt, events: (xt + 1).min(nt) };
            prop_assert!(log_likelihood_ratio(control, more, 1.1, r)
                >= log_likelihood_ratio(control, base, 1.1, r) - 1e-9);
        }

        #[test]
        fn the_e_value_is_never_negative_or_nan(incs in proptest::collection::vec(-50.0f64..50.0, 1..200)) {
            let mut e = MixtureEProcess::default();
            for (i, x) in incs.iter().enumerate() {
                e.add(1.2, &[*x; RATIO_GRID.len()], if i == 0 { 0.85 } else { 0.0001 });
                let v = e.e_value();
                prop_assert!(v.is_finite() && v >= 0.0, "{v}");
            }
        }
    }
}
