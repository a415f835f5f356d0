//! Watching one change: the frozen baseline, the traffic since the change, one sequential test
//! per signal, and the verdict with its evidence.
//!
//! Three signals, each a family of one-sided tests of "bad events" (see `evidence`):
//! - errors: failed requests, against the error tolerance;
//! - slow requests: slower than a threshold frozen from the baseline (its p99 by default) or an
//!   SLO, against the same relative tolerance;
//! - latency: at several baseline quantiles, the share of requests slower than the quantile
//!   made `1 + latency_tolerance` times slower, against the baseline's share above the quantile
//!   itself. That is a test of "no slower than the baseline plus tolerance" across the
//!   distribution, not just at its tail.
//!
//! Each route is its own stratum. A signal's e-value mixes two alternatives: every route got
//! worse by a common ratio (the product of the routes' likelihood ratios), and one route broke
//! (each route's own likelihood ratio). Alpha is split across the signals by a union bound.
//!
//! One file per concern: this one is the watch over time (the second being filled, seconds
//! closed into the tests, the end of the window and the verdict); `signal` holds each signal's
//! sequential tests and how a second adds to their evidence; `readout` reads a watch's state
//! out as its `Report`; `thin` says when a signal too thin to ever bound the harm is left out
//! of a healthy verdict; `report` is the `Report` as it is stored and read back.

use serde::{Deserialize, Serialize};

use super::baseline::{Baseline, BaselineWindow};
use super::dispersion::{Dispersion, Events, BIN_SECS};
use super::histogram::{self, buckets_for_ratio};
use super::monitor::DeployWindow;
use super::observation::Arm;
use super::settings::DetectorSettings;
use super::tally::Tally;

mod readout;
mod report;
mod signal;
mod thin;

pub use report::{
    signal_words, ClaimVerdict, FixClaim, LevelReport, Report, Side, SignalReport, Thin,
};
pub use signal::SignalKind;

use signal::{Signal, Test};

/// Prior weight of "the regression starts with the deploy"; the rest is spread evenly over the
/// later seconds of the watch window (delayed onsets).
const IMMEDIATE_WEIGHT: f64 = 0.85;

/// Where a watch stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Still collecting evidence.
    Watching,
    /// The change made things worse.
    Regressed,
    /// The watch window ended and the evidence bounds any harm below the configured limits.
    Healthy,
    /// The watch window ended without enough data to say either.
    Inconclusive,
}

/// How post-change traffic is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Design {
    /// After the change against the baseline window before it.
    BeforeAfter,
    /// The new arm against the old arm serving at the same time.
    Concurrent,
}

/// Per stratum, per side, what the watch has seen.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Sides {
    control: Tally,
    treatment: Tally,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Watch {
    settings: DetectorSettings,
    change_at: f64,
    /// The change's deploy window, excluded from every baseline. `None` in a watch saved
    /// before windows were kept.
    #[serde(default)]
    deploy: Option<DeployWindow>,
    /// Where the baseline comes from.
    #[serde(default)]
    baseline_window: BaselineWindow,
    end_sec: i64,
    baseline: Vec<Tally>,
    design: Option<Design>,
    signals: Vec<Signal>,
    /// The second being filled, and what it holds per stratum.
    open_sec: i64,
    open: Vec<Sides>,
    /// Everything since the change, per stratum.
    seen: Vec<Sides>,
    /// Requests without an arm label while comparing arms: not used, but reported.
    unlabelled: u64,
    /// Seconds before this one have had their start weight handed out.
    weighted_until: Option<i64>,
    /// Per test, in order: the burstiness its bad events showed in the baseline alone, for
    /// another watch against the same baseline (a watch saved before had none).
    #[serde(default)]
    baseline_bursts: Vec<Dispersion>,
    /// A watch after a rollback: `healthy` at its end means "back near the baseline".
    recovery: bool,
    /// In a recovery watch: the signals that fired, with the after/before ratio they fired at.
    #[serde(default)]
    harm: Vec<(SignalKind, f64)>,
    /// The 10-second bin being filled, all routes and both arms together.
    bin: (i64, Tally),
    /// The same bin, the old arm's only (the concurrent design).
    #[serde(default)]
    bin_control: Tally,
    verdict: Verdict,
    decided_at: Option<f64>,
}

impl Watch {
    /// Starts watching a change that landed at the end of its deploy `window`, against
    /// `baseline`. Each test's evidence is discounted by how bursty its bad events are (see
    /// `dispersion`): in the baseline's bins first, then the watch's own as they complete.
    pub fn new(settings: &DetectorSettings, window: DeployWindow, baseline: Baseline) -> Watch {
        let Baseline {
            tallies,
            bins,
            window: baseline_window,
        } = baseline;
        Watch::start(settings, window, tallies, baseline_window, |_, events| {
            Dispersion::over(events, bins.iter().map(Option::as_ref))
        })
    }

    /// A watch against `baseline`, each test's burstiness in the baseline given by `bursts`
    /// (from the test's place among all tests and what it counts).
    fn start(
        settings: &DetectorSettings,
        window: DeployWindow,
        baseline: Vec<Tally>,
        baseline_window: BaselineWindow,
        bursts: impl Fn(usize, Events) -> Dispersion,
    ) -> Watch {
        let change_at = window.to;
        let shift = buckets_for_ratio(1.0 + settings.latency_tolerance);
        let n = baseline.len();
        let big_enough: Vec<bool> = baseline
            .iter()
            .map(|t| t.requests >= settings.min_baseline_requests)
            .collect();
        let mut errors = Test::new(
            None,
            1.0 + settings.error_tolerance,
            vec![None; n],
            vec![None; n],
            big_enough.clone(),
        );
        let pooled = {
            let mut h = histogram::Histogram::new();
            for t in &baseline {
                h.merge(&t.latency);
            }
            h
        };
        // With no latency in the baseline there is nothing to compare; the index stays 1.
        let slower_than =
            |b: Option<usize>| Events::SlowerThan(b.unwrap_or(histogram::BUCKETS - 1));
        errors.count_bursts(Events::Errors);
        let slow = {
            let mut from = vec![None; n];
            let mut eligible = vec![false; n];
            for (s, t) in baseline.iter().enumerate() {
                let b = match settings.slow_threshold_ms {
                    Some(slo) => Some((histogram::bucket_of(slo) + 1).min(histogram::BUCKETS - 1)),
                    None => t.latency.quantile_bucket(settings.slow_quantile),
                };
                if let Some(b) = b {
                    from[s] = Some(b);
                    eligible[s] = big_enough[s]
                        && (settings.slow_threshold_ms.is_some()
                            || t.latency.count_at_or_above(b) >= settings.min_baseline_tail);
                }
            }
            let mut test = Test::new(
                Some(settings.slow_quantile),
                1.0 + settings.error_tolerance,
                from.clone(),
                from,
                eligible,
            );
            test.count_bursts(slower_than(match settings.slow_threshold_ms {
                Some(slo) => Some((histogram::bucket_of(slo) + 1).min(histogram::BUCKETS - 1)),
                None => pooled.quantile_bucket(settings.slow_quantile),
            }));
            test
        };
        let latency_tests = settings
            .latency_quantiles
            .iter()
            .map(|&q| {
                let mut control = vec![None; n];
                let mut treatment = vec![None; n];
                let mut eligible = vec![false; n];
                for (s, t) in baseline.iter().enumerate() {
                    if let Some(b) = t.latency.quantile_bucket(q) {
                        control[s] = Some(b);
                        treatment[s] = Some((b + shift).min(histogram::BUCKETS - 1));
                        eligible[s] = big_enough[s]
                            && t.latency.count_at_or_above(b) >= settings.min_baseline_tail;
                    }
                }
                let mut test = Test::new(Some(q), 1.0, control, treatment, eligible);
                test.count_bursts(slower_than(pooled.quantile_bucket(q)));
                test
            })
            .collect();
        let split = settings.alpha_split;
        let mut signals = vec![
            Signal::new(
                SignalKind::Errors,
                settings.alpha * split.errors,
                vec![errors],
            ),
            Signal::new(
                SignalKind::SlowRequests,
                settings.alpha * split.slow,
                vec![slow],
            ),
            Signal::new(
                SignalKind::Latency,
                settings.alpha * split.latency,
                latency_tests,
            ),
        ];
        let mut baseline_bursts = Vec::new();
        for test in signals.iter_mut().flat_map(|s| s.tests.iter_mut()) {
            let d = bursts(baseline_bursts.len(), test.burst_events());
            baseline_bursts.push(d.clone());
            test.set_bursts(d);
        }
        let start_sec = change_at.floor() as i64;
        Watch {
            settings: settings.clone(),
            change_at,
            deploy: Some(window),
            baseline_window,
            end_sec: (change_at + f64::from(settings.watch_secs)).ceil() as i64,
            baseline,
            design: None,
            signals,
            open_sec: start_sec,
            open: Vec::new(),
            seen: Vec::new(),
            unlabelled: 0,
            weighted_until: None,
            bin: (start_sec.div_euclid(BIN_SECS), Tally::default()),
            bin_control: Tally::default(),
            baseline_bursts,
            recovery: false,
            harm: Vec::new(),
            verdict: Verdict::Watching,
            decided_at: None,
        }
    }

    pub fn change_at(&self) -> f64 {
        self.change_at
    }

    /// The change's deploy window (empty for a watch saved before windows were kept).
    pub fn deploy_window(&self) -> DeployWindow {
        self.deploy.unwrap_or(DeployWindow {
            from: self.change_at,
            to: self.change_at,
            given: false,
        })
    }

    pub fn is_recovery(&self) -> bool {
        self.recovery
    }

    /// Another watch against this one's baseline, by `settings`.
    fn against_same_baseline(&self, settings: &DetectorSettings, window: DeployWindow) -> Watch {
        Watch::start(
            settings,
            window,
            self.baseline.clone(),
            self.baseline_window.clone(),
            |i, events| {
                self.baseline_bursts
                    .get(i)
                    .filter(|d| d.events() == events)
                    .cloned()
                    .unwrap_or_else(|| Dispersion::of(events))
            },
        )
    }

    /// Another window from `at`, against the same baseline and by the same rules.
    pub fn extension(&self, at: f64) -> Watch {
        let mut watch = self.against_same_baseline(&self.settings, self.window_from(at));
        watch.deploy = self.deploy;
        watch
    }

    /// A window that starts at `at` with no deploy of its own.
    fn window_from(&self, at: f64) -> DeployWindow {
        DeployWindow {
            from: at,
            to: at,
            given: true,
        }
    }

    /// A new watch of `watch_secs` from `at`, against this watch's baseline: after a rollback,
    /// whether the service is back to what it was before the change (the traffic since the
    /// change is not a baseline to go back to).
    pub fn recovery(&self, at: f64, watch_secs: u32) -> Watch {
        let settings = DetectorSettings {
            watch_secs,
            ..self.settings.clone()
        };
        let mut watch = self.against_same_baseline(&settings, self.window_from(at));
        watch.recovery = true;
        // After a canary's rollback the revert runs everywhere, and whether the service is back
        // is a question for every host against the baseline: against the rest, which the
        // redeploy restarted into the same revert, a fleet still failing looked "recovered".
        // Unless there is no baseline to speak of (a canary deployed as guardian began): then
        // the rest is all there is.
        let has_baseline = self
            .baseline
            .iter()
            .any(|t| t.requests >= self.settings.min_baseline_requests);
        if has_baseline {
            watch.design = Some(Design::BeforeAfter);
        }
        if self.recovery {
            // A second remediation after a first did not help (a flag turned off, then the
            // revert): the harm to be gone is still the change's, not what the first left.
            watch.harm = self.harm.clone();
            return watch;
        }
        watch.harm = self
            .report(None)
            .signals
            .iter()
            // Latency's effect ratio is of medians, which a tail regression need not move; the
            // latency test itself, running all through the recovery window, guards it.
            .filter(|s| s.regressed && s.signal != SignalKind::Latency)
            .filter_map(|s| Some((s.signal, s.effect_ratio?)))
            .collect();
        watch
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    pub fn decided_at(&self) -> Option<f64> {
        self.decided_at
    }

    /// Evidence judged beside the core (Sentry's events, by the daemon) showed the change
    /// worse at `at`: the watch ends regressed there, as if one of its own signals had fired,
    /// even if its own signals had just found it healthy (or, for a recovery, back).
    pub fn regressed_beside(&mut self, at: f64) {
        if matches!(self.verdict, Verdict::Watching | Verdict::Healthy) {
            self.verdict = Verdict::Regressed;
            self.decided_at = Some(at);
        }
    }

    /// The tally of the open second that an observation at `ts` belongs in, after closing every
    /// earlier second. `None` once decided, or for observations before the change.
    pub fn tally_for(&mut self, ts: f64, stratum: usize, arm: Option<Arm>) -> Option<&mut Tally> {
        if ts < self.change_at {
            return None;
        }
        self.advance(ts.floor() as i64);
        if self.verdict != Verdict::Watching {
            return None;
        }
        let design = match self.design {
            Some(design) => design,
            None => {
                let design = match arm {
                    Some(_) => Design::Concurrent,
                    None => Design::BeforeAfter,
                };
                if design == Design::Concurrent {
                    // The old arm beside the canary is the comparison, and its bins the
                    // measure of how bursty errors are: the baseline's (which may hold an
                    // incident of a version long gone) is not used for errors.
                    for test in self.signals.iter_mut().flat_map(|s| s.tests.iter_mut()) {
                        if test.burst_events() == Events::Errors {
                            test.count_bursts(Events::Errors);
                        }
                    }
                }
                self.design = Some(design);
                design
            }
        };
        if self.open.len() <= stratum {
            self.open.resize_with(stratum + 1, Sides::default);
        }
        let sides = &mut self.open[stratum];
        match (design, arm) {
            (Design::BeforeAfter, _) | (Design::Concurrent, Some(Arm::Treatment)) => {
                Some(&mut sides.treatment)
            }
            (Design::Concurrent, Some(Arm::Control)) => Some(&mut sides.control),
            (Design::Concurrent, None) => {
                self.unlabelled += 1;
                None
            }
        }
    }

    /// Closes every second before `sec`. Returns the verdict afterwards.
    pub fn advance(&mut self, sec: i64) -> Verdict {
        while self.verdict == Verdict::Watching && self.open_sec < sec {
            self.close_second();
            self.open_sec += 1;
            if self.verdict == Verdict::Watching && self.open_sec >= self.end_sec {
                self.finish();
            }
        }
        self.verdict
    }

    fn close_second(&mut self) {
        self.count_bin();
        let strata = self.open.len().max(self.seen.len());
        if self.seen.len() < strata {
            self.seen.resize_with(strata, Sides::default);
        }
        if self
            .open
            .iter()
            .all(|s| s.control.is_empty() && s.treatment.is_empty())
        {
            return;
        }
        let design = self.design.unwrap_or(Design::BeforeAfter);
        for (s, sides) in self.open.iter().enumerate() {
            self.seen[s].control.merge(&sides.control);
            self.seen[s].treatment.merge(&sides.treatment);
        }
        let base_cap = self.settings.max_evidence_per_second;
        let start_weight = self.start_weight();
        for signal in &mut self.signals {
            for test in &mut signal.tests {
                test.add_second(
                    design,
                    base_cap,
                    start_weight,
                    &self.baseline,
                    &self.open,
                    &self.seen,
                );
            }
            signal.update_e_value();
            if signal.e_value >= 1.0 / signal.alpha && self.verdict == Verdict::Watching {
                self.verdict = Verdict::Regressed;
                self.decided_at = Some((self.open_sec + 1) as f64);
            }
        }
        for sides in &mut self.open {
            sides.control.clear();
            sides.treatment.clear();
        }
    }

    /// Adds the second being closed to its 10-second bin. A bin completed goes to each test's
    /// dispersion (seconds are discounted by bins completed before them only, so the discount
    /// never depends on the evidence it discounts), as far as it says how bursty the service
    /// is rather than how the change does:
    /// - with a canary, the old arm's bins only: the canary's failures pooled with the rest's
    ///   successes read as bursts, up to tenfold, and a 40% canary was called after 79 s, not 12;
    /// - before against after, every bin. A regression that begins late in the watch may
    ///   raise its own index (its onset is one jump); but bursts after the change are what a thin
    ///   baseline may not show (at 1 request/s, 30 minutes hold three bursts or none), and
    ///   without them clumped errors rolled back 1.4% of harmless changes at 1 request/s
    ///   instead of 0.2% (guardbench), while late onsets were caught no faster.
    fn count_bin(&mut self) {
        let id = self.open_sec.div_euclid(BIN_SECS);
        if id != self.bin.0 {
            let (done_id, done) = std::mem::replace(&mut self.bin, (id, Tally::default()));
            let control = std::mem::take(&mut self.bin_control);
            // Empty bins in between break the chain of comparisons.
            let gap = id > done_id + 1;
            let concurrent = self.design == Some(Design::Concurrent);
            for test in self.signals.iter_mut().flat_map(|s| s.tests.iter_mut()) {
                test.add_burst_bin(if concurrent { &control } else { &done }, gap);
            }
        }
        for sides in &self.open {
            self.bin.1.merge(&sides.control);
            self.bin.1.merge(&sides.treatment);
            self.bin_control.merge(&sides.control);
        }
    }

    /// Prior weight of "the regression starts in the second being closed", including any
    /// seconds skipped since the last one with traffic (starting in an empty second is the
    /// same as starting in the next one).
    fn start_weight(&mut self) -> f64 {
        let first = self.change_at.floor() as i64;
        let later = (1.0 - IMMEDIATE_WEIGHT) / f64::from(self.settings.watch_secs.max(1));
        let from = self.weighted_until.unwrap_or(first);
        let mut w = 0.0;
        if from <= first {
            w += IMMEDIATE_WEIGHT;
        }
        w += later * (self.open_sec - from.max(first + 1) + 1).max(0) as f64;
        self.weighted_until = Some(self.open_sec + 1);
        w
    }

    /// After a rollback the question is narrower than "is this change healthy": is the harm
    /// that fired gone? A window of a minute or two cannot bound a rare error rate to within
    /// 1.1x, but it can show that each signal that fired is now below the ratio it fired at:
    /// its upper bound excludes that harm. Whatever harm is left, or new, has to get past the
    /// sequential tests, which run all through the window and call `regressed` ("the revert did
    /// not help"). Judging point estimates of a few hundred requests instead would escalate
    /// healthy recoveries by chance (it did: 1 run in 20 of the demo).
    fn harm_is_gone(&self, report: &Report) -> bool {
        let max = self.settings.healthy_max_ratio;
        if self.harm.is_empty() {
            // A recovery watch saved before the harm was recorded: the point estimates only.
            return report.signals.iter().all(|s| {
                s.signal == SignalKind::Latency || s.effect_ratio.is_none_or(|r| r <= max)
            });
        }
        self.harm.iter().all(|&(kind, fired_at)| {
            report
                .signals
                .iter()
                .find(|s| s.signal == kind)
                .is_some_and(|s| match (s.effect_ratio, s.ratio_upper_bound) {
                    (_, Some(bound)) => bound < fired_at,
                    (Some(now), None) => now < fired_at && now <= max,
                    (None, None) => false,
                })
        })
    }

    /// The window is over: healthy if the evidence bounds the harm, inconclusive otherwise.
    fn finish(&mut self) {
        let report = self.report(None);
        let enough = report.requests_after >= self.settings.min_requests_after;
        let healthy = if self.recovery {
            enough
                && self.harm_is_gone(&report)
                && report
                    .signals
                    .iter()
                    .any(|s| s.signal == SignalKind::Errors && s.after.requests > 0)
        } else {
            enough
                && report
                    .signals
                    .iter()
                    .filter(|s| !s.left_out)
                    .all(|s| s.within_limits != Some(false) && !s.leans_worse)
                && report
                    .signals
                    .iter()
                    .any(|s| s.signal == SignalKind::Errors && s.within_limits == Some(true))
        };
        self.verdict = if healthy {
            Verdict::Healthy
        } else {
            Verdict::Inconclusive
        };
        self.decided_at = healthy.then_some(self.end_sec as f64);
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_pcg::Pcg64Mcg;

    use crate::core::{Arm, DetectorSettings, Monitor, Request, Verdict};

    pub(super) const T0: f64 = 1_764_000_000.0;

    /// Feeds `secs` seconds of traffic starting at `from`: `rps` requests a second, each failing
    /// with probability `error(route, arm)`, spread over `routes`.
    struct Traffic {
        rng: Pcg64Mcg,
    }

    impl Traffic {
        fn new(seed: u64) -> Self {
            Traffic {
                rng: Pcg64Mcg::seed_from_u64(seed),
            }
        }

        #[allow(clippy::too_many_arguments)]
        fn feed(
            &mut self,
            m: &mut Monitor,
            from: f64,
            secs: u32,
            rps: u32,
            routes: &[&str],
            arms: &[Option<Arm>],
            error: impl Fn(usize, Option<Arm>) -> f64,
            latency_ms: impl Fn(usize, Option<Arm>) -> f64,
        ) -> Option<f64> {
            for s in 0..secs {
                for i in 0..rps {
                    let route = self.rng.gen_range(0..routes.len());
                    let arm = arms[i as usize % arms.len()];
                    let ts = from + f64::from(s) + f64::from(i) / f64::from(rps);
                    let jitter: f64 = self.rng.gen_range(0.7..1.4);
                    m.observe_request(&Request {
                        ts,
                        error: self.rng.gen::<f64>() < error(route, arm),
                        latency_ms: Some(latency_ms(route, arm) * jitter),
                        route: Some(routes[route]),
                        arm,
                    });
                }
                if from >= T0 && m.tick(from + f64::from(s) + 1.0) != Verdict::Watching {
                    return m.report().and_then(|r| r.decided_at);
                }
            }
            None
        }
    }

    fn watched(seed: u64, baseline_error: f64) -> (Monitor, Traffic) {
        let mut m = Monitor::new(DetectorSettings::default());
        let mut t = Traffic::new(seed);
        t.feed(
            &mut m,
            T0 - 1800.0,
            1800,
            20,
            &["/"],
            &[None],
            |_, _| baseline_error,
            |_, _| 50.0,
        );
        m.change_landed(T0);
        (m, t)
    }

    #[test]
    fn an_outage_is_called_within_seconds() {
        let (mut m, mut t) = watched(1, 0.01);
        let decided = t.feed(&mut m, T0, 60, 20, &["/"], &[None], |_, _| 1.0, |_, _| 50.0);
        assert_eq!(m.verdict(), Some(Verdict::Regressed));
        let after = decided.unwrap() - T0;
        assert!(after <= 10.0, "called {after} s after the change");
        let report = m.report().unwrap();
        let errors = &report.signals[0];
        assert!(errors.regressed);
        assert!(errors.effect_ratio.unwrap() > 50.0);
        assert!(errors.e_value >= errors.e_value_threshold);
    }

    #[test]
    fn unchanged_traffic_is_healthy_only_once_the_window_is_over() {
        let (mut m, mut t) = watched(2, 0.01);
        t.feed(
            &mut m,
            T0,
            1799,
            20,
            &["/"],
            &[None],
            |_, _| 0.01,
            |_, _| 50.0,
        );
        assert_eq!(m.verdict(), Some(Verdict::Watching));
        t.feed(
            &mut m,
            T0 + 1799.0,
            2,
            20,
            &["/"],
            &[None],
            |_, _| 0.01,
            |_, _| 50.0,
        );
        assert_eq!(m.verdict(), Some(Verdict::Healthy));
        assert_eq!(m.report().unwrap().decided_at, Some(T0 + 1800.0));
    }

    #[test]
    fn after_a_rollback_recovery_is_confirmed_or_refused_by_the_traffic() {
        for (after_rollback, expected) in [(0.01, Verdict::Healthy), (0.5, Verdict::Regressed)] {
            let (mut m, mut t) = watched(8, 0.01);
            t.feed(&mut m, T0, 30, 20, &["/"], &[None], |_, _| 0.6, |_, _| 50.0);
            assert_eq!(m.verdict(), Some(Verdict::Regressed));
            m.verify_recovery(T0 + 30.0, 60);
            assert_eq!(m.verdict(), Some(Verdict::Watching));
            let err = move |_: usize, _| after_rollback;
            t.feed(&mut m, T0 + 30.0, 61, 20, &["/"], &[None], err, |_, _| 50.0);
            assert_eq!(m.verdict(), Some(expected), "errors at {after_rollback}");
        }
    }

    #[test]
    fn after_a_canary_s_rollback_every_host_is_judged_against_the_baseline() {
        let arms = [Some(Arm::Control), Some(Arm::Treatment)];
        for (after_rollback, expected) in [(0.01, Verdict::Healthy), (0.4, Verdict::Regressed)] {
            let (mut m, mut t) = watched(8, 0.01);
            let canary_fails = |_, arm| match arm {
                Some(Arm::Treatment) => 0.6,
                _ => 0.01,
            };
            t.feed(&mut m, T0, 30, 20, &["/"], &arms, canary_fails, |_, _| 50.0);
            assert_eq!(m.verdict(), Some(Verdict::Regressed));
            m.verify_recovery(T0 + 30.0, 60);
            // The revert is on every host, the canary's still labelled as such: both fail
            // alike, or neither does.
            let err = move |_: usize, _| after_rollback;
            t.feed(&mut m, T0 + 30.0, 61, 20, &["/"], &arms, err, |_, _| 50.0);
            assert_eq!(m.verdict(), Some(expected), "errors at {after_rollback}");
        }
    }

    #[test]
    fn a_short_recovery_check_confirms_a_clean_revert_whatever_the_noise_in_other_signals() {
        // 15 s at 20 req/s after the revert: 300 requests, about 3 errors and 3 slow requests
        // expected. Chance alone puts either at twice the baseline's rate now and then; neither
        // is a reason to wake someone.
        // Under the old rule (every point estimate within 2x) 5 of these 100 seeds escalated.
        for seed in 100..200 {
            let (mut m, mut t) = watched(seed, 0.01);
            t.feed(&mut m, T0, 30, 20, &["/"], &[None], |_, _| 0.4, |_, _| 50.0);
            assert_eq!(m.verdict(), Some(Verdict::Regressed));
            m.verify_recovery(T0 + 30.0, 15);
            t.feed(
                &mut m,
                T0 + 30.0,
                16,
                20,
                &["/"],
                &[None],
                |_, _| 0.01,
                |_, _| 50.0,
            );
            assert_eq!(m.verdict(), Some(Verdict::Healthy), "seed {seed}");
        }
    }

    #[test]
    fn a_saved_and_restored_watch_decides_exactly_as_the_uninterrupted_one() {
        let (mut m, mut t) = watched(9, 0.01);
        t.feed(
            &mut m,
            T0,
            120,
            20,
            &["/"],
            &[None],
            |_, _| 0.01,
            |_, _| 50.0,
        );
        let saved = serde_json::to_string(&m).unwrap();
        let mut restored: Monitor = serde_json::from_str(&saved).unwrap();
        let mut t2 = Traffic::new(99);
        let mut t1 = Traffic::new(99);
        let worse = |_: usize, _| 0.04;
        let a = t1.feed(
            &mut m,
            T0 + 120.0,
            600,
            20,
            &["/"],
            &[None],
            worse,
            |_, _| 50.0,
        );
        let b = t2.feed(
            &mut restored,
            T0 + 120.0,
            600,
            20,
            &["/"],
            &[None],
            worse,
            |_, _| 50.0,
        );
        assert_eq!(m.verdict(), Some(Verdict::Regressed));
        assert_eq!(a, b);
        assert_eq!(restored.verdict(), m.verdict());
    }

    #[test]
    fn silence_after_the_change_is_never_healthy() {
        let (mut m, _) = watched(3, 0.01);
        assert_eq!(m.tick(T0 + 4000.0), Verdict::Inconclusive);
        assert_eq!(m.report().unwrap().decided_at, None);
    }

    #[test]
    fn a_shift_in_the_mix_of_routes_is_not_a_regression() {
        let routes = ["/cheap", "/costly"];
        let rate = |r: usize, _| if r == 0 { 0.002 } else { 0.05 };
        let mut m = Monitor::new(DetectorSettings::default());
        let mut t = Traffic::new(4);
        t.feed(
            &mut m,
            T0 - 1800.0,
            1800,
            20,
            &routes,
            &[None],
            rate,
            |_, _| 40.0,
        );
        m.change_landed(T0);
        // After the change nearly all traffic goes to the error-prone, slower route.
        let routes_after = ["/costly", "/costly", "/costly", "/cheap"];
        let rate_after = |r: usize, _| if r == 3 { 0.002 } else { 0.05 };
        t.feed(
            &mut m,
            T0,
            1801,
            20,
            &routes_after,
            &[None],
            rate_after,
            |_, _| 40.0,
        );
        assert_eq!(m.verdict(), Some(Verdict::Healthy));
    }

    #[test]
    fn with_arms_a_problem_common_to_both_is_not_blamed_on_the_change() {
        let arms = [Some(Arm::Control), Some(Arm::Treatment)];
        let (mut m, mut t) = watched(5, 0.01);
        // An incident triples errors on both arms.
        t.feed(&mut m, T0, 600, 40, &["/"], &arms, |_, _| 0.03, |_, _| 50.0);
        assert_eq!(m.verdict(), Some(Verdict::Watching));
        assert_eq!(m.report().unwrap().design, super::Design::Concurrent);
        // Now only the new arm fails more.
        let worse = |_, arm| {
            if arm == Some(Arm::Treatment) {
                0.09
            } else {
                0.03
            }
        };
        let decided = t.feed(&mut m, T0 + 600.0, 600, 40, &["/"], &arms, worse, |_, _| {
            50.0
        });
        assert_eq!(m.verdict(), Some(Verdict::Regressed));
        assert!(decided.unwrap() - T0 < 700.0);
    }

    #[test]
    fn with_arms_errors_are_compared_on_a_route_too_thin_before_the_change() {
        // Five seconds of history: far below min_baseline_requests, which a canary's errors
        // do not need.
        let mut m = Monitor::new(DetectorSettings::default());
        let mut t = Traffic::new(7);
        t.feed(
            &mut m,
            T0 - 5.0,
            5,
            4,
            &["/"],
            &[None],
            |_, _| 0.01,
            |_, _| 50.0,
        );
        m.change_landed(T0);
        let arms = [Some(Arm::Control), Some(Arm::Treatment)];
        let worse = |_, arm| {
            if arm == Some(Arm::Treatment) {
                0.5
            } else {
                0.01
            }
        };
        t.feed(&mut m, T0, 120, 40, &["/"], &arms, worse, |_, _| 50.0);
        assert_eq!(m.verdict(), Some(Verdict::Regressed));
        let errors = &m.report().unwrap().signals[0];
        assert_eq!(errors.routes_compared, 1);
        // The canary's failures, pooled with the rest's successes, are not the service being
        // bursty: the index is the old arm's.
        assert!(errors.dispersion < 2.0, "{}", errors.dispersion);
    }

    #[test]
    fn with_arms_an_incident_in_the_baseline_does_not_discount_the_canary_s_errors() {
        let mut m = Monitor::new(DetectorSettings::default());
        let mut t = Traffic::new(11);
        // Minutes before, a bad canary flapped for two minutes, failing a third of all
        // requests every other ten seconds.
        let quiet = |_, _| 0.01;
        t.feed(
            &mut m,
            T0 - 1800.0,
            1500,
            20,
            &["/"],
            &[None],
            quiet,
            |_, _| 50.0,
        );
        for i in 0..12 {
            let rate = if i % 2 == 0 { 0.3 } else { 0.01 };
            let from = T0 - 300.0 + 10.0 * f64::from(i);
            t.feed(
                &mut m,
                from,
                10,
                20,
                &["/"],
                &[None],
                |_, _| rate,
                |_, _| 50.0,
            );
        }
        t.feed(
            &mut m,
            T0 - 180.0,
            180,
            20,
            &["/"],
            &[None],
            quiet,
            |_, _| 50.0,
        );
        m.change_landed(T0);
        let arms = [Some(Arm::Control), Some(Arm::Treatment)];
        let worse = |_, arm| {
            if arm == Some(Arm::Treatment) {
                0.4
            } else {
                0.01
            }
        };
        let decided = t.feed(&mut m, T0, 120, 20, &["/"], &arms, worse, |_, _| 50.0);
        assert!(decided.unwrap() - T0 <= 15.0, "{decided:?}");
        let errors = &m.report().unwrap().signals[0];
        assert!(errors.dispersion < 2.0, "{}", errors.dispersion);
    }

    #[test]
    fn errors_that_begin_late_in_a_watch_are_caught_as_fast_as_at_its_start() {
        for arms in [[None, None], [Some(Arm::Control), Some(Arm::Treatment)]] {
            let (mut m, mut t) = watched(9, 0.01);
            // Five quiet minutes of the change, then its failures begin.
            t.feed(&mut m, T0, 300, 20, &["/"], &arms, |_, _| 0.01, |_, _| 50.0);
            assert_eq!(m.verdict(), Some(Verdict::Watching));
            let failing = |_, arm| match arm {
                Some(Arm::Control) => 0.01,
                _ => 0.4,
            };
            let decided = t
                .feed(
                    &mut m,
                    T0 + 300.0,
                    300,
                    20,
                    &["/"],
                    &arms,
                    failing,
                    |_, _| 50.0,
                )
                .unwrap();
            assert!(
                decided - (T0 + 300.0) <= 15.0,
                "{arms:?}: caught {} s after the failures began",
                decided - (T0 + 300.0)
            );
            // The failures' onset is not read as the service being bursty.
            let errors = &m.report().unwrap().signals[0];
            assert!(errors.dispersion < 2.0, "{arms:?}: {}", errors.dispersion);
        }
    }

    #[test]
    fn a_slower_latency_distribution_is_caught_and_a_tolerated_one_is_not() {
        let (mut m, mut t) = watched(6, 0.01);
        t.feed(
            &mut m,
            T0,
            1801,
            20,
            &["/"],
            &[None],
            |_, _| 0.01,
            |_, _| 51.0,
        );
        assert_eq!(
            m.verdict(),
            Some(Verdict::Healthy),
            "2% slower is within tolerance"
        );
        let (mut m, mut t) = watched(6, 0.01);
        t.feed(
            &mut m,
            T0,
            600,
            20,
            &["/"],
            &[None],
            |_, _| 0.01,
            |_, _| 70.0,
        );
        assert_eq!(m.verdict(), Some(Verdict::Regressed));
        let report = m.report().unwrap();
        let latency = report.signals.iter().find(|s| s.regressed).unwrap();
        assert_ne!(latency.signal, super::SignalKind::Errors);
    }

    #[test]
    fn false_rollbacks_stay_rare_at_the_edge_of_the_null_even_with_small_baselines() {
        // Low traffic, so baselines hold few errors and the estimate of the baseline rate is
        // poor: the regime where a test that ignored that estimate would misfire. After the
        // change the error rate is exactly at the tolerance (x1.10): the hardest null there is.
        let mut false_rollbacks = 0;
        let runs = 300;
        for seed in 0..runs {
            let mut m = Monitor::new(DetectorSettings::default());
            let mut t = Traffic::new(1000 + seed);
            let q = [0.002, 0.01, 0.05][seed as usize % 3];
            t.feed(
                &mut m,
                T0 - 1800.0,
                1800,
                2,
                &["/"],
                &[None],
                |_, _| q,
                |_, _| 50.0,
            );
            m.change_landed(T0);
            t.feed(
                &mut m,
                T0,
                1801,
                2,
                &["/"],
                &[None],
                |_, _| q * 1.1,
                |_, _| 50.0,
            );
            false_rollbacks += u32::from(m.verdict() == Some(Verdict::Regressed));
        }
        // alpha is 1%: 3 of 300 expected at most; 6 would be a clear excess.
        assert!(
            false_rollbacks <= 6,
            "{false_rollbacks} false rollbacks in {runs}"
        );
    }
}
