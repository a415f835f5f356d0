//! One signal's sequential tests: per route, the bad events of each second against the
//! baseline's (before/after) or the old arm's (concurrent), added to e-processes mixed over
//! "every route got worse" and "one route broke".

use serde::{Deserialize, Serialize};

use super::{Design, Sides};
use crate::core::dispersion::{Dispersion, Events};
use crate::core::evidence::{self, cap_for_second, Counts, MixtureEProcess, RATIO_GRID};
use crate::core::observation::Arm;
use crate::core::tally::Tally;

/// Share of a signal's evidence bet on "every route got worse"; the rest on "one route broke".
const COMMON_WEIGHT: f64 = 0.85;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    Errors,
    SlowRequests,
    Latency,
    /// Sentry's events per request (`[daemon.sentry]`): judged beside the core's signals by
    /// the daemon (`sentry::evidence`), never by the core itself.
    SentryEvents,
}

/// One test: a kind of bad event counted per stratum against a null ratio.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Test {
    /// Quantile for latency tests, `None` for errors.
    pub(super) quantile: Option<f64>,
    pub(super) null_ratio: f64,
    /// Per stratum: from which bucket a control-side request is a bad event (None: errors, or
    /// not testable in this stratum).
    pub(super) control_from: Vec<Option<usize>>,
    /// Same for the treatment side (the control threshold moved up by the tolerance).
    treatment_from: Vec<Option<usize>>,
    /// Strata that take part (a big enough baseline, a trusted threshold).
    eligible: Vec<bool>,
    /// Evidence is divided by this (the quasi-likelihood correction), at least 1: the index of
    /// `bursts` as of the last bin completed.
    pub(super) dispersion: f64,
    /// How bursty this test's bad events are, baseline and watch so far. `None` in a watch
    /// saved before each test had its own (its saved index then stays as it was).
    #[serde(default)]
    bursts: Option<Dispersion>,
    pub(super) common: MixtureEProcess,
    pub(super) per_stratum: Vec<MixtureEProcess>,
    /// Before/after: last cumulative log-likelihood ratios per stratum, to take differences.
    previous: Vec<[f64; RATIO_GRID.len()]>,
    /// Concurrent: per stratum, control and treatment counts not yet judged.
    pending: Vec<(Counts, Counts)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Signal {
    pub(super) kind: SignalKind,
    pub(super) alpha: f64,
    pub(super) tests: Vec<Test>,
    /// Derived from the tests at every second; not saved (it may overflow to infinity, which
    /// JSON cannot hold).
    #[serde(skip)]
    pub(super) e_value: f64,
    pub(super) strata_weighed: usize,
}

impl Test {
    pub(super) fn new(
        quantile: Option<f64>,
        null_ratio: f64,
        control_from: Vec<Option<usize>>,
        treatment_from: Vec<Option<usize>>,
        eligible: Vec<bool>,
    ) -> Test {
        let n = eligible.len();
        Test {
            quantile,
            null_ratio,
            control_from,
            treatment_from,
            eligible,
            dispersion: 1.0,
            bursts: None,
            common: MixtureEProcess::default(),
            per_stratum: vec![MixtureEProcess::default(); n],
            previous: vec![[0.0; RATIO_GRID.len()]; n],
            pending: Vec::new(),
        }
    }

    /// Counts the burstiness of `events` from now on (from no bins yet).
    pub(super) fn count_bursts(&mut self, events: Events) {
        self.set_bursts(Dispersion::of(events));
    }

    /// What this test's burstiness counts as a bad event.
    pub(super) fn burst_events(&self) -> Events {
        self.bursts
            .as_ref()
            .map_or(Events::Errors, Dispersion::events)
    }

    /// Starts from the burstiness `bursts` (of the baseline).
    pub(super) fn set_bursts(&mut self, bursts: Dispersion) {
        self.dispersion = bursts.index();
        self.bursts = Some(bursts);
    }

    /// A 10-second bin of the watch completed (all routes and arms together); `gap` when bins
    /// without traffic came before it.
    pub(super) fn add_burst_bin(&mut self, bin: &Tally, gap: bool) {
        if let Some(bursts) = &mut self.bursts {
            bursts.push(bin);
            if gap {
                bursts.push(&Tally::default());
            }
            self.dispersion = bursts.index();
        }
    }

    /// Whether stratum `s` takes part. In the concurrent design errors need no baseline (the
    /// old version serving beside the new one is the comparison), so every route takes part,
    /// thin before the change or first seen after it.
    pub(super) fn eligible_in(&self, design: Design, s: usize) -> bool {
        if design == Design::Concurrent && self.quantile.is_none() {
            return true;
        }
        self.eligible.get(s).copied().unwrap_or(false)
    }

    pub(super) fn counts(&self, tally: &Tally, s: usize, side: Arm) -> Counts {
        let from = match side {
            Arm::Control => self.control_from.get(s).copied().flatten(),
            Arm::Treatment => self.treatment_from.get(s).copied().flatten(),
        };
        match (self.quantile, from) {
            (None, _) => tally.error_counts(),
            (Some(_), Some(b)) => tally.slower_counts(b),
            (Some(_), None) => Counts::default(),
        }
    }

    pub(super) fn add_second(
        &mut self,
        design: Design,
        base_cap: f64,
        start_weight: f64,
        baseline: &[Tally],
        open: &[Sides],
        seen: &[Sides],
    ) {
        let c = self.null_ratio;
        let mut common = [0.0; RATIO_GRID.len()];
        let mut expected_total = 0.0;
        for (s, sides) in open.iter().enumerate() {
            if sides.treatment.is_empty() && sides.control.is_empty() {
                continue;
            }
            if !self.eligible_in(design, s) {
                continue;
            }
            let treatment_now = self.counts(&sides.treatment, s, Arm::Treatment);
            let (control_rate, increments) = match design {
                Design::BeforeAfter => {
                    let control = self.counts(&baseline[s], s, Arm::Control);
                    let treatment = self.counts(&seen[s].treatment, s, Arm::Treatment);
                    let mut inc = [0.0; RATIO_GRID.len()];
                    for (j, &(m, _)) in RATIO_GRID.iter().enumerate() {
                        let llr = evidence::log_likelihood_ratio(control, treatment, c, c * m);
                        inc[j] = llr - self.previous[s][j];
                        self.previous[s][j] = llr;
                    }
                    (control.rate(), inc)
                }
                Design::Concurrent => {
                    // A second in which one arm served nothing says nothing on its own; its
                    // counts wait, and are judged with the next seconds until both arms have
                    // served (when that happens depends on requests only, never on errors).
                    if self.pending.len() <= s {
                        self.pending
                            .resize(s + 1, (Counts::default(), Counts::default()));
                    }
                    let control_now = self.counts(&sides.control, s, Arm::Control);
                    let pending = &mut self.pending[s];
                    pending.0.add(control_now);
                    pending.1.add(treatment_now);
                    let mut inc = [0.0; RATIO_GRID.len()];
                    if pending.0.requests > 0 && pending.1.requests > 0 {
                        let (control, treatment) = std::mem::take(pending);
                        for (j, &(m, _)) in RATIO_GRID.iter().enumerate() {
                            inc[j] = evidence::log_likelihood_ratio(control, treatment, c, c * m);
                        }
                    }
                    let control_seen = self.counts(&seen[s].control, s, Arm::Control);
                    (control_seen.rate(), inc)
                }
            };
            // Quasi-likelihood: the evidence and its cap per second both scale down by the index,
            // so a stalled second weighs no more against the steady ones than on a steady host.
            let increments = increments.map(|x| x / self.dispersion);
            let expected = c * control_rate.unwrap_or(0.0) * treatment_now.requests as f64;
            expected_total += expected;
            if let Some(e) = self.per_stratum.get_mut(s) {
                e.add(
                    cap_for_second(base_cap, expected) / self.dispersion,
                    &increments,
                    start_weight,
                );
            }
            for (acc, inc) in common.iter_mut().zip(increments) {
                *acc += inc;
            }
        }
        self.common.add(
            cap_for_second(base_cap, expected_total) / self.dispersion,
            &common,
            start_weight,
        );
    }

    /// The e-value of this test: common alternative and one-route alternatives mixed.
    pub(super) fn e_value(&self, strata_weighed: usize) -> f64 {
        if strata_weighed <= 1 {
            return self.common.e_value();
        }
        let single: f64 = self
            .per_stratum
            .iter()
            .zip(&self.eligible)
            .filter(|(_, &e)| e)
            .map(|(p, _)| p.e_value())
            .sum();
        COMMON_WEIGHT * self.common.e_value()
            + (1.0 - COMMON_WEIGHT) * single / strata_weighed as f64
    }
}

impl Signal {
    pub(super) fn new(kind: SignalKind, alpha: f64, tests: Vec<Test>) -> Signal {
        // Fixed when the watch starts, so the mixture weights never depend on what follows.
        let strata_weighed = tests
            .iter()
            .map(|t| t.eligible.iter().filter(|&&e| e).count())
            .max()
            .unwrap_or(0);
        let mut signal = Signal {
            kind,
            alpha,
            tests,
            e_value: 0.0,
            strata_weighed,
        };
        signal.update_e_value();
        signal
    }

    pub(super) fn update_e_value(&mut self) {
        // The mean of e-values is an e-value: levels of the latency test share one alpha.
        let n = self.tests.len().max(1) as f64;
        self.e_value = self
            .tests
            .iter()
            .map(|t| t.e_value(self.strata_weighed))
            .sum::<f64>()
            / n;
    }
}
