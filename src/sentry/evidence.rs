//! Sentry's events as evidence about a change, pure: the events of every issue per request
//! after the change against the baseline's, tested as the core tests errors (the conditional
//! likelihood ratio of `core::evidence`, mixed over effect sizes and start times, each step's
//! gain capped), on the counts as they stand at each tick. A new issue that fires after the
//! change raises the events per request like any other; one firing before it is in the
//! baseline. Its alpha is its own share of the detector's (`[daemon.sentry] alpha_share`), so
//! the false-rollback rate of a watch stays the detector's `alpha` (a union bound).

use serde::{Deserialize, Serialize};

use crate::core::evidence::{self, cap_for_second, Counts, MixtureEProcess, RATIO_GRID};
use crate::core::watch::Side;
use crate::core::{SignalKind, SignalReport};

/// Prior weight of "the change made it worse from the start"; the rest is spread over the
/// watch (a leak, a cold cache), as in the core.
const IMMEDIATE_WEIGHT: f64 = 0.85;

/// One change's Sentry evidence.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SentryWatch {
    alpha: f64,
    /// The null hypothesis allows the after/before ratio of events per request up to this
    /// (down to it when `lower`).
    null_ratio: f64,
    /// Whether the test is for fewer events than the null allows (a fix shown to work), not
    /// more.
    #[serde(default)]
    lower: bool,
    base_cap: f64,
    watch_secs: f64,
    change_at: f64,
    process: MixtureEProcess,
    previous: [f64; RATIO_GRID.len()],
    /// Until when start weight has been given.
    weighted_until: Option<f64>,
    /// The baseline's counts, fixed by the first update: events sent later, dated back into
    /// the baseline's time (by whoever holds the secret), must not make the change look
    /// better.
    #[serde(default)]
    baseline_fixed: bool,
    /// How far the counts handed in reach (`until` of the last update).
    #[serde(default)]
    counted_until: Option<f64>,
    baseline: Counts,
    after: Counts,
    #[serde(skip)]
    e_value: f64,
}

impl SentryWatch {
    pub fn new(
        alpha: f64,
        tolerance: f64,
        base_cap: f64,
        watch_secs: u32,
        change_at: f64,
    ) -> SentryWatch {
        SentryWatch {
            alpha,
            null_ratio: 1.0 + tolerance,
            lower: false,
            base_cap,
            watch_secs: f64::from(watch_secs.max(1)),
            change_at,
            process: MixtureEProcess::default(),
            previous: [0.0; RATIO_GRID.len()],
            weighted_until: None,
            baseline_fixed: false,
            counted_until: None,
            baseline: Counts::default(),
            after: Counts::default(),
            e_value: 0.0,
        }
    }

    /// The same test the other way: evidence that the events per request after the change
    /// are below `null_ratio` times the baseline's (the alternatives are the null ratio
    /// divided by each of the grid's ratios).
    pub fn lower(mut self) -> SentryWatch {
        self.lower = true;
        self
    }

    /// The counts as they stand: the baseline's requests and the events in its window, the
    /// requests and events since the change up to `until` (both over the same time). Called
    /// as time passes; a late delivery after the change only moves the counts after it, so it
    /// is counted when it comes. The baseline's are taken from the first call with baseline
    /// requests, and kept.
    /// The gain of one update is capped as the core caps each second's, times the seconds
    /// it covers.
    pub fn update(&mut self, baseline: Counts, after: Counts, until: f64) {
        let baseline = if self.baseline_fixed {
            self.baseline
        } else {
            self.baseline_fixed = baseline.requests > 0;
            baseline
        };
        self.counted_until = Some(until);
        let now = until;
        let secs = match self.weighted_until {
            None => (until - self.change_at).max(1.0),
            Some(last) => (until - last).max(1.0),
        };
        if (baseline, after) == (self.baseline, self.after) && self.weighted_until.is_some() {
            return;
        }
        let c = self.null_ratio;
        let mut increments = [0.0; RATIO_GRID.len()];
        for (j, &(m, _)) in RATIO_GRID.iter().enumerate() {
            let r = if self.lower { c / m } else { c * m };
            let llr = evidence::log_likelihood_ratio(baseline, after, c, r);
            increments[j] = llr - self.previous[j];
            self.previous[j] = llr;
        }
        let new_requests = after.requests.saturating_sub(self.after.requests);
        let expected = c * baseline.rate().unwrap_or(0.0) * new_requests as f64;
        let weight = self.start_weight(now);
        let cap = secs * cap_for_second(self.base_cap, expected / secs);
        self.process.add(cap, &increments, weight);
        self.baseline = baseline;
        self.after = after;
        self.e_value = self.process.e_value();
    }

    /// The same test, started afresh at `at` for `watch_secs` (a recovery check after a
    /// remediation, against the same baseline).
    pub fn restarted(&self, at: f64, watch_secs: u32) -> SentryWatch {
        SentryWatch {
            lower: self.lower,
            baseline_fixed: self.baseline_fixed,
            baseline: self.baseline,
            ..SentryWatch::new(
                self.alpha,
                self.null_ratio - 1.0,
                self.base_cap,
                watch_secs,
                at,
            )
        }
    }

    /// How far the counts handed in reach.
    pub fn counted_until(&self) -> Option<f64> {
        self.counted_until
    }

    /// The counts last handed in: the baseline's, and since the change.
    pub fn counts(&self) -> (Counts, Counts) {
        (self.baseline, self.after)
    }

    /// Prior weight of "it started in the time since the last update".
    fn start_weight(&mut self, now: f64) -> f64 {
        let later = (1.0 - IMMEDIATE_WEIGHT) / self.watch_secs;
        let w = match self.weighted_until {
            None => IMMEDIATE_WEIGHT + later * (now - self.change_at).clamp(0.0, self.watch_secs),
            Some(until) => later * (now.min(self.change_at + self.watch_secs) - until).max(0.0),
        };
        self.weighted_until = Some(
            now.min(self.change_at + self.watch_secs)
                .max(self.change_at),
        );
        w
    }

    pub fn e_value(&self) -> f64 {
        self.e_value
    }

    pub fn threshold(&self) -> f64 {
        1.0 / self.alpha
    }

    /// Whether the events per request are shown beyond the null ratio: worse than the
    /// baseline's past the tolerance (below it, when `lower`).
    pub fn regressed(&self) -> bool {
        self.e_value >= self.threshold()
    }

    /// The signal as reports show it. It can make a change regressed; it never bounds the
    /// harm, so it neither makes nor withholds a healthy verdict ("not shown worse").
    pub fn report(&self) -> SignalReport {
        let ratio = match (self.baseline.rate(), self.after.rate()) {
            (Some(b), Some(a)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let not_compared = (self.baseline.requests == 0)
            .then(|| "no baseline requests to count Sentry's events against".to_owned());
        SignalReport {
            signal: SignalKind::SentryEvents,
            regressed: self.regressed(),
            e_value: self.e_value,
            e_value_threshold: self.threshold(),
            alpha: self.alpha,
            null_ratio: self.null_ratio,
            baseline: Side::from(self.baseline),
            after: Side::from(self.after),
            effect_ratio: ratio,
            ratio_upper_bound: None,
            within_limits: None,
            threshold_ms: None,
            routes_compared: usize::from(not_compared.is_none()),
            worst_route: None,
            dispersion: 1.0,
            levels: Vec::new(),
            not_compared,
            thin: None,
            left_out: false,
            leans_worse: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_764_000_000.0;

    fn counts(requests: u64, events: u64) -> Counts {
        Counts { requests, events }
    }

    /// A watch fed every second: 20 requests a second after a baseline of 600 s at 20 a second
    /// with `before` events per 1,000 requests, and `after` per 1,000 after the change.
    fn run(before: f64, after: f64, secs: u32) -> SentryWatch {
        let mut w = SentryWatch::new(0.01, 0.1, 3.0, 600, T0);
        let base = counts(12_000, (12.0 * before).round() as u64);
        for s in 1..=secs {
            let n = 20 * u64::from(s);
            let events = (n as f64 * after / 1000.0).floor() as u64;
            w.update(base, counts(n, events), T0 + f64::from(s));
            if w.regressed() {
                break;
            }
        }
        w
    }

    #[test]
    fn events_per_request_as_before_are_not_shown_worse() {
        let w = run(5.0, 5.0, 600);
        assert!(!w.regressed(), "e-value {}", w.e_value());
        assert!(w.e_value() < 2.0, "e-value {}", w.e_value());
        let r = w.report();
        assert_eq!(r.signal, SignalKind::SentryEvents);
        assert_eq!(r.e_value_threshold, 100.0);
    }

    #[test]
    fn a_new_issue_firing_after_the_change_is_shown_worse_within_a_minute() {
        // 5 events per 1,000 requests before; a new issue adds 20 per 1,000 after.
        let w = run(5.0, 25.0, 600);
        assert!(w.regressed(), "e-value {}", w.e_value());
        assert!(
            w.after.requests <= 20 * 60,
            "took {} requests",
            w.after.requests
        );
        let r = w.report();
        assert!(r.regressed);
        assert!(
            (r.effect_ratio.unwrap() - 5.0).abs() < 1.0,
            "{:?}",
            r.effect_ratio
        );
    }

    #[test]
    fn events_dated_back_into_the_baseline_after_the_change_do_not_hide_it() {
        let mut honest = SentryWatch::new(0.01, 0.1, 3.0, 600, T0);
        let mut attacked = honest.clone();
        for s in 1..=60u32 {
            let n = 20 * u64::from(s);
            let after = counts(n, n / 20);
            honest.update(counts(12_000, 60), after, T0 + f64::from(s));
            // From the second update on, a flood of events "from before the change".
            let base = if s == 1 { 60 } else { 6_000 };
            attacked.update(counts(12_000, base), after, T0 + f64::from(s));
        }
        assert!(honest.regressed());
        assert_eq!(attacked.e_value(), honest.e_value());
        assert_eq!(attacked.report().baseline.events, 60);
    }

    #[test]
    fn without_baseline_requests_nothing_is_compared() {
        let mut w = SentryWatch::new(0.01, 0.1, 3.0, 600, T0);
        w.update(counts(0, 0), counts(100, 40), T0 + 5.0);
        assert!(!w.regressed());
        assert!(w.report().not_compared.is_some());
    }
}
